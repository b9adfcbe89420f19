"""The verification key store: modes, the one-shot certificate download, expiry, concurrency."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from minigate.domain.results import TradeState
from minigate.errors import ConfigurationError, ProviderMisconfigured, ProviderUnavailable
from minigate.providers.wechatpay.keys import VerificationKeyStore
from tests.providers.wechatpay.fake_wechat import (
    C_WXGO,
    C_WXGO_PEM,
    K_WXGO,
    NOW,
    PUB_KEY_ID,
    PUB_PRIV,
    TRANSACTION,
    WXGO_SERIAL,
    FakeWeChat,
    cert_pem,
    config,
    make_cert,
    make_provider,
)
from tests.providers.wechatpay.test_notifications import callback

NEW_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
NEW_CERT = make_cert(NEW_KEY, 0x3D7A5E21C0FFEE01, not_after=datetime(2030, 1, 1, tzinfo=UTC))
NEW_SERIAL = "3D7A5E21C0FFEE01"
NOW_DT = datetime.fromtimestamp(NOW, UTC)


def cert_config(**overrides: Any) -> Any:
    values: dict[str, Any] = dict(
        verify_mode="certificate",
        platform_certificates=(),
        platform_public_key=None,
        platform_public_key_id=None,
    )
    values.update(overrides)
    return config(**values)


async def test_unknown_serial_downloads_once_then_verifies() -> None:
    fake = FakeWeChat(certificates=[(NEW_CERT, NEW_KEY)])
    provider = make_provider(fake, cert_config())
    headers, body = callback(TRANSACTION, key=NEW_KEY, serial=NEW_SERIAL)
    note = await provider.parse_notification(headers, body)
    assert note.trade is not None and note.trade.state is TradeState.PAID
    (download,) = fake.calls_to("/v3/certificates")
    assert download.signature_ok and download.method == "GET" and download.body == b""
    assert "Wechatpay-Serial" not in download.headers
    # known now: no second download
    await provider.parse_notification(headers, body)
    assert len(fake.calls_to("/v3/certificates")) == 1
    assert provider.keys.refresh_count == 1


async def test_api_answer_signed_by_a_new_certificate_triggers_the_download() -> None:
    fake = FakeWeChat(cert_signer=(NEW_KEY, NEW_SERIAL), certificates=[(NEW_CERT, NEW_KEY)])
    fake.route("GET", "/v3/pay/transactions/out-trade-no/ORDER20240513001", 200, TRANSACTION)
    provider = make_provider(fake, cert_config(platform_certificates=(C_WXGO_PEM,)))
    result = await provider.query_order("ORDER20240513001")
    assert result.ok and len(fake.calls_to("/v3/certificates")) == 1


async def test_concurrent_unknown_serials_share_one_download() -> None:
    fake = FakeWeChat(certificates=[(NEW_CERT, NEW_KEY)])
    provider = make_provider(fake, cert_config())
    headers, body = callback(TRANSACTION, key=NEW_KEY, serial=NEW_SERIAL)
    notes = await asyncio.gather(*(provider.parse_notification(headers, body) for _ in range(5)))
    assert all(n.trade is not None for n in notes)
    assert len(fake.calls_to("/v3/certificates")) == 1


async def test_forged_serials_are_throttled() -> None:
    fake = FakeWeChat(certificates=[(C_WXGO, K_WXGO)])
    store = make_provider(fake, cert_config()).keys
    assert await store.resolve("AAAA") is None
    assert await store.resolve("BBBB") is None  # within min_refresh_interval: no second download
    assert len(fake.calls_to("/v3/certificates")) == 1
    assert await store.resolve(WXGO_SERIAL) is not None


async def test_mixed_mode_accepts_public_key_and_certificate_signatures() -> None:
    fake = FakeWeChat()
    provider = make_provider(fake, config(verify_mode="mixed", platform_certificates=(C_WXGO_PEM,)))
    for key, serial in ((PUB_PRIV, PUB_KEY_ID), (K_WXGO, WXGO_SERIAL)):
        headers, body = callback(TRANSACTION, key=key, serial=serial)
        assert (await provider.parse_notification(headers, body)).trade is not None
    assert fake.calls == []


async def test_mixed_mode_downloads_unknown_certificate_serials() -> None:
    fake = FakeWeChat(certificates=[(NEW_CERT, NEW_KEY)])
    provider = make_provider(fake, config(verify_mode="mixed"))
    headers, body = callback(TRANSACTION, key=NEW_KEY, serial=NEW_SERIAL)
    assert (await provider.parse_notification(headers, body)).trade is not None
    assert len(fake.calls_to("/v3/certificates")) == 1


async def test_certificate_mode_ignores_the_public_key() -> None:
    provider = make_provider(
        FakeWeChat(), config(verify_mode="certificate", platform_certificates=(C_WXGO_PEM,))
    )
    assert provider.keys.get(PUB_KEY_ID) is None and provider.keys.get(WXGO_SERIAL) is not None


async def test_download_must_be_signed_by_a_downloaded_certificate() -> None:
    # the answer is signed by C-WXGO's key but only NEW_CERT is in it
    fake = FakeWeChat(certificates=[(NEW_CERT, K_WXGO)])
    store = make_provider(fake, cert_config()).keys
    with pytest.raises(ProviderUnavailable):
        await store.refresh()
    assert store.get(NEW_SERIAL) is None
    assert await store.resolve(NEW_SERIAL) is None  # resolve swallows the failure: "unknown serial"


async def test_download_with_wrong_apiv3_key_is_refused() -> None:
    fake = FakeWeChat(certificates=[(NEW_CERT, NEW_KEY)])
    store = make_provider(fake, cert_config(apiv3_key="0123456789abcdef0123456789abcdef")).keys
    with pytest.raises(ProviderUnavailable):
        await store.refresh()


async def test_download_refused_by_wechat_is_misconfiguration() -> None:
    fake = FakeWeChat()
    fake.route("GET", "/v3/certificates", 403, {"code": "NOT_ENOUGH", "message": "平台证书已过期失效"})
    store = make_provider(fake, cert_config()).keys
    with pytest.raises(ProviderMisconfigured) as info:
        await store.refresh()
    assert info.value.provider_code == "NOT_ENOUGH"


async def test_expired_certificates_are_dropped_and_expiring_ones_reported() -> None:
    old_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    expired = make_cert(old_key, 0x1111, not_after=NOW_DT - timedelta(days=1))
    soon = make_cert(old_key, 0x2222, not_after=NOW_DT + timedelta(days=10))
    fake = FakeWeChat(certificates=[(NEW_CERT, NEW_KEY), (expired, old_key), (soon, old_key)])
    store = make_provider(fake, cert_config()).keys
    assert await store.refresh() == ["2222", NEW_SERIAL]
    assert store.get("1111") is None and store.get("2222") is not None
    assert store.expiring_soon(timedelta(days=30)) == [("2222", soon.not_valid_after_utc)]
    assert store.expiring_soon(timedelta(days=5)) == []
    assert store.serials == ["2222", NEW_SERIAL]


async def test_configured_certificate_expires_with_the_clock() -> None:
    short = make_cert(NEW_KEY, 0x4444, not_after=NOW_DT + timedelta(seconds=10))
    now = [float(NOW)]
    store = VerificationKeyStore(cert_config(platform_certificates=(cert_pem(short),)), clock=lambda: now[0])
    assert store.get("4444") is not None
    now[0] += 11
    assert store.get("4444") is None


async def test_refresh_needs_a_certificate_mode() -> None:
    with pytest.raises(ConfigurationError):
        await make_provider(FakeWeChat()).keys.refresh()


async def test_public_key_encryption_key_in_certificate_mode_downloads_when_empty() -> None:
    fake = FakeWeChat(certificates=[(NEW_CERT, NEW_KEY)])
    provider = make_provider(fake, cert_config())
    _ciphertext, serial = await provider.encrypt_sensitive("6222020200000000000")
    assert serial == NEW_SERIAL and len(fake.calls_to("/v3/certificates")) == 1


def test_public_key_without_id_is_refused() -> None:
    with pytest.raises(ConfigurationError):
        VerificationKeyStore(config(platform_public_key_id=None))


async def test_headers_may_be_httpx_headers() -> None:
    store = make_provider(FakeWeChat()).keys
    headers, body = callback(TRANSACTION, key=PUB_PRIV, serial=PUB_KEY_ID)
    assert await store.check(httpx.Headers(headers), body) is None
    assert await store.check(httpx.Headers(headers), body + b" ") == "invalid_signature"

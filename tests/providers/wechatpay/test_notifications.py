"""parse_notification: the published vectors (WX-8, WX-3) and one test per rejection code."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from minigate.domain.results import NotificationKind, RefundState, TradeState
from minigate.errors import NotificationRejected
from minigate.providers.wechatpay import signing
from minigate.providers.wechatpay.provider import WeChatPayProvider
from tests.providers.wechatpay.fake_wechat import (
    APIV3,
    C_WXGO,
    C_WXGO_PEM,
    K_WXGO,
    MCHID,
    NOW,
    OTHER_KEY,
    PUB_KEY_ID,
    PUB_PRIV,
    TRANSACTION,
    WXGO_SERIAL,
    FakeWeChat,
    config,
    make_provider,
    signed_headers,
)

WX8_CIPHERTEXT = (
    "gXkty9xdOwDObqKBsRizx01PRKettQJyhlo1oOIMsXyXEiADNKO7AjnFoBb3Yt3wIaPlEJxCSHhFKdadiqPQKROu35dP+aZWfYYAchTLrz9t"
    "Zzr2h4of9GIW/M46JH903XZt7EM5k+q9wg1LJ9mFga/zr8bk81T8xeJajTOC6xdd1fGydPb5WRWIG5u59xamuZiCMU8WDtxrjnjfhNB41UdX"
    "FV9+/YvJeidyLvRM2tVFpThB++SD5rhTry+O5mfyxCBE2UKa1b7TjxHmF1eLuUa2Eo8+gl7R+8ulyu3n2l2rMRA++TZYJ6cfzvhm0NO8RDEV"
    "EEnvCQzaj+ackhYiIPNth77Wq5iIRd+yizguQT8hPm3cMdncerj+SwHDS+cA7Nt31PiOxH5hhDwMA4kJ+xi4Uz7G30mEAAjRU4MjjKfdfhQy"
    "5Buq8FemiFHWcbje9WmuvwEGhTBsILGVjfSRQgFTnl0KWU2hoAbjvZbvhPSgMWxA1Rv+H4R9zhFoUI9swzyMKuUNnFuRM5i8cCFA4HV97CD5"
    "oI6FivNWfXUdyUn2ag0duPqpPcxKav2FBqR4o3A6"
)
WX8_SIGNATURE = (
    "PjrumPb4e6lVBRI1xx+QtqTN30wgrhBSVB777Tcap6wUsp1iKrmN/72H7Bj7VowKSHfxI3NpwUusLiqDU8/kSka0+csb/ZVvtsIrx0ymFHMW"
    "8x8pgUpc7DCRJH3pg7smTeloDiPPBhZnMYOq09yVjo+ey+20AAQYnvlS0bNwVCKgdKFNUq02LnHpvuZ95IoF3XaF8ifA6SnkaXuk6QWLHdLW"
    "jGfEdVbrTMJ+wzGqvF5WvvihCH1fEE6PBfHaoCJjC/XYvVRZLS2fy6fFn7M1qJ2g80S2lzmloLzFEr7aLkByjc5MD+JjGDsflfzf7s8FJ/RO"
    "P7nHFlPpEYSBpTuNLw=="
)


def wx8_body() -> bytes:
    return json.dumps(
        {
            "id": "EV-2018022511223320873",
            "create_time": "2024-05-13T17:50:02+08:00",
            "resource_type": "encrypt-resource",
            "event_type": "TRANSACTION.SUCCESS",
            "summary": "支付成功",
            "resource": {
                "original_type": "transaction",
                "algorithm": "AEAD_AES_256_GCM",
                "ciphertext": WX8_CIPHERTEXT,
                "associated_data": "transaction",
                "nonce": "aKu3nCbQ5s9z",
            },
        },
        separators=(",", ":"),
        ensure_ascii=False,
    ).encode()


WX8_HEADERS = {
    "Wechatpay-Timestamp": "1715593802",
    "Wechatpay-Nonce": "5K8264ILTKCH16CQ2502SI8ZNMTM67VS",
    "Wechatpay-Signature": WX8_SIGNATURE,
    "Wechatpay-Serial": WXGO_SERIAL,
    "Wechatpay-Signature-Type": "WECHATPAY2-SHA256-RSA2048",
}


def cert_provider(fake: FakeWeChat | None = None, **overrides: Any) -> WeChatPayProvider:
    """Certificate mode with C-WXGO configured as the platform certificate (as in the vectors)."""
    values: dict[str, Any] = dict(
        verify_mode="certificate",
        platform_certificates=(C_WXGO_PEM,),
        platform_public_key=None,
        platform_public_key_id=None,
    )
    values.update(overrides)
    return make_provider(fake or FakeWeChat(), config(**values))


def callback(
    resource: dict[str, Any],
    *,
    event_type: str = "TRANSACTION.SUCCESS",
    apiv3: str = APIV3,
    key: Any = K_WXGO,
    serial: str = WXGO_SERIAL,
    ts: int = NOW,
    associated_data: str = "transaction",
) -> tuple[dict[str, str], bytes]:
    nonce = "bW9ja25vbmNl"
    ciphertext = signing.aes_gcm_encrypt(apiv3.encode(), nonce, associated_data, json.dumps(resource))
    body = json.dumps(
        {
            "id": "EV-1",
            "create_time": "2024-05-13T17:50:02+08:00",
            "resource_type": "encrypt-resource",
            "event_type": event_type,
            "summary": "x",
            "resource": {
                "original_type": "transaction",
                "algorithm": "AEAD_AES_256_GCM",
                "ciphertext": ciphertext,
                "associated_data": associated_data,
                "nonce": nonce,
            },
        },
        separators=(",", ":"),
    ).encode()
    return signed_headers(body, key, serial, ts), body


async def rejected(provider: WeChatPayProvider, headers: dict[str, str], body: bytes) -> NotificationRejected:
    with pytest.raises(NotificationRejected) as info:
        await provider.parse_notification(headers, body)
    return info.value


# ---------------------------------------------------------------------------------------------- vectors
async def test_wx8_vector_parses_to_paid() -> None:
    note = await cert_provider().parse_notification(WX8_HEADERS, wx8_body())
    assert note.kind is NotificationKind.PAYMENT and note.event_id == "EV-2018022511223320873"
    trade = note.trade
    assert trade is not None and trade.state is TradeState.PAID and trade.amount_total == 100
    assert trade.out_trade_no == "ORDER20240513001" and trade.currency == "CNY"
    assert trade.provider_trade_id == "4200000000202405130000000001"
    assert trade.merchant_id == "1900000001" and trade.app_id == "wxd678efh567hg6787"
    assert trade.paid_at == datetime(2024, 5, 13, 9, 50, 1, tzinfo=UTC)
    assert trade.payer_id == "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o" and trade.raw["attach"] == ""


async def test_wx8_headers_are_case_insensitive() -> None:
    lower = {k.lower(): v for k, v in WX8_HEADERS.items()}
    note = await cert_provider().parse_notification(lower, wx8_body())
    assert note.trade is not None and note.trade.state is TradeState.PAID
    note = await cert_provider().parse_notification(httpx.Headers(WX8_HEADERS), wx8_body())
    assert note.trade is not None


async def test_wx3_verifies_then_is_unsupported_event() -> None:
    body = (
        '{"id":"3119dfba-e649-5eec-ab1e-3412bc4d2e17","create_time":"2021-06-24T16:37:26+08:00",'
        '"resource_type":"encrypt-resource","event_type":"PAYSCORE.USER_OPEN_SERVICE","summary":"签约成功",'
        '"resource":{"original_type":"payscore","algorithm":"AEAD_AES_256_GCM","ciphertext":"YDS3lKPaC4Y52Gf3u'
        "hft5qUBlIa8b428AWTtTauHQfQrRw+X1WpiuHIDy0vo1Vd6VEq67aVyqPdDYMkRVSDaZL3iZttevRMOoPKMifozg6XPWjIZumks/GpT"
        "48lI4NizyeaqLBokNebthah3o1H76qSlO9NkDjp9bzmKLEYYH9TEklFUpsvPqOTOcgSLgh21YJXYR7dEBXFgRLiNIKRgO5JdXh1hccRU"
        'AlyVWxE54PXpnQ==","associated_data":"payscore","nonce":"Kj7QIyUiYx1q"}}'
    ).encode()
    headers = {
        "Wechatpay-Timestamp": "1624523846",
        "Wechatpay-Nonce": "EcZ9Cmy4Xyx1i6RlJQzLcCyEqDa26NBz",
        "Wechatpay-Serial": WXGO_SERIAL,
        "Wechatpay-Signature": (
            "tJHIiIS9eB2hAYstmAmbbD3ZE5LiIm/Ug5tuL4fC0YOFRWIHV39UFIZXC0e9Wl6lBu6sKvkqDkzpqzBsVHyXFlbYZTOQrVd"
            "G4b6LfTnK4mikv9++ixJMd3vTf2yCqvBkh98zs3Ds5zsYQakzbcwhmw4fMJs4nPLws28H0UW9FjDR//rxELLwXvV1VEA1IBL"
            "X70xptjL8hrfUjEE8kkry6yNJTHZRU8CAc7qHli2Ng1V1qb9ARbK8A3ThmFmPQvRGrapI/jS2laKKgYUmfdEdkNO6B2Cke5e"
            "8VTxY406ArAmQ90GAihDwIcb16TQMnzCMBoutnwZKNiKRACrFmtxw2Q=="
        ),
    }
    fake = FakeWeChat(now=1624523846)
    provider = cert_provider(
        fake, mchid="1234567890", appid="054aa7d7a2a54ab5898df65bd96f001c", apiv3_key="testMchAPIv3Key0"
    )
    assert (await rejected(provider, headers, body)).code == "unsupported_event"
    # the same callback one second off no longer verifies: the signature path was really taken
    assert (await rejected(provider, {**headers, "Wechatpay-Timestamp": "1624523847"}, body)).code == (
        "invalid_signature"
    )


# ---------------------------------------------------------------------------------------------- rejections
@pytest.mark.parametrize(
    "missing", ["Wechatpay-Timestamp", "Wechatpay-Nonce", "Wechatpay-Signature", "Wechatpay-Serial"]
)
async def test_missing_headers(missing: str) -> None:
    headers = {k: v for k, v in WX8_HEADERS.items() if k != missing}
    assert (await rejected(cert_provider(), headers, wx8_body())).code == "missing_signature_headers"


async def test_signature_probe_is_rejected_before_any_key_lookup() -> None:
    fake = FakeWeChat()
    provider = cert_provider(fake)
    headers = {
        **WX8_HEADERS,
        "Wechatpay-Signature": "WECHATPAY/SIGNTEST/" + WX8_SIGNATURE,
        "Wechatpay-Serial": "UNKNOWNSERIAL",
    }
    err = await rejected(provider, headers, wx8_body())
    assert err.code == "signature_probe" and err.http_status == 400
    assert fake.calls == []  # an unknown serial would otherwise have triggered a download


@pytest.mark.parametrize("offset", [301, -301])
async def test_stale_or_future_timestamp(offset: int) -> None:
    provider = make_provider(
        FakeWeChat(now=NOW + offset), config(verify_mode="certificate", platform_certificates=(C_WXGO_PEM,))
    )
    assert (await rejected(provider, WX8_HEADERS, wx8_body())).code == "timestamp_out_of_window"


@pytest.mark.parametrize("offset", [299, -299])
async def test_timestamp_inside_window_is_accepted(offset: int) -> None:
    provider = make_provider(
        FakeWeChat(now=NOW + offset), config(verify_mode="certificate", platform_certificates=(C_WXGO_PEM,))
    )
    assert (await provider.parse_notification(WX8_HEADERS, wx8_body())).trade is not None


async def test_flipped_byte_in_body() -> None:
    body = bytearray(wx8_body())
    body[10] ^= 0x01
    assert (await rejected(cert_provider(), WX8_HEADERS, bytes(body))).code == "invalid_signature"


async def test_signed_with_the_wrong_key() -> None:
    headers, body = callback(TRANSACTION, key=OTHER_KEY)
    err = await rejected(cert_provider(), headers, body)
    assert err.code == "invalid_signature" and err.http_status == 400


async def test_unknown_serial_after_one_refresh_that_brings_nothing_new() -> None:
    fake = FakeWeChat(certificates=[(C_WXGO, K_WXGO)])
    provider = cert_provider(fake)
    headers, body = callback(TRANSACTION, serial="5A5A5A5A5A5A5A5A")
    err = await rejected(provider, headers, body)
    assert err.code == "unknown_serial" and err.http_status == 500
    assert len(fake.calls_to("/v3/certificates")) == 1


async def test_public_key_mode_unknown_serial_never_downloads() -> None:
    fake = FakeWeChat()
    headers, body = callback(
        TRANSACTION, key=PUB_PRIV, serial="PUB_KEY_ID_0000000000000000000000000000000000"
    )
    assert (await rejected(make_provider(fake), headers, body)).code == "unknown_serial"
    assert fake.calls == []


async def test_public_key_mode_accepts_public_key_signature() -> None:
    headers, body = callback(TRANSACTION, key=PUB_PRIV, serial=PUB_KEY_ID)
    note = await make_provider(FakeWeChat()).parse_notification(headers, body)
    assert note.trade is not None and note.trade.state is TradeState.PAID


async def test_bad_ciphertext() -> None:
    headers, body = callback(TRANSACTION, apiv3="0123456789abcdef0123456789abcdef")  # other APIv3 key
    err = await rejected(cert_provider(), headers, body)
    assert err.code == "decrypt_failed" and APIV3 not in str(err)


async def test_wrong_associated_data_fails_decryption() -> None:
    headers, body = callback(TRANSACTION)
    tampered = body.replace(b'"associated_data":"transaction"', b'"associated_data":"refund"')
    headers = signed_headers(tampered, K_WXGO, WXGO_SERIAL, NOW)
    assert (await rejected(cert_provider(), headers, tampered)).code == "decrypt_failed"


async def test_other_merchant() -> None:
    headers, body = callback({**TRANSACTION, "mchid": "1900000002"})
    assert (await rejected(cert_provider(), headers, body)).code == "merchant_mismatch"


async def test_other_app() -> None:
    headers, body = callback({**TRANSACTION, "appid": "wx0000000000000000"})
    err = await rejected(cert_provider(), headers, body)
    assert err.code == "app_mismatch"
    assert "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o" not in str(err)  # no personal data in messages


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b"[]",
        b'{"id":"x","event_type":"TRANSACTION.SUCCESS"}',
        b'{"id":"x","event_type":"TRANSACTION.SUCCESS","resource":{"nonce":1}}',
    ],
)
async def test_malformed_body(body: bytes) -> None:
    headers = signed_headers(body, K_WXGO, WXGO_SERIAL, NOW)
    assert (await rejected(cert_provider(), headers, body)).code == "malformed_body"


async def test_unsupported_event_after_valid_signature() -> None:
    headers, body = callback(TRANSACTION, event_type="TRANSACTION.CLOSED")
    assert (await rejected(cert_provider(), headers, body)).code == "unsupported_event"


async def test_resource_without_required_fields_is_malformed() -> None:
    headers, body = callback({k: v for k, v in TRANSACTION.items() if k != "out_trade_no"})
    assert (await rejected(cert_provider(), headers, body)).code == "malformed_body"


# ---------------------------------------------------------------------------------------------- refunds
REFUND_RESOURCE = {
    "mchid": MCHID,
    "transaction_id": "4200000000202405130000000001",
    "out_trade_no": "ORDER20240513001",
    "refund_id": "50000000382019052709732678859",
    "out_refund_no": "R1",
    "refund_status": "SUCCESS",
    "success_time": "2024-05-13T18:01:00+08:00",
    "user_received_account": "招商银行信用卡0403",
    "amount": {"total": 100, "refund": 40, "payer_total": 100, "payer_refund": 40},
}


@pytest.mark.parametrize(
    ("event", "wire", "state"),
    [
        ("REFUND.SUCCESS", "SUCCESS", RefundState.SUCCEEDED),
        ("REFUND.ABNORMAL", "ABNORMAL", RefundState.FAILED),
        ("REFUND.CLOSED", "CLOSED", RefundState.FAILED),
    ],
)
async def test_refund_notifications(event: str, wire: str, state: RefundState) -> None:
    headers, body = callback(
        {**REFUND_RESOURCE, "refund_status": wire}, event_type=event, associated_data="refund"
    )
    note = await cert_provider().parse_notification(headers, body)
    assert note.kind is NotificationKind.REFUND and note.event_id == "EV-1" and note.trade is None
    refund = note.refund
    assert refund is not None and refund.state is state and refund.amount == 40
    assert refund.out_trade_no == "ORDER20240513001" and refund.merchant_id == MCHID


async def test_refund_notification_of_other_merchant() -> None:
    headers, body = callback({**REFUND_RESOURCE, "mchid": "1"}, event_type="REFUND.SUCCESS")
    assert (await rejected(cert_provider(), headers, body)).code == "merchant_mismatch"

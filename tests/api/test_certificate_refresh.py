"""Scheduled platform-certificate refresh (B-3): downloads for every app with WeChat Pay credentials in a
certificate mode, warns 30 days before expiry, and one app's failure does not stop the others."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from minigate.logging import configure_logging
from minigate.services import certificates
from minigate.services.apps import set_credentials
from minigate.services.certificates import refresh_platform_certificates
from tests.conftest import Gateway


async def store_sandbox_credentials(gw: Gateway, app_id: str, **extra: Any) -> None:
    creds = gw.rt.sandbox.credentials("wechatpay") | {"base_url": "http://sandbox/wechatpay",
                                                      "verify_mode": "mixed"} | extra
    await set_credentials(gw.rt, app_id=app_id, mode="test", provider="wechatpay", config=creds)


async def test_every_app_in_certificate_mode_is_refreshed(gateway: Gateway) -> None:
    assert await refresh_platform_certificates(gateway.rt) == {"refreshed": 0, "failed": 0, "expiring": []}
    await store_sandbox_credentials(gateway, gateway.app_id)
    other, _ = await gateway.new_app("Second shop")
    await store_sandbox_credentials(gateway, other, verify_mode="public_key")   # nothing to download
    result = await refresh_platform_certificates(gateway.rt)
    assert result == {"refreshed": 1, "failed": 0, "expiring": []}
    provider: Any = await gateway.rt.payment_provider(gateway.app_id, "test", "wechatpay")
    assert provider.keys.refresh_count == 1 and provider.keys.days_left() > 30


async def test_expiry_is_warned_and_a_failing_app_does_not_stop_the_others(
        gateway: Gateway, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    configure_logging("INFO", json=True)
    await store_sandbox_credentials(gateway, gateway.app_id)
    broken, _ = await gateway.new_app("Broken shop")
    await store_sandbox_credentials(gateway, broken, apiv3_key="0" * 32)   # downloads will not decrypt
    provider: Any = await gateway.rt.payment_provider(gateway.app_id, "test", "wechatpay")
    await provider.keys.refresh()
    left = provider.keys.days_left()
    # the sandbox's certificate lives for years: warn within its lifetime plus a day
    monkeypatch.setattr(certificates, "WARN_WITHIN", timedelta(days=left + 1))
    result = await refresh_platform_certificates(gateway.rt)
    assert result["refreshed"] == 1 and result["failed"] == 1
    [warning] = result["expiring"]
    assert warning["app"] == gateway.app_id and warning["mode"] == "test"
    logs = capsys.readouterr().err
    assert "platform certificate expires soon" in logs and "platform certificate refresh failed" in logs
    assert "0" * 32 not in logs


async def test_the_worker_refreshes_on_its_schedule(gateway: Gateway) -> None:
    await store_sandbox_credentials(gateway, gateway.app_id)
    provider: Any = await gateway.rt.payment_provider(gateway.app_id, "test", "wechatpay")
    before = provider.keys.refresh_count
    await gateway.run_worker()
    await gateway.run_worker()                     # within the interval: no second download
    assert provider.keys.refresh_count == before + 1

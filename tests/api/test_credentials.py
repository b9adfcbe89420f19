"""Provider credentials: validated, sealed, picked up by running processes; live mode keeps the sandbox private."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from minigate.api.app import create_app
from minigate.config import load_settings
from minigate.errors import InvalidRequest
from minigate.services import runtime as runtime_module
from minigate.services.apps import set_credentials
from minigate.store.tables import AppCredential, OrderEvent
from tests.api.test_notifications import send_signed, transaction
from tests.conftest import Gateway


async def test_sandbox_credentials_json_is_accepted_as_is(gateway: Gateway, monkeypatch: pytest.MonkeyPatch) -> None:
    """What `minigate sandbox credentials wechatpay` prints can be stored for test mode, app secret included."""
    creds = gateway.rt.sandbox.credentials("wechatpay") | {"base_url": "http://sandbox/wechatpay",
                                                           "verify_mode": "mixed"}
    stored = await set_credentials(gateway.rt, app_id=gateway.app_id, mode="test", provider="wechatpay", config=creds)
    assert stored == ["wechat", "wechatpay"]
    async with gateway.rt.db.transaction() as session:
        rows = (await session.execute(select(AppCredential))).scalars().all()
    assert {r.provider for r in rows} == {"wechat", "wechatpay"}
    for row in rows:   # sealed at rest: no secret in the column
        assert creds["apiv3_key"] not in row.sealed_config and "PRIVATE KEY" not in row.sealed_config
    # the stored test credentials are what the gateway now uses; a checkout still works end to end
    order = await gateway.create_order()
    await gateway.pay(order)
    assert (await gateway.order(order["id"]))["status"] == "paid"


@pytest.mark.parametrize(("change", "message"), [
    ({"merchant_private_key": "-----BEGIN PRIVATE KEY-----\nnope\n-----END PRIVATE KEY-----"}, "merchant_private_key"),
    ({"apiv3_key": "too-short"}, "apiv3_key"),
    ({"platform_public_key": None}, "needs platform_public_key"),
    ({"base_url": "http://api.mch.weixin.qq.com"}, "https"),
    ({"mchid": None}, "mchid"),
    ({"unknown_field": 1}, "unknown_field"),
])
async def test_unusable_live_credentials_are_refused_and_nothing_is_stored(gateway: Gateway, change: dict,
                                                                           message: str) -> None:
    creds = gateway.rt.sandbox.credentials("wechatpay") | {"base_url": "https://api.mch.weixin.qq.com",
                                                           "verify_mode": "public_key"}
    creds = {k: v for k, v in (creds | change).items() if v is not None}
    with pytest.raises(InvalidRequest) as raised:
        await set_credentials(gateway.rt, app_id=gateway.app_id, mode="live", provider="wechatpay", config=creds)
    assert message in raised.value.message
    assert creds.get("apiv3_key", "") not in raised.value.message or creds.get("apiv3_key") == "too-short"
    assert await gateway.count(AppCredential) == 0


async def test_credentials_changed_by_another_process_are_picked_up(gateway: Gateway,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    order = await gateway.create_order()          # uses the sandbox merchant
    monkeypatch.setattr(runtime_module, "CREDENTIALS_RECHECK_SECONDS", 0.0)
    other = runtime_module.Runtime(gateway.rt.settings, db=None)   # e.g. `minigate apps set-credentials`
    await other.start()
    try:
        broken = gateway.rt.sandbox.credentials("wechatpay") | {"base_url": "http://sandbox/wechatpay",
                                                                "mchid": "1999999999"}
        await set_credentials(other, app_id=gateway.app_id, mode="test", provider="wechatpay", config=broken)
    finally:
        await other.aclose()
    # the running gateway now signs as merchant 1999999999, which the provider does not know
    r = await gateway.http.post(f"/v1/orders/{order['id']}/close", headers=gateway.auth)
    assert r.status_code == 502 and r.json()["error"]["code"] == "provider_auth_failed"


async def test_amount_mismatch_is_kept_on_the_order_timeline(gateway: Gateway) -> None:
    order = await gateway.create_order(amount=900)
    r = await send_signed(gateway, transaction(gateway, order, amount={"total": 9, "payer_total": 9,
                                                                       "currency": "CNY", "payer_currency": "CNY"}))
    assert r.status_code == 400
    async with gateway.rt.db.transaction() as session:
        alerts = (await session.execute(select(OrderEvent).where(OrderEvent.type == "notification.amount_mismatch"))
                  ).scalars().all()
    assert len(alerts) == 1 and alerts[0].order_id == order["id"]
    assert alerts[0].data == {"expected": 900, "reported": 9}
    assert (await gateway.order(order["id"]))["status"] == "pending"


async def test_live_mode_does_not_expose_the_sandbox(tmp_path: Path, sandbox_dir: Path) -> None:
    settings = load_settings(mode="live", data_dir=tmp_path, sandbox_dir=sandbox_dir, run_worker=False,
                             database_url=f"sqlite+aiosqlite:///{tmp_path / 'live.db'}", master_key="L" * 40,
                             public_url="https://pay.example.com")
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw") as http:
            assert (await http.post("/sandbox/wechatpay/_sandbox/pay", json={"out_trade_no": "X"})).status_code == 404
            health = await http.get("/healthz")
            assert health.status_code == 200
            # security headers on every answer; HSTS because the public address is https
            assert health.headers["strict-transport-security"].startswith("max-age=")
            assert health.headers["x-frame-options"] == "DENY"
            assert health.headers["content-security-policy"] == "default-src 'none'; frame-ancestors 'none'"


def test_cli_set_credentials_reports_errors_without_a_traceback(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    bad = tmp_path / "creds.json"
    bad.write_text(json.dumps({"mchid": "1"}))
    env = {**os.environ, "MINIGATE_DATA_DIR": str(tmp_path / "d")}
    made = subprocess.run([sys.executable, "-m", "minigate.cli", "apps", "create", "X"], env=env,
                          capture_output=True, text=True, timeout=60, check=True)
    app_id = json.loads(made.stdout)["id"]
    done = subprocess.run([sys.executable, "-m", "minigate.cli", "apps", "set-credentials", app_id, "wechatpay",
                           "--file", str(bad)], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "invalid wechatpay credentials" in done.stderr and "Traceback" not in done.stderr


@pytest.mark.parametrize(("provider", "change", "message"), [
    ("jdpay", {"des_key": "c2hvcnQ="}, "des_key"),
    ("jdpay", {"jd_public_key": "bm90IGEga2V5"}, "jd_public_key"),
    ("jdpay", {"cashier_url": "http://h5pay.jd.com/jdpay/saveOrder"}, "cashier_url"),
    ("alipay", {"app_private_key": "bm90IGEga2V5"}, "app_private_key"),
    ("alipay", {"seller_id": "12345"}, "seller_id"),
    ("alipay", {"base_url": "http://openapi.alipay.com/gateway.do"}, "https"),
])
async def test_unusable_jd_and_alipay_live_credentials_are_refused(gateway: Gateway, provider: str, change: dict,
                                                                   message: str) -> None:
    creds = gateway.rt.sandbox.credentials(provider) | change
    with pytest.raises(InvalidRequest) as raised:
        await set_credentials(gateway.rt, app_id=gateway.app_id, mode="live", provider=provider, config=creds)
    assert message in raised.value.message
    assert await gateway.count(AppCredential) == 0


@pytest.mark.parametrize("provider", ["jdpay", "alipay"])
async def test_good_jd_and_alipay_live_credentials_are_stored(gateway: Gateway, provider: str) -> None:
    creds = gateway.rt.sandbox.credentials(provider)
    if provider == "alipay":
        creds |= {"seller_id": creds["seller_id"] if len(creds["seller_id"]) == 16 else "2088" + "0" * 12}
    stored = await set_credentials(gateway.rt, app_id=gateway.app_id, mode="live", provider=provider, config=creds)
    assert stored == [provider]

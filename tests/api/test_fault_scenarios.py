"""Fault scenarios F1…F14 of the reliability reference that the other suites do not already name.

F1/F6 create and refund: test_recovery.py; F2 duplicate after commit: test_notifications.py;
F5 forged: test_notifications.py and the contract suite; F9: test_orders.py; F10: test_recovery.py.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta

import pytest
from sqlalchemy import func, select, text, update

from minigate.domain.results import ProviderResult, TradeState, TradeStatus
from minigate.services import orders as order_service
from minigate.store.tables import Event, InboundNotification, Order, OrderEvent, Refund
from tests.conftest import Gateway


async def fault(gateway: Gateway, **spec: object) -> None:
    r = await gateway.http.post("/sandbox/wechatpay/_sandbox/faults", json={"seconds": 0, **spec})
    assert r.status_code < 300, r.text


async def count_where(gateway: Gateway, model: type, *conditions: object) -> int:
    async with gateway.rt.db.transaction() as session:
        return int((await session.execute(select(func.count()).select_from(model).where(*conditions))).scalar_one())


async def test_f3_fifty_parallel_identical_notifications_and_the_poller(gateway: Gateway) -> None:
    await gateway.add_webhook()
    order = await gateway.create_order(amount=4321)
    gateway.sim.pay(order["out_trade_no"])                     # paid at the provider, notification not yet sent
    body, headers = gateway.sim.build_notification(order["out_trade_no"])
    async with gateway.rt.db.transaction() as session:
        await session.execute(update(Order).values(next_check_at=gateway.rt.now() - timedelta(seconds=1)))
    posts = [gateway.http.post(f"/notify/wechatpay/test/{gateway.app_id}", content=body, headers=headers)
             for _ in range(50)]
    results = await asyncio.gather(*posts, gateway.run_worker())
    assert all(r.status_code in (200, 204) for r in results[:-1])
    await gateway.rt.sandbox.wait_idle()
    await gateway.run_worker()
    assert await count_where(gateway, OrderEvent, OrderEvent.type == "order.paid") == 1
    assert await count_where(gateway, Event, Event.type == "order.paid") == 1
    assert gateway.merchant.types().count("order.paid") == 1


async def test_f4_out_of_order_views_never_regress(gateway: Gateway) -> None:
    order = await gateway.create_order(amount=500)
    await gateway.pay(order)
    for stale in (TradeState.PENDING, TradeState.CLOSED, TradeState.FAILED):   # late or stale provider views
        view = TradeStatus(out_trade_no=order["out_trade_no"], state=stale, amount_total=500)
        assert await order_service.apply_query_result(gateway.rt, order["id"], ProviderResult.success(view),
                                                      source="query") == "no_change"
    assert (await gateway.order(order["id"]))["status"] == "paid"
    # a refund notification that arrives before minigate knows the refund is refused (404): the provider's
    # retry delivers it again once the refund exists — the retry schedule is the parking lot
    refund_body, refund_headers = gateway.sim.build_notification(order["out_trade_no"])
    assert refund_body
    paid_again = TradeStatus(out_trade_no=order["out_trade_no"], state=TradeState.PAID, amount_total=500)
    assert await order_service.apply_query_result(gateway.rt, order["id"], ProviderResult.success(paid_again),
                                                  source="query") == "duplicate"


async def test_f6_close_timeout_is_unknown_then_converges(gateway: Gateway) -> None:
    order = await gateway.create_order()
    await fault(gateway, next_call="charged_then_timeout", path="/v3/pay/transactions/out-trade-no/")
    r = await gateway.http.post(f"/v1/orders/{order['id']}/close", headers=gateway.auth)
    assert r.status_code == 503 and r.json()["error"]["retryable"] is True
    assert (await gateway.order(order["id"]))["status"] == "pending"        # not guessed
    again = await gateway.http.post(f"/v1/orders/{order['id']}/close", headers=gateway.auth)
    assert again.status_code == 200 and again.json()["status"] == "closed"
    assert gateway.sim.order(order["out_trade_no"]).trade_state == "CLOSED"


async def test_f8_the_fifty_first_refund_is_refused_locally(gateway: Gateway) -> None:
    order = await gateway.create_order(amount=100)
    await gateway.pay(order)
    for _ in range(50):
        r = await gateway.http.post("/v1/refunds", headers=gateway.auth, json={"order": order["id"], "amount": 1})
        assert r.status_code == 200, r.text
    calls_before = len(gateway.sim.order(order["out_trade_no"]).refunds)
    r = await gateway.http.post("/v1/refunds", headers=gateway.auth, json={"order": order["id"], "amount": 1})
    assert r.status_code == 400 and r.json()["error"]["code"] == "too_many_refunds"
    assert len(gateway.sim.order(order["out_trade_no"]).refunds) == calls_before == 50


async def test_f11_clock_skew_fails_loudly_and_changes_nothing(gateway: Gateway) -> None:
    order = await gateway.create_order()
    await fault(gateway, clock_skew_seconds=600)               # the provider's clock is 10 minutes ahead
    r = await gateway.http.post("/v1/orders", headers=gateway.auth, json={
        "channel": "wechat_mini", "amount": 100, "description": "x", "merchant_order_no": uuid.uuid4().hex[:20],
        "payer": {"openid": "oSkew"}})
    assert r.status_code == 502 and r.json()["error"]["code"] == "provider_auth_failed"   # our requests refused
    body, headers = gateway.sim.build_notification(order["out_trade_no"])               # its callbacks refused
    r = await gateway.http.post(f"/notify/wechatpay/test/{gateway.app_id}", content=body, headers=headers)
    assert r.status_code == 400
    assert (await gateway.order(order["id"]))["status"] == "pending"
    assert await count_where(gateway, InboundNotification, InboundNotification.error_code == "timestamp_out_of_window") == 1


async def test_f12_platform_key_rotation_mid_traffic_loses_no_notification(gateway: Gateway) -> None:
    paid = []
    for key in ("public_key", "certificate", "mixed", "certificate", "public_key"):
        r = await gateway.http.post("/sandbox/wechatpay/_sandbox/settings", json={"callback_key": key})
        assert r.status_code == 200
        order = await gateway.create_order()
        await gateway.pay(order)
        paid.append((await gateway.order(order["id"]))["status"])
    assert paid == ["paid"] * 5


@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
async def test_f7_f14_database_refusing_writes_fails_closed_and_never_acks(gateway: Gateway, database_url: str) -> None:
    """The database stops taking writes (read-only, as after a failover or a full disk): requests fail with
    5xx and leave nothing half-done; callbacks are not acknowledged, so the provider retries them; once the
    database is back, the retry lands."""
    order = await gateway.create_order()
    dbname = database_url.rsplit("/", 1)[1]
    async with gateway.rt.db.engine.connect() as conn:
        await conn.execute(text(f'ALTER DATABASE "{dbname}" SET default_transaction_read_only = on'))
        await conn.commit()
    await gateway.rt.db.engine.dispose()                       # new connections pick the setting up
    try:
        await gateway.http.post("/sandbox/wechatpay/_sandbox/settings", json={"time_scale": 0.05})
        r = await gateway.http.post("/sandbox/wechatpay/_sandbox/pay", json={"out_trade_no": order["out_trade_no"]})
        assert r.status_code == 200
        await asyncio.sleep(0.3)                               # the first attempts hit the read-only database
        log = (await gateway.http.get("/sandbox/wechatpay/_sandbox/notifications")).json()["data"][0]
        assert log["state"] == "pending" and all(a["status"] not in (200, 204) for a in log["log"])
        created = await gateway.http.post("/v1/orders", headers=gateway.auth, json={
            "channel": "wechat_mini", "amount": 100, "description": "x", "merchant_order_no": "RO1",
            "payer": {"openid": "oRO"}})
        assert created.status_code >= 500
    finally:
        async with gateway.rt.db.engine.connect() as conn:
            conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
            await conn.execute(text("SET default_transaction_read_only = off"))
            await conn.execute(text(f'ALTER DATABASE "{dbname}" SET default_transaction_read_only = off'))
        await gateway.rt.db.engine.dispose()
    assert await count_where(gateway, Order, Order.merchant_order_no == "RO1") == 0
    await gateway.rt.sandbox.wait_idle()                        # WeChat's (scaled) retry now succeeds
    assert (await gateway.order(order["id"]))["status"] == "paid"
    assert await count_where(gateway, Refund) == 0

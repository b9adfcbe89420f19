"""The payment contract: the same behaviour, through the public API, for every payment provider.

create → pay → notify → query → partial refund → full refund; close before pay; pay after close; duplicate,
forged and tampered notifications; unknown order; amount and merchant mismatch; idempotent retries; a lost
notification settled by the worker. Runs on SQLite and PostgreSQL.
"""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select, update

from minigate.store.tables import Event, InboundNotification, Order
from tests.conftest import Gateway
from tests.contract.drivers import DRIVERS, Driver


@pytest.fixture(params=DRIVERS, ids=[d.channel for d in DRIVERS])
def driver(request: pytest.FixtureRequest) -> Driver:
    return request.param  # type: ignore[no-any-return]


async def create(gw: Gateway, driver: Driver, amount: int = 1000, **extra: Any) -> dict[str, Any]:
    body = {"channel": driver.channel, "amount": amount, "description": "Contract item",
            "merchant_order_no": f"C{uuid.uuid4().hex[:16]}", "payer": {"openid": "oContractPayer0000001"}}
    body.update(extra)
    r = await gw.http.post("/v1/orders", headers=gw.auth | {"Idempotency-Key": str(uuid.uuid4())}, json=body)
    assert r.status_code == 200, r.text
    order = r.json()
    assert order["status"] == "pending" and order["channel"] == driver.channel and order["pay_params"]
    return dict(order)


async def status(gw: Gateway, order: dict[str, Any]) -> str:
    return str((await gw.order(order["id"]))["status"])


async def rejected_count(gw: Gateway) -> int:
    async with gw.rt.db.transaction() as session:
        rows = (await session.execute(select(InboundNotification.outcome))).scalars().all()
    return sum(1 for r in rows if r == "rejected")


async def post_notification(gw: Gateway, driver: Driver, body: bytes, headers: dict[str, str]) -> Any:
    return await gw.http.post(f"/notify/{driver.provider}/test/{gw.app_id}", content=body, headers=headers)


async def test_full_lifecycle(gateway: Gateway, driver: Driver) -> None:
    await gateway.add_webhook()
    order = await create(gateway, driver, amount=1000)
    paid = await driver.pay(gateway, order)
    assert paid.status_code == 200, paid.text
    assert await status(gateway, order) == "paid"
    # what the provider says agrees with the ledger
    provider = await gateway.rt.payment_provider(gateway.app_id, "test", driver.provider)
    queried = await provider.query_order(order["out_trade_no"])
    assert queried.ok and queried.value is not None and queried.value.amount_total == 1000
    r1 = await gateway.http.post("/v1/refunds", headers=gateway.auth, json={"order": order["id"], "amount": 400})
    assert r1.status_code == 200, r1.text
    await gateway.rt.sandbox.wait_idle()
    await gateway.run_worker()
    assert (await gateway.order(order["id"]))["amount_refunded"] == 400
    assert await status(gateway, order) == "partially_refunded"
    r2 = await gateway.http.post("/v1/refunds", headers=gateway.auth, json={"order": order["id"]})
    assert r2.status_code == 200 and r2.json()["amount"] == 600
    await gateway.rt.sandbox.wait_idle()
    await gateway.run_worker()
    final = await gateway.order(order["id"])
    assert final["status"] == "refunded" and final["amount_refunded"] == 1000
    over = await gateway.http.post("/v1/refunds", headers=gateway.auth, json={"order": order["id"], "amount": 1})
    assert over.status_code == 400
    await gateway.run_worker()
    assert gateway.merchant.types().count("order.paid") == 1
    assert gateway.merchant.types().count("refund.succeeded") == 2


async def test_close_before_pay_then_payment_is_impossible(gateway: Gateway, driver: Driver) -> None:
    order = await create(gateway, driver)
    await driver.open_cashier(gateway, order)
    closed = await gateway.http.post(f"/v1/orders/{order['id']}/close", headers=gateway.auth)
    assert closed.status_code == 200 and closed.json()["status"] == "closed"
    attempt = await driver.pay(gateway, order)
    if driver.closes_at_provider:
        assert attempt.status_code >= 400      # the provider refuses to take money for a closed trade
        assert await status(gateway, order) == "closed"
        return
    # no close at this provider: the payer could still pay; the money is recorded, never lost, and flagged
    assert await status(gateway, order) == "paid"
    await gateway.add_webhook()
    async with gateway.rt.db.transaction() as session:
        types = (await session.execute(select(Event.type))).scalars().all()
    assert "order.paid_after_close" in types and "order.paid" not in types


async def test_duplicate_notifications_change_state_once(gateway: Gateway, driver: Driver) -> None:
    await gateway.add_webhook()
    await gateway.http.post(f"/sandbox/{driver.provider}/_sandbox/faults", json={"notify": "duplicate"})
    order = await create(gateway, driver)
    await driver.pay(gateway, order)
    body, headers = driver.forge(gateway, order)       # and one more genuine copy, for good measure
    await post_notification(gateway, driver, body, headers)
    await gateway.run_worker()
    assert await status(gateway, order) == "paid"
    assert gateway.merchant.types() == ["order.paid"]


async def test_tampered_notification_is_refused_and_the_genuine_retry_lands(gateway: Gateway, driver: Driver) -> None:
    await gateway.http.post(f"/sandbox/{driver.provider}/_sandbox/faults", json={"notify": "tamper"})
    order = await create(gateway, driver)
    await driver.pay(gateway, order)
    assert await rejected_count(gateway) >= 1
    assert await status(gateway, order) == "paid"


@pytest.mark.parametrize("case", ["tampered", "wrong_amount", "wrong_merchant", "unknown_order"])
async def test_forged_notifications_change_nothing(gateway: Gateway, driver: Driver, case: str) -> None:
    await gateway.add_webhook()
    order = await create(gateway, driver, amount=1500)
    await driver.open_cashier(gateway, order)
    if case == "tampered":
        body, headers = driver.forge(gateway, order)
        body = driver.tamper(body)
    elif case == "wrong_amount":
        body, headers = driver.forge(gateway, order, **driver.wrong_amount)
    elif case == "wrong_merchant":
        body, headers = driver.forge(gateway, order, **driver.wrong_merchant)
    else:
        other = await create(gateway, driver, amount=1500)
        await driver.open_cashier(gateway, other)
        body, headers = driver.forge(gateway, other)
        async with gateway.rt.db.transaction() as session:   # the order vanishes from our ledger's view
            await session.execute(update(Order).where(Order.id == other["id"]).values(
                out_trade_no="GONE" + uuid.uuid4().hex[:20].upper()))
    r = await post_notification(gateway, driver, body, headers)
    assert r.status_code >= 400, r.text
    assert await status(gateway, order) == "pending"
    assert await rejected_count(gateway) == 1
    await gateway.run_worker()
    assert gateway.merchant.types() == []
    async with gateway.rt.db.transaction() as session:
        assert (await session.execute(select(Event))).scalars().all() == []


async def test_idempotent_create_returns_the_same_order(gateway: Gateway, driver: Driver) -> None:
    body = {"channel": driver.channel, "amount": 300, "description": "Contract item",
            "merchant_order_no": f"C{uuid.uuid4().hex[:16]}", "payer": {"openid": "oContractPayer0000001"}}
    headers = gateway.auth | {"Idempotency-Key": "contract-same-key"}
    first = await gateway.http.post("/v1/orders", headers=headers, json=body)
    second = await gateway.http.post("/v1/orders", headers=headers, json=body)
    assert first.status_code == second.status_code == 200 and first.json() == second.json()
    assert await gateway.count(Order) == 1


async def test_lost_notification_is_settled_by_the_worker(gateway: Gateway, driver: Driver) -> None:
    await gateway.http.post(f"/sandbox/{driver.provider}/_sandbox/faults", json={"notify": "drop"})
    order = await create(gateway, driver)
    await driver.pay(gateway, order)
    assert await status(gateway, order) == "pending"
    async with gateway.rt.db.transaction() as session:
        await session.execute(update(Order).values(next_check_at=gateway.rt.now() - timedelta(seconds=1)))
    await gateway.run_worker()
    assert await status(gateway, order) == "paid"


async def test_browser_return_page_changes_nothing(gateway: Gateway, driver: Driver) -> None:
    """The cashier's browser return (JD's callbackUrl) shows a page; only verified callbacks move money."""
    order = await create(gateway, driver)
    r = await gateway.http.post(f"/return/{driver.provider}/test/{gateway.app_id}",
                                data={"tradeNum": order["out_trade_no"], "status": "2"})
    assert r.status_code == 200 and "text/html" in r.headers["content-type"]
    assert await status(gateway, order) == "pending"


async def test_reordered_notifications_both_land(gateway: Gateway, driver: Driver) -> None:
    """The sandbox's reorder fault holds a callback until the next one was delivered: order B's arrives first."""
    await gateway.add_webhook()
    r = await gateway.http.post(f"/sandbox/{driver.provider}/_sandbox/faults",
                                json={"notify": "reorder", "seconds": 1_000_000})
    assert r.status_code < 300, r.text
    first, second = await create(gateway, driver), await create(gateway, driver)
    await driver.open_cashier(gateway, first)
    await gateway.http.post(f"/sandbox/{driver.provider}/_sandbox/pay", json={"out_trade_no": first["out_trade_no"]})
    assert await status(gateway, first) == "pending"          # held back
    await driver.pay(gateway, second)                           # delivered, then releases the first
    assert await status(gateway, second) == "paid" and await status(gateway, first) == "paid"
    await gateway.run_worker()
    paid = [e["data"]["object"]["id"] for e in gateway.merchant.events if e["type"] == "order.paid"]
    assert paid == [second["id"], first["id"]]

"""Every failing seed the simulation found, replayed; plus the smallest reproduction of each finding.

Seed 5 (150 steps, step 23) and seed 6 (step 117), and many more: a genuinely signed JD Pay notification that carries a wrong
amount for an order that is already paid is acknowledged (``200 ok``) without any check or alert. JD's
notification event id is derived from ``tradeType:tradeNum:status``, so the forged notification has the id of the
genuine one and ``handle_notification`` answers "duplicate" before the amount is compared (A-8 says
verify -> decrypt -> validate -> dedupe). No state changes, but F5 asks for a refusal or an alert.
"""

from __future__ import annotations

import pytest

from tests.conftest import Gateway
from tests.contract.drivers import DRIVERS, Driver
from tests.contract.test_payment_contract import create
from tests.simulation.harness import run_seed

JD = next(d for d in DRIVERS if d.provider == "jdpay")


@pytest.mark.parametrize(("seed", "steps"), [(5, 30), (6, 120), (19, 120), (1, 80)])
async def test_failing_seed_replays_clean(gateway: Gateway, seed: int, steps: int) -> None:
    report = await run_seed(gateway, seed, steps=steps)
    assert report.violations == [], report.render()


@pytest.mark.parametrize("refunded", [False, True], ids=["paid", "refunded"])
@pytest.mark.parametrize("driver", DRIVERS, ids=[d.provider for d in DRIVERS])
async def test_signed_wrong_amount_notification_for_a_paid_order_is_refused(gateway: Gateway, driver: Driver,
                                                                            refunded: bool) -> None:
    """JD Pay: seeds 4-7, 16, 17, 19-21, 27, 102, 103, 105, 107, 111, 113-115, 121, 126 (120 steps). WeChat Pay and
    Alipay pass (their notification ids are unique per notification)."""
    order = await create(gateway, driver, amount=1500)
    await driver.pay(gateway, order)
    status = "paid"
    if refunded:
        r = await gateway.http.post("/v1/refunds", headers=gateway.auth, json={"order": order["id"]})
        assert r.status_code == 200, r.text
        await gateway.settle()
        await gateway.run_worker()
        status = "refunded"
    assert (await gateway.order(order["id"]))["status"] == status
    body, headers = driver.forge(gateway, order, **driver.wrong_amount)
    r = await gateway.http.post(f"/notify/{driver.provider}/test/{gateway.app_id}", content=body, headers=headers)
    assert r.status_code >= 400, r.text
    assert (await gateway.order(order["id"]))["status"] == status


async def test_jd_payment_after_close_whose_notification_is_lost_is_found(gateway: Gateway) -> None:
    """Seeds 19, 23, 25, 124 (120 steps): a JD Pay order closed by us (JD has no close) is paid in the still-open cashier and the
    notification is lost. Nothing queries a closed order again, so the payment is never recorded: after healing,
    expiry and every worker pass the order is ``closed`` locally and paid at JD (invariant 6, money not in the
    ledger)."""
    from datetime import timedelta

    from sqlalchemy import update

    from minigate.store.tables import Order

    order = await create(gateway, JD, amount=1500)
    await JD.open_cashier(gateway, order)
    closed = await gateway.http.post(f"/v1/orders/{order['id']}/close", headers=gateway.auth)
    assert closed.status_code == 200 and closed.json()["status"] == "closed"
    assert (await gateway.http.post("/sandbox/jdpay/_sandbox/faults", json={"notify": "drop"})).status_code == 200
    paid = await gateway.http.post("/sandbox/jdpay/_sandbox/pay", json={"out_trade_no": order["out_trade_no"]})
    assert paid.status_code == 200                        # JD took the money
    await gateway.settle()
    base = gateway.rt.now()
    for hours in (1, 3, 25):                              # the worker runs for a day; the order expired long ago
        gateway.rt.now = lambda h=hours: base + timedelta(hours=h)
        async with gateway.rt.db.transaction() as session:
            await session.execute(update(Order).where(Order.next_check_at.is_not(None)).values(
                next_check_at=gateway.rt.now() - timedelta(seconds=1)))
        await gateway.run_worker()
        await gateway.settle()
    assert (await gateway.order(order["id"]))["status"] == "paid"


# Seed 1 on PostgreSQL (80 steps, step 9): refund trail ('refund.processing', pending -> processing) followed by
# ('refund.succeeded', pending -> succeeded). The refund's success notification and the refund API call's own
# answer were applied concurrently; both read the refund row *before* locking the order (notifications._transition,
# refunds.apply_refund_result), so the second applied its answer to a stale copy. With two "succeeded" answers
# (a same-key retry and the worker's query, or the notification) the refund is counted twice.

async def test_refund_applied_twice_when_two_answers_race(gateway: Gateway) -> None:
    import asyncio
    from datetime import timedelta

    from sqlalchemy import select, update

    from minigate.services.orders import lock_order
    from minigate.store.tables import Event, Order, Refund

    order = await gateway.create_order(amount=1000)
    await gateway.pay(order)
    # the refund reaches WeChat but its answer is lost, and so is WeChat's REFUND.SUCCESS notification
    for spec in ({"next_call": "charged_then_timeout", "path": "/v3/refund/domestic/refunds", "seconds": 0},
                 {"notify": "drop"}):
        assert (await gateway.http.post("/sandbox/wechatpay/_sandbox/faults", json=spec)).status_code == 200
    headers = gateway.auth | {"Idempotency-Key": "race-refund-0001"}
    body = {"order": order["id"], "amount": 300}
    assert (await gateway.http.post("/v1/refunds", headers=headers, json=body)).status_code == 503
    await gateway.settle()
    async with gateway.rt.db.transaction() as session:
        await session.execute(update(Refund).values(next_check_at=gateway.rt.now() - timedelta(seconds=1)))
    # two answers of "succeeded" arrive together: the merchant's same-key retry and the worker's query
    release = asyncio.Event()

    async def hold_order_lock() -> None:
        async with gateway.rt.db.transaction() as session:
            await lock_order(session, order["id"])
            await release.wait()

    holder = asyncio.create_task(hold_order_lock())
    await asyncio.sleep(0.2)
    retry = asyncio.create_task(gateway.http.post("/v1/refunds", headers=headers, json=body))
    worker = asyncio.create_task(gateway.run_worker())
    await asyncio.sleep(1.0)
    release.set()
    await asyncio.gather(holder, retry, worker)
    await gateway.settle()
    async with gateway.rt.db.transaction() as session:
        row = (await session.execute(select(Order).where(Order.id == order["id"]))).scalar_one()
        succeeded = (await session.execute(select(Event).where(Event.type == "refund.succeeded"))).scalars().all()
    assert [r.refund for r in gateway.sim.order(order["out_trade_no"]).refunds] == [300]
    assert (row.amount_refunded, row.amount_refund_pending, row.status) == (300, 0, "partially_refunded")
    assert len(succeeded) == 1


@pytest.mark.parametrize("state", ["pending", "closed"])
async def test_signed_alipay_notification_with_a_wrong_amount_for_an_unpaid_order_is_refused(
        gateway: Gateway, state: str) -> None:
    """Seeds 9, 13, 22, 104, 105 (120 steps; minor, no state change): a signed WAIT_BUYER_PAY / TRADE_CLOSED notification whose
    total_amount differs from the order is acknowledged ``success``; the amount is compared only for payments (B-2:
    every callback's fields are checked against the stored order, a mismatch raises an alert)."""
    alipay = next(d for d in DRIVERS if d.provider == "alipay")
    order = await create(gateway, alipay, amount=1500)
    if state == "closed":
        assert (await gateway.http.post(f"/v1/orders/{order['id']}/close", headers=gateway.auth)).status_code == 200
    await gateway.settle()
    body, headers = alipay.forge(gateway, order, **alipay.wrong_amount)
    r = await gateway.http.post(f"/notify/alipay/test/{gateway.app_id}", content=body, headers=headers)
    assert r.status_code >= 400, r.text
    assert (await gateway.order(order["id"]))["status"] == state

"""Unknown outcomes are never failures (A-14); every retry reuses the provider ids (A-6); the worker settles
what no notification settled (A-9, A-10)."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import update

from minigate.store.tables import Order, Refund
from tests.api.test_orders import order_body
from tests.conftest import Gateway


async def fault(gateway: Gateway, **spec: object) -> None:
    r = await gateway.http.post("/sandbox/wechatpay/_sandbox/faults", json={"seconds": 0, **spec})
    assert r.status_code < 300, r.text


async def make_due(gateway: Gateway, model: type[Order] | type[Refund]) -> None:
    async with gateway.rt.db.transaction() as session:
        await session.execute(update(model).values(next_check_at=gateway.rt.now() - timedelta(seconds=1)))


async def test_create_charged_then_timeout_resumes_with_same_out_trade_no(gateway: Gateway) -> None:
    await fault(gateway, next_call="charged_then_timeout", path="/v3/pay/transactions/jsapi")
    body = order_body()
    headers = gateway.auth | {"Idempotency-Key": "resume-after-timeout"}
    first = await gateway.http.post("/v1/orders", headers=headers, json=body)
    assert first.status_code == 503
    assert first.json()["error"]["code"] == "provider_unavailable" and first.json()["error"]["retryable"] is True
    listed = (await gateway.http.get("/v1/orders", headers=gateway.auth)).json()["data"]
    assert [o["status"] for o in listed] == ["creating"]
    second = await gateway.http.post("/v1/orders", headers=headers, json=body)
    assert second.status_code == 200 and second.json()["status"] == "pending"
    assert second.json()["out_trade_no"] == listed[0]["out_trade_no"]
    assert await gateway.count(Order) == 1
    assert gateway.sim.order(listed[0]["out_trade_no"]) is not None


async def test_worker_completes_an_order_nobody_retried(gateway: Gateway) -> None:
    await fault(gateway, next_call="http_500", path="/v3/pay/transactions/jsapi")
    r = await gateway.http.post("/v1/orders", headers=gateway.auth, json=order_body())
    assert r.status_code == 503
    await make_due(gateway, Order)
    await gateway.run_worker()
    listed = (await gateway.http.get("/v1/orders", headers=gateway.auth)).json()["data"]
    assert listed[0]["status"] == "pending" and listed[0]["pay_params"]["package"].startswith("prepay_id=")


async def test_lost_notification_is_settled_by_active_query(gateway: Gateway) -> None:
    """F10: the notification never arrives; the worker's query finds the payment."""
    await gateway.add_webhook()
    await fault(gateway, notify="drop")
    order = await gateway.create_order()
    await gateway.pay(order)
    assert (await gateway.order(order["id"]))["status"] == "pending"
    await make_due(gateway, Order)
    await gateway.run_worker()
    await gateway.run_worker()
    assert (await gateway.order(order["id"]))["status"] == "paid"
    assert gateway.merchant.types() == ["order.paid"]


async def test_expired_order_is_queried_then_closed(gateway: Gateway) -> None:
    await gateway.add_webhook()
    order = await gateway.create_order(expires_in=60)
    async with gateway.rt.db.transaction() as session:
        await session.execute(update(Order).values(expires_at=gateway.rt.now() - timedelta(seconds=1)))
    await make_due(gateway, Order)
    await gateway.run_worker()
    await gateway.run_worker()
    assert (await gateway.order(order["id"]))["status"] == "closed"
    assert gateway.sim.order(order["out_trade_no"]).trade_state == "CLOSED"
    assert gateway.merchant.types() == ["order.closed"]


async def test_refund_timeout_is_unknown_then_settled_without_a_second_refund(gateway: Gateway) -> None:
    order = await gateway.create_order(amount=800)
    await gateway.pay(order)
    await fault(gateway, next_call="charged_then_timeout", path="/v3/refund/domestic/refunds")
    r = await gateway.http.post("/v1/refunds", headers=gateway.auth | {"Idempotency-Key": "refund-timeout"},
                                json={"order": order["id"], "amount": 300})
    assert r.status_code == 503 and r.json()["error"]["retryable"] is True
    listed = (await gateway.http.get(f"/v1/refunds?order={order['id']}", headers=gateway.auth)).json()["data"]
    assert [x["status"] for x in listed] == ["pending"]
    # the reservation holds: nothing more than what is left can be refunded meanwhile
    over = await gateway.http.post("/v1/refunds", headers=gateway.auth, json={"order": order["id"], "amount": 501})
    assert over.status_code == 400
    await gateway.settle()
    await make_due(gateway, Refund)
    await gateway.run_worker()
    await gateway.settle()
    await make_due(gateway, Refund)
    await gateway.run_worker()
    refund = (await gateway.http.get(f"/v1/refunds/{listed[0]['id']}", headers=gateway.auth)).json()
    assert refund["status"] == "succeeded"
    sim_refunds = gateway.sim.order(order["out_trade_no"]).refunds
    assert len(sim_refunds) == 1 and sim_refunds[0].out_refund_no == refund["out_refund_no"]
    assert (await gateway.order(order["id"]))["amount_refunded"] == 300


async def test_refund_lost_before_the_provider_is_resent_with_the_same_number(gateway: Gateway) -> None:
    order = await gateway.create_order(amount=800)
    await gateway.pay(order)
    await fault(gateway, next_call="http_500", path="/v3/refund/domestic/refunds")
    r = await gateway.http.post("/v1/refunds", headers=gateway.auth, json={"order": order["id"], "amount": 100})
    assert r.status_code == 503
    await make_due(gateway, Refund)
    await gateway.run_worker()       # query: not found at the provider -> re-send, same out_refund_no
    await gateway.settle()
    await make_due(gateway, Refund)
    await gateway.run_worker()
    listed = (await gateway.http.get(f"/v1/refunds?order={order['id']}", headers=gateway.auth)).json()["data"]
    assert [x["status"] for x in listed] == ["succeeded"]
    assert [x.out_refund_no for x in gateway.sim.order(order["out_trade_no"]).refunds] == [listed[0]["out_refund_no"]]

"""Refunds: partial, several, full, never more than paid, even when requested concurrently."""

from __future__ import annotations

import asyncio

from minigate.store.tables import Refund
from tests.conftest import Gateway


async def _paid_order(gateway: Gateway, amount: int = 1000) -> dict:
    order = await gateway.create_order(amount=amount)
    await gateway.pay(order)
    return order


async def test_partial_partial_then_too_much_then_rest(gateway: Gateway) -> None:
    await gateway.add_webhook()
    order = await _paid_order(gateway, 1000)
    r1 = await gateway.http.post("/v1/refunds", headers=gateway.auth, json={"order": order["id"], "amount": 300})
    r2 = await gateway.http.post("/v1/refunds", headers=gateway.auth, json={"order": order["id"], "amount": 200,
                                                                              "reason": "broken"})
    assert r1.status_code == r2.status_code == 200
    assert r1.json()["out_refund_no"] != r2.json()["out_refund_no"]
    await gateway.settle()
    assert (await gateway.order(order["id"]))["status"] == "partially_refunded"
    too_much = await gateway.http.post("/v1/refunds", headers=gateway.auth,
                                       json={"order": order["id"], "amount": 501})
    assert too_much.status_code == 400
    assert too_much.json()["error"]["code"] == "refund_exceeds_refundable"
    assert too_much.json()["error"]["refundable"] == 500
    rest = await gateway.http.post("/v1/refunds", headers=gateway.auth, json={"order": order["id"]})
    assert rest.status_code == 200 and rest.json()["amount"] == 500
    await gateway.settle()
    final = await gateway.order(order["id"])
    assert final["status"] == "refunded" and final["amount_refunded"] == 1000
    for refund_id in (r1.json()["id"], r2.json()["id"], rest.json()["id"]):
        got = (await gateway.http.get(f"/v1/refunds/{refund_id}", headers=gateway.auth)).json()
        assert got["status"] == "succeeded" and got["provider_refund_id"]
    await gateway.run_worker()
    assert gateway.merchant.types().count("refund.succeeded") == 3
    listed = (await gateway.http.get(f"/v1/refunds?order={order['id']}", headers=gateway.auth)).json()
    assert len(listed["data"]) == 3
    # provider side agrees
    assert sum(r.refund for r in gateway.sim.order(order["out_trade_no"]).refunds) == 1000


async def test_refund_of_unpaid_order_is_refused(gateway: Gateway) -> None:
    order = await gateway.create_order()
    r = await gateway.http.post("/v1/refunds", headers=gateway.auth, json={"order": order["id"], "amount": 1})
    assert r.status_code == 400 and r.json()["error"]["code"] == "order_not_refundable"
    assert await gateway.count(Refund) == 0


async def test_refund_bad_amounts(gateway: Gateway) -> None:
    order = await _paid_order(gateway, 100)
    for amount, code in ((0, "amount_invalid"), (-1, "amount_invalid"), (101, "refund_exceeds_refundable"),
                         ("10", "parameter_invalid")):
        r = await gateway.http.post("/v1/refunds", headers=gateway.auth, json={"order": order["id"], "amount": amount})
        assert r.status_code == 400 and r.json()["error"]["code"] == code, (amount, r.text)
    r = await gateway.http.post("/v1/refunds", headers=gateway.auth, json={"order": "ord_missing", "amount": 1})
    assert r.status_code == 404
    assert await gateway.count(Refund) == 0


async def test_concurrent_refunds_never_exceed_the_paid_amount(gateway: Gateway) -> None:
    """F8: ten concurrent refunds of 30 on a 100 order: at most three are accepted, and the sum stays ≤ 100."""
    order = await _paid_order(gateway, 100)
    results = await asyncio.gather(*(gateway.http.post("/v1/refunds", headers=gateway.auth,
                                                       json={"order": order["id"], "amount": 30})
                                     for _ in range(10)))
    accepted = [r for r in results if r.status_code == 200]
    refused = [r for r in results if r.status_code != 200]
    assert len(accepted) == 3
    assert all(r.status_code == 400 and r.json()["error"]["code"] == "refund_exceeds_refundable" for r in refused)
    await gateway.settle()
    final = await gateway.order(order["id"])
    assert final["amount_refunded"] == 90 and final["status"] == "partially_refunded"


async def test_refund_idempotency_key_refunds_once(gateway: Gateway) -> None:
    order = await _paid_order(gateway, 100)
    headers = gateway.auth | {"Idempotency-Key": "refund-once-0001"}
    first = await gateway.http.post("/v1/refunds", headers=headers, json={"order": order["id"], "amount": 60})
    second = await gateway.http.post("/v1/refunds", headers=headers, json={"order": order["id"], "amount": 60})
    assert first.json()["id"] == second.json()["id"]
    await gateway.settle()
    assert (await gateway.order(order["id"]))["amount_refunded"] == 60
    assert len(gateway.sim.order(order["out_trade_no"]).refunds) == 1

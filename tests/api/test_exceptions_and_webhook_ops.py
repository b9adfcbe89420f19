"""The exceptions queue (payment after close, amount mismatch) and webhook operations (redeliver, rotate)."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

from sqlalchemy import update

from minigate.store.tables import WebhookDelivery, WebhookEndpoint
from tests.api.test_notifications import send_signed, transaction
from tests.conftest import Gateway
from tests.contract.drivers import DRIVERS

JD = next(d for d in DRIVERS if d.channel == "jdpay_h5")


async def paid_after_close(gateway: Gateway) -> dict[str, Any]:
    """JD Pay has no close: the payer can still pay the cashier after the merchant closed the order."""
    r = await gateway.http.post("/v1/orders", headers=gateway.auth, json={
        "channel": "jdpay_h5", "amount": 1200, "description": "Late payment",
        "merchant_order_no": f"L{uuid.uuid4().hex[:12]}", "payer": {"openid": "user-7"}})
    order = r.json()
    await JD.open_cashier(gateway, order)
    assert (await gateway.http.post(f"/v1/orders/{order['id']}/close", headers=gateway.auth)).json()["status"] == "closed"
    await JD.pay(gateway, order)
    assert (await gateway.order(order["id"]))["status"] == "paid"
    return dict(order)


async def test_payment_after_close_is_queued_for_a_decision(gateway: Gateway) -> None:
    await gateway.add_webhook()
    order = await paid_after_close(gateway)
    listed = (await gateway.http.get("/v1/payment_exceptions?status=open", headers=gateway.auth)).json()["data"]
    assert [(e["kind"], e["order"]) for e in listed] == [("paid_after_close", order["id"])]
    exc_id = listed[0]["id"]
    resolved = await gateway.http.post(f"/v1/payment_exceptions/{exc_id}/resolve", headers=gateway.auth,
                                       json={"action": "refund"})
    assert resolved.status_code == 200 and resolved.json()["status"] == "resolved" and resolved.json()["refund"]
    again = await gateway.http.post(f"/v1/payment_exceptions/{exc_id}/resolve", headers=gateway.auth,
                                    json={"action": "refund"})
    assert again.json()["refund"] == resolved.json()["refund"]            # decided once, refunded once
    other = await gateway.http.post(f"/v1/payment_exceptions/{exc_id}/resolve", headers=gateway.auth,
                                    json={"action": "accept"})
    assert other.status_code == 400 and other.json()["error"]["code"] == "exception_already_resolved"
    await gateway.rt.sandbox.wait_idle()
    await gateway.run_worker()
    final = await gateway.order(order["id"])
    assert final["status"] == "refunded" and final["amount_refunded"] == 1200
    assert "order.paid_after_close" in gateway.merchant.types() and "order.paid" not in gateway.merchant.types()
    assert len(JD.sim(gateway).order(order["out_trade_no"]).refunds) == 1


async def test_payment_after_close_refunds_itself_when_configured(gateway: Gateway) -> None:
    gateway.rt.settings = gateway.rt.settings.model_copy(update={"paid_after_close": "refund"})
    order = await paid_after_close(gateway)
    exc = (await gateway.http.get("/v1/payment_exceptions", headers=gateway.auth)).json()["data"][0]
    assert exc["status"] == "resolved" and exc["resolution"] == "refund" and exc["refund"]
    async with gateway.rt.db.transaction() as session:   # the worker sends it at once
        await session.execute(update(WebhookDelivery).values(next_attempt_at=gateway.rt.now()))
    await gateway.run_worker()
    await gateway.rt.sandbox.wait_idle()
    await gateway.run_worker()
    assert (await gateway.order(order["id"]))["status"] == "refunded"


async def test_amount_mismatch_is_queued_never_resolved_alone(gateway: Gateway) -> None:
    order = await gateway.create_order(amount=900)
    await send_signed(gateway, transaction(gateway, order, amount={"total": 1, "payer_total": 1, "currency": "CNY",
                                                                   "payer_currency": "CNY"}))
    listed = (await gateway.http.get("/v1/payment_exceptions", headers=gateway.auth)).json()["data"]
    assert [(e["kind"], e["status"], e["data"]) for e in listed] == [
        ("amount_mismatch", "open", {"expected": 900, "reported": 1})]
    _, other_key = await gateway.new_app("Other")
    r = await gateway.http.get(f"/v1/payment_exceptions/{listed[0]['id']}",
                               headers={"Authorization": f"Bearer {other_key}"})
    assert r.status_code == 404


async def test_manual_redelivery_sends_again_with_a_fresh_window(gateway: Gateway) -> None:
    await gateway.add_webhook()
    gateway.merchant.fail_next = 10_000
    order = await gateway.create_order()
    await gateway.pay(order)
    async with gateway.rt.db.transaction() as session:
        await session.execute(update(WebhookDelivery).values(
            created_at=gateway.rt.now() - timedelta(hours=73)))
    await gateway.run_worker()
    dead = (await gateway.http.get("/v1/webhook_deliveries?status=dead", headers=gateway.auth)).json()["data"]
    assert len(dead) == 1 and dead[0]["attempts"] == 1
    gateway.merchant.fail_next = 0
    r = await gateway.http.post(f"/v1/events/{dead[0]['event']}/redeliver", headers=gateway.auth)
    assert r.status_code == 200 and r.json()["queued"] == 1
    await gateway.run_worker()
    assert gateway.merchant.types() == ["order.paid"]
    delivered = (await gateway.http.get(f"/v1/webhook_deliveries?event={dead[0]['event']}",
                                        headers=gateway.auth)).json()["data"]
    assert delivered[0]["status"] == "delivered" and delivered[0]["attempts"] == 2
    _, other_key = await gateway.new_app("Other")
    assert (await gateway.http.post(f"/v1/events/{dead[0]['event']}/redeliver",
                                    headers={"Authorization": f"Bearer {other_key}"})).status_code == 404


async def test_secret_rotation_keeps_the_old_secret_valid_during_the_overlap(gateway: Gateway) -> None:
    endpoint = await gateway.add_webhook()
    old = endpoint["secret"]
    rotated = await gateway.http.post(f"/v1/webhook_endpoints/{endpoint['id']}/rotate_secret", headers=gateway.auth,
                                      json={"expire_previous_in": 3600})
    new = rotated.json()["secret"]
    assert new != old and rotated.json()["previous_secret_expires_at"]
    gateway.merchant.secrets = [old]                       # a receiver not yet switched
    order = await gateway.create_order()
    await gateway.pay(order)
    await gateway.run_worker()
    assert gateway.merchant.types() == ["order.paid"] and gateway.merchant.rejected == 0
    gateway.merchant.secrets = [new]                       # a switched receiver
    r = await gateway.http.post(f"/v1/events/{gateway.merchant.events[0]['id']}/redeliver", headers=gateway.auth)
    assert r.status_code == 200
    await gateway.run_worker()
    assert len(gateway.merchant.events) == 2 and gateway.merchant.rejected == 0
    async with gateway.rt.db.transaction() as session:     # overlap over: the old secret no longer signs
        await session.execute(update(WebhookEndpoint).values(
            previous_secret_expires_at=gateway.rt.now() - timedelta(seconds=1)))
    gateway.merchant.secrets = [old]
    await gateway.http.post(f"/v1/events/{gateway.merchant.events[0]['id']}/redeliver", headers=gateway.auth)
    await gateway.run_worker()
    assert gateway.merchant.rejected == 1


async def test_rotation_bounds(gateway: Gateway) -> None:
    endpoint = await gateway.add_webhook()
    r = await gateway.http.post(f"/v1/webhook_endpoints/{endpoint['id']}/rotate_secret", headers=gateway.auth,
                                json={"expire_previous_in": 8 * 86400})
    assert r.status_code == 400

"""Outbound webhooks: signed, written with the state change, retried with backoff, abandoned after the window."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from sqlalchemy import select, update

from minigate import webhook_signature
from minigate.services.worker import backoff_seconds
from minigate.store.tables import WebhookDelivery
from tests.conftest import Gateway


async def test_signature_verifies_with_the_endpoint_secret_only(gateway: Gateway) -> None:
    endpoint = await gateway.add_webhook()
    order = await gateway.create_order()
    await gateway.pay(order)
    await gateway.run_worker()
    assert gateway.merchant.types() == ["order.paid"]
    event = gateway.merchant.events[0]
    assert event["data"]["object"]["id"] == order["id"] and event["data"]["object"]["status"] == "paid"
    assert endpoint["secret"].startswith("whsec_")
    listed = (await gateway.http.get("/v1/webhook_endpoints", headers=gateway.auth)).json()
    assert "secret" not in listed["data"][0]                      # shown once
    fetched = (await gateway.http.get(f"/v1/events/{event['id']}", headers=gateway.auth)).json()
    assert fetched == event


async def test_failed_deliveries_retry_with_backoff_then_succeed(gateway: Gateway) -> None:
    await gateway.add_webhook()
    gateway.merchant.fail_next = 2
    order = await gateway.create_order()
    await gateway.pay(order)
    await gateway.run_worker()
    async with gateway.rt.db.transaction() as session:
        row = (await session.execute(select(WebhookDelivery))).scalar_one()
    assert row.status == "pending" and row.attempts == 1 and row.last_status_code == 500
    assert timedelta(seconds=7) <= row.next_attempt_at - gateway.rt.now() <= timedelta(seconds=13)
    for _ in range(2):
        async with gateway.rt.db.transaction() as session:
            await session.execute(update(WebhookDelivery).values(next_attempt_at=gateway.rt.now()))
        await gateway.run_worker()
    async with gateway.rt.db.transaction() as session:
        row = (await session.execute(select(WebhookDelivery))).scalar_one()
    assert row.status == "delivered" and row.attempts == 3
    assert gateway.merchant.types() == ["order.paid"]


async def test_delivery_is_abandoned_after_the_retry_window(gateway: Gateway) -> None:
    await gateway.add_webhook()
    gateway.merchant.fail_next = 1000
    order = await gateway.create_order()
    await gateway.pay(order)
    async with gateway.rt.db.transaction() as session:
        await session.execute(update(WebhookDelivery).values(
            created_at=gateway.rt.now() - timedelta(hours=72, seconds=1)))
    await gateway.run_worker()
    async with gateway.rt.db.transaction() as session:
        row = (await session.execute(select(WebhookDelivery))).scalar_one()
    assert row.status == "dead"


async def test_only_subscribed_events_are_delivered(gateway: Gateway) -> None:
    await gateway.add_webhook(["refund.succeeded"])
    order = await gateway.create_order()
    await gateway.pay(order)
    await gateway.run_worker()
    assert gateway.merchant.types() == []


async def test_bad_endpoints_are_refused(gateway: Gateway) -> None:
    for body, code in (({"url": "ftp://x"}, "invalid_url"), ({"url": "not a url"}, "invalid_url"),
                       ({"url": "https://x.example/h", "enabled_events": ["order.exploded"]}, "unknown_event_type")):
        r = await gateway.http.post("/v1/webhook_endpoints", headers=gateway.auth, json=body)
        assert r.status_code == 400 and r.json()["error"]["code"] == code


def test_backoff_grows_with_jitter_and_caps() -> None:
    import random
    rng = random.Random(7)
    delays = [backoff_seconds(n, rng=rng) for n in range(1, 20)]
    assert 8 <= delays[0] <= 12 and 16 <= delays[1] <= 24
    assert max(delays) <= 6 * 3600 * 1.2
    assert len({round(d, 3) for d in delays[-5:]}) == 5      # jittered, not lock-step
    # the worker keeps retrying until the 3-day window closes: about two dozen attempts fit in it
    elapsed, attempts, jitter = 0.0, 0, random.Random(1)
    while elapsed < 72 * 3600:
        attempts += 1
        elapsed += backoff_seconds(attempts, rng=jitter)
    assert 15 <= attempts <= 30


def test_receiver_helper_verifies_rotates_and_rejects() -> None:
    body = json.dumps({"id": "evt_1"}).encode()
    header = webhook_signature.signature_header(["whsec_new", "whsec_old"], 1_700_000_000, body)
    assert webhook_signature.verify(body, header, "whsec_old", now=1_700_000_100) == 1_700_000_000
    assert webhook_signature.verify(body, header, ["whsec_x", "whsec_new"], now=1_700_000_100)
    with pytest.raises(webhook_signature.SignatureVerificationError):
        webhook_signature.verify(body + b" ", header, "whsec_new", now=1_700_000_100)
    with pytest.raises(webhook_signature.SignatureVerificationError):
        webhook_signature.verify(body, header, "whsec_new", now=1_700_000_301)
    with pytest.raises(webhook_signature.SignatureVerificationError):
        webhook_signature.verify(body, "v1=abc", "whsec_new")
    # the documented scheme: hex HMAC-SHA256 over "t.body"
    import hashlib
    import hmac
    expected = hmac.new(b"whsec_new", b"1700000000." + body, hashlib.sha256).hexdigest()
    assert f"v1={expected}" in header

"""What keeps checkout and notifications cheap, and the guarantees each shortcut must keep: the API-key memory
(revocation, expiry), one commit before and one after the provider call per order, the worker woken by new
webhook rows, results of a delivery batch written together."""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta
from types import SimpleNamespace
from typing import Any

import pytest
from sqlalchemy import event, select, update

from minigate.services import apps
from minigate.services.worker import Worker
from minigate.store.tables import ApiKey, IdempotencyKey, Order, WebhookDelivery
from tests.conftest import Gateway


def order_body() -> dict[str, Any]:
    return {"channel": "wechat_mini", "amount": 100, "description": "Test item",
            "merchant_order_no": f"T{uuid.uuid4().hex[:16]}", "payer": {"openid": "oPayer000000001"}}


class Clock:
    """Stands in for ``time.monotonic`` in :mod:`minigate.services.apps` (only there), moved by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_a_key_revoked_behind_the_process_is_refused_after_the_cache_window(
        gateway: Gateway, monkeypatch: pytest.MonkeyPatch) -> None:
    clock = Clock()
    monkeypatch.setattr("minigate.services.apps.time", SimpleNamespace(monotonic=clock))
    assert (await gateway.http.get("/v1/orders", headers=gateway.auth)).status_code == 200
    async with gateway.rt.db.transaction() as session:   # as another process (or an operator) would
        await session.execute(update(ApiKey).where(ApiKey.app_id == gateway.app_id, ApiKey.mode == "test")
                              .values(revoked_at=gateway.rt.now()))
    clock.now += apps.API_KEY_CACHE_SECONDS - 0.5
    assert (await gateway.http.get("/v1/orders", headers=gateway.auth)).status_code == 200   # the documented window
    clock.now += 1.0
    r = await gateway.http.get("/v1/orders", headers=gateway.auth)
    assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"


async def test_a_key_revoked_through_this_process_is_refused_at_once(gateway: Gateway,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("minigate.services.apps.time", SimpleNamespace(monotonic=Clock()))      # the cache never ages: only revocation can evict
    created = await gateway.http.post("/v1/api_keys", headers=gateway.auth,
                                      json={"name": "reader", "scopes": ["orders:read"]})
    assert created.status_code == 200, created.text
    reader = {"Authorization": f"Bearer {created.json()['key']}"}
    assert (await gateway.http.get("/v1/orders", headers=reader)).status_code == 200
    revoked = await gateway.http.delete(f"/v1/api_keys/{created.json()['id']}", headers=gateway.auth)
    assert revoked.status_code == 200, revoked.text
    assert (await gateway.http.get("/v1/orders", headers=reader)).status_code == 401


async def test_a_remembered_key_still_expires_on_time(gateway: Gateway, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("minigate.services.apps.time", SimpleNamespace(monotonic=Clock()))
    created = await gateway.http.post("/v1/api_keys", headers=gateway.auth,
                                      json={"name": "short", "scopes": ["*"], "expires_in": 60})
    short = {"Authorization": f"Bearer {created.json()['key']}"}
    assert (await gateway.http.get("/v1/orders", headers=short)).status_code == 200
    later = gateway.rt.now() + timedelta(seconds=61)
    monkeypatch.setattr(gateway.rt, "now", lambda: later)
    assert (await gateway.http.get("/v1/orders", headers=short)).status_code == 401


async def test_a_rolled_key_takes_its_new_expiry_at_once(gateway: Gateway, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("minigate.services.apps.time", SimpleNamespace(monotonic=Clock()))
    assert (await gateway.http.get("/v1/orders", headers=gateway.auth)).status_code == 200
    async with gateway.rt.db.read() as session:
        key_id = (await session.execute(select(ApiKey.id).where(ApiKey.app_id == gateway.app_id,
                                                                ApiKey.mode == "test"))).scalar_one()
    rolled = await gateway.http.post(f"/v1/api_keys/{key_id}/roll", headers=gateway.auth,
                                     json={"expire_previous_in": 0})
    assert rolled.status_code == 200, rolled.text
    assert (await gateway.http.get("/v1/orders", headers=gateway.auth)).status_code == 401
    new = {"Authorization": f"Bearer {rolled.json()['key']}"}
    assert (await gateway.http.get("/v1/orders", headers=new)).status_code == 200


def count_writes(gateway: Gateway) -> list[str]:
    """Every write transaction begun on the gateway's engine from now on (read ones are told apart by option)."""
    begun: list[str] = []

    @event.listens_for(gateway.rt.db.engine.sync_engine, "begin")
    def _begin(conn: Any) -> None:
        if not conn.get_execution_options().get("minigate_read_only"):
            begun.append("write")

    return begun


async def test_an_order_with_a_new_key_costs_two_commits_and_replays_from_a_read(gateway: Gateway) -> None:
    body = order_body()
    headers = gateway.auth | {"Idempotency-Key": f"k-{uuid.uuid4().hex}"}
    assert (await gateway.http.get("/v1/orders", headers=gateway.auth)).status_code == 200   # key remembered
    writes = count_writes(gateway)
    first = await gateway.http.post("/v1/orders", headers=headers, json=body)
    assert first.status_code == 200, first.text
    # one commit before the provider call (key + order + event), one after (answer + key's response)
    assert len(writes) == 2
    async with gateway.rt.db.read() as session:
        key = (await session.execute(select(IdempotencyKey))).scalar_one()
        order = (await session.execute(select(Order))).scalar_one()
    assert key.recovery_point == "finished" and key.locked_until is None and key.resource_id == order.id
    assert key.response_status == 200 and key.response_body == first.json()
    assert order.status == "pending" and order.version == 2
    replay = await gateway.http.post("/v1/orders", headers=headers, json=body)
    assert replay.status_code == 200 and replay.json() == first.json()
    assert len(writes) == 2                       # a replay writes nothing


async def test_a_new_key_written_with_the_order_keeps_its_recovery_point_on_an_unknown_outcome(
        gateway: Gateway) -> None:
    r = await gateway.http.post("/sandbox/wechatpay/_sandbox/faults",
                                json={"next_call": "http_500", "path": "/v3/pay/transactions/jsapi", "seconds": 0})
    assert r.status_code < 300, r.text
    body = order_body()
    headers = gateway.auth | {"Idempotency-Key": f"k-{uuid.uuid4().hex}"}
    first = await gateway.http.post("/v1/orders", headers=headers, json=body)
    assert first.status_code == 503, first.text
    async with gateway.rt.db.read() as session:
        key = (await session.execute(select(IdempotencyKey))).scalar_one()
        order = (await session.execute(select(Order))).scalar_one()
    assert (key.recovery_point, key.resource_id, key.locked_until, key.response_status) == (
        "order_created", order.id, None, None)
    second = await gateway.http.post("/v1/orders", headers=headers, json=body)
    assert second.status_code == 200 and second.json()["id"] == order.id and second.json()["status"] == "pending"
    assert await gateway.count(Order) == 1 and await gateway.count(IdempotencyKey) == 1


async def test_the_worker_is_woken_by_a_committed_webhook_row(gateway: Gateway) -> None:
    await gateway.add_webhook(["order.paid"])
    order = await gateway.create_order()
    worker = Worker(gateway.rt, poll_seconds=3600)       # it would not poll again within this test
    passes: list[int] = []
    first_pass = asyncio.Event()
    full_pass = worker.run_once

    async def counted() -> int:
        passes.append(await full_pass())
        first_pass.set()
        return passes[-1]

    worker.run_once = counted  # type: ignore[method-assign]
    task = asyncio.create_task(worker.run())
    try:
        await asyncio.wait_for(first_pass.wait(), timeout=30)
        await gateway.pay(order)
        for _ in range(400):
            if gateway.merchant.types():
                break
            await asyncio.sleep(0.025)
        assert gateway.merchant.types() == ["order.paid"]
        assert passes == [0]                             # delivered by the wake-up, not by another full pass
    finally:
        worker.stop()
        await asyncio.wait_for(task, timeout=30)
    async with gateway.rt.db.read() as session:
        delivery = (await session.execute(select(WebhookDelivery))).scalar_one()
    assert (delivery.status, delivery.attempts, delivery.locked_until) == ("delivered", 1, None)


async def test_a_batch_records_each_result_on_its_own_row(gateway: Gateway) -> None:
    await gateway.add_webhook(["order.paid"])
    orders = [await gateway.create_order() for _ in range(3)]
    for order in orders:
        await gateway.pay(order)
    gateway.merchant.fail_next = 1                       # one of the three fails, the others arrive
    assert await gateway.run_worker() >= 3
    async with gateway.rt.db.read() as session:
        rows = (await session.execute(select(WebhookDelivery).order_by(WebhookDelivery.id))).scalars().all()
    assert sorted(r.status for r in rows) == ["delivered", "delivered", "pending"]
    assert all(r.attempts == 1 and r.locked_until is None for r in rows)
    failed, = (r for r in rows if r.status == "pending")
    assert failed.last_status_code == 500 and failed.delivered_at is None
    assert failed.next_attempt_at > gateway.rt.now() + timedelta(seconds=5)     # backoff: 10 s ± 20 %
    assert all(r.delivered_at is not None and r.last_status_code == 204 for r in rows if r.status == "delivered")
    assert len(gateway.merchant.events) == 2


async def test_a_new_key_whose_order_is_refused_leaves_no_row_and_touches_no_other(gateway: Gateway) -> None:
    body = order_body()
    first_key = gateway.auth | {"Idempotency-Key": "first-key"}
    assert (await gateway.http.post("/v1/orders", headers=first_key, json=body)).status_code == 200
    async with gateway.rt.db.read() as session:
        before = (await session.execute(select(IdempotencyKey))).scalar_one()
    second_key = gateway.auth | {"Idempotency-Key": "second-key"}
    refused = await gateway.http.post("/v1/orders", headers=second_key, json=body | {"amount": 7})
    assert refused.status_code == 409 and refused.json()["error"]["code"] == "order_exists"
    async with gateway.rt.db.read() as session:
        after = (await session.execute(select(IdempotencyKey))).scalar_one()     # the refused key left nothing
    assert (after.id, after.key, after.recovery_point, after.response_body) == (
        before.id, "first-key", "finished", before.response_body)
    again = await gateway.http.post("/v1/orders", headers=second_key, json=order_body())
    assert again.status_code == 200, again.text                                  # the key is free to use

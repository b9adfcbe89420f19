"""Background work: deliver webhooks, query orders and refunds that have no notification yet, expire orders.

Jobs are claimed with ``FOR UPDATE SKIP LOCKED`` on PostgreSQL (any number of workers on any number of
machines); SQLite serialises writers with ``BEGIN IMMEDIATE``. A claim sets ``locked_until`` so a crashed
worker's job is picked up again after the lease.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

import httpx
from prometheus_client import Counter
from sqlalchemy import Table, bindparam, or_, select, update

from minigate import webhook_signature
from minigate.domain.results import ProviderResult, StandardCode, TradeStatus
from minigate.errors import OutcomeUnknown, ProviderError
from minigate.logging import get_logger
from minigate.services import orders as order_service
from minigate.services import refunds as refund_service
from minigate.services.events import event_view, outbox_signal, signing_secrets
from minigate.services.identity import check_due_verifications, purge_expired
from minigate.services.reconcile import reconcile_due
from minigate.services.runtime import Runtime
from minigate.services.sms import send_due_messages
from minigate.store.tables import Event, Order, Refund, WebhookDelivery, WebhookEndpoint

__all__ = ["Worker", "backoff_seconds", "check_due_orders", "check_due_refunds", "deliver_due_webhooks"]

log = get_logger("minigate.worker")

#: dead-letter alerting: alert on any increase (a delivery that failed for the whole retry window)
WEBHOOKS_DEAD = Counter("minigate_webhook_deliveries_dead_total", "Webhook deliveries abandoned after the retry window")
WEBHOOK_ATTEMPTS = Counter("minigate_webhook_attempts_total", "Webhook delivery attempts", ["outcome"])

BATCH = 50
#: webhook POSTs in flight per batch: no more than the HTTP client keeps alive (20), so a batch reuses
#: connections instead of opening (and closing) one per delivery beyond that
POST_CONCURRENCY = 16
#: after a wake-up, how long the worker lets more new deliveries gather before claiming a batch
COALESCE_SECONDS = 0.005
#: how often the worker runs the retention purge
PURGE_EVERY_SECONDS = 3600


def backoff_seconds(attempt: int, *, rng: random.Random | None = None) -> float:
    """Delay before retry ``attempt`` (1-based): 10 s doubling to a 6 h ceiling, with ±20 % jitter."""
    base = min(10 * 2 ** (attempt - 1), 6 * 3600)
    return float(base * (rng or random).uniform(0.8, 1.2))


def _claim(query, rt: Runtime):  # type: ignore[no-untyped-def]
    return query.with_for_update(skip_locked=True) if not rt.db.is_sqlite else query


async def deliver_due_webhooks(rt: Runtime, *, limit: int = BATCH) -> int:
    """Claim a batch, deliver it concurrently, record every result in one transaction: two commits per batch
    instead of two per delivery, so webhooks keep pace with a notification storm."""
    now = rt.now()
    lease = now + timedelta(seconds=rt.settings.webhook_timeout_seconds * 3)
    async with rt.db.transaction() as session:
        rows = (await session.execute(_claim(select(WebhookDelivery).where(
            WebhookDelivery.status == "pending", WebhookDelivery.next_attempt_at <= now,
            or_(WebhookDelivery.locked_until.is_(None), WebhookDelivery.locked_until <= now))
            .order_by(WebhookDelivery.next_attempt_at).limit(limit), rt))).scalars().all()
        if not rows:
            return 0
        ids = [r.id for r in rows]
        await session.execute(update(WebhookDelivery).where(WebhookDelivery.id.in_(ids))
                              .values(locked_until=lease).execution_options(synchronize_session=False))
        event_ids = {r.event_id for r in rows}
        endpoint_ids = {r.endpoint_id for r in rows}
        found_events = {e.id: e for e in (await session.execute(
            select(Event).where(Event.id.in_(event_ids)))).scalars()}
        found_endpoints = {e.id: e for e in (await session.execute(
            select(WebhookEndpoint).where(WebhookEndpoint.id.in_(endpoint_ids)))).scalars()}
    claimed = [_Claimed(r.id, r.attempts, r.created_at, r.next_attempt_at, found_events[r.event_id],
                        found_endpoints[r.endpoint_id]) for r in rows]
    posting = asyncio.Semaphore(POST_CONCURRENCY)

    async def post(c: _Claimed) -> tuple[int | None, str | None]:
        async with posting:
            return await _post(rt, c)

    outcomes = await asyncio.gather(*(post(c) for c in claimed))
    await _record_results(rt, claimed, outcomes)
    return len(claimed)


@dataclass(frozen=True, slots=True)
class _Claimed:
    id: int
    attempts: int
    created_at: datetime
    next_attempt_at: datetime
    event: Event
    endpoint: WebhookEndpoint


async def _post(rt: Runtime, claimed: _Claimed) -> tuple[int | None, str | None]:
    """One signed POST; (status code, error class name)."""
    event, endpoint = claimed.event, claimed.endpoint
    body = json.dumps(event_view(event), separators=(",", ":"), ensure_ascii=False).encode()
    timestamp = int(rt.now().timestamp())
    keys = signing_secrets(rt, endpoint, rt.now())
    headers = {"Content-Type": "application/json", "User-Agent": "minigate-webhooks/0.1",
               webhook_signature.HEADER: webhook_signature.signature_header(keys, timestamp, body),
               "Minigate-Event-Id": event.id}
    try:
        response = await rt.webhook_client.post(endpoint.url, content=body, headers=headers)
    except httpx.HTTPError as exc:
        return None, f"{type(exc).__name__}"
    return response.status_code, None


_DELIVERIES = cast(Table, WebhookDelivery.__table__)
#: one statement for every result of a batch (executemany); ``attempts`` counted in SQL
_RESULT = update(_DELIVERIES).where(_DELIVERIES.c.id == bindparam("d_id")).values(
    attempts=_DELIVERIES.c.attempts + 1, locked_until=None, status=bindparam("d_status"),
    last_status_code=bindparam("d_code"), last_error=bindparam("d_error"), delivered_at=bindparam("d_delivered"),
    next_attempt_at=bindparam("d_next"))


async def _record_results(rt: Runtime, claimed: list[_Claimed],
                          outcomes: list[tuple[int | None, str | None]]) -> None:
    now = rt.now()
    window = timedelta(hours=rt.settings.webhook_retry_window_hours)
    params: list[dict[str, Any]] = []
    for c, (status_code, error) in zip(claimed, outcomes, strict=True):
        ok = status_code is not None and 200 <= status_code < 300
        WEBHOOK_ATTEMPTS.labels("ok" if ok else "failed").inc()
        status, next_at = ("delivered", c.next_attempt_at) if ok else ("pending", c.next_attempt_at)
        if not ok and now - c.created_at >= window:
            status = "dead"
            WEBHOOKS_DEAD.inc()
            log.error("webhook delivery abandoned", endpoint_id=c.endpoint.id, event_type=c.event.type,
                      attempts=c.attempts + 1)
        elif not ok:
            next_at = now + timedelta(seconds=backoff_seconds(c.attempts + 1))
        params.append({"d_id": c.id, "d_status": status, "d_code": status_code, "d_error": error,
                       "d_delivered": now if ok else None, "d_next": next_at})
    async with rt.db.transaction() as session:
        await session.execute(_RESULT, params)


def _next_check(attempts: int, schedule: tuple[int, ...]) -> timedelta:
    return timedelta(seconds=schedule[min(attempts, len(schedule) - 1)])


async def _claim_checks(rt: Runtime, model: type[Order] | type[Refund], statuses: tuple[str, ...],
                        schedule: tuple[int, ...], limit: int) -> list[str]:
    now = rt.now()
    async with rt.db.transaction() as session:
        rows = (await session.execute(_claim(select(model).where(
            model.status.in_(statuses), model.next_check_at.is_not(None), model.next_check_at <= now)
            .order_by(model.next_check_at).limit(limit), rt))).scalars().all()
        for row in rows:   # push the next check out first: a crash mid-check retries later, not in a loop
            row.check_attempts += 1
            row.next_check_at = now + _next_check(row.check_attempts, schedule)
        return [r.id for r in rows]


async def check_due_orders(rt: Runtime, *, limit: int = BATCH) -> int:
    """A-9/A-10: query orders with no notification; at expiry query, then close."""
    ids = await _claim_checks(rt, Order, ("creating", "pending", "closed"), order_service.CHECK_SCHEDULE[1:], limit)
    for order_id in ids:
        try:
            await _check_order(rt, order_id)
        except OutcomeUnknown as exc:
            log.warning("order check inconclusive", order_id=order_id, provider_code=exc.provider_code)
        except ProviderError as exc:
            log.error("order check failed", order_id=order_id, provider_code=exc.provider_code)
        except Exception:  # one bad order must not abort the checks of the others in this batch
            log.exception("order check crashed", order_id=order_id)
    return len(ids)


async def _check_order(rt: Runtime, order_id: str) -> None:
    async with rt.db.transaction() as session:
        order = await session.get(Order, order_id)
        assert order is not None
    provider = await rt.payment_provider(order.app_id, order.mode, order.provider)
    result = await provider.query_order(order.out_trade_no)
    if order.status == "closed":
        await _follow_up_closed(rt, order_id, result)
        return
    if order.status == "creating":
        if not result.ok and result.code is StandardCode.NOT_FOUND:
            await order_service.complete_creation(rt, order_id, source="worker")
            return
    outcome = await order_service.apply_query_result(rt, order_id, result, source="worker")
    if outcome != "no_change" or rt.now() < order.expires_at:
        return
    closed = await provider.close_order(order.out_trade_no)
    if closed.ok or closed.code is StandardCode.ORDER_CLOSED:
        async with rt.db.transaction() as session:
            locked = await order_service.lock_order(session, order_id)
            if locked.status in ("creating", "pending"):
                await order_service.close_locally(rt, session, locked, source="worker", data={"reason": "expired"})
    elif closed.code is StandardCode.ALREADY_PAID:
        await order_service.apply_query_result(rt, order_id, await provider.query_order(order.out_trade_no),
                                               source="worker")


async def _follow_up_closed(rt: Runtime, order_id: str, result: ProviderResult[TradeStatus]) -> None:
    """A closed order, queried after its expiry: a payment the provider still took is applied (and raised as
    order.paid_after_close); otherwise one more look a day after expiry, then never again."""
    outcome = await order_service.apply_query_result(rt, order_id, result, source="worker")
    if outcome == "paid":
        return
    async with rt.db.transaction() as session:
        order = await order_service.lock_order(session, order_id)
        if order.status != "closed":
            return
        last = order.expires_at + order_service.CLOSED_FOLLOWUP[1]
        order.next_check_at = last if rt.now() < last else None


async def check_due_refunds(rt: Runtime, *, limit: int = BATCH) -> int:
    ids = await _claim_checks(rt, Refund, ("pending", "processing"), refund_service.REFUND_CHECK_SECONDS, limit)
    for refund_id in ids:
        try:
            await _check_refund(rt, refund_id)
        except ProviderError as exc:
            log.warning("refund check inconclusive", refund_id=refund_id, provider_code=exc.provider_code)
        except Exception:  # one bad refund must not abort the checks of the others in this batch
            log.exception("refund check crashed", refund_id=refund_id)
    return len(ids)


async def _check_refund(rt: Runtime, refund_id: str) -> None:
    async with rt.db.transaction() as session:
        refund = await session.get(Refund, refund_id)
        assert refund is not None
        order = await session.get(Order, refund.order_id)
        assert order is not None
    provider = await rt.payment_provider(refund.app_id, refund.mode, refund.provider)
    result = await provider.query_refund(refund.out_refund_no, out_trade_no=order.out_trade_no)
    if not result.ok and result.code is StandardCode.NOT_FOUND:
        if refund.status == "pending":   # the first call never arrived: send it again, same out_refund_no
            await refund_service.complete_refund(rt, refund_id, source="worker")
        return
    if result.ok:
        await refund_service.apply_refund_result(rt, refund_id, result, source="worker")


class Worker:
    """Runs the loops until stopped; any number of workers may run against one database."""

    def __init__(self, rt: Runtime, *, poll_seconds: float) -> None:
        self.rt = rt
        self.poll_seconds = poll_seconds
        self._stop = asyncio.Event()
        self._last_purge = float("-inf")
        from minigate.services.analytics import AnalyticsWorker

        self.analytics = AnalyticsWorker(rt)
        self._last_certificates = float("-inf")
        self._wake: asyncio.Event | None = None

    async def run_once(self) -> int:
        done = await deliver_due_webhooks(self.rt)
        done += await check_due_orders(self.rt)
        done += await check_due_refunds(self.rt)
        done += await send_due_messages(self.rt)
        done += await check_due_verifications(self.rt)
        done += await self.analytics.run_once()
        if time.monotonic() - self._last_purge >= PURGE_EVERY_SECONDS:
            self._last_purge = time.monotonic()
            try:   # retention (C-9): personal data past its time is purged, with a deletion record
                await purge_expired(self.rt)
            except Exception:  # logged with its traceback; retried on a later pass
                log.exception("retention purge failed")
        if time.monotonic() - self._last_certificates >= self.rt.settings.certificate_refresh_hours * 3600:
            self._last_certificates = time.monotonic()
            try:   # WeChat Pay platform certificates, at least every 12 hours (B-3)
                from minigate.services.certificates import refresh_platform_certificates

                await refresh_platform_certificates(self.rt)
            except Exception:  # logged with its traceback; retried on a later pass
                log.exception("certificate refresh failed")
        try:   # daily reconciliation: a bill that cannot be fetched must not stall the rest
            await reconcile_due(self.rt)
        except Exception:  # logged with its traceback; retried on a later pass
            log.exception("scheduled reconciliation failed")
        return done

    async def run(self) -> None:
        """A full pass (every job) whenever the previous one found work or ``poll_seconds`` passed; in between,
        webhook deliveries as soon as this process commits them (the outbox signal), alone: a storm of
        notifications does not re-run every other job for each wake-up."""
        wake = outbox_signal(self.rt)
        self._wake = wake
        while not self._stop.is_set():
            wake.clear()
            try:
                busy = await self.run_once()
            except Exception:  # the loop must survive any single failure; it is logged with its traceback
                log.exception("worker iteration failed")
                busy = 0
            if busy:
                continue
            deadline = time.monotonic() + self.poll_seconds
            while not self._stop.is_set() and (left := deadline - time.monotonic()) > 0:
                try:
                    await asyncio.wait_for(wake.wait(), timeout=left)
                except TimeoutError:
                    break
                if self._stop.is_set():
                    break
                # a few ms for the callbacks committing right behind this one: one batch (two commits) for
                # them all instead of two commits per webhook
                await asyncio.sleep(COALESCE_SECONDS)
                wake.clear()
                try:
                    while await deliver_due_webhooks(self.rt) >= BATCH:   # a short batch took all that was due
                        pass
                except Exception:  # logged with its traceback; the next full pass retries
                    log.exception("webhook delivery pass failed")

    def stop(self) -> None:
        self._stop.set()
        if self._wake is not None:
            self._wake.set()

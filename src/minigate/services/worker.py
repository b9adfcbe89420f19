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
from datetime import timedelta

import httpx
from prometheus_client import Counter
from sqlalchemy import or_, select

from minigate import webhook_signature
from minigate.domain.results import ProviderResult, StandardCode, TradeStatus
from minigate.errors import OutcomeUnknown, ProviderError
from minigate.logging import get_logger
from minigate.services import orders as order_service
from minigate.services import refunds as refund_service
from minigate.services.events import event_view, signing_secrets
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
#: how often the worker runs the retention purge
PURGE_EVERY_SECONDS = 3600


def backoff_seconds(attempt: int, *, rng: random.Random | None = None) -> float:
    """Delay before retry ``attempt`` (1-based): 10 s doubling to a 6 h ceiling, with ±20 % jitter."""
    base = min(10 * 2 ** (attempt - 1), 6 * 3600)
    return float(base * (rng or random).uniform(0.8, 1.2))


def _claim(query, rt: Runtime):  # type: ignore[no-untyped-def]
    return query.with_for_update(skip_locked=True) if not rt.db.is_sqlite else query


async def deliver_due_webhooks(rt: Runtime, *, limit: int = BATCH) -> int:
    now = rt.now()
    lease = now + timedelta(seconds=rt.settings.webhook_timeout_seconds * 3)
    async with rt.db.transaction() as session:
        rows = (await session.execute(_claim(select(WebhookDelivery).where(
            WebhookDelivery.status == "pending", WebhookDelivery.next_attempt_at <= now,
            or_(WebhookDelivery.locked_until.is_(None), WebhookDelivery.locked_until <= now))
            .order_by(WebhookDelivery.next_attempt_at).limit(limit), rt))).scalars().all()
        for row in rows:
            row.locked_until = lease
        claimed = [r.id for r in rows]
    if claimed:
        await asyncio.gather(*(_deliver(rt, delivery_id) for delivery_id in claimed))
    return len(claimed)


async def _deliver(rt: Runtime, delivery_id: int) -> None:
    async with rt.db.transaction() as session:
        delivery = await session.get(WebhookDelivery, delivery_id)
        assert delivery is not None
        event = await session.get(Event, delivery.event_id)
        endpoint = await session.get(WebhookEndpoint, delivery.endpoint_id)
        assert event is not None and endpoint is not None
    body = json.dumps(event_view(event), separators=(",", ":"), ensure_ascii=False).encode()
    timestamp = int(rt.now().timestamp())
    keys = signing_secrets(rt, endpoint, rt.now())
    headers = {"Content-Type": "application/json", "User-Agent": "minigate-webhooks/0.1",
               webhook_signature.HEADER: webhook_signature.signature_header(keys, timestamp, body),
               "Minigate-Event-Id": event.id}
    status_code: int | None = None
    error: str | None = None
    try:
        response = await rt.webhook_client.post(endpoint.url, content=body, headers=headers)
        status_code = response.status_code
    except httpx.HTTPError as exc:
        error = f"{type(exc).__name__}"
    now = rt.now()
    async with rt.db.transaction() as session:
        delivery = await session.get(WebhookDelivery, delivery_id)
        assert delivery is not None
        delivery.attempts += 1
        delivery.locked_until = None
        delivery.last_status_code = status_code
        delivery.last_error = error
        WEBHOOK_ATTEMPTS.labels("ok" if status_code is not None and 200 <= status_code < 300 else "failed").inc()
        if status_code is not None and 200 <= status_code < 300:
            delivery.status = "delivered"
            delivery.delivered_at = now
            return
        if now - delivery.created_at >= timedelta(hours=rt.settings.webhook_retry_window_hours):
            delivery.status = "dead"
            WEBHOOKS_DEAD.inc()
            log.error("webhook delivery abandoned", endpoint_id=endpoint.id, event_type=event.type,
                      attempts=delivery.attempts)
            return
        delivery.next_attempt_at = now + timedelta(seconds=backoff_seconds(delivery.attempts))


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
        while not self._stop.is_set():
            try:
                busy = await self.run_once()
            except Exception:  # the loop must survive any single failure; it is logged with its traceback
                log.exception("worker iteration failed")
                busy = 0
            if not busy:
                try:
                    await asyncio.wait_for(self._stop.wait(), timeout=self.poll_seconds)
                except TimeoutError:
                    pass

    def stop(self) -> None:
        self._stop.set()

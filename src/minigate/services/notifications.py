"""Inbound provider callbacks (A-8): raw bytes kept; verify -> decrypt -> validate -> one transaction
(dedupe on the provider event id + transition + outbox) -> fast ack. Duplicates are acknowledged.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, cast

from sqlalchemy import Table, insert, select
from sqlalchemy.exc import IntegrityError

from minigate.domain.results import Notification, NotificationKind
from minigate.errors import NotificationRejected
from minigate.logging import get_logger
from minigate.providers.bases.payment import NotificationReply, PaymentProvider
from minigate.services.apps import app_exists
from minigate.services.orders import apply_trade_status, lock_order
from minigate.services.refunds import apply_refund_status, lock_refund
from minigate.services.runtime import Runtime
from minigate.store.tables import InboundNotification, Order, OrderEvent, Refund

__all__ = ["handle_notification"]

log = get_logger("minigate.notifications")

_KEEP_HEADERS = ("content-type", "wechatpay-timestamp", "wechatpay-nonce", "wechatpay-serial",
                 "wechatpay-signature-type", "request-id", "user-agent")


#: the accepted callback's record, in Core (the transaction's other rows are written the same way by events.emit)
_INSERT_RECEIVED = insert(cast(Table, InboundNotification.__table__))


def _headers_to_keep(headers: Mapping[str, str]) -> dict[str, str]:
    return {k.lower(): v for k, v in headers.items() if k.lower() in _KEEP_HEADERS}


async def handle_notification(rt: Runtime, *, provider_name: str, mode: str, app_id: str,
                              headers: Mapping[str, str], body: bytes) -> NotificationReply:
    if mode not in ("test", "live") or (mode == "live" and rt.settings.mode != "live"):
        return await _reject(rt, None, provider_name, app_id, mode, headers, body,
                             NotificationRejected("unknown_route", "no such notification route", http_status=404))
    if not await app_exists(rt, app_id):
        return await _reject(rt, None, provider_name, None, mode, headers, body,
                             NotificationRejected("unknown_app", "no such app", http_status=404))
    provider = await rt.payment_provider(app_id, mode, provider_name)
    try:
        notification = await provider.parse_notification(headers, body)
        return await _apply(rt, provider, provider_name, app_id, mode, notification, headers, body)
    except NotificationRejected as exc:
        if exc.code == "unsupported_event":
            # genuine (providers raise this only after the signature verified) but nothing to act on, e.g.
            # Alipay's WAIT_BUYER_PAY: acknowledge, or the provider would resend it for a day
            return await _ignore(rt, provider, provider_name, app_id, mode, headers, body, exc)
        return await _reject(rt, provider, provider_name, app_id, mode, headers, body, exc)


async def _ignore(rt: Runtime, provider: PaymentProvider, provider_name: str, app_id: str, mode: str,
                  headers: Mapping[str, str], body: bytes, exc: NotificationRejected) -> NotificationReply:
    log.info("verified notification ignored", provider=provider_name, reason=exc.message)
    async with rt.db.transaction() as session:
        session.add(InboundNotification(provider=provider_name, app_id=app_id, mode=mode, dedupe_key=None,
                                        order_id=None, outcome="ignored", error_code=exc.code,
                                        headers=_headers_to_keep(headers), body=body, received_at=rt.now()))
    return provider.ack()


async def _apply(rt: Runtime, provider: PaymentProvider, provider_name: str, app_id: str, mode: str,
                 notification: Notification, headers: Mapping[str, str], body: bytes) -> NotificationReply:
    dedupe_key = f"{app_id}:{mode}:{notification.event_id}"
    try:
        async with rt.db.transaction() as session:
            outcome, order_id = await _transition(rt, session, provider_name, app_id, mode, notification, dedupe_key)
            if outcome != "duplicate_event":
                await session.execute(_INSERT_RECEIVED, {
                    "provider": provider_name, "app_id": app_id, "mode": mode, "dedupe_key": dedupe_key,
                    "order_id": order_id, "outcome": outcome, "error_code": None,
                    "headers": _headers_to_keep(headers), "body": body, "received_at": rt.now()})
    except IntegrityError:
        # the same event committed concurrently through another request or process: already handled
        return provider.ack()
    log.info("notification processed", provider=provider_name, kind=notification.kind.value, outcome=outcome)
    return provider.ack()


async def _seen(session: Any, provider_name: str, dedupe_key: str) -> bool:
    return (await session.execute(select(InboundNotification.id).where(
        InboundNotification.provider == provider_name,
        InboundNotification.dedupe_key == dedupe_key))).scalar_one_or_none() is not None


async def _transition(rt: Runtime, session: Any, provider_name: str, app_id: str, mode: str,
                      notification: Notification, dedupe_key: str) -> tuple[str, str]:
    """Locate and lock, **validate**, then de-duplicate and apply (A-8): a signed callback with a wrong amount is
    refused even when it reuses a genuine event's id (JD derives ids from the trade, not the message)."""
    if notification.kind is NotificationKind.PAYMENT and notification.trade is not None:
        trade = notification.trade
        # found and locked in one statement, read as committed now (populate_existing), like lock_order
        order = (await session.execute(select(Order).where(
            Order.provider == provider_name, Order.out_trade_no == trade.out_trade_no,
            Order.app_id == app_id, Order.mode == mode).with_for_update()
            .execution_options(populate_existing=True))).scalar_one_or_none()
        if order is None:
            raise NotificationRejected("unknown_order", "no order with this out_trade_no", http_status=404)
        if trade.amount_total is not None and trade.amount_total != order.amount:
            raise NotificationRejected("amount_mismatch", "notified amount differs from the order amount",
                                       order_id=order.id, details={"expected": order.amount,
                                                                   "reported": trade.amount_total})
        if await _seen(session, provider_name, dedupe_key):
            log.info("duplicate notification acknowledged", provider=provider_name, event_type="duplicate")
            return "duplicate_event", order.id
        return await apply_trade_status(rt, session, order, trade, source="notification"), order.id
    if notification.kind is NotificationKind.REFUND and notification.refund is not None:
        found = (await session.execute(select(Refund.id, Refund.order_id).where(
            Refund.provider == provider_name, Refund.out_refund_no == notification.refund.out_refund_no,
            Refund.app_id == app_id, Refund.mode == mode))).one_or_none()
        if found is None:
            raise NotificationRejected("unknown_refund", "no refund with this out_refund_no", http_status=404)
        order = await lock_order(session, found.order_id)         # the order's lock guards its refunds too
        refund = await lock_refund(session, found.id)
        if notification.refund.amount is not None and notification.refund.amount != refund.amount:
            raise NotificationRejected("amount_mismatch", "notified refund amount differs from the refund",
                                       order_id=order.id, details={"refund": refund.id, "expected": refund.amount,
                                                                   "reported": notification.refund.amount})
        if await _seen(session, provider_name, dedupe_key):
            return "duplicate_event", order.id
        return await apply_refund_status(rt, session, order, refund, notification.refund,
                                         source="notification"), order.id
    raise NotificationRejected("unsupported_event", "notification kind not handled")


async def _reject(rt: Runtime, provider: PaymentProvider | None, provider_name: str, app_id: str | None,
                  mode: str | None, headers: Mapping[str, str], body: bytes,
                  exc: NotificationRejected) -> NotificationReply:
    """Nothing changes but a record of the attempt (raw bytes kept for the investigation)."""
    log.warning("notification rejected", provider=provider_name, error_code=exc.code, reason=exc.message,
                order_id=exc.order_id)
    async with rt.db.transaction() as session:
        session.add(InboundNotification(provider=provider_name, app_id=app_id, mode=mode, dedupe_key=None,
                                        order_id=exc.order_id, outcome="rejected", error_code=exc.code,
                                        headers=_headers_to_keep(headers), body=body, received_at=rt.now()))
        if exc.order_id is not None:   # an alert on the order's timeline: never fulfilled, to be looked at
            session.add(OrderEvent(order_id=exc.order_id, type=f"notification.{exc.code}", source="notification",
                                   data=exc.details, created_at=rt.now()))
            if exc.code == "amount_mismatch":
                from minigate.services.exceptions import open_exception

                order = await session.get(Order, exc.order_id)
                if order is not None:
                    await open_exception(rt, session, order, "amount_mismatch", exc.details)
    if provider is None:
        return NotificationReply(exc.http_status, f'{{"code":"FAIL","message":"{exc.code}"}}'.encode())
    reply = provider.nack(exc.code, exc.message)
    return NotificationReply(exc.http_status, reply.body, reply.content_type)

"""The exceptions queue: money states that need a decision rather than a guess (A-7).

A payment reported for an order we had already closed means the payer was charged for something the merchant
gave up on. Depending on ``MINIGATE_PAID_AFTER_CLOSE`` minigate either refunds it in full automatically
(``refund``) or queues it for the merchant (``review``, the default), who resolves it with ``refund`` or
``accept`` (ship after all). Amount mismatches and reconciliation findings are queued here too; they are never
resolved automatically.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from minigate.errors import InvalidRequest, NotFound, OutcomeUnknown
from minigate.logging import get_logger
from minigate.services import audit
from minigate.services.apps import AppContext
from minigate.services.ids import new_id
from minigate.services.orders import lock_order, record
from minigate.services.refunds import complete_refund, reserve_refund
from minigate.services.runtime import Runtime
from minigate.store.tables import Order, PaymentException

__all__ = ["exception_view", "get_exception", "list_exceptions", "open_exception", "resolve_exception"]

log = get_logger("minigate.exceptions")

ACTIONS = ("refund", "accept")


def exception_view(row: PaymentException) -> dict[str, Any]:
    return {"id": row.id, "object": "payment_exception", "livemode": row.mode == "live", "order": row.order_id,
            "kind": row.kind, "status": row.status, "resolution": row.resolution, "refund": row.refund_id,
            "data": row.data or {}, "created": int(row.created_at.timestamp()),
            "resolved_at": int(row.resolved_at.timestamp()) if row.resolved_at else None}


async def open_exception(rt: Runtime, session: AsyncSession, order: Order, kind: str,
                         data: dict[str, Any] | None = None) -> PaymentException:
    """Queue (once per order and kind) a state needing a decision; ``order`` is locked by the caller."""
    existing = (await session.execute(select(PaymentException).where(
        PaymentException.order_id == order.id, PaymentException.kind == kind))).scalar_one_or_none()
    if existing is not None:
        return existing
    now = rt.now()
    row = PaymentException(id=new_id("exc"), app_id=order.app_id, mode=order.mode, order_id=order.id, kind=kind,
                           status="open", resolution=None, refund_id=None, data=data or {}, created_at=now,
                           resolved_at=None)
    session.add(row)
    record(session, order, f"exception.{kind}", source="system", now=now, data=data)
    log.warning("payment exception queued", order_id=order.id, kind=kind)
    if kind == "paid_after_close" and rt.settings.paid_after_close == "refund":
        refund = await reserve_refund(rt, session, order, amount=None, reason="paid after the order was closed",
                                      metadata={"exception": row.id}, source="system", send_now=False)
        row.status, row.resolution, row.refund_id, row.resolved_at = "resolved", "refund", refund.id, now
    return row


async def get_exception(rt: Runtime, ctx: AppContext, exception_id: str) -> PaymentException:
    async with rt.db.read() as session:
        row = await session.get(PaymentException, exception_id)
    if row is None or row.app_id != ctx.app_id or row.mode != ctx.mode:
        raise NotFound("no such payment exception", code="resource_missing", details={"id": exception_id})
    return row


async def list_exceptions(rt: Runtime, ctx: AppContext, *, status: str | None, limit: int) -> list[PaymentException]:
    query = select(PaymentException).where(PaymentException.app_id == ctx.app_id, PaymentException.mode == ctx.mode)
    if status:
        query = query.where(PaymentException.status == status)
    async with rt.db.read() as session:
        return list((await session.execute(query.order_by(PaymentException.created_at.desc()).limit(limit)))
                    .scalars().all())


async def resolve_exception(rt: Runtime, ctx: AppContext, exception_id: str, action: str) -> PaymentException:
    """Decide an open exception once: ``refund`` (everything still refundable) or ``accept``. Repeating the
    same decision returns the row unchanged; a different decision on a resolved row is refused."""
    if action not in ACTIONS:
        raise InvalidRequest(f"action must be one of {', '.join(ACTIONS)}", param="action", code="invalid_action")
    await get_exception(rt, ctx, exception_id)
    refund_id: str | None = None
    async with rt.db.transaction() as session:
        row = (await session.execute(select(PaymentException).where(PaymentException.id == exception_id)
                                     .with_for_update())).scalar_one()
        if row.status == "resolved":
            if row.resolution != action:
                raise InvalidRequest(f"already resolved with {row.resolution}", code="exception_already_resolved")
            return row
        order = await lock_order(session, row.order_id)
        now = rt.now()
        if action == "refund":
            refund = await reserve_refund(rt, session, order, amount=None, reason=f"exception {row.kind}",
                                          metadata={"exception": row.id}, source="api")
            refund_id = row.refund_id = refund.id
        row.status, row.resolution, row.resolved_at = "resolved", action, now
        record(session, order, f"exception.resolved.{action}", source="api", now=now, data={"exception": row.id})
        await audit.record(session, rt, action="payment_exception.resolved", app_id=row.app_id, mode=row.mode,
                           target=row.id, details={"resolution": action, "kind": row.kind, "order": row.order_id},
                           fallback_actor="cli")
    if refund_id is not None:
        try:
            await complete_refund(rt, refund_id, source="api")
        except OutcomeUnknown:
            log.warning("exception refund outcome unknown; the worker settles it", refund_id=refund_id)
    return await get_exception(rt, ctx, exception_id)

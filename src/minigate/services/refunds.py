"""Refunds: full or partial, several per order, never more than was paid.

The refundable amount is reserved under the order's row lock before the provider is called (F8), so
concurrent refunds cannot overshoot; the reservation is released only by a definite failure.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from minigate.domain.orders import refund_can_transition
from minigate.domain.results import ProviderResult, RefundState, RefundStatus
from minigate.errors import InvalidRequest, NotFound
from minigate.providers.bases.payment import RefundRequest
from minigate.services import audit, events
from minigate.services.apps import AppContext
from minigate.services.idempotency import Idem, Response
from minigate.services.ids import new_id, new_out_no
from minigate.services.orders import get_order, lock_order, move, record
from minigate.services.runtime import Runtime
from minigate.store.tables import Order, Refund

__all__ = ["MAX_REFUNDS_PER_ORDER", "apply_refund_status", "complete_refund", "create_refund", "get_refund",
           "list_refunds", "lock_refund", "refund_view", "reserve_refund"]

MAX_REFUNDS_PER_ORDER = 50
REFUND_CHECK_SECONDS = (5, 15, 30, 60, 120, 300, 600)


def refund_view(refund: Refund) -> dict[str, Any]:
    return {"id": refund.id, "object": "refund", "livemode": refund.mode == "live", "order": refund.order_id,
            "amount": refund.amount, "status": refund.status, "reason": refund.reason,
            "out_refund_no": refund.out_refund_no, "provider_refund_id": refund.provider_refund_id,
            "failure_code": refund.failure_code, "metadata": refund.metadata_ or {},
            "created": int(refund.created_at.timestamp()),
            "succeeded_at": int(refund.succeeded_at.timestamp()) if refund.succeeded_at else None}


async def create_refund(rt: Runtime, ctx: AppContext, *, order_id: str, amount: int | None, reason: str | None,
                        metadata: dict[str, str] | None, idem: Idem) -> Response:
    if amount is not None and (isinstance(amount, bool) or amount < 1):
        raise InvalidRequest("amount must be a positive integer number of fen", param="amount",
                             code="amount_invalid")
    if reason is not None and len(reason) > 80:
        raise InvalidRequest("reason must be at most 80 characters", param="reason")
    order = await get_order(rt, ctx, order_id)
    if idem.resource_id is None:
        async with rt.db.transaction() as session:
            order = await lock_order(session, order.id)
            refund = await reserve_refund(rt, session, order, amount=amount, reason=reason, metadata=metadata,
                                          source="api")
            await idem.checkpoint(session, "refund_created", refund.id)
        refund_id = refund.id
    else:
        refund_id = idem.resource_id
    refund = await complete_refund(rt, refund_id, source="api")
    return Response(200, refund_view(refund))


async def reserve_refund(rt: Runtime, session: AsyncSession, order: Order, *, amount: int | None,
                         reason: str | None, metadata: dict[str, str] | None, source: str,
                         send_now: bool = True) -> Refund:
    """Create a pending refund and reserve its amount on the order, which the caller has locked.

    The refundable amount (paid − refunded − reserved) is checked under that lock, so concurrent refunds
    cannot overshoot (F8). ``send_now=False`` leaves sending to the worker (its first check is due at once).
    """
    if order.status not in ("paid", "partially_refunded"):
        raise InvalidRequest(f"an order in status {order.status} cannot be refunded", param="order",
                             code="order_not_refundable")
    refundable = order.amount - order.amount_refunded - order.amount_refund_pending
    wanted = refundable if amount is None else amount
    if wanted > refundable or wanted < 1:
        raise InvalidRequest(f"refund of {wanted} fen exceeds the refundable {refundable} fen",
                             param="amount", code="refund_exceeds_refundable", details={"refundable": refundable})
    count = (await session.execute(select(func.count()).select_from(Refund).where(
        Refund.order_id == order.id))).scalar_one()
    if count >= MAX_REFUNDS_PER_ORDER:
        raise InvalidRequest(f"an order takes at most {MAX_REFUNDS_PER_ORDER} refunds", param="order",
                             code="too_many_refunds")
    now = rt.now()
    first_check = now if not send_now else now + timedelta(seconds=REFUND_CHECK_SECONDS[0])
    refund = Refund(id=new_id("re"), app_id=order.app_id, mode=order.mode, order_id=order.id,
                    provider=order.provider, out_refund_no=new_out_no("RF"), amount=wanted,
                    reason=reason, status="pending", provider_refund_id=None, failure_code=None,
                    next_check_at=first_check, check_attempts=0, metadata_=dict(metadata or {}),
                    created_at=now, succeeded_at=None, updated_at=now)
    session.add(refund)
    order.amount_refund_pending += wanted
    order.version += 1
    await session.flush()
    record(session, order, "refund.created", source=source, now=now, refund_id=refund.id, data={"amount": wanted})
    await audit.record(session, rt, action="refund.created", app_id=order.app_id, mode=order.mode, target=refund.id,
                       details={"order": order.id, "amount": wanted, "source": source}, actor=audit.actor_for(source))
    return refund


async def complete_refund(rt: Runtime, refund_id: str, *, source: str) -> Refund:
    """Send (or re-send, same out_refund_no) a pending refund to the provider and apply the answer."""
    async with rt.db.transaction() as session:
        refund = await session.get(Refund, refund_id)
        assert refund is not None
        order = await session.get(Order, refund.order_id)
        assert order is not None
    if refund.status != "pending":
        return refund
    provider = await rt.payment_provider(refund.app_id, refund.mode, refund.provider)
    result = await provider.refund(RefundRequest(
        out_trade_no=order.out_trade_no, out_refund_no=refund.out_refund_no, amount=refund.amount,
        total=order.amount, reason=refund.reason,
        notify_url=rt.notify_url(refund.provider, refund.mode, refund.app_id)))
    return await apply_refund_result(rt, refund_id, result, source=source)


async def lock_refund(session: AsyncSession, refund_id: str) -> Refund:
    """The refund row, locked and as committed now. Take the order's lock first (lock order: order, refund)."""
    return (await session.execute(select(Refund).where(Refund.id == refund_id).with_for_update()
                                  .execution_options(populate_existing=True))).scalar_one()


async def apply_refund_result(rt: Runtime, refund_id: str, result: ProviderResult[RefundStatus], *,
                              source: str) -> Refund:
    async with rt.db.transaction() as session:
        order_id = (await session.execute(select(Refund.order_id).where(Refund.id == refund_id))).scalar_one()
        order = await lock_order(session, order_id)
        refund = await lock_refund(session, refund_id)
        if result.ok and result.value is not None:
            await apply_refund_status(rt, session, order, refund, result.value, source=source)
        else:  # a business refusal is definite: nothing was refunded
            await _finish(rt, session, order, refund, "failed", source=source,
                          failure=result.provider_code or result.code.value)
    return refund


async def apply_refund_status(rt: Runtime, session: AsyncSession, order: Order, refund: Refund,
                              status: RefundStatus, *, source: str) -> str:
    """Apply a verified provider view of a refund; ``order`` must be locked by the caller."""
    if status.amount is not None and status.amount != refund.amount:
        record(session, order, "refund.amount_mismatch", source=source, now=rt.now(), refund_id=refund.id,
               data={"expected": refund.amount, "reported": status.amount})
        return "amount_mismatch"
    if status.provider_refund_id:
        refund.provider_refund_id = status.provider_refund_id
    target = {RefundState.PROCESSING: "processing", RefundState.SUCCEEDED: "succeeded",
              RefundState.FAILED: "failed"}[status.state]
    if target == refund.status or not refund_can_transition(refund.status, target):
        return "no_change"
    await _finish(rt, session, order, refund, target, source=source,
                  failure=None if target != "failed" else (status.raw.get("status") or "failed"))
    return target


async def _finish(rt: Runtime, session: AsyncSession, order: Order, refund: Refund, target: str, *,
                  source: str, failure: str | None) -> None:
    if not refund_can_transition(refund.status, target):
        return
    now = rt.now()
    record(session, order, f"refund.{target}", source=source, now=now, refund_id=refund.id,
           from_status=refund.status, to_status=target)
    refund.status = target
    refund.updated_at = now
    if target == "processing":
        refund.next_check_at = now + timedelta(seconds=REFUND_CHECK_SECONDS[0])
        return
    refund.next_check_at = None
    order.amount_refund_pending -= refund.amount
    if target == "succeeded":
        refund.succeeded_at = now
        order.amount_refunded += refund.amount
        move(session, order, "refunded" if order.amount_refunded >= order.amount else "partially_refunded",
              source=source, now=now, data={"refund": refund.id})
        await events.emit(session, rt, app_id=order.app_id, mode=order.mode, type="refund.succeeded",
                          obj=refund_view(refund) | {"order_status": order.status}, now=now)
    else:
        refund.failure_code = failure
        order.version += 1
        await events.emit(session, rt, app_id=order.app_id, mode=order.mode, type="refund.failed",
                          obj=refund_view(refund), now=now)


async def get_refund(rt: Runtime, ctx: AppContext, refund_id: str) -> Refund:
    async with rt.db.read() as session:
        refund = await session.get(Refund, refund_id)
    if refund is None or refund.app_id != ctx.app_id or refund.mode != ctx.mode:
        raise NotFound("no such refund", code="resource_missing", details={"id": refund_id})
    return refund


async def list_refunds(rt: Runtime, ctx: AppContext, *, order_id: str | None, limit: int) -> list[Refund]:
    query = select(Refund).where(Refund.app_id == ctx.app_id, Refund.mode == ctx.mode)
    if order_id:
        query = query.where(Refund.order_id == order_id)
    async with rt.db.read() as session:
        return list((await session.execute(query.order_by(Refund.created_at.desc()).limit(limit))).scalars())



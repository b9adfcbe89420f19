"""Console refunds and the four-eyes rule for large ones.

A refund typed into the console is an API refund with a person as its actor: it goes through
:func:`minigate.services.refunds.create_refund` under :func:`~minigate.services.idempotency.run_idempotent`, exactly
as ``POST /v1/refunds`` does. Above ``settings.console_refund_approval_amount`` (fen; 0 means every refund) money
does not move on one person's word: a pending :class:`~minigate.store.tables.RefundApproval` is written instead,
and the refund is made only when *another* operator or admin approves it.

Approving is safe to repeat and to race: the approval moves ``pending → approved`` with a conditional update in
one transaction (one winner), and the refund is then created with an Idempotency-Key derived from the approval
id, so a second approval, a concurrent one, or a retry after a crash between the two steps all end in the same
single refund. A refund the refund service refuses (the order was refunded elsewhere meanwhile, say) leaves the
approval ``failed`` with the reason; nothing was reserved. Every request, approval, rejection and failure is an
audit entry (actor ``console:<user id>``), in the same transaction as the change it records.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import select, update
from sqlalchemy.engine import CursorResult

from minigate.console.users import Operator
from minigate.errors import ApiError, Conflict, InvalidRequest, NotFound, OutcomeUnknown, PermissionDenied
from minigate.logging import get_logger
from minigate.services import audit, refunds
from minigate.services.apps import AppContext
from minigate.services.idempotency import Idem, Response, run_idempotent
from minigate.services.orders import get_order
from minigate.services.runtime import Runtime
from minigate.store.tables import ConsoleUser, Order, RefundApproval

__all__ = ["REFUND_PATH", "Outcome", "approval_view", "approve", "check_amount", "get_approval", "list_approvals",
           "needs_approval", "refund_from_console", "refundable", "reject", "request_refund"]

log = get_logger("minigate.console")

#: the API path whose idempotency keys console refunds share (so a key means the same request on both)
REFUND_PATH = "/v1/refunds"
MAX_REASON = 80


@dataclass(frozen=True, slots=True)
class Outcome:
    """What a console refund request turned into: a refund (made now) or an approval (waiting)."""

    refund_id: str | None = None
    approval_id: str | None = None


def refundable(order: Order) -> int:
    """What can still be refunded: paid, less refunded and less what pending refunds have reserved."""
    if order.status not in ("paid", "partially_refunded"):
        return 0
    return order.amount - order.amount_refunded - order.amount_refund_pending


def needs_approval(rt: Runtime, amount: int) -> bool:
    threshold = rt.settings.console_refund_approval_amount
    return threshold == 0 or amount > threshold


def check_amount(order: Order, amount: int) -> None:
    """The refund service's own checks, made early so a request that cannot succeed is never queued."""
    if order.status not in ("paid", "partially_refunded"):
        raise InvalidRequest(f"an order in status {order.status} cannot be refunded", param="order",
                             code="order_not_refundable")
    left = refundable(order)
    if amount > left:
        raise InvalidRequest(f"refund of {amount} fen exceeds the refundable {left} fen", param="amount",
                             code="refund_exceeds_refundable", details={"refundable": left})


def _reason(reason: str | None) -> str | None:
    reason = (reason or "").strip() or None
    if reason is not None and (len(reason) > MAX_REASON or not reason.isprintable()):
        raise InvalidRequest(f"reason must be at most {MAX_REASON} printable characters", param="reason",
                             code="parameter_invalid")
    return reason


async def _refund(rt: Runtime, ctx: AppContext, *, key: str, order_id: str, amount: int, reason: str | None,
                  metadata: dict[str, str]) -> str:
    """``POST /v1/refunds`` with an Idempotency-Key, as the API runs it."""
    body = {"order": order_id, "amount": amount, "reason": reason, "metadata": metadata}

    async def flow(idem: Idem) -> Response:
        return await refunds.create_refund(rt, ctx, order_id=order_id, amount=amount, reason=reason,
                                           metadata=metadata, idem=idem)

    response = await run_idempotent(rt, ctx, key, method="POST", path=REFUND_PATH, body=body, flow=flow)
    if response.status != 200:
        raise Conflict("the refund was not made", code=str(response.body.get("error", {}).get("code", "conflict")))
    return str(response.body["id"])


async def refund_from_console(rt: Runtime, ctx: AppContext, op: Operator, *, order_id: str, amount: int,
                              reason: str | None, nonce: str) -> Outcome:
    """The final step of a console refund: made at once up to the approval amount, else queued for approval.

    ``nonce`` comes from the confirmation page, so submitting that page twice (a double click, a reload) is one
    request, not two refunds.
    """
    if not 16 <= len(nonce) <= 64 or not nonce.isalnum():
        raise InvalidRequest("the confirmation has expired; start the refund again", code="parameter_invalid",
                             param="nonce")
    reason = _reason(reason)
    order = await get_order(rt, ctx, order_id)
    check_amount(order, amount)
    if needs_approval(rt, amount):
        return Outcome(approval_id=await request_refund(rt, ctx, op, order=order, amount=amount, reason=reason,
                                                        nonce=nonce))
    refund_id = await _refund(rt, ctx, key=f"console-refund:{op.user_id}:{nonce}", order_id=order.id,
                              amount=amount, reason=reason, metadata={"console_user": op.user_id})
    return Outcome(refund_id=refund_id)


async def request_refund(rt: Runtime, ctx: AppContext, op: Operator, *, order: Order, amount: int,
                         reason: str | None, nonce: str) -> str:
    """A pending approval for a refund of ``amount``; the same confirmation page submitted again is the same
    approval (its id is derived from the nonce)."""
    approval_id = f"rfa_{nonce[:32]}"
    async with rt.db.transaction() as session:
        existing = await session.get(RefundApproval, approval_id)
        if existing is not None:
            if existing.requested_by != op.user_id or existing.order_id != order.id or existing.amount != amount:
                raise Conflict("this confirmation was already used; start the refund again", code="nonce_reused")
            return existing.id
        session.add(RefundApproval(id=approval_id, app_id=ctx.app_id, mode=ctx.mode, order_id=order.id,
                                   amount=amount, reason=reason, status="pending", requested_by=op.user_id,
                                   requested_at=rt.now()))
        await session.flush()
        await audit.record(session, rt, action="refund_approval.requested", app_id=ctx.app_id, mode=ctx.mode,
                           target=approval_id, actor=op.actor, details={"order": order.id, "amount": amount})
    log.info("refund approval requested", approval_id=approval_id, order_id=order.id, amount=amount)
    return approval_id


async def _locked(session: Any, ctx: AppContext, approval_id: str) -> RefundApproval:
    row: RefundApproval | None = (await session.execute(
        select(RefundApproval).where(RefundApproval.id == approval_id).with_for_update()
        .execution_options(populate_existing=True))).scalar_one_or_none()
    if row is None or row.app_id != ctx.app_id or row.mode != ctx.mode:
        raise NotFound("no such refund approval", code="resource_missing", details={"id": approval_id})
    return row


def _not_own(row: RefundApproval, op: Operator) -> None:
    if row.requested_by == op.user_id:
        raise PermissionDenied("a refund you requested must be decided by another person",
                               code="approval_own_request")


async def _decide(rt: Runtime, ctx: AppContext, op: Operator, approval_id: str, target: str) -> RefundApproval:
    """``pending → target`` as one conditional update (the only way out of pending), with its audit entry."""
    async with rt.db.transaction() as session:
        row = await _locked(session, ctx, approval_id)
        _not_own(row, op)
        if row.status != "pending":
            return row
        now = rt.now()
        moved = cast(CursorResult[Any], await session.execute(update(RefundApproval).where(
            RefundApproval.id == approval_id, RefundApproval.status == "pending")
            .values(status=target, decided_by=op.user_id, decided_at=now)
            .execution_options(synchronize_session=False)))
        if moved.rowcount != 1:        # another decision won in between: report what it decided
            return await _locked(session, ctx, approval_id)
        await audit.record(session, rt, action=f"refund_approval.{target}", app_id=ctx.app_id, mode=ctx.mode,
                           target=approval_id, actor=op.actor,
                           details={"order": row.order_id, "amount": row.amount, "requested_by": row.requested_by})
        return await _locked(session, ctx, approval_id)


async def approve(rt: Runtime, ctx: AppContext, op: Operator, approval_id: str) -> RefundApproval:
    """Approve and carry out a pending refund; repeating it (or racing it) makes no second refund."""
    row = await _decide(rt, ctx, op, approval_id, "approved")
    if row.status != "approved":
        raise Conflict(f"this refund approval is {row.status}", code="approval_decided",
                       details={"status": row.status})
    if row.refund_id is not None:
        return row
    # approved but no refund recorded yet: this call approved it, or a previous one stopped before the refund
    # was recorded; the key derived from the approval makes both cases the same single refund, and a refund
    # already made for it (found by its metadata, should the key have expired meanwhile) is linked, not repeated
    made = await _refund_of(rt, ctx, row)
    if made is not None:
        return await _link(rt, ctx, row.id, made)
    try:
        refund_id = await _refund(rt, ctx, key=f"refund-approval:{row.id}", order_id=row.order_id,
                                  amount=row.amount, reason=row.reason, metadata={"console_approval": row.id})
    except OutcomeUnknown:
        raise                      # the refund exists (pending) and settles by query; approving again resumes it
    except ApiError as exc:
        if exc.code in ("idempotency_key_in_use",):
            raise                  # the same approval is being carried out right now
        await _fail(rt, ctx, op, row.id, exc)
        raise
    return await _link(rt, ctx, row.id, refund_id)


async def _refund_of(rt: Runtime, ctx: AppContext, row: RefundApproval) -> str | None:
    for refund in await refunds.list_refunds(rt, ctx, order_id=row.order_id, limit=refunds.MAX_REFUNDS_PER_ORDER):
        if (refund.metadata_ or {}).get("console_approval") == row.id:
            return refund.id
    return None


async def _link(rt: Runtime, ctx: AppContext, approval_id: str, refund_id: str) -> RefundApproval:
    async with rt.db.transaction() as session:
        locked = await _locked(session, ctx, approval_id)
        locked.refund_id = refund_id
        return locked


async def _fail(rt: Runtime, ctx: AppContext, op: Operator, approval_id: str, exc: ApiError) -> None:
    async with rt.db.transaction() as session:
        row = await _locked(session, ctx, approval_id)
        if row.status != "approved" or row.refund_id is not None:
            return
        row.status = "failed"
        row.error = f"{exc.code}: {exc.message}"[:300]
        await audit.record(session, rt, action="refund_approval.failed", app_id=ctx.app_id, mode=ctx.mode,
                           target=approval_id, actor=op.actor, details={"order": row.order_id, "error": exc.code})


async def reject(rt: Runtime, ctx: AppContext, op: Operator, approval_id: str) -> RefundApproval:
    row = await _decide(rt, ctx, op, approval_id, "rejected")
    if row.status != "rejected":
        raise Conflict(f"this refund approval is {row.status}", code="approval_decided",
                       details={"status": row.status})
    return row


async def get_approval(rt: Runtime, ctx: AppContext, approval_id: str) -> RefundApproval:
    async with rt.db.read() as session:
        row = await session.get(RefundApproval, approval_id)
    if row is None or row.app_id != ctx.app_id or row.mode != ctx.mode:
        raise NotFound("no such refund approval", code="resource_missing", details={"id": approval_id})
    return row


async def list_approvals(rt: Runtime, ctx: AppContext, *, status: str | None = None, order_id: str | None = None,
                         limit: int = 20, before: str | None = None) -> tuple[list[dict[str, Any]], str | None]:
    """Approvals newest first, with their order's numbers and the people's names; the cursor is the last id."""
    query = (select(RefundApproval, Order.merchant_order_no, Order.currency)
             .join(Order, Order.id == RefundApproval.order_id)
             .where(RefundApproval.app_id == ctx.app_id, RefundApproval.mode == ctx.mode))
    if status:
        query = query.where(RefundApproval.status == status)
    if order_id:
        query = query.where(RefundApproval.order_id == order_id)
    async with rt.db.read() as session:
        if before:
            cursor = await session.get(RefundApproval, before)
            if cursor is not None:
                query = query.where((RefundApproval.requested_at < cursor.requested_at) |
                                    ((RefundApproval.requested_at == cursor.requested_at)
                                     & (RefundApproval.id < cursor.id)))
        rows = (await session.execute(query.order_by(RefundApproval.requested_at.desc(), RefundApproval.id.desc())
                                      .limit(limit + 1))).all()
        people = {r[0].requested_by for r in rows} | {r[0].decided_by for r in rows if r[0].decided_by}
        found = (await session.execute(select(ConsoleUser.id, ConsoleUser.name)
                                       .where(ConsoleUser.id.in_(people)))).all() if people else []
    names = {r.id: r.name for r in found}
    views = [approval_view(r[0], names, merchant_order_no=r[1], currency=r[2]) for r in rows[:limit]]
    return views, (rows[limit - 1][0].id if len(rows) > limit else None)


def approval_view(row: RefundApproval, names: dict[str, str], *, merchant_order_no: str | None = None,
                  currency: str = "CNY") -> dict[str, Any]:
    return {"id": row.id, "order": row.order_id, "merchant_order_no": merchant_order_no, "amount": row.amount,
            "currency": currency, "reason": row.reason, "status": row.status, "requested_by": row.requested_by,
            "requested_by_name": names.get(row.requested_by, row.requested_by), "requested_at": row.requested_at,
            "decided_by": row.decided_by, "decided_by_name": names.get(row.decided_by or "", row.decided_by),
            "decided_at": row.decided_at, "refund_id": row.refund_id, "error": row.error}

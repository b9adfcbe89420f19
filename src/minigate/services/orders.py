"""Checkout: create, read, list and close orders; apply what providers report about them.

Every provider call sits between two local commits (A-4): the order row exists (``creating``) before the
provider is asked, and the provider's answer is applied in a second transaction. An unknown outcome leaves
the order in ``creating`` with a recovery point; the same ``out_trade_no`` is used on every retry (A-6).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, cast

from sqlalchemy import Table, bindparam, insert, inspect, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from minigate.domain.orders import can_transition
from minigate.domain.results import ProviderResult, StandardCode, TradeState, TradeStatus
from minigate.errors import Conflict, InvalidRequest, NotFound
from minigate.logging import get_logger
from minigate.money import MAX_AMOUNT_FEN
from minigate.phones import InvalidPhone, mask_phone, parse_phone
from minigate.providers.bases.payment import CreateOrderRequest
from minigate.services import events
from minigate.services.apps import AppContext
from minigate.services.idempotency import Idem, Response
from minigate.services.ids import new_id, new_out_no
from minigate.services.runtime import CHANNELS, Runtime
from minigate.store.tables import Order, OrderEvent
from minigate.vault import mask

__all__ = ["NewOrder", "apply_trade_status", "close_locally", "close_order", "complete_creation", "create_order",
           "get_order", "list_orders", "lock_order", "move", "order_view", "query_and_apply", "record"]

log = get_logger("minigate.orders")

_MERCHANT_NO = re.compile(r"^[0-9A-Za-z_\-*|]{1,64}$")
#: after creation, the first active query comes after T1 (A-9), then this backoff
CHECK_SCHEDULE = (60, 5, 15, 30, 60, 120, 300, 600)
PAYER_CONTEXT = "payer"
#: closed orders are queried again this long after their expiry (then once more, a day after it)
CLOSED_FOLLOWUP = (timedelta(minutes=10), timedelta(days=1))

#: checkout writes these in SQLAlchemy Core (no ORM session: its unit of work was the largest CPU cost per order)
ORDERS = cast(Table, Order.__table__)
ORDER_EVENTS = cast(Table, OrderEvent.__table__)
#: (attribute, column key) of every mapped column of Order (``metadata_`` is the column ``metadata``)
_ORDER_FIELDS = tuple((prop.key, prop.columns[0].key) for prop in inspect(Order).column_attrs)
#: built once, values bound per execution: building a statement each time (coercions, bind parameters, its
#: cache key) cost more CPU than executing it
_INSERT_ORDER = insert(ORDERS)
_INSERT_EVENT = insert(ORDER_EVENTS)
_ORDER_BY_ID = select(ORDERS).where(ORDERS.c.id == bindparam("o_id"))
_LOCK_ORDER_BY_ID = _ORDER_BY_ID.with_for_update()
_UPDATE_ORDER = update(ORDERS).where(ORDERS.c.id == bindparam("o_id"))


@dataclass(frozen=True, slots=True)
class NewOrder:
    channel: str
    amount: int
    description: str
    merchant_order_no: str
    payer_id: str
    currency: str = "CNY"
    expires_in: int = 7200
    metadata: dict[str, str] | None = None
    #: the buyer's mobile number for order SMS (opt-in per app; sealed at rest, masked in views)
    contact_phone: str | None = None


def _contact(raw: str) -> str:
    try:
        return parse_phone(raw, allowed_country_codes=None).e164
    except InvalidPhone as exc:
        raise InvalidRequest(exc.message, param="contact_phone", code=exc.code) from None


def _validate(new: NewOrder) -> None:
    if new.channel not in CHANNELS:
        raise InvalidRequest(f"unknown channel {new.channel!r}; supported: {', '.join(sorted(CHANNELS))}",
                             param="channel", code="unknown_channel")
    if isinstance(new.amount, bool) or not 1 <= new.amount <= MAX_AMOUNT_FEN:
        raise InvalidRequest(f"amount must be an integer number of fen between 1 and {MAX_AMOUNT_FEN}",
                             param="amount", code="amount_invalid")
    if new.currency != "CNY":
        raise InvalidRequest("only CNY is supported", param="currency", code="currency_unsupported")
    if not 1 <= len(new.description) <= 127 or not new.description.isprintable():
        raise InvalidRequest("description must be 1-127 printable characters", param="description")
    if not _MERCHANT_NO.match(new.merchant_order_no):
        raise InvalidRequest("merchant_order_no must be 1-64 of [0-9A-Za-z_-*|]", param="merchant_order_no")
    if not 1 <= len(new.payer_id) <= 128 or not new.payer_id.isprintable() or " " in new.payer_id:
        raise InvalidRequest("payer openid must be 1-128 printable characters", param="payer")
    if not 60 <= new.expires_in <= 7 * 86400:
        raise InvalidRequest("expires_in must be between 60 seconds and 7 days", param="expires_in")
    if new.contact_phone is not None:
        _contact(new.contact_phone)
    meta = new.metadata or {}
    if len(meta) > 20 or any(len(k) > 40 or len(str(v)) > 500 for k, v in meta.items()):
        raise InvalidRequest("metadata: at most 20 keys, keys ≤ 40 and values ≤ 500 characters",
                             param="metadata")


def order_view(rt: Runtime, order: Order) -> dict[str, Any]:
    payer = rt.vault.open(order.payer_sealed, context=PAYER_CONTEXT)
    view: dict[str, Any] = {
        "id": order.id, "object": "order", "livemode": order.mode == "live", "channel": order.channel,
        "status": order.status, "amount": order.amount, "currency": order.currency,
        "amount_refunded": order.amount_refunded, "description": order.description,
        "merchant_order_no": order.merchant_order_no, "out_trade_no": order.out_trade_no,
        "provider_trade_id": order.provider_trade_id, "payer": {"openid": mask(payer)},
        "metadata": order.metadata_ or {}, "failure_code": order.failure_code,
        "contact_phone": (mask_phone(rt.vault.open(order.contact_phone_sealed, context="phone"))
                          if order.contact_phone_sealed else None),
        "created": int(order.created_at.timestamp()), "expires_at": int(order.expires_at.timestamp()),
        "paid_at": int(order.paid_at.timestamp()) if order.paid_at else None,
        "closed_at": int(order.closed_at.timestamp()) if order.closed_at else None,
    }
    if order.status == "pending" and order.client_params:
        view["pay_params"] = order.client_params
    return view


def record(session: AsyncSession, order: Order, type: str, *, source: str, now: datetime,
           from_status: str | None = None, to_status: str | None = None, refund_id: str | None = None,
           data: dict[str, Any] | None = None) -> None:
    session.add(OrderEvent(order_id=order.id, refund_id=refund_id, type=type, from_status=from_status,
                           to_status=to_status, source=source, data=data or {}, created_at=now))


def move(session: AsyncSession, order: Order, target: str, *, source: str, now: datetime,
          data: dict[str, Any] | None = None) -> None:
    if not can_transition(order.status, target):
        raise AssertionError(f"illegal transition {order.status} -> {target}")
    record(session, order, f"order.{target}", source=source, now=now, from_status=order.status,
           to_status=target, data=data)
    if target == "closed" and not order.failure_code:
        # A close is not always the provider's last word (JD Pay H5 has no close; a payer may pay in an open
        # cashier): a closed order is queried again after its expiry, so a late payment is found, never lost.
        order.next_check_at = max(order.expires_at, now) + CLOSED_FOLLOWUP[0]
    order.status = target
    order.version += 1
    order.updated_at = now


async def lock_order(session: AsyncSession, order_id: str) -> Order:
    """Lock the order row and return it **as committed now** (populate_existing: never a stale copy the
    session loaded before the lock was granted)."""
    row = (await session.execute(select(Order).where(Order.id == order_id).with_for_update()
                                 .execution_options(populate_existing=True))).scalar_one()
    return row


async def create_order(rt: Runtime, ctx: AppContext, new: NewOrder, idem: Idem) -> Response:
    _validate(new)
    provider_name = CHANNELS[new.channel]
    await rt.payment_provider(ctx.app_id, ctx.mode, provider_name)   # unconfigured provider: refuse up front
    now = rt.now()
    if idem.resource_id is None:
        columns: dict[str, Any] = dict(
            id=new_id("ord"), app_id=ctx.app_id, mode=ctx.mode, channel=new.channel, provider=provider_name,
            merchant_order_no=new.merchant_order_no, out_trade_no=new_out_no("MG"), amount=new.amount,
            currency=new.currency, description=new.description, status="creating", amount_refunded=0,
            amount_refund_pending=0, payer_sealed=rt.vault.seal(new.payer_id, context=PAYER_CONTEXT),
            contact_phone_sealed=(rt.vault.seal(_contact(new.contact_phone), context="phone")
                                  if new.contact_phone else None),
            contact_phone_hash=(rt.vault.lookup_hash(_contact(new.contact_phone), context="phone")
                                if new.contact_phone else None),
            payer_hash=rt.vault.lookup_hash(new.payer_id, context=PAYER_CONTEXT), provider_order_ref=None,
            provider_trade_id=None, client_params=None, failure_code=None,
            expires_at=now + timedelta(seconds=new.expires_in), paid_at=None, closed_at=None,
            next_check_at=now + timedelta(seconds=CHECK_SCHEDULE[0]), check_attempts=0,
            metadata=dict(new.metadata or {}), version=1, created_at=now, updated_at=now)
        try:
            async with rt.db.core() as conn:
                # the key first: a new key is written here, and a concurrent twin must be refused as in progress
                # (409 idempotency_key_in_use) rather than as a duplicate merchant_order_no
                await idem.checkpoint(conn, "order_created", columns["id"])
                await conn.execute(_INSERT_ORDER, columns)
                await _record_core(conn, columns["id"], "order.created", source="api", now=now,
                                   to_status="creating", data={"amount": new.amount, "channel": new.channel})
        except IntegrityError:
            raise Conflict("an order with this merchant_order_no already exists",
                           param="merchant_order_no", code="order_exists") from None
        idem.confirm()
        order = await _complete(rt, columns["id"], source="api", fresh=_order_of(columns), idem=idem)
    else:
        order = await _complete(rt, idem.resource_id, source="api", fresh=None, idem=idem)
    return idem.stored or _creation_response(rt, order)


def _creation_response(rt: Runtime, order: Order) -> Response:
    if order.status == "closed" and order.failure_code:
        return Response(402, {"error": {"type": "provider_error", "code": "provider_declined",
                                        "message": "the provider refused to create the order",
                                        "provider_code": order.failure_code, "order": order.id}})
    return Response(200, order_view(rt, order))


async def complete_creation(rt: Runtime, order_id: str, *, source: str) -> Order:
    """Ask the provider for the prepay (again, with the same out_trade_no) and apply the answer."""
    return await _complete(rt, order_id, source=source, fresh=None, idem=None)


async def _complete(rt: Runtime, order_id: str, *, source: str, fresh: Order | None, idem: Idem | None) -> Order:
    """:func:`complete_creation`. ``fresh``: the order this request has just committed (no need to read it back);
    ``idem``: the request's key, finished in the same transaction as the provider's answer (one commit less)."""
    if fresh is None:
        async with rt.db.core_read() as conn:
            order = _order_of((await conn.execute(_ORDER_BY_ID, {"o_id": order_id})).one()._mapping)
    else:
        order = fresh
    if order.status != "creating":
        return order
    provider = await rt.payment_provider(order.app_id, order.mode, order.provider)
    payer = rt.vault.open(order.payer_sealed, context=PAYER_CONTEXT)
    result = await provider.create_order(CreateOrderRequest(
        out_trade_no=order.out_trade_no, amount=order.amount, description=order.description,
        notify_url=rt.notify_url(order.provider, order.mode, order.app_id), payer_id=payer,
        return_url=rt.return_url(order.provider, order.mode, order.app_id),
        currency=order.currency, expires_at=order.expires_at))
    now = rt.now()
    async with rt.db.core() as conn:
        row = (await conn.execute(_LOCK_ORDER_BY_ID, {"o_id": order_id})).one()
        order = _order_of(row._mapping)
        if order.status != "creating":
            return order
        changes: dict[str, Any]
        if result.ok and result.value is not None:
            changes = {"provider_order_ref": result.value.provider_order_ref,
                       "client_params": dict(result.value.client_params),
                       "next_check_at": now + timedelta(seconds=CHECK_SCHEDULE[0])}
            target, data = "pending", None
        elif result.code is StandardCode.ALREADY_PAID:
            changes = {"next_check_at": now}            # paid already (a retry after an unknown outcome): query it
            target, data = None, None
        else:
            changes = {"failure_code": result.provider_code or result.code.value, "closed_at": now,
                       "next_check_at": None}   # a refused creation is final: no follow-up query
            target, data = "closed", {"code": result.code.value, "provider_code": result.provider_code}
        if target is not None:
            if not can_transition(order.status, target):
                raise AssertionError(f"illegal transition {order.status} -> {target}")
            await _record_core(conn, order.id, f"order.{target}", source=source, now=now, from_status=order.status,
                               to_status=target, data=data)
            changes.update(status=target, version=order.version + 1, updated_at=now)
        await conn.execute(_UPDATE_ORDER, {"o_id": order.id, **changes})
        order = _order_of({**row._mapping, **changes})
        if idem is not None:
            await idem.finish(conn, _creation_response(rt, order))
    return order


def _order_of(columns: Any) -> Order:
    """A detached :class:`Order` from column values (a Core row's mapping), for views and the flows above."""
    return Order(**{attr: columns[key] for attr, key in _ORDER_FIELDS})


async def _record_core(conn: AsyncConnection, order_id: str, type: str, *, source: str, now: datetime,
                       from_status: str | None = None, to_status: str | None = None,
                       data: dict[str, Any] | None = None) -> None:
    """:func:`record` in SQLAlchemy Core."""
    await conn.execute(_INSERT_EVENT, {"order_id": order_id, "refund_id": None, "type": type,
                                       "from_status": from_status, "to_status": to_status, "source": source,
                                       "data": data or {}, "created_at": now})


async def get_order(rt: Runtime, ctx: AppContext, order_id: str) -> Order:
    async with rt.db.read() as session:
        order = await session.get(Order, order_id)
    if order is None or order.app_id != ctx.app_id or order.mode != ctx.mode:
        raise NotFound("no such order", code="resource_missing", details={"id": order_id})
    return order


async def list_orders(rt: Runtime, ctx: AppContext, *, limit: int, starting_after: str | None,
                      status: str | None, channel: str | None, merchant_order_no: str | None,
                      payer: str | None, created_gte: int | None, created_lt: int | None) -> tuple[list[Order], bool]:
    query = select(Order).where(Order.app_id == ctx.app_id, Order.mode == ctx.mode)
    if status:
        query = query.where(Order.status == status)
    if channel:
        query = query.where(Order.channel == channel)
    if merchant_order_no:
        query = query.where(Order.merchant_order_no == merchant_order_no)
    if payer:
        query = query.where(Order.payer_hash == rt.vault.lookup_hash(payer, context=PAYER_CONTEXT))
    if created_gte is not None:
        query = query.where(Order.created_at >= _from_ts(created_gte))
    if created_lt is not None:
        query = query.where(Order.created_at < _from_ts(created_lt))
    if starting_after:
        cursor = await get_order(rt, ctx, starting_after)
        query = query.where((Order.created_at < cursor.created_at) |
                            ((Order.created_at == cursor.created_at) & (Order.id < cursor.id)))
    query = query.order_by(Order.created_at.desc(), Order.id.desc()).limit(limit + 1)
    async with rt.db.read() as session:
        rows = list((await session.execute(query)).scalars().all())
    return rows[:limit], len(rows) > limit


def _from_ts(ts: int) -> datetime:
    return datetime.fromtimestamp(ts, UTC)


async def close_order(rt: Runtime, ctx: AppContext, order_id: str) -> Order:
    order = await get_order(rt, ctx, order_id)
    if order.status == "closed":
        return order
    if order.status in ("paid", "partially_refunded", "refunded"):
        raise Conflict("the order is paid; refund it instead", code="order_already_paid")
    provider = await rt.payment_provider(order.app_id, order.mode, order.provider)
    if order.status == "creating":
        queried = await provider.query_order(order.out_trade_no)
        if not queried.ok and queried.code is StandardCode.NOT_FOUND:
            async with rt.db.transaction() as session:
                locked = await lock_order(session, order.id)
                if locked.status == "creating":
                    await close_locally(rt, session, locked, source="api")
            return await get_order(rt, ctx, order_id)
        await apply_query_result(rt, order.id, queried, source="api")
        order = await get_order(rt, ctx, order_id)
        if order.status != "pending":
            return await _closed_or_paid(rt, ctx, order)
    result = await provider.close_order(order.out_trade_no)
    if result.ok or result.code is StandardCode.ORDER_CLOSED:
        async with rt.db.transaction() as session:
            locked = await lock_order(session, order.id)
            if locked.status in ("creating", "pending"):
                await close_locally(rt, session, locked, source="api")
    elif result.code is StandardCode.ALREADY_PAID:
        # F9: the payer paid between our last look and the close. The provider's truth wins.
        await apply_query_result(rt, order.id, await provider.query_order(order.out_trade_no), source="api")
    else:
        raise Conflict(f"the provider refused to close the order ({result.provider_code})",
                       code="provider_declined")
    return await _closed_or_paid(rt, ctx, await get_order(rt, ctx, order_id))


async def _closed_or_paid(rt: Runtime, ctx: AppContext, order: Order) -> Order:
    if order.status in ("paid", "partially_refunded", "refunded"):
        raise Conflict("the order was paid before it could be closed; refund it instead",
                       code="order_already_paid", details={"order": order.id})
    return order


async def close_locally(rt: Runtime, session: AsyncSession, order: Order, *, source: str,
                        data: dict[str, Any] | None = None) -> None:
    """Close an open order the caller has locked: the transition (which schedules the follow-up query after
    expiry) and the ``order.closed`` event, in the caller's transaction."""
    now = rt.now()
    order.closed_at = now
    move(session, order, "closed", source=source, now=now, data=data)
    await _emit_order(rt, session, order, "order.closed")


async def _emit_order(rt: Runtime, session: AsyncSession, order: Order, type: str) -> None:
    await events.emit(session, rt, app_id=order.app_id, mode=order.mode, type=type, obj=order_view(rt, order),
                      now=rt.now())


async def query_and_apply(rt: Runtime, order: Order, *, source: str) -> str:
    """Ask the provider about the order now and apply its answer (what an operator's "query now" does)."""
    provider = await rt.payment_provider(order.app_id, order.mode, order.provider)
    return await apply_query_result(rt, order.id, await provider.query_order(order.out_trade_no), source=source)


async def apply_query_result(rt: Runtime, order_id: str, result: ProviderResult[TradeStatus], *,
                             source: str) -> str:
    if not result.ok or result.value is None:
        return "no_change"
    async with rt.db.transaction() as session:
        order = await lock_order(session, order_id)
        return await apply_trade_status(rt, session, order, result.value, source=source)


async def apply_trade_status(rt: Runtime, session: AsyncSession, order: Order, status: TradeStatus, *,
                             source: str) -> str:
    """Apply a verified provider view of the trade to the locked order. Returns what happened."""
    now = rt.now()
    if status.amount_total is not None and status.amount_total != order.amount:   # any state, not only paid (B-2)
        record(session, order, "payment.amount_mismatch", source=source, now=now,
               data={"expected": order.amount, "reported": status.amount_total})
        log.warning("payment amount mismatch", order_id=order.id, expected=order.amount,
                    reported=status.amount_total, source=source)
        return "amount_mismatch"
    if status.state in (TradeState.PAID, TradeState.REFUNDED):
        if order.status not in ("creating", "pending", "closed"):
            return "duplicate"
        was_closed = order.status == "closed"
        order.paid_at = status.paid_at or now
        order.provider_trade_id = status.provider_trade_id
        order.next_check_at = None
        order.closed_at = None if not was_closed else order.closed_at
        move(session, order, "paid", source=source, now=now,
              data={"provider_trade_id": status.provider_trade_id})
        await _emit_order(rt, session, order, "order.paid_after_close" if was_closed else "order.paid")
        if was_closed:
            from minigate.services.exceptions import open_exception

            await open_exception(rt, session, order, "paid_after_close",
                                 {"provider_trade_id": status.provider_trade_id, "amount": order.amount})
        return "paid"
    if status.state is TradeState.CLOSED and order.status in ("creating", "pending"):
        await close_locally(rt, session, order, source=source)
        return "closed"
    return "no_change"

"""Orders: search and list, one order's facts and full history, and what an operator may do to it (refund with a
confirmation step, close, ask the provider now).

Reads go through the same service functions as ``/v1/orders`` where they exist (the order view masks the payer
exactly as the API does); the search adds what the API has no filter for (any of the order's numbers, an amount
range) with the same keyset cursor. Raw provider payloads are shown only after masking: identifiers (openids,
buyer ids, phones) are masked as the API masks openids, secrets and signatures are dropped, free text is scrubbed
as the logs scrub it, and the order's own payer and contact phone are masked wherever they still appear.
"""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qsl, urlencode

from fastapi import Request
from fastapi.responses import Response
from sqlalchemy import or_, select

from minigate.console import approvals as approval_service
from minigate.console.i18n import register, translator
from minigate.console.users import Operator
from minigate.console.web import (
    Form,
    OperatorDep,
    ViewerDep,
    app_context,
    query_date,
    read_form,
    redirect,
    render,
    router,
    runtime,
)
from minigate.errors import InvalidRequest, OutcomeUnknown, ProviderError, ServiceUnavailable
from minigate.logging import redact, scrub_text
from minigate.money import fen_to_yuan
from minigate.services import audit, refunds
from minigate.services import orders as order_service
from minigate.services.apps import AppContext
from minigate.services.runtime import CHANNELS, Runtime
from minigate.store.tables import Event, InboundNotification, Order, OrderEvent, Refund, RefundApproval, WebhookDelivery
from minigate.vault import mask

__all__ = ["mask_payload", "mask_tree", "provider_errors"]

STATUSES = ("creating", "pending", "paid", "partially_refunded", "refunded", "closed")
PAGE = 25
_MAX_PAYLOAD = 8000
#: keys whose values identify a person: masked like the API masks openids (start and end kept)
_IDENTIFIERS = re.compile(r"(openid|unionid|buyer_id|buyer_user_id|buyer_logon_id|buyer_open_id|payer|user_id|"
                          r"phone|mobile)", re.IGNORECASE)
#: encrypted blobs: only their size is shown
_ENCRYPTED = re.compile(r"^(ciphertext|encrypted_data|encrypt|data_encrypted)$", re.IGNORECASE)

register({
    "orders.title": ("Orders", "订单"),
    "orders.search": ("Order id, merchant order no., out_trade_no, transaction id or payer openid",
                      "订单号、商户订单号、out_trade_no、交易号或付款人 openid"),
    "orders.all": ("All", "全部"),
    "orders.min": ("Min amount (¥)", "最小金额（元）"),
    "orders.max": ("Max amount (¥)", "最大金额（元）"),
    "orders.from": ("From (UTC)", "开始（UTC）"),
    "orders.to": ("To (UTC)", "结束（UTC）"),
    "orders.id": ("Order", "订单"),
    "orders.merchant_order_no": ("Merchant order no.", "商户订单号"),
    "orders.out_trade_no": ("out_trade_no", "out_trade_no"),
    "orders.provider_trade_id": ("Transaction id", "交易号"),
    "orders.description": ("Description", "描述"),
    "orders.payer": ("Payer (masked)", "付款人（已脱敏）"),
    "orders.contact_phone": ("Contact phone (masked)", "联系电话（已脱敏）"),
    "orders.refunded": ("Refunded", "已退款"),
    "orders.refundable": ("Refundable", "可退金额"),
    "orders.paid_at": ("Paid", "支付时间"),
    "orders.closed_at": ("Closed", "关闭时间"),
    "orders.expires_at": ("Expires", "过期时间"),
    "orders.failure_code": ("Failure", "失败原因"),
    "orders.facts": ("Order", "订单信息"),
    "orders.timeline": ("Timeline", "时间线"),
    "orders.refunds": ("Refunds", "退款"),
    "orders.refund": ("Refund", "退款"),
    "orders.refund_amount": ("Amount to refund (¥)", "退款金额（元）"),
    "orders.refund_full": ("Full refundable amount", "全额退款"),
    "orders.reason": ("Reason (optional, 80 characters)", "原因（可选，80 字以内）"),
    "orders.refund_next": ("Review refund", "核对退款"),
    "orders.confirm_title": ("Confirm the refund", "确认退款"),
    "orders.confirm_text": ("This refunds {amount} of order {order} to the payer. It cannot be undone.",
                            "将向付款人退还订单 {order} 的 {amount}，操作不可撤销。"),
    "orders.confirm_approval": ("This amount needs a second person: confirming creates a request that another "
                                "operator or admin must approve.",
                                "该金额需要第二人审批：确认后将生成审批请求，由另一位运营或管理员批准。"),
    "orders.confirm_refund": ("Refund now", "确认退款"),
    "orders.confirm_request": ("Request approval", "提交审批"),
    "orders.approval_requested": ("Refund approval requested: another person must approve it.",
                                  "已提交退款审批，需由另一位同事批准。"),
    "orders.close": ("Close order", "关闭订单"),
    "orders.query": ("Query the provider now", "立即向渠道查询"),
    "orders.queried": ("Queried the provider: {outcome}.", "已向渠道查询：{outcome}。"),
    "orders.source": ("Source", "来源"),
    "orders.kind.state": ("State change", "状态变更"),
    "orders.kind.notification": ("Provider notification", "渠道通知"),
    "orders.kind.refund": ("Refund", "退款"),
    "orders.kind.event": ("Event", "事件"),
    "orders.kind.approval": ("Refund approval", "退款审批"),
    "orders.payload": ("Payload (masked)", "报文（已脱敏）"),
    "orders.headers": ("Headers", "请求头"),
    "orders.deliveries": ("Webhook deliveries", "Webhook 投递"),
    "orders.attempts": ("Attempts", "尝试次数"),
    "orders.no_deliveries": ("No webhook endpoint took this event.", "没有 Webhook 端点订阅此事件。"),
    "orders.error": ("Error", "错误"),
    "orders.approval_pending": ("Waiting for approval", "等待审批"),
    "orders.actions_none": ("Viewers can look but not act.", "只读角色仅可查看。"),
})


# -- masking -------------------------------------------------------------------------------------------------


def mask_tree(key: str, value: Any) -> Any:
    """A provider payload (parsed) with identifiers masked, encrypted blobs reduced to their size, secrets
    dropped and free text scrubbed (the logs' :func:`~minigate.logging.redact` does the last two)."""
    if isinstance(value, Mapping):
        return {str(k): mask_tree(str(k), v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [mask_tree(key, v) for v in value]
    if _ENCRYPTED.search(key) and isinstance(value, str):
        return f"[encrypted, {len(value)} characters]"
    if _IDENTIFIERS.search(key) and isinstance(value, str | int) and not isinstance(value, bool):
        return mask(str(value))
    return redact(None, "", {key: value})[key]


def mask_payload(raw: bytes | str, *, clear: tuple[str, ...] = ()) -> str:
    """Raw provider bytes as a masked, readable text: JSON and form bodies are parsed and masked key by key,
    anything else is scrubbed; every value in ``clear`` (the order's payer, phone) is masked wherever it is."""
    text = raw.decode("utf-8", errors="replace") if isinstance(raw, bytes) else raw
    shown: str
    try:
        shown = json.dumps(mask_tree("", json.loads(text)), ensure_ascii=False, indent=2, sort_keys=True)
    except ValueError:
        pairs = parse_qsl(text, keep_blank_values=True) if "=" in text and "<" not in text else []
        if pairs:
            shown = json.dumps({k: mask_tree(k, v) for k, v in pairs}, ensure_ascii=False, indent=2)
        else:
            shown = _mask_markup(scrub_text(text))
    for value in clear:
        if value and len(value) >= 4:
            shown = shown.replace(value, mask(value))
    if len(shown) > _MAX_PAYLOAD:
        shown = shown[:_MAX_PAYLOAD] + " …"
    return shown


_MARKUP_FIELD = re.compile(r"<([A-Za-z_]*(?:openid|buyer_id|user_id|phone|mobile)[A-Za-z_]*)>([^<]+)</\1>",
                           re.IGNORECASE)
_MARKUP_SECRET = re.compile(r"<([A-Za-z_]*(?:sign|signature|secret|token|key)[A-Za-z_]*)>([^<]+)</\1>",
                            re.IGNORECASE)


def _mask_markup(text: str) -> str:
    """XML bodies (JD Pay and the like): identifiers masked, signatures and secrets dropped."""
    text = _MARKUP_FIELD.sub(lambda m: f"<{m.group(1)}>{mask(m.group(2))}</{m.group(1)}>", text)
    return _MARKUP_SECRET.sub(lambda m: f"<{m.group(1)}>[redacted]</{m.group(1)}>", text)


# -- helpers -------------------------------------------------------------------------------------------------


def _fen(name: str, raw: str | None) -> int | None:
    return Form([(name, raw)]).money(name) if raw and raw.strip() else None


def _day(name: str, raw: str | None) -> datetime | None:
    """The start (UTC) of the day a date filter names."""
    day = query_date(name, raw)
    return None if day is None else datetime.combine(day, datetime.min.time(), UTC)


@contextmanager
def provider_errors() -> Iterator[None]:
    """Provider trouble as the API reports it (503 ``provider_unavailable``: nothing lost, try again)."""
    try:
        yield
    except OutcomeUnknown as exc:
        raise ServiceUnavailable("the provider did not answer definitively; try again in a moment",
                                 code="provider_unavailable", details={"provider": exc.provider}) from None
    except ProviderError as exc:
        raise ServiceUnavailable("the provider refused the request; see the gateway's log",
                                 code="provider_error", details={"provider": exc.provider}) from None


# -- the list ------------------------------------------------------------------------------------------------


@router.get("/orders")
async def orders_list(request: Request, op: ViewerDep, q: str = "", status: str = "", channel: str = "",
                      start: str = "", end: str = "", min: str = "", max: str = "", after: str = "") -> Response:
    rt = runtime(request)
    ctx = await app_context(request, op)
    q, after = q.strip()[:128], after.strip()[:40]
    low, high = _fen("min", min), _fen("max", max)
    since, until = _day("start", start), _day("end", end)
    query = select(Order).where(Order.app_id == ctx.app_id, Order.mode == ctx.mode)
    if q:
        query = query.where(or_(Order.id == q, Order.merchant_order_no == q, Order.out_trade_no == q,
                                Order.provider_trade_id == q,
                                Order.payer_hash == rt.vault.lookup_hash(q, context=order_service.PAYER_CONTEXT)))
    if status:
        query = query.where(Order.status == status)
    if channel:
        query = query.where(Order.channel == channel)
    if since is not None:
        query = query.where(Order.created_at >= since)
    if until is not None:
        query = query.where(Order.created_at < until + timedelta(days=1))
    if low is not None:
        query = query.where(Order.amount >= low)
    if high is not None:
        query = query.where(Order.amount <= high)
    if after:
        cursor = await order_service.get_order(rt, ctx, after)
        query = query.where((Order.created_at < cursor.created_at) |
                            ((Order.created_at == cursor.created_at) & (Order.id < cursor.id)))
    query = query.order_by(Order.created_at.desc(), Order.id.desc()).limit(PAGE + 1)
    async with rt.db.read() as session:
        rows = list((await session.execute(query)).scalars().all())
    params = {"q": q, "status": status, "channel": channel, "start": start, "end": end, "min": min, "max": max}
    next_url = None
    if len(rows) > PAGE:
        rows = rows[:PAGE]
        next_url = "/console/orders?" + urlencode({k: v for k, v in params.items() if v} | {"after": rows[-1].id})
    return await render(request, op, "orders_list.html", orders=rows, filters=params, statuses=STATUSES,
                        channels=sorted(CHANNELS), next_url=next_url)


# -- one order -----------------------------------------------------------------------------------------------


def _clear_values(rt: Runtime, order: Order) -> tuple[str, ...]:
    values = [rt.vault.open(order.payer_sealed, context=order_service.PAYER_CONTEXT)]
    if order.contact_phone_sealed:
        values.append(rt.vault.open(order.contact_phone_sealed, context="phone"))
    return tuple(values)


async def _timeline(rt: Runtime, order: Order) -> tuple[list[dict[str, Any]], list[Refund]]:
    """Everything that happened to the order, oldest first: our state changes, provider notifications (masked),
    refunds, approvals, and the merchant events with their webhook deliveries."""
    clear = _clear_values(rt, order)
    async with rt.db.read() as session:
        changes = (await session.execute(select(OrderEvent).where(OrderEvent.order_id == order.id)
                                         .order_by(OrderEvent.id))).scalars().all()
        inbound = (await session.execute(select(InboundNotification).where(
            InboundNotification.order_id == order.id).order_by(InboundNotification.id))).scalars().all()
        refund_rows = list((await session.execute(select(Refund).where(Refund.order_id == order.id)
                                                  .order_by(Refund.created_at))).scalars().all())
        asks = (await session.execute(select(RefundApproval).where(RefundApproval.order_id == order.id)
                                      .order_by(RefundApproval.requested_at))).scalars().all()
        objects = [order.id, *(r.id for r in refund_rows)]
        events = (await session.execute(select(Event).where(Event.object_id.in_(objects), Event.app_id == order.app_id)
                                        .order_by(Event.created_at))).scalars().all()
        deliveries = (await session.execute(select(WebhookDelivery).where(
            WebhookDelivery.event_id.in_([e.id for e in events])).order_by(WebhookDelivery.id))).scalars().all() \
            if events else []
    items: list[dict[str, Any]] = []
    for c in changes:
        facts = [("orders.source", c.source)] + ([("orders.refund", c.refund_id)] if c.refund_id else [])
        items.append({"at": c.created_at, "kind": "state", "title": c.type, "badge": c.to_status, "facts": facts,
                      "payload": mask_payload(json.dumps(c.data), clear=clear) if c.data else None})
    for n in inbound:
        items.append({"at": n.received_at, "kind": "notification", "title": n.provider, "badge": n.outcome,
                      "facts": [("orders.error", n.error_code)] if n.error_code else [],
                      "headers": mask_payload(json.dumps(n.headers), clear=clear) if n.headers else None,
                      "payload": mask_payload(n.body, clear=clear)})
    for r in refund_rows:
        items.append({"at": r.created_at, "kind": "refund", "title": r.id, "badge": r.status, "amount": r.amount,
                      "facts": [("orders.error", r.failure_code)] if r.failure_code else []})
    for a in asks:
        items.append({"at": a.decided_at or a.requested_at, "kind": "approval", "title": a.id, "badge": a.status,
                      "amount": a.amount, "facts": [("orders.error", a.error)] if a.error else []})
    by_event: dict[str, list[WebhookDelivery]] = {}
    for d in deliveries:
        by_event.setdefault(d.event_id, []).append(d)
    for e in events:
        items.append({"at": e.created_at, "kind": "event", "title": e.type, "badge": None, "facts": [],
                      "event_id": e.id, "deliveries": by_event.get(e.id, [])})
    order_of = {"state": 0, "notification": 1, "refund": 2, "approval": 3, "event": 4}
    items.sort(key=lambda i: (i["at"], order_of[i["kind"]]))
    for item in items:
        item.setdefault("payload", None)
        item.setdefault("headers", None)
        item.setdefault("amount", None)
    return items, refund_rows


@router.get("/orders/{order_id}")
async def order_detail(request: Request, order_id: str, op: ViewerDep) -> Response:
    rt = runtime(request)
    ctx = await app_context(request, op)
    order = await order_service.get_order(rt, ctx, order_id[:40])
    items, refund_rows = await _timeline(rt, order)
    pending, _ = await approval_service.list_approvals(rt, ctx, status="pending", order_id=order.id)
    return await render(request, op, "order_detail.html", order=order, view=order_service.order_view(rt, order),
                        refundable=approval_service.refundable(order), timeline=items, refunds=refund_rows,
                        pending_approvals=pending, can_act=op.can("operator"),
                        threshold=rt.settings.console_refund_approval_amount)


async def _refund_request(request: Request, op: Operator, order_id: str) -> tuple[Form, AppContext, Order, int]:
    form = await read_form(request, op)
    rt = runtime(request)
    ctx = await app_context(request, op)
    order = await order_service.get_order(rt, ctx, order_id[:40])
    amount = approval_service.refundable(order) if form.get("full") == "1" else form.money("amount")
    if amount < 1:
        raise InvalidRequest(f"an order in status {order.status} has nothing to refund", param="order",
                             code="order_not_refundable")
    return form, ctx, order, amount


@router.post("/orders/{order_id}/refund")
async def refund_review(request: Request, order_id: str, op: OperatorDep) -> Response:
    """The confirmation step: the amount and the order, checked, shown before anything is done."""
    form, _ctx, order, amount = await _refund_request(request, op, order_id)
    reason = form.text("reason", required=False, max_length=approval_service.MAX_REASON)
    approval_service.check_amount(order, amount)
    return await render(request, op, "order_refund_confirm.html", order=order, amount=amount, yuan=fen_to_yuan(amount),
                        reason=reason, nonce=secrets.token_hex(16),
                        needs_approval=approval_service.needs_approval(runtime(request), amount))


@router.post("/orders/{order_id}/refund/confirm")
async def refund_confirm(request: Request, order_id: str, op: OperatorDep) -> Response:
    form, ctx, order, amount = await _refund_request(request, op, order_id)
    with provider_errors():
        outcome = await approval_service.refund_from_console(
            runtime(request), ctx, op, order_id=order.id, amount=amount,
            reason=form.text("reason", required=False, max_length=approval_service.MAX_REASON),
            nonce=form.text("nonce", max_length=64))
    if outcome.approval_id:
        return redirect(f"/console/approvals?focus={outcome.approval_id}",
                        notice=translator(op.lang)("orders.approval_requested"))
    return redirect(f"/console/orders/{order.id}", notice="done")


@router.post("/orders/{order_id}/close")
async def close(request: Request, order_id: str, op: OperatorDep) -> Response:
    await read_form(request, op)
    rt = runtime(request)
    ctx = await app_context(request, op)
    with provider_errors():
        order = await order_service.close_order(rt, ctx, order_id[:40])
    await audit.record_now(rt, action="console.order_closed", app_id=ctx.app_id, mode=ctx.mode, target=order.id,
                           actor=op.actor, details={"status": order.status})
    return redirect(f"/console/orders/{order.id}", notice="done")


@router.post("/orders/{order_id}/query")
async def query_now(request: Request, order_id: str, op: OperatorDep) -> Response:
    """Ask the provider about the order (and its unsettled refunds) now and apply the answers, as the worker's
    active queries do; the answer goes to the timeline like any other."""
    await read_form(request, op)
    rt = runtime(request)
    ctx = await app_context(request, op)
    order = await order_service.get_order(rt, ctx, order_id[:40])
    with provider_errors():
        outcome = await order_service.query_and_apply(rt, order, source="query")
        provider = await rt.payment_provider(order.app_id, order.mode, order.provider)
        async with rt.db.read() as session:
            open_refunds = (await session.execute(select(Refund).where(
                Refund.order_id == order.id, Refund.status.in_(("pending", "processing"))))).scalars().all()
        for refund in open_refunds:
            answer = await provider.query_refund(refund.out_refund_no, out_trade_no=order.out_trade_no)
            if answer.ok:
                await refunds.apply_refund_result(rt, refund.id, answer, source="query")
    await audit.record_now(rt, action="console.order_queried", app_id=ctx.app_id, mode=ctx.mode, target=order.id,
                           actor=op.actor, details={"outcome": outcome, "refunds": len(open_refunds)})
    return redirect(f"/console/orders/{order.id}", notice=translator(op.lang)("orders.queried", outcome=outcome))


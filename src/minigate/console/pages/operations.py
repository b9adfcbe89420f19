"""Console pages: operations — webhooks and their deliveries, reconciliation runs, the exceptions queue, SMS,
identity verifications, and the audit trail.

Each page is a thin view over the services the ``/v1`` routes call, scoped to the session's app and mode, with
the same masking: phone numbers, names and ID numbers appear only as stored masked; free-form details (provider
errors, exception data, reconciliation findings, audit details) pass through the log redaction before they are
shown, so a value under a sensitive key or a number that looks like a phone or ID never reaches the page.

Lists are newest first, filtered by GET parameters, and paged with an opaque ``after`` cursor (the last row's
id; the audit trail uses its sequence number, as ``/v1/audit_events`` does). Where a service lists without a
cursor, the page reads the same rows with the same scoping and pages them itself, keyed on (time, id), so a
page boundary never skips or repeats a row.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import date, datetime, timedelta
from typing import Annotated, Any
from urllib.parse import urlencode, urlsplit, urlunsplit

from fastapi import Query, Request
from fastapi.responses import Response
from sqlalchemy import Select, and_, func, or_, select
from sqlalchemy.orm import InstrumentedAttribute

from minigate.console.i18n import register
from minigate.console.web import (
    AdminDep,
    OperatorDep,
    ViewerDep,
    app_context,
    done,
    query_date,
    read_form,
    render,
    router,
    runtime,
)
from minigate.errors import InvalidRequest, NotFound
from minigate.logging import redact, scrub_text
from minigate.services import audit, events, exceptions, identity, sms
from minigate.services.apps import AppContext
from minigate.services.reconcile import BEIJING, EXCEPTION_KINDS, report_from_rows
from minigate.services.runtime import Runtime
from minigate.store.tables import (
    Event,
    IdentityVerification,
    PaymentException,
    ReconciliationItem,
    ReconciliationRun,
    SmsMessage,
    WebhookDelivery,
    WebhookEndpoint,
)

__all__: list[str] = []

#: rows per page
PAGE = 20

DELIVERY_STATUSES = ("pending", "delivered", "dead")
EXCEPTION_STATUSES = ("open", "resolved")
EXCEPTION_TYPES = ("paid_after_close", "amount_mismatch", *sorted(EXCEPTION_KINDS - {"amount_mismatch"}))
SMS_STATUSES = ("queued", "sending", "sent", "delivered", "failed", "unknown")
SMS_KINDS = ("verification", "notice", "marketing")
IDENTITY_STATUSES = ("pending", "passed", "failed", "expired")
IDENTITY_KINDS = ("id_card", "face", "voiceprint")

register({
    "ops.webhooks.title": ("Webhooks", "Webhook"),
    "ops.webhooks.endpoints": ("Endpoints", "接收地址"),
    "ops.webhooks.deliveries": ("Deliveries", "推送记录"),
    "ops.webhooks.url": ("URL", "地址"),
    "ops.webhooks.events": ("Events", "事件"),
    "ops.webhooks.event": ("Event", "事件"),
    "ops.webhooks.event_type": ("Event type", "事件类型"),
    "ops.webhooks.endpoint": ("Endpoint", "接收地址"),
    "ops.webhooks.attempts": ("Attempts", "尝试次数"),
    "ops.webhooks.last_error": ("Last error", "最近错误"),
    "ops.webhooks.next_attempt": ("Next attempt", "下次尝试"),
    "ops.webhooks.delivered_at": ("Delivered", "送达时间"),
    "ops.webhooks.redeliver": ("Redeliver", "重新推送"),
    "ops.webhooks.redeliver_event": ("Redeliver an event", "重新推送事件"),
    "ops.webhooks.redeliver_hint": ("Sends the event again to every enabled endpoint, with a fresh retry window.",
                                    "向所有已启用的接收地址重新推送该事件，并重新开始重试。"),
    "ops.webhooks.no_endpoints": ("No webhook endpoint yet.", "还没有 Webhook 接收地址。"),
    "ops.recon.title": ("Reconciliation", "对账"),
    "ops.recon.bill_date": ("Bill day", "账单日"),
    "ops.recon.provider": ("Provider", "渠道"),
    "ops.recon.bill_rows": ("Bill rows", "账单笔数"),
    "ops.recon.matched": ("Matched", "一致"),
    "ops.recon.repaired": ("Repaired", "已修复"),
    "ops.recon.reported": ("Reported", "待处理"),
    "ops.recon.reason": ("Reason", "原因"),
    "ops.recon.run": ("Reconciliation run", "对账批次"),
    "ops.recon.ran_at": ("Ran at", "执行时间"),
    "ops.recon.mismatches": ("Differences", "差异"),
    "ops.recon.no_mismatch": ("Every bill row matched the ledger.", "账单与本地账目全部一致。"),
    "ops.recon.out_trade_no": ("Trade no.", "商户单号"),
    "ops.recon.order": ("Order", "订单"),
    "ops.recon.category": ("Finding", "差异类型"),
    "ops.recon.action": ("Action", "处理"),
    "ops.recon.local": ("Ledger", "本地金额"),
    "ops.recon.remote": ("Provider", "渠道金额"),
    "ops.recon.detail": ("Detail", "详情"),
    "ops.recon.resolution": ("Resolution", "处理结果"),
    "ops.recon.no_start": ("Runs start every day for the previous day (and on `minigate reconcile`).",
                           "每天自动核对前一日账单（也可运行 `minigate reconcile`）。"),
    "ops.exc.title": ("Exceptions", "异常单"),
    "ops.exc.kind": ("Kind", "类型"),
    "ops.exc.order": ("Order", "订单"),
    "ops.exc.data": ("Data", "数据"),
    "ops.exc.resolution": ("Resolution", "处理结果"),
    "ops.exc.resolved_at": ("Resolved", "处理时间"),
    "ops.exc.refund": ("Refund", "退款"),
    "ops.exc.resolve": ("Resolve", "处理"),
    "ops.exc.action.refund": ("Refund in full", "全额退款"),
    "ops.exc.action.accept": ("Accept (ship)", "接受（发货）"),
    "ops.exc.confirm_refund": ("Refund everything still refundable on this order?",
                               "确认将该订单剩余可退金额全部退款？"),
    "ops.exc.confirm_accept": ("Accept this payment and ship?", "确认接受这笔付款并发货？"),
    "ops.sms.title": ("SMS", "短信"),
    "ops.sms.messages": ("Messages", "短信记录"),
    "ops.sms.phone": ("Phone", "手机号"),
    "ops.sms.kind": ("Kind", "类型"),
    "ops.sms.template": ("Template", "模板"),
    "ops.sms.provider": ("Provider", "服务商"),
    "ops.sms.receipt": ("Delivery receipt", "回执"),
    "ops.sms.error": ("Error", "错误码"),
    "ops.sms.rates": ("Delivery rate by provider", "各服务商送达率"),
    "ops.sms.total": ("Messages", "条数"),
    "ops.sms.delivered": ("Delivered", "已送达"),
    "ops.sms.failed": ("Failed", "失败"),
    "ops.sms.waiting": ("Awaiting receipt", "等待回执"),
    "ops.sms.rate": ("Delivery rate", "送达率"),
    "ops.sms.range_hint": ("Days are Beijing days.", "日期按北京时间计算。"),
    "ops.sms.no_provider": ("(not sent)", "（未发出）"),
    "ops.id.title": ("Identity verifications", "实名核验"),
    "ops.id.kind": ("Kind", "类型"),
    "ops.id.action": ("Action", "动作"),
    "ops.id.provider": ("Provider", "服务商"),
    "ops.id.reason": ("Outcome", "结果"),
    "ops.id.score": ("Score", "分数"),
    "ops.id.person": ("Person (masked)", "身份信息（已脱敏）"),
    "ops.id.completed": ("Completed", "完成时间"),
    "ops.id.purged": ("personal data purged", "个人信息已清除"),
    "ops.audit.title": ("Audit trail", "审计日志"),
    "ops.audit.seq": ("#", "序号"),
    "ops.audit.time": ("Time", "时间"),
    "ops.audit.actor": ("Actor", "操作者"),
    "ops.audit.action": ("Action", "动作"),
    "ops.audit.target": ("Target", "对象"),
    "ops.audit.details": ("Details", "详情"),
    "ops.audit.verify": ("Verify chain", "校验日志链"),
    "ops.audit.verify_hint": ("Walks the whole hash chain (every app) and reports any edited, removed, inserted or "
                              "reordered entry.", "校验整条哈希链（所有应用），报告被修改、删除、插入或重排的记录。"),
    "ops.audit.ok": ("The chain is intact.", "日志链完整。"),
    "ops.audit.broken": ("The chain is broken.", "日志链已被破坏。"),
    "ops.audit.checked": ("Entries checked", "已校验条数"),
    "ops.audit.problems": ("Problems", "问题数"),
    "ops.audit.first_bad": ("First bad entry", "首个异常记录"),
    "ops.audit.head": ("Head", "链头"),
    "ops.any": ("Any", "全部"),
    "ops.col_id": ("ID", "ID"),
    "ops.kind": ("Kind", "类型"),
    "ops.event_id": ("Event ID", "事件 ID"),
})


# -- helpers ---------------------------------------------------------------------------------------------------


def shown(value: Any) -> Any:
    """A free-form value as a page may show it: the log redaction (sensitive keys dropped, phone and ID numbers,
    keys and tokens scrubbed from text)."""
    if isinstance(value, Mapping):
        return dict(redact(None, "", dict(value)))
    if isinstance(value, str):
        return scrub_text(value)
    if isinstance(value, list):
        return [shown(v) for v in value]
    return value


def _safe_url(url: str) -> str:
    """An endpoint URL without any user:password part, scrubbed like a log line."""
    parts = urlsplit(url)
    if parts.username or parts.password:
        netloc = parts.hostname or ""
        if parts.port:
            netloc += f":{parts.port}"
        url = urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))
    return scrub_text(url)


def _choice(name: str, value: str | None, allowed: Iterable[str]) -> str | None:
    """A filter value: empty means no filter; anything not offered is refused (as the API's enums are)."""
    if not value:
        return None
    if value not in tuple(allowed):
        raise InvalidRequest(f"{name} must be one of {', '.join(allowed)}", param=name, code="parameter_invalid")
    return value


def _text(name: str, value: str | None, max_length: int = 64) -> str | None:
    value = (value or "").strip()
    if len(value) > max_length:
        raise InvalidRequest(f"{name} is too long", param=name, code="parameter_invalid")
    return value or None


def _beijing_start(day: date) -> int:
    return int(datetime.combine(day, datetime.min.time(), BEIJING).timestamp())


def _next_url(request: Request, cursor: str | None, path: str | None = None) -> str | None:
    """This page's URL (or ``path``) with the same filters, starting after ``cursor``."""
    if cursor is None:
        return None
    params = [(k, v) for k, v in request.query_params.multi_items() if k not in ("after", "notice") and v]
    return f"{path or request.url.path}?{urlencode([*params, ('after', cursor)])}"


async def _keyset(rt: Runtime, ctx: AppContext, model: Any, query: Select[Any], after: str | None,
                  column: InstrumentedAttribute[Any]) -> tuple[list[Any], str | None]:
    """One page of ``query`` (already scoped to the app and mode), newest ``column`` first, ties by id, starting
    after the row whose id is ``after``; returns the rows and the cursor of the next page (None at the end)."""
    async with rt.db.read() as session:
        if after:
            key: Any = after
            if model.id.type.python_type is int:
                if not after.isdigit():
                    raise InvalidRequest("after is not a cursor of this list", param="after",
                                         code="parameter_invalid")
                key = int(after)
            anchor = await session.get(model, key)
            if anchor is None or anchor.app_id != ctx.app_id:
                raise InvalidRequest("after is not a cursor of this list", param="after", code="parameter_invalid")
            mark = getattr(anchor, column.key)
            query = query.where(or_(column < mark, and_(column == mark, model.id < anchor.id)))
        rows = list((await session.execute(query.order_by(column.desc(), model.id.desc()).limit(PAGE + 1)))
                    .scalars())
    more = len(rows) > PAGE
    rows = rows[:PAGE]
    return rows, (str(rows[-1].id) if more and rows else None)


# -- webhooks --------------------------------------------------------------------------------------------------


@router.get("/webhooks")
async def webhooks_page(request: Request, op: ViewerDep, status: str | None = None, event: str | None = None,
                        after: str | None = None) -> Response:
    rt, ctx = runtime(request), await app_context(request, op)
    status = _choice("status", status, DELIVERY_STATUSES)
    event = _text("event", event)
    endpoints = []
    for row in await events.list_endpoints(rt, ctx):
        view = events.endpoint_view(row)            # never the secret
        view["url"] = _safe_url(view["url"])
        endpoints.append(view)
    query = select(WebhookDelivery).join(WebhookEndpoint, WebhookEndpoint.id == WebhookDelivery.endpoint_id).where(
        WebhookDelivery.app_id == ctx.app_id, WebhookEndpoint.mode == ctx.mode)
    if status:
        query = query.where(WebhookDelivery.status == status)
    if event:
        query = query.where(WebhookDelivery.event_id == event)
    rows, cursor = await _keyset(rt, ctx, WebhookDelivery, query, after, WebhookDelivery.created_at)
    types: dict[str, str] = {}
    if rows:
        async with rt.db.read() as session:
            types = {r.id: r.type for r in (await session.execute(
                select(Event.id, Event.type).where(Event.id.in_({d.event_id for d in rows})))).all()}
    deliveries = []
    for row in rows:
        view = events.delivery_view(row)
        view["event_type"] = types.get(row.event_id, "")
        view["last_error"] = shown(view["last_error"]) if view["last_error"] else None
        deliveries.append(view)
    return await render(request, op, "ops_webhooks.html", endpoints=endpoints, deliveries=deliveries,
                        statuses=DELIVERY_STATUSES, filters={"status": status or "", "event": event or ""},
                        next_url=_next_url(request, cursor))


@router.post("/webhooks/events/{event_id}/redeliver")
async def redeliver(event_id: str, request: Request, op: OperatorDep) -> Response:
    """The same as ``POST /v1/events/{id}/redeliver`` (the service writes the audit entry, actor: this person)."""
    await read_form(request, op)
    return await _redeliver(request, op, event_id)


@router.post("/webhooks/redeliver")
async def redeliver_by_id(request: Request, op: OperatorDep) -> Response:
    """Redeliver an event typed in by its id (also one no delivery row exists for yet)."""
    form = await read_form(request, op)
    return await _redeliver(request, op, form.text("event", max_length=64))


async def _redeliver(request: Request, op: Any, event_id: str) -> Response:
    rt, ctx = runtime(request), await app_context(request, op)
    async with rt.db.read() as session:
        row = await session.get(Event, event_id)
    if row is None or row.app_id != ctx.app_id or row.mode != ctx.mode:
        raise NotFound("no such event", code="resource_missing", details={"id": event_id})
    await events.redeliver(rt, event=row, endpoint_ids=None)
    return done(f"/console/webhooks?{urlencode({'event': event_id})}")


# -- reconciliation --------------------------------------------------------------------------------------------


def _run_row(run: ReconciliationRun) -> dict[str, Any]:
    view = report_from_rows(run, []).as_json(items=False)
    summary = view["summary"]
    counts = summary.get("counts") or {}
    view["bill_rows"] = summary.get("bill_rows")
    view["matched"] = counts.get("matched", 0)
    view["repaired"] = summary.get("repaired", 0)
    view["reported"] = summary.get("reported", 0)
    view["reason"] = shown(view["reason"]) if view["reason"] else None
    return view


@router.get("/reconciliation")
async def reconciliation_page(request: Request, op: ViewerDep, date: str | None = None,
                              provider: str | None = None, after: str | None = None) -> Response:
    rt, ctx = runtime(request), await app_context(request, op)
    day = query_date("date", date)
    provider = _text("provider", provider, 32)
    query = select(ReconciliationRun).where(ReconciliationRun.app_id == ctx.app_id,
                                            ReconciliationRun.mode == ctx.mode)
    if day:
        query = query.where(ReconciliationRun.bill_date == day.isoformat())
    if provider:
        query = query.where(ReconciliationRun.provider == provider)
    rows, cursor = await _keyset(rt, ctx, ReconciliationRun, query, after, ReconciliationRun.bill_date)
    return await render(request, op, "ops_reconciliation.html", runs=[_run_row(r) for r in rows],
                        filters={"date": day.isoformat() if day else "", "provider": provider or ""},
                        next_url=_next_url(request, cursor))


@router.get("/reconciliation/{run_id}")
async def reconciliation_run_page(run_id: str, request: Request, op: ViewerDep) -> Response:
    rt, ctx = runtime(request), await app_context(request, op)
    async with rt.db.read() as session:
        run = await session.get(ReconciliationRun, run_id)
        if run is None or run.app_id != ctx.app_id or run.mode != ctx.mode:
            raise NotFound("no such reconciliation run", code="resource_missing", details={"id": run_id})
        items = list((await session.execute(select(ReconciliationItem).where(ReconciliationItem.run_id == run.id)
                                            .order_by(ReconciliationItem.id))).scalars())
        orders = {i.order_id for i in items if i.category != "matched" and i.order_id}
        queued = {(e.order_id, e.kind): e for e in (await session.execute(select(PaymentException).where(
            PaymentException.app_id == ctx.app_id, PaymentException.mode == ctx.mode,
            PaymentException.order_id.in_(orders)))).scalars()} if orders else {}
    report = report_from_rows(run, items)
    findings = []
    for item in report.items:
        if item.category == "matched":
            continue
        view = item.view()
        view["detail"] = shown(view["detail"])
        exc = queued.get((item.order_id, item.category)) if item.order_id else None
        view["exception"] = exceptions.exception_view(exc) if exc is not None else None
        findings.append(view)
    return await render(request, op, "ops_reconciliation_run.html", run=_run_row(run), findings=findings)


# -- exceptions ------------------------------------------------------------------------------------------------


@router.get("/exceptions")
async def exceptions_page(request: Request, op: ViewerDep, status: str | None = None, kind: str | None = None,
                          after: str | None = None) -> Response:
    rt, ctx = runtime(request), await app_context(request, op)
    status = _choice("status", status, EXCEPTION_STATUSES)
    kind = _choice("kind", kind, EXCEPTION_TYPES)
    query = select(PaymentException).where(PaymentException.app_id == ctx.app_id, PaymentException.mode == ctx.mode)
    if status:
        query = query.where(PaymentException.status == status)
    if kind:
        query = query.where(PaymentException.kind == kind)
    rows, cursor = await _keyset(rt, ctx, PaymentException, query, after, PaymentException.created_at)
    items = []
    for row in rows:
        view = exceptions.exception_view(row)
        view["data"] = shown(view["data"])
        items.append(view)
    return await render(request, op, "ops_exceptions.html", items=items, statuses=EXCEPTION_STATUSES,
                        kinds=EXCEPTION_TYPES, actions=exceptions.ACTIONS,
                        filters={"status": status or "", "kind": kind or ""}, next_url=_next_url(request, cursor))


@router.post("/exceptions/{exception_id}/resolve")
async def resolve_exception(exception_id: str, request: Request, op: OperatorDep) -> Response:
    """The same as ``POST /v1/payment_exceptions/{id}/resolve``: refund everything still refundable, or accept."""
    form = await read_form(request, op)
    ctx = await app_context(request, op)
    await exceptions.resolve_exception(runtime(request), ctx, exception_id, form.text("action", max_length=16))
    return done("/console/exceptions")


# -- SMS -------------------------------------------------------------------------------------------------------


async def _sms_rates(rt: Runtime, ctx: AppContext, *, kind: str | None, template: str | None,
                     created_gte: int | None, created_lt: int | None) -> list[dict[str, Any]]:
    """Per provider, for the filtered range: messages, delivered, failed, awaiting a receipt, and the delivery
    rate (delivered over messages the provider took)."""
    tz = rt.now().tzinfo
    query = select(SmsMessage.provider, SmsMessage.status, func.count()).where(
        SmsMessage.app_id == ctx.app_id, SmsMessage.mode == ctx.mode)
    if kind:
        query = query.where(SmsMessage.kind == kind)
    if template:
        query = query.where(SmsMessage.template == template)
    if created_gte is not None:
        query = query.where(SmsMessage.created_at >= datetime.fromtimestamp(created_gte, tz=tz))
    if created_lt is not None:
        query = query.where(SmsMessage.created_at < datetime.fromtimestamp(created_lt, tz=tz))
    async with rt.db.read() as session:
        counted = (await session.execute(query.group_by(SmsMessage.provider, SmsMessage.status))).all()
    table: dict[str | None, dict[str, Any]] = {}
    for provider, status, count in counted:
        row = table.setdefault(provider, {"provider": provider, "total": 0, "delivered": 0, "failed": 0,
                                          "waiting": 0})
        row["total"] += count
        if status == "delivered":
            row["delivered"] += count
        elif status == "failed":
            row["failed"] += count
        else:
            row["waiting"] += count
    rows = sorted(table.values(), key=lambda r: (r["provider"] is None, r["provider"] or ""))
    for row in rows:
        row["rate"] = None if row["provider"] is None or not row["total"] else \
            f"{100 * row['delivered'] / row['total']:.1f}%"
    return rows


@router.get("/sms")
async def sms_page(request: Request, op: ViewerDep, status: str | None = None, kind: str | None = None,
                   template: str | None = None, start_day: Annotated[str | None, Query(alias="from")] = None,
                   to: str | None = None, after: str | None = None) -> Response:
    rt, ctx = runtime(request), await app_context(request, op)
    start = query_date("from", start_day)
    end = query_date("to", to)
    status = _choice("status", status, SMS_STATUSES)
    kind = _choice("kind", kind, SMS_KINDS)
    template = _text("template", template)
    gte = _beijing_start(start) if start else None
    lt = _beijing_start(end + timedelta(days=1)) if end else None
    rows, more = await sms.list_messages(rt, ctx, limit=PAGE, starting_after=after or None, status=status,
                                         kind=kind, template=template, created_gte=gte, created_lt=lt)
    messages = []
    for row in rows:
        view = sms.message_view(row)               # the phone as the API shows it: masked
        if view["error"]:
            view["error"] = shown(view["error"])
        messages.append(view)
    rates = await _sms_rates(rt, ctx, kind=kind, template=template, created_gte=gte, created_lt=lt)
    cursor = rows[-1].id if more and rows else None
    return await render(request, op, "ops_sms.html", messages=messages, rates=rates, statuses=SMS_STATUSES,
                        kinds=SMS_KINDS, filters={"status": status or "", "kind": kind or "",
                                                 "template": template or "",
                                                 "from": start.isoformat() if start else "",
                                                 "to": end.isoformat() if end else ""},
                        next_url=_next_url(request, cursor))


# -- identity --------------------------------------------------------------------------------------------------


@router.get("/identity")
async def identity_page(request: Request, op: ViewerDep, status: str | None = None, kind: str | None = None,
                        after: str | None = None) -> Response:
    rt, ctx = runtime(request), await app_context(request, op)
    status = _choice("status", status, IDENTITY_STATUSES)
    kind = _choice("kind", kind, IDENTITY_KINDS)
    query = select(IdentityVerification).where(IdentityVerification.app_id == ctx.app_id,
                                               IdentityVerification.mode == ctx.mode)
    if status:
        query = query.where(IdentityVerification.status == status)
    if kind:
        query = query.where(IdentityVerification.kind == kind)
    rows, cursor = await _keyset(rt, ctx, IdentityVerification, query, after, IdentityVerification.created_at)
    items = []
    for row in rows:
        view = identity.verification_view(row)     # the person exactly as the API shows it: masked
        view.pop("client_params", None)
        items.append(view)
    return await render(request, op, "ops_identity.html", items=items, statuses=IDENTITY_STATUSES,
                        kinds=IDENTITY_KINDS, filters={"status": status or "", "kind": kind or ""},
                        next_url=_next_url(request, cursor))


# -- audit trail -----------------------------------------------------------------------------------------------


async def _audit(request: Request, op: Any, action: str | None, after: str | None,
                 verified: audit.VerifyReport | None = None) -> Response:
    rt, ctx = runtime(request), await app_context(request, op)
    action = _text("action", action, 48)
    starting_after: int | None = None
    if after:
        if not after.isdigit() or int(after) < 1:
            raise InvalidRequest("after is not a cursor of this list", param="after", code="parameter_invalid")
        starting_after = int(after)
    rows, more = await audit.list_entries(rt, app_id=ctx.app_id, mode=ctx.mode, limit=PAGE,
                                          starting_after=starting_after, action=action)
    entries = [{"seq": r.seq, "at": r.at, "actor": r.actor, "action": r.action, "target": r.target,
                "details": shown(r.details or {})} for r in rows]
    cursor = str(rows[-1].seq) if more and rows else None
    return await render(request, op, "ops_audit.html", entries=entries, filters={"action": action or ""},
                        verified=verified, next_url=_next_url(request, cursor, "/console/audit"))


@router.get("/audit")
async def audit_page(request: Request, op: ViewerDep, action: str | None = None,
                     after: str | None = None) -> Response:
    return await _audit(request, op, action, after)


@router.post("/audit/verify")
async def audit_verify(request: Request, op: AdminDep) -> Response:
    """Walk the chain now and show the result on the audit page (nothing is changed, so no redirect)."""
    await read_form(request, op)
    report = await audit.verify(runtime(request))
    return await _audit(request, op, None, None, verified=report)

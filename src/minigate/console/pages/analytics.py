"""Analytics pages: active users, top events and pages (overview), retention, funnels and the payment funnel.

Each page calls the same service functions as ``/v1/analytics`` (:mod:`minigate.services.analytics`), which run
their DuckDB queries in a worker thread (``rt.analytics.read``), so a slow query never holds the event loop. The
filters are those of the API — ``from``/``to`` (Beijing days, inclusive, the last 7 by default), ``platform`` and
property filters ``key:value`` (one per line; all must hold) — and are refused with the API's codes.
"""

from __future__ import annotations

from datetime import date
from typing import Any
from urllib.parse import urlencode

from fastapi import Request
from fastapi.responses import Response
from starlette.datastructures import QueryParams

from minigate.console import charts
from minigate.console.i18n import register, translator
from minigate.console.users import Operator
from minigate.console.web import ViewerDep, app_context, query_date, render, router, runtime
from minigate.errors import InvalidRequest
from minigate.services import analytics

__all__: list[str] = []

PLATFORMS = ("wechat", "alipay", "web", "server")
TABS = (("overview", "/console/analytics"), ("retention", "/console/analytics/retention"),
        ("funnels", "/console/analytics/funnels"), ("payments", "/console/analytics/payments"))
#: funnel windows offered (seconds); any value the API accepts may be given in the query
WINDOWS = (1800, 3600, 86400, 7 * 86400)
MAX_STEPS = 6
PAYMENT_STEPS = ("viewed", "ordered", "payment_requested", "client_reported_success", "verified_paid")

register({
    "an.tab.overview": ("Active users and top lists", "活跃用户与排行"),
    "an.tab.retention": ("Retention", "留存"),
    "an.tab.funnels": ("Funnels", "漏斗"),
    "an.tab.payments": ("Payment funnel", "支付漏斗"),
    "an.days_note": ("Days are Beijing days (UTC+8), as in the analytics API.",
                     "按北京时间（UTC+8）分日，与分析 API 一致。"),
    "an.platform": ("Platform", "平台"),
    "an.platform.any": ("Any", "全部"),
    "an.where": ("Property filters (key:value, one per line)", "属性筛选（key:value，每行一个）"),
    "an.interval": ("Interval", "粒度"),
    "an.interval.day": ("Day", "日"),
    "an.interval.week": ("Week", "周"),
    "an.interval.month": ("Month", "月"),
    "an.active_users": ("Active users", "活跃用户"),
    "an.period": ("Period from", "周期开始"),
    "an.top_events": ("Top events", "热门事件"),
    "an.top_pages": ("Top pages", "热门页面"),
    "an.event": ("Event", "事件"),
    "an.page": ("Page", "页面"),
    "an.events": ("Events", "次数"),
    "an.views": ("Views", "浏览次数"),
    "an.persons": ("Persons", "人数"),
    "an.period_kind": ("Cohort by", "同期群"),
    "an.horizon": ("Periods after", "观察周期数"),
    "an.cohort": ("Cohort", "同期群"),
    "an.size": ("Size", "人数"),
    "an.retention_chart": ("Retention (% of the cohort)", "留存率（占同期群百分比）"),
    "an.steps": ("Steps, in order", "步骤（按顺序）"),
    "an.step": ("Step", "步骤"),
    "an.window": ("Window", "时间窗口"),
    "an.window.1800": ("30 minutes", "30 分钟"),
    "an.window.3600": ("1 hour", "1 小时"),
    "an.window.86400": ("1 day", "1 天"),
    "an.window.604800": ("7 days", "7 天"),
    "an.window.seconds": ("{n} seconds", "{n} 秒"),
    "an.pick_steps": ("Pick at least two steps from the events seen in the range.",
                      "请从该时间段出现过的事件中至少选择两个步骤。"),
    "an.conv_prev": ("From previous", "较上一步"),
    "an.conv_all": ("From first", "较第一步"),
    "an.median": ("Median time from previous (s)", "距上一步中位时间（秒）"),
    "an.funnel_chart": ("Funnel", "漏斗"),
    "an.view_events": ("View events (comma-separated; default from the settings)", "浏览事件（逗号分隔；默认取设置）"),
    "an.pf.viewed": ("Viewed", "浏览"),
    "an.pf.ordered": ("Ordered", "下单"),
    "an.pf.payment_requested": ("Payment requested", "发起支付"),
    "an.pf.client_reported_success": ("Client reported success", "客户端报告成功"),
    "an.pf.verified_paid": ("Verified paid", "确认到账"),
    "an.pf.orders": ("Orders", "订单"),
    "an.pf.diagnostics": ("Diagnostics", "诊断"),
    "an.pf.orders.linked": ("Linked to a viewer", "关联到浏览者"),
    "an.pf.orders.counted": ("Counted (known to the ledger, in the window)", "计入（账本存在且在窗口内）"),
    "an.pf.orders.not_in_ledger": ("Not in the ledger", "账本中不存在"),
    "an.pf.orders.owner_link_outside_window": ("Owner link outside the window", "归属关联超出窗口"),
    "an.pf.orders.payment_requested": ("Payment requested", "发起支付"),
    "an.pf.orders.client_reported_success": ("Client reported success", "客户端报告成功"),
    "an.pf.orders.verified_paid": ("Verified paid", "确认到账"),
    "an.pf.success_not_verified": ("Client said success, the provider never confirmed",
                                   "客户端报告成功但渠道未确认"),
    "an.pf.verified_no_success": ("Paid, but the client never reported success", "已到账但客户端未报告成功"),
    "an.pf.paid_amount": ("Amount paid", "到账金额"),
    "an.pf.refunded_amount": ("Amount refunded", "退款金额"),
})


def _dates(q: QueryParams, rt: Any) -> tuple[date, date]:
    return analytics.query_range(rt.now(), query_date("from", q.get("from")), query_date("to", q.get("to")))


def _where(q: QueryParams) -> tuple[dict[str, str], str]:
    """Property filters: repeated ``where`` values, each holding ``key:value`` lines (the API's rule)."""
    lines = [line.strip() for raw in q.getlist("where") for line in raw.splitlines() if line.strip()]
    return analytics.parse_where(lines), "\n".join(lines)


def _platform(q: QueryParams) -> str | None:
    value = q.get("platform") or None
    if value is not None and value not in PLATFORMS:
        raise InvalidRequest(f"platform must be one of {', '.join(PLATFORMS)}", param="platform",
                             code="parameter_invalid")
    return value


def _int(q: QueryParams, name: str, default: int | None, lo: int, hi: int) -> int | None:
    raw = (q.get(name) or "").strip()
    if not raw:
        return default
    if not raw.isdigit() or not lo <= int(raw) <= hi:
        raise InvalidRequest(f"{name} must be a whole number from {lo} to {hi}", param=name, code="parameter_invalid")
    return int(raw)


async def _page(request: Request, op: Operator, tab: str, **context: Any) -> Response:
    q = request.query_params
    common = [(k, v) for k, v in q.multi_items() if k in ("from", "to", "platform", "where")]
    tabs = [(key, href + (f"?{urlencode(common)}" if common else "")) for key, href in TABS]
    return await render(request, op, "analytics.html", tab=tab, tabs=tabs, platforms=PLATFORMS, **context)


async def _filters(request: Request, op: Operator) -> tuple[Any, dict[str, Any], dict[str, Any]]:
    q = request.query_params
    rt = runtime(request)
    start, end = _dates(q, rt)
    where, where_text = _where(q)
    platform = _platform(q)
    ctx = await app_context(request, op)
    scope = {"start": start, "end": end, "platform": platform, "where": where}
    shown = {"start": start, "end": end, "platform": platform or "", "where_text": where_text}
    return ctx, scope, shown


@router.get("/analytics")
async def overview(request: Request, op: ViewerDep) -> Response:
    ctx, scope, shown = await _filters(request, op)
    rt = runtime(request)
    interval = request.query_params.get("interval") or "day"
    if interval not in ("day", "week", "month"):
        raise InvalidRequest("interval must be day, week or month", param="interval", code="parameter_invalid")
    active = await analytics.active_users(rt, ctx, interval=interval, **scope)
    events = await analytics.top(rt, ctx, what="events", limit=20, **scope)
    pages = await analytics.top(rt, ctx, what="pages", limit=20, **scope)
    t = translator(op.lang)
    rows = active["data"]
    option = charts.lines([r["period_start"] for r in rows], {t("an.active_users"): [r["active_users"] for r in rows]},
                          area=True, symbols=True)
    top_events = charts.bars([r["name"] for r in events["data"]][::-1],
                             {t("an.events"): [r["events"] for r in events["data"]][::-1]}, horizontal=True)
    top_pages = charts.bars([r["page"] for r in pages["data"]][::-1],
                            {t("an.views"): [r["views"] for r in pages["data"]][::-1]}, horizontal=True)
    return await _page(request, op, "overview", shown=shown, interval=interval, active=rows, events=events["data"],
                       pages=pages["data"], options={"active_users": option, "top_events": top_events,
                                                     "top_pages": top_pages})


@router.get("/analytics/retention")
async def retention(request: Request, op: ViewerDep) -> Response:
    ctx, scope, shown = await _filters(request, op)
    q = request.query_params
    period = q.get("period") or "day"
    if period not in ("day", "week"):
        raise InvalidRequest("period must be day or week", param="period", code="parameter_invalid")
    horizon = _int(q, "horizon", 7, 1, 60) or 7
    result = await analytics.retention(runtime(request), ctx, period=period, horizon=horizon, **scope)
    cohorts = result["data"]
    table = [{"cohort": c["cohort"], "size": c["size"],
              "cells": [(n, None if n is None or not c["size"] else round(100.0 * n / c["size"], 1))
                        for n in c["retained"]]} for c in cohorts]
    cells = [(k, i, pct) for i, row in enumerate(table) for k, (_, pct) in enumerate(row["cells"])]
    option = charts.heatmap([f"+{k}" for k in range(horizon + 1)], [c["cohort"] for c in cohorts], cells)
    return await _page(request, op, "retention", shown=shown, period=period, horizon=horizon, cohorts=table,
                       options={"retention": option})


@router.get("/analytics/funnels")
async def funnels(request: Request, op: ViewerDep) -> Response:
    ctx, scope, shown = await _filters(request, op)
    rt = runtime(request)
    q = request.query_params
    steps = [s.strip() for s in q.getlist("step") if s.strip()][:10]
    window = _int(q, "window", 86400, 1, 90 * 86400) or 86400
    known = [r["name"] for r in (await analytics.top(rt, ctx, what="events", limit=200, **scope))["data"]]
    rows: list[dict[str, Any]] = []
    options: dict[str, Any] = {}
    if len(steps) >= 2:
        rows = (await analytics.funnel(rt, ctx, steps=steps, window_seconds=window, **scope))["data"]
        options["funnel"] = charts.funnel([(f"{r['step']}. {r['name']}", r["persons"]) for r in rows])
    slots = steps + [""] * max(0, MAX_STEPS - len(steps))
    return await _page(request, op, "funnels", shown=shown, known=sorted(set(known) | set(steps)), slots=slots,
                       window=window, windows=sorted(set(WINDOWS) | {window}), rows=rows, options=options)


@router.get("/analytics/payments")
async def payments(request: Request, op: ViewerDep) -> Response:
    ctx, scope, shown = await _filters(request, op)
    q = request.query_params
    window = _int(q, "window", None, 60, 30 * 86400)
    views_text = (q.get("view_events") or "").strip()
    views = [v.strip() for v in views_text.split(",") if v.strip()] or None
    result = await analytics.payment_funnel(runtime(request), ctx, window_seconds=window, view_events=views, **scope)
    t = translator(op.lang)
    option = charts.funnel([(t(f"an.pf.{s['step']}"), s["persons"]) for s in result["steps"]])
    return await _page(request, op, "payments", shown=shown, window=result["window_seconds"],
                       views_text=", ".join(result["view_events"]), result=result, options={"payment_funnel": option},
                       payment_steps=PAYMENT_STEPS)

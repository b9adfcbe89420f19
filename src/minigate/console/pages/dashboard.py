"""The dashboard: how the range (today and the 13 days before it, by default) went for the app and mode being
looked at — payments by channel, success rate, what stands open, refunds, webhooks, SMS and identity checks.

The numbers come from :mod:`minigate.console.metrics` (aggregates, one read transaction); each chart carries
them as its ECharts option and, beside it, as a table (collapsed) that screen readers, copying and tests read.
"""

from __future__ import annotations

from typing import Any

from fastapi import Request
from fastapi.responses import Response

from minigate.console import charts, metrics
from minigate.console.i18n import register, translator
from minigate.console.web import ViewerDep, app_context, render, router, runtime

__all__: list[str] = []

register({
    "dash.title": ("Dashboard", "概览"),
    "dash.tz": ("Day boundary", "日界时区"),
    "dash.tz.UTC": ("UTC", "UTC"),
    "dash.tz.Asia/Shanghai": ("China (UTC+8)", "北京时间 (UTC+8)"),
    "dash.apply": ("Show", "查询"),
    "dash.range_note": ("{start} to {end}, days cut at midnight {tz}. Open orders and webhook backlog are as of now.",
                        "{start} 至 {end}，按 {tz} 零点分日。待支付、结果未知订单与 Webhook 积压为当前数值。"),
    "dash.kpi.created": ("Orders created", "创建订单"),
    "dash.kpi.paid": ("Orders paid", "支付成功"),
    "dash.kpi.paid_amount": ("Amount paid", "支付金额"),
    "dash.kpi.success_rate": ("Payment success rate", "支付成功率"),
    "dash.kpi.pending": ("Pending payment (now)", "待支付（当前）"),
    "dash.kpi.unknown": ("Unknown outcome (now)", "结果未知（当前）"),
    "dash.kpi.refunds": ("Refunds succeeded", "退款成功"),
    "dash.kpi.refunded_amount": ("Amount refunded", "退款金额"),
    "dash.kpi.webhook_backlog": ("Webhook backlog (now)", "Webhook 积压（当前）"),
    "dash.kpi.webhook_dead": ("Webhooks abandoned", "Webhook 投递失败"),
    "dash.kpi.sms_rate": ("SMS delivery rate", "短信送达率"),
    "dash.kpi.identity_rate": ("Identity pass rate", "实名核验通过率"),
    "dash.chart.volume": ("Paid orders by channel", "各渠道支付笔数"),
    "dash.chart.amount": ("Amount paid by channel (yuan)", "各渠道支付金额（元）"),
    "dash.chart.success": ("Payment success rate (paid ÷ created)", "支付成功率（成功 ÷ 创建）"),
    "dash.chart.refunds": ("Refunds", "退款"),
    "dash.chart.sms": ("SMS delivery rate by provider", "各服务商短信送达率"),
    "dash.chart.identity": ("Identity verifications", "实名核验"),
    "dash.chart.webhooks": ("Webhooks", "Webhook"),
    "dash.numbers": ("Numbers", "数据"),
    "dash.col.day": ("Day", "日期"),
    "dash.col.total": ("Total", "合计"),
    "dash.col.created": ("Created", "创建"),
    "dash.col.paid": ("Paid", "成功"),
    "dash.col.rate": ("Rate", "比率"),
    "dash.col.count": ("Count", "笔数"),
    "dash.col.amount_succeeded": ("Amount (succeeded)", "金额（已成功）"),
    "dash.col.provider": ("Provider", "服务商"),
    "dash.col.kind": ("Kind", "类型"),
    "dash.col.handed": ("Handed to provider", "已提交服务商"),
    "dash.col.what": ("What", "项目"),
    "dash.no_provider": ("(no provider reached)", "（未提交服务商）"),
    "dash.webhooks.backlog": ("Waiting to be delivered", "等待投递"),
    "dash.webhooks.retrying": ("of which failed at least once", "其中至少失败一次"),
    "dash.webhooks.dead": ("Abandoned (created in the range)", "已放弃（范围内创建）"),
    "dash.series.count": ("Refunds", "退款笔数"),
    "dash.series.rate": ("Success rate", "成功率"),
    "dash.series.delivered": ("Delivered", "送达率"),
})

#: SMS statuses shown as columns, in the order a message moves through them
SMS_STATUSES = ("queued", "sending", "sent", "delivered", "failed", "unknown")
IDENTITY_STATUSES = ("passed", "failed", "pending", "expired")
REFUND_STATUSES = ("pending", "processing", "succeeded", "failed")


@router.get("/")
async def dashboard(request: Request, op: ViewerDep) -> Response:
    q = request.query_params
    rng = metrics.day_range(runtime(request).now(), q.get("from"), q.get("to"), q.get("tz"))
    ctx = await app_context(request, op)
    snap = await metrics.snapshot(runtime(request), ctx, rng)
    return await render(request, op, "dashboard.html", rng=rng, snap=snap, timezones=list(metrics.TIMEZONES),
                        charts_=_charts(snap, op.lang), sms_statuses=SMS_STATUSES, identity_statuses=IDENTITY_STATUSES,
                        refund_statuses=REFUND_STATUSES)


def _charts(snap: metrics.Snapshot, lang: str) -> dict[str, dict[str, Any] | None]:
    """Chart options; ``None`` where there is nothing to draw (an empty pie would show equal slices)."""
    t = translator(lang)
    days = [d.isoformat() for d in snap.range.days]
    channels = snap.channels
    sms_rates = snap.sms_rates()
    identity = snap.identity_totals()
    return {
        "volume": charts.bars(days, {c: snap.paid[c] for c in channels}, stacked=True),
        "amount": charts.bars(days, {c: [charts.yuan(a) for a in snap.paid_amount[c]] for c in channels},
                              stacked=True),
        "success": charts.lines(days, {t("dash.series.rate"): snap.success_rate_daily()}, percent=True, symbols=True),
        "refunds": charts.bars(days, {t("dash.series.count"): [c for c, _ in snap.refunds_daily]}),
        "sms": charts.bars(list(sms_rates), {t("dash.series.delivered"): list(sms_rates.values())}, percent=True)
        if sms_rates else None,
        "identity": charts.pie({s: identity[s] for s in IDENTITY_STATUSES if identity.get(s)}) if any(
            identity.values()) else None,
    }

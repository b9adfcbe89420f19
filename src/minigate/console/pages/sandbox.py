"""The sandbox panel (operators, test mode only): the simulators' remote control.

Make the payer of an order pay, inject faults into a simulator and clear them, read the sandbox phone, and get a
mini-program login code. Every call goes through the runtime's HTTP client to the sandbox (in-process or an
external ``minigate sandbox serve``), to the same ``/_sandbox`` control routes a test or a developer uses; the
simulators accept no payer refusal or time-out of their own, so a failing or slow provider is made with faults
(``timeout``, ``http_500``, ... on the next calls). Each action is an audit entry.

After a payment the order is queried at the provider at once, as the worker would, so the page shows it paid
without waiting for the notification (which still arrives and is a duplicate, changing nothing).
"""

from __future__ import annotations

from typing import Any

import httpx
from fastapi import Request
from fastapi.responses import Response
from sqlalchemy import select

from minigate.console.i18n import register
from minigate.console.users import Operator
from minigate.console.web import Form, OperatorDep, app_context, read_form, redirect, render, router, runtime
from minigate.errors import Conflict, InvalidRequest, MinigateError, NotFound, ServiceUnavailable
from minigate.logging import get_logger
from minigate.services import audit
from minigate.services import orders as order_service
from minigate.services.apps import AppContext
from minigate.services.runtime import Runtime
from minigate.simulators._core import CALL_FAULTS, NOTIFY_FAULTS
from minigate.simulators.sandbox import PROVIDERS
from minigate.store.tables import Order

__all__: list[str] = []

log = get_logger("minigate.console")

#: the payment simulators with a ``/_sandbox/pay`` route (the payer confirms)
PAYABLE = ("wechatpay", "alipay", "jdpay")
#: the simulators that hand out mini-program login codes (``/_sandbox/login``)
LOGIN = ("wechat", "alipay")

register({
    "sandbox.title": ("Sandbox", "沙箱"),
    "sandbox.intro": ("The simulators' remote control: everything here happens in the sandbox only.",
                      "沙箱遥控器：这里的操作只作用于沙箱。"),
    "sandbox.pay": ("Make the payer pay", "模拟用户付款"),
    "sandbox.order": ("Order ID, out_trade_no or merchant order number", "订单 ID、out_trade_no 或商户订单号"),
    "sandbox.pay_button": ("Pay", "付款"),
    "sandbox.fail_button": ("Payment fails", "支付失败"),
    "sandbox.expire_button": ("Never paid (expire now)", "超时未付（立即过期）"),
    "sandbox.outcomes_hint": ("Fail and expire: WeChat Pay orders. A failed payment (PAYERROR) cannot be paid any "
                              "more and closes when it expires; an expired one closes now.",
                              "“支付失败”和“超时未付”仅适用于微信支付订单：支付失败（PAYERROR）的订单不能再付款，"
                              "到期后关闭；超时未付的订单立即关闭。"),
    "sandbox.last_order": ("Order", "订单"),
    "sandbox.id": ("ID", "ID"),
    "sandbox.out_trade_no": ("Provider order number", "渠道订单号"),
    "sandbox.faults": ("Faults", "故障注入"),
    "sandbox.simulator": ("Simulator", "模拟器"),
    "sandbox.fault_kind": ("Fault", "故障"),
    "sandbox.path": ("Path prefix (next-call faults; empty: any call)", "路径前缀（仅调用故障；留空为任意调用）"),
    "sandbox.count": ("How many times", "次数"),
    "sandbox.seconds": ("Seconds (timeouts, delays)", "秒数（超时、延迟）"),
    "sandbox.add_fault": ("Inject", "注入"),
    "sandbox.clear_faults": ("Clear all faults", "清除全部故障"),
    "sandbox.show": ("Show", "查看"),
    "sandbox.current_faults": ("Pending faults", "待触发的故障"),
    "sandbox.next_call": ("next call", "下次调用"),
    "sandbox.notify": ("notification", "通知"),
    "sandbox.clock_skew": ("Clock skew (seconds)", "时钟偏移（秒）"),
    "sandbox.no_faults": ("No fault pending.", "没有待触发的故障。"),
    "sandbox.phone": ("Sandbox phone", "沙箱手机"),
    "sandbox.phone_number": ("Phone number", "手机号"),
    "sandbox.read": ("Read messages", "查看短信"),
    "sandbox.sent_at": ("Sent", "发送时间"),
    "sandbox.text": ("Text", "内容"),
    "sandbox.provider": ("Provider", "渠道"),
    "sandbox.no_messages": ("No message for this number.", "该号码没有短信。"),
    "sandbox.login": ("Mini-program login code", "小程序登录 code"),
    "sandbox.login_user": ("Simulated user (any name: the same name gets the same openid)",
                           "模拟用户（任意名称：同名得到相同 openid）"),
    "sandbox.get_code": ("Get a code", "获取 code"),
    "sandbox.code": ("Code (single use, valid 5 minutes)", "code（一次有效，5 分钟内）"),
})


def _refuse_unless_sandbox(rt: Runtime, op: Operator) -> None:
    if op.mode != "test":
        raise Conflict("the sandbox panel works in test mode only: switch the console to test mode",
                       code="sandbox_test_mode_only")
    if rt.sandbox is None:
        raise ServiceUnavailable("this gateway does not run the sandbox", code="sandbox_unavailable")


async def _call(rt: Runtime, method: str, path: str, *, json: Any = None,
                params: dict[str, str] | None = None) -> tuple[int, Any]:
    """One control-route call to the sandbox; its refusal becomes a 409 ``sandbox_refused`` with its message."""
    try:
        r = await rt.provider_client.request(method, f"{rt.sandbox_base_url}{path}", json=json, params=params)
    except httpx.HTTPError as exc:
        log.warning("sandbox call failed", path=path, error=type(exc).__name__)
        raise ServiceUnavailable("the sandbox did not answer", code="sandbox_unavailable") from None
    try:
        body = r.json()
    except ValueError:
        body = None
    if r.status_code >= 400:
        code = body.get("code") if isinstance(body, dict) else None
        message = body.get("message") if isinstance(body, dict) else None
        raise Conflict(f"the sandbox refused: {code or r.status_code} {message or ''}".strip(),
                       code="sandbox_refused", details={"sandbox_code": code})
    return r.status_code, body


async def _find_order(rt: Runtime, ctx: AppContext, ref: str) -> Order:
    if ref.startswith("ord_"):
        return await order_service.get_order(rt, ctx, ref)
    async with rt.db.read() as session:
        row = (await session.execute(select(Order).where(
            Order.app_id == ctx.app_id, Order.mode == ctx.mode,
            (Order.out_trade_no == ref) | (Order.merchant_order_no == ref)).limit(1))).scalar_one_or_none()
    if row is None:
        raise NotFound("no such order in this app and mode", code="resource_missing", param="order")
    return row


async def _sync(rt: Runtime, order: Order) -> None:
    """Ask the provider about the order now (as the worker would) so its payment shows without waiting for the
    notification; a failure here is harmless, the notification and the worker still bring it."""
    try:
        await order_service.query_and_apply(rt, order, source="console")
    except (MinigateError, OSError, httpx.HTTPError) as exc:
        log.info("sandbox: order not synchronised after payment", order_id=order.id, error=type(exc).__name__)


@router.get("/sandbox")
async def sandbox_page(request: Request, op: OperatorDep, order: str | None = None, sim: str | None = None,
                       phone: str | None = None) -> Response:
    rt = runtime(request)
    _refuse_unless_sandbox(rt, op)
    ctx = await app_context(request, op)
    shown = None
    if order:
        found = await _find_order(rt, ctx, order[:64])
        shown = {"id": found.id, "status": found.status, "out_trade_no": found.out_trade_no,
                 "amount": found.amount, "currency": found.currency, "channel": found.channel}
    simulator = sim if sim in PROVIDERS else "wechatpay"
    _, faults = await _call(rt, "GET", f"/{simulator}/_sandbox/faults")
    messages = None
    if phone:
        _, answer = await _call(rt, "GET", "/_sandbox/messages", params={"phone": phone[:32]})
        messages = answer.get("messages", []) if isinstance(answer, dict) else []
    return await render(request, op, "sandbox.html", shown=shown, simulators=PROVIDERS, simulator=simulator,
                        faults=faults, call_faults=CALL_FAULTS, notify_faults=NOTIFY_FAULTS, payable=PAYABLE,
                        logins=LOGIN, phone=phone or "", messages=messages, login_code=None, login_provider=None)


async def _action(request: Request, op: Operator) -> tuple[Form, Runtime, AppContext]:
    """What every panel action starts with: the CSRF-checked form, the sandbox (refused outside test mode), and
    the app and mode being looked at."""
    form = await read_form(request, op)
    rt = runtime(request)
    _refuse_unless_sandbox(rt, op)
    return form, rt, await app_context(request, op)


#: what the payer can do, per simulator: pay; or (WeChat Pay) fail (PAYERROR) or never pay until the order expires
OUTCOMES = {"wechatpay": ("pay", "fail", "expire"), "alipay": ("pay",), "jdpay": ("pay",)}
_OUTCOME_ACTION = {"pay": "sandbox.paid", "fail": "sandbox.payment_failed", "expire": "sandbox.expired"}


@router.post("/sandbox/pay")
async def sandbox_pay(request: Request, op: OperatorDep) -> Response:
    form, rt, ctx = await _action(request, op)
    order = await _find_order(rt, ctx, form.text("order", max_length=64))
    outcome = form.get("outcome", "pay")
    if order.provider not in PAYABLE:
        raise InvalidRequest(f"the {order.provider} simulator has no payer to pay", code="sandbox_not_payable")
    if outcome not in OUTCOMES[order.provider]:
        raise InvalidRequest(f"the {order.provider} simulator's payer can: {', '.join(OUTCOMES[order.provider])}",
                             code="parameter_invalid", param="outcome")
    await _call(rt, "POST", f"/{order.provider}/_sandbox/{outcome}", json={"out_trade_no": order.out_trade_no})
    await audit.record_now(rt, action=_OUTCOME_ACTION[outcome], app_id=ctx.app_id, mode=ctx.mode, target=order.id,
                           details={"provider": order.provider})
    await _sync(rt, order)
    return redirect(f"/console/sandbox?order={order.id}", notice="done")


def _fault_spec(form: Form) -> dict[str, Any]:
    kind = form.text("kind", max_length=40)
    spec: dict[str, Any] = {}
    if kind in CALL_FAULTS:
        spec["next_call"] = kind
        path = form.text("path", required=False, max_length=200)
        if path:
            spec["path"] = path
    elif kind in NOTIFY_FAULTS:
        spec["notify"] = kind
    elif kind == "clock_skew_seconds":
        seconds = form.text("seconds", max_length=20)
        try:
            spec["clock_skew_seconds"] = float(seconds)
        except ValueError:
            raise InvalidRequest("seconds must be a number", code="parameter_invalid", param="seconds") from None
        return spec
    else:
        raise InvalidRequest(f"fault must be one of {', '.join((*CALL_FAULTS, *NOTIFY_FAULTS))} or "
                             "clock_skew_seconds", code="parameter_invalid", param="kind")
    count = form.integer("count", required=False, minimum=1)
    if count is not None:
        spec["count"] = min(count, 1000)
    seconds_raw = form.text("seconds", required=False, max_length=20)
    if seconds_raw:
        try:
            spec["seconds"] = float(seconds_raw)
        except ValueError:
            raise InvalidRequest("seconds must be a number", code="parameter_invalid", param="seconds") from None
    return spec


def _simulator(form: Form) -> str:
    name = form.text("sim", max_length=40)
    if name not in PROVIDERS:
        raise InvalidRequest(f"unknown simulator {name[:40]!r}", code="parameter_invalid", param="sim")
    return name


@router.post("/sandbox/faults")
async def sandbox_fault_add(request: Request, op: OperatorDep) -> Response:
    form, rt, ctx = await _action(request, op)
    name = _simulator(form)
    spec = _fault_spec(form)
    await _call(rt, "POST", f"/{name}/_sandbox/faults", json=spec)
    await audit.record_now(rt, action="sandbox.fault_added", app_id=ctx.app_id, mode=ctx.mode, target=name,
                           details=spec)
    return redirect(f"/console/sandbox?sim={name}", notice="done")


@router.post("/sandbox/faults/clear")
async def sandbox_fault_clear(request: Request, op: OperatorDep) -> Response:
    form, rt, ctx = await _action(request, op)
    name = _simulator(form)
    await _call(rt, "DELETE", f"/{name}/_sandbox/faults")
    await audit.record_now(rt, action="sandbox.faults_cleared", app_id=ctx.app_id, mode=ctx.mode, target=name)
    return redirect(f"/console/sandbox?sim={name}", notice="done")


@router.post("/sandbox/login")
async def sandbox_login(request: Request, op: OperatorDep) -> Response:
    """A login code is shown in the answer (single use, short-lived), not carried in a redirect URL."""
    form, rt, ctx = await _action(request, op)
    provider = form.text("provider", max_length=20)
    if provider not in LOGIN:
        raise InvalidRequest(f"provider must be one of {', '.join(LOGIN)}", code="parameter_invalid",
                             param="provider")
    _, answer = await _call(rt, "POST", f"/{provider}/_sandbox/login", json={"user": form.text("user", max_length=64)})
    await audit.record_now(rt, action="sandbox.login_code", app_id=ctx.app_id, mode=ctx.mode, target=provider)
    _, faults = await _call(rt, "GET", "/wechatpay/_sandbox/faults")
    return await render(request, op, "sandbox.html", shown=None, simulators=PROVIDERS, simulator="wechatpay",
                        faults=faults, call_faults=CALL_FAULTS, notify_faults=NOTIFY_FAULTS, payable=PAYABLE,
                        logins=LOGIN, phone="", messages=None, login_code=str(answer.get("code", "")),
                        login_provider=provider)

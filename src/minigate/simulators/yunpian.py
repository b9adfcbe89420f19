"""Yunpian (云片) SMS v2 simulator, an ASGI app (service-protocols.md §1.3).

Routes (form POSTs, as Yunpian): ``/v2/sms/single_send.json`` (the text must be 【sign】 + an approved template,
rendered), ``tpl_single_send.json`` (``tpl_id`` + ``tpl_value``), ``batch_send.json``, ``tpl_batch_send.json``
(comma-separated numbers, at most 1000), ``get_record.json`` (what ``find`` uses) and ``pull_status.json``.

Yunpian has no request signature, timestamp or nonce: the ``apikey`` is the credential (compared in constant
time), so the clock-skew fault changes nothing here. Check order: form -> missing parameters (code 1) -> apikey
(-1) -> next-call fault -> number format (2) -> 【sign】 (16 malformed, 15 not the account's) -> template (5) ->
per-number limits (8: same text within 30 s; 9: same text more than 3 times in 5 min; 22: 5 an hour; 17: 10 a
day; edit ``desk.windows`` to change them) -> success. Errors are HTTP 400
``{"http_status_code":400,"code":…,"msg":…,"detail":…}``.

Status reports are pushed as the form ``sms_status=<urlencoded JSON array>`` to the message's ``callback_url``
when the send named one, else to the URL registered with ``POST /_sandbox/callbacks``; a push counts as
acknowledged only when the receiver answers HTTP 200 with ``SUCCESS`` or ``0``, otherwise it is retried 3 times
5 minutes apart (Yunpian's documented schedule, scaled by the sandbox time scale). Replies
(``POST /_sandbox/reply``) are pushed as ``sms_reply=<urlencoded JSON>`` with a ``_sign``.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import math
import re
import secrets
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any
from urllib.parse import parse_qsl, urlencode

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from minigate.providers.bases.sms import SIGN_NAME_PATTERN
from minigate.providers.yunpian.codes import MESSAGES
from minigate.providers.yunpian.provider import reply_sign, wire_mobile
from minigate.simulators._core import (
    BEIJING,
    Clock,
    CredentialStore,
    Deliverer,
    Faults,
    Outgoing,
    fault_routes,
    is_local_notify_url,
    json_bytes,
    json_response,
)
from minigate.simulators._sms import (
    PhoneMessage,
    SimTemplate,
    SmsDesk,
    Window,
    beijing_time,
    sandbox_phone,
    template_ids,
)

__all__ = ["RETRY_SCHEDULE", "WINDOWS", "YunpianSimulator", "create_credentials"]

#: Yunpian's status push: "失败重试次数为3次，每次间隔5分钟" (seconds, scaled by the sandbox time scale)
RETRY_SCHEDULE = (300.0, 300.0, 300.0)
#: Per-number limits, checked in this order (Yunpian's defaults; the account can change the 1 h / 24 h ones).
WINDOWS = (
    Window(30, 1, "8", MESSAGES[8], same_content=True),
    Window(300, 3, "9", MESSAGES[9], same_content=True),
    Window(3600, 5, "22", MESSAGES[22]),
    Window(86400, 10, "17", MESSAGES[17]),
)
SIGN_NAME = "小程序沙箱"
FEE_PER_SEGMENT = 0.05
MAX_BATCH = 1000
_MAINLAND = re.compile(r"^1[3-9]\d{9}$")
_SIGN = re.compile(r"^【([^【】]*)】")
_HEADERS = {"Content-Type": "application/x-www-form-urlencoded;charset=utf-8",
            "Accept": "application/json;charset=utf-8"}
_REQUIRED = {
    "single_send": ("apikey", "mobile", "text"),
    "batch_send": ("apikey", "mobile", "text"),
    "tpl_single_send": ("apikey", "mobile", "tpl_id", "tpl_value"),
    "tpl_batch_send": ("apikey", "mobile", "tpl_id", "tpl_value"),
    "get_record": ("apikey", "start_time", "end_time"),
    "pull_status": ("apikey",),
}
#: parameters that may be present but empty (a template without variables has ``tpl_value=""``)
_MAY_BE_EMPTY = frozenset({"tpl_value"})

Form = Mapping[str, str]
#: finds the template a send uses: (form) -> (tpl_id, params)
Matcher = Callable[[Form], tuple[str, dict[str, str]]]


def create_credentials() -> dict[str, Any]:
    """A new simulated account: its apikey, its approved 【sign】 and its templates' ``tpl_id`` values."""
    return {"apikey": secrets.token_hex(16), "sign_name": SIGN_NAME,
            "templates": template_ids(lambda index, _template: str(5_000_001 + index))}


def acknowledged(status: int, body: bytes) -> bool:
    """Yunpian stops re-pushing when the receiver answers the string ``SUCCESS`` or ``0``."""
    return status == 200 and body.strip() in (b"SUCCESS", b"0")


def segments(text: str) -> int:
    """Billed parts: 70 characters in one, 67 each when split."""
    return 1 if len(text) <= 70 else math.ceil(len(text) / 67)


class _Refusal(Exception):
    def __init__(self, code: int, detail: str) -> None:
        super().__init__(detail)
        self.code = code
        self.detail = detail


class YunpianSimulator:
    """One simulated Yunpian account. ``app`` is the ASGI app (mount it anywhere)."""

    name = "yunpian"

    def __init__(self, store: CredentialStore, *, clock: Clock, faults: Faults | None = None,
                 deliverer: Deliverer | None = None) -> None:
        data = store.load_or_create("yunpian", create_credentials)
        self.apikey: str = data["apikey"]
        self.sign_name: str = data["sign_name"]
        self.template_ids: dict[str, str] = dict(data["templates"])
        self.clock = clock
        self.faults = faults or Faults()
        deliverer = deliverer or Deliverer(schedule=RETRY_SCHEDULE, clock=clock)
        deliverer.acknowledged = acknowledged
        self.desk = SmsDesk(self.name, clock=clock, faults=self.faults, deliverer=deliverer,
                                templates=self.template_ids, windows=WINDOWS, build_receipts=self.build_receipts,
                                build_reply=self.build_reply, failure_code="DB:0103")
        self._pulled: set[str] = set()
        handlers = {"single_send": self._single_send, "tpl_single_send": self._tpl_single_send,
                    "batch_send": self._batch_send, "tpl_batch_send": self._tpl_batch_send,
                    "get_record": self._get_record, "pull_status": self._pull_status}
        self.app = Starlette(routes=[
            *(Route(f"/v2/sms/{method}.json", self._endpoint(method, handler), methods=["POST"])
              for method, handler in handlers.items()),
            *fault_routes(self.faults), *self.desk.routes()])

    def credentials(self) -> dict[str, Any]:
        return {"apikey": self.apikey, "sign_name": self.sign_name, "templates": dict(self.template_ids)}

    # ------------------------------------------------------------------ the gateway
    def _endpoint(self, method: str, handler: Callable[[Form], Response]
                  ) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            form, problem = _form(await request.body())
            if problem is not None:
                return _error(2, problem)
            missing = next((p for p in _REQUIRED[method]
                            if p not in form or (not form[p] and p not in _MAY_BE_EMPTY)), None)
            if missing is not None:
                return _error(1, f"参数 {missing} 必须传入")
            if not secrets.compare_digest(form["apikey"].encode(), self.apikey.encode()):
                return _error(-1, "请检查apikey是否正确")
            fault = self.faults.take_call(f"/v2/sms/{method}.json")
            if fault is not None and fault.kind in ("timeout", "http_500", "http_429", "bad_signature"):
                if fault.kind == "timeout":
                    await asyncio.sleep(fault.seconds)
                status = {"timeout": 504, "http_429": 429}.get(fault.kind, 500)
                return Response(b"<html><body>Service Unavailable</body></html>", status, media_type="text/html")
            try:
                answer: Response = handler(form)
            except _Refusal as refusal:
                return _error(refusal.code, refusal.detail)
            if fault is not None and fault.kind == "charged_then_timeout":
                await asyncio.sleep(fault.seconds)
                return Response(b"<html><body>Gateway Timeout</body></html>", 504, media_type="text/html")
            return answer

        return endpoint

    # ------------------------------------------------------------------ checks
    @staticmethod
    def _phone(raw: str) -> str:
        """E.164 for Yunpian's number format (mainland without prefix, international with ``+``)."""
        raw = raw.strip()
        phone = sandbox_phone(raw) if raw.startswith("+") else ("+86" + raw if _MAINLAND.match(raw) else None)
        if phone is None:
            raise _Refusal(2, "参数 mobile 格式不正确，mobile手机号格式不正确")
        return phone

    def _phones(self, raw: str) -> list[str]:
        numbers = [n for n in raw.split(",") if n.strip()]
        if not numbers or len(numbers) > MAX_BATCH:
            raise _Refusal(2, f"参数 mobile 格式不正确，号码个数须在1到{MAX_BATCH}之间")
        return numbers

    def _callback(self, form: Mapping[str, str]) -> str | None:
        url = form.get("callback_url") or None
        if url is not None and not is_local_notify_url(url):
            raise _Refusal(2, "参数 callback_url 格式不正确")
        return url

    def _match_text(self, text: str) -> tuple[str, dict[str, str]]:
        """(tpl_id, params) of the approved template ``text`` renders; 16/15 for the sign, 5 for the template."""
        found = _SIGN.match(text)
        if found is None or not SIGN_NAME_PATTERN.match(found.group(1)):
            raise _Refusal(16, "短信内容须以【签名】开头，签名为2-12个中文、字母或数字")
        if found.group(1) != self.sign_name:
            raise _Refusal(15, "签名与账户已审核的签名不一致")
        body = text[found.end():]
        for tpl_id, template in self.desk.templates.items():
            params = _match(template, body)
            if params is not None:
                return tpl_id, params
        raise _Refusal(5, "短信内容与已审核的模板不匹配")

    def _template(self, form: Mapping[str, str]) -> tuple[str, dict[str, str]]:
        tpl_id = form["tpl_id"].strip()
        if not tpl_id.isdigit():
            raise _Refusal(2, "参数 tpl_id 格式不正确，tpl_id必须为整数")
        template = self.desk.template(tpl_id)
        if template is None:
            raise _Refusal(5, f"未找到id为{tpl_id}的模板")
        try:
            pairs = parse_qsl(form["tpl_value"], keep_blank_values=True, strict_parsing=bool(form["tpl_value"]),
                              errors="strict")
        except (ValueError, UnicodeDecodeError) as exc:
            raise _Refusal(2, "参数 tpl_value 格式不正确") from exc
        params: dict[str, str] = {}
        for name, value in pairs:
            key = name[1:-1] if len(name) > 2 and name.startswith("#") and name.endswith("#") else ""
            if not key or not value or key in params:
                raise _Refusal(2, "参数 tpl_value 格式不正确，变量名须为#name#，变量名和变量值都不能为空")
            params[key] = value
        if set(params) != set(template.variables):
            raise _Refusal(5, "tpl_value 的变量与模板变量不一致")
        return tpl_id, params

    # ------------------------------------------------------------------ sending
    def _send_one(self, raw_mobile: str, tpl_id: str, params: Mapping[str, str], form: Mapping[str, str],
                  callback_url: str | None) -> dict[str, Any]:
        phone = self._phone(raw_mobile)
        text = f"【{self.sign_name}】{self.desk.templates[tpl_id].render(params)}"
        window = self.desk.limit_exceeded(phone, text)
        if window is not None:
            raise _Refusal(int(window.code), window.message)
        count = segments(text)
        sid = 10**10 + secrets.randbelow(9 * 10**11)
        self.desk.accept(phone=phone, sign_name=self.sign_name, template_id=tpl_id, params=params,
                         out_id=form.get("uid") or None, provider_message_id=str(sid),
                         extra={"callback_url": callback_url, "count": count, "extend": form.get("extend", "")})
        return {"code": 0, "msg": MESSAGES[0], "count": count, "fee": round(count * FEE_PER_SEGMENT, 4),
                "unit": "RMB", "mobile": wire_mobile(phone), "sid": sid}

    def _single(self, form: Form, match: Matcher) -> Response:
        if "," in form["mobile"]:
            raise _Refusal(2, "参数 mobile 格式不正确，单条发送只支持一个号码")
        self._phone(form["mobile"])
        callback_url = self._callback(form)
        tpl_id, params = match(form)
        return json_response(self._send_one(form["mobile"], tpl_id, params, form, callback_url))

    def _batch(self, form: Form, match: Matcher) -> Response:
        numbers = self._phones(form["mobile"])
        callback_url = self._callback(form)
        tpl_id, params = match(form)
        items: list[dict[str, Any]] = []
        for raw in numbers:
            try:
                items.append(self._send_one(raw, tpl_id, params, form, callback_url))
            except _Refusal as refusal:          # per-number refusals stay in the list [shape not confirmed]
                items.append({"code": refusal.code, "msg": MESSAGES.get(refusal.code, ""), "count": 0, "fee": 0,
                              "unit": "RMB", "mobile": raw.strip(), "sid": 0, "detail": refusal.detail})
        fee = sum(item["fee"] for item in items)
        return json_response({"total_count": sum(item["count"] for item in items), "total_fee": f"{fee:.4f}",
                              "unit": "RMB", "data": items})

    def _by_text(self, form: Mapping[str, str]) -> tuple[str, dict[str, str]]:
        return self._match_text(form["text"])

    def _single_send(self, form: Mapping[str, str]) -> Response:
        return self._single(form, self._by_text)

    def _tpl_single_send(self, form: Mapping[str, str]) -> Response:
        return self._single(form, self._template)

    def _batch_send(self, form: Mapping[str, str]) -> Response:
        return self._batch(form, self._by_text)

    def _tpl_batch_send(self, form: Mapping[str, str]) -> Response:
        return self._batch(form, self._template)

    # ------------------------------------------------------------------ queries
    def _get_record(self, form: Mapping[str, str]) -> Response:
        try:
            start, end = (dt.datetime.strptime(form[k], "%Y-%m-%d %H:%M:%S").replace(tzinfo=BEIJING).timestamp()
                          for k in ("start_time", "end_time"))
        except ValueError as exc:
            raise _Refusal(2, "参数 start_time/end_time 格式不正确，格式为yyyy-MM-dd HH:mm:ss") from exc
        page_num = _int(form.get("page_num") or "1", "page_num", 1, 10**6)
        page_size = _int(form.get("page_size") or "20", "page_size", 1, 100)
        kind = form.get("type", "")
        if kind not in ("", "all", "global"):
            raise _Refusal(2, "参数 type 格式不正确，可选值为all或global")
        phone = self._phone(form["mobile"]) if form.get("mobile") else None
        found = [m for m in reversed(self.desk.messages)
                 if start <= int(m.sent_at) <= end and (phone is None or m.phone == phone)
                 and (kind == "all" or (kind == "global") != m.phone.startswith("+86"))]
        page = found[(page_num - 1) * page_size: page_num * page_size]
        return json_response([self._record(m) for m in page])

    def _record(self, m: PhoneMessage) -> dict[str, Any]:
        return {"sid": int(m.provider_message_id), "mobile": wire_mobile(m.phone), "send_time": beijing_time(m.sent_at),
                "text": m.text, "send_status": "SUCCESS",
                "report_status": {"delivered": "SUCCESS", "failed": "FAIL"}.get(m.status, "UNKNOWN"),
                "fee": m.extra.get("count", 1),
                "user_receive_time": beijing_time(m.reported_at) if m.reported_at is not None else None,
                "error_msg": m.error_code or "", "uid": m.out_id}

    def _pull_status(self, form: Mapping[str, str]) -> Response:
        """Reports not pulled before, oldest first (Yunpian keeps them 72 h; pulled ones are gone)."""
        page_size = _int(form.get("page_size") or "20", "page_size", 1, 100)
        ready = [m for m in self.desk.messages if m.status != "accepted" and m.provider_message_id not in self._pulled]
        batch = ready[:page_size]
        self._pulled.update(m.provider_message_id for m in batch)
        return json_response([_status_item(m) for m in batch])

    # ------------------------------------------------------------------ pushes
    def build_receipts(self, messages: Sequence[PhoneMessage], variant: str) -> Outgoing:
        items = [_status_item(m) for m in messages]
        if variant == "tamper":
            for item in items:
                item["sid"] = 10**10 + secrets.randbelow(9 * 10**11)
        body = urlencode({"sms_status": json_bytes(items).decode()})
        return Outgoing(body=body.encode("ascii"), headers=dict(_HEADERS))

    def build_reply(self, phone: str, text: str, epoch: float, variant: str) -> Outgoing:
        data: dict[str, Any] = {"id": secrets.token_hex(16), "mobile": wire_mobile(phone), "text": text,
                                "reply_time": beijing_time(epoch), "extend": "", "base_extend": "8888"}
        data["_sign"] = reply_sign(data, self.apikey)
        if variant == "tamper":
            data["text"] = text + "（篡改）"
        body = urlencode({"sms_reply": json.dumps(data, ensure_ascii=False, separators=(",", ":"))})
        return Outgoing(body=body.encode("ascii"), headers=dict(_HEADERS))


# --------------------------------------------------------------------------- helpers

def _error(code: int, detail: str) -> Response:
    return json_response({"http_status_code": 400, "code": code, "msg": MESSAGES.get(code, ""), "detail": detail},
                         400)


def _form(body: bytes) -> tuple[dict[str, str], str | None]:
    try:
        pairs = parse_qsl(body.decode("utf-8"), keep_blank_values=True, errors="strict", max_num_fields=50)
    except (UnicodeDecodeError, ValueError):
        return {}, "请求体须为UTF-8编码的表单"
    form = dict(pairs)
    if len(form) != len(pairs):
        return form, "参数重复"
    return form, None


def _int(raw: str, name: str, low: int, high: int) -> int:
    if not raw.isdigit() or not low <= int(raw) <= high:
        raise _Refusal(2, f"参数 {name} 格式不正确，须为{low}到{high}之间的整数")
    return int(raw)


def _match(template: SimTemplate, body: str) -> dict[str, str] | None:
    """The variables that make ``template`` render to ``body``, or None."""
    pattern, seen = "", set()
    for part in re.split(r"(\{\w+\})", template.text):
        name = part[1:-1] if part.startswith("{") and part.endswith("}") else None
        if name is None:
            pattern += re.escape(part)
        elif name in seen:
            pattern += f"(?P={name})"
        else:
            seen.add(name)
            pattern += f"(?P<{name}>.+?)"
    found = re.fullmatch(pattern, body, flags=re.DOTALL)
    return dict(found.groupdict()) if found else None


def _status_item(m: PhoneMessage) -> dict[str, Any]:
    delivered = m.status == "delivered"
    return {"error_detail": "接收成功" if delivered else "用户状态异常", "sid": int(m.provider_message_id),
            "uid": m.out_id, "user_receive_time": beijing_time(m.reported_at or m.sent_at),
            "error_msg": "" if delivered else (m.error_code or "DB:0103"), "mobile": wire_mobile(m.phone),
            "report_status": "SUCCESS" if delivered else "FAIL"}

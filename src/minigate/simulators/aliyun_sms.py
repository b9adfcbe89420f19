"""Alibaba Cloud SMS simulator (dysmsapi 2017-05-25, service-protocols.md §1.1), an ASGI app.

``/`` takes ``GET`` and ``POST`` with parameters in the query and/or a form body, signed either way Alibaba
accepts: **V3** (``Authorization: ACS3-HMAC-SHA256 …`` plus ``x-acs-*`` headers; the headers named in
``SignedHeaders`` are read exactly as they arrived, so a ``host`` with or without a port verifies as signed) or
**RPC V2** (``Signature`` parameter, HMAC-SHA1 over query + form). Both use
:mod:`minigate.providers.aliyun_sms.signing`, the code the client uses.

Checks, in the gateway's order (§4): parse -> missing parameters (``Missing<Name>`` / ``MissingParameter``,
400) -> unknown ``Action`` (``InvalidAction.NotFound``, 404) -> unknown AccessKeyId
(``InvalidAccessKeyId.NotFound``, 404) -> time stamp ±15 min (``InvalidTimeStamp.Expired``, 400) -> nonce replay
(``SignatureNonceUsed``, 400) -> signature (``SignatureDoesNotMatch``, 400) -> business rules, answered HTTP 200
with ``Code != "OK"``: sign name (``isv.SMS_SIGNATURE_ILLEGAL``), template (``isv.SMS_TEMPLATE_ILLEGAL``),
template parameters (``isv.INVALID_JSON_PARAM``, ``isv.TEMPLATE_MISSING_PARAMETERS``), numbers
(``isv.MOBILE_NUMBER_ILLEGAL``, ``isv.MOBILE_COUNT_OVER_LIMIT``), per-number flow control
(``isv.BUSINESS_LIMIT_CONTROL``: 1/min, 5/h, 10/day). Gateway errors carry
``{"RequestId","HostId","Code","Message","Recommend"}``.

Operations: ``SendSms``, ``SendBatchSms``, ``QuerySendDetails``. Answers are JSON with ``Format=JSON`` (any case)
or on V3 calls; RPC calls without ``Format`` (or ``Format=XML``) get XML, as Alibaba's default.

Receipts: the ``SmsReport`` HTTP batch push (a JSON array) to the URL registered with
``POST /_sandbox/callbacks``; acknowledged by HTTP 200 with ``{"code":0,…}``. Replies: the ``SmsUp`` push.
Faults: ``path`` in a ``next_call`` fault matches a prefix of the Action (``"SendSms"``).

Guesses ([L] in the reference): the message texts of the flow-control windows, the codes for a template
parameter that the template does not have (``isv.INVALID_PARAMETERS``) and for QuerySendDetails argument
errors, the ``Missing<Name>`` wording for common parameters, and the ±15 min window for RPC calls.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hmac
import json
import re
import secrets
import string
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl
from xml.sax.saxutils import escape

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from minigate.providers.aliyun_sms import signing
from minigate.providers.aliyun_sms.provider import wire_phone
from minigate.simulators._core import (
    BEIJING,
    Clock,
    CredentialStore,
    Deliverer,
    Faults,
    Outgoing,
    fault_routes,
    json_bytes,
)
from minigate.simulators._sms import (
    RECEIPT_RETRY_SCHEDULE,
    PhoneMessage,
    SimTemplate,
    SmsDesk,
    Window,
    beijing_time,
    sandbox_phone,
    template_ids,
)

__all__ = ["HOST_ID", "RETRY_SCHEDULE", "WINDOWS", "AliyunSmsSimulator", "acknowledged", "create_credentials"]

RETRY_SCHEDULE = RECEIPT_RETRY_SCHEDULE
HOST_ID = "dysmsapi.aliyuncs.com"
API_VERSION = "2017-05-25"
#: per-number flow control of a verification-code account (§1.1.1; message texts [L])
WINDOWS = (Window(60, 1, "isv.BUSINESS_LIMIT_CONTROL", "触发分钟级流控Permits:1"),
           Window(3600, 5, "isv.BUSINESS_LIMIT_CONTROL", "触发小时级流控Permits:5"),
           Window(86400, 10, "isv.BUSINESS_LIMIT_CONTROL", "触发天级流控Permits:10"))
MAX_PHONE_NUMBERS = 1000          # SendSms PhoneNumbers
MAX_BATCH = 100                   # SendBatchSms [M]
REQUIRED: Mapping[str, tuple[str, ...]] = {
    "SendSms": ("PhoneNumbers", "SignName", "TemplateCode"),
    "SendBatchSms": ("PhoneNumberJson", "SignNameJson", "TemplateCode"),
    "QuerySendDetails": ("PhoneNumber", "SendDate", "PageSize", "CurrentPage"),
}
_RPC_COMMON = ("AccessKeyId", "Signature", "SignatureMethod", "SignatureNonce", "Timestamp", "Version")
_V3_HEADERS = ("x-acs-action", "x-acs-version", "x-acs-date", "x-acs-signature-nonce")
_NOT_MATCHED = "Specified signature is not matched with our calculation. server string to sign is:"
_ALNUM = string.ascii_letters + string.digits


def create_credentials() -> dict[str, Any]:
    """A fresh AccessKey pair, the account's approved sign name and ``SMS_…`` codes for the default templates."""
    base = 100_000_000 + secrets.randbelow(800_000_000)
    return {"access_key_id": "LTAI5t" + "".join(secrets.choice(_ALNUM) for _ in range(18)),
            "access_key_secret": "".join(secrets.choice(_ALNUM) for _ in range(30)),
            "sign_name": "迷你网关",
            "templates": template_ids(lambda i, _t: f"SMS_{base + 7919 * i}")}


def acknowledged(status: int, body: bytes) -> bool:
    """A report push is acknowledged by HTTP 200 with ``{"code":0,…}`` (§1.1.4)."""
    if status != 200:
        return False
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return False
    return isinstance(data, dict) and data.get("code") in (0, "0")


class _Refusal(Exception):
    """An answer other than success: gateway (status 4xx/5xx) or business (status 200)."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(code)
        self.status = status
        self.code = code
        self.message = message


def _business(code: str, message: str) -> _Refusal:
    return _Refusal(200, code, message)


def _missing(name: str) -> _Refusal:
    return _Refusal(400, f"Missing{name}", f"{name} is mandatory for this action.")


def _missing_header(name: str) -> _Refusal:
    return _Refusal(400, "MissingParameter",
                    f'The input parameter "{name}" that is mandatory for processing this request is not supplied.')


@dataclass
class _Call:
    action: str
    style: str                   # v3 | rpc
    params: dict[str, str]       # query + form
    access_key_id: str
    timestamp: str
    nonce: str


def _xml(root: str, obj: Mapping[str, Any]) -> bytes:
    def render(key: str, value: Any) -> str:
        if isinstance(value, list):
            return "".join(render(key, item) for item in value)
        if isinstance(value, Mapping):
            inner = "".join(render(k, v) for k, v in value.items())
        elif isinstance(value, bool):
            inner = "true" if value else "false"
        else:
            inner = escape("" if value is None else str(value))
        return f"<{key}>{inner}</{key}>"

    return ("<?xml version='1.0' encoding='UTF-8'?>" + render(root, obj)).encode()


class AliyunSmsSimulator:
    """One simulated Alibaba Cloud account with SMS enabled. ``app`` is the ASGI app (mount it anywhere)."""

    name = "aliyun-sms"

    def __init__(self, store: CredentialStore, *, clock: Clock, faults: Faults | None = None,
                 deliverer: Deliverer | None = None) -> None:
        data = store.load_or_create(self.name, create_credentials)
        self.access_key_id: str = data["access_key_id"]
        self.access_key_secret: str = data["access_key_secret"]
        self.sign_name: str = data["sign_name"]
        self.templates: dict[str, str] = dict(data["templates"])
        self.clock = clock
        self.faults = faults or Faults()
        self.timestamp_tolerance_seconds = 900.0
        self.desk = SmsDesk(self.name, clock=clock, faults=self.faults, deliverer=deliverer,
                            templates=self.templates, windows=WINDOWS, build_receipts=self.build_receipts,
                            build_reply=self.build_reply)
        self.desk.deliverer.acknowledged = acknowledged
        self.app = Starlette(routes=[Route("/", self._api, methods=["GET", "POST"]),
                                     *fault_routes(self.faults), *self.desk.routes()])

    def credentials(self) -> dict[str, Any]:
        return {"access_key_id": self.access_key_id, "access_key_secret": self.access_key_secret,
                "sign_name": self.sign_name, "templates": dict(self.templates)}

    def now(self) -> float:
        """The simulator's clock: the shared clock plus the ``clock_skew_seconds`` fault."""
        return self.clock.now() + self.faults.clock_skew_seconds

    # ------------------------------------------------------------------ wire
    @staticmethod
    def _json_wanted(request: Request, params: Mapping[str, str]) -> bool:
        fmt = params.get("Format", "").upper()
        if fmt in ("JSON", "XML"):
            return fmt == "JSON"
        if request.headers.get("authorization", "").startswith("ACS3-"):
            return True
        return "Signature" not in params and "json" in request.headers.get("accept", "").lower()

    def _render(self, root: str, obj: dict[str, Any], status: int, as_json: bool) -> Response:
        if as_json:
            return Response(json_bytes(obj), status, media_type="application/json;charset=utf-8")
        return Response(_xml(root, obj), status, media_type="text/xml;charset=utf-8")

    def _refusal(self, refusal: _Refusal, action: str, as_json: bool) -> Response:
        request_id = str(uuid.uuid4()).upper()
        if refusal.status == 200:
            return self._render(f"{action}Response", {"RequestId": request_id, "Code": refusal.code,
                                                      "Message": refusal.message}, 200, as_json)
        body = {"RequestId": request_id, "HostId": HOST_ID, "Code": refusal.code, "Message": refusal.message,
                "Recommend": f"https://error-center.aliyun.com/status/search?Keyword={refusal.code}&source=PopGw"}
        return self._render("Error", body, refusal.status, as_json)

    async def _api(self, request: Request) -> Response:
        raw_query = request.scope.get("query_string", b"").decode("utf-8", "replace")
        query = dict(parse_qsl(raw_query, keep_blank_values=True))
        body = await request.body()
        form: dict[str, str] = {}
        if body and request.headers.get("content-type", "").startswith("application/x-www-form-urlencoded"):
            form = dict(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))
        params = {**query, **form}
        as_json = self._json_wanted(request, params)
        action = params.get("Action") or request.headers.get("x-acs-action", "")
        try:
            call = self._authenticate(request, query, params, body)
            action = call.action
            fault = self.faults.take_call(action)
            if fault is not None and fault.kind in ("timeout", "http_500", "http_429", "bad_signature"):
                if fault.kind == "timeout":
                    await asyncio.sleep(fault.seconds)
                    raise _Refusal(504, "ServiceTimeout", "The request has timed out.")
                if fault.kind == "http_429":
                    raise _Refusal(429, "Throttling.User", "Request was denied due to user flow control.")
                raise _Refusal(500, "InternalError", "The request processing has failed due to some unknown "
                                                     "error, exception or failure.")
            handler = {"SendSms": self.send_sms, "SendBatchSms": self.send_batch_sms,
                       "QuerySendDetails": self.query_send_details}[action]
            result = handler(call.params)
            if fault is not None and fault.kind == "charged_then_timeout":
                await asyncio.sleep(fault.seconds)
                raise _Refusal(504, "ServiceTimeout", "The request has timed out.")
        except _Refusal as refusal:
            return self._refusal(refusal, action or "Error", as_json)
        result = {"RequestId": str(uuid.uuid4()).upper(), **result}
        return self._render(f"{action}Response", result, 200, as_json)

    # ------------------------------------------------------------------ gateway checks
    def _authenticate(self, request: Request, query: dict[str, str], params: dict[str, str],
                      body: bytes) -> _Call:
        authorization = request.headers.get("authorization")
        if authorization is not None:
            call, auth = self._v3_call(request, params, authorization)
        else:
            call, auth = self._rpc_call(params), None
        for name in REQUIRED[call.action]:
            if not params.get(name):
                raise _missing(name)
        if call.access_key_id != self.access_key_id:
            raise _Refusal(404, "InvalidAccessKeyId.NotFound", "Specified access key is not found.")
        try:
            sent = signing.parse_timestamp(call.timestamp)
        except ValueError:
            raise _Refusal(400, "InvalidTimeStamp.Format",
                           "Specified time stamp or date value is not well formatted.") from None
        now = self.now()
        if abs(now - sent) > self.timestamp_tolerance_seconds:
            raise _Refusal(400, "InvalidTimeStamp.Expired", "Specified time stamp or date value is expired.")
        if not self.desk.nonces.use(f"{call.access_key_id}:{call.nonce}", now):
            raise _Refusal(400, "SignatureNonceUsed", "Specified signature nonce was used already.")
        if auth is None:
            to_sign = signing.rpc_string_to_sign(request.method, params)
            expected = signing.rpc_signature(request.method, params, self.access_key_secret)
            given = params["Signature"]
        else:
            pairs = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in request.headers.raw]
            canonical, _ = signing.acs3_canonical_request(
                method=request.method, query=query, headers=pairs, signed_headers=auth.signed_headers,
                payload_hash=signing.sha256_hex(body))
            to_sign = signing.acs3_string_to_sign(canonical)
            expected = signing.acs3_signature(self.access_key_secret, to_sign)
            given = auth.signature
        if not hmac.compare_digest(expected.encode(), given.encode()):
            raise _Refusal(400, "SignatureDoesNotMatch", _NOT_MATCHED + to_sign)
        return call

    def _action(self, action: str, version: str) -> None:
        if version != API_VERSION:
            raise _Refusal(400, "InvalidVersion", "Specified parameter Version is not valid.")
        if action not in REQUIRED:
            raise _Refusal(404, "InvalidAction.NotFound", "Specified api is not found, please check your url and "
                                                          "method.")

    def _rpc_call(self, params: dict[str, str]) -> _Call:
        if not params.get("Action"):
            raise _missing("Action")
        for name in _RPC_COMMON:
            if not params.get(name):
                raise _missing(name)
        if params["SignatureMethod"] != "HMAC-SHA1" or params.get("SignatureVersion", "1.0") != "1.0":
            raise _Refusal(400, "InvalidSignatureMethod", "Specified signature method is not supported.")
        self._action(params["Action"], params["Version"])
        return _Call(params["Action"], "rpc", params, params["AccessKeyId"], params["Timestamp"],
                     params["SignatureNonce"])

    def _v3_call(self, request: Request, params: dict[str, str],
                 authorization: str) -> tuple[_Call, signing.Acs3Authorization]:
        auth = signing.parse_acs3_authorization(authorization)
        if auth is None or auth.algorithm != signing.ACS3_ALGORITHM:
            raise _Refusal(400, "IncompleteSignature", "The request signature does not conform to Aliyun standards.")
        headers = request.headers
        for name in _V3_HEADERS:
            if not headers.get(name):
                raise _missing_header(name)
        # host and every x-acs-* header sent must be signed, or a replay could change them unnoticed
        signed = set(auth.signed_headers)
        must = {"host"} | {k.lower() for k in headers if k.lower().startswith("x-acs-")}
        if not must <= signed:
            raise _Refusal(400, "IncompleteSignature", "The request signature does not conform to Aliyun standards.")
        self._action(headers["x-acs-action"], headers["x-acs-version"])
        return _Call(headers["x-acs-action"], "v3", params, auth.access_key_id, headers["x-acs-date"],
                     headers["x-acs-signature-nonce"]), auth

    # ------------------------------------------------------------------ business rules
    def _template(self, code: str) -> SimTemplate:
        template = self.desk.template(code)
        if template is None:
            raise _business("isv.SMS_TEMPLATE_ILLEGAL", "该账号下找不到对应模板")
        return template

    def _sign(self, sign_name: Any) -> str:
        if sign_name != self.sign_name:
            raise _business("isv.SMS_SIGNATURE_ILLEGAL", "该账号下找不到对应签名")
        return str(sign_name)

    @staticmethod
    def _values(template: SimTemplate, raw: Any) -> dict[str, str]:
        """TemplateParam: a JSON object of strings with exactly the template's variables."""
        if raw is None or raw == "":
            values: Any = {}
        elif isinstance(raw, str):
            try:
                values = json.loads(raw)
            except ValueError:
                raise _business("isv.INVALID_JSON_PARAM", "JSON参数不合法，只接受字符串值") from None
        else:
            values = raw
        if not isinstance(values, dict) or not all(isinstance(v, str) for v in values.values()):
            raise _business("isv.INVALID_JSON_PARAM", "JSON参数不合法，只接受字符串值")
        if any(name not in values for name in template.variables):
            raise _business("isv.TEMPLATE_MISSING_PARAMETERS", "模版缺少变量")
        if set(values) - set(template.variables):
            raise _business("isv.INVALID_PARAMETERS", "参数异常")      # [L] code for a variable the template lacks
        return {str(k): v for k, v in values.items()}

    @staticmethod
    def _phone(raw: Any) -> str:
        """E.164 of a number as Alibaba takes it: mainland with or without +86/0086/86, others ``<cc><number>``
        (or ``+<cc><number>``)."""
        text = raw.strip() if isinstance(raw, str) else ""
        phone = sandbox_phone(text) if text else None
        if phone is None and text.isdigit() and not text.startswith(("0", "1")):   # 1… is read as mainland
            phone = sandbox_phone("+" + text)
        if phone is None:
            raise _business("isv.MOBILE_NUMBER_ILLEGAL", "非法手机号")
        return phone

    def _limit(self, phones: Sequence[str], texts: Sequence[str]) -> None:
        for phone, text in zip(phones, texts, strict=True):
            window = self.desk.limit_exceeded(phone, text)
            if window is not None:
                raise _business(window.code, window.message)

    @staticmethod
    def _biz_id() -> str:
        return f"{secrets.randbelow(9 * 10 ** 17) + 10 ** 17}^0"

    def send_sms(self, params: Mapping[str, str]) -> dict[str, Any]:
        sign = self._sign(params["SignName"])
        template = self._template(params["TemplateCode"])
        values = self._values(template, params.get("TemplateParam"))
        numbers = params["PhoneNumbers"].split(",")
        if len(numbers) > MAX_PHONE_NUMBERS:
            raise _business("isv.MOBILE_COUNT_OVER_LIMIT", "手机号码数量超过限制")
        phones = [self._phone(n) for n in numbers]
        text = f"【{sign}】{template.render(values)}"
        self._limit(phones, [text] * len(phones))
        biz_id = self._biz_id()
        for phone in phones:
            self.desk.accept(phone=phone, sign_name=sign, template_id=params["TemplateCode"], params=values,
                             out_id=params.get("OutId") or None, provider_message_id=biz_id)
        return {"Code": "OK", "Message": "OK", "BizId": biz_id}

    def send_batch_sms(self, params: Mapping[str, str]) -> dict[str, Any]:
        def array(name: str) -> list[Any] | None:
            raw = params.get(name)
            if not raw:
                return None
            try:
                value = json.loads(raw)
            except ValueError:
                raise _business("isv.INVALID_JSON_PARAM", "JSON参数不合法，只接受字符串值") from None
            if not isinstance(value, list):
                raise _business("isv.INVALID_JSON_PARAM", "JSON参数不合法，只接受字符串值")
            return value

        numbers, signs, values_list = array("PhoneNumberJson"), array("SignNameJson"), array("TemplateParamJson")
        assert numbers is not None and signs is not None       # required parameters, checked before
        if len(numbers) > MAX_BATCH:
            raise _business("isv.MOBILE_COUNT_OVER_LIMIT", "手机号码数量超过限制")
        if len(signs) != len(numbers) or (values_list is not None and len(values_list) != len(numbers)):
            raise _business("isv.INVALID_PARAMETERS", "参数异常")
        sign_names = [self._sign(s) for s in signs]
        template = self._template(params["TemplateCode"])
        values = [self._values(template, v) for v in (values_list or [None] * len(numbers))]
        phones = [self._phone(n) for n in numbers]
        texts = [f"【{s}】{template.render(v)}" for s, v in zip(sign_names, values, strict=True)]
        self._limit(phones, texts)
        biz_id = self._biz_id()
        for phone, sign, value in zip(phones, sign_names, values, strict=True):
            self.desk.accept(phone=phone, sign_name=sign, template_id=params["TemplateCode"], params=value,
                             out_id=params.get("OutId") or None, provider_message_id=biz_id)
        return {"Code": "OK", "Message": "OK", "BizId": biz_id}

    def query_send_details(self, params: Mapping[str, str]) -> dict[str, Any]:
        phone = self._phone(params["PhoneNumber"])
        send_date = params["SendDate"]
        try:
            day = dt.datetime.strptime(send_date, "%Y%m%d").date() if re.fullmatch(r"\d{8}", send_date) else None
        except ValueError:
            day = None
        today = dt.datetime.fromtimestamp(self.now(), BEIJING).date()
        if day is None or not today - dt.timedelta(days=30) <= day <= today:
            raise _business("isv.INVALID_PARAMETERS", "参数异常")     # [L] code: SendDate not within 30 days
        try:
            page_size, page = int(params["PageSize"]), int(params["CurrentPage"])
        except ValueError:
            raise _business("isv.INVALID_PARAMETERS", "参数异常") from None
        if not 1 <= page_size <= 50 or page < 1:
            raise _business("isv.INVALID_PARAMETERS", "参数异常")
        biz_id = params.get("BizId")
        records = [m for m in self.desk.inbox(phone)
                   if dt.datetime.fromtimestamp(m.sent_at, BEIJING).date() == day
                   and (not biz_id or m.provider_message_id == biz_id)]
        shown = records[(page - 1) * page_size: page * page_size]
        return {"Code": "OK", "Message": "OK", "TotalCount": str(len(records)),
                "SmsSendDetailDTOs": {"SmsSendDetailDTO": [self._detail(m) for m in shown]}}

    @staticmethod
    def _detail(m: PhoneMessage) -> dict[str, Any]:
        status = {"delivered": 3, "failed": 2}.get(m.status, 1)
        return {"PhoneNum": wire_phone(m.phone), "SendStatus": status,
                "ErrCode": "DELIVERED" if status == 3 else (m.error_code or "") if status == 2 else "",
                "TemplateCode": m.template_id, "Content": m.text, "SendDate": beijing_time(m.sent_at),
                "ReceiveDate": beijing_time(m.reported_at) if m.reported_at is not None else "",
                "OutId": m.out_id or ""}

    # ------------------------------------------------------------------ pushes
    def build_receipts(self, messages: Sequence[PhoneMessage], variant: str) -> Outgoing:
        """The SmsReport HTTP push: a JSON array, one entry per (message, number)."""
        items = []
        for m in messages:
            delivered = m.status == "delivered"
            items.append({
                "phone_number": wire_phone(m.phone), "send_time": beijing_time(m.sent_at),
                "report_time": beijing_time(m.reported_at if m.reported_at is not None else self.clock.now()),
                "success": delivered, "err_code": "DELIVERED" if delivered else (m.error_code or "UNDELIV"),
                "err_msg": "用户接收成功" if delivered else "用户接收失败", "sms_size": "1",
                "biz_id": self._biz_id() if variant == "tamper" else m.provider_message_id,
                "out_id": m.out_id or ""})
        return Outgoing(json_bytes(items), {"Content-Type": "application/json;charset=utf-8"})

    def build_reply(self, phone: str, text: str, epoch: float, variant: str) -> Outgoing:
        """The SmsUp push ([L] field names): ``[{phone_number, send_time, content, sign_name, dest_code,
        sequence_id}]``."""
        item = {"phone_number": wire_phone(phone), "send_time": beijing_time(epoch), "content": text,
                "sign_name": self.sign_name, "dest_code": "", "sequence_id": secrets.randbelow(10 ** 12)}
        return Outgoing(json_bytes([item]), {"Content-Type": "application/json;charset=utf-8"})

"""Tencent Cloud API 3.0 simulator: a TC3 gateway plus the SMS actions (service-protocols.md §1.2, §4).

The **gateway** (:class:`Tc3Gateway`) is service-agnostic. It answers ``POST /`` (JSON) and ``GET /`` (query
string, ``A.0=..`` flattened arrays) and checks, in this order: the body parses -> ``X-TC-Action`` names an
action (``MissingParameter`` / ``InvalidAction``) -> ``X-TC-Version`` (``NoSuchVersion``) -> ``X-TC-Region``
where the action needs one (``UnsupportedRegion``) -> ``X-TC-Timestamp`` and ``Authorization`` present and
well-formed (``AuthFailure.InvalidAuthorization``) -> the SecretId is known (``AuthFailure.SecretIdNotFound``)
-> the timestamp is within ±5 minutes (``AuthFailure.SignatureExpire``) -> no ``X-TC-Token`` (the sandbox has no
temporary credentials: ``AuthFailure.TokenFailure``) -> the credential scope names the UTC date and the
action's service, ``SignedHeaders`` includes ``content-type`` and ``host``, and the TC3 signature over exactly
those headers verifies (``AuthFailure.SignatureFailure``) -> no unknown parameters (``UnknownParameter``) ->
the next-call fault -> the action's handler. Every answer is HTTP 200 ``{"Response": {..., "RequestId"}}``,
refusals with ``Response.Error``. Actions are rows of a table keyed by (service, action): FaceID adds its own
with :meth:`Tc3Gateway.register`. The service of a request is the first label of a ``*.tencentcloudapi.com``
Host, otherwise the service that registered the action (the sandbox is reached as ``127.0.0.1`` or
``sandbox``).

**SMS** (service ``sms``, version 2021-01-11): ``SendSms``, ``PullSmsSendStatus`` (each receipt pulled once),
``PullSmsSendStatusByPhoneNumber``. Per-number limits 1/30 s, 5/h, 10/24 h (sliding windows) answer as
per-number ``SendStatusSet`` entries; receipts are pushed as Tencent's JSON array to the URL registered with
``POST /_sandbox/callbacks`` and acknowledged by ``{"result":0}``; replies (``POST /_sandbox/reply``) as Tencent's
reply object.

**FaceID** (service ``faceid``, version 2018-03-01): ``IdCardVerification``, ``DetectAuth``,
``GetDetectInfoEnhanced``, ``GetDetectInfo`` and the identity control routes ``/_sandbox/persons``,
``/_sandbox/next``, ``/_sandbox/faceid/complete``; see :mod:`minigate.simulators._tencent_faceid`.

Not confirmed, and so attributes to change: the region list (``regions``), the exact ``Message`` texts, the
shape of a failed per-number entry (``SerialNo`` empty, ``Fee`` 0), ``NoSuchVersion``/``UnsupportedRegion``/
``UnknownParameter``/``AuthFailure.InvalidAuthorization`` for the corresponding header faults, and that
``PullSmsSendStatusByPhoneNumber`` filters on the send time.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import math
import re
import secrets
import string
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from minigate.phones import InvalidPhone, parse_phone
from minigate.providers.tencentcloud import signing
from minigate.simulators._core import Clock, CredentialStore, Deliverer, Faults, Outgoing, fault_routes, json_bytes
from minigate.simulators._core import json_response as _json_response
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

__all__ = ["RETRY_SCHEDULE", "ApiAction", "Call", "HttpFault", "TcApiError", "Tc3Gateway", "TencentCloudSimulator",
           "create_credentials"]

RETRY_SCHEDULE = RECEIPT_RETRY_SCHEDULE
CREDENTIAL_FIELDS = ("secret_id", "secret_key", "sms_sdk_app_id", "sign_name", "templates", "faceid_rule_id")
SMS_VERSION = "2021-01-11"
#: X-TC-Region values SMS accepts [M]
SMS_REGIONS = ("ap-guangzhou", "ap-beijing", "ap-nanjing")
TIMESTAMP_TOLERANCE_SECONDS = 300
MAX_NUMBERS = 200
SESSION_CONTEXT_MAX_BYTES = 512
PULL_MAX_AGE_SECONDS = 7 * 24 * 3600
_SIGNATURE_FAILURE = "The provided credentials could not be validated. Please check your signature is correct."
_URL = re.compile(r"(https?://|www\.)", re.I)
_VERIFICATION_VALUE = re.compile(r"^\d{0,6}$")
_ISO = {"86": "CN", "852": "HK", "853": "MO", "886": "TW", "1": "US", "44": "GB", "65": "SG", "81": "JP", "82": "KR"}


def _alnum(n: int) -> str:
    return "".join(secrets.choice(string.ascii_letters + string.digits) for _ in range(n))


def create_credentials() -> dict[str, Any]:
    base = 1_000_000 + secrets.randbelow(8_000_000)
    return {"secret_id": "AKID" + _alnum(32), "secret_key": _alnum(32),
            "sms_sdk_app_id": "1400" + "".join(secrets.choice(string.digits) for _ in range(6)),
            "sign_name": "迷你网关", "templates": template_ids(lambda i, _t: str(base + i)),
            "faceid_rule_id": str(1 + secrets.randbelow(99))}


# --------------------------------------------------------------------------- the gateway

class TcApiError(Exception):
    """A refusal: answered as ``Response.Error`` (HTTP 200)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(code)
        self.code = code
        self.message = message


class HttpFault(Exception):
    """A handler's way to answer like a failing front end: a bare HTTP ``status`` (no API 3.0 body)."""

    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status


@dataclass(frozen=True, slots=True)
class Call:
    """A verified request, as a handler sees it."""

    service: str
    action: str
    version: str
    region: str | None
    params: dict[str, Any]
    secret_id: str
    timestamp: int
    request_id: str
    language: str | None
    #: the simulator's root URL as this request reached it (``http://host[/prefix]/``)
    base_url: str = ""


Handler = Callable[[Call], Awaitable[dict[str, Any]]]


@dataclass(frozen=True, slots=True)
class ApiAction:
    """One row of the action table."""

    service: str
    name: str
    version: str
    handler: Handler
    #: X-TC-Region values accepted; None: the action takes no region
    regions: tuple[str, ...] | None = None
    #: parameter names the action knows (others: UnknownParameter); None: not checked
    params: frozenset[str] | None = None


def missing(name: str) -> TcApiError:
    return TcApiError("MissingParameter", f"The request is missing a required parameter `{name}`.")


def invalid(name: str, what: str) -> TcApiError:
    return TcApiError("InvalidParameter", f"The parameter `{name}` {what}.")


def _unflatten(pairs: Sequence[tuple[str, str]]) -> dict[str, Any]:
    """GET parameters ``A.0=x&A.1=y&B.C=z`` -> ``{"A": ["x", "y"], "B": {"C": "z"}}``."""
    root: dict[str, Any] = {}
    for key, value in pairs:
        node = root
        parts = key.split(".")
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise invalid(key, "is given twice")
            node = child
        node[parts[-1]] = value

    def lists(value: Any) -> Any:
        if not isinstance(value, dict):
            return value
        converted = {k: lists(v) for k, v in value.items()}
        if converted and all(k.isdigit() for k in converted):
            return [converted[k] for k in sorted(converted, key=int)]
        return converted

    result: dict[str, Any] = lists(root) if root else {}
    return result


class Tc3Gateway:
    """The API 3.0 front door: verification as in the module docstring, then dispatch on (service, action)."""

    def __init__(self, *, keys: Callable[[str], str | None], now: Callable[[], float], faults: Faults) -> None:
        self.keys = keys
        self.now = now
        self.faults = faults
        self.tolerance_seconds = TIMESTAMP_TOLERANCE_SECONDS
        self.actions: dict[tuple[str, str], ApiAction] = {}

    def register(self, action: ApiAction) -> None:
        self.actions[(action.service, action.name)] = action

    def routes(self) -> list[Route]:
        return [Route("/", self.endpoint, methods=["GET", "POST"])]

    @staticmethod
    def answer(request_id: str, body: Mapping[str, Any]) -> Response:
        return _json_response({"Response": {**body, "RequestId": request_id}})

    def error(self, request_id: str, exc: TcApiError) -> Response:
        return self.answer(request_id, {"Error": {"Code": exc.code, "Message": exc.message}})

    async def endpoint(self, request: Request) -> Response:
        request_id = str(uuid.uuid4())
        try:
            call, action = await self._verify(request, request_id)
        except TcApiError as exc:
            return self.error(request_id, exc)
        fault = self.faults.take_call(action.name)
        if fault is not None and fault.kind in ("timeout", "http_500", "http_429", "bad_signature"):
            if fault.kind == "timeout":
                await asyncio.sleep(fault.seconds)
            status = {"timeout": 504, "http_429": 429}.get(fault.kind, 500)
            return Response(b"<html><body>upstream error</body></html>", status, media_type="text/html")
        try:
            result = await action.handler(call)
        except TcApiError as exc:
            result = {"Error": {"Code": exc.code, "Message": exc.message}}
        except HttpFault as exc:
            return Response(b"<html><body>Gateway Timeout</body></html>", exc.status, media_type="text/html")
        if fault is not None and fault.kind == "charged_then_timeout":
            await asyncio.sleep(fault.seconds)
            return Response(b"<html><body>Gateway Timeout</body></html>", 504, media_type="text/html")
        return self.answer(request_id, result)

    def _action(self, name: str, host: str, scope_service: str | None) -> ApiAction:
        label, _, rest = host.partition(".")
        if rest.split(":")[0] == "tencentcloudapi.com":
            found = self.actions.get((label, name))
        else:
            candidates = [a for (_, n), a in self.actions.items() if n == name]
            found = next((a for a in candidates if a.service == scope_service), candidates[0] if candidates else None)
        if found is None:
            raise TcApiError("InvalidAction", f"The requested action `{name}` does not exist.")
        return found

    async def _verify(self, request: Request, request_id: str) -> tuple[Call, ApiAction]:
        headers = request.headers
        body = await request.body()
        query = request.url.query
        if request.method == "GET":
            params = _unflatten(parse_qsl(query, keep_blank_values=True))
            payload = b""
        else:
            query = ""
            content_type = headers.get("content-type", "").split(";")[0].strip().lower()
            if content_type != "application/json":
                raise invalid("Content-Type", "must be application/json for POST")
            try:
                parsed = json.loads(body or b"{}")
            except (UnicodeDecodeError, ValueError) as exc:
                raise invalid("body", "is not valid JSON") from exc
            if not isinstance(parsed, dict):
                raise invalid("body", "must be a JSON object")
            params, payload = parsed, body
        name = headers.get("x-tc-action", "")
        if not name:
            raise missing("Action")
        parsed_auth = signing.parse_authorization(headers.get("authorization", ""))
        action = self._action(name, headers.get("host", ""), parsed_auth.service if parsed_auth else None)
        version = headers.get("x-tc-version", "")
        if not version:
            raise missing("Version")
        if version != action.version:
            raise TcApiError("NoSuchVersion", f"The API version `{version}` does not exist.")
        region = headers.get("x-tc-region") or None
        if action.regions is not None:
            if region is None:
                raise missing("Region")
            if region not in action.regions:
                raise TcApiError("UnsupportedRegion", f"The action does not support the region `{region}`.")
        stamp = headers.get("x-tc-timestamp", "")
        if not stamp:
            raise missing("Timestamp")
        if not stamp.isdigit():
            raise invalid("Timestamp", "must be a unix time in seconds")
        timestamp = int(stamp)
        if not headers.get("authorization", "").strip():
            raise missing("Authorization")
        if parsed_auth is None:
            raise TcApiError("AuthFailure.InvalidAuthorization",
                             "Authorization header is not a valid TC3-HMAC-SHA256 authorization.")
        secret_key = self.keys(parsed_auth.secret_id)
        if secret_key is None:
            raise TcApiError("AuthFailure.SecretIdNotFound",
                             "The SecretId is not found, please ensure that your SecretId is correct.")
        now = self.now()
        if abs(now - timestamp) > self.tolerance_seconds:
            raise TcApiError("AuthFailure.SignatureExpire",
                             f"Signature expired. Timestamp: {timestamp}, current server time: {int(now)}.")
        if headers.get("x-tc-token"):
            raise TcApiError("AuthFailure.TokenFailure", "Token verification failed: the key is not temporary.")
        if (parsed_auth.date != signing.credential_date(timestamp) or parsed_auth.service != action.service
                or parsed_auth.terminator != "tc3_request"
                or not {"content-type", "host"} <= set(parsed_auth.signed_headers)):
            raise TcApiError("AuthFailure.SignatureFailure", _SIGNATURE_FAILURE)
        try:
            expected = signing.tc3_sign(
                secret_id=parsed_auth.secret_id, secret_key=secret_key, service=action.service, timestamp=timestamp,
                headers=headers, payload=payload, method=request.method, query=query,
                signed_headers=parsed_auth.signed_headers)
        except KeyError as exc:
            raise TcApiError("AuthFailure.SignatureFailure", _SIGNATURE_FAILURE) from exc
        if not hmac.compare_digest(expected.signature, parsed_auth.signature):
            raise TcApiError("AuthFailure.SignatureFailure", _SIGNATURE_FAILURE)
        if action.params is not None:
            unknown = sorted(set(params) - action.params)
            if unknown:
                raise TcApiError("UnknownParameter", f"The parameter `{unknown[0]}` is not recognized.")
        return Call(action.service, action.name, version, region, params, parsed_auth.secret_id, timestamp,
                    request_id, headers.get("x-tc-language"), _root_url(request)), action


def _root_url(request: Request) -> str:
    """``http://host[:port]/<mount prefix>/`` -- where this simulator's own routes are, as the caller reached it."""
    return str(request.url.replace(path=request.scope.get("root_path", "").rstrip("/") + "/", query=""))


# --------------------------------------------------------------------------- parameter helpers

def _str(params: Mapping[str, Any], name: str, *, required: bool = False) -> str | None:
    value = params.get(name)
    if value is None:
        if required:
            raise missing(name)
        return None
    if not isinstance(value, str):
        raise invalid(name, "must be a string")
    return value


def _int(params: Mapping[str, Any], name: str, *, required: bool = False) -> int | None:
    value = params.get(name)
    if value is None:
        if required:
            raise missing(name)
        return None
    if isinstance(value, str) and value.isdigit():      # GET requests carry every value as text
        return int(value)
    if not isinstance(value, int) or isinstance(value, bool):
        raise invalid(name, "must be an integer")
    return value


def _strings(params: Mapping[str, Any], name: str, *, required: bool = False) -> list[str] | None:
    value = params.get(name)
    if value is None:
        if required:
            raise missing(name)
        return None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise invalid(name, "must be an array of strings")
    return value


def _classify(raw: str) -> tuple[bool, str | None, str, str]:
    """(domestic, E.164 or None, country code, national number) of one PhoneNumberSet entry."""
    text = raw.strip()
    international = ((text.startswith("+") and not text.startswith("+86"))
                     or (text.startswith("00") and not text.startswith("0086")))
    try:
        phone = parse_phone(text, allowed_country_codes=None)
    except InvalidPhone:
        return not international, None, "", ""
    return phone.is_mainland, phone.e164, phone.country_code, phone.national


def segments(text: str) -> int:
    """Billed parts: up to 70 characters (sign included) is one, longer texts go in parts of 67."""
    return 1 if len(text) <= 70 else math.ceil(len(text) / 67)


def _split(e164: str) -> tuple[str, str]:
    phone = parse_phone(e164, allowed_country_codes=None)
    return phone.country_code, phone.national


# --------------------------------------------------------------------------- the simulator

class TencentCloudSimulator:
    """One simulated Tencent Cloud account: one API key pair, one SMS application and one FaceID rule. ``app`` is
    the ASGI app.

    Control routes: ``/_sandbox/messages``, ``/_sandbox/callbacks``, ``/_sandbox/phones``, ``/_sandbox/reply``
    (the SMS desk), ``/_sandbox/persons``, ``/_sandbox/next``, ``/_sandbox/faceid/complete``,
    ``/_sandbox/faceid/sessions/{token}`` (FaceID) and ``/_sandbox/faults`` (``path`` in a ``next_call`` fault
    matches a prefix of the action name, e.g. ``"SendSms"``).
    """

    name = "tencentcloud"

    def __init__(self, store: CredentialStore, *, clock: Clock, faults: Faults | None = None,
                 deliverer: Deliverer | None = None) -> None:
        from minigate.simulators._tencent_faceid import FaceIdDesk, rule_id_for

        self.account: dict[str, Any] = store.load_or_create(self.name, create_credentials)
        self.account.setdefault("faceid_rule_id", rule_id_for(str(self.account["secret_id"])))
        self.clock = clock
        self.faults = faults or Faults()
        deliverer = deliverer or Deliverer(schedule=RETRY_SCHEDULE, clock=clock)
        deliverer.acknowledged = acknowledged
        self.regions = SMS_REGIONS
        self.desk = SmsDesk(self.name, clock=clock, faults=self.faults, deliverer=deliverer,
                            templates=self.account["templates"], windows=[
                                Window(30, 1, "LimitExceeded.PhoneNumberThirtySecondLimit",
                                       "单个手机号30秒内下发短信条数超过设定的上限，可自行到控制台调整短信频率限制策略。"),
                                Window(3600, 5, "LimitExceeded.PhoneNumberOneHourLimit",
                                       "单个手机号1小时内下发短信条数超过设定的上限，可自行到控制台调整短信频率限制策略。"),
                                Window(86400, 10, "LimitExceeded.PhoneNumberDailyLimit",
                                       "单个手机号日下发短信条数超过设定的上限，可自行到控制台调整短信频率限制策略。")],
                            build_receipts=self.build_receipts, build_reply=self.build_reply)
        self._pulled: set[str] = set()
        self.gateway = Tc3Gateway(keys=self._secret_key, now=self.now, faults=self.faults)
        self._register_sms()
        self.faceid = FaceIdDesk(account=self.account, now=self.now)
        self.faceid.register(self.gateway)
        self.app = Starlette(routes=[*fault_routes(self.faults), *self.desk.routes(), *self.faceid.routes(),
                                     *self.gateway.routes()])

    def now(self) -> float:
        """The simulator's clock: the shared clock plus the ``clock_skew_seconds`` fault."""
        return self.clock.now() + self.faults.clock_skew_seconds

    def credentials(self) -> dict[str, Any]:
        return {k: self.account[k] for k in CREDENTIAL_FIELDS}

    def _secret_key(self, secret_id: str) -> str | None:
        return str(self.account["secret_key"]) if secret_id == self.account["secret_id"] else None

    def _register_sms(self) -> None:
        def sms(name: str, handler: Handler, params: Sequence[str]) -> ApiAction:
            return ApiAction("sms", name, SMS_VERSION, handler, regions=self.regions, params=frozenset(params))

        for action in (
            sms("SendSms", self.send_sms, ("PhoneNumberSet", "SmsSdkAppId", "TemplateId", "SignName",
                                           "TemplateParamSet", "ExtendCode", "SessionContext", "SenderId")),
            sms("PullSmsSendStatus", self.pull_status, ("Limit", "SmsSdkAppId")),
            sms("PullSmsSendStatusByPhoneNumber", self.pull_status_by_phone,
                ("BeginTime", "Offset", "Limit", "PhoneNumber", "SmsSdkAppId", "EndTime")),
        ):
            self.gateway.register(action)

    # ------------------------------------------------------------------ SMS actions
    def _check_app(self, params: Mapping[str, Any]) -> None:
        if _str(params, "SmsSdkAppId", required=True) != self.account["sms_sdk_app_id"]:
            raise TcApiError("UnauthorizedOperation.SmsSdkAppIdVerifyFail", "SmsSdkAppId 校验失败。")

    async def send_sms(self, call: Call) -> dict[str, Any]:
        p = call.params
        numbers = _strings(p, "PhoneNumberSet", required=True) or []
        template_id = _str(p, "TemplateId", required=True) or ""
        sign = _str(p, "SignName")
        values = _strings(p, "TemplateParamSet") or []
        session = _str(p, "SessionContext") or ""
        _str(p, "ExtendCode")
        _str(p, "SenderId")
        if not numbers:
            raise TcApiError("MissingParameter.EmptyPhoneNumberSet",
                             "传入的号码列表为空，请确认您的参数中是否传入号码。")
        if len(numbers) > MAX_NUMBERS:
            raise TcApiError("LimitExceeded.PhoneNumberCountLimit", "调用接口单次提交的手机号个数超过200个。")
        if len(session.encode()) > SESSION_CONTEXT_MAX_BYTES:
            raise invalid("SessionContext", f"must be shorter than {SESSION_CONTEXT_MAX_BYTES} bytes")
        self._check_app(p)
        kinds = [_classify(n) for n in numbers]
        domestic = any(k[0] for k in kinds)
        if domestic and not all(k[0] for k in kinds):
            raise TcApiError("UnsupportedOperation.ContainDomesticAndInternationalPhoneNumber",
                             "群发请求里既有国内手机号也有国际手机号。")
        if domestic and sign != self.account["sign_name"]:
            raise TcApiError("FailedOperation.SignatureIncorrectOrUnapproved",
                             "签名未审批或格式错误。（1）可登录 短信控制台，核查签名是否已审批并且审批通过。")
        template = self.desk.template(template_id)
        if template is None:
            raise TcApiError("FailedOperation.TemplateIncorrectOrUnapproved",
                             "模板未审批或请求的内容与审核通过的模板内容不匹配。")
        if not domestic:
            raise TcApiError("UnsupportedOperation.ChineseMainlandTemplateToGlobalPhone",
                             "国内短信模板不支持发送国际/港澳台手机号。")
        self._check_values(template, values)
        assert sign is not None
        named = dict(zip(template.variables, values, strict=True))
        text = f"【{sign}】{template.render(named)}"
        statuses = []
        for raw, (_, e164, cc, _national) in zip(numbers, kinds, strict=True):
            if e164 is None:
                statuses.append(self._entry(raw, session, "InvalidParameterValue.IncorrectPhoneNumber",
                                            "手机号格式错误。", iso="DEF"))
                continue
            window = self.desk.limit_exceeded(e164, text)
            if window is not None:
                statuses.append(self._entry(e164, session, window.code, window.message, iso=_ISO.get(cc, "DEF")))
                continue
            fee = segments(text)
            message = self.desk.accept(phone=e164, sign_name=sign, template_id=template_id, params=named,
                                       out_id=session or None, provider_message_id=self._serial(),
                                       extra={"fee": fee})
            statuses.append({"SerialNo": message.provider_message_id, "PhoneNumber": e164, "Fee": fee,
                             "SessionContext": session, "Code": "Ok", "Message": "send success",
                             "IsoCode": _ISO.get(cc, "DEF")})
        return {"SendStatusSet": statuses}

    @staticmethod
    def _check_values(template: SimTemplate, values: list[str]) -> None:
        if len(values) != len(template.variables):
            raise TcApiError("FailedOperation.TemplateParamSetNotMatchApprovedTemplate",
                             "请求内容与审核通过的模板内容不匹配。请检查请求中模板参数的个数是否与申请的模板一致。")
        if any(_URL.search(v) for v in values):
            raise TcApiError("InvalidParameterValue.ProhibitedUseUrlInTemplateParameter",
                             "禁止在模板变量中使用 URL。")
        if template.kind == "verification" and not all(_VERIFICATION_VALUE.match(v) for v in values):
            raise TcApiError("InvalidParameterValue.TemplateParameterFormatError",
                             "验证码模板参数格式错误，验证码类模板，模板变量只能传入0 - 6位（包括6位）纯数字。")

    @staticmethod
    def _entry(phone: str, session: str, code: str, message: str, *, iso: str) -> dict[str, Any]:
        return {"SerialNo": "", "PhoneNumber": phone, "Fee": 0, "SessionContext": session, "Code": code,
                "Message": message, "IsoCode": iso}

    @staticmethod
    def _serial() -> str:
        return f"{1000 + secrets.randbelow(9000)}:" + "".join(secrets.choice(string.digits) for _ in range(28))

    @staticmethod
    def _limit(params: Mapping[str, Any]) -> int:
        limit = _int(params, "Limit", required=True)
        if limit is None or not 1 <= limit <= 100:
            raise TcApiError("InvalidParameterValue.LimitVerifyFail", "Limit 校验失败，取值范围为 1-100。")
        return limit

    @staticmethod
    def status_row(message: PhoneMessage) -> dict[str, Any]:
        cc, national = _split(message.phone)
        delivered = message.status == "delivered"
        return {"UserReceiveTime": int(message.reported_at or message.sent_at), "CountryCode": cc,
                "SubscriberNumber": national, "PhoneNumber": message.phone,
                "SerialNo": message.provider_message_id, "ReportStatus": "SUCCESS" if delivered else "FAIL",
                "Description": "用户短信送达成功" if delivered else "用户短信未送达",
                "SessionContext": message.out_id or ""}

    async def pull_status(self, call: Call) -> dict[str, Any]:
        """Receipts not pulled before, oldest first; each is handed out once."""
        limit = self._limit(call.params)
        self._check_app(call.params)
        rows = [m for m in self.desk.messages if m.status != "accepted" and m.provider_message_id not in self._pulled]
        rows = rows[:limit]
        self._pulled.update(m.provider_message_id for m in rows)
        return {"PullSmsSendStatusSet": [self.status_row(m) for m in rows]}

    async def pull_status_by_phone(self, call: Call) -> dict[str, Any]:
        """Receipts of one number for messages sent between BeginTime and EndTime (default now), oldest first."""
        p = call.params
        begin = _int(p, "BeginTime", required=True) or 0
        offset = _int(p, "Offset", required=True)
        limit = self._limit(p)
        raw_phone = _str(p, "PhoneNumber", required=True) or ""
        end = _int(p, "EndTime")
        self._check_app(p)
        now = self.now()
        if offset != 0:
            raise TcApiError("InvalidParameterValue.OffsetVerifyFail", "Offset 校验失败，目前固定设置为0。")
        if begin < now - PULL_MAX_AGE_SECONDS - 60:
            raise TcApiError("InvalidParameterValue.BeginTimeVerifyFail", "BeginTime 校验失败，最大可拉取7天内的数据。")
        if end is not None and end < begin:
            raise TcApiError("InvalidParameterValue.EndTimeVerifyFail", "EndTime 校验失败。")
        phone = sandbox_phone(raw_phone)
        if phone is None:
            raise TcApiError("InvalidParameterValue.IncorrectPhoneNumber", "手机号格式错误。")
        until = now if end is None else end
        rows = [m for m in self.desk.messages
                if m.phone == phone and m.status != "accepted" and begin <= m.sent_at <= until + 1]
        return {"PullSmsSendStatusSet": [self.status_row(m) for m in rows[:limit]]}

    # ------------------------------------------------------------------ pushes
    @staticmethod
    def build_receipts(messages: Sequence[PhoneMessage], variant: str) -> Outgoing:
        items = []
        for m in messages:
            cc, national = _split(m.phone)
            delivered = m.status == "delivered"
            items.append({
                "user_receive_time": beijing_time(m.reported_at or m.sent_at), "nationcode": cc, "mobile": national,
                "report_status": "SUCCESS" if delivered else "FAIL",
                "errmsg": "DELIVRD" if delivered else (m.error_code or "UNDELIV"),
                "description": "用户短信送达成功" if delivered else "用户短信未送达",
                "sid": m.provider_message_id if variant != "tamper" else TencentCloudSimulator._serial()})
        return Outgoing(json_bytes(items), {"Content-Type": "application/json"})

    def build_reply(self, phone: str, text: str, epoch: float, variant: str) -> Outgoing:
        cc, national = _split(phone)
        sign = self.account["sign_name"] if variant != "tamper" else "未知签名"
        body = {"extend": "", "mobile": national, "nationcode": cc, "sign": sign, "text": text, "time": int(epoch)}
        return Outgoing(json_bytes(body), {"Content-Type": "application/json"})


def acknowledged(status: int, body: bytes) -> bool:
    """Tencent stops re-pushing when the receiver answers ``{"result":0,"errmsg":"OK"}`` (§1.2.2)."""
    if status != 200:
        return False
    try:
        data = json.loads(body)
    except (UnicodeDecodeError, ValueError):
        return False
    return isinstance(data, dict) and data.get("result") == 0 and not isinstance(data.get("result"), bool)

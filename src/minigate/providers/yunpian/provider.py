"""Yunpian SMS v2 client (service-protocols.md §1.3): one form POST per operation, the apikey as credential.

- ``send``: ``POST /v2/sms/tpl_single_send.json`` with ``apikey``, ``mobile`` (mainland without ``+86``,
  international as ``+<cc>…``), ``tpl_id``, ``tpl_value`` and ``uid`` = minigate's message id (plus
  ``callback_url`` when configured). ``tpl_value`` is ``urlencode("#name#")+"="+urlencode(value)`` joined by
  ``&`` (:func:`tpl_value`), form-encoded once more as the field value. With ``send_method="single_send"`` the
  full text (``req.text``, 【sign】 included) goes in ``text`` instead and Yunpian matches it to a template.
- ``find``: ``POST /v2/sms/get_record.json`` for the number over a window around ``req.sent_at`` (Beijing time),
  matching the record whose ``uid`` is the message id.
- pushes: status reports ``sms_status=<urlencoded JSON array>`` (some stacks need a second URL-decode; both
  are accepted), replies ``sms_reply=<urlencoded JSON object>``. The answer that stops re-pushes is ``SUCCESS``.

Yunpian answers errors with HTTP 400 and a JSON ``code`` (see :mod:`.codes`). Nothing in a request or answer is
logged; decline messages have digit runs masked.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import time
from collections.abc import Callable, Mapping, Sequence
from decimal import Decimal
from typing import Any, ClassVar
from urllib.parse import parse_qsl, unquote_plus, urlencode

import httpx

from minigate.domain.results import ProviderResult, StandardCode
from minigate.errors import NotificationRejected, ProviderUnavailable
from minigate.phones import InvalidPhone, parse_phone
from minigate.providers._http import send as http_send
from minigate.providers.bases.payment import NotificationReply
from minigate.providers.bases.sms import (
    DeliveryState,
    SmsAccepted,
    SmsLookup,
    SmsProvider,
    SmsReceipt,
    SmsReply,
    SmsRequest,
)
from minigate.providers.yunpian.codes import DEFAULT_ERROR_MAPPER, PROVIDER, ErrorMapper, YunpianError
from minigate.providers.yunpian.config import YunpianConfig

__all__ = ["BEIJING", "YunpianProvider", "form_body", "reply_sign", "tpl_value", "wire_mobile"]

BEIJING = dt.timezone(dt.timedelta(hours=8))
TIME_FORMAT = "%Y-%m-%d %H:%M:%S"
CONTENT_TYPE = "application/x-www-form-urlencoded;charset=utf-8"
ACCEPT = "application/json;charset=utf-8"
#: get_record's largest page, and how many pages ``find`` reads at most
PAGE_SIZE = 100
MAX_PAGES = 5
#: a push carries at most 100 reports; anything far larger is not one
_MAX_PUSH_ITEMS = 1000
_REPORT_STATES = {"SUCCESS": DeliveryState.DELIVERED, "FAIL": DeliveryState.FAILED}
_RECORD_STATES = {"SUCCESS": DeliveryState.DELIVERED, "FAIL": DeliveryState.FAILED, "UNKNOWN": DeliveryState.ACCEPTED}


# --------------------------------------------------------------------------- pure wire helpers

def tpl_value(params: Sequence[tuple[str, str]]) -> str:
    """``urlencode("#a#")+"="+urlencode(va)+"&"+…`` (UTF-8, form encoding as Yunpian's samples use)."""
    return urlencode([(f"#{name}#", value) for name, value in params])


def form_body(fields: Sequence[tuple[str, str]]) -> bytes:
    """The request body: every field form-encoded in UTF-8, in the given order."""
    return urlencode(list(fields)).encode("ascii")


def wire_mobile(e164: str) -> str:
    """Yunpian's number format: mainland without ``+86``, international in E.164 with its ``+``."""
    phone = parse_phone(e164, allowed_country_codes=None)
    return phone.national if phone.is_mainland else phone.e164


def reply_sign(data: Mapping[str, Any], apikey: str) -> str:
    """The ``_sign`` of a reply push: md5 (lower-case hex) of every other field's value in key order, joined by
    ``,``, then ``,`` and the apikey (Yunpian's reply-push page; its published example is a unit test)."""
    values = [_text(data[key]) for key in sorted(data) if key != "_sign"]
    return hashlib.md5(",".join([*values, apikey]).encode("utf-8")).hexdigest()  # noqa: S324 - Yunpian's scheme


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False)


def _beijing(moment: dt.datetime) -> str:
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return moment.astimezone(BEIJING).strftime(TIME_FORMAT)


def _parse_time(value: Any) -> dt.datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return dt.datetime.strptime(value, TIME_FORMAT).replace(tzinfo=BEIJING)
    except ValueError:
        return None


def _e164(mobile: Any) -> str | None:
    if not isinstance(mobile, str | int) or isinstance(mobile, bool):
        return None
    try:
        return parse_phone(str(mobile), allowed_country_codes=None).e164
    except InvalidPhone:
        return None


def _id(value: Any) -> str | None:
    """sid / uid as text (sid is an int64 in JSON; some stacks quote it)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str) and value.strip():
        return value.strip()
    return None


def _reject(message: str) -> NotificationRejected:
    return NotificationRejected("invalid_receipt", message)


def _push_payload(body: bytes, field: str) -> Any:
    """The JSON inside ``<field>=<urlencoded JSON>``; tolerates a second URL-encoding."""
    try:
        text = body.decode("utf-8")
        pairs = parse_qsl(text, keep_blank_values=True, max_num_fields=20, errors="strict")
    except (UnicodeDecodeError, ValueError) as exc:
        raise _reject("push body is not a UTF-8 form") from exc
    values = [value for key, value in pairs if key == field]
    if len(values) != 1 or not values[0]:
        raise _reject(f"push body has no single {field} field")
    raw = values[0]
    for attempt in range(2):
        try:
            return json.loads(raw)
        except ValueError:
            if attempt:
                break
            raw = unquote_plus(raw)
    raise _reject(f"{field} is not URL-encoded JSON")


def _objects(payload: Any, what: str) -> list[dict[str, Any]]:
    items = [payload] if isinstance(payload, dict) else payload
    if not isinstance(items, list) or not items or len(items) > _MAX_PUSH_ITEMS:
        raise _reject(f"{what} is not a non-empty JSON array")
    if not all(isinstance(item, dict) for item in items):
        raise _reject(f"{what} holds a non-object")
    return items


# --------------------------------------------------------------------------- the provider

class YunpianProvider(SmsProvider):
    """Yunpian SMS v2.

    ``find`` is **not authoritative** (``lookup_is_authoritative = False``): it can only recognise a message by
    the ``uid`` Yunpian echoes, and Yunpian echoes ``uid`` only on accounts where support has switched it on
    ("默认不开放"); ``get_record`` also pages (100 per page) and its indexing delay is not documented. So "not
    found" does not prove the message was never accepted. ``lookup_settle_seconds`` is 5: records normally
    appear within seconds, but nothing bounds it.
    """

    config: YunpianConfig
    name: ClassVar[str] = "yunpian"
    lookup_is_authoritative: ClassVar[bool] = False
    lookup_settle_seconds: ClassVar[float] = 5.0

    def __init__(self, config: YunpianConfig, client: httpx.AsyncClient, *,
                 clock: Callable[[], float] = time.time, error_mapper: ErrorMapper = DEFAULT_ERROR_MAPPER) -> None:
        super().__init__(client)
        self.config = config
        self._clock = clock
        self._errors = error_mapper

    # ------------------------------------------------------------------ building
    def url(self, method: str) -> str:
        return f"{self.config.base_url.rstrip('/')}/v2/sms/{method}.json"

    def _request(self, method: str, fields: Sequence[tuple[str, str]]) -> httpx.Request:
        timeout = httpx.Timeout(self.config.request_timeout_seconds)
        return httpx.Request("POST", self.url(method), content=form_body(fields),
                             headers={"Content-Type": CONTENT_TYPE, "Accept": ACCEPT},
                             extensions={"timeout": timeout.as_dict()})

    def build_send(self, req: SmsRequest) -> httpx.Request:
        """The send request (pure). Raises InvalidPhone for a number that is not E.164."""
        fields: list[tuple[str, str]] = [("apikey", self.config.apikey.get_secret_value()),
                                         ("mobile", wire_mobile(req.phone))]
        if self.config.send_method == "single_send":
            fields.append(("text", req.text))
        else:
            fields += [("tpl_id", req.template_id), ("tpl_value", tpl_value(req.params))]
        fields.append(("uid", req.message_id))
        if self.config.callback_url:
            fields.append(("callback_url", self.config.callback_url))
        return self._request(self.config.send_method, fields)

    def build_find(self, req: SmsRequest, *, page: int = 1) -> httpx.Request:
        """One ``get_record`` page for ``req``'s number around ``req.sent_at`` (pure, but for the clock)."""
        now = dt.datetime.fromtimestamp(self._clock(), dt.UTC)
        sent = req.sent_at or now - dt.timedelta(seconds=self.config.lookup_window_seconds)
        start = sent - dt.timedelta(seconds=60)
        end = sent + dt.timedelta(seconds=self.config.lookup_window_seconds)
        mobile = wire_mobile(req.phone)
        fields = [("apikey", self.config.apikey.get_secret_value()), ("mobile", mobile),
                  ("start_time", _beijing(start)), ("end_time", _beijing(end)),
                  ("page_num", str(page)), ("page_size", str(PAGE_SIZE))]
        if mobile.startswith("+"):
            fields.append(("type", "global"))
        return self._request("get_record", fields)

    # ------------------------------------------------------------------ answers
    async def _call(self, request: httpx.Request, op: str) -> tuple[Any, YunpianError | None]:
        """(decoded JSON, the error it carries) — or raise when the outcome is unknown."""
        response = await http_send(self.client, request, provider=PROVIDER)
        status = response.status_code
        if status == 429 or status >= 500 or status not in (200, 400):
            raise ProviderUnavailable(f"{PROVIDER}: {op}: HTTP {status}", provider=PROVIDER, http_status=status)
        try:
            data = json.loads(response.content, parse_float=Decimal)
        except ValueError as exc:
            raise ProviderUnavailable(f"{PROVIDER}: {op}: answer is not JSON", provider=PROVIDER,
                                      http_status=status) from exc
        error = YunpianError.of(data, http_status=status) if isinstance(data, dict) else None
        if error is not None and error.code == 0:
            error = None
        if status == 400 and error is None:
            raise ProviderUnavailable(f"{PROVIDER}: {op}: HTTP 400 without an error code", provider=PROVIDER,
                                      http_status=status)
        return data, error

    def _bad_shape(self, op: str, what: str) -> ProviderUnavailable:
        return ProviderUnavailable(f"{PROVIDER}: {op}: unexpected answer ({what})", provider=PROVIDER,
                                   http_status=200)

    # ------------------------------------------------------------------ SmsProvider
    async def send(self, req: SmsRequest) -> ProviderResult[SmsAccepted]:
        if self.config.send_method == "single_send" and not req.text:
            return ProviderResult.decline(StandardCode.INVALID_REQUEST, provider_code=None,
                                          message="send_method single_send needs the full text")
        try:
            request = self.build_send(req)
        except InvalidPhone as exc:
            return ProviderResult.decline(StandardCode.INVALID_PHONE, provider_code=None, message=exc.message)
        data, error = await self._call(request, "send")
        if error is not None:
            declined: ProviderResult[SmsAccepted] = self._errors.raise_or_decline(error, op="send")
            return declined
        if not isinstance(data, dict):
            raise self._bad_shape("send", "not an object")
        sid = _id(data.get("sid"))
        if sid is None:
            raise self._bad_shape("send", "no sid")
        count = data.get("count")
        fee = data.get("fee")
        return ProviderResult.success(SmsAccepted(
            provider_message_id=sid,
            segments=count if isinstance(count, int) and not isinstance(count, bool) else None,
            fee=str(fee) if isinstance(fee, Decimal | int | str) and not isinstance(fee, bool) else None))

    async def find(self, req: SmsRequest) -> ProviderResult[SmsLookup]:
        try:
            wire_mobile(req.phone)
        except InvalidPhone as exc:
            return ProviderResult.decline(StandardCode.INVALID_PHONE, provider_code=None, message=exc.message)
        for page in range(1, MAX_PAGES + 1):
            data, error = await self._call(self.build_find(req, page=page), "find")
            if error is not None:
                declined: ProviderResult[SmsLookup] = self._errors.raise_or_decline(error, op="find")
                return declined
            if not isinstance(data, list):
                raise self._bad_shape("find", "get_record did not answer a list")
            for record in data:
                if isinstance(record, dict) and _id(record.get("uid")) == req.message_id:
                    return ProviderResult.success(self._lookup(record))
            if len(data) < PAGE_SIZE:
                break
        return ProviderResult.success(SmsLookup(found=False))

    @staticmethod
    def _lookup(record: Mapping[str, Any]) -> SmsLookup:
        report = record.get("report_status")
        state = _RECORD_STATES.get(report, DeliveryState.ACCEPTED) if isinstance(report, str) else None
        if record.get("send_status") == "FAIL":
            state = DeliveryState.FAILED
        error = record.get("error_msg")
        return SmsLookup(found=True, provider_message_id=_id(record.get("sid")), state=state or DeliveryState.ACCEPTED,
                         error_code=error if isinstance(error, str) and error and state is DeliveryState.FAILED
                         else None)

    # ------------------------------------------------------------------ pushes
    def parse_receipts(self, headers: Mapping[str, str], body: bytes) -> list[SmsReceipt]:
        """``sms_status=<urlencoded JSON array>``; each report needs ``sid`` and ``report_status`` SUCCESS/FAIL."""
        receipts: list[SmsReceipt] = []
        for item in _objects(_push_payload(body, "sms_status"), "sms_status"):
            sid = _id(item.get("sid"))
            state = _REPORT_STATES.get(item.get("report_status"))  # type: ignore[arg-type]
            if sid is None or state is None:
                raise _reject("a report lacks sid or a SUCCESS/FAIL report_status")
            error = item.get("error_msg")
            detail = item.get("error_detail")
            receipts.append(SmsReceipt(
                provider_message_id=sid, state=state, phone=_e164(item.get("mobile")),
                message_id=_id(item.get("uid")),
                error_code=error if isinstance(error, str) and error else None,
                description=detail if isinstance(detail, str) and detail else None,
                reported_at=_parse_time(item.get("user_receive_time"))))
        return receipts

    def parse_replies(self, headers: Mapping[str, str], body: bytes) -> list[SmsReply]:
        """``sms_reply=<urlencoded JSON>`` (fields id, mobile, text, reply_time, extend, base_extend, _sign).

        ``_sign`` is checked only with ``reply_sign_check`` on (see :func:`reply_sign`)."""
        replies: list[SmsReply] = []
        for item in _objects(_push_payload(body, "sms_reply"), "sms_reply"):
            if self.config.reply_sign_check:
                given = item.get("_sign")
                expected = reply_sign(item, self.config.apikey.get_secret_value())
                if not isinstance(given, str) or not hmac.compare_digest(given.lower().encode(), expected.encode()):
                    raise NotificationRejected("invalid_signature", "reply _sign does not verify with the apikey")
            phone = _e164(item.get("mobile"))
            text = item.get("text")
            if phone is None or not isinstance(text, str):
                raise _reject("a reply lacks mobile or text")
            replies.append(SmsReply(phone=phone, text=text, received_at=_parse_time(item.get("reply_time")),
                                    reply_id=_id(item.get("id"))))
        return replies

    def receipt_ack(self) -> NotificationReply:
        return NotificationReply(200, b"SUCCESS", "text/plain")

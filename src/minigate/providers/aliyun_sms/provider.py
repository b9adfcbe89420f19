"""Alibaba Cloud SMS client (dysmsapi 2017-05-25, service-protocols.md §1.1).

- ``send`` is ``SendSms`` to one number, all parameters in the query of a ``POST /`` with an empty body (what the
  official SDK sends), signed V3 (ACS3-HMAC-SHA256, default) or RPC V2 (HMAC-SHA1) per
  :attr:`AliyunSmsConfig.signature_version`. minigate's message id travels as ``OutId``; Alibaba's ``BizId``
  is the provider message id. Answers are asked for in JSON (``accept: application/json`` / ``Format=JSON``).
- ``find`` is ``QuerySendDetails`` for the number on the Beijing date of ``sent_at`` (and the next date once
  that has begun: a retry across midnight is filed under the later date), paging through the records and
  matching ``OutId``.
- ``parse_receipts`` reads the HTTP batch push of ``SmsReport`` (a JSON array, §1.1.4); ``receipt_ack`` is
  ``{"code":0,"msg":"接收成功"}``. ``parse_replies`` reads the ``SmsUp`` push (a JSON array of
  ``{phone_number, send_time, content, sign_name, dest_code, sequence_id}``). That shape is from a single
  secondary source, so the parser also accepts the aliases in :data:`REPLY_FIELD_ALIASES`.

Outcomes: HTTP 200 ``Code=OK`` with a ``BizId`` -> accepted; HTTP 200 other ``Code`` and HTTP 4xx gateway
refusals -> declines through :class:`~minigate.providers.aliyun_sms.codes.CodeTable` (``isp.SYSTEM_ERROR``
raises); HTTP 5xx, 429 and anything unreadable raise :class:`ProviderUnavailable` (the message may have gone).
"""

from __future__ import annotations

import datetime as dt
import json
import secrets
import time
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

import httpx

from minigate.domain.results import ProviderResult, StandardCode
from minigate.errors import NotificationRejected, ProviderUnavailable
from minigate.phones import InvalidPhone, parse_phone
from minigate.providers._http import send
from minigate.providers.aliyun_sms import signing
from minigate.providers.aliyun_sms.codes import DEFAULT_CODE_TABLE, PROVIDER, SUCCESS_CODE, CodeTable
from minigate.providers.aliyun_sms.config import AliyunSmsConfig
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

__all__ = ["API_VERSION", "RECEIPT_ACK", "REPLY_FIELD_ALIASES", "USER_AGENT", "AliyunSmsProvider", "wire_phone"]

API_VERSION = "2017-05-25"
USER_AGENT = "minigate/0.1 (aliyun-dysmsapi)"
BEIJING = dt.timezone(dt.timedelta(hours=8))
#: the reply that stops Alibaba re-pushing a report (§1.1.4)
RECEIPT_ACK = {"code": 0, "msg": "接收成功"}
#: QuerySendDetails page size (the API's maximum)
PAGE_SIZE = 50
#: SmsUp push field names: the documented name first, then tolerated aliases (the shape is not confirmed)
REPLY_FIELD_ALIASES: Mapping[str, tuple[str, ...]] = {
    "phone": ("phone_number", "phoneNumber", "PhoneNumber", "mobile", "phone"),
    "text": ("content", "Content", "text", "msg"),
    "time": ("send_time", "sendTime", "SendTime", "receive_time", "report_time"),
    "id": ("sequence_id", "sequenceId", "SequenceId", "seq_id", "id"),
    "sign": ("sign_name", "signName", "SignName"),
}
_MAX_ITEMS = 1000


def wire_phone(e164: str) -> str:
    """What ``PhoneNumbers`` carries: the 11 digits for the mainland, ``<cc><number>`` without ``+`` otherwise."""
    phone = parse_phone(e164, allowed_country_codes=None)
    return phone.national if phone.is_mainland else phone.country_code + phone.national


def _beijing_date(moment: dt.datetime | None, now: float) -> dt.date:
    if moment is None:
        return dt.datetime.fromtimestamp(now, BEIJING).date()
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return moment.astimezone(BEIJING).date()


def _parse_beijing(text: Any) -> dt.datetime | None:
    if not isinstance(text, str) or not text:
        return None
    try:
        return dt.datetime.strptime(text, "%Y-%m-%d %H:%M:%S").replace(tzinfo=BEIJING)
    except ValueError:
        return None


def _e164(raw: Any) -> str | None:
    if isinstance(raw, int) and not isinstance(raw, bool):
        raw = str(raw)
    if not isinstance(raw, str) or not raw:
        return None
    for candidate in (raw, "+" + raw):
        try:
            return parse_phone(candidate, allowed_country_codes=None).e164
        except InvalidPhone:
            continue
    return None


def _text(value: Any) -> str | None:
    if isinstance(value, str):
        return value or None
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    return None


def _json_array(body: bytes, what: str) -> list[dict[str, Any]]:
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise NotificationRejected(f"invalid_{what}", "body is not JSON") from exc
    if not isinstance(data, list) or len(data) > _MAX_ITEMS or not all(isinstance(item, dict) for item in data):
        raise NotificationRejected(f"invalid_{what}", "body is not a JSON array of objects")
    return data


class AliyunSmsProvider(SmsProvider):
    """SendSms / QuerySendDetails / SmsReport / SmsUp.

    ``find`` is treated as authoritative once ``lookup_settle_seconds`` (60 s) have passed: QuerySendDetails
    lists every submission Alibaba accepted for the number and day ("TotalCount" counts submissions, not billed
    parts), each with the ``OutId`` sent, so "no record with this OutId" after the records have settled means
    the send was never accepted. How quickly a record appears is not documented; 60 s is a margin, not a
    published figure, and ``find`` only covers the dates it queries (``sent_at`` and the day after).
    """

    config: AliyunSmsConfig
    name: ClassVar[str] = PROVIDER
    lookup_is_authoritative: ClassVar[bool] = True
    lookup_settle_seconds: ClassVar[float] = 60.0

    def __init__(self, config: AliyunSmsConfig, client: httpx.AsyncClient, *,
                 clock: Callable[[], float] = time.time, nonce: Callable[[], str] = lambda: secrets.token_hex(16),
                 codes: CodeTable = DEFAULT_CODE_TABLE) -> None:
        super().__init__(client)
        self.config = config
        self._clock = clock
        self._nonce = nonce
        self._codes = codes

    # ------------------------------------------------------------------ requests
    def build_request(self, action: str, params: Mapping[str, str]) -> httpx.Request:
        """One signed ``POST /?<params>`` (empty body), V3 or RPC per the configuration."""
        cfg = self.config
        endpoint = cfg.base_url.rstrip("/") + "/"
        timeout = httpx.Timeout(cfg.request_timeout_seconds).as_dict()
        timestamp = signing.format_timestamp(self._clock())
        secret = cfg.access_key_secret.get_secret_value()
        token = cfg.security_token.get_secret_value() if cfg.security_token else None
        headers = {"accept": "application/json", "user-agent": USER_AGENT}
        if cfg.signature_version == "rpc":
            query = {"Action": action, "Version": API_VERSION, "Format": "JSON", "AccessKeyId": cfg.access_key_id,
                     "SignatureMethod": "HMAC-SHA1", "SignatureVersion": "1.0", "SignatureNonce": self._nonce(),
                     "Timestamp": timestamp, "RegionId": cfg.region_id, **params}
            if token:
                query["SecurityToken"] = token
            query["Signature"] = signing.rpc_signature("POST", query, secret)
            return httpx.Request("POST", endpoint + "?" + signing.canonical_query(query), headers=headers,
                                 extensions={"timeout": timeout})
        headers |= {"x-acs-action": action, "x-acs-version": API_VERSION, "x-acs-date": timestamp,
                    "x-acs-signature-nonce": self._nonce(), "x-acs-content-sha256": signing.EMPTY_SHA256}
        if token:
            headers |= {"x-acs-security-token": token, "x-acs-accesskey-id": cfg.access_key_id}
        url = endpoint + ("?" + signing.canonical_query(params) if params else "")
        request = httpx.Request("POST", url, headers=headers, extensions={"timeout": timeout})
        signed = [("host", request.headers["host"]), *headers.items()]
        request.headers["Authorization"] = signing.acs3_authorization(
            method="POST", query=params, headers=signed, access_key_id=cfg.access_key_id, access_key_secret=secret,
            payload_hash=signing.EMPTY_SHA256)
        return request

    async def _call(self, action: str, params: Mapping[str, str], op: str) -> dict[str, Any] | ProviderResult[Any]:
        """The answer object of a Code=OK call, or a decline; raises when the outcome is unknown."""
        response = await send(self.client, self.build_request(action, params), provider=PROVIDER)
        status = response.status_code
        if status >= 500 or status == 429:
            raise ProviderUnavailable(f"{PROVIDER}: {op}: HTTP {status}", provider=PROVIDER, http_status=status)
        try:
            data = json.loads(response.content)
        except (ValueError, UnicodeDecodeError):
            data = None
        if not isinstance(data, dict) or not (data.get("Code") or data.get("code")):
            raise ProviderUnavailable(f"{PROVIDER}: {op}: unreadable answer (HTTP {status})", provider=PROVIDER,
                                      http_status=status)
        if status != 200:
            if status < 400:
                raise ProviderUnavailable(f"{PROVIDER}: {op}: unexpected HTTP {status}", provider=PROVIDER,
                                          http_status=status)
            return self._codes.decline_or_raise(data, http_status=status, op=op)
        if data.get("Code") != SUCCESS_CODE:
            return self._codes.decline_or_raise(data, http_status=status, op=op)
        return data

    # ------------------------------------------------------------------ SmsProvider
    async def send(self, req: SmsRequest) -> ProviderResult[SmsAccepted]:
        try:
            phone = wire_phone(req.phone)
        except InvalidPhone:
            return ProviderResult.decline(StandardCode.INVALID_PHONE, provider_code=None,
                                          message="not a mobile number")
        params = {"PhoneNumbers": phone, "SignName": req.sign_name, "TemplateCode": req.template_id,
                  "OutId": req.message_id}
        if req.params:
            params["TemplateParam"] = json.dumps(dict(req.params), ensure_ascii=False, separators=(",", ":"))
        data = await self._call("SendSms", params, "send")
        if isinstance(data, ProviderResult):
            return data
        biz_id = data.get("BizId")
        if not isinstance(biz_id, str) or not biz_id:
            raise ProviderUnavailable(f"{PROVIDER}: send: Code=OK without BizId", provider=PROVIDER, http_status=200)
        request_id = data.get("RequestId")
        return ProviderResult.success(SmsAccepted(provider_message_id=biz_id),
                                      request_id=request_id if isinstance(request_id, str) else None)

    async def find(self, req: SmsRequest) -> ProviderResult[SmsLookup]:
        try:
            phone = wire_phone(req.phone)
        except InvalidPhone:
            return ProviderResult.success(SmsLookup(found=False))
        first = _beijing_date(req.sent_at, self._clock())
        today = _beijing_date(None, self._clock())
        dates = [first] + ([first + dt.timedelta(days=1)] if today > first else [])
        for day in dates:
            for page in range(1, self.config.lookup_max_pages + 1):
                params = {"PhoneNumber": phone, "SendDate": day.strftime("%Y%m%d"), "PageSize": str(PAGE_SIZE),
                          "CurrentPage": str(page)}
                data = await self._call("QuerySendDetails", params, "find")
                if isinstance(data, ProviderResult):
                    return data
                items = self._details(data)
                for item in items:
                    if item.get("OutId") == req.message_id:
                        return ProviderResult.success(self._lookup(item))
                total = data.get("TotalCount")
                try:
                    total_count = int(total) if total is not None else None
                except (TypeError, ValueError):
                    total_count = None
                if len(items) < PAGE_SIZE or (total_count is not None and page * PAGE_SIZE >= total_count):
                    break
        return ProviderResult.success(SmsLookup(found=False))

    @staticmethod
    def _details(data: Mapping[str, Any]) -> list[dict[str, Any]]:
        dtos = data.get("SmsSendDetailDTOs")
        items = dtos.get("SmsSendDetailDTO") if isinstance(dtos, dict) else None
        if items is None:
            return []
        if isinstance(items, dict):       # one record, as an XML-to-JSON conversion may give it
            items = [items]
        if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
            raise ProviderUnavailable(f"{PROVIDER}: find: unreadable SmsSendDetailDTOs", provider=PROVIDER,
                                      http_status=200)
        return items

    @staticmethod
    def _lookup(item: Mapping[str, Any]) -> SmsLookup:
        status = str(item.get("SendStatus", ""))
        state = {"3": DeliveryState.DELIVERED, "2": DeliveryState.FAILED}.get(status, DeliveryState.ACCEPTED)
        error = _text(item.get("ErrCode"))
        return SmsLookup(found=True, provider_message_id=None, state=state,
                         error_code=error if state is DeliveryState.FAILED else None)

    # ------------------------------------------------------------------ pushes
    def parse_receipts(self, headers: Mapping[str, str], body: bytes) -> list[SmsReceipt]:
        """The ``SmsReport`` HTTP push: ``[{"phone_number","send_time","report_time","success","err_code",
        "err_msg","sms_size","biz_id","out_id"}]``. ``success`` may come as a boolean or ``"true"``/``"false"``."""
        receipts: list[SmsReceipt] = []
        for item in _json_array(body, "receipt"):
            biz_id = _text(item.get("biz_id"))
            success = item.get("success")
            if isinstance(success, str) and success.lower() in ("true", "false"):
                success = success.lower() == "true"
            if biz_id is None or not isinstance(success, bool):
                raise NotificationRejected("invalid_receipt", "a report lacks biz_id or success")
            receipts.append(SmsReceipt(
                provider_message_id=biz_id,
                state=DeliveryState.DELIVERED if success else DeliveryState.FAILED,
                phone=_e164(item.get("phone_number")),
                message_id=_text(item.get("out_id")),
                error_code=_text(item.get("err_code")),
                description=_text(item.get("err_msg")),
                reported_at=_parse_beijing(item.get("report_time"))))
        return receipts

    def parse_replies(self, headers: Mapping[str, str], body: bytes) -> list[SmsReply]:
        """The ``SmsUp`` push; field names per :data:`REPLY_FIELD_ALIASES` (first present alias wins)."""
        replies: list[SmsReply] = []
        for item in _json_array(body, "reply"):
            def pick(field: str, entry: Mapping[str, Any] = item) -> Any:
                return next((entry[a] for a in REPLY_FIELD_ALIASES[field] if entry.get(a) not in (None, "")), None)

            phone = _e164(pick("phone"))
            text = pick("text")
            if phone is None or not isinstance(text, str):
                raise NotificationRejected("invalid_reply", "a reply lacks a phone number or content")
            replies.append(SmsReply(phone=phone, text=text, received_at=_parse_beijing(pick("time")),
                                    reply_id=_text(pick("id")), sign_name=_text(pick("sign"))))
        return replies

    def receipt_ack(self) -> NotificationReply:
        return NotificationReply(200, json.dumps(RECEIPT_ACK, ensure_ascii=False, separators=(",", ":")).encode(),
                                 "application/json")


"""Tencent Cloud SMS (sms.tencentcloudapi.com, API 2021-01-11), service-protocols.md §1.2.

- ``send``: ``SendSms`` for one number, with minigate's message id as ``SessionContext``. The request can be
  refused as a whole (``Response.Error``) or per number (``SendStatusSet[i].Code`` other than ``Ok``); both map
  through :mod:`~minigate.providers.tencentcloud.codes` to a decline. Accepted: ``SerialNo`` and ``Fee``
  (billed segments).
- ``find``: ``PullSmsSendStatusByPhoneNumber`` for the number since ``sent_at``, matched on ``SessionContext``.
- Receipts: Tencent POSTs a JSON array (``sid`` = SerialNo, ``report_status`` SUCCESS/FAIL, ``errmsg`` carrier
  code) and stops re-pushing on ``{"result":0,"errmsg":"OK"}``. Replies: one JSON object per upstream message
  (``mobile``, ``nationcode``, ``text``, ``sign``, ``time``, ``extend``), acknowledged the same way.
"""

from __future__ import annotations

import datetime as dt
import json
import time
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

import httpx

from minigate.domain.results import ProviderResult
from minigate.errors import NotificationRejected, OperationNotSupported, ProviderUnavailable
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
from minigate.providers.tencentcloud.api import TcAnswer, TencentCloudApi
from minigate.providers.tencentcloud.codes import DEFAULT_ERROR_MAPPER, OK, PROVIDER, ErrorMapper
from minigate.providers.tencentcloud.config import SERVICE, VERSION, TencentSmsConfig

__all__ = ["ACK", "TencentSmsProvider"]

BEIJING = dt.timezone(dt.timedelta(hours=8))
#: the answer that stops Tencent re-pushing a receipt or a reply (§1.2.2)
ACK = b'{"result":0,"errmsg":"OK"}'
#: PullSmsSendStatusByPhoneNumber: at most 100 rows, Offset "fixed at 0", at most 7 days back (SDK model docs)
PULL_LIMIT = 100
PULL_MAX_AGE_SECONDS = 7 * 24 * 3600


class TencentSmsProvider(SmsProvider):
    """Tencent Cloud SMS over an injected :class:`httpx.AsyncClient`.

    ``lookup_is_authoritative`` is False: the only per-number query, ``PullSmsSendStatusByPhoneNumber``, lists
    messages that already have a delivery receipt -- an accepted message whose carrier has not reported yet (or
    never reports) is absent; ``SessionContext`` appears in pulled statuses only when Tencent has enabled it for
    the account; and one pull returns at most 100 rows from at most 7 days back. "Not found" therefore never
    proves the message was not accepted. ``lookup_settle_seconds`` (60) is the time a receipt usually needs to
    reach the pull API, so a lookup before it is pointless; a hit after it is still proof of acceptance.
    """

    config: TencentSmsConfig
    name: ClassVar[str] = PROVIDER
    lookup_is_authoritative: ClassVar[bool] = False
    lookup_settle_seconds: ClassVar[float] = 60.0

    def __init__(self, config: TencentSmsConfig, client: httpx.AsyncClient, *,
                 clock: Callable[[], float] = time.time, errors: ErrorMapper = DEFAULT_ERROR_MAPPER) -> None:
        super().__init__(client)
        self.config = config
        self.errors = errors
        self._clock = clock
        self.api = TencentCloudApi(
            client=client, provider=PROVIDER, service=SERVICE, version=VERSION, base_url=config.base_url,
            secret_id=config.secret_id, secret_key=config.secret_key.get_secret_value(), region=config.region,
            token=config.token.get_secret_value() if config.token else None, language=config.language,
            timeout=config.request_timeout_seconds, clock=clock)

    # ------------------------------------------------------------------ send
    def send_payload(self, req: SmsRequest) -> dict[str, Any]:
        """The SendSms parameters for one message."""
        payload: dict[str, Any] = {"PhoneNumberSet": [req.phone], "SmsSdkAppId": self.config.sms_sdk_app_id,
                                   "TemplateId": req.template_id, "SessionContext": req.message_id}
        sign_name = req.sign_name or self.config.sign_name
        if sign_name:
            payload["SignName"] = sign_name
        if req.params:
            payload["TemplateParamSet"] = [value for _, value in req.params]
        return payload

    async def send(self, req: SmsRequest) -> ProviderResult[SmsAccepted]:
        answer = await self.api.call("SendSms", self.send_payload(req))
        if answer.error is not None:
            return self._decline(answer, "SendSms")
        statuses = answer.data.get("SendStatusSet")
        if not isinstance(statuses, list) or not statuses or not all(isinstance(s, dict) for s in statuses):
            raise self._unavailable("SendSms", "SendStatusSet is missing or empty", answer)
        status = next((s for s in statuses if s.get("PhoneNumber") == req.phone), statuses[0])
        code = status.get("Code")
        if not isinstance(code, str):
            raise self._unavailable("SendSms", "SendStatusSet entry has no Code", answer)
        if code != OK:
            message = status.get("Message")
            return self.errors.decline(code, message if isinstance(message, str) else None, op="SendSms",
                                       request_id=answer.request_id)
        serial = status.get("SerialNo")
        if not isinstance(serial, str) or not serial:
            raise self._unavailable("SendSms", "accepted entry without SerialNo", answer)
        fee = status.get("Fee")
        return ProviderResult.success(SmsAccepted(serial, segments=fee if isinstance(fee, int) else None),
                                      request_id=answer.request_id)

    # ------------------------------------------------------------------ find
    def find_payload(self, req: SmsRequest) -> dict[str, Any]:
        now = int(self._clock())
        begin = now - PULL_MAX_AGE_SECONDS
        if req.sent_at is not None:
            begin = max(begin, int(req.sent_at.timestamp()) - self.config.lookup_margin_seconds)
        return {"BeginTime": begin, "Offset": 0, "Limit": PULL_LIMIT, "PhoneNumber": req.phone,
                "SmsSdkAppId": self.config.sms_sdk_app_id, "EndTime": now}

    async def find(self, req: SmsRequest) -> ProviderResult[SmsLookup]:
        if not self.config.pull_session_context:
            raise OperationNotSupported(f"{PROVIDER}: status pull without SessionContext cannot identify a message",
                                        provider=PROVIDER)
        answer = await self.api.call("PullSmsSendStatusByPhoneNumber", self.find_payload(req))
        if answer.error is not None:
            return self._decline(answer, "PullSmsSendStatusByPhoneNumber")
        rows = answer.data.get("PullSmsSendStatusSet")
        if rows is None:
            rows = []
        if not isinstance(rows, list):
            raise self._unavailable("PullSmsSendStatusByPhoneNumber", "PullSmsSendStatusSet is not a list", answer)
        found = [r for r in rows if isinstance(r, dict) and r.get("SessionContext") == req.message_id]
        if not found:
            return ProviderResult.success(SmsLookup(found=False), request_id=answer.request_id)
        row = max(found, key=_receive_time)
        delivered = row.get("ReportStatus") == "SUCCESS"
        serial = row.get("SerialNo")
        description = row.get("Description")
        return ProviderResult.success(SmsLookup(
            found=True, provider_message_id=serial if isinstance(serial, str) else None,
            state=DeliveryState.DELIVERED if delivered else DeliveryState.FAILED,
            error_code=None if delivered else (description if isinstance(description, str) else "FAIL")),
            request_id=answer.request_id)

    # ------------------------------------------------------------------ pushes
    def parse_receipts(self, headers: Mapping[str, str], body: bytes) -> list[SmsReceipt]:
        items = _json_items(body, "invalid_receipt")
        receipts = []
        for item in items:
            sid, status = item.get("sid"), item.get("report_status")
            if not isinstance(sid, str) or not sid or status not in ("SUCCESS", "FAIL"):
                raise NotificationRejected("invalid_receipt", "receipt entry lacks sid or report_status")
            errmsg, description = item.get("errmsg"), item.get("description")
            receipts.append(SmsReceipt(
                provider_message_id=sid,
                state=DeliveryState.DELIVERED if status == "SUCCESS" else DeliveryState.FAILED,
                phone=_e164(item.get("nationcode"), item.get("mobile")),
                error_code=str(errmsg) if errmsg not in (None, "") else None,
                description=str(description) if description not in (None, "") else None,
                reported_at=_when(item.get("user_receive_time"))))
        return receipts

    def parse_replies(self, headers: Mapping[str, str], body: bytes) -> list[SmsReply]:
        """Tencent's reply push (doc "SMS Reply", 382/43548): one JSON object per reply; a JSON array of them is
        accepted too. ``time`` is a unix timestamp (a ``YYYY-MM-DD HH:MM:SS`` Beijing string is tolerated)."""
        replies = []
        for item in _json_items(body, "invalid_reply"):
            phone = _e164(item.get("nationcode", "86"), item.get("mobile"))
            text = item.get("text")
            if phone is None or not isinstance(text, str):
                raise NotificationRejected("invalid_reply", "reply lacks mobile or text")
            sign = item.get("sign")
            replies.append(SmsReply(phone=phone, text=text, received_at=_when(item.get("time")),
                                    sign_name=sign if isinstance(sign, str) and sign else None))
        return replies

    def receipt_ack(self) -> NotificationReply:
        return NotificationReply(200, ACK, "application/json")

    def receipt_nack(self) -> NotificationReply:
        return NotificationReply(500, b'{"result":1,"errmsg":"retry later"}', "application/json")

    # ------------------------------------------------------------------ helpers
    def _decline(self, answer: TcAnswer, op: str) -> ProviderResult[Any]:
        assert answer.error is not None
        return self.errors.decline(answer.error.code, answer.error.message or None, op=op,
                                   request_id=answer.request_id)

    @staticmethod
    def _unavailable(op: str, what: str, answer: TcAnswer) -> ProviderUnavailable:
        return ProviderUnavailable(f"{PROVIDER}: {op}: {what}", provider=PROVIDER, request_id=answer.request_id)


def _receive_time(row: Mapping[str, Any]) -> int:
    value = row.get("UserReceiveTime")
    return value if isinstance(value, int) else 0


def _json_items(body: bytes, code: str) -> list[dict[str, Any]]:
    try:
        data = json.loads(body)
    except (UnicodeDecodeError, ValueError) as exc:
        raise NotificationRejected(code, "body is not JSON") from exc
    items = [data] if isinstance(data, dict) else data
    if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
        raise NotificationRejected(code, "body is not a JSON object or an array of objects")
    return items


def _e164(nationcode: Any, mobile: Any) -> str | None:
    if not isinstance(mobile, str | int) or not str(mobile).strip():
        return None
    number = str(mobile).strip()
    if number.startswith("+"):
        return number
    cc = str(nationcode).strip().lstrip("+") if nationcode not in (None, "") else "86"
    return f"+{cc}{number}"


def _when(value: Any) -> dt.datetime | None:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return dt.datetime.fromtimestamp(value, dt.UTC)
    if isinstance(value, str) and value.strip():
        text = value.strip()
        if text.isdigit():
            return dt.datetime.fromtimestamp(int(text), dt.UTC)
        try:
            return dt.datetime.strptime(text, "%Y-%m-%d %H:%M:%S").replace(tzinfo=BEIJING)
        except ValueError:
            return None
    return None

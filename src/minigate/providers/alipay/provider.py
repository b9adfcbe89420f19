"""Alipay OpenAPI client for mini-program (JSAPI_PAY) payments (payment-protocols.md §2).

Each operation is one signed call through :class:`~minigate.providers.alipay.openapi.OpenApi` (which verifies
the answer before anything reads it) plus a pure conversion from :mod:`~minigate.providers.alipay.schemas`.
Non-10000 answers go through :class:`~minigate.providers.alipay.codes.ErrorMapper`: declines are values,
unknown outcomes raise :class:`~minigate.errors.ProviderUnavailable`.

Notifications (§2.5): form-decoded with the charset named in the form, RSA2-verified over the sorted
non-empty fields without ``sign`` and ``sign_type``, then ``app_id``/``seller_id`` are checked. TRADE_SUCCESS,
TRADE_FINISHED and TRADE_CLOSED become ``Notification(kind=PAYMENT)`` whose ``event_id`` is ``notify_id``
(stable across Alipay's retries, so callbacks deduplicate). A partial refund is announced by Alipay as a
TRADE_SUCCESS notify carrying ``refund_fee``/``gmt_refund``/``out_biz_no``: it parses as PAYMENT with the
trade (still PAID; the refund fields are in ``trade.raw``) -- Alipay refunds are synchronous, the refund call
itself already reported the outcome. A TRADE_CLOSED after a full refund parses as REFUNDED (see schemas).
"""

from __future__ import annotations

import asyncio
import codecs
import time
from collections.abc import Callable, Mapping
from datetime import date
from typing import Any, ClassVar
from urllib.parse import parse_qsl

import httpx

from minigate.domain.results import (
    BillRow,
    Checkout,
    Notification,
    NotificationKind,
    ProviderResult,
    RefundStatus,
    StandardCode,
    TradeState,
    TradeStatus,
)
from minigate.errors import NotificationRejected, ProviderUnavailable
from minigate.providers._http import send
from minigate.providers.alipay import bill, schemas, signing
from minigate.providers.alipay.codes import DEFAULT_ERROR_MAPPER, PROVIDER, ErrorMapper
from minigate.providers.alipay.config import AlipayConfig
from minigate.providers.alipay.openapi import Answer, OpenApi
from minigate.providers.bases.payment import (
    CreateOrderRequest,
    NotificationReply,
    PaymentProvider,
    RefundRequest,
)

__all__ = ["NOTIFY_EVENTS", "REJECTION_STATUS", "AlipayProvider"]

#: HTTP status for each rejection code. Alipay retries on anything but a ``success`` body, whatever the status.
REJECTION_STATUS: Mapping[str, int] = {
    "missing_signature": 400, "invalid_signature": 400, "malformed_body": 400, "app_mismatch": 400,
    "merchant_mismatch": 400, "unsupported_event": 400,
}
#: trade_status values that produce a PAYMENT notification (WAIT_BUYER_PAY is not notified by default, §5.5).
#: every trade state is parsed, WAIT_BUYER_PAY included (off by default at Alipay, §5.5): the service then
#: validates its fields (amount, §B-2) like any other view of the trade, and a pending view changes nothing
NOTIFY_EVENTS = frozenset({"WAIT_BUYER_PAY", "TRADE_SUCCESS", "TRADE_FINISHED", "TRADE_CLOSED"})
_MAX_FORM_FIELDS = 200


def _reject(code: str, message: str) -> NotificationRejected:
    return NotificationRejected(code, message, http_status=REJECTION_STATUS.get(code, 500))


class AlipayProvider(PaymentProvider):
    """Alipay mini-program payments: trade create/query/close, refund, refund query, notifications, bill."""

    name: ClassVar[str] = "alipay"
    channels: ClassVar[frozenset[str]] = frozenset({"alipay_mini"})

    def __init__(self, config: AlipayConfig, client: httpx.AsyncClient, *,
                 clock: Callable[[], float] = time.time, error_mapper: ErrorMapper = DEFAULT_ERROR_MAPPER,
                 bill_host_suffixes: tuple[str, ...] = bill.ALLOWED_BILL_HOST_SUFFIXES) -> None:
        super().__init__(client)
        self.config = config
        self.api = OpenApi(config, client, clock=clock)
        self._errors = error_mapper
        self._bill_hosts = bill_host_suffixes

    # ------------------------------------------------------------------ helpers
    def _bad_shape(self, answer: Answer, what: str) -> ProviderUnavailable:
        return ProviderUnavailable(f"{PROVIDER}: {answer.method}: unexpected answer ({what})", provider=PROVIDER,
                                   http_status=200)

    def _decline(self, answer: Answer, op: str) -> ProviderResult[Any] | None:
        return None if answer.error is None else self._errors.raise_or_decline(answer.error, op=op)

    @staticmethod
    def _trade_ref(out_trade_no: str) -> dict[str, str]:
        return {"out_trade_no": out_trade_no}

    # ------------------------------------------------------------------ PaymentProvider
    async def create_order(self, req: CreateOrderRequest) -> ProviderResult[Checkout]:
        answer = await self.api.call("alipay.trade.create", schemas.create_biz(req, self.config),
                                     notify_url=req.notify_url)
        declined = self._decline(answer, "create_order")
        if declined is not None:
            return declined
        trade_no = answer.data.get("trade_no")
        if not isinstance(trade_no, str) or not trade_no:
            raise self._bad_shape(answer, "missing trade_no")
        if answer.data.get("out_trade_no") not in (None, req.out_trade_no):
            raise self._bad_shape(answer, "answer is for another out_trade_no")
        return ProviderResult.success(Checkout(client_params={"tradeNO": trade_no}, provider_order_ref=trade_no))

    async def query_order(self, out_trade_no: str) -> ProviderResult[TradeStatus]:
        answer = await self.api.call("alipay.trade.query", self._trade_ref(out_trade_no))
        declined = self._decline(answer, "query_order")
        if declined is not None:
            return declined
        try:
            status = schemas.trade_status(answer.data, merchant_id=self.config.seller_id, app_id=self.config.app_id)
        except schemas.WireFormatError as exc:
            raise self._bad_shape(answer, str(exc)) from exc
        if status.out_trade_no != out_trade_no:
            raise self._bad_shape(answer, "answer is for another out_trade_no")
        return ProviderResult.success(status)

    async def close_order(self, out_trade_no: str) -> ProviderResult[None]:
        """Close an unpaid trade. ``ACQ.TRADE_STATUS_ERROR`` ("not WAIT_BUYER_PAY") is ambiguous, so it is
        resolved by a query: closed already -> ``ORDER_CLOSED``, paid -> ``ALREADY_PAID``."""
        answer = await self.api.call("alipay.trade.close", self._trade_ref(out_trade_no))
        declined = self._decline(answer, "close_order")
        if declined is None:
            return ProviderResult(ok=True, value=None)
        if declined.provider_code == "ACQ.TRADE_STATUS_ERROR":
            found = await self.query_order(out_trade_no)
            state = found.value.state if found.ok and found.value else None
            if state is TradeState.CLOSED:
                return ProviderResult.decline(StandardCode.ORDER_CLOSED, provider_code=declined.provider_code,
                                              message=declined.message)
            if state in (TradeState.PAID, TradeState.REFUNDED):
                return ProviderResult.decline(StandardCode.ALREADY_PAID, provider_code=declined.provider_code,
                                              message=declined.message)
        return declined

    async def refund(self, req: RefundRequest) -> ProviderResult[RefundStatus]:
        answer = await self.api.call("alipay.trade.refund", schemas.refund_biz(req))
        declined = self._decline(answer, "refund")
        if declined is not None:
            return declined
        try:
            return ProviderResult.success(schemas.refund_result(answer.data, req))
        except schemas.WireFormatError as exc:
            raise self._bad_shape(answer, str(exc)) from exc

    async def query_refund(self, out_refund_no: str, *, out_trade_no: str) -> ProviderResult[RefundStatus]:
        """No ``refund_status`` -> ``NOT_FOUND``: re-send the refund with the same ``out_request_no``."""
        biz = {"out_trade_no": out_trade_no, "out_request_no": out_refund_no}
        answer = await self.api.call("alipay.trade.fastpay.refund.query", biz)
        declined = self._decline(answer, "query_refund")
        if declined is not None:
            return declined
        try:
            found = schemas.refund_query_result(answer.data, out_refund_no=out_refund_no, out_trade_no=out_trade_no)
        except schemas.WireFormatError as exc:
            raise self._bad_shape(answer, str(exc)) from exc
        if found is None:
            return ProviderResult.decline(StandardCode.NOT_FOUND, provider_code=None,
                                          message="no refund with this out_request_no")
        return ProviderResult.success(found)

    async def download_bill(self, bill_date: date) -> list[BillRow]:
        """The ``trade`` bill of ``bill_date``; any refusal raises ProviderUnavailable (see :mod:`.bill`)."""
        answer = await self.api.call(bill.BILL_METHOD, bill.bill_query_biz(bill_date))
        if answer.error is not None:
            result = self._errors.raise_or_decline(answer.error, op="download_bill")
            raise ProviderUnavailable(f"{PROVIDER}: trade bill not available ({result.provider_code})",
                                      provider=PROVIDER, provider_code=result.provider_code)
        url = answer.data.get("bill_download_url")
        try:
            if not isinstance(url, str):
                raise bill.BillFormatError("missing bill_download_url")
            bill.check_download_url(url, self.config.base_url, self._bill_hosts)
        except bill.BillFormatError as exc:
            raise self._bad_shape(answer, str(exc)) from exc
        timeout = httpx.Timeout(self.config.request_timeout_seconds)
        fetched = await send(self.client, httpx.Request("GET", url, extensions={"timeout": timeout.as_dict()}),
                             provider=PROVIDER)
        if fetched.status_code != 200:
            raise ProviderUnavailable(f"{PROVIDER}: bill download answered HTTP {fetched.status_code}",
                                      provider=PROVIDER, http_status=fetched.status_code)
        try:
            return await asyncio.to_thread(bill.decode_bill_zip, fetched.content)
        except bill.BillFormatError as exc:
            raise ProviderUnavailable(f"{PROVIDER}: trade bill refused: {exc}", provider=PROVIDER,
                                      http_status=200) from exc

    # ------------------------------------------------------------------ notifications
    def _form(self, body: bytes) -> dict[str, str]:
        try:
            text = body.decode("ascii")
        except UnicodeDecodeError:
            try:
                text = body.decode(self.config.charset)
            except UnicodeDecodeError as exc:
                raise _reject("malformed_body", "callback body is not form-urlencoded text") from exc
        try:
            first = parse_qsl(text, keep_blank_values=True, encoding="latin-1",
                              max_num_fields=_MAX_FORM_FIELDS)
            charset = dict(first).get("charset") or self.config.charset
            codecs.lookup(charset)
            pairs = parse_qsl(text, keep_blank_values=True, strict_parsing=bool(text), encoding=charset,
                              errors="strict", max_num_fields=_MAX_FORM_FIELDS)
        except (ValueError, LookupError) as exc:
            raise _reject("malformed_body", "callback body is not a valid form") from exc
        form = dict(pairs)
        if len(form) != len(pairs):
            raise _reject("malformed_body", "callback repeats a field")
        return form

    async def parse_notification(self, headers: Mapping[str, str], body: bytes) -> Notification:
        """Verify and parse a callback (§2.5). Messages carry no secrets or personal data."""
        form = self._form(body)
        if not form.get("sign"):
            raise _reject("missing_signature", "callback has no sign field")
        if form.get("sign_type", "RSA2") != "RSA2":
            raise _reject("invalid_signature", "only RSA2 callbacks are accepted")
        charset = form.get("charset") or self.config.charset
        if not signing.verify_notification(self.api.alipay_key, form, charset):
            raise _reject("invalid_signature", "callback signature does not verify with the Alipay key")
        if form.get("app_id") != self.config.app_id:
            raise _reject("app_mismatch", "callback app_id is not this application")
        if form.get("seller_id") != self.config.seller_id:
            raise _reject("merchant_mismatch", "callback seller_id is not this merchant")
        if form.get("notify_type", "trade_status_sync") != "trade_status_sync":
            raise _reject("unsupported_event", "notify_type is not trade_status_sync")
        trade_state = form.get("trade_status", "")
        if trade_state not in NOTIFY_EVENTS:
            raise _reject("unsupported_event", f"trade_status {trade_state[:32]!r} is not handled")
        notify_id = form.get("notify_id")
        if not notify_id:
            raise _reject("malformed_body", "callback has no notify_id")
        try:
            trade = schemas.trade_status(form)
        except schemas.WireFormatError as exc:
            raise _reject("malformed_body", f"callback fields: {exc}") from exc
        return Notification(kind=NotificationKind.PAYMENT, event_id=notify_id, trade=trade)

    def ack(self) -> NotificationReply:
        return NotificationReply(status_code=200, body=b"success", content_type="text/plain")

    def nack(self, code: str, message: str) -> NotificationReply:
        return NotificationReply(status_code=REJECTION_STATUS.get(code, 500), body=b"fail",
                                 content_type="text/plain")

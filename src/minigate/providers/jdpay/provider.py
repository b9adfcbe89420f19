"""JD Pay V2.0 client for the H5 cashier in a mini-program ``<web-view>`` (payment-protocols.md §3).

``create_order`` does no I/O: JD's H5 cashier is a browser form (§3.5), so it returns the signed, 3DES-hex
form for the mini-program to post. Everything else is the server-to-server XML API (§3.4): inner XML ->
S1 signature -> ``<sign>`` inserted -> 3DES -> Base64(hex) -> envelope, POSTed as ``application/xml``;
answers are decrypted and their inner ``<sign>`` verified with JD's public key *before* any field is read
(a bad signature raises :class:`ProviderUnavailable`: someone may be tampering, the outcome is unknown).

Mini-program side: a page holding ``<web-view src="https://your.backend/jdpay/cashier?order=…">`` whose
HTML auto-submits ``client_params``::

    <form id="f" method="POST" action="{{cashier_url}}">
      {% for k, v in fields.items() %}<input type="hidden" name="{{k}}" value="{{v}}">{% endfor %}
    </form><script>document.getElementById("f").submit()</script>

(the ``<web-view>`` domain must be registered as a business domain of the mini-program).

Choices, all documented guesses where JD is silent (§5.6):

* ``close_order``: V2.0 has no close for H5 trades (``/service/revoke`` is for fkmPay only). It queries:
  not found or not paid (created/failed/closed) -> success, the trade simply lapses at ``expireTime``; paid
  -> ``ALREADY_PAID``; status 1 "processing" -> ``DECLINED`` (it may still succeed). A payment that still
  arrives after a "successful" close is reported by notification and must be refunded by the service.
* ``query_refund`` uses ``/service/query`` with ``tradeType=1`` (one refund by its own tradeNum), not
  ``/service/queryRefund`` (all refunds of a trade, ``refList``).
* ``download_bill``: not in the reference for V2.0 -> :class:`OperationNotSupported`.
* Notifications carry no id: ``event_id = f"{tradeType}:{tradeNum}:{status}"`` (stable across JD's retries,
  distinct for each state change).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from datetime import date
from typing import Any, ClassVar

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
from minigate.errors import ConfigurationError, NotificationRejected, OperationNotSupported, ProviderUnavailable
from minigate.providers._http import send
from minigate.providers.bases.payment import CreateOrderRequest, NotificationReply, PaymentProvider, RefundRequest
from minigate.providers.jdpay import crypto, schemas
from minigate.providers.jdpay.codes import DEFAULT_ERROR_MAPPER, SUCCESS, ErrorMapper
from minigate.providers.jdpay.config import JDPayConfig

__all__ = ["PLAIN_FORM_FIELDS", "REJECTION_STATUS", "JDPayProvider", "encrypt_form", "event_id"]

#: Form fields sent in clear; every other value is replaced by its 3DES hex (§3.5).
PLAIN_FORM_FIELDS = frozenset({"merchant", "version", "sign"})
#: HTTP status per notification rejection code (the answer body is always ``fail``).
REJECTION_STATUS: Mapping[str, int] = {
    "malformed_body": 400, "decrypt_failed": 400, "invalid_signature": 400, "merchant_mismatch": 400,
    "unsupported_event": 400,
}
_FORM_ORDER = ("version", "merchant", "tradeNum", "tradeName", "tradeDesc", "tradeTime", "amount", "orderType",
               "currency", "note", "callbackUrl", "notifyUrl", "ip", "userId", "expireTime")


def encrypt_form(des_key: bytes, plain: Mapping[str, str], sign: str) -> dict[str, str]:
    """The posted form: ``sign`` added, every value but merchant/version/sign as 3DES hex (§3.5)."""
    out = {k: (v if k in PLAIN_FORM_FIELDS else crypto.tdes_encrypt_hex(des_key, v))
           for k, v in plain.items() if v != ""}
    out["sign"] = sign
    return out


def event_id(data: Mapping[str, Any]) -> str:
    return f"{data.get('tradeType')}:{data.get('tradeNum')}:{data.get('status')}"


def _reject(code: str, message: str) -> NotificationRejected:
    return NotificationRejected(code, message, http_status=REJECTION_STATUS.get(code, 400))


class JDPayProvider(PaymentProvider):
    """JD Pay V2.0: H5 cashier form, query, refund, refund query, notifications."""

    name: ClassVar[str] = "jdpay"
    channels: ClassVar[frozenset[str]] = frozenset({"jdpay_h5"})

    def __init__(self, config: JDPayConfig, client: httpx.AsyncClient, *, clock: Callable[[], float] = time.time,
                 error_mapper: ErrorMapper = DEFAULT_ERROR_MAPPER) -> None:
        super().__init__(client)
        self.config = config
        self._clock = clock
        self._errors = error_mapper
        try:
            self._private_key = crypto.load_private_key(config.merchant_private_key.get_secret_value())
        except crypto.CryptoError as exc:
            raise ConfigurationError("merchant_private_key is not a readable RSA private key") from exc
        try:
            self._jd_key = crypto.load_public_key(config.jd_public_key)
        except crypto.CryptoError as exc:
            raise ConfigurationError("jd_public_key is not a readable RSA public key") from exc
        try:
            self._des_key = crypto.decode_des_key(config.des_key.get_secret_value())
        except crypto.CryptoError as exc:
            raise ConfigurationError("des_key must be Base64 of 24 bytes") from exc
        self._base = config.base_url.rstrip("/")

    # ------------------------------------------------------------------ the H5 cashier form (no I/O)
    def form_fields(self, req: CreateOrderRequest) -> dict[str, str]:
        """The plaintext form of §3.5 (before signing and encryption)."""
        if req.currency != "CNY":
            raise ValueError("JD Pay V2.0 takes CNY only")
        if req.amount <= 0:
            raise ValueError("amount must be positive")
        now = self._clock()
        expire = ""
        if req.expires_at is not None:
            if self.config.expire_time_format == "datetime":
                expire = schemas.format_time(req.expires_at)
            else:
                expire = str(max(60, int(req.expires_at.timestamp() - now)))
        values = {
            "version": schemas.VERSION, "merchant": self.config.merchant, "tradeNum": req.out_trade_no,
            "tradeName": req.description, "tradeDesc": req.description, "tradeTime": schemas.format_time(now),
            "amount": str(req.amount), "orderType": self.config.order_type, "currency": req.currency,
            "note": req.attach or "", "callbackUrl": self.config.callback_url or req.return_url or req.notify_url,
            "notifyUrl": req.notify_url, "ip": req.client_ip or "", "userId": req.payer_id, "expireTime": expire,
        }
        return {k: values[k] for k in _FORM_ORDER if values[k] != ""}

    def build_checkout(self, req: CreateOrderRequest) -> Checkout:
        plain = self.form_fields(req)
        sign = crypto.rsa_sign(self._private_key, crypto.form_s1(plain))
        fields = encrypt_form(self._des_key, plain, sign)
        return Checkout(client_params={"cashier_url": self.config.cashier_url, "method": "POST", "fields": fields},
                        provider_order_ref=None)

    async def create_order(self, req: CreateOrderRequest) -> ProviderResult[Checkout]:
        try:
            return ProviderResult.success(self.build_checkout(req))
        except ValueError as exc:
            return ProviderResult.decline(StandardCode.INVALID_REQUEST, provider_code=None, message=str(exc))

    # ------------------------------------------------------------------ server API: requests
    def sign_xml(self, fields: list[tuple[str, schemas.Value]]) -> str:
        """Inner XML (version, merchant first) with ``<sign>`` inserted before ``</jdpay>``."""
        inner = schemas.build_xml([("version", schemas.VERSION), ("merchant", self.config.merchant), *fields])
        return crypto.insert_sign(inner, crypto.rsa_sign(self._private_key, crypto.xml_s1(inner)))

    def build_request(self, path: str, fields: list[tuple[str, schemas.Value]]) -> httpx.Request:
        encrypted = crypto.envelope_encrypt(self._des_key, self.sign_xml(fields))
        body = schemas.build_envelope(self.config.merchant, encrypted).encode()
        timeout = httpx.Timeout(self.config.request_timeout_seconds)
        return httpx.Request("POST", self._base + path, content=body,
                             headers={"Content-Type": "application/xml;charset=utf-8", "Accept": "application/xml"},
                             extensions={"timeout": timeout.as_dict()})

    def build_query_order(self, out_trade_no: str) -> httpx.Request:
        return self.build_request("/service/query", [("tradeNum", out_trade_no), ("tradeType", "0")])

    def build_refund(self, req: RefundRequest) -> httpx.Request:
        return self.build_request("/service/refund", [
            ("tradeNum", req.out_refund_no), ("oTradeNum", req.out_trade_no), ("amount", str(req.amount)),
            ("currency", req.currency), ("tradeTime", schemas.format_time(self._clock())),
            ("notifyUrl", req.notify_url or ""), ("note", req.reason or "")])

    def build_query_refund(self, out_refund_no: str, out_trade_no: str) -> httpx.Request:
        return self.build_request("/service/query", [("tradeNum", out_refund_no), ("oTradeNum", out_trade_no),
                                                     ("tradeType", "1")])

    # ------------------------------------------------------------------ server API: answers
    def _unavailable(self, what: str, response: httpx.Response | None = None) -> ProviderUnavailable:
        return ProviderUnavailable(f"{self.name}: {what}", provider=self.name,
                                   http_status=response.status_code if response is not None else None)

    def open_answer(self, response: httpx.Response, *, op: str) -> ProviderResult[dict[str, Any]]:
        """Check the outer result, decrypt, verify JD's signature, then (only then) read the fields."""
        if response.status_code != 200:
            raise self._unavailable(f"{op}: HTTP {response.status_code}", response)
        try:
            envelope = schemas.parse_envelope(response.content.decode())
        except (UnicodeDecodeError, schemas.WireFormatError) as exc:
            raise self._unavailable(f"{op}: answer is not a JD envelope", response) from exc
        if envelope.code != SUCCESS:
            return self._errors.raise_or_decline(envelope.code, envelope.desc, op=op)
        if not envelope.encrypt:
            raise self._unavailable(f"{op}: successful answer without <encrypt>", response)
        try:
            inner = crypto.envelope_decrypt(self._des_key, envelope.encrypt)
        except crypto.CryptoError as exc:
            raise self._unavailable(f"{op}: answer does not decrypt with des_key", response) from exc
        sign = crypto.xml_sign_value(inner)
        if not sign or not crypto.rsa_verify(self._jd_key, crypto.xml_s1(inner), sign):
            raise self._unavailable(f"{op}: answer signature does not verify with jd_public_key", response)
        try:
            data = schemas.xml_fields(schemas.parse_xml(inner))
        except schemas.WireFormatError as exc:
            raise self._unavailable(f"{op}: signed answer is not readable XML", response) from exc
        if data.get("merchant") not in (None, self.config.merchant):
            raise self._unavailable(f"{op}: answer is for another merchant", response)
        result = data.get("result")
        if isinstance(result, dict) and result.get("code") not in (None, SUCCESS):
            return self._errors.raise_or_decline(result.get("code"), result.get("desc"), op=op)
        return ProviderResult.success(data)

    async def _call(self, request: httpx.Request, op: str) -> ProviderResult[dict[str, Any]]:
        return self.open_answer(await send(self.client, request, provider=self.name), op=op)

    def _convert(self, result: ProviderResult[dict[str, Any]], convert: Callable[[dict[str, Any]], Any],
                 op: str, *, trade_num: str) -> ProviderResult[Any]:
        if not result.ok or result.value is None:
            return result
        if result.value.get("tradeNum") not in (None, trade_num):  # a genuine answer, but about another trade
            raise self._unavailable(f"{op}: answer is about another tradeNum")
        try:
            return ProviderResult.success(convert(result.value))
        except schemas.WireFormatError as exc:
            raise self._unavailable(f"{op}: unexpected answer shape ({exc})") from exc

    # ------------------------------------------------------------------ PaymentProvider
    async def query_order(self, out_trade_no: str) -> ProviderResult[TradeStatus]:
        result = await self._call(self.build_query_order(out_trade_no), "query_order")
        return self._convert(result, lambda d: schemas.trade_status(d, out_trade_no=out_trade_no), "query_order",
                             trade_num=out_trade_no)

    async def close_order(self, out_trade_no: str) -> ProviderResult[None]:
        found = await self.query_order(out_trade_no)
        if not found.ok:
            if found.code is StandardCode.NOT_FOUND:   # never opened in the cashier: nothing to close
                return ProviderResult.success(None)
            return ProviderResult.decline(found.code, provider_code=found.provider_code, message=found.message)
        assert found.value is not None
        if found.value.state in (TradeState.PAID, TradeState.REFUNDED):
            return ProviderResult.decline(StandardCode.ALREADY_PAID, provider_code="2", message="trade is paid")
        if found.value.raw.get("status") == "1":
            return ProviderResult.decline(StandardCode.DECLINED, provider_code="1",
                                          message="payment in progress; query again")
        return ProviderResult.success(None)

    async def refund(self, req: RefundRequest) -> ProviderResult[RefundStatus]:
        result = await self._call(self.build_refund(req), "refund")
        return self._convert(result, lambda d: schemas.refund_status(d, out_refund_no=req.out_refund_no), "refund",
                             trade_num=req.out_refund_no)

    async def query_refund(self, out_refund_no: str, *, out_trade_no: str) -> ProviderResult[RefundStatus]:
        result = await self._call(self.build_query_refund(out_refund_no, out_trade_no), "query_refund")
        converted: ProviderResult[RefundStatus] = self._convert(
            result, lambda d: schemas.refund_status(d, out_refund_no=out_refund_no), "query_refund",
            trade_num=out_refund_no)
        found = converted.value
        if found is not None and found.out_trade_no not in (None, out_trade_no):
            return ProviderResult.decline(StandardCode.NOT_FOUND, provider_code=None,
                                          message="refund belongs to another out_trade_no")
        return converted

    async def download_bill(self, bill_date: date) -> list[BillRow]:
        raise OperationNotSupported("jdpay: V2.0 bill download is not supported", provider=self.name)

    # ------------------------------------------------------------------ notifications (§3.6)
    async def parse_notification(self, headers: Mapping[str, str], body: bytes) -> Notification:
        """Decrypt, verify (literal-text S1), check merchant, classify. Messages carry no secrets."""
        try:
            envelope = schemas.parse_envelope(body.decode())
        except (UnicodeDecodeError, schemas.WireFormatError) as exc:
            raise _reject("malformed_body", "callback body is not a JD envelope") from exc
        if not envelope.encrypt:
            raise _reject("malformed_body", "callback envelope has no <encrypt>")
        try:
            inner = crypto.envelope_decrypt(self._des_key, envelope.encrypt)
        except crypto.CryptoError as exc:
            raise _reject("decrypt_failed", "encrypt does not decrypt with des_key") from exc
        sign = crypto.xml_sign_value(inner)
        if not sign or not crypto.rsa_verify(self._jd_key, crypto.xml_s1(inner), sign):
            raise _reject("invalid_signature", "callback signature does not verify with jd_public_key")
        try:
            data = schemas.xml_fields(schemas.parse_xml(inner))
        except schemas.WireFormatError as exc:
            raise _reject("malformed_body", "decrypted callback is not JD XML") from exc
        if data.get("merchant") != self.config.merchant or envelope.merchant not in (None, self.config.merchant):
            raise _reject("merchant_mismatch", "callback merchant is not this merchant")
        trade_type, status = data.get("tradeType"), data.get("status")
        try:
            # Every known status is parsed, not only the final ones: the service validates the fields (the
            # amount, B-2) of any verified view and applies it; a non-final view changes nothing.
            if trade_type == "0" and status in schemas.TRADE_STATES:
                return Notification(kind=NotificationKind.PAYMENT, event_id=event_id(data),
                                    trade=schemas.trade_status(data))
            if trade_type == "1" and status in schemas.REFUND_STATES:
                return Notification(kind=NotificationKind.REFUND, event_id=event_id(data),
                                    refund=schemas.refund_status(data))
        except schemas.WireFormatError as exc:
            raise _reject("malformed_body", f"callback shape: {exc}") from exc
        raise _reject("unsupported_event", f"tradeType {str(trade_type)[:8]!r} status {str(status)[:8]!r}")

    def ack(self) -> NotificationReply:
        return NotificationReply(status_code=200, body=self.config.notify_ack_body.encode(),
                                 content_type="text/plain")

    def nack(self, code: str, message: str) -> NotificationReply:
        return NotificationReply(status_code=400, body=b"fail", content_type="text/plain")

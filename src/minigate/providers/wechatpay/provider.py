"""WeChat Pay API v3 client for mini-program (JSAPI) payments (payment-protocols.md §1).

Each operation is ``build_<op>(...) -> httpx.Request`` (signed, pure apart from clock and nonce) and
``parse_<op>(httpx.Response) -> ProviderResult`` (pure), joined by :meth:`WeChatPayProvider._exchange`, which
sends over the injected client and verifies every 2xx answer *before* anything reads it. A 2xx that does not
verify raises :class:`ProviderUnavailable` (someone may be tampering: the outcome is unknown, not a decline).

Signing: the canonical URL is the path + query *as sent*, minus the path prefix of ``config.base_url``
(``http://sandbox/wechatpay`` signs ``/v3/...``). The body bytes signed are the bytes sent.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Mapping
from datetime import date
from typing import Any, ClassVar, TypeVar
from urllib.parse import quote, urlencode

import httpx
from cryptography.hazmat.primitives.asymmetric import rsa

from minigate.domain.results import (
    BillRow,
    Checkout,
    Notification,
    NotificationKind,
    ProviderResult,
    RefundStatus,
    StandardCode,
    TradeStatus,
)
from minigate.errors import ConfigurationError, NotificationRejected, ProviderUnavailable
from minigate.providers._http import send
from minigate.providers.bases.payment import (
    CreateOrderRequest,
    NotificationReply,
    PaymentProvider,
    RefundRequest,
)
from minigate.providers.wechatpay import bill, schemas, signing
from minigate.providers.wechatpay.codes import DEFAULT_ERROR_MAPPER, ErrorMapper, request_id_of
from minigate.providers.wechatpay.config import WeChatPayConfig
from minigate.providers.wechatpay.keys import VerificationKeyStore

__all__ = ["REJECTION_STATUS", "USER_AGENT", "WeChatPayProvider", "build_pay_params"]

T = TypeVar("T")

USER_AGENT = "minigate/0.1 (wechatpay-apiv3)"

#: HTTP status for each notification rejection code: 400 = the callback is at fault, 500 = we are (or may be);
#: WeChat retries on both. Codes a service invents (e.g. ``amount_mismatch``) get 500 from :meth:`nack`.
REJECTION_STATUS: Mapping[str, int] = {
    "missing_signature_headers": 400, "signature_probe": 400, "timestamp_out_of_window": 400,
    "invalid_signature": 400, "malformed_body": 400, "unsupported_event": 400, "merchant_mismatch": 400,
    "app_mismatch": 400, "unknown_serial": 500, "decrypt_failed": 500,
}

_REFUND_EVENTS = frozenset({"REFUND.SUCCESS", "REFUND.ABNORMAL", "REFUND.CLOSED"})
_PAYMENT_EVENTS = frozenset({"TRANSACTION.SUCCESS"})


def build_pay_params(key: WeChatPayConfig | rsa.RSAPrivateKey, appid: str, prepay_id: str, timestamp: str,
                     nonce: str) -> dict[str, str]:
    """``wx.requestPayment`` parameters (§1.5); paySign covers the mini-program ``appid`` (not sent)."""
    private = key if isinstance(key, rsa.RSAPrivateKey) else signing.load_private_key(
        key.merchant_private_key.get_secret_value())
    package = f"prepay_id={prepay_id}"
    pay_sign = signing.rsa_sign(private, signing.pay_sign_message(appid, timestamp, nonce, package))
    return {"timeStamp": timestamp, "nonceStr": nonce, "package": package, "signType": "RSA",
            "paySign": pay_sign}


def _reject(code: str, message: str) -> NotificationRejected:
    return NotificationRejected(code, message, http_status=REJECTION_STATUS.get(code, 500))


class WeChatPayProvider(PaymentProvider):
    """Direct-merchant WeChat Pay v3: JSAPI prepay, query, close, refund, notifications, trade bill."""

    name: ClassVar[str] = "wechatpay"
    channels: ClassVar[frozenset[str]] = frozenset({"wechat_mini"})

    def __init__(self, config: WeChatPayConfig, client: httpx.AsyncClient, *,
                 clock: Callable[[], float] = time.time, error_mapper: ErrorMapper = DEFAULT_ERROR_MAPPER,
                 min_certificate_refresh_interval: float = 60.0) -> None:
        super().__init__(client)
        self.config = config
        self._clock = clock
        self._errors = error_mapper
        try:
            self._private_key = signing.load_private_key(config.merchant_private_key.get_secret_value())
        except (ValueError, TypeError) as exc:
            raise ConfigurationError("merchant_private_key is not a readable RSA private key") from exc
        self._base = config.base_url.rstrip("/")
        self._prefix = httpx.URL(self._base).raw_path.decode("ascii").split("?")[0].rstrip("/")
        self.keys = VerificationKeyStore(config, fetch_certificates=self._fetch_certificates, clock=clock,
                                         min_refresh_interval=min_certificate_refresh_interval)

    # ------------------------------------------------------------------ requests
    def build_request(self, method: str, path: str, *, params: Mapping[str, str] | None = None,
                      body: bytes | None = None, wechatpay_serial: str | None = None,
                      send_serial: bool = True, accept: str = "application/json") -> httpx.Request:
        """A signed request for ``path`` (provider path, may already hold a query) on ``config.base_url``."""
        target = path + (("&" if "?" in path else "?") + urlencode(params, quote_via=quote) if params else "")
        headers = {"Accept": accept, "User-Agent": USER_AGENT}
        if body is not None:
            headers["Content-Type"] = "application/json"
        serial = wechatpay_serial
        if serial is None and send_serial:      # answers then come signed with the public key we hold
            serial = self.keys.public_key_id
        if serial:
            headers["Wechatpay-Serial"] = serial
        timeout = httpx.Timeout(self.config.request_timeout_seconds)
        request = httpx.Request(method, self._base + target, headers=headers, content=body,
                                extensions={"timeout": timeout.as_dict()})
        sent = request.url.raw_path.decode("ascii")
        if not sent.startswith(self._prefix + "/"):
            raise ValueError("request path escapes the base_url prefix")
        auth = signing.build_authorization(
            key=self._private_key, mchid=self.config.mchid, serial_no=self.config.merchant_serial_no,
            method=method, canonical_url=sent[len(self._prefix):], body=body or b"",
            timestamp=str(int(self._clock())), nonce=signing.new_nonce())
        request.headers["Authorization"] = auth.header()
        return request

    def build_create_order(self, req: CreateOrderRequest) -> httpx.Request:
        body = schemas.jsapi_body(req, appid=self.config.appid, mchid=self.config.mchid)
        return self.build_request("POST", "/v3/pay/transactions/jsapi", body=body)

    def build_query_order(self, out_trade_no: str) -> httpx.Request:
        return self.build_request("GET", f"/v3/pay/transactions/out-trade-no/{quote(out_trade_no, safe='')}",
                                  params={"mchid": self.config.mchid})

    def build_close_order(self, out_trade_no: str) -> httpx.Request:
        path = f"/v3/pay/transactions/out-trade-no/{quote(out_trade_no, safe='')}/close"
        return self.build_request("POST", path, body=schemas.close_body(self.config.mchid))

    def build_refund(self, req: RefundRequest) -> httpx.Request:
        return self.build_request("POST", "/v3/refund/domestic/refunds", body=schemas.refund_body(req))

    def build_query_refund(self, out_refund_no: str) -> httpx.Request:
        return self.build_request("GET", f"/v3/refund/domestic/refunds/{quote(out_refund_no, safe='')}")

    def build_bill_query(self, bill_date: date) -> httpx.Request:
        return self.build_request("GET", bill.BILL_PATH, params=bill.bill_query(bill_date))

    def build_bill_download(self, download_url: str) -> httpx.Request:
        """GET the path + query of ``download_url`` on *our* base_url (never the host the URL names)."""
        return self.build_request("GET", bill.download_path(download_url, prefix=self._prefix), accept="*/*")

    # ------------------------------------------------------------------ answers
    def _unavailable(self, response: httpx.Response, what: str) -> ProviderUnavailable:
        return ProviderUnavailable(f"{self.name}: {what}", provider=self.name,
                                   request_id=request_id_of(response), http_status=response.status_code)

    def _json(self, response: httpx.Response) -> dict[str, Any]:
        try:
            data = json.loads(response.content)
        except ValueError:
            data = None
        if not isinstance(data, dict):
            raise self._unavailable(response, "2xx answer is not a JSON object")
        return data

    def _parsed(self, response: httpx.Response, convert: Callable[[dict[str, Any]], T]) -> ProviderResult[T]:
        try:
            value = convert(self._json(response))
        except schemas.WireFormatError as exc:
            raise self._unavailable(response, f"unexpected answer shape ({exc})") from exc
        return ProviderResult.success(value, request_id=request_id_of(response))

    def parse_create_order(self, response: httpx.Response, *, timestamp: str | None = None,
                           nonce: str | None = None) -> ProviderResult[Checkout]:
        if not response.is_success:
            return self._errors.raise_or_decline(response, op="create_order")

        def convert(data: dict[str, Any]) -> Checkout:
            prepay_id = data.get("prepay_id")
            if not isinstance(prepay_id, str) or not prepay_id:
                raise schemas.WireFormatError("missing prepay_id")
            params = build_pay_params(self._private_key, self.config.appid, prepay_id,
                                      timestamp or str(int(self._clock())), nonce or signing.new_nonce())
            return Checkout(client_params=params, provider_order_ref=prepay_id)

        return self._parsed(response, convert)

    def parse_query_order(self, response: httpx.Response) -> ProviderResult[TradeStatus]:
        if not response.is_success:
            return self._errors.raise_or_decline(response, op="query_order")
        return self._parsed(response, schemas.trade_status)

    def parse_close_order(self, response: httpx.Response) -> ProviderResult[None]:
        if not response.is_success:
            return self._errors.raise_or_decline(response, op="close_order")
        return ProviderResult(ok=True, value=None, request_id=request_id_of(response))

    def parse_refund(self, response: httpx.Response) -> ProviderResult[RefundStatus]:
        if not response.is_success:
            return self._errors.raise_or_decline(response, op="refund")
        return self._parsed(response, schemas.refund_status)

    def parse_query_refund(self, response: httpx.Response, *, out_trade_no: str | None = None
                           ) -> ProviderResult[RefundStatus]:
        if not response.is_success:
            return self._errors.raise_or_decline(response, op="query_refund")
        result = self._parsed(response, schemas.refund_status)
        found = result.value.out_trade_no if result.value else None
        if out_trade_no is not None and found is not None and found != out_trade_no:
            return ProviderResult.decline(StandardCode.NOT_FOUND, provider_code=None,
                                          message="refund belongs to another out_trade_no",
                                          request_id=result.request_id)
        return result

    # ------------------------------------------------------------------ transport
    async def _exchange(self, request: httpx.Request) -> httpx.Response:
        """Send; verify a 2xx answer's signature before anyone reads it. Errors pass through unverified."""
        response = await send(self.client, request, provider=self.name)
        if response.is_success:
            problem = await self.keys.check(response.headers, response.content)
            if problem is not None:
                raise self._unavailable(response, f"2xx answer failed verification ({problem})")
        return response

    async def _fetch_certificates(self) -> httpx.Response:
        # No Wechatpay-Serial: the answer must be signed by a platform certificate, not the public key.
        return await send(self.client, self.build_request("GET", "/v3/certificates", send_serial=False),
                          provider=self.name)

    # ------------------------------------------------------------------ PaymentProvider
    async def create_order(self, req: CreateOrderRequest) -> ProviderResult[Checkout]:
        return self.parse_create_order(await self._exchange(self.build_create_order(req)))

    async def query_order(self, out_trade_no: str) -> ProviderResult[TradeStatus]:
        return self.parse_query_order(await self._exchange(self.build_query_order(out_trade_no)))

    async def close_order(self, out_trade_no: str) -> ProviderResult[None]:
        return self.parse_close_order(await self._exchange(self.build_close_order(out_trade_no)))

    async def refund(self, req: RefundRequest) -> ProviderResult[RefundStatus]:
        return self.parse_refund(await self._exchange(self.build_refund(req)))

    async def query_refund(self, out_refund_no: str, *, out_trade_no: str) -> ProviderResult[RefundStatus]:
        response = await self._exchange(self.build_query_refund(out_refund_no))
        return self.parse_query_refund(response, out_trade_no=out_trade_no)

    async def encrypt_sensitive(self, plaintext: str) -> tuple[str, str]:
        """OAEP-encrypt a sensitive field (§1.11); send it with ``wechatpay_serial=<returned serial>``."""
        serial, key = await self.keys.encryption_key()
        return signing.oaep_encrypt(key, plaintext), serial

    async def download_bill(self, bill_date: date) -> list[BillRow]:
        """The ``ALL`` trade bill of ``bill_date``; refusals (e.g. no bill yet) raise ProviderUnavailable."""
        located = await self._exchange(self.build_bill_query(bill_date))
        if not located.is_success:
            result = self._errors.raise_or_decline(located, op="download_bill")
            raise ProviderUnavailable(f"{self.name}: trade bill not available ({result.provider_code})",
                                      provider=self.name, provider_code=result.provider_code,
                                      request_id=result.request_id, http_status=located.status_code)
        try:
            info = bill.parse_bill_info(self._json(located))
        except bill.BillFormatError as exc:
            raise self._unavailable(located, str(exc)) from exc
        # The file itself is not signed (§1.3); its integrity is the hash from the signed answer above.
        fetched = await send(self.client, self.build_bill_download(info.download_url), provider=self.name)
        if fetched.status_code != 200:
            self._errors.raise_or_decline(fetched, op="download_bill")
            raise self._unavailable(fetched, "trade bill file refused")
        try:
            return await asyncio.to_thread(bill.decode_trade_bill, fetched.content, info)
        except bill.BillFormatError as exc:
            raise self._unavailable(fetched, f"trade bill refused: {exc}") from exc

    # ------------------------------------------------------------------ notifications
    async def parse_notification(self, headers: Mapping[str, str], body: bytes) -> Notification:
        """Verify, decrypt, validate a callback (§1.7, §1.8). Messages carry no secrets or personal data."""
        problem = await self.keys.check(headers, body)
        if problem is not None:
            raise _reject(problem, "callback signature could not be verified")
        try:
            envelope = json.loads(body)
        except ValueError:
            envelope = None
        resource = envelope.get("resource") if isinstance(envelope, dict) else None
        if (not isinstance(envelope, dict) or not isinstance(resource, dict)
                or not isinstance(envelope.get("id"), str) or not isinstance(envelope.get("event_type"), str)
                or not all(isinstance(resource.get(k), str) for k in ("ciphertext", "nonce"))
                or not isinstance(resource.get("associated_data", ""), str)):
            raise _reject("malformed_body", "callback body is not a WeChat event")
        if resource.get("algorithm") != "AEAD_AES_256_GCM":
            raise _reject("decrypt_failed", "unsupported resource algorithm")
        try:
            apiv3_key = self.config.apiv3_key.get_secret_value().encode()
            aad = resource.get("associated_data") or ""
            plain = signing.aes_gcm_decrypt(apiv3_key, resource["nonce"], aad, resource["ciphertext"])
            data = json.loads(plain)
        except ValueError as exc:
            raise _reject("decrypt_failed", "resource does not decrypt with the APIv3 key") from exc
        if not isinstance(data, dict):
            raise _reject("decrypt_failed", "decrypted resource is not a JSON object")
        event_type: str = envelope["event_type"]
        if event_type not in _PAYMENT_EVENTS and event_type not in _REFUND_EVENTS:
            raise _reject("unsupported_event", f"event type {event_type[:64]!r} is not handled")
        if data.get("mchid") != self.config.mchid:
            raise _reject("merchant_mismatch", "resource mchid is not this merchant")
        try:
            if event_type in _PAYMENT_EVENTS:
                if data.get("appid") != self.config.appid:
                    raise _reject("app_mismatch", "resource appid is not this mini-program")
                return Notification(kind=NotificationKind.PAYMENT, event_id=envelope["id"],
                                    trade=schemas.trade_status(data))
            return Notification(kind=NotificationKind.REFUND, event_id=envelope["id"],
                                refund=schemas.refund_status(data))
        except schemas.WireFormatError as exc:
            raise _reject("malformed_body", f"resource shape: {exc}") from exc

    def ack(self) -> NotificationReply:
        return NotificationReply(status_code=204)

    def nack(self, code: str, message: str) -> NotificationReply:
        body = schemas.dumps({"code": "FAIL", "message": message[:200]})
        return NotificationReply(status_code=REJECTION_STATUS.get(code, 500), body=body)

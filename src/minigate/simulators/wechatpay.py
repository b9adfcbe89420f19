"""WeChat Pay API v3 simulator (direct merchant, JSAPI / mini-program), an ASGI app.

Speaks the wire protocol of ``payment-protocols.md`` §1 with real cryptography, all of it from
:mod:`minigate.providers.wechatpay.signing` (the code the client uses): requests are verified
(Authorization, timestamp window, nonce replay), 2xx answers and notifications are signed, notifications
are AES-256-GCM encrypted with the merchant's APIv3 key and delivered on WeChat's retry schedule (§1.7).

Control routes (no Authorization; the sandbox is local): ``POST /_sandbox/pay`` (and ``/_sandbox/fail``: the
payment fails, PAYERROR; ``/_sandbox/expire``: the order's time_expire passes unpaid, CLOSED), ``GET|POST|DELETE
/_sandbox/faults``, ``GET|POST /_sandbox/settings``, ``GET /_sandbox/orders/{out_trade_no}``,
``GET /_sandbox/notifications``.

Layout: this module holds the app, authentication, routing, control routes and notification sending; the
``/v3`` handlers are the :class:`~minigate.simulators._wechatpay_handlers.V3Handlers` mixin and the wire
rules (records, validation, JSON, bill) live in :mod:`minigate.simulators._wechatpay_wire`.

Guesses (see §5.1/§5.2 of the reference) are marked ``[guess]`` next to the error they produce.
"""

from __future__ import annotations

import asyncio
import base64
import re
import secrets
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from minigate.providers.wechatpay import signing
from minigate.simulators._core import (
    Clock,
    CredentialStore,
    Deliverer,
    Faults,
    Outgoing,
    fault_routes,
    generate_rsa_private_key_pem,
    json_bytes,
    json_response,
    public_key_pem,
    read_json_object,
    rfc3339,
    self_signed_certificate_pem,
)
from minigate.simulators._wechatpay_handlers import V3Handlers
from minigate.simulators._wechatpay_wire import _ALNUM, _digits

# The wire rules moved to ``_wechatpay_wire``; re-exported so ``wechatpay.Order`` etc. keep working.
from minigate.simulators._wechatpay_wire import BILL_TOKEN_TTL as BILL_TOKEN_TTL
from minigate.simulators._wechatpay_wire import PREPAY_TTL as PREPAY_TTL
from minigate.simulators._wechatpay_wire import Order as Order
from minigate.simulators._wechatpay_wire import Problem as Problem
from minigate.simulators._wechatpay_wire import Refund as Refund
from minigate.simulators._wechatpay_wire import Reply as Reply
from minigate.simulators._wechatpay_wire import bill_csv as bill_csv
from minigate.simulators._wechatpay_wire import err as err
from minigate.simulators._wechatpay_wire import parse_time as parse_time
from minigate.simulators._wechatpay_wire import transaction_json as transaction_json
from minigate.simulators._wechatpay_wire import validate_prepay as validate_prepay
from minigate.simulators._wechatpay_wire import validate_refund as validate_refund

__all__ = ["CALLBACK_KEYS", "RETRY_SCHEDULE", "MERCHANT_FIELDS", "WeChatPaySimulator", "create_credentials"]

#: §1.7: 15s/15s/30s/3m/10m/20m/30m/30m/30m/60m/3h/3h/3h/6h/6h.
RETRY_SCHEDULE = (15, 15, 30, 180, 600, 1200, 1800, 1800, 1800, 3600, 10800, 10800, 10800, 21600, 21600)
MERCHANT_FIELDS = ("mchid", "appid", "app_secret", "merchant_serial_no", "merchant_private_key", "apiv3_key",
                   "platform_public_key", "platform_public_key_id", "platform_certificate")
CALLBACK_KEYS = ("auto", "public_key", "certificate", "mixed")
TIMESTAMP_TOLERANCE = 300


def create_credentials() -> dict[str, Any]:
    """Fresh merchant and platform material.

    Like real WeChat Pay, the platform certificate and the WeChat Pay public key are two different key pairs.
    """
    mchid = "19" + _digits(8)
    merchant_key = generate_rsa_private_key_pem()
    merchant_cert = self_signed_certificate_pem(merchant_key, common_name=mchid, organization="微信商户系统")
    platform_key = generate_rsa_private_key_pem()
    platform_cert = self_signed_certificate_pem(platform_key, common_name="Tenpay.com Root CA (sandbox)",
                                                organization="Tenpay.com")
    pubkey_key = generate_rsa_private_key_pem()
    today = time.strftime("%Y%m%d", time.gmtime())
    merchant = {
        "mchid": mchid,
        "appid": "wx" + secrets.token_hex(8),
        "app_secret": secrets.token_hex(16),
        "merchant_serial_no": signing.certificate_serial(signing.load_certificate(merchant_cert)),
        "merchant_private_key": merchant_key,
        "apiv3_key": "".join(secrets.choice(_ALNUM) for _ in range(32)),
        "platform_public_key": public_key_pem(pubkey_key),
        "platform_public_key_id": "PUB_KEY_ID_" + ("01" + mchid + today + _digits(34))[:34],
        "platform_certificate": platform_cert,
    }
    return {"merchant": merchant,
            "simulator": {"merchant_certificate": merchant_cert, "platform_private_key": platform_key,
                          "public_key_private_key": pubkey_key, "openid_secret": secrets.token_hex(32)}}


def _error(status: int, code: str, message: str, request_id: str, detail: dict[str, Any] | None = None,
           ) -> Response:
    body: dict[str, Any] = {"code": code, "message": message}
    if detail:
        body["detail"] = detail
    return json_response(body, status, {"Request-ID": request_id})


Handler = Callable[[Request, "re.Match[str]", bytes], Awaitable[Reply]]


class WeChatPaySimulator(V3Handlers):
    """One simulated merchant account. ``app`` is the ASGI app (mount it anywhere)."""

    name = "wechatpay"

    def __init__(self, store: CredentialStore, *, clock: Clock, deliverer: Deliverer,
                 faults: Faults | None = None) -> None:
        data = store.load_or_create("wechatpay", create_credentials)
        self.merchant: dict[str, str] = data["merchant"]
        sim = data["simulator"]
        self.clock = clock
        self.deliverer = deliverer
        self.faults = faults or Faults()
        self.settings: dict[str, Any] = {"callback_key": "auto", "refund_delay_seconds": 0.0}
        self._apiv3_key = self.merchant["apiv3_key"].encode()
        self._merchant_public = signing.load_public_key(sim["merchant_certificate"])
        self._cert = signing.load_certificate(self.merchant["platform_certificate"])
        self._keys = {
            "certificate": (signing.load_private_key(sim["platform_private_key"]),
                            signing.certificate_serial(self._cert)),
            "public_key": (signing.load_private_key(sim["public_key_private_key"]),
                           self.merchant["platform_public_key_id"]),
        }
        self.orders: dict[str, Order] = {}
        self.refunds: dict[str, Refund] = {}
        self._nonces: dict[str, float] = {}
        self._bills: dict[str, tuple[bytes, float]] = {}
        self._mixed = 0
        self._routes: list[tuple[str, re.Pattern[str], Handler]] = [
            ("POST", re.compile(r"/v3/pay/transactions/jsapi"), self._prepay),
            ("GET", re.compile(r"/v3/pay/transactions/out-trade-no/([^/]+)"), self._query_by_out_trade_no),
            ("GET", re.compile(r"/v3/pay/transactions/id/([^/]+)"), self._query_by_id),
            ("POST", re.compile(r"/v3/pay/transactions/out-trade-no/([^/]+)/close"), self._close),
            ("POST", re.compile(r"/v3/refund/domestic/refunds"), self._refund),
            ("GET", re.compile(r"/v3/refund/domestic/refunds/([^/]+)"), self._query_refund),
            ("GET", re.compile(r"/v3/certificates"), self._certificates),
            ("GET", re.compile(r"/v3/bill/tradebill"), self._tradebill),
            ("GET", re.compile(r"/v3/billdownload/file"), self._billdownload),
        ]
        self.app = Starlette(routes=[
            *fault_routes(self.faults),
            *self._control_routes(),
            Route("/v3/{rest:path}", self._api, methods=["GET", "POST", "PUT", "PATCH", "DELETE"]),
        ])

    # ------------------------------------------------------------------ time, keys

    def now(self) -> float:
        """The simulator's clock: the shared clock plus the ``clock_skew_seconds`` fault."""
        return self.clock.now() + self.faults.clock_skew_seconds

    def credentials(self) -> dict[str, str]:
        return {k: self.merchant[k] for k in MERCHANT_FIELDS}

    def _choose_key(self, request_serial: str | None) -> str:
        mode = self.settings["callback_key"]
        if mode == "mixed":
            self._mixed += 1
            return ("public_key", "certificate")[self._mixed % 2]
        if mode == "auto":
            if request_serial is None:  # notifications: the recommended public-key mode
                return "public_key"
            return "public_key" if request_serial.startswith("PUB_KEY_ID_") else "certificate"
        return str(mode)

    def signed_headers(self, key_name: str, body: bytes, *, probe: bool = False) -> dict[str, str]:
        key, serial = self._keys[key_name]
        timestamp, nonce = str(int(self.now())), signing.new_nonce()
        signature = signing.rsa_sign(key, signing.response_message(timestamp, nonce, body))
        if probe:
            signature = signing.SIGNTEST_PREFIX + base64.b64encode(secrets.token_bytes(240)).decode()
        return {"Wechatpay-Timestamp": timestamp, "Wechatpay-Nonce": nonce, "Wechatpay-Signature": signature,
                "Wechatpay-Serial": serial, "Wechatpay-Signature-Type": signing.AUTH_SCHEME}

    # ------------------------------------------------------------------ request pipeline

    def _authenticate(self, request: Request, canonical_url: str, body: bytes) -> str | None:
        auth = signing.parse_authorization(request.headers.get("authorization", ""))
        if auth is None:
            return "Http头Authorization值格式错误，请参考《微信支付商户REST API签名规则》"
        if auth.mchid != self.merchant["mchid"]:
            return "商户号与签名信息不一致"
        if auth.serial_no != self.merchant["merchant_serial_no"]:
            return "商户证书序列号有误。请使用签名私钥匹配的证书序列号"
        now = self.now()
        if not auth.timestamp.isdigit() or abs(now - int(auth.timestamp)) > TIMESTAMP_TOLERANCE:
            return "请求的时间戳已过期，请检查系统时间"
        while self._nonces:  # oldest first (insertion order): forget nonces outside the replay window
            oldest, seen = next(iter(self._nonces.items()))
            if now - seen <= 2 * TIMESTAMP_TOLERANCE:
                break
            del self._nonces[oldest]
        if not auth.nonce_str or auth.nonce_str in self._nonces:
            return "重复的请求：随机串已被使用"
        message = signing.request_message(request.method, canonical_url, auth.timestamp, auth.nonce_str, body)
        if not signing.rsa_verify(self._merchant_public, message, auth.signature):
            return "签名错误，请检查后再试"
        self._nonces[auth.nonce_str] = now
        return None

    async def _api(self, request: Request) -> Response:
        body = await request.body()
        request_id = uuid.uuid4().hex.upper()
        path = _path_below_mount(request)
        query = request.scope.get("query_string", b"").decode("latin-1")
        reason = self._authenticate(request, path + ("?" + query if query else ""), body)
        if reason is not None:
            return _error(401, "SIGN_ERROR", reason, request_id)
        fault = self.faults.take_call(path)
        if fault is not None and fault.kind == "timeout":
            await asyncio.sleep(fault.seconds)
            return _error(504, "SYSTEM_ERROR", "系统超时", request_id)
        if fault is not None and fault.kind in ("http_500", "http_429"):
            if fault.kind == "http_500":
                return _error(500, "SYSTEM_ERROR", "系统错误", request_id)
            return _error(429, "FREQUENCY_LIMITED", "频率超限", request_id)
        for method, pattern, handler in self._routes:
            match = pattern.fullmatch(path)
            if match and method == request.method:
                reply = await handler(request, match, body)
                break
        else:
            reply = err(404, "NOT_FOUND", "请求的资源不存在")  # [guess] code for an unknown API path
        if fault is not None and fault.kind == "charged_then_timeout":
            await asyncio.sleep(fault.seconds)
            return _error(504, "SYSTEM_ERROR", "系统超时", request_id)
        if reply.error is not None:
            return _error(*reply.error, request_id, reply.detail)
        raw = reply.raw if reply.raw is not None else (b"" if reply.json is None else json_bytes(reply.json))
        headers = {"Request-ID": request_id}
        if reply.signed:
            key_name = reply.key or self._choose_key(request.headers.get("wechatpay-serial", ""))
            headers |= self.signed_headers(key_name, raw)
            if fault is not None and fault.kind == "bad_signature":
                headers["Wechatpay-Signature"] = signing.rsa_sign(self._keys["certificate"][0], b"tampered")
        media = None if reply.status == 204 else (
            "application/json" if reply.raw is None else "application/octet-stream")
        return Response(raw if reply.status != 204 else b"", reply.status, headers, media_type=media)

    # ------------------------------------------------------------------ control routes (/_sandbox)

    def _control_routes(self) -> list[Route]:
        async def pay(request: Request) -> Response:
            data = await read_json_object(request)
            if data is None or not isinstance(data.get("out_trade_no"), str):
                problem = {"code": "PARAM_ERROR", "message": 'JSON {"out_trade_no": ...} expected'}
                return json_response(problem, 400)
            status, answer = self.pay(data["out_trade_no"], bank_type=str(data.get("bank_type", "OTHERS")))
            return json_response(answer, status)

        async def payer(request: Request) -> Response:
            """``/_sandbox/fail`` and ``/_sandbox/expire``: the payer's payment fails, or they never pay."""
            data = await read_json_object(request)
            if data is None or not isinstance(data.get("out_trade_no"), str):
                problem = {"code": "PARAM_ERROR", "message": 'JSON {"out_trade_no": ...} expected'}
                return json_response(problem, 400)
            act = self.fail if request.url.path.endswith("/fail") else self.expire
            status, answer = act(data["out_trade_no"])
            return json_response(answer, status)

        async def settings(request: Request) -> Response:
            if request.method == "POST":
                data = await read_json_object(request)
                problem = "body must be a JSON object" if data is None else self.update_settings(data)
                if problem is not None:
                    return json_response({"code": "PARAM_ERROR", "message": problem}, 400)
            return json_response(self.settings | {"time_scale": self.deliverer.time_scale})

        async def order(request: Request) -> Response:
            found = self.order(request.path_params["out_trade_no"])
            if found is None:
                return json_response({"code": "ORDER_NOT_EXIST", "message": "no such order"}, 404)
            for refund in found.refunds:
                self.settle_refund(refund)
            return json_response({"transaction": transaction_json(found, self.merchant),
                                  "prepay_id": found.prepay_id, "notify_url": found.notify_url,
                                  "prepay_expires_at": rfc3339(found.prepay_expires_at),
                                  "refunds": [r.as_json(found) for r in found.refunds]})

        async def notifications(request: Request) -> Response:
            return json_response({"data": [r.as_json() for r in reversed(self.deliverer.log)]})

        return [Route("/_sandbox/pay", pay, methods=["POST"]),
                Route("/_sandbox/fail", payer, methods=["POST"]),
                Route("/_sandbox/expire", payer, methods=["POST"]),
                Route("/_sandbox/settings", settings, methods=["GET", "POST"]),
                Route("/_sandbox/orders/{out_trade_no}", order, methods=["GET"]),
                Route("/_sandbox/notifications", notifications, methods=["GET"])]

    def update_settings(self, data: dict[str, Any]) -> str | None:
        unknown = set(data) - {"callback_key", "refund_delay_seconds", "time_scale"}
        if unknown:
            return f"unknown settings: {sorted(unknown)}"
        if "callback_key" in data and data["callback_key"] not in CALLBACK_KEYS:
            return f"callback_key must be one of {', '.join(CALLBACK_KEYS)}"
        for name in ("refund_delay_seconds", "time_scale"):
            value = data.get(name, 0)
            if not isinstance(value, int | float) or isinstance(value, bool) or value < 0:
                return f"{name} must be a non-negative number"
        if "time_scale" in data:
            self.deliverer.time_scale = float(data.pop("time_scale"))
        self.settings.update(data)
        return None

    # ------------------------------------------------------------------ notifications

    def _event(self, event_type: str, summary: str, original_type: str,
               plain: dict[str, Any]) -> tuple[dict[str, Any], bytes]:
        """The notification envelope of §1.7 around ``plain``, AES-256-GCM-encrypted with the APIv3 key."""
        nonce = "".join(secrets.choice(_ALNUM) for _ in range(12))
        event = {"id": str(uuid.uuid4()), "create_time": rfc3339(self.now()), "resource_type": "encrypt-resource",
                 "event_type": event_type, "summary": summary,
                 "resource": {"original_type": original_type, "algorithm": "AEAD_AES_256_GCM",
                              "ciphertext": signing.aes_gcm_encrypt(self._apiv3_key, nonce, original_type,
                                                                    json_bytes(plain)),
                              "associated_data": original_type, "nonce": nonce}}
        return event, json_bytes(event)

    def notify(self, url: str, event_type: str, summary: str, original_type: str,
               plain: dict[str, Any]) -> str:
        """Encrypt ``plain``, sign, hand to the deliverer. Returns the event id (stable across retries)."""
        event, body = self._event(event_type, summary, original_type, plain)
        key_name = self._choose_key(None)

        def build(variant: str) -> Outgoing:
            headers = self.signed_headers(key_name, body, probe=variant == "signtest_probe")
            sent = body
            if variant == "tamper":  # altered after signing: a verifying receiver must refuse it
                sent = json_bytes({**event, "summary": summary + "（已篡改）"})
            return Outgoing(sent, headers | {"Content-Type": "application/json",
                                             "Request-ID": uuid.uuid4().hex.upper()})

        self.deliverer.submit(event_id=event["id"], url=url, event_type=event_type, build=build,
                              fault=self.faults.take_notify())
        return str(event["id"])

    def build_notification(self, out_trade_no: str, **overrides: Any) -> tuple[bytes, dict[str, str]]:
        """A genuinely encrypted and signed ``TRANSACTION.SUCCESS`` for this order with fields overridden.

        Not sent: tests use it to forge callbacks that pass the signature check but carry wrong content.
        """
        order = self.order(out_trade_no)
        if order is None:
            raise KeyError(out_trade_no)
        plain = transaction_json(order, self.merchant) | {
            "trade_state": "SUCCESS", "trade_state_desc": "支付成功", "bank_type": "OTHERS",
            "transaction_id": order.transaction_id or "42000" + _digits(23),
            "success_time": rfc3339(self.now()), "payer": {"openid": order.params["payer"]["openid"]},
            "amount": {"total": order.total, "payer_total": order.total, "currency": "CNY",
                       "payer_currency": "CNY"}}
        plain |= overrides
        _, body = self._event("TRANSACTION.SUCCESS", "支付成功", "transaction", plain)
        headers = self.signed_headers(self._choose_key(None), body)
        return body, headers | {"Content-Type": "application/json"}


def _path_below_mount(request: Request) -> str:
    """The provider path as the client signed it: the raw path as received, minus the mount prefix."""
    scope = request.scope
    raw = bytes(scope.get("raw_path") or scope["path"].encode()).split(b"?")[0]
    root = scope.get("root_path", "").encode()
    if root and raw.startswith(root):
        raw = raw[len(root):]
    return raw.decode("latin-1")

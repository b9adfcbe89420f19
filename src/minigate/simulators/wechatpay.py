"""WeChat Pay API v3 simulator (direct merchant, JSAPI / mini-program), an ASGI app.

Speaks the wire protocol of ``payment-protocols.md`` §1 with real cryptography, all of it from
:mod:`minigate.providers.wechatpay.signing` (the code the client uses): requests are verified
(Authorization, timestamp window, nonce replay), 2xx answers and notifications are signed, notifications
are AES-256-GCM encrypted with the merchant's APIv3 key and delivered on WeChat's retry schedule (§1.7).

Control routes (no Authorization; the sandbox is local): ``POST /_sandbox/pay``, ``GET|POST|DELETE
/_sandbox/faults``, ``GET|POST /_sandbox/settings``, ``GET /_sandbox/orders/{out_trade_no}``,
``GET /_sandbox/notifications``.

Guesses (see §5.1/§5.2 of the reference) are marked ``[guess]`` next to the error they produce.
"""

from __future__ import annotations

import asyncio
import base64
import gzip
import hashlib
import re
import secrets
import string
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from minigate.domain.results import BillRow
from minigate.providers.wechatpay import signing
from minigate.providers.wechatpay.bill import render_trade_bill
from minigate.simulators._core import (
    Clock,
    CredentialStore,
    Deliverer,
    Faults,
    Outgoing,
    fault_routes,
    generate_rsa_private_key_pem,
    is_local_notify_url,
    json_bytes,
    json_response,
    public_key_pem,
    read_json_object,
    rfc3339,
    self_signed_certificate_pem,
)

__all__ = ["CALLBACK_KEYS", "RETRY_SCHEDULE", "MERCHANT_FIELDS", "WeChatPaySimulator", "create_credentials"]

#: §1.7: 15s/15s/30s/3m/10m/20m/30m/30m/30m/60m/3h/3h/3h/6h/6h.
RETRY_SCHEDULE = (15, 15, 30, 180, 600, 1200, 1800, 1800, 1800, 3600, 10800, 10800, 10800, 21600, 21600)
MERCHANT_FIELDS = ("mchid", "appid", "app_secret", "merchant_serial_no", "merchant_private_key", "apiv3_key",
                   "platform_public_key", "platform_public_key_id", "platform_certificate")
CALLBACK_KEYS = ("auto", "public_key", "certificate", "mixed")
TIMESTAMP_TOLERANCE = 300
PREPAY_TTL = 7200
BILL_TOKEN_TTL = 300  # [guess] the real download_url lifetime is not documented in the reference
_ALNUM = string.ascii_letters + string.digits


def _digits(n: int) -> str:
    return "".join(secrets.choice(string.digits) for _ in range(n))


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


@dataclass
class Reply:
    status: int = 200
    json: Any = None
    raw: bytes | None = None
    signed: bool = True
    key: str | None = None  # force "certificate" / "public_key"
    error: tuple[int, str, str] | None = None
    detail: dict[str, Any] | None = field(default=None)


def err(status: int, code: str, message: str, detail: dict[str, Any] | None = None) -> Reply:
    return Reply(error=(status, code, message), detail=detail)


Handler = Callable[[Request, "re.Match[str]", bytes], Awaitable[Reply]]


class WeChatPaySimulator:
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

    # ------------------------------------------------------------------ orders

    def order(self, out_trade_no: str) -> Order | None:
        """The order, after lazily applying ``time_expire`` (auto-close)."""
        order = self.orders.get(out_trade_no)
        if order is not None and order.trade_state == "NOTPAY" and order.time_expire is not None \
                and self.now() >= order.time_expire:
            order.trade_state = "CLOSED"
        return order

    async def _prepay(self, request: Request, match: re.Match[str], body: bytes) -> Reply:
        data = await read_json_object(request)
        if data is None:
            return err(400, "PARAM_ERROR", "请求的JSON格式不正确")
        problem = validate_prepay(data, self.merchant)
        if problem is not None:
            return err(*problem)
        now = self.now()
        order = self.order(data["out_trade_no"])
        if order is not None:
            if order.trade_state in ("SUCCESS", "REFUND"):
                return err(400, "ORDERPAID", "该订单已支付")  # [guess] §5.1: the v3 string code
            if order.trade_state == "CLOSED":
                return err(400, "ORDER_CLOSED", "订单已关闭")
            if order.params != data:
                return err(400, "INVALID_REQUEST", "请求重入时，参数与首次请求时不一致")
            if now >= order.prepay_expires_at:
                order.prepay_id, order.prepay_expires_at = _prepay_id(now), now + PREPAY_TTL
            return Reply(json={"prepay_id": order.prepay_id})
        expire = parse_time(data["time_expire"]) if "time_expire" in data else None
        order = Order(params=data, created_at=now, prepay_id=_prepay_id(now),
                      prepay_expires_at=now + PREPAY_TTL, time_expire=expire)
        self.orders[order.out_trade_no] = order
        return Reply(json={"prepay_id": order.prepay_id})

    def _check_mchid(self, request: Request) -> Reply | None:
        mchid = request.query_params.get("mchid")
        if not mchid:
            return err(400, "PARAM_ERROR", "缺少参数mchid", {"field": "mchid", "location": "query"})
        if mchid != self.merchant["mchid"]:
            return err(400, "PARAM_ERROR", "mchid与请求签名中的商户号不一致")
        return None

    async def _query_by_out_trade_no(self, request: Request, match: re.Match[str], body: bytes) -> Reply:
        problem = self._check_mchid(request)
        if problem is not None:
            return problem
        order = self.order(match.group(1))
        if order is None:
            return err(404, "ORDER_NOT_EXIST", "订单不存在")
        return Reply(json=transaction_json(order, self.merchant))

    async def _query_by_id(self, request: Request, match: re.Match[str], body: bytes) -> Reply:
        problem = self._check_mchid(request)
        if problem is not None:
            return problem
        for order in self.orders.values():
            if order.transaction_id == match.group(1):
                return Reply(json=transaction_json(order, self.merchant))
        return err(404, "ORDER_NOT_EXIST", "订单不存在")

    async def _close(self, request: Request, match: re.Match[str], body: bytes) -> Reply:
        data = await read_json_object(request)
        if data is None:
            return err(400, "PARAM_ERROR", "请求的JSON格式不正确")
        if data.get("mchid") != self.merchant["mchid"]:
            return err(400, "PARAM_ERROR", "mchid与请求签名中的商户号不一致")
        order = self.order(match.group(1))
        if order is None:
            return err(404, "ORDER_NOT_EXIST", "订单不存在")
        if order.trade_state in ("SUCCESS", "REFUND"):
            return err(400, "ORDERPAID", "订单已支付，不能关闭")  # [guess] §5.1
        order.trade_state = "CLOSED"  # closing a closed order again answers 204 as well [guess]
        return Reply(status=204)

    def pay(self, out_trade_no: str, *, bank_type: str = "OTHERS") -> tuple[int, dict[str, Any]]:
        """The simulated payer confirms: NOTPAY + live prepay -> SUCCESS, then TRANSACTION.SUCCESS is sent."""
        order = self.order(out_trade_no)
        now = self.now()
        if order is None:
            return 404, {"code": "ORDER_NOT_EXIST", "message": "no such order"}
        if order.trade_state != "NOTPAY":
            return 409, {"code": "ORDER_NOT_PAYABLE", "message": f"trade_state is {order.trade_state}"}
        if now >= order.prepay_expires_at:
            return 409, {"code": "PREPAY_EXPIRED", "message": "prepay_id expired (valid 2 hours)"}
        order.trade_state, order.success_time, order.bank_type = "SUCCESS", now, bank_type
        order.transaction_id = "42000" + _digits(5) + time.strftime("%Y%m%d", time.gmtime(now + 8 * 3600)) \
            + _digits(10)
        plain = transaction_json(order, self.merchant)
        event_id = self.notify(order.notify_url, "TRANSACTION.SUCCESS", "支付成功", "transaction", plain)
        return 200, {"out_trade_no": out_trade_no, "transaction_id": order.transaction_id,
                     "trade_state": "SUCCESS", "notification_id": event_id}

    # ------------------------------------------------------------------ refunds

    async def _refund(self, request: Request, match: re.Match[str], body: bytes) -> Reply:
        data = await read_json_object(request)
        if data is None:
            return err(400, "PARAM_ERROR", "请求的JSON格式不正确")
        problem = validate_refund(data)
        if problem is not None:
            return err(*problem)
        order = self.order(data["out_trade_no"]) if "out_trade_no" in data else next(
            (o for o in self.orders.values() if o.transaction_id == data["transaction_id"]), None)
        if order is None:
            return err(404, "RESOURCE_NOT_EXISTS", "订单不存在")
        amount = data["amount"]
        existing = self.refunds.get(data["out_refund_no"])
        if existing is not None:
            if (existing.out_trade_no, existing.refund, existing.total) != (
                    order.out_trade_no, amount["refund"], amount["total"]):
                # [guess] v2 answered REFUND_FEE_MISMATCH with this text
                return err(400, "INVALID_REQUEST", "订单金额或退款金额与之前请求不一致，请核实后再试")
            self.settle_refund(existing)
            return Reply(json=existing.as_json(order))
        if order.trade_state not in ("SUCCESS", "REFUND"):
            return err(400, "INVALID_REQUEST", "订单未支付或已关闭，不能退款")  # [guess]
        if amount["total"] != order.total:
            return err(400, "INVALID_REQUEST", "订单金额与原订单金额不一致")  # [guess]
        live = [r for r in order.refunds if r.status != "CLOSED"]
        if len(order.refunds) >= 50:
            return err(403, "RULE_LIMIT", "该订单部分退款次数已达上限（50次）")  # [guess]
        if sum(r.refund for r in live) + amount["refund"] > order.total:
            return err(400, "INVALID_REQUEST", "申请退款金额超过订单可退金额")  # [guess] v2: INVALID_REQUEST
        delay = float(self.settings["refund_delay_seconds"]) * self.deliverer.time_scale
        now = self.now()
        refund = Refund(out_refund_no=data["out_refund_no"], out_trade_no=order.out_trade_no,
                        refund_id="50" + _digits(9) + time.strftime("%Y%m%d", time.gmtime(now + 8 * 3600))
                        + _digits(10), refund=amount["refund"], total=order.total,
                        notify_url=data.get("notify_url"), reason=data.get("reason", ""),
                        created_at=now, due_at=now + delay)
        self.refunds[refund.out_refund_no] = refund
        order.refunds.append(refund)
        order.trade_state = "REFUND"
        reply = refund.as_json(order)

        async def settle() -> None:
            self.settle_refund(refund, force=True)

        self.deliverer.later(float(self.settings["refund_delay_seconds"]), settle)
        return Reply(json=reply)

    def settle_refund(self, refund: Refund, *, force: bool = False) -> None:
        if refund.status != "PROCESSING" or not (force or self.now() >= refund.due_at):
            return
        refund.status, refund.success_time = "SUCCESS", self.now()
        order = self.orders[refund.out_trade_no]
        if refund.notify_url:
            self.notify(refund.notify_url, "REFUND.SUCCESS", "退款成功", "refund", refund.notify_json(order))

    async def _query_refund(self, request: Request, match: re.Match[str], body: bytes) -> Reply:
        refund = self.refunds.get(match.group(1))
        if refund is None:
            return err(404, "RESOURCE_NOT_EXISTS", "退款单不存在")
        self.settle_refund(refund)
        return Reply(json=refund.as_json(self.orders[refund.out_trade_no]))

    # ------------------------------------------------------------------ certificates, bills

    async def _certificates(self, request: Request, match: re.Match[str], body: bytes) -> Reply:
        nonce = "".join(secrets.choice(_ALNUM) for _ in range(12))
        pem = self.merchant["platform_certificate"].strip()
        item = {"serial_no": self._keys["certificate"][1],
                "effective_time": rfc3339(self._cert.not_valid_before_utc.timestamp()),
                "expire_time": rfc3339(self._cert.not_valid_after_utc.timestamp()),
                "encrypt_certificate": {"algorithm": "AEAD_AES_256_GCM", "nonce": nonce,
                                        "associated_data": "certificate",
                                        "ciphertext": signing.aes_gcm_encrypt(self._apiv3_key, nonce,
                                                                              "certificate", pem)}}
        return Reply(json={"data": [item]}, key="certificate")

    async def _tradebill(self, request: Request, match: re.Match[str], body: bytes) -> Reply:
        params = request.query_params
        bill_date, bill_type = params.get("bill_date", ""), params.get("bill_type", "ALL")
        tar_type = params.get("tar_type")
        if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", bill_date):
            return err(400, "PARAM_ERROR", "账单日期格式不正确", {"field": "bill_date", "location": "query"})
        if bill_type not in ("ALL", "SUCCESS", "REFUND") or tar_type not in (None, "GZIP"):
            return err(400, "PARAM_ERROR", "bill_type或tar_type取值不正确")
        content = bill_csv(self.orders.values(), self.merchant, bill_date, bill_type)
        if content is None:
            return err(400, "NO_STATEMENT_EXIST", "要查询的账单文件不存在")
        token = secrets.token_urlsafe(24)
        data = gzip.compress(content, mtime=0) if tar_type == "GZIP" else content
        self._bills[token] = (data, self.now() + BILL_TOKEN_TTL)
        url = request.url.replace(path=request.scope.get("root_path", "") + "/v3/billdownload/file",
                                  query=f"token={token}")
        return Reply(json={"hash_type": "SHA1", "hash_value": hashlib.sha1(content).hexdigest(),  # noqa: S324
                           "download_url": str(url)})

    async def _billdownload(self, request: Request, match: re.Match[str], body: bytes) -> Reply:
        entry = self._bills.get(request.query_params.get("token", ""))
        if entry is None or self.now() > entry[1]:
            return err(400, "INVALID_REQUEST", "下载链接已失效，请重新申请")  # [guess]
        return Reply(raw=entry[0], signed=False)

    # ------------------------------------------------------------------ control routes (/_sandbox)

    def _control_routes(self) -> list[Route]:
        async def pay(request: Request) -> Response:
            data = await read_json_object(request)
            if data is None or not isinstance(data.get("out_trade_no"), str):
                problem = {"code": "PARAM_ERROR", "message": 'JSON {"out_trade_no": ...} expected'}
                return json_response(problem, 400)
            status, answer = self.pay(data["out_trade_no"], bank_type=str(data.get("bank_type", "OTHERS")))
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

    def notify(self, url: str, event_type: str, summary: str, original_type: str,
               plain: dict[str, Any]) -> str:
        """Encrypt ``plain``, sign, hand to the deliverer. Returns the event id (stable across retries)."""
        event_id = str(uuid.uuid4())
        nonce = "".join(secrets.choice(_ALNUM) for _ in range(12))
        event = {"id": event_id, "create_time": rfc3339(self.now()), "resource_type": "encrypt-resource",
                 "event_type": event_type, "summary": summary,
                 "resource": {"original_type": original_type, "algorithm": "AEAD_AES_256_GCM",
                              "ciphertext": signing.aes_gcm_encrypt(self._apiv3_key, nonce, original_type,
                                                                    json_bytes(plain)),
                              "associated_data": original_type, "nonce": nonce}}
        body = json_bytes(event)
        key_name = self._choose_key(None)

        def build(variant: str) -> Outgoing:
            headers = self.signed_headers(key_name, body, probe=variant == "signtest_probe")
            sent = body
            if variant == "tamper":  # altered after signing: a verifying receiver must refuse it
                sent = json_bytes({**event, "summary": summary + "（已篡改）"})
            return Outgoing(sent, headers | {"Content-Type": "application/json",
                                             "Request-ID": uuid.uuid4().hex.upper()})

        self.deliverer.submit(event_id=event_id, url=url, event_type=event_type, build=build,
                              fault=self.faults.take_notify())
        return event_id


def _prepay_id(now: float) -> str:
    return "wx" + time.strftime("%Y%m%d%H%M%S", time.gmtime(now + 8 * 3600)) + secrets.token_hex(9)


def _path_below_mount(request: Request) -> str:
    """The provider path as the client signed it: the raw path as received, minus the mount prefix."""
    scope = request.scope
    raw = bytes(scope.get("raw_path") or scope["path"].encode()).split(b"?")[0]
    root = scope.get("root_path", "").encode()
    if root and raw.startswith(root):
        raw = raw[len(root):]
    return raw.decode("latin-1")


# ---------------------------------------------------------------------- wire rules (§1.4, §1.6, §1.8, §1.9)

_OUT_TRADE_NO = re.compile(r"[0-9A-Za-z_\-*|]{6,32}")
_OUT_REFUND_NO = re.compile(r"[0-9A-Za-z_\-*|@]{1,64}")
Problem = tuple[int, str, str, dict[str, Any]]


def _param(field_path: str, issue: str, value: Any = None) -> Problem:
    detail = {"field": field_path, "value": value, "issue": issue, "location": "body"}
    return 400, "PARAM_ERROR", f"参数错误：{field_path} {issue}", detail


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def parse_time(value: Any) -> float | None:
    """RFC 3339 with an offset -> epoch seconds (None if malformed)."""
    import datetime as dt

    if not isinstance(value, str):
        return None
    try:
        parsed = dt.datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed.timestamp() if parsed.tzinfo is not None else None


def _check_notify_url(url: Any, field_path: str = "/notify_url") -> Problem | None:
    if not isinstance(url, str) or not url or len(url) > 255:
        return _param(field_path, "必须是不超过255字符的URL", url)
    if "?" in url or not is_local_notify_url(url):
        return _param(field_path, "必须为https地址（沙箱另接受回环地址的http），且不能携带参数", url)
    return None


def validate_prepay(data: dict[str, Any], merchant: dict[str, str]) -> Problem | None:
    for name in ("appid", "mchid", "description", "out_trade_no", "notify_url", "amount", "payer"):
        if name not in data:
            return _param(f"/{name}", "缺少必填字段")
    if data["mchid"] != merchant["mchid"]:
        return 400, "PARAM_ERROR", "mchid与请求签名中的商户号不一致", {"field": "/mchid", "location": "body"}
    if data["appid"] != merchant["appid"]:
        return 400, "APPID_MCHID_NOT_MATCH", "appid和mch_id不匹配", {"field": "/appid", "location": "body"}
    description = data["description"]
    if not isinstance(description, str) or not 1 <= len(description) <= 127:
        return _param("/description", "长度必须为1到127个字符", description)
    if not isinstance(data["out_trade_no"], str) or not _OUT_TRADE_NO.fullmatch(data["out_trade_no"]):
        return _param("/out_trade_no", "必须为6-32位数字、字母、_-*|", data["out_trade_no"])
    problem = _check_notify_url(data["notify_url"])
    if problem is not None:
        return problem
    amount = data["amount"]
    if not isinstance(amount, dict) or not _is_int(amount.get("total")) or amount["total"] < 1:
        return _param("/amount/total", "必须为大于0的整数（单位：分）", amount)
    if amount.get("currency", "CNY") != "CNY":
        return _param("/amount/currency", "仅支持CNY", amount.get("currency"))
    payer = data["payer"]
    if not isinstance(payer, dict) or not isinstance(payer.get("openid"), str) or not payer["openid"]:
        return _param("/payer/openid", "缺少必填字段", payer)
    if "attach" in data and (not isinstance(data["attach"], str) or len(data["attach"]) > 128):
        return _param("/attach", "长度不能超过128个字符", data["attach"])
    if "time_expire" in data and parse_time(data["time_expire"]) is None:
        return _param("/time_expire", "必须为rfc3339格式，如2018-06-08T10:34:56+08:00", data["time_expire"])
    return None


def validate_refund(data: dict[str, Any]) -> Problem | None:
    if not isinstance(data.get("out_refund_no"), str) or not _OUT_REFUND_NO.fullmatch(data["out_refund_no"]):
        return _param("/out_refund_no", "必须为1-64位数字、字母、_-|*@", data.get("out_refund_no"))
    if ("out_trade_no" in data) == ("transaction_id" in data):
        return _param("/out_trade_no", "transaction_id与out_trade_no必须二选一")
    ref = data.get("out_trade_no", data.get("transaction_id"))
    if not isinstance(ref, str) or not ref:
        return _param("/out_trade_no", "必须为非空字符串", ref)
    amount = data.get("amount")
    if not isinstance(amount, dict):
        return _param("/amount", "缺少必填字段")
    for name in ("refund", "total"):
        if not _is_int(amount.get(name)) or amount[name] < 1:
            return _param(f"/amount/{name}", "必须为大于0的整数（单位：分）", amount.get(name))
    if amount.get("currency") != "CNY":
        return _param("/amount/currency", "必填，仅支持CNY", amount.get("currency"))
    if "notify_url" in data:
        problem = _check_notify_url(data["notify_url"])
        if problem is not None:
            return problem
    if "reason" in data and (not isinstance(data["reason"], str) or len(data["reason"]) > 80):
        return _param("/reason", "长度不能超过80个字符", data["reason"])
    return None


@dataclass
class Refund:
    out_refund_no: str
    out_trade_no: str
    refund_id: str
    refund: int
    total: int
    notify_url: str | None
    reason: str
    created_at: float
    due_at: float
    status: str = "PROCESSING"
    success_time: float | None = None

    def _amount(self) -> dict[str, Any]:
        return {"total": self.total, "refund": self.refund, "payer_total": self.total,
                "payer_refund": self.refund}

    def as_json(self, order: Order) -> dict[str, Any]:
        """The Refund object of §1.8."""
        body: dict[str, Any] = {
            "refund_id": self.refund_id, "out_refund_no": self.out_refund_no,
            "transaction_id": order.transaction_id, "out_trade_no": self.out_trade_no,
            "channel": "ORIGINAL", "user_received_account": "支付用户零钱",
            "create_time": rfc3339(self.created_at), "status": self.status, "funds_account": "AVAILABLE",
            "amount": self._amount() | {"settlement_refund": self.refund, "settlement_total": self.total,
                                        "discount_refund": 0, "currency": "CNY", "refund_fee": 0, "from": []},
            "promotion_detail": [],
        }
        if self.success_time is not None:
            body["success_time"] = rfc3339(self.success_time)
        return body

    def notify_json(self, order: Order) -> dict[str, Any]:
        """The decrypted resource of a REFUND.SUCCESS notification (§1.8)."""
        return {"mchid": order.params["mchid"], "transaction_id": order.transaction_id,
                "out_trade_no": self.out_trade_no, "refund_id": self.refund_id,
                "out_refund_no": self.out_refund_no, "refund_status": self.status,
                "success_time": rfc3339(self.success_time or self.created_at),
                "user_received_account": "支付用户零钱", "amount": self._amount()}


@dataclass
class Order:
    params: dict[str, Any]
    created_at: float
    prepay_id: str
    prepay_expires_at: float
    time_expire: float | None = None
    trade_state: str = "NOTPAY"
    transaction_id: str | None = None
    success_time: float | None = None
    bank_type: str = "OTHERS"
    refunds: list[Refund] = field(default_factory=list)

    @property
    def out_trade_no(self) -> str:
        return str(self.params["out_trade_no"])

    @property
    def total(self) -> int:
        return int(self.params["amount"]["total"])

    @property
    def notify_url(self) -> str:
        return str(self.params["notify_url"])


_STATE_DESC = {"NOTPAY": "订单未支付", "SUCCESS": "支付成功", "REFUND": "转入退款", "CLOSED": "订单已关闭"}


def transaction_json(order: Order, merchant: dict[str, str]) -> dict[str, Any]:
    """The Transaction object of §1.6; unpaid orders omit transaction_id, success_time, payer, payer_total."""
    paid = order.transaction_id is not None
    body: dict[str, Any] = {"appid": order.params["appid"], "mchid": merchant["mchid"],
                            "out_trade_no": order.out_trade_no}
    if paid:
        body["transaction_id"] = order.transaction_id
    body |= {"trade_type": "JSAPI", "trade_state": order.trade_state,
             "trade_state_desc": _STATE_DESC[order.trade_state], "attach": order.params.get("attach", "")}
    if paid:
        body |= {"bank_type": order.bank_type, "success_time": rfc3339(order.success_time or 0),
                 "payer": {"openid": order.params["payer"]["openid"]}}
    amount: dict[str, Any] = {"total": order.total}
    if paid:
        amount["payer_total"] = order.total
    body["amount"] = amount | {"currency": "CNY", "payer_currency": "CNY"}
    return body


def _fee(fen: int) -> int:
    return (fen * 6 + 500) // 1000  # 0.6 % rate, rounded half up to the fen [guess: sandbox rate]


def bill_csv(orders: Iterable[Order], merchant: dict[str, str], bill_date: str,
             bill_type: str) -> bytes | None:
    """The trade bill of §1.9, rendered by the client's own :func:`render_trade_bill`. None: no rows."""
    rows: list[BillRow] = []
    extra: dict[str, dict[str, str]] = {}

    def day(epoch: float | None) -> str:
        return time.strftime("%Y-%m-%d", time.gmtime((epoch or 0) + 8 * 3600))

    def stamp(epoch: float | None) -> str:
        return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime((epoch or 0) + 8 * 3600))

    for order in orders:
        if order.transaction_id is None:
            continue
        extra[order.out_trade_no] = {"用户标识": order.params["payer"]["openid"], "付款银行": order.bank_type,
                                     "商品名称": order.params["description"],
                                     "商户数据包": order.params.get("attach", "")}
        if bill_type in ("ALL", "SUCCESS") and day(order.success_time) == bill_date:
            rows.append(BillRow(trade_time=stamp(order.success_time), out_trade_no=order.out_trade_no,
                                provider_trade_id=order.transaction_id, trade_state="SUCCESS",
                                amount=order.total, fee=_fee(order.total)))
        for refund in order.refunds:
            if bill_type in ("ALL", "REFUND") and refund.success_time is not None \
                    and day(refund.success_time) == bill_date:
                rows.append(BillRow(trade_time=stamp(refund.success_time), out_trade_no=order.out_trade_no,
                                    provider_trade_id=order.transaction_id, trade_state="REFUND",
                                    amount=order.total, refund_amount=refund.refund,
                                    out_refund_no=refund.out_refund_no, provider_refund_id=refund.refund_id))
    if not rows:
        return None
    return render_trade_bill(rows, appid=merchant["appid"], mchid=merchant["mchid"], extra=extra)

"""Alipay OpenAPI simulator (mini-program JSAPI_PAY), an ASGI app.

Speaks the wire protocol of ``payment-protocols.md`` §2 with real cryptography, all of it from
:mod:`minigate.providers.alipay.signing` (the code the client uses): ``/gateway.do`` accepts GET and POST,
merges query and form parameters (official SDKs differ, §2.1), checks app_id, the timestamp window and the
RSA2 signature with the registered app public key, dispatches on ``method``, and signs the exact text of every
``<method>_response`` with the simulator's Alipay key (plus ``alipay_cert_sn`` when the request used
certificate mode; AES-encrypted answers when it sent ``encrypt_type=AES``). Notifications are signed form
POSTs delivered on Alipay's retry schedule until the receiver answers HTTP 200 with the body ``success``.

Control routes (no signature; the sandbox is local): ``POST /_sandbox/login``, ``POST /_sandbox/pay``,
``GET /_sandbox/orders/{out_trade_no}``, ``GET /_sandbox/notifications``, ``GET /_sandbox/certificates``,
``GET|POST /_sandbox/settings``, ``GET|POST|DELETE /_sandbox/faults`` (``path`` in a ``next_call`` fault
matches a prefix of the *method*, e.g. ``"alipay.trade.refund"``).

Notifications on by default (§2.5, §5.5; each switchable in ``/_sandbox/settings``): TRADE_SUCCESS on payment,
TRADE_CLOSED on ``alipay.trade.close``, TRADE_SUCCESS with ``refund_fee``/``gmt_refund``/``out_biz_no`` on a
partial refund, TRADE_CLOSED (same refund fields + ``gmt_close``) on the refund that completes the total. Off:
WAIT_BUYER_PAY at creation (``notify_wait_buyer_pay``), and none when ``time_expire`` closes a trade.

Guesses: the ±15 minute timestamp window (``timestamp_tolerance_seconds``), the 30 s bill URL lifetime
(``bill_url_ttl_seconds``), the first retry interval 4 min vs 2 min (``first_retry_seconds``, §5.4); others are
marked ``[guess]`` in :mod:`minigate.simulators._alipay_wire`.
"""

from __future__ import annotations

import asyncio
import codecs
import json
import secrets
from typing import Any
from urllib.parse import parse_qsl, urlencode

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from minigate.money import fen_to_yuan
from minigate.providers.alipay import signing
from minigate.providers.alipay.openapi import response_key
from minigate.providers.alipay.schemas import compact_json
from minigate.simulators._alipay_wire import (
    MERCHANT_FIELDS,
    METHODS,
    MethodHandlers,
    Trade,
    _digits,
    create_credentials,
    gateway_error,
    render_bill,
    trade_fields,
)
from minigate.simulators._core import (
    Clock,
    CredentialStore,
    Deliverer,
    Faults,
    Outgoing,
    fault_routes,
    json_response,
    read_json_object,
)

__all__ = ["RETRY_SCHEDULE", "AlipaySimulator", "create_credentials"]

#: §2.5: 4m, 10m, 10m, 1h, 2h, 6h, 15h (Antom's English page says 2m for the first: ``first_retry_seconds``).
RETRY_SCHEDULE = (240, 600, 600, 3600, 7200, 21600, 54000)
_INVALID_SIGNATURE = "验签出错，建议检查签名字符串或签名私钥与应用公钥是否匹配，网关生成的验签字符串为："
_BOOL_SETTINGS = ("notify_on_close", "notify_on_partial_refund", "notify_on_full_refund", "notify_wait_buyer_pay")
_NUMBER_SETTINGS = ("timestamp_tolerance_seconds", "first_retry_seconds", "bill_url_ttl_seconds", "time_scale")


def acknowledged(status: int, body: bytes) -> bool:
    """Alipay's acknowledgement is HTTP 200 with the body exactly ``success`` (§2.5), not a status code."""
    return status == 200 and body == b"success"


class AlipaySimulator(MethodHandlers):
    """One simulated Alipay application and merchant. ``app`` is the ASGI app (mount it anywhere)."""

    name = "alipay"

    def __init__(self, store: CredentialStore, *, clock: Clock, faults: Faults | None = None,
                 deliverer: Deliverer | None = None) -> None:
        data = store.load_or_create("alipay", create_credentials)
        self.merchant: dict[str, str] = data["merchant"]
        sim: dict[str, str] = data["simulator"]
        self.clock = clock
        self.faults = faults or Faults()
        deliverer = deliverer or Deliverer(schedule=RETRY_SCHEDULE, clock=clock)
        deliverer.acknowledged = acknowledged
        self.deliverer = deliverer
        self.settings: dict[str, Any] = {
            "notify_on_close": True, "notify_on_partial_refund": True, "notify_on_full_refund": True,
            "notify_wait_buyer_pay": False, "timestamp_tolerance_seconds": 900,
            "first_retry_seconds": RETRY_SCHEDULE[0], "bill_url_ttl_seconds": 30}
        self._alipay_key = signing.load_private_key(sim["alipay_private_key"])
        self._app_public = signing.load_public_key(sim["app_public_key"])
        self.encrypt_key: str = sim["encrypt_key"]
        self.certificates = {k: sim[k] for k in ("app_cert", "alipay_cert", "alipay_root_cert")}
        self.cert_sns = {"app_cert_sn": signing.cert_sn(sim["app_cert"]),
                         "alipay_cert_sn": signing.cert_sn(sim["alipay_cert"]),
                         "alipay_root_cert_sn": signing.root_cert_sn(sim["alipay_root_cert"])}
        self._user_secret = bytes.fromhex(sim["user_secret"])
        self.trades: dict[str, Trade] = {}
        self._codes: dict[str, tuple[str, float, bool]] = {}
        self._open_ids: dict[str, str] = {}
        self._bills: dict[str, tuple[bytes, float]] = {}
        self.app = Starlette(routes=[
            *fault_routes(self.faults), *self._control_routes(),
            Route("/gateway.do", self._gateway, methods=["GET", "POST"]),
            Route("/downloadBillFile.resource", self._download_bill, methods=["GET"]),
        ])

    def now(self) -> float:
        """The simulator's clock: the shared clock plus the ``clock_skew_seconds`` fault."""
        return self.clock.now() + self.faults.clock_skew_seconds

    def credentials(self) -> dict[str, str]:
        return {k: self.merchant[k] for k in MERCHANT_FIELDS}

    def order(self, out_trade_no: str) -> Trade | None:
        return self.trade(out_trade_no)

    # ------------------------------------------------------------------ the gateway
    @staticmethod
    def _params(query: bytes, body: bytes) -> tuple[dict[str, str], str, str | None]:
        """Query + form parameters, percent-decoded in the request's ``charset``; (params, charset, problem)."""
        texts = [query.decode("latin-1"), body.decode("latin-1")]
        probe = dict(pair for text in texts for pair in parse_qsl(text, keep_blank_values=True))
        charset = probe.get("charset") or "utf-8"
        try:
            codecs.lookup(charset)
            merged: dict[str, str] = {}
            for raw in (query, body):
                for key, value in parse_qsl(raw.decode(charset), keep_blank_values=True, encoding=charset,
                                            errors="strict", max_num_fields=200):
                    if merged.get(key, value) != value:
                        return merged, "utf-8", f"参数{key}重复且取值不一致"
                    merged[key] = value
        except (LookupError, ValueError):
            return {}, "utf-8", "字符集或参数编码不正确"
        return merged, charset, None

    def _check(self, params: dict[str, str], charset: str) -> dict[str, Any] | None:
        """Gateway checks in Alipay's order; the error answer, or None."""
        if not params.get("app_id"):
            return gateway_error("40001", "isv.missing-app-id", "缺少AppID参数")
        if params["app_id"] != self.merchant["app_id"]:
            return gateway_error("40002", "isv.invalid-app-id", "无效的AppID参数")
        if not params.get("sign"):
            return gateway_error("40001", "isv.missing-signature", "缺少签名参数")
        if params.get("sign_type") != "RSA2":
            return gateway_error("40002", "isv.invalid-signature-type", "无效的签名类型")
        try:
            sent = signing.parse_timestamp(params.get("timestamp", "")).timestamp()
        except ValueError:
            sent = None
        if sent is None or abs(self.now() - sent) > float(self.settings["timestamp_tolerance_seconds"]):
            return gateway_error("40002", "isv.invalid-timestamp", "非法的时间戳参数")
        if "app_cert_sn" in params or "alipay_root_cert_sn" in params:
            if params.get("app_cert_sn") != self.cert_sns["app_cert_sn"]:
                return gateway_error("40002", "isv.invalid-app-cert-sn", "应用公钥证书序列号不正确")   # [guess]
            if params.get("alipay_root_cert_sn") != self.cert_sns["alipay_root_cert_sn"]:
                return gateway_error("40002", "isv.invalid-alipay-root-cert-sn", "支付宝根证书序列号不正确")  # [guess]
        content = signing.sign_content(params)
        if not signing.rsa2_verify(self._app_public, content, params["sign"], charset):
            return gateway_error("40002", "isv.invalid-signature", _INVALID_SIGNATURE + content)
        return None

    def _answer(self, key: str, obj: dict[str, Any], *, charset: str = "utf-8", encrypt: bool = False,
                cert: bool = False, bad_signature: bool = False) -> Response:
        """``{"<key>":<value>,"sign":"…"}``; the signature covers the value text exactly as written (§2.3)."""
        value = compact_json(obj)
        if encrypt:
            value = json.dumps(signing.aes_encrypt(self.encrypt_key, value, charset))
        sign = signing.rsa2_sign(self._alipay_key, value + ("tampered" if bad_signature else ""), charset)
        text = '{"' + key + '":' + value + ',"sign":"' + sign + '"'
        if cert:
            text += ',"alipay_cert_sn":"' + self.cert_sns["alipay_cert_sn"] + '"'
        return Response((text + "}").encode(charset), 200, media_type=f"application/json;charset={charset}")

    async def _gateway(self, request: Request) -> Response:
        params, charset, problem = self._params(request.scope.get("query_string", b""), await request.body())
        method = params.get("method", "")
        key = response_key(method) if method in METHODS else "error_response"
        cert = "app_cert_sn" in params
        if problem is not None:
            return self._answer(key, gateway_error("40002", "isv.invalid-parameter", problem), cert=cert)
        if not method:
            return self._answer(key, gateway_error("40001", "isv.missing-method", "缺少方法名参数"), charset=charset)
        if method not in METHODS:
            return self._answer(key, gateway_error("40002", "isv.invalid-method", "不存在的方法名"), charset=charset)
        refused = self._check(params, charset)
        if refused is not None:
            return self._answer(key, refused, charset=charset, cert=cert)
        fault = self.faults.take_call(method)
        if fault is not None and fault.kind in ("timeout", "http_500", "http_429"):
            if fault.kind == "timeout":
                await asyncio.sleep(fault.seconds)
            status = {"timeout": 504, "http_500": 500, "http_429": 429}[fault.kind]
            return Response(b"<html><body>Service Unavailable</body></html>", status, media_type="text/html")
        encrypt = params.get("encrypt_type") == "AES"
        try:
            biz_text = params.get("biz_content") or "{}"
            if encrypt:
                biz_text = signing.aes_decrypt(self.encrypt_key, biz_text, charset)
            biz = json.loads(biz_text)
        except ValueError:
            failed = "isv.decryption-error" if encrypt else "isv.invalid-parameter"   # [guess] codes
            return self._answer(key, gateway_error("40002", failed, "biz_content无法解析"), charset=charset, cert=cert)
        if not isinstance(biz, dict):
            return self._answer(key, gateway_error("40002", "isv.invalid-parameter", "biz_content必须是JSON对象"),
                                charset=charset, cert=cert)
        if method == "alipay.system.oauth.token":
            result = self.m_oauth(params, biz)
            key = key if result["code"] == "10000" else "error_response"
        elif method == "alipay.data.dataservice.bill.downloadurl.query":
            root = request.scope.get("root_path", "")
            result = self.m_bill(params, biz, str(request.url.replace(path=root, query="")).rstrip("/"))
        else:
            handler = {"alipay.trade.create": self.m_create, "alipay.trade.query": self.m_query,
                       "alipay.trade.close": self.m_close, "alipay.trade.refund": self.m_refund,
                       "alipay.trade.fastpay.refund.query": self.m_refund_query}[method]
            result = handler(params, biz)
        if fault is not None and fault.kind == "charged_then_timeout":
            await asyncio.sleep(fault.seconds)
            return Response(b"<html><body>Gateway Timeout</body></html>", 504, media_type="text/html")
        return self._answer(key, result, charset=charset, encrypt=encrypt, cert=cert,
                            bad_signature=fault is not None and fault.kind == "bad_signature")

    # ------------------------------------------------------------------ bills
    def bill_url(self, base_url: str, bill_date: str) -> str:
        token = secrets.token_urlsafe(24)
        self._bills[token] = (render_bill(self.trades.values(), self.merchant["seller_id"], bill_date),
                              self.now() + float(self.settings["bill_url_ttl_seconds"]))
        query = urlencode({"bizType": "trade", "fileType": "csv.zip", "bizDates": bill_date.replace("-", ""),
                           "userId": self.merchant["seller_id"], "token": token})
        return f"{base_url}/downloadBillFile.resource?{query}"

    async def _download_bill(self, request: Request) -> Response:
        entry = self._bills.get(request.query_params.get("token", ""))
        if entry is None or self.now() > entry[1]:
            return Response(b"file not found or link expired", 404, media_type="text/plain")
        return Response(entry[0], 200, media_type="application/zip")

    # ------------------------------------------------------------------ payer, notifications
    def pay(self, out_trade_no: str) -> tuple[int, dict[str, Any]]:
        """The simulated payer confirms: WAIT_BUYER_PAY -> TRADE_SUCCESS, then the notification is sent."""
        trade = self.trade(out_trade_no)
        if trade is None:
            return 404, {"code": "ACQ.TRADE_NOT_EXIST", "message": "no such trade"}
        if trade.status != "WAIT_BUYER_PAY":
            return 409, {"code": "TRADE_NOT_PAYABLE", "message": f"trade_status is {trade.status}"}
        trade.status, trade.paid_at = "TRADE_SUCCESS", self.now()
        notify_id = self.notify_trade(trade, "TRADE_SUCCESS")
        return 200, {"out_trade_no": out_trade_no, "trade_no": trade.trade_no, "trade_status": trade.status,
                     "notify_id": notify_id}

    def notification_fields(self, trade: Trade, event: str, notify_id: str) -> dict[str, str]:
        """The form fields of a notification (§2.5). ``event``: a trade_status, or ``REFUND`` (partial)."""
        now = self.now()
        fields: dict[str, Any] = {
            "notify_time": signing.format_timestamp(now), "notify_type": "trade_status_sync",
            "notify_id": notify_id, "app_id": self.merchant["app_id"], "auth_app_id": self.merchant["app_id"],
            "charset": "utf-8", "version": "1.0", "sign_type": "RSA2", "seller_id": self.merchant["seller_id"],
            "seller_email": "sandbox-seller@alipay.example", "subject": trade.biz.get("subject"),
            "gmt_create": signing.format_timestamp(trade.created_at),
            "passback_params": trade.biz.get("passback_params"),
        } | trade_fields(trade) | {"trade_status": "TRADE_SUCCESS" if event == "REFUND" else event}
        if trade.buyer_field == "buyer_id":
            fields["buyer_id"] = trade.buyer
        if trade.paid_at is not None:
            fields["gmt_payment"] = signing.format_timestamp(trade.paid_at)
            fields["fund_bill_list"] = json.dumps([{"amount": fields["total_amount"], "fundChannel": "ALIPAYACCOUNT"}],
                                                  separators=(",", ":"))
        if trade.refunds and event in ("REFUND", "TRADE_CLOSED"):
            fields |= {"refund_fee": fen_to_yuan(trade.refunded),
                       "gmt_refund": signing.format_timestamp(trade.refunds[-1].at),
                       "out_biz_no": trade.refunds[-1].out_request_no}
        if event == "TRADE_CLOSED" and trade.closed_at is not None:
            fields["gmt_close"] = signing.format_timestamp(trade.closed_at)
        return {k: str(v) for k, v in fields.items() if v not in (None, "")}

    def _signed(self, fields: dict[str, str]) -> dict[str, str]:
        return fields | {"sign": signing.rsa2_sign(self._alipay_key, signing.notification_content(fields))}

    @staticmethod
    def _outgoing(form: dict[str, str]) -> Outgoing:
        return Outgoing(urlencode(form, encoding="utf-8").encode("ascii"),
                        {"Content-Type": "application/x-www-form-urlencoded; charset=utf-8"})

    def notify_trade(self, trade: Trade, event: str) -> str | None:
        """Sign and hand a notification to the deliverer; returns its ``notify_id`` (None: no notify_url)."""
        if not trade.notify_url:
            return None
        notify_id = signing.format_timestamp(self.now()).replace("-", "")[:8] + _digits(26)
        fields = self.notification_fields(trade, event, notify_id)

        def build(variant: str) -> Outgoing:
            form = self._signed(fields)
            if variant == "tamper":   # altered after signing: a verifying receiver must refuse it
                form["total_amount"] = "0.01" if form["total_amount"] != "0.01" else "0.02"
            elif variant == "signtest_probe":   # WeChat's probe has no Alipay form; send a garbage signature
                form["sign"] = signing.rsa2_sign(self._alipay_key, "probe")
            return self._outgoing(form)

        self.deliverer.submit(event_id=notify_id, url=trade.notify_url, event_type=event, build=build,
                              fault=self.faults.take_notify())
        return notify_id

    def build_notification(self, out_trade_no: str, **overrides: str | None) -> tuple[bytes, dict[str, str]]:
        """A genuinely signed notification (body, headers) for the trade's current state, with ``overrides``
        applied *before* signing (``None`` removes a field) -- "signed but wrong" callbacks for tests."""
        trade = self.trade(out_trade_no)
        if trade is None:
            raise KeyError(out_trade_no)
        event = trade.status if trade.status == "TRADE_CLOSED" or not trade.refunds else "REFUND"
        fields = self.notification_fields(trade, event, signing.format_timestamp(self.now())[:4] + _digits(30))
        for key, value in overrides.items():
            if value is None:
                fields.pop(key, None)
            else:
                fields[key] = str(value)
        out = self._outgoing(self._signed(fields))
        return out.body, out.headers

    # ------------------------------------------------------------------ control routes (/_sandbox)
    def update_settings(self, data: dict[str, Any]) -> str | None:
        unknown = set(data) - {*_BOOL_SETTINGS, *_NUMBER_SETTINGS}
        if unknown:
            return f"unknown settings: {sorted(unknown)}"
        for name in _BOOL_SETTINGS:
            if name in data and not isinstance(data[name], bool):
                return f"{name} must be true or false"
        for name in _NUMBER_SETTINGS:
            value = data.get(name, 0)
            if not isinstance(value, int | float) or isinstance(value, bool) or value < 0:
                return f"{name} must be a non-negative number"
        if "time_scale" in data:
            self.deliverer.time_scale = float(data.pop("time_scale"))
        if "first_retry_seconds" in data:
            self.deliverer.schedule = (float(data["first_retry_seconds"]), *self.deliverer.schedule[1:])
        self.settings.update(data)
        return None

    def _control_routes(self) -> list[Route]:
        def bad(message: str, status: int = 400) -> Response:
            return json_response({"code": "PARAM_ERROR", "message": message}, status)

        async def login(request: Request) -> Response:
            data = await read_json_object(request)
            user = data.get("user") if data else None
            if not isinstance(user, str) or not user:
                return bad('JSON {"user": "<name>"} expected')
            return json_response({"code": self.login(user)})

        async def pay(request: Request) -> Response:
            data = await read_json_object(request)
            if data is None or not isinstance(data.get("out_trade_no"), str):
                return bad('JSON {"out_trade_no": ...} expected')
            status, answer = self.pay(data["out_trade_no"])
            return json_response(answer, status)

        async def order(request: Request) -> Response:
            trade = self.order(request.path_params["out_trade_no"])
            if trade is None:
                return json_response({"code": "ACQ.TRADE_NOT_EXIST", "message": "no such trade"}, 404)
            return json_response({"trade": trade_fields(trade), "biz_content": trade.biz,
                                  "notify_url": trade.notify_url, "buyer_user_id": trade.buyer_user_id,
                                  "refunds": [{"out_request_no": r.out_request_no, "amount": r.amount,
                                               "gmt_refund": signing.format_timestamp(r.at)} for r in trade.refunds]})

        async def notifications(request: Request) -> Response:
            return json_response({"data": [r.as_json() for r in reversed(self.deliverer.log)]})

        async def certificates(request: Request) -> Response:
            return json_response(self.certificates | self.cert_sns)

        async def settings(request: Request) -> Response:
            if request.method == "POST":
                data = await read_json_object(request)
                problem = "body must be a JSON object" if data is None else self.update_settings(data)
                if problem is not None:
                    return bad(problem)
            return json_response(self.settings | {"time_scale": self.deliverer.time_scale,
                                                  "retry_schedule": list(self.deliverer.schedule),
                                                  "encrypt_key": self.encrypt_key})

        return [Route("/_sandbox/login", login, methods=["POST"]), Route("/_sandbox/pay", pay, methods=["POST"]),
                Route("/_sandbox/orders/{out_trade_no}", order, methods=["GET"]),
                Route("/_sandbox/notifications", notifications, methods=["GET"]),
                Route("/_sandbox/certificates", certificates, methods=["GET"]),
                Route("/_sandbox/settings", settings, methods=["GET", "POST"])]

"""JD Pay V2.0 simulator (H5 cashier + XML server API), an ASGI app; payment-protocols.md §3.7.

All cryptography comes from :mod:`minigate.providers.jdpay.crypto` (the code the client uses): the cashier
form's 3DES-hex fields are decrypted and its sign verified with the merchant's public key; server requests
are decrypted and verified the same way; answers and notifications are signed with the simulator's JD key
and 3DES-encrypted with the merchant's desKey.

Paths below the mount (``/jdpay`` in the sandbox): ``POST /jdpay/saveOrder`` (the H5 cashier; so the sandbox
URL is ``<base>/jdpay/jdpay/saveOrder``), ``POST /service/query``, ``/service/refund``, ``/service/queryRefund``.
Control routes: ``POST /_sandbox/pay``, ``GET /_sandbox/orders/{out_trade_no}``, ``GET /_sandbox/notifications``,
``GET|POST /_sandbox/settings``, ``GET|POST|DELETE /_sandbox/faults``.

Guesses (§5.6): result codes (:data:`minigate.providers.jdpay.codes.SANDBOX_CODES`), the retry schedule
(:data:`RETRY_SCHEDULE`, settable), the acknowledgement (HTTP 200 and a body of ``ok`` or ``success``, any
case, surrounding whitespace ignored), RSA-2048 keys (JD's samples are 1024-bit; the code handles both).
"""

from __future__ import annotations

import asyncio
import base64
import json
import secrets
import string
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route

from minigate.providers.jdpay import crypto, schemas
from minigate.providers.jdpay.codes import SUCCESS
from minigate.providers.jdpay.provider import PLAIN_FORM_FIELDS
from minigate.simulators._core import (
    Clock,
    CredentialStore,
    Deliverer,
    Faults,
    Outgoing,
    fault_routes,
    generate_rsa_private_key_pem,
    json_response,
    public_key_pem,
    read_json_object,
)
from minigate.simulators._jdpay_wire import (
    COMPARED_FIELDS,
    Refund,
    Trade,
    cashier_page,
    error_page,
    parse_form,
    problem,
    refund_fields,
    trade_fields,
    validate_form,
    validate_refund,
)

__all__ = ["ACK_BODIES", "MERCHANT_FIELDS", "RETRY_SCHEDULE", "JDPaySimulator", "create_credentials"]

#: JD's schedule is unknown (§5.6). [guess] 10s, 30s, 1m, 2m, 5m, 10m, 30m, 1h, 2h, 6h, 15h (about 25h in all,
#: like WeChat's 24h). Change it at run time with ``POST /_sandbox/settings {"retry_schedule": [...]}``.
RETRY_SCHEDULE = (10, 30, 60, 120, 300, 600, 1800, 3600, 7200, 21600, 54000)
ACK_BODIES = frozenset({"ok", "success"})
MERCHANT_FIELDS = ("merchant", "merchant_private_key", "jd_public_key", "des_key")
XML = "application/xml;charset=utf-8"
#: A handler's answer: inner fields to sign, or an error ``(code, desc)`` for the outer result.
Answer = list[tuple[str, schemas.Value]] | tuple[str, str]
#: JD's own declaration carries a space before ``?>`` (JD-4); receivers must verify the literal text.
JD_DECLARATION = '<?xml version="1.0" encoding="UTF-8" ?>'


def create_credentials() -> dict[str, Any]:
    merchant_key, jd_key = generate_rsa_private_key_pem(), generate_rsa_private_key_pem()
    merchant = {"merchant": "1101" + "".join(secrets.choice(string.digits) for _ in range(8)),
                "merchant_private_key": merchant_key, "jd_public_key": public_key_pem(jd_key),
                "des_key": base64.b64encode(secrets.token_bytes(24)).decode()}
    return {"merchant": merchant, "simulator": {"jd_private_key": jd_key}}


def acknowledged(status: int, body: bytes) -> bool:
    """JD counts a notification as delivered on HTTP 200 *and* an ``ok``/``success`` body (§3.6)."""
    return status == 200 and body.decode("utf-8", "replace").strip().lower() in ACK_BODIES


class JDPaySimulator:
    """One simulated JD Pay merchant. ``app`` is the ASGI app (mount it anywhere)."""

    name = "jdpay"

    def __init__(self, store: CredentialStore, *, clock: Clock, deliverer: Deliverer,
                 faults: Faults | None = None) -> None:
        data = store.load_or_create("jdpay", create_credentials)
        self.merchant: dict[str, str] = data["merchant"]
        self.clock = clock
        deliverer.acknowledged = acknowledged
        self.deliverer = deliverer
        self.faults = faults or Faults()
        self.settings: dict[str, Any] = {"refund_delay_seconds": 0.0}
        self._jd_key = crypto.load_private_key(data["simulator"]["jd_private_key"])
        self._merchant_public = crypto.load_private_key(self.merchant["merchant_private_key"]).public_key()
        self._des = crypto.decode_des_key(self.merchant["des_key"])
        self.trades: dict[str, Trade] = {}
        self.refunds: dict[str, Refund] = {}
        self.app = Starlette(routes=[
            *fault_routes(self.faults),
            Route("/_sandbox/pay", self._pay_route, methods=["POST"]),
            Route("/_sandbox/settings", self._settings_route, methods=["GET", "POST"]),
            Route("/_sandbox/orders/{out_trade_no}", self._order_route, methods=["GET"]),
            Route("/_sandbox/notifications", self._notifications_route, methods=["GET"]),
            Route("/jdpay/saveOrder", self._save_order, methods=["POST"]),
            Route("/service/{name}", self._service, methods=["POST"]),
        ])

    def now(self) -> float:
        return self.clock.now() + self.faults.clock_skew_seconds

    def credentials(self) -> dict[str, str]:
        return {k: self.merchant[k] for k in MERCHANT_FIELDS}

    def order(self, out_trade_no: str) -> Trade | None:
        """The trade, after lazily applying expiry (created -> 4 closed) and settling due refunds."""
        trade = self.trades.get(out_trade_no)
        if trade is not None:
            if trade.status == "0" and self.now() >= trade.expires_at:
                trade.status = "4"
            for refund in trade.refunds:
                self.settle_refund(refund)
        return trade

    # ------------------------------------------------------------------ signing
    def signed_xml(self, fields: list[tuple[str, schemas.Value]], *, sign_after: str | None = None) -> str:
        """Inner XML signed with the JD key; ``sign_after`` puts ``<sign>`` after that field (as in JD-4)."""
        text = schemas.build_xml(fields, omit_empty=False, declaration=JD_DECLARATION)
        sign = crypto.rsa_sign(self._jd_key, crypto.xml_s1(text))
        if sign_after is None:
            return crypto.insert_sign(text, sign)
        marker = f"</{sign_after}>"
        at = text.index(marker) + len(marker)
        return text[:at] + f"<sign>{sign}</sign>" + text[at:]

    def envelope(self, inner: str) -> str:
        return schemas.build_envelope(self.merchant["merchant"], crypto.envelope_encrypt(self._des, inner),
                                      result=(SUCCESS, "success"))

    def _error_envelope(self, code: str, desc: str) -> Response:
        body = schemas.build_xml([("version", "V2.0"), ("merchant", self.merchant["merchant"]),
                                  ("result", [("code", code), ("desc", desc)])])
        return Response(body, 200, media_type=XML)

    # ------------------------------------------------------------------ the H5 cashier
    async def _save_order(self, request: Request) -> Response:
        form = parse_form(await request.body())
        if form is None or form.get("version") != "V2.0" or not form.get("sign"):
            return HTMLResponse(error_page(*problem("PA0001")), 400)
        if form.get("merchant") != self.merchant["merchant"]:
            return HTMLResponse(error_page(*problem("ME0001")), 400)
        plain: dict[str, str] = {}
        try:
            for key, value in form.items():
                if key != "sign" and value != "":
                    plain[key] = value if key in PLAIN_FORM_FIELDS else crypto.tdes_decrypt_hex(self._des, value)
        except crypto.CryptoError:
            return HTMLResponse(error_page(*problem("SE0002")), 400)
        if not crypto.rsa_verify(self._merchant_public, crypto.form_s1(plain), form["sign"]):
            return HTMLResponse(error_page(*problem("SE0001")), 400)
        now = self.now()
        bad, expires_at = validate_form(plain, now)
        if bad is not None:
            return HTMLResponse(error_page(*bad), 400)
        trade = self.order(plain["tradeNum"])
        if trade is not None:
            if trade.status == "2":
                return HTMLResponse(error_page(*problem("TS0005")), 400)
            if any(trade.params.get(k) != plain.get(k) for k in COMPARED_FIELDS):
                return HTMLResponse(error_page(*problem("TS0006")), 400)
        else:
            trade = Trade(params=plain, created_at=now, expires_at=expires_at)
            self.trades[trade.trade_num] = trade
        pay_action = request.scope.get("root_path", "") + "/_sandbox/pay"
        return HTMLResponse(cashier_page(trade, pay_action))

    # ------------------------------------------------------------------ server API
    def _open_request(self, body: bytes) -> tuple[dict[str, Any] | None, Response | None]:
        try:
            envelope = schemas.parse_envelope(body.decode())
        except (UnicodeDecodeError, schemas.WireFormatError):
            return None, self._error_envelope(*problem("PA0001"))
        if envelope.merchant != self.merchant["merchant"]:
            return None, self._error_envelope(*problem("ME0001"))
        try:
            inner = crypto.envelope_decrypt(self._des, envelope.encrypt or "")
        except crypto.CryptoError:
            return None, self._error_envelope(*problem("SE0002"))
        sign = crypto.xml_sign_value(inner)
        if not sign or not crypto.rsa_verify(self._merchant_public, crypto.xml_s1(inner), sign):
            return None, self._error_envelope(*problem("SE0001"))
        try:
            data = schemas.xml_fields(schemas.parse_xml(inner))
        except schemas.WireFormatError:
            return None, self._error_envelope(*problem("PA0001"))
        if data.get("merchant") != self.merchant["merchant"] or data.get("version") != "V2.0":
            return None, self._error_envelope(*problem("PA0001"))
        return data, None

    async def _service(self, request: Request) -> Response:
        name = request.path_params["name"]
        handler = {"query": self._query, "refund": self._refund, "queryRefund": self._query_refund}.get(name)
        if handler is None:
            return Response(b"Not Found", 404, media_type="text/plain")
        data, refused = self._open_request(await request.body())
        if refused is not None:
            return refused
        assert data is not None
        fault = self.faults.take_call(f"/service/{name}")
        if fault is not None and fault.kind == "timeout":
            await asyncio.sleep(fault.seconds)
            return Response(b"Gateway Timeout", 504, media_type="text/plain")
        if fault is not None and fault.kind in ("http_500", "http_429"):
            return Response(b"error", 500 if fault.kind == "http_500" else 429, media_type="text/plain")
        answer = handler(data)
        if fault is not None and fault.kind == "charged_then_timeout":
            await asyncio.sleep(fault.seconds)
            return Response(b"Gateway Timeout", 504, media_type="text/plain")
        if isinstance(answer, tuple):
            return self._error_envelope(*answer)
        inner = self.signed_xml(answer)
        if fault is not None and fault.kind == "bad_signature":  # altered after signing
            inner = inner.replace("<desc>成功</desc>", "<desc>成功 </desc>", 1)
        return Response(self.envelope(inner), 200, media_type=XML)

    def _query(self, data: dict[str, Any]) -> Answer:
        trade_type, trade_num = data.get("tradeType"), data.get("tradeNum")
        if not isinstance(trade_num, str) or not trade_num:
            return problem("PA0001")
        if trade_type == "0":
            trade = self.order(trade_num)
            return problem("TS0001") if trade is None else trade_fields(trade, merchant=self.merchant["merchant"])
        if trade_type == "1":
            refund = self.refunds.get(trade_num)
            if refund is None or data.get("oTradeNum") not in (None, "", refund.o_trade_num):
                return problem("TS0001")
            self.settle_refund(refund)
            return refund_fields(refund, merchant=self.merchant["merchant"])
        return problem("PA0001")

    def _query_refund(self, data: dict[str, Any]) -> Answer:
        trade = self.order(str(data.get("oTradeNum") or ""))
        if trade is None:
            return problem("TS0001")
        refs: list[tuple[str, schemas.Value]] = [
            ("refund", refund_fields(r, merchant="", with_header=False)) for r in trade.refunds]
        return [("version", "V2.0"), ("merchant", self.merchant["merchant"]),
                ("result", [("code", SUCCESS), ("desc", "成功")]), ("refList", refs)]

    def _refund(self, data: dict[str, Any]) -> Answer:
        bad = validate_refund(data)
        if bad is not None:
            return bad
        merchant, amount = self.merchant["merchant"], int(data["amount"])
        existing = self.refunds.get(data["tradeNum"])
        if existing is not None:
            if (existing.o_trade_num, existing.amount) != (data["oTradeNum"], amount):
                return problem("TS0004")
            self.settle_refund(existing)
            return refund_fields(existing, merchant=merchant)
        trade = self.order(data["oTradeNum"])
        if trade is None:
            return problem("TS0001")
        if trade.status != "2":
            return problem("TS0003")
        if trade.refunded() + amount > trade.amount:
            return problem("TS0002")
        now, delay = self.now(), float(self.settings["refund_delay_seconds"])
        refund = Refund(trade_num=data["tradeNum"], o_trade_num=trade.trade_num, amount=amount, currency="CNY",
                        trade_time=schemas.format_time(now), notify_url=data.get("notifyUrl") or None,
                        note=data.get("note") or "", created_at=now, due_at=now + delay)
        self.refunds[refund.trade_num] = refund
        trade.refunds.append(refund)
        answer = refund_fields(refund, merchant=merchant)

        async def settle() -> None:
            self.settle_refund(refund, force=True)

        self.deliverer.later(delay, settle)
        return answer

    def settle_refund(self, refund: Refund, *, force: bool = False) -> None:
        if refund.status != "0" or not (force or self.now() >= refund.due_at):
            return
        refund.status, refund.trade_time = "1", schemas.format_time(self.now())
        if refund.notify_url:
            fields = refund_fields(refund, merchant=self.merchant["merchant"])
            self.notify(refund.notify_url, f"1:{refund.trade_num}:1", "REFUND", fields)

    # ------------------------------------------------------------------ payment and notifications
    def pay(self, out_trade_no: str) -> tuple[int, dict[str, Any]]:
        """The simulated payer confirms in the cashier: created -> 2 success, then the notification is sent."""
        trade = self.order(out_trade_no)
        if trade is None:
            return 404, {"code": "TS0001", "message": "no such trade (open the cashier form first)"}
        if trade.status != "0":
            return 409, {"code": "TRADE_NOT_PAYABLE", "message": f"status is {trade.status}"}
        trade.status, trade.paid_at = "2", self.now()
        fields = trade_fields(trade, merchant=self.merchant["merchant"], desc="success")
        event = self.notify(trade.notify_url, f"0:{trade.trade_num}:2", "PAYMENT", fields)
        return 200, {"out_trade_no": out_trade_no, "status": "2", "notification_id": event}

    def build_notification(self, out_trade_no: str, **overrides: str) -> tuple[bytes, dict[str, str]]:
        """A genuinely signed + encrypted payment notification for the trade, fields overridden (tests)."""
        trade = self.trades[out_trade_no]
        fields = trade_fields(trade, merchant=self.merchant["merchant"], desc="success")
        fields = [(k, overrides.pop(k)) if k in overrides else (k, v) for k, v in fields]
        fields += list(overrides.items())
        inner = self.signed_xml(fields, sign_after="tradeType")
        return self.envelope(inner).encode(), {"Content-Type": XML}

    def notify(self, url: str, event_id: str, event_type: str, fields: list[tuple[str, schemas.Value]]) -> str:
        """Sign (sign placed after tradeType, as in JD-4), encrypt, hand to the deliverer."""
        inner = self.signed_xml(fields, sign_after="tradeType")
        body = self.envelope(inner).encode()

        def build(variant: str) -> Outgoing:
            sent = body
            if variant == "tamper":  # a field changed after signing: a verifying receiver must refuse it
                sent = self.envelope(inner.replace("<amount>", "<amount>1", 1)).encode()
            elif variant == "signtest_probe":  # a garbage signature, otherwise well-formed
                junk = base64.b64encode(secrets.token_bytes(256)).decode()
                start, end = inner.index("<sign>") + 6, inner.index("</sign>")
                sent = self.envelope(inner[:start] + junk + inner[end:]).encode()
            return Outgoing(sent, {"Content-Type": XML})

        self.deliverer.submit(event_id=event_id, url=url, event_type=event_type, build=build,
                              fault=self.faults.take_notify())
        return event_id

    # ------------------------------------------------------------------ control routes
    async def _pay_route(self, request: Request) -> Response:
        body = await request.body()
        if not body.lstrip().startswith(b"{"):   # the cashier's HTML form (a JSON body is JSON whatever its type)
            form = parse_form(body) or {}
            status, answer = self.pay(form.get("out_trade_no", ""))
            text = "支付成功" if status == 200 else f"支付失败：{answer['code']}"
            return HTMLResponse(f"<!DOCTYPE html><html><body><h1>{text}</h1></body></html>", status)
        try:
            data = json.loads(body)
        except ValueError:
            data = None
        if not isinstance(data, dict) or not isinstance(data.get("out_trade_no"), str):
            return json_response({"code": "PARAM_ERROR", "message": 'JSON {"out_trade_no": ...} expected'}, 400)
        status, answer = self.pay(data["out_trade_no"])
        return json_response(answer, status)

    async def _order_route(self, request: Request) -> Response:
        trade = self.order(request.path_params["out_trade_no"])
        if trade is None:
            return json_response({"code": "TS0001", "message": "no such trade"}, 404)
        return json_response(trade.as_json())

    async def _notifications_route(self, request: Request) -> Response:
        return json_response({"data": [r.as_json() for r in reversed(self.deliverer.log)]})

    async def _settings_route(self, request: Request) -> Response:
        if request.method == "POST":
            data = await read_json_object(request)
            issue = "body must be a JSON object" if data is None else self.update_settings(data)
            if issue is not None:
                return json_response({"code": "PARAM_ERROR", "message": issue}, 400)
        return json_response(self.settings | {"time_scale": self.deliverer.time_scale,
                                              "retry_schedule": list(self.deliverer.schedule)})

    def update_settings(self, data: dict[str, Any]) -> str | None:
        unknown = set(data) - {"refund_delay_seconds", "time_scale", "retry_schedule"}
        if unknown:
            return f"unknown settings: {sorted(unknown)}"
        for name in ("refund_delay_seconds", "time_scale"):
            value = data.get(name, 0)
            if not isinstance(value, int | float) or isinstance(value, bool) or value < 0:
                return f"{name} must be a non-negative number"
        schedule = data.get("retry_schedule", [])
        if not isinstance(schedule, list) or not all(
                isinstance(v, int | float) and not isinstance(v, bool) and v >= 0 for v in schedule):
            return "retry_schedule must be a list of non-negative numbers (seconds)"
        if "retry_schedule" in data:
            self.deliverer.schedule = tuple(float(v) for v in data.pop("retry_schedule"))
        if "time_scale" in data:
            self.deliverer.time_scale = float(data.pop("time_scale"))
        self.settings.update(data)
        return None

"""The Alipay simulator on the wire: gateway checks, trade lifecycle, error codes, notifications and their retry
schedule, faults, certificate and AES modes, control routes."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from minigate.providers.alipay import signing
from minigate.simulators import Sandbox
from minigate.simulators.alipay import RETRY_SCHEDULE, AlipaySimulator
from minigate.simulators.sandbox import REGISTRY


@dataclass
class Receiver:
    """The merchant's notify_url: verifies with the Alipay public key, answers ``bodies`` in turn, then success."""

    public_pem: str
    bodies: list[bytes] = field(default_factory=list)
    received: list[tuple[dict[str, str], bool]] = field(default_factory=list)

    def app(self) -> Starlette:
        key = signing.load_public_key(self.public_pem)

        async def notify(request: Request) -> Response:
            assert request.headers["content-type"].startswith("application/x-www-form-urlencoded")
            form = dict(parse_qsl((await request.body()).decode(), keep_blank_values=True))
            self.received.append((form, signing.verify_notification(key, form)))
            return Response(self.bodies.pop(0) if self.bodies else b"success", media_type="text/plain")

        return Starlette(routes=[Route("/notify", notify, methods=["POST"])])

    @property
    def verified(self) -> list[dict[str, str]]:
        return [form for form, ok in self.received if ok]


class Merchant:
    """Signs OpenAPI calls (§2.2) with the sandbox app key and verifies the answers (§2.3)."""

    def __init__(self, sandbox: Sandbox, http: httpx.AsyncClient) -> None:
        self.sandbox, self.http = sandbox, http
        self.creds = sandbox.credentials("alipay")
        self.key = signing.load_private_key(self.creds["app_private_key"])
        self.alipay = signing.load_public_key(self.creds["alipay_public_key"])

    @property
    def sim(self) -> AlipaySimulator:
        return self.sandbox.simulator("alipay")  # type: ignore[no-any-return]

    def params(self, method: str, biz: dict[str, Any] | None = None, **extra: str) -> dict[str, str]:
        params = {"app_id": self.creds["app_id"], "method": method, "format": "JSON", "charset": "utf-8",
                  "sign_type": "RSA2", "timestamp": signing.format_timestamp(self.sim.clock.now()), "version": "1.0"}
        if biz is not None:
            params["biz_content"] = json.dumps(biz, ensure_ascii=False, separators=(",", ":"))
        params |= extra
        params["sign"] = signing.sign_params(self.key, params)
        return params

    async def send(self, params: dict[str, str], how: str = "post") -> httpx.Response:
        if how == "get":   # python-alipay-sdk style
            return await self.http.get("/alipay/gateway.do?" + urlencode(params))
        if how == "split":  # official SDK style: common params in the query, biz_content in the form
            biz = {"biz_content": params.pop("biz_content")} if "biz_content" in params else {}
            return await self.http.post("/alipay/gateway.do?" + urlencode(params), data=biz)
        return await self.http.post("/alipay/gateway.do", data=params)

    async def call(self, method: str, biz: dict[str, Any] | None = None, how: str = "post", **extra: str
                   ) -> dict[str, Any]:
        response = await self.send(self.params(method, biz, **extra), how)
        assert response.status_code == 200, response.text
        return self.open(response, method)

    def open(self, response: httpx.Response, method: str, aes_key: str | None = None) -> dict[str, Any]:
        text = response.text
        document = json.loads(text)
        key = method.replace(".", "_") + "_response"
        key = key if key in document else "error_response"
        content = signing.extract_sign_content(text, key)
        assert content is not None and signing.rsa2_verify(self.alipay, content, document["sign"]), text
        value = json.loads(content)
        if isinstance(value, str):
            assert aes_key is not None
            value = json.loads(signing.aes_decrypt(aes_key, value))
        value["_key"] = key
        return dict(value)

    def create_biz(self, out_trade_no: str, total: str = "10.00", **extra: Any) -> dict[str, Any]:
        return {"out_trade_no": out_trade_no, "total_amount": total, "subject": "沙箱商品",
                "product_code": "JSAPI_PAY", "buyer_open_id": "074a1CcTG1LelxKe4xQC0zgNdId0nxi95b5lsNpazWYoCo5"} | extra

    async def create(self, out_trade_no: str, total: str = "10.00", notify: bool = True, **extra: Any
                     ) -> dict[str, Any]:
        urls = {"notify_url": "http://testserver/notify"} if notify else {}
        return await self.call("alipay.trade.create", self.create_biz(out_trade_no, total, **extra), **urls)

    async def pay(self, out_trade_no: str) -> dict[str, Any]:
        r = await self.http.post("/alipay/_sandbox/pay", json={"out_trade_no": out_trade_no})
        assert r.status_code == 200, r.text
        return dict(r.json())


@pytest.fixture
async def env(tmp_path: Path) -> AsyncIterator[tuple[Merchant, Receiver]]:
    sandbox = Sandbox(tmp_path, time_scale=0.0)
    receiver = Receiver(sandbox.credentials("alipay")["alipay_public_key"])
    sandbox.notify_client = httpx.AsyncClient(transport=httpx.ASGITransport(app=receiver.app()),
                                              base_url="http://testserver")
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=sandbox.app), base_url="http://sandbox") as http:
        yield Merchant(sandbox, http), receiver
    await sandbox.aclose()


async def idle(m: Merchant) -> None:
    await asyncio.wait_for(m.sandbox.wait_idle(), 10)


# ------------------------------------------------------------------ registration and credentials
async def test_registered_and_credentials_are_the_four_design_fields(env: Any) -> None:
    m, _ = env
    assert REGISTRY["alipay"] == "minigate.simulators.alipay:AlipaySimulator"
    assert set(m.creds) == {"app_id", "seller_id", "app_private_key", "alipay_public_key"}
    assert m.creds["app_id"].startswith("2021") and m.creds["seller_id"].startswith("2088")
    assert m.creds["app_private_key"].startswith("-----BEGIN PRIVATE KEY-----")
    assert Sandbox(m.sandbox.state_dir).credentials("alipay") == m.creds   # kept in the state dir
    assert RETRY_SCHEDULE == (240, 600, 600, 3600, 7200, 21600, 54000)


# ------------------------------------------------------------------ lifecycle and transports
@pytest.mark.parametrize("how", ["post", "get", "split"])
async def test_lifecycle_with_every_parameter_placement(env: Any, how: str) -> None:
    m, receiver = env
    created = await m.call("alipay.trade.create", m.create_biz("L1", "88.88"), how, notify_url="http://testserver/notify")
    assert created["code"] == "10000" and len(created["trade_no"]) == 28 and created["out_trade_no"] == "L1"
    query = await m.call("alipay.trade.query", {"out_trade_no": "L1"}, how)
    assert (query["trade_status"], query["total_amount"]) == ("WAIT_BUYER_PAY", "88.88")
    paid = await m.pay("L1")
    await idle(m)
    query = await m.call("alipay.trade.query", {"trade_no": created["trade_no"]}, how)
    assert query["trade_status"] == "TRADE_SUCCESS" and query["send_pay_date"]
    assert query["buyer_open_id"] == m.create_biz("x")["buyer_open_id"]
    [note] = receiver.verified
    assert note["notify_id"] == paid["notify_id"] and note["trade_status"] == "TRADE_SUCCESS"
    assert (note["app_id"], note["seller_id"], note["total_amount"]) == (m.creds["app_id"], m.creds["seller_id"],
                                                                        "88.88")
    refund = await m.call("alipay.trade.refund", {"out_trade_no": "L1", "refund_amount": "8.88",
                                                  "out_request_no": "R1"}, how)
    assert (refund["fund_change"], refund["refund_fee"]) == ("Y", "8.88")
    again = await m.call("alipay.trade.refund", {"out_trade_no": "L1", "refund_amount": "8.88",
                                                 "out_request_no": "R1"}, how)
    assert (again["fund_change"], again["refund_fee"]) == ("N", "8.88")
    rest = await m.call("alipay.trade.refund", {"out_trade_no": "L1", "refund_amount": "80.00",
                                                "out_request_no": "R2"}, how)
    assert (rest["fund_change"], rest["refund_fee"]) == ("Y", "88.88")
    assert (await m.call("alipay.trade.query", {"out_trade_no": "L1"}))["trade_status"] == "TRADE_CLOSED"
    rq = await m.call("alipay.trade.fastpay.refund.query", {"out_trade_no": "L1", "out_request_no": "R1"}, how)
    assert (rq["refund_status"], rq["refund_amount"], rq["total_amount"]) == ("REFUND_SUCCESS", "8.88", "88.88")
    none = await m.call("alipay.trade.fastpay.refund.query", {"out_trade_no": "L1", "out_request_no": "R9"}, how)
    assert none["code"] == "10000" and "refund_status" not in none
    await idle(m)
    notes = receiver.verified
    assert [n["trade_status"] for n in notes] == ["TRADE_SUCCESS", "TRADE_SUCCESS", "TRADE_CLOSED"]
    assert (notes[1]["refund_fee"], notes[1]["out_biz_no"]) == ("8.88", "R1") and notes[1]["gmt_refund"]
    assert (notes[2]["refund_fee"], notes[2]["out_biz_no"]) == ("88.88", "R2") and notes[2]["gmt_close"]
    assert len({n["notify_id"] for n in notes}) == 3


async def test_trade_rules_and_error_codes(env: Any) -> None:
    m, _ = env
    first = await m.create("E1")
    assert (await m.create("E1"))["trade_no"] == first["trade_no"]     # same params while unpaid: same trade
    changed = await m.create("E1", "11.00")
    assert (changed["code"], changed["sub_code"]) == ("40004", "ACQ.CONTEXT_INCONSISTENT")
    no_buyer = await m.call("alipay.trade.create", {k: v for k, v in m.create_biz("E2").items()
                                                    if k != "buyer_open_id"})
    assert (no_buyer["sub_code"], no_buyer["sub_msg"]) == ("ACQ.INVALID_PARAMETER", "参数无效:买家不能为空")
    for bad in ("0.00", "1.234", "-1", "abc"):
        assert (await m.create("E3", bad))["sub_code"] == "ACQ.INVALID_PARAMETER"
    bad_url = await m.call("alipay.trade.create", m.create_biz("E4"), notify_url="http://example.com/n")
    assert bad_url["code"] == "40002"
    await m.pay("E1")
    assert (await m.create("E1"))["sub_code"] == "ACQ.TRADE_HAS_SUCCESS"
    assert (await m.call("alipay.trade.close", {"out_trade_no": "E1"}))["sub_code"] == "ACQ.TRADE_STATUS_ERROR"
    await m.create("E5")
    assert (await m.call("alipay.trade.close", {"out_trade_no": "E5"}))["code"] == "10000"
    assert (await m.create("E5"))["sub_code"] == "ACQ.TRADE_HAS_CLOSE"
    assert (await m.call("alipay.trade.close", {"out_trade_no": "E5"}))["sub_code"] == "ACQ.TRADE_STATUS_ERROR"
    assert (await m.call("alipay.trade.query", {"out_trade_no": "nope"}))["sub_code"] == "ACQ.TRADE_NOT_EXIST"
    refund = {"out_trade_no": "E1", "refund_amount": "10.01", "out_request_no": "X1"}
    assert (await m.call("alipay.trade.refund", refund))["sub_code"] == "ACQ.REFUND_AMT_NOT_EQUAL_TOTAL"
    await m.call("alipay.trade.refund", refund | {"refund_amount": "1.00"})
    assert (await m.call("alipay.trade.refund", refund))["sub_code"] == "ACQ.CONTEXT_INCONSISTENT"
    assert (await m.call("alipay.trade.refund", refund | {"out_trade_no": "E5", "out_request_no": "X2",
                                                          "refund_amount": "1.00"}))["sub_code"] == "ACQ.TRADE_HAS_CLOSE"
    await m.create("E6", notify=False)
    assert (await m.call("alipay.trade.refund", refund | {"out_trade_no": "E6", "out_request_no": "X3",
                                                          "refund_amount": "1.00"}))["sub_code"] == "ACQ.TRADE_STATUS_ERROR"
    await m.create("E7", time_expire=signing.format_timestamp(m.sim.now() + 60))
    m.sim.clock.advance(61)
    assert (await m.call("alipay.trade.query", {"out_trade_no": "E7"}))["trade_status"] == "TRADE_CLOSED"


async def test_gateway_checks(env: Any) -> None:
    m, _ = env
    params = m.params("alipay.trade.query", {"out_trade_no": "x"})
    tampered = params | {"biz_content": '{"out_trade_no":"y"}'}
    answer = m.open(await m.send(tampered), "alipay.trade.query")
    assert (answer["code"], answer["sub_code"]) == ("40002", "isv.invalid-signature")
    assert answer["sub_msg"].endswith(signing.sign_content(tampered))          # the gateway's sign string
    unsigned = {k: v for k, v in params.items() if k != "sign"}
    assert m.open(await m.send(unsigned), "alipay.trade.query")["sub_code"] == "isv.missing-signature"
    wrong_app = m.params("alipay.trade.query", {"out_trade_no": "x"}, app_id="2021000000000001")
    assert m.open(await m.send(wrong_app), "alipay.trade.query")["sub_code"] == "isv.invalid-app-id"
    rsa1 = m.params("alipay.trade.query", {"out_trade_no": "x"}, sign_type="RSA")
    assert m.open(await m.send(rsa1), "alipay.trade.query")["sub_code"] == "isv.invalid-signature-type"
    stale = m.params("alipay.trade.query", {"out_trade_no": "x"},
                     timestamp=signing.format_timestamp(m.sim.now() - 901))
    assert m.open(await m.send(stale), "alipay.trade.query")["sub_code"] == "isv.invalid-timestamp"
    ok = m.params("alipay.trade.query", {"out_trade_no": "x"}, timestamp=signing.format_timestamp(m.sim.now() - 800))
    assert m.open(await m.send(ok), "alipay.trade.query")["sub_code"] == "ACQ.TRADE_NOT_EXIST"
    unknown = m.open(await m.send(m.params("alipay.trade.nothing")), "alipay.trade.nothing")
    assert (unknown["_key"], unknown["sub_code"]) == ("error_response", "isv.invalid-method")
    missing = m.open(await m.send({"app_id": m.creds["app_id"]}), "x")
    assert (missing["_key"], missing["sub_code"]) == ("error_response", "isv.missing-method")


# ------------------------------------------------------------------ notifications
async def test_retry_until_the_body_is_exactly_success(env: Any) -> None:
    m, receiver = env
    m.sandbox.time_scale = 0.001
    receiver.bodies = [b"fail", b"SUCCESS"]          # two refusals, then the default b"success"
    await m.create("N1")
    await m.pay("N1")
    await idle(m)
    assert len(receiver.received) == 3 and all(ok for _, ok in receiver.received)
    assert len({form["notify_id"] for form, _ in receiver.received}) == 1       # stable across retries
    [record] = (await m.http.get("/alipay/_sandbox/notifications")).json()["data"]
    assert record["state"] == "delivered" and record["attempts"] == 3
    log = record["log"]
    assert [entry["body"] for entry in log] == ["fail", "SUCCESS", "success"]
    assert log[1]["at"] - log[0]["at"] >= 240 * 0.001 * 0.9                   # 4 minutes, scaled
    assert log[2]["at"] - log[1]["at"] >= 600 * 0.001 * 0.9                   # then 10 minutes


async def test_settings_first_retry_and_notification_switches(env: Any) -> None:
    m, receiver = env
    r = await m.http.post("/alipay/_sandbox/settings", json={"first_retry_seconds": 120, "notify_on_close": False,
                                                             "notify_wait_buyer_pay": True})
    assert r.status_code == 200 and r.json()["retry_schedule"][:2] == [120, 600]
    assert r.json()["encrypt_key"] and r.json()["timestamp_tolerance_seconds"] == 900
    for bad in ({"nope": 1}, {"notify_on_close": "yes"}, {"first_retry_seconds": -1}):
        assert (await m.http.post("/alipay/_sandbox/settings", json=bad)).status_code == 400
    await m.create("S1")
    await m.call("alipay.trade.close", {"out_trade_no": "S1"})
    await idle(m)
    assert [n["trade_status"] for n in receiver.verified] == ["WAIT_BUYER_PAY"]


async def test_build_notification_signs_overrides(env: Any) -> None:
    m, _ = env
    await m.create("B1")
    await m.pay("B1")
    body, headers = m.sim.build_notification("B1", total_amount="0.01", seller_id="2088000000000000", body=None)
    form = dict(parse_qsl(body.decode()))
    assert headers["Content-Type"].startswith("application/x-www-form-urlencoded")
    assert (form["total_amount"], form["seller_id"]) == ("0.01", "2088000000000000")
    assert signing.verify_notification(m.alipay, form)
    with pytest.raises(KeyError):
        m.sim.build_notification("nope")


@pytest.mark.parametrize(("fault", "expected"), [
    ({"notify": "drop"}, (0, "dropped")),
    ({"notify": "duplicate"}, (2, "delivered")),
    ({"notify": "tamper"}, (1, "delivered")),
    ({"notify": "delay", "seconds": 1}, (1, "delivered")),
])
async def test_notification_faults(env: Any, fault: dict[str, Any], expected: tuple[int, str]) -> None:
    m, receiver = env
    assert (await m.http.post("/alipay/_sandbox/faults", json=fault)).status_code == 200
    await m.create("F1")
    await m.pay("F1")
    await idle(m)
    [record] = (await m.http.get("/alipay/_sandbox/notifications")).json()["data"]
    assert (len(receiver.verified), record["state"]) == expected
    if fault["notify"] == "tamper":
        assert len(receiver.received) == 2 and receiver.received[0][1] is False


# ------------------------------------------------------------------ call faults
async def test_call_faults(env: Any) -> None:
    m, _ = env
    faults = "/alipay/_sandbox/faults"
    await m.http.post(faults, json={"next_call": "timeout", "seconds": 0.01})
    assert (await m.send(m.params("alipay.trade.query", {"out_trade_no": "x"}))).status_code == 504
    await m.http.post(faults, json={"next_call": "http_500", "path": "alipay.trade.refund"})
    assert (await m.send(m.params("alipay.trade.query", {"out_trade_no": "x"}))).status_code == 200
    assert (await m.send(m.params("alipay.trade.refund", {"out_trade_no": "x"}))).status_code == 500
    await m.http.post(faults, json={"next_call": "charged_then_timeout", "seconds": 0.01})
    assert (await m.send(m.params("alipay.trade.create", m.create_biz("C1")))).status_code == 504
    assert m.sim.order("C1") is not None                                       # it happened anyway
    await m.http.post(faults, json={"next_call": "bad_signature"})
    response = await m.send(m.params("alipay.trade.query", {"out_trade_no": "C1"}))
    content = signing.extract_sign_content(response.text, "alipay_trade_query_response")
    assert content is not None and not signing.rsa2_verify(m.alipay, content, response.json()["sign"])
    await m.http.post(faults, json={"clock_skew_seconds": 3600})
    assert (await m.call("alipay.trade.query", {"out_trade_no": "C1"}))["sub_code"] == "isv.invalid-timestamp"
    assert (await m.http.delete(faults)).json()["clock_skew_seconds"] == 0


# ------------------------------------------------------------------ certificate and AES modes
async def test_certificate_mode(env: Any) -> None:
    m, _ = env
    certs = (await m.http.get("/alipay/_sandbox/certificates")).json()
    assert certs["app_cert_sn"] == signing.cert_sn(certs["app_cert"])
    assert certs["alipay_cert_sn"] == signing.cert_sn(certs["alipay_cert"])
    assert certs["alipay_root_cert_sn"] == signing.root_cert_sn(certs["alipay_root_cert"])
    assert certs["alipay_root_cert"].count("BEGIN CERTIFICATE") == 2 and "_" not in certs["alipay_root_cert_sn"]
    assert signing.load_public_key(certs["alipay_cert"]).public_numbers() == m.alipay.public_numbers()
    sns = {"app_cert_sn": certs["app_cert_sn"], "alipay_root_cert_sn": certs["alipay_root_cert_sn"]}
    response = await m.send(m.params("alipay.trade.query", {"out_trade_no": "x"}, **sns))
    assert response.json()["alipay_cert_sn"] == certs["alipay_cert_sn"]
    wrong = await m.send(m.params("alipay.trade.query", {"out_trade_no": "x"}, **(sns | {"app_cert_sn": "0" * 32})))
    assert m.open(wrong, "alipay.trade.query")["sub_code"] == "isv.invalid-app-cert-sn"


async def test_aes_mode(env: Any) -> None:
    m, _ = env
    key = (await m.http.get("/alipay/_sandbox/settings")).json()["encrypt_key"]
    biz = signing.aes_encrypt(key, json.dumps(m.create_biz("A1"), ensure_ascii=False))
    params = m.params("alipay.trade.create", None, biz_content=biz, encrypt_type="AES",
                      notify_url="http://127.0.0.1:9/notify")
    response = await m.send(params)
    assert response.text.startswith('{"alipay_trade_create_response":"')       # a signed, quoted ciphertext
    assert m.open(response, "alipay.trade.create", aes_key=key)["out_trade_no"] == "A1"
    garbage = m.params("alipay.trade.query", None, biz_content="bm9wZQ==", encrypt_type="AES")
    assert m.open(await m.send(garbage), "alipay.trade.query")["sub_code"] == "isv.decryption-error"


# ------------------------------------------------------------------ control routes
async def test_control_routes(env: Any) -> None:
    m, _ = env
    await m.create("O1", "1.23")
    order = (await m.http.get("/alipay/_sandbox/orders/O1")).json()
    assert order["trade"]["trade_status"] == "WAIT_BUYER_PAY" and order["notify_url"] == "http://testserver/notify"
    assert (await m.http.get("/alipay/_sandbox/orders/none")).status_code == 404
    assert (await m.http.post("/alipay/_sandbox/pay", json={"out_trade_no": "none"})).status_code == 404
    assert (await m.http.post("/alipay/_sandbox/pay", json={})).status_code == 400
    await m.pay("O1")
    assert (await m.http.post("/alipay/_sandbox/pay", json={"out_trade_no": "O1"})).status_code == 409
    assert (await m.http.post("/alipay/_sandbox/faults", json={"next_call": "nope"})).status_code == 400
    login = await m.http.post("/alipay/_sandbox/login", json={"user": "alice"})
    answer = await m.call("alipay.system.oauth.token", None, grant_type="authorization_code",
                          code=login.json()["code"])
    assert answer["user_id"].startswith("2088") and answer["open_id"]
    reused = await m.call("alipay.system.oauth.token", None, grant_type="authorization_code",
                          code=login.json()["code"])
    assert (reused["_key"], reused["sub_code"]) == ("error_response", "isv.code-invalid")

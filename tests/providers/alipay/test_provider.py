"""AlipayProvider over ``httpx.MockTransport`` with a fake Alipay that verifies our RSA2 signature, plus one
end-to-end run against the simulator app over ``httpx.ASGITransport``."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qsl

import httpx
import pytest
from pydantic import ValidationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Mount, Route

from minigate.domain.results import RefundState, StandardCode, TradeState
from minigate.errors import ConfigurationError, ProviderMisconfigured, ProviderTimeout, ProviderUnavailable
from minigate.providers.alipay import signing
from minigate.providers.alipay.codes import ErrorMapper
from minigate.providers.alipay.config import AlipayConfig
from minigate.providers.alipay.provider import AlipayProvider
from minigate.providers.bases.payment import CreateOrderRequest, RefundRequest
from minigate.simulators._alipay_wire import create_credentials
from minigate.simulators._core import Clock, CredentialStore, Deliverer, Faults
from minigate.simulators.alipay import RETRY_SCHEDULE, AlipaySimulator

CREDS = create_credentials()          # keys + a CA with app/alipay certificates (certificate mode)
MERCHANT, SIM = CREDS["merchant"], CREDS["simulator"]
NOW = 1715593760.0                    # 2024-05-13 17:49:20 Beijing
BASE = "https://openapi.example/gateway.do"
APP_PUBLIC = signing.load_public_key(SIM["app_public_key"])
ALIPAY_KEY = signing.load_private_key(SIM["alipay_private_key"])

Answer = dict[str, Any] | Callable[[dict[str, str]], httpx.Response]


def config(**extra: Any) -> AlipayConfig:
    return AlipayConfig(**(MERCHANT | {"base_url": BASE} | extra))


def signed_answer(key: str, obj: dict[str, Any] | str, *, cert_sn: str | None = None, sign: str | None = None,
                  aes_key: str | None = None) -> httpx.Response:
    value = obj if isinstance(obj, str) else json.dumps(obj, ensure_ascii=False)
    if aes_key:
        value = json.dumps(signing.aes_encrypt(aes_key, value))
    signature = signing.rsa2_sign(ALIPAY_KEY, value) if sign is None else sign
    text = '{"' + key + '":' + value + ',"sign":"' + signature + '"'
    text += f',"alipay_cert_sn":"{cert_sn}"' if cert_sn else ""
    return httpx.Response(200, content=(text + "}").encode(), headers={"Content-Type": "application/json"})


class FakeAlipay:
    """Verifies each request's signature with the app public key, records it, answers from ``answers``."""

    def __init__(self, answers: dict[str, Answer] | None = None, *, cert_sn: str | None = None,
                 aes_key: str | None = None) -> None:
        self.answers = answers or {}
        self.requests: list[dict[str, str]] = []
        self.cert_sn = cert_sn
        self.aes_key = aes_key

    def __call__(self, request: httpx.Request) -> httpx.Response:
        assert request.method == "POST" and str(request.url) == BASE
        assert request.headers["content-type"].startswith("application/x-www-form-urlencoded")
        params = dict(parse_qsl(request.content.decode(), keep_blank_values=True))
        assert signing.rsa2_verify(APP_PUBLIC, signing.sign_content(params), params["sign"]), "bad request sign"
        if params.get("encrypt_type") == "AES":
            assert self.aes_key is not None
            params["biz_plain"] = signing.aes_decrypt(self.aes_key, params["biz_content"])
        self.requests.append(params)
        answer = self.answers[params["method"]]
        if callable(answer):
            return answer(params)
        key = params["method"].replace(".", "_") + "_response"
        return signed_answer(key, {"code": "10000", "msg": "Success"} | answer, cert_sn=self.cert_sn,
                             aes_key=self.aes_key)

    def biz(self, index: int = -1) -> dict[str, Any]:
        params = self.requests[index]
        return dict(json.loads(params.get("biz_plain") or params["biz_content"]))


def provider(fake: FakeAlipay, **extra: Any) -> AlipayProvider:
    client = httpx.AsyncClient(transport=httpx.MockTransport(fake))
    return AlipayProvider(config(**extra), client, clock=lambda: NOW)


def order(**extra: Any) -> CreateOrderRequest:
    base: dict[str, Any] = {"out_trade_no": "ORDER1", "amount": 8888, "description": "Test order",
                            "notify_url": "https://merchant.example/notify/alipay",
                            "payer_id": "074a1CcTG1LelxKe4xQC0zgNdId0nxi95b5lsNpazWYoCo5"}
    return CreateOrderRequest(**(base | extra))


TRADE = {"trade_no": "2024051322001468450512505578", "out_trade_no": "ORDER1", "total_amount": "88.88",
         "buyer_open_id": "074a1Cc", "buyer_user_id": "2088102534368455"}


# ------------------------------------------------------------------ operations
async def test_create_order_request_and_checkout() -> None:
    fake = FakeAlipay({"alipay.trade.create": {"out_trade_no": "ORDER1", "trade_no": TRADE["trade_no"]}})
    expires = dt.datetime(2024, 5, 13, 10, 19, 20, tzinfo=dt.UTC)
    result = await provider(fake, op_app_id="2021000122671080").create_order(order(expires_at=expires,
                                                                                    attach="a=1"))
    assert result.ok and result.value is not None
    assert result.value.client_params == {"tradeNO": TRADE["trade_no"]}
    assert result.value.provider_order_ref == TRADE["trade_no"]
    params = fake.requests[0]
    assert {k: params[k] for k in ("app_id", "method", "format", "charset", "sign_type", "timestamp", "version",
                                   "notify_url")} == {
        "app_id": MERCHANT["app_id"], "method": "alipay.trade.create", "format": "JSON", "charset": "utf-8",
        "sign_type": "RSA2", "timestamp": "2024-05-13 17:49:20", "version": "1.0",
        "notify_url": "https://merchant.example/notify/alipay"}
    assert "app_cert_sn" not in params and "encrypt_type" not in params
    assert params["biz_content"] == (
        '{"out_trade_no":"ORDER1","total_amount":"88.88","subject":"Test order","product_code":"JSAPI_PAY",'
        '"buyer_open_id":"074a1CcTG1LelxKe4xQC0zgNdId0nxi95b5lsNpazWYoCo5","op_app_id":"2021000122671080",'
        '"time_expire":"2024-05-13 18:19:20","passback_params":"a=1"}')


async def test_create_order_with_legacy_buyer_id() -> None:
    fake = FakeAlipay({"alipay.trade.create": {"out_trade_no": "ORDER1", "trade_no": "T"}})
    await provider(fake, buyer_id_field="buyer_id").create_order(order(payer_id="2088102534368455"))
    assert fake.biz()["buyer_id"] == "2088102534368455" and "buyer_open_id" not in fake.biz()


@pytest.mark.parametrize(("wire", "extra", "state"), [
    ("WAIT_BUYER_PAY", {}, TradeState.PENDING),
    ("TRADE_SUCCESS", {"send_pay_date": "2024-05-13 17:50:00"}, TradeState.PAID),
    ("TRADE_FINISHED", {"send_pay_date": "2024-05-13 17:50:00"}, TradeState.PAID),
    ("TRADE_CLOSED", {}, TradeState.CLOSED),
    ("TRADE_CLOSED", {"send_pay_date": "2024-05-13 17:50:00"}, TradeState.REFUNDED),
])
async def test_query_order_states(wire: str, extra: dict[str, str], state: TradeState) -> None:
    fake = FakeAlipay({"alipay.trade.query": TRADE | {"trade_status": wire} | extra})
    result = await provider(fake).query_order("ORDER1")
    assert result.ok and result.value is not None
    trade = result.value
    assert (trade.state, trade.amount_total, trade.provider_trade_id) == (state, 8888, TRADE["trade_no"])
    assert (trade.merchant_id, trade.app_id, trade.payer_id) == (MERCHANT["seller_id"], MERCHANT["app_id"], "074a1Cc")
    if "send_pay_date" in extra:
        assert trade.paid_at == dt.datetime(2024, 5, 13, 9, 50, tzinfo=dt.UTC)
    assert fake.biz() == {"out_trade_no": "ORDER1"}


async def test_query_answer_for_another_trade_is_refused() -> None:
    fake = FakeAlipay({"alipay.trade.query": TRADE | {"trade_status": "TRADE_SUCCESS", "out_trade_no": "OTHER"}})
    with pytest.raises(ProviderUnavailable):
        await provider(fake).query_order("ORDER1")


async def test_close_order_and_ambiguous_status_error() -> None:
    fake = FakeAlipay({"alipay.trade.close": {"trade_no": "T", "out_trade_no": "ORDER1"}})
    assert (await provider(fake).close_order("ORDER1")).ok
    status_error = {"code": "40004", "msg": "Business Failed", "sub_code": "ACQ.TRADE_STATUS_ERROR", "sub_msg": "x"}
    for wire, extra, code in (("TRADE_CLOSED", {}, StandardCode.ORDER_CLOSED),
                              ("TRADE_SUCCESS", {"send_pay_date": "2024-05-13 17:50:00"}, StandardCode.ALREADY_PAID)):
        fake = FakeAlipay({"alipay.trade.close": lambda p: signed_answer("alipay_trade_close_response", status_error),
                           "alipay.trade.query": TRADE | {"trade_status": wire} | extra})
        result = await provider(fake).close_order("ORDER1")
        assert (result.ok, result.code, result.provider_code) == (False, code, "ACQ.TRADE_STATUS_ERROR")


@pytest.mark.parametrize("fund_change", ["Y", "N"])
async def test_refund_is_synchronous(fund_change: str) -> None:
    fake = FakeAlipay({"alipay.trade.refund": {"trade_no": "T", "out_trade_no": "ORDER1", "fund_change": fund_change,
                                               "refund_fee": "30.00", "gmt_refund_pay": "2024-05-13 18:00:00"}})
    result = await provider(fake).refund(RefundRequest("ORDER1", "R1", 1000, 8888, reason="damaged"))
    assert result.ok and result.value is not None
    assert (result.value.state, result.value.amount, result.value.out_refund_no) == (RefundState.SUCCEEDED, 1000, "R1")
    assert fake.biz() == {"out_trade_no": "ORDER1", "refund_amount": "10.00", "out_request_no": "R1",
                          "refund_reason": "damaged"}


async def test_query_refund_found_and_not_found() -> None:
    found = {"trade_no": "T", "out_trade_no": "ORDER1", "out_request_no": "R1", "refund_amount": "10.00",
             "total_amount": "88.88", "refund_status": "REFUND_SUCCESS"}
    result = await provider(FakeAlipay({"alipay.trade.fastpay.refund.query": found})).query_refund(
        "R1", out_trade_no="ORDER1")
    assert result.ok and result.value is not None and result.value.amount == 1000
    fake = FakeAlipay({"alipay.trade.fastpay.refund.query": {"trade_no": "T", "out_trade_no": "ORDER1"}})
    missing = await provider(fake).query_refund("R2", out_trade_no="ORDER1")
    assert (missing.ok, missing.code) == (False, StandardCode.NOT_FOUND)
    assert fake.biz() == {"out_trade_no": "ORDER1", "out_request_no": "R2"}


# ------------------------------------------------------------------ error mapping
def business_error(sub_code: str, code: str = "40004") -> Answer:
    return lambda p: signed_answer(p["method"].replace(".", "_") + "_response",
                                   {"code": code, "msg": "Business Failed", "sub_code": sub_code, "sub_msg": "m"})


@pytest.mark.parametrize(("sub_code", "op", "expected"), [
    ("ACQ.TRADE_HAS_SUCCESS", "create", StandardCode.ALREADY_PAID),
    ("ACQ.TRADE_HAS_CLOSE", "create", StandardCode.ORDER_CLOSED),
    ("ACQ.CONTEXT_INCONSISTENT", "create", StandardCode.PARAMS_MISMATCH),
    ("ACQ.INVALID_PARAMETER", "create", StandardCode.INVALID_REQUEST),
    ("ACQ.TRADE_NOT_EXIST", "query", StandardCode.NOT_FOUND),
    ("ACQ.REFUND_AMT_NOT_EQUAL_TOTAL", "refund", StandardCode.REFUND_NOT_ALLOWED),
    ("ACQ.REASON_TRADE_REFUND_FEE_ERR", "refund", StandardCode.REFUND_NOT_ALLOWED),
    ("ACQ.TRADE_NOT_ALLOW_REFUND", "refund", StandardCode.REFUND_NOT_ALLOWED),
    ("ACQ.SELLER_BALANCE_NOT_ENOUGH", "refund", StandardCode.INSUFFICIENT_BALANCE),
    ("ACQ.TRADE_STATUS_ERROR", "refund", StandardCode.DECLINED),
    ("ACQ.SOMETHING_NEW", "refund", StandardCode.DECLINED),
])
async def test_declines(sub_code: str, op: str, expected: StandardCode) -> None:
    method = {"create": "alipay.trade.create", "query": "alipay.trade.query", "refund": "alipay.trade.refund"}[op]
    p = provider(FakeAlipay({method: business_error(sub_code)}))
    result = await (p.create_order(order()) if op == "create" else p.query_order("ORDER1") if op == "query"
                    else p.refund(RefundRequest("ORDER1", "R1", 100, 8888)))
    assert (result.ok, result.code, result.provider_code) == (False, expected, sub_code)


def raw(status: int, body: bytes = b"") -> Answer:
    return lambda p: httpx.Response(status, content=body)


def timeout(params: dict[str, str]) -> httpx.Response:
    raise httpx.ReadTimeout("slow")


@pytest.mark.parametrize(("answer", "kind"), [
    (business_error("isp.unknow-error", "20000"), ProviderUnavailable),
    (business_error("aop.unknow-error", "20000"), ProviderUnavailable),
    (business_error("ACQ.SYSTEM_ERROR"), ProviderUnavailable),
    (business_error("isp.anything"), ProviderUnavailable),
    (raw(500, b"oops"), ProviderUnavailable),
    (raw(502, b"<html>bad gateway</html>"), ProviderUnavailable),
    (raw(200, b"<html>not json</html>"), ProviderUnavailable),
    (raw(200, b'{"something_else":{}}'), ProviderUnavailable),
    (timeout, ProviderTimeout),
    (lambda p: signed_answer("alipay_trade_query_response", {"code": "10000"}, sign="AAAA"), ProviderUnavailable),
    (lambda p: signed_answer("alipay_trade_query_response", {"code": "10000", "trade_status": "TRADE_SUCCESS"},
                             sign=""), ProviderUnavailable),
    (lambda p: signed_answer("alipay_trade_query_response", {"code": "40004", "sub_code": "ACQ.TRADE_NOT_EXIST"},
                             sign=""), ProviderUnavailable),
    (business_error("isv.invalid-signature", "40002"), ProviderMisconfigured),
    (business_error("isv.invalid-app-id", "40002"), ProviderMisconfigured),
    (business_error("isv.insufficient-isv-permissions", "40006"), ProviderMisconfigured),
    (business_error("aop.invalid-auth-token", "20001"), ProviderMisconfigured),
    (lambda p: signed_answer("error_response", {"code": "40002", "sub_code": "isv.invalid-signature"}, sign=""),
     ProviderMisconfigured),
])
async def test_unknown_outcomes_and_misconfiguration_raise(answer: Answer, kind: type[Exception]) -> None:
    with pytest.raises(kind) as info:
        await provider(FakeAlipay({"alipay.trade.query": answer})).query_order("ORDER1")
    assert MERCHANT["app_private_key"] not in str(info.value)


async def test_error_mapper_is_overridable() -> None:
    mapper = ErrorMapper(sub_codes={"ACQ.TRADE_STATUS_ERROR": StandardCode.ORDER_CLOSED},
                         unknown_outcome_sub_codes=frozenset())
    client = httpx.AsyncClient(transport=httpx.MockTransport(FakeAlipay({
        "alipay.trade.refund": business_error("ACQ.TRADE_STATUS_ERROR"),
        "alipay.trade.query": business_error("ACQ.SYSTEM_ERROR")})))
    p = AlipayProvider(config(), client, error_mapper=mapper)
    assert (await p.refund(RefundRequest("ORDER1", "R1", 1, 8888))).code is StandardCode.ORDER_CLOSED
    assert (await p.query_order("ORDER1")).code is StandardCode.DECLINED


# ------------------------------------------------------------------ certificate and AES modes, config
def cert_config() -> dict[str, Any]:
    return {"key_mode": "certificate", "alipay_public_key": None, "app_cert": SIM["app_cert"],
            "alipay_cert": SIM["alipay_cert"], "alipay_root_cert": SIM["alipay_root_cert"]}


async def test_certificate_mode_sends_sns_and_checks_alipay_cert_sn() -> None:
    alipay_sn = signing.cert_sn(SIM["alipay_cert"])
    fake = FakeAlipay({"alipay.trade.query": TRADE | {"trade_status": "WAIT_BUYER_PAY"}}, cert_sn=alipay_sn)
    assert (await provider(fake, **cert_config()).query_order("ORDER1")).ok
    params = fake.requests[0]
    assert params["app_cert_sn"] == signing.cert_sn(SIM["app_cert"])
    assert params["alipay_root_cert_sn"] == signing.root_cert_sn(SIM["alipay_root_cert"])
    assert "_" not in params["alipay_root_cert_sn"]      # the ECDSA root in the file is skipped
    for wrong in ("0" * 32, None):
        fake = FakeAlipay({"alipay.trade.query": TRADE | {"trade_status": "WAIT_BUYER_PAY"}}, cert_sn=wrong)
        with pytest.raises(ProviderUnavailable, match="unknown Alipay certificate"):
            await provider(fake, **cert_config()).query_order("ORDER1")


async def test_aes_mode_round_trip() -> None:
    key = SIM["encrypt_key"]
    fake = FakeAlipay({"alipay.trade.query": TRADE | {"trade_status": "TRADE_SUCCESS"}}, aes_key=key)
    result = await provider(fake, encrypt_key=key).query_order("ORDER1")
    assert result.ok and result.value is not None and result.value.state is TradeState.PAID
    assert fake.requests[0]["biz_content"] != '{"out_trade_no":"ORDER1"}'
    assert fake.biz() == {"out_trade_no": "ORDER1"}
    with pytest.raises(ProviderUnavailable):   # an encrypted answer without our key is not readable
        await provider(fake).query_order("ORDER1")


def test_config_validation_and_secrets() -> None:
    with pytest.raises(ValidationError):
        AlipayConfig(**(MERCHANT | {"alipay_public_key": None}))
    with pytest.raises(ValidationError):
        AlipayConfig(**(MERCHANT | {"key_mode": "certificate"}))
    with pytest.raises(ValidationError):
        AlipayConfig(**(MERCHANT | {"unknown": 1}))
    with pytest.raises(ConfigurationError):
        AlipayProvider(config(app_private_key="bm90IGEga2V5"), httpx.AsyncClient())
    with pytest.raises(ConfigurationError):
        AlipayProvider(config(encrypt_key="c2hvcnQ="), httpx.AsyncClient())
    cfg = config(encrypt_key=SIM["encrypt_key"])
    assert MERCHANT["app_private_key"][40:80] not in repr(cfg) and SIM["encrypt_key"] not in repr(cfg)
    assert AlipayProvider.name == "alipay" and AlipayProvider.channels == frozenset({"alipay_mini"})


# ------------------------------------------------------------------ against the simulator (ASGI)
async def test_provider_against_the_simulator(tmp_path: Any) -> None:
    received: list[bytes] = []

    async def notify(request: Request) -> Response:
        received.append(await request.body())
        return Response(b"success", media_type="text/plain")

    receiver = httpx.AsyncClient(transport=httpx.ASGITransport(app=Starlette(routes=[
        Route("/notify", notify, methods=["POST"])])), base_url="http://testserver")
    clock = Clock()
    deliverer = Deliverer(schedule=RETRY_SCHEDULE, time_scale=0.0, client=receiver, clock=clock)
    sim = AlipaySimulator(CredentialStore(tmp_path), clock=clock, faults=Faults(), deliverer=deliverer)
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=Starlette(routes=[Mount("/alipay", app=sim.app)])),
                               base_url="http://sandbox")
    p = AlipayProvider(AlipayConfig.model_validate(sim.credentials() | {"base_url": "http://sandbox/alipay/gateway.do"}), client)

    created = await p.create_order(order(notify_url="http://testserver/notify", amount=1000))
    assert created.ok and created.value is not None
    assert (await client.post("/alipay/_sandbox/pay", json={"out_trade_no": "ORDER1"})).status_code == 200
    await asyncio.wait_for(deliverer.wait_idle(), 5)
    paid = await p.parse_notification({}, received[-1])
    assert paid.trade is not None and paid.trade.state is TradeState.PAID and paid.trade.amount_total == 1000
    assert paid.trade.provider_trade_id == created.value.provider_order_ref

    partial = await p.refund(RefundRequest("ORDER1", "R1", 400, 1000))
    assert partial.ok and partial.value is not None and partial.value.raw["fund_change"] == "Y"
    await asyncio.wait_for(deliverer.wait_idle(), 5)
    refund_notify = await p.parse_notification({}, received[-1])
    assert refund_notify.trade is not None and refund_notify.trade.state is TradeState.PAID
    assert refund_notify.trade.raw["out_biz_no"] == "R1" and refund_notify.event_id != paid.event_id

    full = await p.refund(RefundRequest("ORDER1", "R2", 600, 1000))
    assert full.ok
    await asyncio.wait_for(deliverer.wait_idle(), 5)
    closed = await p.parse_notification({}, received[-1])
    assert closed.trade is not None and closed.trade.state is TradeState.REFUNDED
    queried = await p.query_order("ORDER1")
    assert queried.value is not None and queried.value.state is TradeState.REFUNDED
    assert queried.value.raw["trade_status"] == "TRADE_CLOSED"
    refund = await p.query_refund("R2", out_trade_no="ORDER1")
    assert refund.value is not None and refund.value.amount == 600
    over = await p.refund(RefundRequest("ORDER1", "R3", 1, 1000))
    assert (over.ok, over.code) == (False, StandardCode.ORDER_CLOSED)
    assert len(received) == 3

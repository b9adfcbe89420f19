"""JDPayProvider against a fake JD (``httpx.MockTransport``) that decrypts and verifies every envelope we
send and signs its answers; error mapping, unknown outcomes, configuration."""

from __future__ import annotations

from datetime import UTC, datetime

import httpx
import pytest
from pydantic import SecretStr

from minigate.domain.results import RefundState, StandardCode, TradeState
from minigate.errors import (
    ConfigurationError,
    OperationNotSupported,
    ProviderMisconfigured,
    ProviderTimeout,
    ProviderUnavailable,
)
from minigate.providers.bases.payment import CreateOrderRequest, RefundRequest
from minigate.providers.jdpay import crypto, schemas
from minigate.providers.jdpay.codes import ErrorMapper
from minigate.providers.jdpay.provider import JDPayProvider
from tests.providers.jdpay import (
    DES,
    DES_B64,
    JD_KEY,
    MERCHANT,
    MERCHANT_KEY,
    NOW,
    OTHER_DES,
    OTHER_KEY,
    Call,
    FakeJD,
    answer_fields,
    config,
    envelope,
    error_envelope,
    jd_signed,
    make_provider,
)


def order(**extra: object) -> CreateOrderRequest:
    values: dict[str, object] = {"out_trade_no": "ORDER20240513001", "amount": 1690, "description": "京东-测试商品",
                                 "notify_url": "https://shop.example/notify/jdpay", "payer_id": "user-42"}
    return CreateOrderRequest(**(values | extra))  # type: ignore[arg-type]


def trade(status: str, **extra: str) -> list[tuple[str, schemas.Value]]:
    fields: list[tuple[str, schemas.Value]] = [("tradeNum", "ORDER20240513001"), ("tradeType", "0"),
                                               ("amount", "1690"), ("currency", "CNY"),
                                               ("tradeTime", "20240513174920"), ("note", ""), ("status", status)]
    if status == "2":
        fields.append(("payList", [("pay", [("payType", "0"), ("amount", "1690"), ("currency", "CNY"),
                                            ("tradeTime", "20240513175001")])]))
    return answer_fields(*fields) + list(extra.items())


def refund_answer(status: str, o_trade_num: str = "ORDER20240513001") -> list[tuple[str, schemas.Value]]:
    return answer_fields(("tradeNum", "R1"), ("tradeType", "1"), ("oTradeNum", o_trade_num), ("amount", "500"),
                         ("currency", "CNY"), ("tradeTime", "20240513180000"), ("note", ""), ("status", status))


# ---------------------------------------------------------------------------------------------- create_order
async def test_create_order_builds_the_signed_encrypted_cashier_form_without_io() -> None:
    def boom(request: httpx.Request) -> httpx.Response:
        raise AssertionError("create_order must not do I/O")

    async with httpx.AsyncClient(transport=httpx.MockTransport(boom)) as client:
        provider = JDPayProvider(config(), client, clock=lambda: float(NOW))
        result = await provider.create_order(order(expires_at=datetime(2024, 5, 13, 10, 19, 20, tzinfo=UTC),
                                                   attach="a=1", client_ip="1.2.3.4"))
    assert result.ok and result.value is not None and result.value.provider_order_ref is None
    params = result.value.client_params
    assert params["cashier_url"] == "https://h5pay.example/jdpay/saveOrder" and params["method"] == "POST"
    fields = params["fields"]
    assert fields["merchant"] == MERCHANT and fields["version"] == "V2.0"
    plain = {k: (v if k in ("merchant", "version", "sign") else crypto.tdes_decrypt_hex(DES, v))
             for k, v in fields.items()}
    assert all(v == v.lower() and int(v, 16) >= 0 for k, v in fields.items() if k not in ("merchant", "version",
                                                                                            "sign"))
    assert plain == {
        "version": "V2.0", "merchant": MERCHANT, "tradeNum": "ORDER20240513001", "tradeName": "京东-测试商品",
        "tradeDesc": "京东-测试商品", "tradeTime": "20240513174920", "amount": "1690", "orderType": "1",
        "currency": "CNY", "note": "a=1", "callbackUrl": "https://shop.example/notify/jdpay",
        "notifyUrl": "https://shop.example/notify/jdpay", "ip": "1.2.3.4", "userId": "user-42",
        "expireTime": "1800", "sign": fields["sign"]}
    unsigned = {k: v for k, v in plain.items() if k != "sign"}
    assert crypto.rsa_verify(MERCHANT_KEY.public_key(), crypto.form_s1(unsigned), fields["sign"])


async def test_create_order_options_callback_url_datetime_expiry_and_no_empty_fields() -> None:
    provider = make_provider(callback_url="https://shop.example/paid", expire_time_format="datetime",
                             order_type="0")
    result = await provider.create_order(order(expires_at=datetime(2024, 5, 13, 10, 19, 20, tzinfo=UTC)))
    assert result.value is not None
    fields = result.value.client_params["fields"]
    assert crypto.tdes_decrypt_hex(DES, fields["callbackUrl"]) == "https://shop.example/paid"
    assert crypto.tdes_decrypt_hex(DES, fields["expireTime"]) == "20240513181920"
    assert crypto.tdes_decrypt_hex(DES, fields["orderType"]) == "0"
    assert "note" not in fields and "ip" not in fields
    plain = provider.form_fields(order())
    assert "expireTime" not in plain


async def test_create_order_refuses_non_cny_and_non_positive_amounts() -> None:
    provider = make_provider()
    for bad in (order(currency="USD"), order(amount=0)):
        result = await provider.create_order(bad)
        assert not result.ok and result.code is StandardCode.INVALID_REQUEST


# ---------------------------------------------------------------------------------------------- query
async def test_query_order_sends_a_signed_envelope_and_verifies_the_answer() -> None:
    fake = FakeJD({"/service/query": lambda call: trade("2")})
    result = await make_provider(fake).query_order("ORDER20240513001")
    (call,) = fake.calls
    assert call.signature_ok and call.path == "/service/query"
    assert call.headers["Content-Type"].startswith("application/xml")
    assert call.inner.startswith('<?xml version="1.0" encoding="UTF-8"?><jdpay><version>V2.0</version>'
                                 f"<merchant>{MERCHANT}</merchant><tradeNum>ORDER20240513001</tradeNum>"
                                 "<tradeType>0</tradeType><sign>")
    outer = schemas.parse_envelope(call.body.decode())
    assert outer.version == "V2.0" and outer.code is None
    assert result.ok and result.value is not None
    status = result.value
    assert status.state is TradeState.PAID and status.amount_total == 1690 and status.currency == "CNY"
    assert status.paid_at == datetime(2024, 5, 13, 17, 50, 1, tzinfo=schemas.CST)
    assert status.merchant_id == MERCHANT


@pytest.mark.parametrize(("status", "state"), [("0", TradeState.PENDING), ("1", TradeState.PENDING),
                                               ("3", TradeState.FAILED), ("4", TradeState.CLOSED)])
async def test_query_order_status_mapping(status: str, state: TradeState) -> None:
    fake = FakeJD({"/service/query": lambda call: trade(status)})
    result = await make_provider(fake).query_order("ORDER20240513001")
    assert result.value is not None and result.value.state is state and result.value.paid_at is None


async def test_query_order_not_found_is_a_decline() -> None:
    fake = FakeJD({"/service/query": lambda call: error_envelope("TS0001", "交易不存在")})
    result = await make_provider(fake).query_order("NOPE")
    assert not result.ok and result.code is StandardCode.NOT_FOUND and result.provider_code == "TS0001"


# ---------------------------------------------------------------------------------------------- close
@pytest.mark.parametrize(("answer", "ok", "code"), [
    (error_envelope("TS0001", "交易不存在"), True, StandardCode.OK),
    (trade("0"), True, StandardCode.OK),
    (trade("4"), True, StandardCode.OK),
    (trade("3"), True, StandardCode.OK),
    (trade("2"), False, StandardCode.ALREADY_PAID),
    (trade("1"), False, StandardCode.DECLINED),
    (error_envelope("XX9999", "风控拒绝"), False, StandardCode.DECLINED),
])
async def test_close_order_makes_sure_it_cannot_be_paid(answer: object, ok: bool, code: StandardCode) -> None:
    fake = FakeJD({"/service/query": lambda call: answer})
    result = await make_provider(fake).close_order("ORDER20240513001")
    assert result.ok is ok and result.code is code
    assert fake.calls[0].fields["tradeType"] == "0"


# ---------------------------------------------------------------------------------------------- refunds
async def test_refund_request_fields_and_status_mapping() -> None:
    fake = FakeJD({"/service/refund": lambda call: refund_answer("0")})
    req = RefundRequest(out_trade_no="ORDER20240513001", out_refund_no="R1", amount=500, total=1690,
                        notify_url="https://shop.example/notify/refund", reason="退货")
    result = await make_provider(fake).refund(req)
    (call,) = fake.calls
    assert call.signature_ok and call.path == "/service/refund"
    assert call.fields == {"version": "V2.0", "merchant": MERCHANT, "tradeNum": "R1",
                           "oTradeNum": "ORDER20240513001", "amount": "500", "currency": "CNY",
                           "tradeTime": "20240513174920", "notifyUrl": "https://shop.example/notify/refund",
                           "note": "退货", "sign": call.fields["sign"]}
    assert result.value is not None and result.value.state is RefundState.PROCESSING
    assert result.value.out_refund_no == "R1" and result.value.amount == 500
    assert result.value.out_trade_no == "ORDER20240513001" and result.value.succeeded_at is None


@pytest.mark.parametrize(("status", "state"), [("1", RefundState.SUCCEEDED), ("2", RefundState.FAILED)])
async def test_query_refund_uses_query_with_trade_type_1(status: str, state: RefundState) -> None:
    fake = FakeJD({"/service/query": lambda call: refund_answer(status)})
    result = await make_provider(fake).query_refund("R1", out_trade_no="ORDER20240513001")
    assert fake.calls[0].fields["tradeType"] == "1" and fake.calls[0].fields["oTradeNum"] == "ORDER20240513001"
    assert result.value is not None and result.value.state is state
    assert (result.value.succeeded_at is not None) is (state is RefundState.SUCCEEDED)


async def test_query_refund_of_another_trade_is_not_found() -> None:
    fake = FakeJD({"/service/query": lambda call: refund_answer("1", o_trade_num="OTHER")})
    result = await make_provider(fake).query_refund("R1", out_trade_no="ORDER20240513001")
    assert not result.ok and result.code is StandardCode.NOT_FOUND


@pytest.mark.parametrize(("code", "desc", "expected"), [
    ("TS0002", "退款金额超过可退金额", StandardCode.REFUND_NOT_ALLOWED),
    ("TS0003", "交易未支付，不能退款", StandardCode.REFUND_NOT_ALLOWED),
    ("TS0004", "退款单号重复，参数与原请求不一致", StandardCode.PARAMS_MISMATCH),
    ("PA0001", "参数错误", StandardCode.INVALID_REQUEST),
    ("RL0001", "请求过于频繁", StandardCode.RATE_LIMITED),
    ("ZZ0001", "可退金额不足", StandardCode.REFUND_NOT_ALLOWED),    # unknown code, desc marker
    ("ZZ0002", "商户余额不足", StandardCode.INSUFFICIENT_BALANCE),
    ("ZZ0003", "风控拒绝", StandardCode.DECLINED),                  # unknown everything -> DECLINED
])
async def test_refund_declines(code: str, desc: str, expected: StandardCode) -> None:
    fake = FakeJD({"/service/refund": lambda call: error_envelope(code, desc)})
    req = RefundRequest(out_trade_no="O", out_refund_no="R1", amount=1, total=1)
    result = await make_provider(fake).refund(req)
    assert not result.ok and result.code is expected and result.provider_code == code and result.message == desc


async def test_error_mapper_is_overridable() -> None:
    fake = FakeJD({"/service/refund": lambda call: error_envelope("ZZ0003", "风控拒绝")})
    mapper = ErrorMapper(codes={"ZZ0003": StandardCode.REFUND_NOT_ALLOWED})
    provider = JDPayProvider(config(), fake.client(), error_mapper=mapper)
    result = await provider.refund(RefundRequest(out_trade_no="O", out_refund_no="R1", amount=1, total=1))
    assert result.code is StandardCode.REFUND_NOT_ALLOWED


async def test_download_bill_is_not_supported() -> None:
    with pytest.raises(OperationNotSupported):
        await make_provider().download_bill(datetime(2024, 5, 13).date())


# ---------------------------------------------------------------------------------------------- unknown outcomes
def _resp(status: int, body: bytes = b"") -> httpx.Response:
    return httpx.Response(status, content=body)


@pytest.mark.parametrize("answer", [
    _resp(500, b"oops"), _resp(502), _resp(429), _resp(404, b"<html>not found</html>"), _resp(302),
    _resp(200, b"<html>proxy</html>"), _resp(200, b"\xff\xfe"), _resp(200, b""),
    error_envelope("SY0001", "系统异常，请稍后再试"),
    error_envelope("ZZ0009", "系统繁忙"),                    # unknown code but "system busy"
    envelope("", desc="x").replace(b"<encrypt></encrypt>", b""),   # success without <encrypt>
    b'<?xml version="1.0"?><!DOCTYPE jdpay [<!ENTITY a "x">]><jdpay>&a;</jdpay>',
], ids=["500", "502", "429", "404-html", "302", "200-html", "200-binary", "200-empty", "SY0001", "busy",
        "no-encrypt", "doctype"])
async def test_unknown_outcomes_raise_provider_unavailable(answer: httpx.Response | bytes) -> None:
    fake = FakeJD({"/service/refund": lambda call: answer})
    with pytest.raises(ProviderUnavailable):
        await make_provider(fake).refund(RefundRequest(out_trade_no="O", out_refund_no="R1", amount=1, total=1))


def _bad_answers() -> dict[str, bytes]:
    good = answer_fields(("tradeNum", "R1"), ("oTradeNum", "O"), ("amount", "1"), ("status", "1"))
    signed = jd_signed(good)
    return {
        "signed-by-another-key": envelope(jd_signed(good, key=OTHER_KEY)),
        "tampered-after-signing": envelope(signed.replace("<amount>1<", "<amount>100<")),
        "no-sign": envelope(schemas.build_xml(good)),
        "other-des-key": envelope(signed, des=OTHER_DES),
        "other-merchant": envelope(jd_signed(answer_fields(("status", "1"), merchant="999"))),
        "bad-status": envelope(jd_signed(answer_fields(("tradeNum", "R1"), ("status", "7")))),
        "bad-amount": envelope(jd_signed(answer_fields(("tradeNum", "R1"), ("amount", "1.5"), ("status", "1")))),
        "not-hex": schemas.build_envelope(MERCHANT, "bm90IGhleA==", result=("000000", "ok")).encode(),
    }


@pytest.mark.parametrize("name", list(_bad_answers()))
async def test_unverifiable_or_malformed_success_answers_raise(name: str) -> None:
    body = _bad_answers()[name]
    fake = FakeJD({"/service/refund": lambda call: body})
    with pytest.raises(ProviderUnavailable) as info:
        await make_provider(fake).refund(RefundRequest(out_trade_no="O", out_refund_no="R1", amount=1, total=1))
    assert DES_B64 not in str(info.value)


async def test_a_genuine_answer_about_another_trade_is_refused() -> None:
    fake = FakeJD({"/service/query": lambda call: trade("2")})   # always answers about ORDER20240513001
    with pytest.raises(ProviderUnavailable):
        await make_provider(fake).query_order("SOMETHING-ELSE")


async def test_inner_result_code_is_mapped_too() -> None:
    inner = [("version", "V2.0"), ("merchant", MERCHANT), ("result", [("code", "TS0001"), ("desc", "交易不存在")])]
    fake = FakeJD({"/service/query": lambda call: inner})
    result = await make_provider(fake).query_order("X")
    assert result.code is StandardCode.NOT_FOUND


@pytest.mark.parametrize(("code", "desc"), [("SE0001", "验签失败"), ("SE0002", "解密失败"), ("ME0001", "商户不存在"),
                                            ("ZZ0010", "签名错误")])
async def test_credential_refusals_raise_misconfigured(code: str, desc: str) -> None:
    fake = FakeJD({"/service/query": lambda call: error_envelope(code, desc)})
    with pytest.raises(ProviderMisconfigured) as info:
        await make_provider(fake).query_order("X")
    assert info.value.provider_code == code


async def test_timeouts_and_connection_errors() -> None:
    def timeout(call: Call) -> httpx.Response:
        raise httpx.ReadTimeout("slow")

    def refused(call: Call) -> httpx.Response:
        raise httpx.ConnectError("refused")

    with pytest.raises(ProviderTimeout):
        await make_provider(FakeJD({"/service/query": timeout})).query_order("X")
    with pytest.raises(ProviderUnavailable):
        await make_provider(FakeJD({"/service/query": refused})).query_order("X")


# ---------------------------------------------------------------------------------------------- configuration
@pytest.mark.parametrize("override", [
    {"merchant_private_key": SecretStr("garbage")},
    {"jd_public_key": "garbage"},
    {"des_key": SecretStr("c2hvcnQ=")},
    {"jd_public_key": __import__("tests.providers.jdpay", fromlist=["pem_private"]).pem_private(JD_KEY)},
])
def test_unusable_credentials_fail_at_construction(override: dict[str, object]) -> None:
    with pytest.raises(ConfigurationError) as info:
        JDPayProvider(config(**override), httpx.AsyncClient())
    assert DES_B64 not in str(info.value)


def test_config_rejects_non_numeric_merchant_and_masks_secrets() -> None:
    with pytest.raises(ValueError):
        config(merchant="abc")
    assert DES_B64 not in repr(config()) and "PRIVATE KEY" not in repr(config())

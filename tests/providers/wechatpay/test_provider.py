"""WeChatPayProvider against the fake WeChat server of ``fake_wechat.py``, which verifies our signatures and
signs its answers. Error mapping and the verification of 2xx answers are in ``test_provider_errors.py``.
"""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime

import httpx
import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding

from minigate.domain.results import RefundState, StandardCode, TradeState
from minigate.errors import ConfigurationError, ProviderUnavailable
from minigate.providers.bases.payment import RefundRequest
from minigate.providers.wechatpay import signing
from minigate.providers.wechatpay.provider import WeChatPayProvider, build_pay_params
from tests.keys import read
from tests.providers.wechatpay.fake_wechat import (
    APPID,
    C_WXGO_PEM,
    K_WXDOC,
    MCHID,
    MERCHANT_KEY,
    NOW,
    PUB_KEY_ID,
    PUB_PRIV,
    TRANSACTION,
    FakeWeChat,
    config,
    make_provider,
    order,
)


# ---------------------------------------------------------------------------------------------- create_order
async def test_create_order_signs_provider_path_and_exact_body() -> None:
    fake = FakeWeChat()
    fake.route(
        "POST", "/v3/pay/transactions/jsapi", 200, {"prepay_id": "wx201410272009395522657a690389285100"}
    )
    provider = make_provider(fake)
    result = await provider.create_order(
        order(attach="a=1", expires_at=datetime(2024, 5, 13, 10, 0, tzinfo=UTC))
    )

    assert result.ok and result.value is not None
    (call,) = fake.calls
    assert call.signature_ok  # signed over exactly the bytes sent
    assert call.canonical == "/v3/pay/transactions/jsapi"  # not /wechatpay/v3/...
    assert call.auth is not None and call.auth.mchid == MCHID and call.auth.timestamp == str(NOW)
    assert call.auth.serial_no == "5157F09EFDC096DE15EBE81A47057A7232F1B8E1"
    assert call.headers["Wechatpay-Serial"] == PUB_KEY_ID
    assert call.headers["Content-Type"] == "application/json"
    assert call.headers["Accept"] == "application/json"
    assert call.headers["User-Agent"].startswith("minigate/")
    assert b" " not in call.body.replace("形象店-深圳腾大-QQ公仔".encode(), b"")  # compact JSON
    assert "形象店".encode() in call.body  # ensure_ascii=False
    assert json.loads(call.body) == {
        "appid": APPID,
        "mchid": MCHID,
        "description": "Image形象店-深圳腾大-QQ公仔",
        "out_trade_no": "ORDER20240513001",
        "time_expire": "2024-05-13T18:00:00+08:00",
        "attach": "a=1",
        "notify_url": "https://shop.example/notify",
        "amount": {"total": 100, "currency": "CNY"},
        "payer": {"openid": "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o"},
    }

    params = result.value.client_params
    assert result.value.provider_order_ref == "wx201410272009395522657a690389285100"
    assert set(params) == {"timeStamp", "nonceStr", "package", "signType", "paySign"}
    assert params["package"] == "prepay_id=wx201410272009395522657a690389285100"
    assert params["signType"] == "RSA" and params["timeStamp"] == str(NOW)
    message = signing.pay_sign_message(APPID, params["timeStamp"], params["nonceStr"], params["package"])
    assert signing.rsa_verify(MERCHANT_KEY.public_key(), message, params["paySign"])


async def test_create_order_without_optional_fields_omits_them() -> None:
    fake = FakeWeChat()
    fake.route("POST", "/v3/pay/transactions/jsapi", 200, {"prepay_id": "wx1"})
    await make_provider(fake).create_order(order())
    assert {"time_expire", "attach"}.isdisjoint(json.loads(fake.calls[0].body))


def test_build_pay_params_reproduces_wx5() -> None:
    params = build_pay_params(
        K_WXDOC,
        "wx2421b1c4370ec43b",
        "wx201410272009395522657a690389285100",
        "1554208460",
        "593BEC0C930BF1AFEB40B4A08C8FB242",
    )
    assert params == {
        "timeStamp": "1554208460",
        "nonceStr": "593BEC0C930BF1AFEB40B4A08C8FB242",
        "package": "prepay_id=wx201410272009395522657a690389285100",
        "signType": "RSA",
        "paySign": "mI35pfNEQV6777ke/1T+LJLQDNTm7yeoUJH+j/adPGhmCCi0PbgkvYQTRcXH0uibcLVtvFLdGLpmoYO9FV6l"
        "BBsTAjuhh5YOvQi0e2g3e0yytitiNET9FEuqM0pjnKfRW4K6LIZDdbWJv9KhZUx3DrJa5TL7OJ7VdADVivxVySIlPVKjGwuCXzuXS"
        "Jes0UcILgWQUMyha5/3nYofuHtS7r+KYyMuxD+oJ9VM1Qdxk4UIG59CP5Y3wtYIFybyF3bdu1caHTRRX+DLyMXyYA/Ir"
        "TmiW01c4RPjpHBX5Dk1sZyY1zVsWNsvMHr2e1NTWtBxKJ+qk5N61J7caYoepHFaxw==",
    }
    cfg = config(merchant_private_key=read("wxdoc_private_key.pem"))
    assert (
        build_pay_params(
            cfg,
            "wx2421b1c4370ec43b",
            "wx201410272009395522657a690389285100",
            "1554208460",
            "593BEC0C930BF1AFEB40B4A08C8FB242",
        )
        == params
    )


async def test_base_url_without_prefix_signs_the_same_path() -> None:
    fake = FakeWeChat(prefix="")
    fake.route("POST", "/v3/pay/transactions/jsapi", 200, {"prepay_id": "wx1"})
    provider = make_provider(fake, config(base_url="http://sandbox/"))
    assert (await provider.create_order(order())).ok
    assert fake.calls[0].canonical == "/v3/pay/transactions/jsapi" and fake.calls[0].signature_ok


async def test_certificate_mode_requests_carry_no_wechatpay_serial() -> None:
    fake = FakeWeChat()
    fake.route("POST", "/v3/pay/transactions/jsapi", 200, {"prepay_id": "wx1"})
    cfg = config(verify_mode="certificate", platform_certificates=(C_WXGO_PEM,))
    assert (await make_provider(fake, cfg).create_order(order())).ok
    assert "Wechatpay-Serial" not in fake.calls[0].headers


# ---------------------------------------------------------------------------------------------- query_order
@pytest.mark.parametrize(
    ("wire", "state"),
    [
        ("SUCCESS", TradeState.PAID),
        ("REFUND", TradeState.REFUNDED),
        ("NOTPAY", TradeState.PENDING),
        ("USERPAYING", TradeState.PENDING),
        ("CLOSED", TradeState.CLOSED),
        ("REVOKED", TradeState.CLOSED),
        ("PAYERROR", TradeState.FAILED),
    ],
)
async def test_query_order_maps_trade_state(wire: str, state: TradeState) -> None:
    fake = FakeWeChat()
    fake.route(
        "GET", "/v3/pay/transactions/out-trade-no/ORDER20240513001", 200, {**TRANSACTION, "trade_state": wire}
    )
    result = await make_provider(fake).query_order("ORDER20240513001")
    assert result.ok and result.value is not None and result.value.state is state


async def test_query_order_fields_and_quoted_path() -> None:
    fake = FakeWeChat()
    fake.route(
        "GET", "/v3/pay/transactions/out-trade-no/A%7CB%2A1", 200, {**TRANSACTION, "out_trade_no": "A|B*1"}
    )
    result = await make_provider(fake).query_order("A|B*1")
    assert fake.calls[0].canonical == f"/v3/pay/transactions/out-trade-no/A%7CB%2A1?mchid={MCHID}"
    assert fake.calls[0].signature_ok and fake.calls[0].body == b""
    trade = result.value
    assert trade is not None and trade.out_trade_no == "A|B*1"
    assert trade.amount_total == 100  # amount.total, not payer_total (90)
    assert trade.provider_trade_id == "4200000000202405130000000001"
    assert trade.merchant_id == MCHID and trade.app_id == APPID
    assert trade.payer_id == "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o"
    assert trade.paid_at == datetime(2024, 5, 13, 9, 50, 1, tzinfo=UTC)
    assert trade.raw["trade_state_desc"] == "支付成功"


async def test_unpaid_order_has_no_payment_fields() -> None:
    fake = FakeWeChat()
    fake.route(
        "GET",
        "/v3/pay/transactions/out-trade-no/N1",
        200,
        {
            "appid": APPID,
            "mchid": MCHID,
            "out_trade_no": "N1",
            "trade_state": "NOTPAY",
            "amount": {"total": 5, "currency": "CNY"},
        },
    )
    trade = (await make_provider(fake).query_order("N1")).value
    assert trade is not None and trade.paid_at is None and trade.provider_trade_id is None
    assert trade.amount_total == 5


async def test_unknown_trade_state_is_unknown_outcome() -> None:
    fake = FakeWeChat()
    fake.route("GET", "/v3/pay/transactions/out-trade-no/N1", 200, {**TRANSACTION, "trade_state": "WEIRD"})
    with pytest.raises(ProviderUnavailable):
        await make_provider(fake).query_order("N1")


# ---------------------------------------------------------------------------------------------- close
async def test_close_order_204_is_ok_and_signed_over_empty_body() -> None:
    fake = FakeWeChat()
    fake.route("POST", "/v3/pay/transactions/out-trade-no/C1/close", 204, None)
    result = await make_provider(fake).close_order("C1")
    assert result.ok and result.value is None
    assert fake.calls[0].body == b'{"mchid":"1900000001"}' and fake.calls[0].signature_ok


async def test_close_order_204_with_forged_signature_is_unknown() -> None:
    fake = FakeWeChat(tamper=lambda h, b: ({**h, "Wechatpay-Nonce": "other"}, b))
    fake.route("POST", "/v3/pay/transactions/out-trade-no/C1/close", 204, None)
    with pytest.raises(ProviderUnavailable):
        await make_provider(fake).close_order("C1")


@pytest.mark.parametrize(
    ("status", "code", "expected"),
    [
        (400, "ORDERPAID", StandardCode.ALREADY_PAID),
        (403, "ORDERPAID", StandardCode.ALREADY_PAID),
        (400, "ORDER_CLOSED", StandardCode.ORDER_CLOSED),
        (404, "ORDER_NOT_EXIST", StandardCode.NOT_FOUND),
    ],
)
async def test_close_order_declines(status: int, code: str, expected: StandardCode) -> None:
    fake = FakeWeChat()
    fake.route("POST", "/v3/pay/transactions/out-trade-no/C1/close", status, {"code": code, "message": "x"})
    result = await make_provider(fake).close_order("C1")
    assert not result.ok and result.code is expected and result.provider_code == code
    assert result.request_id == "08F78BB5AF0610D302102C0300E8B5E0"


# ---------------------------------------------------------------------------------------------- refunds
REFUND = {
    "refund_id": "50000000382019052709732678859",
    "out_refund_no": "R1",
    "transaction_id": "42000",
    "out_trade_no": "T1",
    "channel": "ORIGINAL",
    "user_received_account": "招商银行信用卡0403",
    "create_time": "2024-05-13T18:00:00+08:00",
    "status": "PROCESSING",
    "funds_account": "AVAILABLE",
    "amount": {"total": 100, "refund": 50, "payer_total": 100, "payer_refund": 50, "currency": "CNY"},
}


async def test_refund_body_and_result() -> None:
    fake = FakeWeChat()
    fake.route("POST", "/v3/refund/domestic/refunds", 200, REFUND)
    req = RefundRequest(
        "T1", "R1", amount=50, total=100, notify_url="https://shop.example/refund", reason="坏了"
    )
    result = await make_provider(fake).refund(req)
    assert json.loads(fake.calls[0].body) == {
        "out_trade_no": "T1",
        "out_refund_no": "R1",
        "reason": "坏了",
        "notify_url": "https://shop.example/refund",
        "amount": {"refund": 50, "total": 100, "currency": "CNY"},
    }
    refund = result.value
    assert refund is not None and refund.state is RefundState.PROCESSING and refund.amount == 50
    assert refund.provider_refund_id == "50000000382019052709732678859" and refund.out_trade_no == "T1"


@pytest.mark.parametrize(
    ("wire", "state"),
    [
        ("SUCCESS", RefundState.SUCCEEDED),
        ("CLOSED", RefundState.FAILED),
        ("ABNORMAL", RefundState.FAILED),
        ("PROCESSING", RefundState.PROCESSING),
    ],
)
async def test_query_refund_maps_status(wire: str, state: RefundState) -> None:
    fake = FakeWeChat()
    answer = {**REFUND, "status": wire, "success_time": "2024-05-13T18:01:00+08:00"}
    fake.route("GET", "/v3/refund/domestic/refunds/R1", 200, answer)
    result = await make_provider(fake).query_refund("R1", out_trade_no="T1")
    assert fake.calls[0].canonical == "/v3/refund/domestic/refunds/R1"
    assert result.value is not None and result.value.state is state
    assert result.value.succeeded_at == datetime(2024, 5, 13, 10, 1, tzinfo=UTC)


async def test_query_refund_of_another_trade_is_not_found() -> None:
    fake = FakeWeChat()
    fake.route("GET", "/v3/refund/domestic/refunds/R1", 200, REFUND)
    result = await make_provider(fake).query_refund("R1", out_trade_no="OTHER")
    assert not result.ok and result.code is StandardCode.NOT_FOUND


# ---------------------------------------------------------------------------------------------- misc
async def test_encrypt_sensitive_uses_the_public_key() -> None:
    provider = make_provider(FakeWeChat())
    ciphertext, serial = await provider.encrypt_sensitive("张三")
    assert serial == PUB_KEY_ID
    oaep = padding.OAEP(mgf=padding.MGF1(hashes.SHA1()), algorithm=hashes.SHA1(), label=None)
    assert PUB_PRIV.decrypt(base64.b64decode(ciphertext), oaep).decode() == "张三"
    request = provider.build_request("POST", "/v3/x", body=b"{}", wechatpay_serial=serial)
    assert request.headers["Wechatpay-Serial"] == PUB_KEY_ID


def test_configuration_errors() -> None:
    client = httpx.AsyncClient()
    with pytest.raises(ConfigurationError):
        WeChatPayProvider(config(platform_public_key=None), client)
    with pytest.raises(ConfigurationError):
        WeChatPayProvider(config(merchant_private_key="not a key"), client)


def test_ack_and_nack() -> None:
    provider = make_provider(FakeWeChat())
    assert provider.ack().status_code == 204 and provider.ack().body == b""
    reply = provider.nack("invalid_signature", "签名错误")
    assert reply.status_code == 400 and json.loads(reply.body) == {"code": "FAIL", "message": "签名错误"}
    assert provider.nack("unknown_serial", "x").status_code == 500
    assert provider.nack("internal", "x").status_code == 500


def test_time_expire_refuses_naive_datetimes() -> None:
    provider = make_provider(FakeWeChat())
    with pytest.raises(ValueError):
        provider.build_create_order(order(expires_at=datetime(2024, 5, 13, 10, 0)))

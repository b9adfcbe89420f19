"""WeChatPayProvider error mapping and verification of 2xx answers, against ``fake_wechat.FakeWeChat``
(split from ``test_provider.py``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest

from minigate.domain.results import StandardCode
from minigate.errors import (
    OutcomeUnknown,
    ProviderMisconfigured,
    ProviderTimeout,
    ProviderUnavailable,
)
from minigate.providers.bases.payment import RefundRequest
from minigate.providers.wechatpay import signing
from minigate.providers.wechatpay.codes import ErrorMapper
from minigate.providers.wechatpay.provider import WeChatPayProvider
from tests.providers.wechatpay.fake_wechat import (
    NOW,
    OTHER_KEY,
    FakeWeChat,
    config,
    make_provider,
    order,
)


# ---------------------------------------------------------------------------------------------- error mapping
@pytest.mark.parametrize(
    ("op", "status", "code", "message", "expected"),
    [
        ("create", 404, "ORDER_NOT_EXIST", "订单不存在", StandardCode.NOT_FOUND),
        ("query_refund", 404, "RESOURCE_NOT_EXISTS", "退款单不存在", StandardCode.NOT_FOUND),
        ("refund", 403, "NOT_ENOUGH", "基本账户余额不足", StandardCode.INSUFFICIENT_BALANCE),
        (
            "create",
            400,
            "INVALID_REQUEST",
            "请求重入时，参数与首次请求时不一致",
            StandardCode.PARAMS_MISMATCH,
        ),
        ("refund", 400, "INVALID_REQUEST", "退款金额超过订单可退金额", StandardCode.REFUND_NOT_ALLOWED),
        ("create", 400, "INVALID_REQUEST", "商户号该产品权限未开通", StandardCode.INVALID_REQUEST),
        (
            "create",
            400,
            "PARAM_ERROR",
            "输入源“/body/amount”映射到值字段“total”失败",
            StandardCode.INVALID_REQUEST,
        ),
        ("create", 403, "OUT_TRADE_NO_USED", "商户订单号重复", StandardCode.PARAMS_MISMATCH),
        ("create", 403, "FREQUENCY_LIMITED", "频率超限", StandardCode.RATE_LIMITED),
        ("create", 403, "ORDERPAID", "该订单已支付", StandardCode.ALREADY_PAID),
        ("create", 403, "TRADE_ERROR", "交易错误", StandardCode.DECLINED),
        ("refund", 403, "USER_ACCOUNT_ABNORMAL", "退款请求失败", StandardCode.REFUND_NOT_ALLOWED),
    ],
)
async def test_error_codes_map_to_standard_codes(
    op: str, status: int, code: str, message: str, expected: StandardCode
) -> None:
    fake = FakeWeChat()
    path = {
        "create": "/v3/pay/transactions/jsapi",
        "refund": "/v3/refund/domestic/refunds",
        "query_refund": "/v3/refund/domestic/refunds/R1",
    }[op]
    fake.route("GET" if op == "query_refund" else "POST", path, status, {"code": code, "message": message})
    provider = make_provider(fake)
    if op == "create":
        result: Any = await provider.create_order(order())
    elif op == "refund":
        result = await provider.refund(RefundRequest("T1", "R1", amount=50, total=100))
    else:
        result = await provider.query_refund("R1", out_trade_no="T1")
    assert not result.ok and result.code is expected and result.provider_code == code
    assert result.message == message


@pytest.mark.parametrize(
    ("status", "answer"),
    [
        (500, {"code": "SYSTEM_ERROR", "message": "系统错误"}),
        (502, b"<html>bad gateway</html>"),
        (503, {"code": "SERVICE_UNAVAILABLE", "message": "x"}),
        (429, {"code": "FREQUENCY_LIMITED", "message": "频率超限"}),
        (400, {"code": "BANK_ERROR", "message": "银行系统异常"}),
        (404, b"<html>not found</html>"),  # e.g. a wrong base_url prefix: not "order not found"
        (302, b""),
    ],
)
async def test_unknown_outcomes_raise_provider_unavailable(status: int, answer: Any) -> None:
    fake = FakeWeChat()
    fake.route("POST", "/v3/pay/transactions/jsapi", status, answer)
    with pytest.raises(ProviderUnavailable) as info:
        await make_provider(fake).create_order(order())
    assert info.value.http_status == status and info.value.provider == "wechatpay"
    assert info.value.request_id == "08F78BB5AF0610D302102C0300E8B5E0"
    if isinstance(answer, dict):
        assert info.value.provider_code == answer["code"]


@pytest.mark.parametrize(
    ("exc", "kind"),
    [(httpx.ReadTimeout("slow"), ProviderTimeout), (httpx.ConnectError("refused"), ProviderUnavailable)],
)
async def test_transport_errors_are_outcome_unknown(exc: Exception, kind: type[Exception]) -> None:
    def boom(request: httpx.Request) -> httpx.Response:
        raise exc

    provider = WeChatPayProvider(
        config(), httpx.AsyncClient(transport=httpx.MockTransport(boom)), clock=lambda: float(NOW)
    )
    with pytest.raises(kind) as info:
        await provider.refund(RefundRequest("T1", "R1", amount=1, total=1))
    assert isinstance(info.value, OutcomeUnknown)


async def test_sign_error_is_misconfiguration() -> None:
    fake = FakeWeChat(merchant_public=OTHER_KEY.public_key())  # WeChat holds another merchant key
    with pytest.raises(ProviderMisconfigured) as info:
        await make_provider(fake).query_order("X1")
    assert info.value.provider_code == "SIGN_ERROR" and info.value.http_status == 401


@pytest.mark.parametrize(
    ("code", "numeric", "expected"),
    [
        ("INVALID_REQUEST", "268498688", StandardCode.PARAMS_MISMATCH),
        ("INVALID_REQUEST", "268449538", StandardCode.ALREADY_PAID),
        ("SOMETHING_NEW", "268498689", StandardCode.ALREADY_PAID),
        ("INVALID_REQUEST", "268000000", StandardCode.INVALID_REQUEST),
    ],
)
async def test_numeric_code_in_request_id_disambiguates(
    code: str, numeric: str, expected: StandardCode
) -> None:
    fake = FakeWeChat(request_id=f"08F78BB5AF0610D302102C-{numeric}")
    fake.route("POST", "/v3/pay/transactions/jsapi", 400, {"code": code, "message": "请求不合法"})
    assert (await make_provider(fake).create_order(order())).code is expected


async def test_error_mapper_is_replaceable() -> None:
    fake = FakeWeChat()
    fake.route("POST", "/v3/pay/transactions/jsapi", 400, {"code": "TRADE_PAID_V3", "message": "x"})
    mapper = ErrorMapper(codes={"TRADE_PAID_V3": StandardCode.ALREADY_PAID})
    result = await make_provider(fake, error_mapper=mapper).create_order(order())
    assert result.code is StandardCode.ALREADY_PAID


# ------------------------------------------------------------------------------ verification of 2xx
def _flip_body(headers: dict[str, str], body: bytes) -> tuple[dict[str, str], bytes]:
    return headers, body.replace(b'"wx1"', b'"wx2"')


@pytest.mark.parametrize(
    "tamper",
    [
        _flip_body,
        lambda h, b: ({**h, "Wechatpay-Serial": "PUB_KEY_ID_0000000000000000000000000000000000"}, b),
        lambda h, b: ({**h, "Wechatpay-Timestamp": str(NOW - 301)}, b),
        lambda h, b: ({k: v for k, v in h.items() if k != "Wechatpay-Signature"}, b),
        lambda h, b: ({**h, "Wechatpay-Signature": signing.SIGNTEST_PREFIX + "abc"}, b),
        lambda h, b: (
            {
                **h,
                "Wechatpay-Signature": signing.rsa_sign(
                    OTHER_KEY, signing.response_message(h["Wechatpay-Timestamp"], h["Wechatpay-Nonce"], b)
                ),
            },
            b,
        ),
    ],
    ids=["body", "serial", "stale", "missing", "probe", "wrong-key"],
)
async def test_2xx_that_fails_verification_is_unknown_outcome(
    tamper: Callable[[dict[str, str], bytes], tuple[dict[str, str], bytes]],
) -> None:
    fake = FakeWeChat(tamper=tamper)
    fake.route("POST", "/v3/pay/transactions/jsapi", 200, {"prepay_id": "wx1"})
    with pytest.raises(ProviderUnavailable) as info:
        await make_provider(fake).create_order(order())
    assert info.value.http_status == 200



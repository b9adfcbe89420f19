"""WeChatPayProvider against a fake WeChat server that verifies our signatures and signs its answers.

The fake (``FakeWeChat``) is reused by ``test_keys.py`` and ``test_bill.py``.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID

from minigate.domain.results import RefundState, StandardCode, TradeState
from minigate.errors import (
    ConfigurationError,
    OutcomeUnknown,
    ProviderMisconfigured,
    ProviderTimeout,
    ProviderUnavailable,
)
from minigate.providers.bases.payment import CreateOrderRequest, RefundRequest
from minigate.providers.wechatpay import signing
from minigate.providers.wechatpay.codes import ErrorMapper
from minigate.providers.wechatpay.config import WeChatPayConfig
from minigate.providers.wechatpay.provider import WeChatPayProvider, build_pay_params
from tests.keys import read

NOW = 1715593802
MCHID = "1900000001"
APPID = "wxd678efh567hg6787"
APIV3 = "SimulatorAPIv3Key0123456789abcde"
K_WXGO = signing.load_private_key(read("wxgo_private_key.pem"))
C_WXGO_PEM = read("wxgo_cert.pem")
C_WXGO = signing.load_certificate(C_WXGO_PEM)
WXGO_SERIAL = "D7CE59D1F522D701"
K_WXDOC = signing.load_private_key(read("wxdoc_private_key.pem"))
PUB_KEY_ID = "PUB_KEY_ID_0112860886012025062700111588000000"
PUB_PRIV = rsa.generate_private_key(public_exponent=65537, key_size=2048)
MERCHANT_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
OTHER_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)


def pem_private(key: rsa.RSAPrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


def pem_public(key: rsa.RSAPrivateKey) -> str:
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


def make_cert(
    key: rsa.RSAPrivateKey, serial: int, *, not_after: datetime, not_before: datetime | None = None
) -> x509.Certificate:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Tenpay.com Root CA (test)")])
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(serial)
        .not_valid_before(not_before or datetime(2020, 1, 1, tzinfo=UTC))
        .not_valid_after(not_after)
        .sign(key, hashes.SHA256())
    )


def cert_pem(cert: x509.Certificate) -> str:
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def config(**overrides: Any) -> WeChatPayConfig:
    values: dict[str, Any] = dict(
        mchid=MCHID,
        appid=APPID,
        merchant_serial_no="5157F09EFDC096DE15EBE81A47057A7232F1B8E1",
        merchant_private_key=pem_private(MERCHANT_KEY),
        apiv3_key=APIV3,
        platform_public_key=pem_public(PUB_PRIV),
        platform_public_key_id=PUB_KEY_ID,
        verify_mode="public_key",
        base_url="http://sandbox/wechatpay",
    )
    values.update(overrides)
    return WeChatPayConfig(**values)


def wire_response(status: int, content: bytes = b"", headers: dict[str, str] | None = None) -> httpx.Response:
    """A response as a real transport delivers it: an unread stream (``content=`` would pre-read it, and
    ``providers._http.send`` then fails with ``StreamConsumed``)."""
    return httpx.Response(status, headers=headers or {}, stream=httpx.ByteStream(content))


def signed_headers(
    body: bytes, key: rsa.RSAPrivateKey, serial: str, ts: int, nonce: str = "5K8264ILTKCH16CQ2502SI8ZNMTM67VS"
) -> dict[str, str]:
    signature = signing.rsa_sign(key, signing.response_message(str(ts), nonce, body))
    return {
        "Wechatpay-Timestamp": str(ts),
        "Wechatpay-Nonce": nonce,
        "Wechatpay-Signature": signature,
        "Wechatpay-Serial": serial,
        "Wechatpay-Signature-Type": "WECHATPAY2-SHA256-RSA2048",
    }


@dataclass
class Call:
    method: str
    canonical: str
    body: bytes
    headers: httpx.Headers
    auth: signing.Authorization | None
    signature_ok: bool


Handler = Callable[[httpx.Request], tuple[int, Any]]


@dataclass
class FakeWeChat:
    """Verifies the Authorization of every request with the merchant public key and signs 2xx answers."""

    merchant_public: rsa.RSAPublicKey = field(default_factory=MERCHANT_KEY.public_key)
    prefix: str = "/wechatpay"
    now: int = NOW
    cert_signer: tuple[rsa.RSAPrivateKey, str] = (K_WXGO, WXGO_SERIAL)
    #: certificates served by /v3/certificates; the answer is signed by the first one's key
    certificates: list[tuple[x509.Certificate, rsa.RSAPrivateKey]] = field(default_factory=list)
    routes: dict[tuple[str, str], Handler] = field(default_factory=dict)
    calls: list[Call] = field(default_factory=list)
    #: lets a test change the signed answer after signing: (headers, body) -> (headers, body)
    tamper: Callable[[dict[str, str], bytes], tuple[dict[str, str], bytes]] | None = None
    request_id: str = "08F78BB5AF0610D302102C0300E8B5E0"

    def route(self, method: str, path: str, status: int = 200, answer: Any = None) -> None:
        self.routes[(method, path)] = lambda _request: (status, answer)

    def calls_to(self, path: str) -> list[Call]:
        return [c for c in self.calls if c.canonical.split("?")[0] == path]

    def __call__(self, request: httpx.Request) -> httpx.Response:
        raw = request.url.raw_path.decode()
        assert raw.startswith(self.prefix + "/"), raw
        canonical = raw[len(self.prefix) :]
        body = request.read()
        auth = signing.parse_authorization(request.headers.get("Authorization", ""))
        ok = auth is not None and signing.rsa_verify(
            self.merchant_public,
            signing.request_message(request.method, canonical, auth.timestamp, auth.nonce_str, body),
            auth.signature,
        )
        self.calls.append(Call(request.method, canonical, body, request.headers, auth, ok))
        if not ok:
            return wire_response(
                401,
                json.dumps({"code": "SIGN_ERROR", "message": "签名错误"}).encode(),
                {"Content-Type": "application/json"},
            )
        path = canonical.split("?")[0]
        if (request.method, path) in self.routes:
            status, answer = self.routes[(request.method, path)](request)
        elif path == "/v3/certificates":
            status, answer = 200, self._certificates()
        else:
            status, answer = 404, {"code": "NOT_FOUND", "message": "no such route"}
        if isinstance(answer, httpx.Response):
            return answer
        content = (
            answer
            if isinstance(answer, bytes)
            else b""
            if answer is None
            else json.dumps(answer, separators=(",", ":"), ensure_ascii=False).encode()
        )
        headers: dict[str, str] = {"Request-ID": self.request_id}
        if 200 <= status < 300:
            key, serial = self._signer(request, path)
            headers.update(signed_headers(content, key, serial, self.now))
            if self.tamper is not None:
                headers, content = self.tamper(headers, content)
        if content:
            headers["Content-Type"] = "application/json"
        return wire_response(status, content, headers)

    def _signer(self, request: httpx.Request, path: str) -> tuple[rsa.RSAPrivateKey, str]:
        if path == "/v3/certificates" and self.certificates:
            cert, key = self.certificates[0]
            return key, signing.certificate_serial(cert)
        if request.headers.get("Wechatpay-Serial") == PUB_KEY_ID:
            return PUB_PRIV, PUB_KEY_ID
        return self.cert_signer

    def _certificates(self) -> dict[str, Any]:
        data = []
        for n, (cert, _key) in enumerate(self.certificates):
            nonce = f"{n:012d}"
            data.append(
                {
                    "serial_no": signing.certificate_serial(cert),
                    "effective_time": "2020-01-01T08:00:00+08:00",
                    "expire_time": cert.not_valid_after_utc.isoformat(),
                    "encrypt_certificate": {
                        "algorithm": "AEAD_AES_256_GCM",
                        "nonce": nonce,
                        "associated_data": "certificate",
                        "ciphertext": signing.aes_gcm_encrypt(
                            APIV3.encode(), nonce, "certificate", cert_pem(cert)
                        ),
                    },
                }
            )
        return {"data": data}


def make_provider(fake: FakeWeChat, cfg: WeChatPayConfig | None = None, **kwargs: Any) -> WeChatPayProvider:
    client = httpx.AsyncClient(transport=httpx.MockTransport(fake))
    return WeChatPayProvider(cfg or config(), client, clock=lambda: float(fake.now), **kwargs)


def order(**overrides: Any) -> CreateOrderRequest:
    values: dict[str, Any] = dict(
        out_trade_no="ORDER20240513001",
        amount=100,
        description="Image形象店-深圳腾大-QQ公仔",
        notify_url="https://shop.example/notify",
        payer_id="oUpF8uMuAJO_M2pxb1Q9zNjWeS6o",
    )
    values.update(overrides)
    return CreateOrderRequest(**values)


TRANSACTION = {
    "appid": APPID,
    "mchid": MCHID,
    "out_trade_no": "ORDER20240513001",
    "transaction_id": "4200000000202405130000000001",
    "trade_type": "JSAPI",
    "trade_state": "SUCCESS",
    "trade_state_desc": "支付成功",
    "bank_type": "OTHERS",
    "success_time": "2024-05-13T17:50:01+08:00",
    "payer": {"openid": "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o"},
    "amount": {"total": 100, "payer_total": 90, "currency": "CNY", "payer_currency": "CNY"},
}


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

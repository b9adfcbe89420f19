"""A fake WeChat Pay server (``FakeWeChat``) that verifies our signatures and signs its answers, and the
fixtures around it: test keys, ``config``, ``make_provider``, ``order``, ``TRANSACTION``.

Shared by ``test_provider.py``, ``test_provider_errors.py``, ``test_notifications.py``, ``test_keys.py`` and
``test_bill.py``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from minigate.providers.bases.payment import CreateOrderRequest
from minigate.providers.wechatpay import signing
from minigate.providers.wechatpay.config import WeChatPayConfig
from minigate.providers.wechatpay.provider import WeChatPayProvider
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

"""Helpers for the JD Pay tests: generated key pairs, a fake JD server over ``httpx.MockTransport`` that
decrypts and verifies what the provider sends and signs what it answers, and a notification builder.

No official JD Python SDK exists; JD's own Java demo (vectors JD-1…JD-4) is the oracle for the crypto.
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from pydantic import SecretStr

from minigate.providers.jdpay import crypto, schemas
from minigate.providers.jdpay.config import JDPayConfig
from minigate.providers.jdpay.provider import JDPayProvider

MERCHANT = "110148035005"
NOW = 1715593760  # 2024-05-13 17:49:20 +08:00
DES_B64 = base64.b64encode(bytes(range(1, 25))).decode()
DES = base64.b64decode(DES_B64)
OTHER_DES = bytes(range(101, 125))


def _key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=1024)


MERCHANT_KEY, JD_KEY, OTHER_KEY = _key(), _key(), _key()


def pem_private(key: rsa.RSAPrivateKey) -> str:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()).decode()


def pem_public(key: rsa.RSAPrivateKey) -> str:
    return key.public_key().public_bytes(serialization.Encoding.PEM,
                                         serialization.PublicFormat.SubjectPublicKeyInfo).decode()


def config(**overrides: Any) -> JDPayConfig:
    values: dict[str, Any] = {
        "merchant": MERCHANT, "merchant_private_key": SecretStr(pem_private(MERCHANT_KEY)),
        "jd_public_key": pem_public(JD_KEY), "des_key": SecretStr(DES_B64),
        "base_url": "https://paygate.example", "cashier_url": "https://h5pay.example/jdpay/saveOrder",
    }
    return JDPayConfig(**(values | overrides))


def jd_signed(fields: list[tuple[str, schemas.Value]], *, key: rsa.RSAPrivateKey = JD_KEY,
              declaration: str = schemas.DECLARATION) -> str:
    text = schemas.build_xml(fields, omit_empty=False, declaration=declaration)
    return crypto.insert_sign(text, crypto.rsa_sign(key, crypto.xml_s1(text)))


def envelope(inner: str, *, des: bytes = DES, merchant: str = MERCHANT, code: str = "000000",
             desc: str = "success") -> bytes:
    return schemas.build_envelope(merchant, crypto.envelope_encrypt(des, inner), result=(code, desc)).encode()


def error_envelope(code: str, desc: str, merchant: str = MERCHANT) -> bytes:
    return schemas.build_xml([("version", "V2.0"), ("merchant", merchant),
                              ("result", [("code", code), ("desc", desc)])]).encode()


def answer_fields(*fields: tuple[str, schemas.Value], merchant: str = MERCHANT) -> list[tuple[str, schemas.Value]]:
    return [("version", "V2.0"), ("merchant", merchant), ("result", [("code", "000000"), ("desc", "成功")]),
            *fields]


@dataclass
class Call:
    path: str
    headers: httpx.Headers
    body: bytes
    inner: str
    fields: dict[str, Any]
    signature_ok: bool


Handler = Callable[[Call], Any]  # httpx.Response | envelope bytes | inner fields to sign


@dataclass
class FakeJD:
    """Decrypts + verifies each request with the merchant's keys; answers via ``routes[path]``."""

    routes: dict[str, Handler] = field(default_factory=dict)
    calls: list[Call] = field(default_factory=list)

    def handler(self, request: httpx.Request) -> httpx.Response:
        env = schemas.parse_envelope(request.content.decode())
        assert env.merchant == MERCHANT and env.encrypt
        inner = crypto.envelope_decrypt(DES, env.encrypt)
        sign = crypto.xml_sign_value(inner) or ""
        ok = crypto.rsa_verify(MERCHANT_KEY.public_key(), crypto.xml_s1(inner), sign)
        call = Call(request.url.path, request.headers, request.content, inner,
                    schemas.xml_fields(schemas.parse_xml(inner)), ok)
        self.calls.append(call)
        answer = self.routes[request.url.path](call)
        if isinstance(answer, httpx.Response):
            return answer
        if isinstance(answer, bytes):
            return httpx.Response(200, content=answer, headers={"Content-Type": "application/xml"})
        return httpx.Response(200, content=envelope(jd_signed(answer)),
                              headers={"Content-Type": "application/xml"})

    def client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(transport=httpx.MockTransport(self.handler))


def make_provider(fake: FakeJD | None = None, **overrides: Any) -> JDPayProvider:
    client = (fake or FakeJD()).client()
    return JDPayProvider(config(**overrides), client, clock=lambda: float(NOW))


def notification(fields: list[tuple[str, schemas.Value]], *, key: rsa.RSAPrivateKey = JD_KEY, des: bytes = DES,
                 merchant: str = MERCHANT) -> bytes:
    return envelope(jd_signed(fields, key=key), des=des, merchant=merchant)


def payment_fields(**overrides: str) -> list[tuple[str, schemas.Value]]:
    base: list[tuple[str, schemas.Value]] = [
        ("version", "V2.0"), ("merchant", MERCHANT), ("result", [("code", "000000"), ("desc", "success")]),
        ("tradeNum", "ORDER20240513001"), ("tradeType", "0"), ("amount", "100"), ("status", "2"),
        ("payList", [("pay", [("payType", "0"), ("amount", "100"), ("currency", "CNY"),
                              ("tradeTime", "20240513175001")])])]
    return [(k, overrides.get(k, v)) if isinstance(v, str) else (k, v) for k, v in base]

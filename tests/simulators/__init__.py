"""Test helpers for the simulators: a tiny signing merchant client and a verifying notification receiver."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from minigate.providers.wechatpay import signing


class Merchant:
    """Signs requests like a WeChat Pay v3 client (§1.2) with the sandbox merchant's credentials."""

    def __init__(
        self,
        creds: dict[str, str],
        client: httpx.AsyncClient,
        *,
        prefix: str = "/wechatpay",
        now: Callable[[], float],
        serial_header: str | None = None,
    ) -> None:
        self.creds = creds
        self.client = client
        self.prefix = prefix
        self.now = now
        self.key = signing.load_private_key(creds["merchant_private_key"])
        self.serial_header = serial_header  # sent as Wechatpay-Serial (public-key mode: the PUB_KEY_ID)

    def authorization(
        self, method: str, url: str, body: bytes, *, timestamp: str | None = None, nonce: str | None = None
    ) -> str:
        auth = signing.build_authorization(
            key=self.key,
            mchid=self.creds["mchid"],
            serial_no=self.creds["merchant_serial_no"],
            method=method,
            canonical_url=url,
            body=body,
            timestamp=timestamp or str(int(self.now())),
            nonce=nonce or signing.new_nonce(),
        )
        return auth.header()

    async def call(
        self,
        method: str,
        url: str,
        payload: Any = None,
        *,
        raw: bytes | None = None,
        timestamp: str | None = None,
        nonce: str | None = None,
        sign_url: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> httpx.Response:
        body = (
            raw
            if raw is not None
            else (b"" if payload is None else json.dumps(payload, ensure_ascii=False).encode())
        )
        all_headers = {
            "Accept": "application/json",
            "Content-Type": "application/json",
            "Authorization": self.authorization(
                method, sign_url or url, body, timestamp=timestamp, nonce=nonce
            ),
        }
        if self.serial_header:
            all_headers["Wechatpay-Serial"] = self.serial_header
        all_headers |= headers or {}
        return await self.client.request(method, self.prefix + url, content=body, headers=all_headers)

    def prepay_body(self, out_trade_no: str, total: int = 100, **extra: Any) -> dict[str, Any]:
        return {
            "appid": self.creds["appid"],
            "mchid": self.creds["mchid"],
            "description": "沙箱-测试商品",
            "out_trade_no": out_trade_no,
            "notify_url": "http://testserver/notify/pay",
            "amount": {"total": total, "currency": "CNY"},
            "payer": {"openid": "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o"},
        } | extra

    async def prepay(self, out_trade_no: str, total: int = 100, **extra: Any) -> httpx.Response:
        return await self.call(
            "POST", "/v3/pay/transactions/jsapi", self.prepay_body(out_trade_no, total, **extra)
        )

    async def query(self, out_trade_no: str) -> httpx.Response:
        return await self.call(
            "GET", f"/v3/pay/transactions/out-trade-no/{out_trade_no}?mchid={self.creds['mchid']}"
        )

    async def refund(
        self, out_trade_no: str, out_refund_no: str, refund: int, total: int = 100, **extra: Any
    ) -> httpx.Response:
        body = {
            "out_trade_no": out_trade_no,
            "out_refund_no": out_refund_no,
            "amount": {"refund": refund, "total": total, "currency": "CNY"},
        } | extra
        return await self.call("POST", "/v3/refund/domestic/refunds", body)


def platform_keys(creds: dict[str, str]) -> dict[str, Any]:
    """serial -> public key, as a client in "mixed" mode holds them (§1.1)."""
    cert = signing.load_certificate(creds["platform_certificate"])
    return {
        signing.certificate_serial(cert): cert.public_key(),
        creds["platform_public_key_id"]: signing.load_public_key(creds["platform_public_key"]),
    }


def verify_signed(headers: httpx.Headers | dict[str, str], body: bytes, creds: dict[str, str]) -> bool:
    h = {k.lower(): v for k, v in headers.items()}
    key = platform_keys(creds).get(h.get("wechatpay-serial", ""))
    if key is None or h.get("wechatpay-signature-type") != signing.AUTH_SCHEME:
        return False
    message = signing.response_message(h["wechatpay-timestamp"], h["wechatpay-nonce"], body)
    return signing.rsa_verify(key, message, h["wechatpay-signature"])


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    verified: bool
    status: int
    resource: dict[str, Any] | None = None
    event: dict[str, Any] | None = None


@dataclass
class Receiver:
    """A merchant notify endpoint: verifies, decrypts, answers with ``statuses`` in turn (then 204)."""

    creds: dict[str, str]
    statuses: list[int] = field(default_factory=list)
    received: list[Received] = field(default_factory=list)

    def app(self) -> Starlette:
        async def notify(request: Request) -> Response:
            body = await request.body()
            headers = dict(request.headers)
            verified = verify_signed(headers, body, self.creds)
            status = self.statuses.pop(0) if self.statuses else 204
            if not verified:
                status = 401
            item = Received(request.url.path, headers, body, verified, status)
            if verified:
                item.event = json.loads(body)
                res = item.event["resource"]
                item.resource = json.loads(
                    signing.aes_gcm_decrypt(
                        self.creds["apiv3_key"].encode(),
                        res["nonce"],
                        res["associated_data"],
                        res["ciphertext"],
                    )
                )
            self.received.append(item)
            return Response(status_code=status)

        return Starlette(routes=[Route("/notify/{kind}", notify, methods=["POST"])])

    def client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(transport=httpx.ASGITransport(app=self.app()), base_url="http://testserver")

    @property
    def accepted(self) -> list[Received]:
        return [r for r in self.received if r.verified and r.status in (200, 204)]

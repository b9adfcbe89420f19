"""``minigate demo``: a whole mini-program checkout against the sandbox, over real HTTP, step by step.

It starts the gateway and a merchant webhook receiver on free loopback ports (fresh data in a temporary
directory), then plays the mini-program, the payer and the merchant backend.
"""

from __future__ import annotations

import abc
import asyncio
import base64
import json
import socket
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from rich.console import Console
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from minigate import webhook_signature
from minigate.api.app import create_app
from minigate.config import load_settings
from minigate.logging import configure_logging

__all__ = ["run_demo"]

console = Console(highlight=False)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class _Receiver:
    """The merchant's webhook endpoint: verifies every Minigate-Signature."""

    def __init__(self) -> None:
        self.secret = ""
        self.events: list[dict[str, Any]] = []
        self.rejected = 0
        self.app = Starlette(routes=[Route("/hooks", self._hook, methods=["POST"])])

    async def _hook(self, request: Request) -> Response:
        body = await request.body()
        try:
            webhook_signature.verify(body, request.headers.get(webhook_signature.HEADER, ""), self.secret)
        except webhook_signature.SignatureVerificationError:
            self.rejected += 1
            return Response(status_code=400)
        self.events.append(json.loads(body))
        return Response(status_code=204)

    def types(self) -> list[str]:
        return [e["type"] for e in self.events]


async def _serve(app: Any, port: int) -> uvicorn.Server:
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error", lifespan="on"))
    asyncio.get_running_loop().create_task(server.serve())
    for _ in range(500):
        if server.started:
            return server
        await asyncio.sleep(0.01)
    raise RuntimeError("server did not start")


async def _until(check: Callable[[], Awaitable[bool]], within: float = 15.0) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if await check():
            return True
        await asyncio.sleep(0.05)
    return False


class _Channel(abc.ABC):
    """What differs between channels in the demo: how the user logs in, what the cashier needs."""

    channel = ""
    provider = ""
    label = ""

    @abc.abstractmethod
    async def login(self, http: httpx.AsyncClient, auth: dict[str, str]) -> tuple[bool, str, str]:
        """(ok, payer id, detail)"""

    @abc.abstractmethod
    def check_pay_params(self, creds: dict[str, Any], params: dict[str, Any]) -> tuple[bool, str]:
        """(ok, detail): are the cashier parameters what the mini-program needs?"""

    async def open_cashier(self, http: httpx.AsyncClient, params: dict[str, Any]) -> tuple[bool, str] | None:
        """What the mini-program does before the payer can pay; None when nothing is needed."""
        return None


class _WeChat(_Channel):
    channel, provider, label = "wechat_mini", "wechatpay", "WeChat Pay (mini-program JSAPI)"

    async def login(self, http: httpx.AsyncClient, auth: dict[str, str]) -> tuple[bool, str, str]:
        code = (await http.post("/sandbox/wechat/_sandbox/login", json={"user": "alice"})).json().get("code", "")
        r = await http.post("/v1/wechat/login", headers=auth, json={"code": code})
        openid = str(r.json().get("openid", ""))
        return r.status_code == 200 and bool(openid), openid, f"wx.login() code → openid {openid[:4]}…"

    def check_pay_params(self, creds: dict[str, Any], params: dict[str, Any]) -> tuple[bool, str]:
        return _pay_sign_ok(creds, params), "paySign verifies: RSA-SHA256 over appId/timeStamp/nonceStr/package"


class _Alipay(_Channel):
    channel, provider, label = "alipay_mini", "alipay", "Alipay (mini-program JSAPI_PAY)"

    async def login(self, http: httpx.AsyncClient, auth: dict[str, str]) -> tuple[bool, str, str]:
        code = (await http.post("/sandbox/alipay/_sandbox/login", json={"user": "alice"})).json().get("code", "")
        r = await http.post("/v1/alipay/login", headers=auth, json={"code": code})
        open_id = str(r.json().get("open_id") or r.json().get("user_id") or "")
        return r.status_code == 200 and bool(open_id), open_id, f"my.getAuthCode() code → open_id {open_id[:4]}…"

    def check_pay_params(self, creds: dict[str, Any], params: dict[str, Any]) -> tuple[bool, str]:
        trade_no = str(params.get("tradeNO", ""))
        return len(trade_no) >= 16 and trade_no.isdigit(), f"my.tradePay({{tradeNO: {trade_no}}})"


class _JD(_Channel):
    channel, provider, label = "jdpay_h5", "jdpay", "JD Pay (H5 cashier in a web-view)"

    async def login(self, http: httpx.AsyncClient, auth: dict[str, str]) -> tuple[bool, str, str]:
        return True, "user-42", "JD's cashier identifies the payer itself; the merchant passes its own user id"

    def check_pay_params(self, creds: dict[str, Any], params: dict[str, Any]) -> tuple[bool, str]:
        fields = params.get("fields", {})
        encrypted = all(k in ("merchant", "version", "sign") or (len(str(v)) % 16 == 0 and
                                                                   all(c in "0123456789abcdef" for c in str(v)))
                        for k, v in fields.items())
        return bool(fields.get("sign")) and encrypted, "signed form, every value 3DES-encrypted"

    async def open_cashier(self, http: httpx.AsyncClient, params: dict[str, Any]) -> tuple[bool, str] | None:
        r = await http.post(httpx.URL(params["cashier_url"]).path, data=params["fields"])
        return r.status_code == 200, "the web-view posts the form; JD's cashier page opens"


CHANNELS: dict[str, _Channel] = {c.channel: c for c in (_WeChat(), _Alipay(), _JD())}


async def run_demo(channel: str) -> int:
    play = CHANNELS.get(channel)
    if play is None:
        console.print(f"[red]unknown channel {channel}; one of: {', '.join(CHANNELS)}[/red]")
        return 2
    configure_logging("ERROR")
    failures = 0
    counter = 0

    def step(text: str, ok: bool, detail: str = "") -> None:
        nonlocal failures, counter
        counter += 1
        failures += 0 if ok else 1
        mark = "[green]✔[/green]" if ok else "[red]✘[/red]"
        console.print(f"{mark} {counter:>2}. {text}" + (f"  [dim]{detail}[/dim]" if detail else ""))

    with tempfile.TemporaryDirectory(prefix="minigate-demo-") as tmp:
        gw_port, hook_port = _free_port(), _free_port()
        settings = load_settings(data_dir=Path(tmp), public_url=f"http://127.0.0.1:{gw_port}",
                                 sandbox_time_scale=0.002, worker_poll_seconds=0.05, log_level="ERROR")
        receiver = _Receiver()
        gateway_app = create_app(settings)
        gateway = await _serve(gateway_app, gw_port)
        hooks = await _serve(receiver.app, hook_port)
        base = f"http://127.0.0.1:{gw_port}"
        console.print(f"[bold]minigate demo[/bold] — {play.label}\n"
                      f"gateway {base}, sandbox {base}/sandbox, data {tmp}\n")
        try:
            async with httpx.AsyncClient(base_url=base, timeout=20) as http:
                from minigate.services.apps import create_app as create_merchant_app

                created = await create_merchant_app(gateway_app.state.runtime, name="Demo coffee shop")
                auth = {"Authorization": f"Bearer {created.test_key}"}
                step("merchant app created", created.test_key.startswith("mg_test_"),
                     f"{created.id}, test key {created.test_key[:12]}…")

                r = await http.post("/v1/webhook_endpoints", headers=auth,
                                    json={"url": f"http://127.0.0.1:{hook_port}/hooks"})
                receiver.secret = r.json().get("secret", "")
                step("webhook endpoint registered", r.status_code == 200, r.json().get("id", r.text))

                ok, payer, detail = await play.login(http, auth)
                step("user identified (the provider credentials never leave minigate)", ok, detail)

                order_body = {"channel": channel, "amount": 2500, "description": "Latte, large",
                              "merchant_order_no": f"DEMO{uuid.uuid4().hex[:12].upper()}",
                              "payer": {"openid": payer}}
                key = str(uuid.uuid4())
                r = await http.post("/v1/orders", headers=auth | {"Idempotency-Key": key}, json=order_body)
                order = r.json()
                params = order.get("pay_params", {})
                step("backend: order created, cashier parameters returned",
                     r.status_code == 200 and order.get("status") == "pending",
                     f"{order.get('id')} ¥25.00")

                creds = gateway_app.state.runtime.sandbox.credentials(play.provider)
                ok, detail = play.check_pay_params(creds, params)
                step("cashier parameters are what the mini-program needs", ok, detail)

                again = await http.post("/v1/orders", headers=auth | {"Idempotency-Key": key}, json=order_body)
                step("same Idempotency-Key replays the same order", again.json().get("id") == order.get("id"))

                opened = await play.open_cashier(http, params)
                if opened is not None:
                    step("payer opens the cashier", *opened)

                r = await http.post(f"/sandbox/{play.provider}/_sandbox/pay",
                                    json={"out_trade_no": order.get("out_trade_no")})
                step("payer confirms in the sandbox (the simulator sends its signed callback)",
                     r.status_code == 200, r.text[:60])

                async def paid() -> bool:
                    got = await http.get(f"/v1/orders/{order['id']}", headers=auth)
                    return bool(got.json().get("status") == "paid")

                step("callback verified and applied: order is paid", await _until(paid))
                step("merchant webhook order.paid received, signature verified",
                     await _until(_has(receiver, "order.paid")))

                r = await http.post("/v1/refunds", headers=auth | {"Idempotency-Key": str(uuid.uuid4())},
                                    json={"order": order["id"], "amount": 1000, "reason": "one cup spilled"})
                refund = r.json()
                step("partial refund of ¥10.00 accepted", r.status_code == 200,
                     f"{refund.get('id')} {refund.get('status')}")

                r = await http.post("/v1/refunds", headers=auth, json={"order": order["id"], "amount": 2000})
                step("refund above what is left is refused, nothing changes",
                     r.status_code == 400 and r.json()["error"]["code"] == "refund_exceeds_refundable")

                async def refunded() -> bool:
                    got = await http.get(f"/v1/refunds/{refund.get('id')}", headers=auth)
                    return bool(got.json().get("status") == "succeeded")

                step("refund succeeded", await _until(refunded))
                middle = (await http.get(f"/v1/orders/{order['id']}", headers=auth)).json()
                step("order is partially_refunded with ¥10.00 refunded",
                     middle.get("status") == "partially_refunded" and middle.get("amount_refunded") == 1000)

                r = await http.post("/v1/refunds", headers=auth | {"Idempotency-Key": str(uuid.uuid4())},
                                    json={"order": order["id"], "reason": "customer changed their mind"})
                rest = r.json()
                step("refund of everything left (¥15.00) accepted", r.status_code == 200 and
                     rest.get("amount") == 1500, f"{rest.get('id')} {rest.get('status')}")

                async def fully_refunded() -> bool:
                    got = (await http.get(f"/v1/orders/{order['id']}", headers=auth)).json()
                    return bool(got.get("status") == "refunded" and got.get("amount_refunded") == 2500)

                step("order is refunded in full (¥25.00)", await _until(fully_refunded))
                step("every webhook arrived once, each signature verified",
                     await _until(_count(receiver, "refund.succeeded", 2)) and receiver.rejected == 0
                     and receiver.types().count("order.paid") == 1,
                     f"events: {', '.join(receiver.types())}")
        finally:
            gateway.should_exit = True
            hooks.should_exit = True
            await asyncio.sleep(0.3)
    console.print()
    if failures:
        console.print(f"[red bold]{failures} step(s) misbehaved[/red bold]")
        return 1
    console.print("[green bold]every step behaved[/green bold]")
    return 0


def _has(receiver: _Receiver, type_: str) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return type_ in receiver.types()
    return check


def _count(receiver: _Receiver, type_: str, n: int) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return receiver.types().count(type_) >= n
    return check


def _pay_sign_ok(creds: dict[str, Any], params: dict[str, str]) -> bool:
    try:
        key = serialization.load_pem_private_key(creds["merchant_private_key"].encode(), password=None)
        assert isinstance(key, rsa.RSAPrivateKey)
        message = f"{creds['appid']}\n{params['timeStamp']}\n{params['nonceStr']}\n{params['package']}\n".encode()
        key.public_key().verify(base64.b64decode(params["paySign"]), message, padding.PKCS1v15(), hashes.SHA256())
        return params.get("signType") == "RSA"
    except Exception:  # noqa: BLE001 - any failure means the signature does not hold
        return False

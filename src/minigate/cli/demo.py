"""``minigate demo``: a whole mini-program checkout against the sandbox, over real HTTP, step by step.

It starts the gateway and a merchant webhook receiver on free loopback ports (fresh data in a temporary
directory), then plays the mini-program, the payer and the merchant backend.
"""

from __future__ import annotations

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


async def run_demo(channel: str) -> int:
    if channel != "wechat_mini":
        console.print(f"[red]channel {channel} is not available yet; try --channel wechat_mini[/red]")
        return 2
    configure_logging("ERROR")
    failures = 0

    def step(n: int, text: str, ok: bool, detail: str = "") -> None:
        nonlocal failures
        failures += 0 if ok else 1
        mark = "[green]✔[/green]" if ok else "[red]✘[/red]"
        console.print(f"{mark} {n:>2}. {text}" + (f"  [dim]{detail}[/dim]" if detail else ""))

    with tempfile.TemporaryDirectory(prefix="minigate-demo-") as tmp:
        gw_port, hook_port = _free_port(), _free_port()
        settings = load_settings(data_dir=Path(tmp), public_url=f"http://127.0.0.1:{gw_port}",
                                 sandbox_time_scale=0.002, worker_poll_seconds=0.05, log_level="ERROR")
        receiver = _Receiver()
        gateway_app = create_app(settings)
        gateway = await _serve(gateway_app, gw_port)
        hooks = await _serve(receiver.app, hook_port)
        base = f"http://127.0.0.1:{gw_port}"
        console.print(f"[bold]minigate demo[/bold] — gateway {base}, sandbox {base}/sandbox, data {tmp}\n")
        try:
            async with httpx.AsyncClient(base_url=base, timeout=20) as http:
                from minigate.services.apps import create_app as create_merchant_app

                created = await create_merchant_app(gateway_app.state.runtime, name="Demo coffee shop")
                auth = {"Authorization": f"Bearer {created.test_key}"}
                step(1, "merchant app created", created.test_key.startswith("mg_test_"),
                     f"{created.id}, test key {created.test_key[:12]}…")

                r = await http.post("/v1/webhook_endpoints", headers=auth,
                                    json={"url": f"http://127.0.0.1:{hook_port}/hooks"})
                receiver.secret = r.json().get("secret", "")
                step(2, "webhook endpoint registered", r.status_code == 200, r.json().get("id", r.text))

                r = await http.post("/sandbox/wechat/_sandbox/login", json={"user": "alice"})
                code = r.json().get("code", "")
                step(3, "mini-program: wx.login() gives a code", r.status_code == 200 and bool(code))

                r = await http.post("/v1/wechat/login", headers=auth, json={"code": code})
                openid = r.json().get("openid", "")
                step(4, "backend: code exchanged for the openid (app secret never leaves minigate)",
                     r.status_code == 200 and bool(openid), f"openid {openid[:4]}…")

                order_body = {"channel": channel, "amount": 2500, "description": "Latte, large",
                              "merchant_order_no": f"DEMO{uuid.uuid4().hex[:12].upper()}",
                              "payer": {"openid": openid}}
                key = str(uuid.uuid4())
                r = await http.post("/v1/orders", headers=auth | {"Idempotency-Key": key}, json=order_body)
                order = r.json()
                params = order.get("pay_params", {})
                step(5, "backend: order created, wx.requestPayment parameters returned",
                     r.status_code == 200 and order.get("status") == "pending",
                     f"{order.get('id')} ¥25.00 package={params.get('package', '')[:24]}…")

                creds = gateway_app.state.runtime.sandbox.credentials("wechatpay")
                step(6, "paySign verifies with the merchant key (RSA-SHA256 over appId/timeStamp/nonceStr/package)",
                     _pay_sign_ok(creds, params))

                again = await http.post("/v1/orders", headers=auth | {"Idempotency-Key": key}, json=order_body)
                step(7, "same Idempotency-Key replays the same order", again.json().get("id") == order.get("id"))

                r = await http.post("/sandbox/wechatpay/_sandbox/pay", json={"out_trade_no": order["out_trade_no"]})
                step(8, "payer confirms in the sandbox (the simulator sends its signed, encrypted callback)",
                     r.status_code == 200, r.text[:60])

                async def paid() -> bool:
                    got = await http.get(f"/v1/orders/{order['id']}", headers=auth)
                    return bool(got.json().get("status") == "paid")

                step(9, "callback verified, decrypted, applied: order is paid", await _until(paid))
                step(10, "merchant webhook order.paid received, signature verified",
                     await _until(_has(receiver, "order.paid")))

                r = await http.post("/v1/refunds", headers=auth | {"Idempotency-Key": str(uuid.uuid4())},
                                    json={"order": order["id"], "amount": 1000, "reason": "one cup spilled"})
                refund = r.json()
                step(11, "partial refund of ¥10.00 accepted", r.status_code == 200,
                     f"{refund.get('id')} {refund.get('status')}")

                r = await http.post("/v1/refunds", headers=auth, json={"order": order["id"], "amount": 2000})
                step(12, "refund above what is left is refused, nothing changes",
                     r.status_code == 400 and r.json()["error"]["code"] == "refund_exceeds_refundable")

                async def refunded() -> bool:
                    got = await http.get(f"/v1/refunds/{refund.get('id')}", headers=auth)
                    return bool(got.json().get("status") == "succeeded")

                step(13, "refund notification applied: refund succeeded", await _until(refunded))
                step(14, "merchant webhook refund.succeeded received",
                     await _until(_has(receiver, "refund.succeeded")))
                middle = (await http.get(f"/v1/orders/{order['id']}", headers=auth)).json()
                step(15, "order is partially_refunded with ¥10.00 refunded",
                     middle.get("status") == "partially_refunded" and middle.get("amount_refunded") == 1000)

                r = await http.post("/v1/refunds", headers=auth | {"Idempotency-Key": str(uuid.uuid4())},
                                    json={"order": order["id"], "reason": "customer changed their mind"})
                rest = r.json()
                step(16, "refund of everything left (¥15.00) accepted", r.status_code == 200 and
                     rest.get("amount") == 1500, f"{rest.get('id')} {rest.get('status')}")

                async def fully_refunded() -> bool:
                    got = (await http.get(f"/v1/orders/{order['id']}", headers=auth)).json()
                    return bool(got.get("status") == "refunded" and got.get("amount_refunded") == 2500)

                step(17, "order is refunded in full (¥25.00)", await _until(fully_refunded))
                step(18, "every webhook arrived once, each signature verified",
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

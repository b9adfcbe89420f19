"""The mini-program SDK end to end: `clients/miniprogram/minigate.js` running in Node with a simulated `wx`,
over real HTTP to a `minigate serve` process (SQLite and PostgreSQL) and an external sandbox; a merchant backend
exchanges the login code; orders are paid (or cancelled) through the SDK's pay helper; the funnel, the payment
funnel and the active users are read back through the API."""

from __future__ import annotations

import asyncio
import hashlib
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from tests.e2e.harness import Processes, ThreadedServer

ROOT = Path(__file__).resolve().parents[2]
DRIVER = ROOT / "clients" / "miniprogram" / "e2e" / "drive.js"
NODE = shutil.which("node")


def merchant_backend(gateway: str, secret_key: str) -> Starlette:
    """What the merchant runs: the login code goes to minigate with the secret key; the app's own user id comes
    back (a pseudonym of the openid — the openid itself never goes to analytics)."""
    async def login(request: Request) -> JSONResponse:
        body = await request.json()
        async with httpx.AsyncClient(timeout=10) as http:
            r = await http.post(f"{gateway}/v1/wechat/login", json={"code": body["code"]},
                                headers={"Authorization": f"Bearer {secret_key}"})
        r.raise_for_status()
        user_id = "u-" + hashlib.sha256(r.json()["openid"].encode()).hexdigest()[:12]
        return JSONResponse({"user_id": user_id})
    return Starlette(routes=[Route("/login", login, methods=["POST"])])


async def test_sdk_events_reach_the_funnels(procs: Processes, database_url: str, tmp_path: Path) -> None:
    assert NODE, "Node.js is needed for the SDK tests (make test installs nothing for it: it is on the machine)"
    sandbox = await procs.start_sandbox()
    gw = procs.gateway("gw", database_url=database_url)
    await procs.start_gateway(gw)
    secret = {"Authorization": f"Bearer {procs.test_key(gw)}"}
    backend = ThreadedServer(merchant_backend(gw.url, procs.test_key(gw)))
    backend.start()
    try:
        async with httpx.AsyncClient(base_url=gw.url, headers=secret, timeout=20) as api:
            key = (await api.post("/v1/analytics/publishable_keys")).json()["key"]
            orders: list[dict[str, Any]] = []
            for n in range(2):
                r = await api.post("/v1/orders", json={
                    "channel": "wechat_mini", "amount": 1299 + n, "description": "Latte",
                    "merchant_order_no": f"SDK-E2E-{n}", "payer": {"openid": f"oSdkE2E00000000000000000{n}"}})
                assert r.status_code == 200, r.text
                orders.append(r.json())
            code = (await api.post(f"{sandbox}/wechat/_sandbox/login", json={"user": "alice"})).json()["code"]
            scenario = {
                "endpoint": gw.url, "key": key, "login_code": code, "backend_login_url": f"{backend.url}/login",
                "pay_url": f"{sandbox}/wechatpay/_sandbox/pay", "batch_size": 5,
                "steps": [
                    {"do": "device", "name": "alice"},
                    {"do": "page", "path": "pages/index/index"},
                    {"do": "track", "name": "view_product", "properties": {"sku": "LATTE"}},
                    {"do": "login"},
                    {"do": "track", "name": "add_to_cart", "properties": {"sku": "LATTE"}},
                    {"do": "pay", "order": orders[0], "result": "success"},
                    {"do": "device", "name": "bob"},
                    {"do": "page", "path": "pages/index/index"},
                    {"do": "track", "name": "view_product", "properties": {"sku": "LATTE"}},
                    {"do": "pay", "order": orders[1], "result": "cancel"},
                    {"do": "device", "name": "carol"},
                    {"do": "page", "path": "pages/index/index"},
                    {"do": "flush"},
                ]}
            path = tmp_path / "scenario.json"
            path.write_text(json.dumps(scenario))
            run = await asyncio.to_thread(subprocess.run, [NODE, str(DRIVER), str(path)], capture_output=True,
                                          text=True, timeout=120, cwd=DRIVER.parent.parent)
            assert run.returncode == 0, run.stdout + run.stderr
            result = json.loads(run.stdout.strip().splitlines()[-1])
            assert result["errors"] == [] and result["sent"] == 10, result     # 5 + 4 + 1 events

            # the gateway's worker loads the journal and settles the payment from the sandbox's notification
            funnel: dict[str, Any] = {}
            for _ in range(200):
                r = await api.get("/v1/analytics/payment_funnel")
                assert r.status_code == 200, r.text
                funnel = r.json()
                if {s["step"]: s["persons"] for s in funnel["steps"]}["verified_paid"] == 1:
                    break
                await asyncio.sleep(0.1)
            steps = {s["step"]: s["persons"] for s in funnel["steps"]}
            assert steps == {"viewed": 2, "ordered": 2, "payment_requested": 2, "client_reported_success": 1,
                             "verified_paid": 1}, funnel
            assert funnel["diagnostics"]["paid_amount"] == 1299

            r = await api.get("/v1/analytics/funnel", params={"steps": "$pageview,view_product,add_to_cart"})
            assert [s["persons"] for s in r.json()["data"]] == [3, 2, 1], r.text
            r = await api.get("/v1/analytics/active_users")
            assert r.json()["data"][-1]["active_users"] == 3, r.text

            # alice's anonymous events before login belong to her user id (the same openid for every code of hers)
            again = (await api.post(f"{sandbox}/wechat/_sandbox/login", json={"user": "alice"})).json()["code"]
            openid = (await api.post("/v1/wechat/login", json={"code": again})).json()["openid"]
            user_id = "u-" + hashlib.sha256(openid.encode()).hexdigest()[:12]
            events = (await api.get(f"/v1/analytics/persons/{user_id}/events")).json()["events"]
            names = [e["name"] for e in events]
            assert "view_product" in names and "add_to_cart" in names and "$payment_result" in names, names
            assert any(e["user_id"] is None for e in events)      # sent before login, found by the device
    finally:
        backend.stop()

"""The real thing: `minigate serve`, `apps create` and `demo` as processes, over real HTTP on loopback,
on SQLite and on PostgreSQL."""

from __future__ import annotations

import asyncio
import json
import os
import re
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import pytest


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "minigate.cli", *args]


@pytest.fixture
def serve_env(tmp_path: Path, database_url: str) -> dict[str, str]:
    port = free_port()
    return {**os.environ, "MINIGATE_DATA_DIR": str(tmp_path / "data"), "MINIGATE_DATABASE_URL": database_url,
            "MINIGATE_PORT": str(port), "MINIGATE_PUBLIC_URL": f"http://127.0.0.1:{port}",
            "MINIGATE_SANDBOX_TIME_SCALE": "0.001", "MINIGATE_WORKER_POLL_SECONDS": "0.05",
            "MINIGATE_LOG_LEVEL": "WARNING"}


async def test_serve_first_run_prints_keys_and_takes_a_real_payment(serve_env: dict[str, str],
                                                                     tmp_path: Path) -> None:
    base = serve_env["MINIGATE_PUBLIC_URL"]
    with (tmp_path / "serve.out").open("w") as out:
        proc = await asyncio.to_thread(subprocess.Popen, cli("serve"), env=serve_env, stdout=out,
                                       stderr=subprocess.STDOUT)
    try:
        async with httpx.AsyncClient(base_url=base, timeout=10) as http:
            for _ in range(300):
                try:
                    if (await http.get("/readyz")).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                await asyncio.sleep(0.05)
            else:
                pytest.fail("gateway did not become ready:\n" + (tmp_path / "serve.out").read_text())
            printed = (tmp_path / "serve.out").read_text()
            match = re.search(r"test key: (mg_test_\S+)", printed)
            assert match, printed
            auth = {"Authorization": f"Bearer {match.group(1)}"}
            assert "minigate demo" in printed and "/sandbox/wechatpay/_sandbox/pay" in printed
            # a test gateway's first start also makes a console admin, whose password is printed once
            console = re.search(r"sign in as (\S+) with (\S+)", printed)
            assert console, printed
            signed = await http.post("/console/login", data={"email": console.group(1), "password": console.group(2),
                                                             "next": "/console/"})
            assert signed.status_code == 303 and signed.headers["location"] == "/console/", signed.text[:300]

            code = (await http.post("/sandbox/wechat/_sandbox/login", json={"user": "dave"})).json()["code"]
            openid = (await http.post("/v1/wechat/login", headers=auth, json={"code": code})).json()["openid"]
            r = await http.post("/v1/orders", headers=auth | {"Idempotency-Key": str(uuid.uuid4())}, json={
                "channel": "wechat_mini", "amount": 4200, "description": "Real HTTP order",
                "merchant_order_no": f"E2E{uuid.uuid4().hex[:10]}", "payer": {"openid": openid}})
            assert r.status_code == 200, r.text
            order = r.json()
            paid = await http.post("/sandbox/wechatpay/_sandbox/pay", json={"out_trade_no": order["out_trade_no"]})
            assert paid.status_code == 200
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline:
                status = (await http.get(f"/v1/orders/{order['id']}", headers=auth)).json()["status"]
                if status == "paid":
                    break
                await asyncio.sleep(0.05)
            assert status == "paid"   # the simulator's callback crossed real HTTP into the gateway

            # a second app made by the CLI against the same database works on the running server
            made = await asyncio.to_thread(subprocess.run, cli("apps", "create", "Second shop"), env=serve_env,
                                           capture_output=True, text=True, timeout=60, check=True)
            second = json.loads(made.stdout)
            assert set(second) == {"id", "name", "test_key", "live_key"} and second["name"] == "Second shop"
            other = {"Authorization": f"Bearer {second['test_key']}"}
            assert (await http.get(f"/v1/orders/{order['id']}", headers=other)).status_code == 404
            assert (await http.get("/v1/orders", headers=other)).json()["data"] == []
    finally:
        proc.terminate()
        await asyncio.to_thread(proc.wait, timeout=20)
    # a second start does not make another app or print keys again
    proc = await asyncio.to_thread(subprocess.Popen, cli("serve"), env=serve_env, stdout=subprocess.PIPE,
                                   stderr=subprocess.STDOUT, text=True)
    try:
        async with httpx.AsyncClient(base_url=base, timeout=10) as http:
            for _ in range(300):
                try:
                    if (await http.get("/readyz")).status_code == 200:
                        break
                except httpx.TransportError:
                    await asyncio.sleep(0.05)
    finally:
        proc.terminate()
        second_run, _ = await asyncio.to_thread(proc.communicate, timeout=20)
    assert "test key:" not in second_run


def test_migrate_command(serve_env: dict[str, str]) -> None:
    done = subprocess.run(cli("migrate"), env=serve_env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "latest schema" in done.stdout


@pytest.mark.parametrize("channel", ["wechat_mini", "alipay_mini", "jdpay_h5"])
def test_demo_walks_every_step(tmp_path: Path, channel: str) -> None:
    done = subprocess.run(cli("demo", "--channel", channel), capture_output=True, text=True, timeout=180,
                          env={**os.environ, "COLUMNS": "200"}, cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "every step behaved" in done.stdout
    assert done.stdout.count("✔") >= 16 and "✘" not in done.stdout
    for must in ("order is paid", "refunded in full", "Idempotency-Key replays"):
        assert must in done.stdout


def test_demo_refuses_unknown_channel(tmp_path: Path) -> None:
    done = subprocess.run(cli("demo", "--channel", "paypal"), capture_output=True, text=True, timeout=60,
                          cwd=tmp_path)
    assert done.returncode == 2


def test_help_is_there_for_every_command() -> None:
    for args in ((), ("apps",), ("sandbox",), ("serve",), ("demo",), ("sandbox", "serve"),
                 ("sandbox", "credentials"), ("sms",), ("sms", "send"), ("sms", "show")):
        done = subprocess.run(cli(*args, "--help"), capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, (args, done.stderr)
        assert "Usage" in done.stdout


def test_cli_webhooks_redeliver(tmp_path: Path) -> None:
    env = {**os.environ, "MINIGATE_DATA_DIR": str(tmp_path / "d")}
    done = subprocess.run(cli("webhooks", "redeliver", "evt_missing"), env=env, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 2 and "no event evt_missing" in done.stderr

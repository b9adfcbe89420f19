"""SMS over real HTTP: `minigate sandbox serve` and two `minigate serve` processes on one database and one Redis.

A code is sent through one gateway process, read from the sandbox phone, checked through the other; the
per-phone limit holds across the two processes (Redis); the receipt crosses real HTTP from the sandbox
process into a gateway; `minigate sms send` works from a shell."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import REDIS_URL
from tests.e2e.test_processes import cli, free_port


async def _ready(base: str, log: Path) -> None:
    async with httpx.AsyncClient(base_url=base, timeout=5) as http:
        for _ in range(400):
            try:
                if (await http.get("/readyz")).status_code == 200 or (await http.get("/_sandbox")).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.05)
    pytest.fail(f"{base} did not start:\n{await asyncio.to_thread(log.read_text)}")


def spawn(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("w") as out:
        return subprocess.Popen(args, env=env, stdout=out, stderr=subprocess.STDOUT)


async def test_codes_across_two_gateway_processes_and_an_external_sandbox(tmp_path: Path, database_url: str) -> None:
    assert REDIS_URL, "MINIGATE_TEST_REDIS_URL must point at a Redis (scripts/test.sh starts one)"
    sandbox_port = free_port()
    sandbox_url = f"http://127.0.0.1:{sandbox_port}"
    env = {"MINIGATE_DATA_DIR": str(tmp_path / "data"), "MINIGATE_DATABASE_URL": database_url,
           "MINIGATE_SANDBOX_URL": sandbox_url, "MINIGATE_SANDBOX_DIR": str(tmp_path / "sandbox"),
           "MINIGATE_REDIS_URL": REDIS_URL, "MINIGATE_WORKER_POLL_SECONDS": "0.05", "MINIGATE_LOG_LEVEL": "WARNING"}
    import os

    base_env = {**os.environ, **env}
    procs: list[subprocess.Popen[bytes]] = []
    logs = [tmp_path / "sandbox.log", tmp_path / "gw1.log", tmp_path / "gw2.log"]
    try:
        procs.append(await asyncio.to_thread(
            spawn, cli("sandbox", "serve", "--port", str(sandbox_port), "--state-dir", str(tmp_path / "sandbox")),
            base_env | {"MINIGATE_SANDBOX_TIME_SCALE": "0.001"}, logs[0]))
        await _ready(sandbox_url, logs[0])
        ports = [free_port(), free_port()]
        for port, log in zip(ports, logs[1:], strict=True):
            procs.append(await asyncio.to_thread(spawn, cli("serve"), base_env | {
                "MINIGATE_PORT": str(port), "MINIGATE_PUBLIC_URL": f"http://127.0.0.1:{port}"}, log))
            await _ready(f"http://127.0.0.1:{port}", log)
        printed = "".join([await asyncio.to_thread(log.read_text) for log in logs[1:]])
        key = re.search(r"test key: (mg_test_\S+)", printed)
        assert key, printed
        auth = {"Authorization": f"Bearer {key.group(1)}"}
        phone = "13700137000"
        one, two = (httpx.AsyncClient(base_url=f"http://127.0.0.1:{p}", headers=auth, timeout=10) for p in ports)
        async with one, two, httpx.AsyncClient(base_url=sandbox_url, timeout=10) as sandbox:
            r = await one.post("/v1/verification_codes", json={"phone": phone, "purpose": "login"})
            assert r.status_code == 200, r.text
            message_id = r.json()["message"]["id"]
            inbox = (await sandbox.get("/_sandbox/messages", params={"phone": phone})).json()["messages"]
            code = re.search(r"验证码为(\d{6})", inbox[0]["text"]).group(1)  # type: ignore[union-attr]
            # the second process shares the limits through Redis
            again = await two.post("/v1/verification_codes", json={"phone": phone, "purpose": "login"})
            assert again.status_code == 429 and again.json()["error"]["limit"] == "phone_per_minute"
            checked = await two.post("/v1/verification_codes/check",
                                     json={"phone": phone, "purpose": "login", "code": code})
            assert checked.json()["verified"] is True
            deadline = time.monotonic() + 15       # the receipt crosses real HTTP into a gateway process
            while time.monotonic() < deadline:
                status = (await two.get(f"/v1/sms/messages/{message_id}")).json()["status"]
                if status == "delivered":
                    break
                await asyncio.sleep(0.1)
            assert status == "delivered"
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            await asyncio.to_thread(proc.wait, timeout=20)


def test_cli_sms_send(tmp_path: Path) -> None:
    import os

    env = {**os.environ, "MINIGATE_DATA_DIR": str(tmp_path / "d")}
    made = subprocess.run(cli("apps", "create", "CLI shop"), env=env, capture_output=True, text=True, timeout=60,
                          check=True)
    app_id = json.loads(made.stdout)["id"]
    sent = subprocess.run(cli("sms", "send", "13800138000", "order_paid", "--app", app_id, "-p", "order=A1",
                              "-p", "amount=9.90"), env=env, capture_output=True, text=True, timeout=60)
    assert sent.returncode == 0, sent.stderr
    view = json.loads(sent.stdout)               # stdout is the message alone; logs go to stderr
    assert view["status"] == "sent" and view["phone"] == "+86138****8000" and view["source"] == "cli"
    refused = subprocess.run(cli("sms", "send", "13800138000", "order_paid", "--app", app_id, "-p", "order=A1"),
                             env=env, capture_output=True, text=True, timeout=60)
    assert refused.returncode == 2 and "invalid_template_params" in refused.stderr
    shown = subprocess.run(cli("sms", "show", view["id"], "--app", app_id), env=env, capture_output=True,
                           text=True, timeout=60)
    assert shown.returncode == 0 and json.loads(shown.stdout)["id"] == view["id"]

"""``minigate serve --workers N``: N gateway processes on one port, one database, one external sandbox.

What must hold: the processes share the work (orders created through one are read through any), /metrics adds
up every process's numbers (prometheus_client's multiprocess mode), the processes do not outlive a parent
killed with SIGKILL, and the built-in sandbox — whose simulated
orders live in one process's memory — is refused with more than one process.
"""

from __future__ import annotations

import asyncio
import re
import subprocess
import time
from pathlib import Path

import httpx

from tests.e2e.harness import Processes, base_env, cli, free_port

ORDERS = 24


def _requests_counted(metrics: str, method: str, route: str, status: str) -> float:
    labels = (f'method="{method}"', f'route="{route}"', f'status="{status}"')
    return sum(float(line.rsplit(" ", 1)[1]) for line in metrics.splitlines()
               if line.startswith("minigate_http_requests_total{") and all(label in line for label in labels))


async def test_two_processes_share_the_port_the_work_and_the_metrics(procs: Processes, database_url: str,
                                                                      tmp_path: Path) -> None:
    await procs.start_sandbox()
    gw = procs.gateway("gw", database_url=database_url)
    metrics_dir = tmp_path / "metrics"
    metrics_dir.mkdir()
    gw.env |= {"MINIGATE_WORKERS": "2", "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)}
    await procs.start_gateway(gw)
    headers = {"Authorization": f"Bearer {procs.test_key(gw)}"}

    async with httpx.AsyncClient(base_url=gw.url, headers=headers, timeout=30) as http:
        async def create(i: int) -> str:
            r = await http.post("/v1/orders", headers={"Idempotency-Key": f"w-{i}"}, json={
                "channel": "wechat_mini", "amount": 100 + i, "description": "Latte",
                "merchant_order_no": f"W{i}", "payer": {"openid": "oWorkers"}})
            assert r.status_code == 200, r.text
            return str(r.json()["id"])

        ids = await asyncio.gather(*(create(i) for i in range(ORDERS)))
        assert len(set(ids)) == ORDERS
        for i, order_id in enumerate(ids):       # new connections each time: reads land on either process
            async with httpx.AsyncClient(base_url=gw.url, headers=headers, timeout=30) as fresh:
                r = await fresh.get(f"/v1/orders/{order_id}")
            assert r.status_code == 200 and r.json()["amount"] == 100 + i
        metrics = (await http.get("/metrics")).text

    # every process writes its own files; the answer adds them up, whichever process served /metrics
    pids = {m.group(1) for p in metrics_dir.iterdir() if (m := re.search(r"_(\d+)\.db$", p.name))}
    assert len(pids) >= 2, sorted(p.name for p in metrics_dir.iterdir())
    assert _requests_counted(metrics, "POST", "/v1/orders", "200") == ORDERS
    assert _requests_counted(metrics, "GET", "/v1/orders/{order_id}", "200") == ORDERS

    # a parent killed outright cannot stop its children: they notice and shut down on their own
    assert gw.proc is not None
    children = {int(pid) for pid in pids if int(pid) != gw.proc.pid}
    assert children and all(_alive(pid) for pid in children)
    await procs.kill9(gw)
    assert await asyncio.to_thread(_all_gone, children, 15), "worker processes outlived their parent"


def _all_gone(pids: set[int], within: float) -> bool:
    deadline = time.monotonic() + within
    while any(_alive(pid) for pid in pids):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.2)
    return True


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def test_built_in_sandbox_refuses_more_than_one_process(tmp_path: Path) -> None:
    env = base_env() | {"MINIGATE_DATA_DIR": str(tmp_path / "data"), "MINIGATE_PORT": str(free_port())}
    done = subprocess.run(cli("serve", "--workers", "2"), env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "--workers above 1 needs an external sandbox" in done.stderr
    assert not (tmp_path / "data").exists() or not any((tmp_path / "data").glob("*.db"))   # nothing was set up

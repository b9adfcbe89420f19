"""Three gateway processes, one PostgreSQL, one sandbox, every notification delivered to all three at once
(A-16; F2, F3; invariants 1–7).

The gateways' public address is a fan-out proxy: each provider callback is forwarded to all three gateways
concurrently, and the sandbox also re-sends every notification once (``{"notify": "duplicate"}``), so each
provider event reaches the gateways about six times, mostly at the same moment. Clients spread their orders
over the three gateways (and refund through another one than they created on); every gateway runs its worker,
so webhook deliveries are claimed with ``FOR UPDATE SKIP LOCKED`` by three competing workers.
"""

from __future__ import annotations

import asyncio
import os
import random
import re
import time
from collections import Counter
from collections.abc import Iterator

import httpx
import pytest

from tests.e2e.harness import (
    FanOutProxy,
    Processes,
    Receiver,
    Stats,
    ThreadedServer,
    check_everything,
    free_port,
    log_errors,
    make_plans,
    print_report,
    run_load,
    settle,
)

SEED = int(os.environ.get("MINIGATE_SCALE_SEED", "20261127"))
ORDERS = 150
CLIENTS = 9
GATEWAYS = 3


@pytest.fixture
def ports() -> list[int]:
    return [free_port() for _ in range(GATEWAYS)]


@pytest.fixture
def proxy(ports: list[int]) -> Iterator[tuple[FanOutProxy, ThreadedServer]]:
    fan = FanOutProxy([f"http://127.0.0.1:{port}" for port in ports])
    server = ThreadedServer(fan.app)
    server.start()
    yield fan, server
    server.stop()


def _webhook_attempts(metrics: str) -> float | None:
    found = re.findall(r'^minigate_webhook_attempts_total\{outcome="ok"\} (\S+)$', metrics, re.MULTILINE)
    return float(found[0]) if found else None


@pytest.mark.slow
@pytest.mark.parametrize("database_url", [pytest.param("postgres", marks=pytest.mark.postgres)], indirect=True)
async def test_three_gateways_one_database_duplicate_notifications_everywhere(
        procs: Processes, receiver: tuple[Receiver, ThreadedServer], proxy: tuple[FanOutProxy, ThreadedServer],
        ports: list[int], database_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    started = time.monotonic()
    rec, rec_server = receiver
    fan, fan_server = proxy
    sandbox = await procs.start_sandbox()
    # a longer webhook timeout (lease 15 s): nothing crashes here, so a lease must never run out under load and
    # let a second worker deliver a claim the first is still delivering
    gateways = [procs.gateway(f"gateway{i}", database_url=database_url, public_url=fan_server.url, port=port,
                              webhook_timeout=5) for i, port in enumerate(ports)]
    await procs.start_gateway(gateways[0])          # the first start migrates and makes the app (and its keys)
    key = procs.test_key(gateways[0])
    await asyncio.gather(*(procs.start_gateway(gw) for gw in gateways[1:]))
    bases = [gw.url for gw in gateways]
    async with httpx.AsyncClient(timeout=10) as http:
        r = await http.post(f"{bases[1]}/v1/webhook_endpoints", headers={"Authorization": f"Bearer {key}"},
                            json={"url": f"{rec_server.url}/hooks", "enabled_events": ["*"]})
        assert r.status_code == 200, r.text
        rec.secrets.append(r.json()["secret"])
        r = await http.post(f"{sandbox}/wechatpay/_sandbox/faults", json={"notify": "duplicate", "count": 100_000})
        assert r.status_code == 200, r.text

    stats = Stats()
    prefix = f"S{SEED % 100000}"
    plans = make_plans(random.Random(SEED), ORDERS, prefix=prefix, gateways=GATEWAYS)
    outcomes = await run_load(bases=bases, key=key, sandbox=sandbox, plans=plans, clients=CLIENTS, stats=stats,
                              seed=SEED, prefix=prefix, budget=120)
    load_seconds = time.monotonic() - started
    settled = await settle(database_url, sandbox, rec, within=45)
    for gw in gateways:
        assert gw.proc is not None and gw.proc.poll() is None, f"{gw.name} died"

    checked = await check_everything(database_url=database_url, sandbox=sandbox, sandbox_dir=procs.sandbox_dir,
                                     credentials=procs.credentials,
                                     bases=bases, key=key, outcomes=outcomes, receiver=rec, scale_out=True)
    violations = list(checked.violations)
    if not settled.ok:
        violations.insert(0, f"did not settle: {settled.why}")
        checked.report["_details"] = [*settled.diagnosis.splitlines(), *checked.report["_details"]]
    accepted = checked.report["_accepted"]
    with fan.lock:
        records = list(fan.records)
        from_sandbox = sum(fan.received.values())
    per_gateway = Counter(index for _, index, _, _ in records)
    answers = Counter(status if status is not None else error for _, _, status, error in records)
    acked = sum(1 for _, _, status, _ in records if status is not None and 200 <= status < 300)
    dropped = acked - len(accepted)
    # every forward (duplicates included) is answered 2xx: a duplicate is acknowledged, never an error
    if acked != len(records):
        violations.append(f"notification forwards not acknowledged: {dict(answers)}")
    if dropped < len(accepted):
        violations.append(f"only {dropped} duplicates dropped for {len(accepted)} events: the fan-out did not bite")
    events_with_all = sum(1 for e in {r[0] for r in records}
                          if len({i for ev, i, _, _ in records if ev == e}) == GATEWAYS)
    async with httpx.AsyncClient(timeout=10) as http:
        worker_ok = [_webhook_attempts((await http.get(f"{base}/metrics")).text) for base in bases]
    errors_logged = {gw.name: await asyncio.to_thread(log_errors, procs.log_path(gw.name)) for gw in gateways}
    extra = {
        "seed": SEED,
        "database": "postgresql, one database for 3 gateways",
        "clients / orders planned": f"{CLIENTS} / {ORDERS}",
        "client requests (retried)": f"{stats.requests} ({stats.retried_requests}); connection errors "
                                     f"{stats.transport_errors}, key in use {stats.key_in_use}, "
                                     f"5xx {dict(stats.server_errors)}",
        "client latency": stats.latencies(),
        "notifications from the sandbox (to the proxy)": from_sandbox,
        "notifications received by gateways 0/1/2": " / ".join(str(per_gateway[i]) for i in range(GATEWAYS))
                                                    + f" (events reaching all 3: {events_with_all})",
        "gateway answers": dict(answers),
        "duplicates dropped": dropped,
        "webhook deliveries made by workers 0/1/2": " / ".join("n/a" if v is None else f"{v:.0f}"
                                                               for v in worker_ok),
        "max concurrent deliveries of one event": max(rec.max_overlap.values(), default=0),
        "gateway log errors": errors_logged,
        "timings (load / settle / total, s)": f"{load_seconds:.1f} / {settled.seconds:.1f} / "
                                              f"{time.monotonic() - started:.1f}",
    }
    text = print_report("scale-out: 3 gateways, 1 PostgreSQL, fan-out + duplicate notifications",
                        checked.report, violations, checked.checks + 3, extra)
    with capsys.disabled():
        print("\n" + text)
    assert not violations, text

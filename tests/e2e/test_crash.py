"""kill -9 the gateway under load, restart it on the same port and database, heal, reconcile (A-16; F1, F2,
F7, F14; invariants 1–7).

One external sandbox, one gateway process, 8 clients driving ~150 orders (create with an Idempotency-Key, pay
through the sandbox, close some, refund some partly or fully). At seeded moments the gateway is SIGKILLed and
restarted; clients retry their in-flight requests with the same key, the sandbox keeps retrying its
notifications on WeChat's (scaled) schedule and sends some of them twice. Then the load stops, everything
settles, and local state is reconciled against the provider's (every order queried, plus the trade bill).
"""

from __future__ import annotations

import asyncio
import os
import random
import time

import httpx
import pytest

from tests.e2e.harness import (
    GatewayProc,
    Processes,
    Receiver,
    Stats,
    ThreadedServer,
    check_everything,
    duplicates_from_sandbox_log,
    log_errors,
    make_plans,
    print_report,
    run_load,
    settle,
)

SEED = int(os.environ.get("MINIGATE_CRASH_SEED", "20261126"))
ORDERS = 150
CLIENTS = 8
KILLS = int(os.environ.get("MINIGATE_CRASH_KILLS", "5"))


async def _chaos(procs: Processes, gw: GatewayProc, rng: random.Random, stats: Stats,
                 load: asyncio.Task[object]) -> None:
    """kill -9 at seeded points of the load's progress (plus a seeded jitter), restart on the same port."""
    thresholds = sorted(rng.sample(range(8, ORDERS - 20), KILLS))
    for threshold in thresholds:
        while True:     # wait for the load to reach the threshold
            if stats.done >= threshold or load.done():
                break
            await asyncio.sleep(0.02)
        if load.done():
            return
        await asyncio.sleep(rng.uniform(0.0, 0.3))
        await procs.kill9(gw)
        down = time.monotonic()
        stats.kills += 1
        stats.kill_times.append(stats.done)
        await asyncio.sleep(rng.uniform(0.05, 0.6))
        await procs.start_gateway(gw)
        stats.downtime += time.monotonic() - down


@pytest.mark.slow
@pytest.mark.parametrize("database_url", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)],
                         indirect=True)
async def test_kill_9_under_load_loses_and_doubles_nothing(
        procs: Processes, receiver: tuple[Receiver, ThreadedServer], database_url: str,
        capsys: pytest.CaptureFixture[str]) -> None:
    started = time.monotonic()
    rec, rec_server = receiver
    sandbox = await procs.start_sandbox()
    gw = procs.gateway("gateway", database_url=database_url)
    await procs.start_gateway(gw)
    key = procs.test_key(gw)
    async with httpx.AsyncClient(timeout=10) as http:
        r = await http.post(f"{gw.url}/v1/webhook_endpoints", headers={"Authorization": f"Bearer {key}"},
                            json={"url": f"{rec_server.url}/hooks", "enabled_events": ["*"]})
        assert r.status_code == 200, r.text
        rec.secrets.append(r.json()["secret"])
        # a third of the provider's notifications also arrive a second time
        r = await http.post(f"{sandbox}/wechatpay/_sandbox/faults", json={"notify": "duplicate", "count": 80})
        assert r.status_code == 200, r.text

    stats = Stats()
    prefix = f"K{SEED % 100000}"
    plans = make_plans(random.Random(SEED), ORDERS, prefix=prefix)
    load = asyncio.create_task(run_load(bases=[gw.url], key=key, sandbox=sandbox, plans=plans, clients=CLIENTS,
                                        stats=stats, seed=SEED, prefix=prefix, budget=120))
    chaos = asyncio.create_task(_chaos(procs, gw, random.Random(SEED + 1), stats, load))
    # a gateway that does not come back must stop the load at once, not after its whole time budget
    chaos.add_done_callback(lambda done: load.cancel() if not done.cancelled() and done.exception() else None)
    try:
        outcomes = await load
    finally:
        await chaos
    load_seconds = time.monotonic() - started
    assert stats.kills == KILLS, f"only {stats.kills} kills happened under load"
    assert gw.proc is not None and gw.proc.poll() is None

    settled = await settle(database_url, sandbox, rec, within=45)
    checked = await check_everything(database_url=database_url, sandbox=sandbox, sandbox_dir=procs.sandbox_dir,
                                     credentials=procs.credentials,
                                     bases=[gw.url], key=key, outcomes=outcomes, receiver=rec)
    violations = list(checked.violations)
    if not settled.ok:
        violations.insert(0, f"did not settle: {settled.why}")
        checked.report["_details"] = [*settled.diagnosis.splitlines(), *checked.report["_details"]]
    received, acked, dropped = duplicates_from_sandbox_log(checked.report["_notes"], checked.report["_accepted"])
    errors_logged = await asyncio.to_thread(log_errors, procs.log_path(gw.name))
    extra = {
        "seed": SEED,
        "database": "postgresql" if "postgresql" in database_url else "sqlite",
        "clients / orders planned": f"{CLIENTS} / {ORDERS}",
        "kill -9 (after n orders done)": f"{stats.kills} {stats.kill_times}, gateway down {stats.downtime:.1f} s",
        "client requests (retried after a fault)": f"{stats.requests} ({stats.retried_requests}); "
                                                   f"connection errors {stats.transport_errors}, key in use "
                                                   f"{stats.key_in_use}, 5xx {dict(stats.server_errors)}",
        "client latency": stats.latencies(),
        "notifications received by the gateway": f"{received} (acknowledged {acked})",
        "duplicates dropped": dropped,
        "gateway log errors": errors_logged,
        "timings (load / settle / total, s)": f"{load_seconds:.1f} / {settled.seconds:.1f} / "
                                              f"{time.monotonic() - started:.1f}",
    }
    text = print_report("crash test: kill -9 under load", checked.report, violations, checked.checks + 1, extra)
    with capsys.disabled():
        print("\n" + text)
    assert not violations, text
    assert dropped > 0, "the duplicate notifications never reached the gateway"

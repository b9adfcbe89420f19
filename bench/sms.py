"""Verification codes: scenario (d) of ``python -m bench all`` and ``python -m bench sms [--codes N] [--db ...]``.

Against real processes on loopback — ``minigate serve`` (SQLite or PostgreSQL) with the sandbox as its own
process (``MINIGATE_SANDBOX_URL``) — it measures, per database:

1. **send**: ``POST /v1/verification_codes`` for N distinct numbers (limits raised so that none refuses):
   the decision (limits + consent-free checks + code row), the SMS through the Alibaba Cloud simulator
   (signed ACS3 request, verified by the simulator) and the message's bookkeeping — codes sent per second
   and latency p50/p99;
2. **check**: each code read from the sandbox phone, then ``POST /v1/verification_codes/check`` — codes
   checked per second, latency p50/p99;
3. **refusal**: the same numbers again within the minute — every request refused by the per-phone window
   before any provider call: the pure decision latency p50/p99.

CPU time of the system's processes (server and children, ``/proc``) is read around the phases: send + check
(including the delivery receipts the simulator pushes back meanwhile) divided by N is the CPU per code.

In ``python -m bench all`` the same phases run against the baseline too (``bench/baseline/sms_app.py``: Flask +
the official ``alibabacloud_dysmsapi20170525`` SDK + SQLAlchemy, gunicorn), on the same sandbox, and the
irreducible cost per code (one durable commit + one ACS3 signature, :mod:`bench.limit`) is measured in the same
run. The standalone ``python -m bench sms`` measures minigate only, with its limits in memory and/or Redis.
Results go to ``bench/results/sms-<stamp>.json`` (standalone) and the console.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import runpy
import secrets
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from bench import harness, report
from bench.common import PY, ROOT, Proc, cpu_seconds, free_port, latency_summary, machine_info, start

CODE = re.compile(r"验证码为(\d{6})")
#: high enough that the run measures work, not refusals (the refusal phase uses the per-phone window)
LIMITS = {"ip_per_hour": 10**6, "ip_per_day": 10**6, "device_per_hour": 10**6, "device_per_day": 10**6,
          "prefix_per_hour": 10**6, "app_per_day": 10**7, "checks_per_phone_day": 100}
SIZES = {"quick": dict(codes=200, concurrency=16), "full": dict(codes=500, concurrency=16)}


async def _timed(client: httpx.AsyncClient, items: list[Any], concurrency: int, call: Any
                 ) -> tuple[list[float], list[Any], float]:
    queue: asyncio.Queue[Any] = asyncio.Queue()
    for item in items:
        queue.put_nowait(item)
    latencies: list[float] = []
    answers: list[Any] = []

    async def worker() -> None:
        while not queue.empty():
            item = queue.get_nowait()
            started = time.perf_counter()
            try:
                answer = await call(client, item)
            except httpx.HTTPError as exc:
                answer = type(exc).__name__
            latencies.append(time.perf_counter() - started)
            answers.append(answer)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return latencies, answers, time.perf_counter() - started


def _summary(name: str, count: int, latencies: list[float], elapsed: float, errors: int,
             cpu_s: float) -> dict[str, Any]:
    return {"requests": count, "elapsed_s": round(elapsed, 3), "per_second": round(count / elapsed, 1),
            "latency": latency_summary(sorted(latencies)), "errors": errors, "phase": name,
            "system_cpu_s": round(cpu_s, 3), "system_cpu_ms_per_request": round(cpu_s * 1000 / count, 3)}


async def run_codes(target: harness.Target, sandbox: harness.Sandbox, *, codes: int, concurrency: int,
                    tag: int, limits_store: Redis | None = None) -> dict[str, Any]:
    """The three phases against ``target`` (minigate: its SMS settings are set first; baseline: same paths).

    ``limits_store``: the Redis server of minigate's limits; its CPU counts as the system's."""
    headers = target.headers
    store_cpu: Callable[[], float] = limits_store.cpu if limits_store is not None else (lambda: 0.0)

    def system_cpu() -> float:
        return target.proc.cpu() + store_cpu()

    phones = [f"13{tag % 10}{i // 10000 % 10}{i:07d}"[:11] for i in range(codes)]
    load0 = os.getloadavg()[0]
    async with httpx.AsyncClient(base_url=target.url, headers=headers, timeout=60,
                                 limits=httpx.Limits(max_connections=concurrency * 2)) as client:
        if target.system == "minigate":
            r = await client.put("/v1/sms/settings",
                                 json={"providers": [{"provider": "aliyun-sms"}], "limits": LIMITS})
            r.raise_for_status()

        async def send(c: httpx.AsyncClient, phone: str) -> int:
            return (await c.post("/v1/verification_codes", json={"phone": phone, "purpose": "login"})).status_code

        sandbox_cpu0 = sandbox.proc.cpu()
        cpu0 = system_cpu()
        lat, answers, elapsed = await _timed(client, phones, concurrency, send)
        cpu1 = system_cpu()
        sent = _summary("send", codes, lat, elapsed, sum(1 for a in answers if a != 200), cpu1 - cpu0)

        async with httpx.AsyncClient(base_url=sandbox.url, timeout=60) as phone_client:
            found: dict[str, str] = {}
            for phone in phones:
                inbox = (await phone_client.get("/aliyun-sms/_sandbox/messages", params={"phone": phone})).json()
                match = CODE.search(inbox["messages"][0]["text"]) if inbox.get("messages") else None
                if match:
                    found[phone] = match.group(1)

        async def check(c: httpx.AsyncClient, phone: str) -> bool:
            r = await c.post("/v1/verification_codes/check",
                             json={"phone": phone, "purpose": "login", "code": found.get(phone, "000000")})
            return r.status_code == 200 and r.json().get("verified") is True

        cpu2 = system_cpu()
        lat, answers, elapsed = await _timed(client, phones, concurrency, check)
        cpu3 = system_cpu()
        checked = _summary("check", codes, lat, elapsed, sum(1 for a in answers if a is not True), cpu3 - cpu2)
        sandbox_cpu = sandbox.proc.cpu() - sandbox_cpu0

        lat, answers, elapsed = await _timed(client, phones, concurrency, send)
        cpu4 = system_cpu()
        refused = _summary("refusal", codes, lat, elapsed, sum(1 for a in answers if a != 429), cpu4 - cpu3)
    # send + check + whatever the system did in between (minigate: the receipts the simulator pushes back)
    per_code = (cpu3 - cpu0) * 1000 / codes
    return {"codes": codes, "concurrency": concurrency, "send": sent, "check": checked, "refusal": refused,
            "codes_read_from_phone": len(found), "system_cpu_ms_per_code": round(per_code, 3),
            "sandbox_cpu_ms_per_code": round(sandbox_cpu * 1000 / codes, 3),
            "errors": sent["errors"] + checked["errors"] + refused["errors"] + (codes - len(found)),
            "loadavg_1m": [round(load0, 2), round(os.getloadavg()[0], 2)]}


# --------------------------------------------------------------------------- the baseline apps

def gunicorn_settings() -> dict[str, Any]:
    """The settings of bench/baseline/gunicorn_conf.py (read, not imported: its hook belongs to app.py)."""
    return runpy.run_path(str(ROOT / "bench" / "baseline" / "gunicorn_conf.py"))


def start_gunicorn_app(name: str, app: str, *, run_dir: Path, env: dict[str, str]) -> Proc:
    """``app`` (a ``module:factory()`` spec) under gunicorn with the settings of bench/baseline/gunicorn_conf.py.

    That file's ``on_starting`` hook belongs to the checkout baseline; these apps create their tables before
    gunicorn starts instead, so the settings are passed as options (read from the same file)."""
    conf = gunicorn_settings()
    port = free_port()
    cmd = [PY, "-m", "gunicorn", "--workers", str(conf["workers"]), "--worker-class", conf["worker_class"],
           "--timeout", str(conf["timeout"]), "--keep-alive", str(conf["keepalive"]), "--log-level", conf["loglevel"],
           "-b", f"127.0.0.1:{port}", app]
    return start(name, cmd, env=env, log_dir=run_dir / "logs", base_url=f"http://127.0.0.1:{port}",
                 ready_path="/healthz", timeout=60)


def baseline_database(run_dir: Path, db: str, pg: harness.Postgres | None, name: str) -> str:
    """A fresh SQLAlchemy URL for one baseline run."""
    if db == "postgres":
        assert pg is not None
        return pg.create_database(f"bench_{name}_{uuid.uuid4().hex[:8]}").replace(
            "postgresql://", "postgresql+psycopg2://", 1)
    data_dir = run_dir / f"{name}-{db}"
    data_dir.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{data_dir / f'{name}.db'}"


def start_baseline(run_dir: Path, db: str, sandbox: harness.Sandbox, pg: harness.Postgres | None) -> harness.Target:
    from bench.baseline.sms_app import init_db
    from minigate.simulators import credentials_for

    url = baseline_database(run_dir, db, pg, "smsbaseline")
    init_db(url)
    creds_file = run_dir / "aliyun-sms-credentials.json"
    creds_file.write_text(json.dumps(credentials_for(sandbox.state_dir, "aliyun-sms"), ensure_ascii=False))
    env = {"BASELINE_DATABASE_URL": url, "BASELINE_SMS_CREDENTIALS": str(creds_file),
           "BASELINE_SMS_ENDPOINT": sandbox.url.removeprefix("http://"), "BASELINE_SMS_PATH": "/aliyun-sms",
           "BASELINE_CODE_SECRET": secrets.token_hex(32)}
    proc = start_gunicorn_app(f"sms-baseline-{db}", "bench.baseline.sms_app:create_app()", run_dir=run_dir, env=env)
    workers = gunicorn_settings()["workers"]
    return harness.Target("baseline", db, proc, "/v1/verification_codes", {}, "", False, url,
                          {"server": f"gunicorn {workers} sync workers ((2 x cores) + 1)",
                           "stack": "Flask + alibabacloud_dysmsapi20170525 (ACS3) + SQLAlchemy ORM (sync)"})


def scenario(system: str, db: str, *, run_dir: Path, sandbox: harness.Sandbox, receiver: Proc,
             pg: harness.Postgres | None, codes: int, concurrency: int, tag: int, log_level: str,
             redis: Redis | None = None, run_loop: Any = asyncio.run) -> dict[str, Any]:
    """Scenario (d) for one system on one database, on a fresh server and database.

    minigate runs with the harness's number of worker processes for ``db``; with more than one its limits must live in
    Redis (``redis``), or each process would keep its own per-phone window."""
    store = None
    if system == "minigate":
        extra = {"MINIGATE_DATA_DIR": str(run_dir / f"minigate-{db}-sms")}
        workers = harness.gateway_workers(db)
        if workers > 1:
            if redis is None:
                raise ValueError("minigate with several processes keeps its SMS limits in Redis: pass redis")
            extra["MINIGATE_REDIS_URL"] = redis.url
            store = redis
        target = harness.start_minigate(run_dir, db, sandbox, receiver, pg, log_level=log_level, extra_env=extra,
                                        workers=workers)
        target.details["limits_store"] = "redis" if store else "memory"
    else:
        target = start_baseline(run_dir, db, sandbox, pg)
    report.console.print(f"[dim]{db}/{system} (d) SMS codes: {target.details['server']} on {target.url}[/dim]")
    try:
        out = run_loop(run_codes(target, sandbox, codes=codes, concurrency=concurrency, tag=tag,
                                 limits_store=store))
    finally:
        target.proc.stop()
    out["server"] = target.details
    if store is not None:
        out["limits_store_cpu_counted"] = store.pid is not None
    report.console.print(f"  sms: send {out['send']['per_second']}/s (p99 {out['send']['latency']['p99_ms']} ms), "
                         f"check {out['check']['per_second']}/s, {out['system_cpu_ms_per_code']} CPU ms/code, "
                         f"errors {out['errors']}")
    return out


# --------------------------------------------------------------------------- standalone

@dataclass
class Redis:
    """The limits store shared by the gateway's processes: ``MINIGATE_TEST_REDIS_URL``, else a throwaway server."""

    url: str
    owned_dir: str | None

    @property
    def pid(self) -> int | None:
        if not self.owned_dir:
            return None
        with contextlib.suppress(OSError, ValueError):
            return int(Path(self.owned_dir, "redis.pid").read_text().strip())
        return None

    def cpu(self) -> float:
        """CPU seconds of the server (0 when it is not ours: its process is unknown)."""
        pid = self.pid
        return cpu_seconds(pid) if pid else 0.0

    def stop(self) -> None:
        if self.owned_dir:
            subprocess.run([str(ROOT / "scripts" / "redis-throwaway.sh"), "stop", self.owned_dir], check=False)
            self.owned_dir = None


def start_redis() -> Redis:
    url = os.environ.get("MINIGATE_TEST_REDIS_URL")
    if url:
        return Redis(url, None)
    out = subprocess.run([str(ROOT / "scripts" / "redis-throwaway.sh"), "start"], cwd=ROOT, capture_output=True,
                         text=True, check=True).stdout
    found = dict(re.findall(r"export (\w+)=(\S+)", out))
    return Redis(found["MINIGATE_TEST_REDIS_URL"], found["MINIGATE_REDIS_DIR"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench sms", description=__doc__)
    parser.add_argument("--codes", type=int, default=500)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--db", choices=["sqlite", "postgres", "both"], default="both")
    parser.add_argument("--limits", choices=["memory", "redis", "both"], default="both",
                        help="where the gateway keeps its limits (redis: a throwaway server, or "
                             "MINIGATE_TEST_REDIS_URL)")
    parser.add_argument("--workers", type=int, help="gateway processes with limits in Redis (default: the "
                        "harness's, one per core); with limits in memory the gateway runs one process")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = parser.parse_args(argv)
    dbs = ["sqlite", "postgres"] if args.db == "both" else [args.db]
    run_dir = Path(tempfile.mkdtemp(prefix="minigate-bench-sms-"))
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    results: dict[str, Any] = {"command": "python -m bench sms " + " ".join(argv or []),
                               "started": datetime.now(UTC).isoformat(timespec="seconds"),
                               "machine": machine_info(),
                               "settings": {"codes": args.codes, "concurrency": args.concurrency,
                                            "provider": "aliyun-sms simulator (separate process, ACS3 signed)",
                                            "limits": args.limits},
                               "runs": {}}
    pg = harness.start_postgres() if "postgres" in dbs else None
    stores = ["memory", "redis"] if args.limits == "both" else [args.limits]
    redis = start_redis() if "redis" in stores else None
    sandbox = harness.start_sandbox(run_dir)
    receiver = harness.start_receiver(run_dir)
    try:
        for db in dbs:
            for store in stores:
                extra = {"MINIGATE_DATA_DIR": str(run_dir / f"minigate-{db}-{store}")}
                # limits in memory are per process: only one process enforces them all
                workers = 1 if store == "memory" else (args.workers or harness.gateway_workers(db))
                if store == "redis" and redis:
                    extra["MINIGATE_REDIS_URL"] = redis.url
                target = harness.start_minigate(run_dir, db, sandbox, receiver, pg, log_level="WARNING",
                                                extra_env=extra, workers=workers)
                try:
                    run = asyncio.run(run_codes(target, sandbox, codes=args.codes, concurrency=args.concurrency,
                                                tag=len(results["runs"]),
                                                limits_store=redis if store == "redis" else None))
                finally:
                    target.proc.stop()
                name = f"{db}/{store}"
                run["server"] = target.details
                results["runs"][name] = run
                for phase in ("send", "check", "refusal"):
                    p = run[phase]
                    report.console.print(f"{name:16} {phase:8} {p['per_second']:8.1f}/s  p50 "
                                         f"{p['latency']['p50_ms']} ms  p99 {p['latency']['p99_ms']} ms  "
                                         f"CPU {p['system_cpu_ms_per_request']} ms/req  errors {p['errors']}")
    finally:
        if redis:
            redis.stop()
        receiver.stop()
        sandbox.proc.stop()
        if pg is not None:
            pg.stop()
        shutil.rmtree(run_dir, ignore_errors=True)
    results["finished"] = datetime.now(UTC).isoformat(timespec="seconds")
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"sms-{stamp}.json"
    path.write_text(json.dumps(results, indent=2, ensure_ascii=False))
    report.console.print(f"results: {path}")
    return 0

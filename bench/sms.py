"""``python -m bench sms [--codes N] [--concurrency C] [--db sqlite|postgres|both]``: verification codes.

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

Results go to ``bench/results/sms-<stamp>.json`` and the console.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from bench import harness, report
from bench.common import ROOT, latency_summary, machine_info

CODE = re.compile(r"验证码为(\d{6})")
#: high enough that the run measures work, not refusals (the refusal phase uses the per-phone window)
LIMITS = {"ip_per_hour": 10**6, "ip_per_day": 10**6, "device_per_hour": 10**6, "device_per_day": 10**6,
          "prefix_per_hour": 10**6, "app_per_day": 10**7, "checks_per_phone_day": 100}


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
            answer = await call(client, item)
            latencies.append(time.perf_counter() - started)
            answers.append(answer)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return latencies, answers, time.perf_counter() - started


def _summary(name: str, count: int, latencies: list[float], elapsed: float, errors: int) -> dict[str, Any]:
    return {"requests": count, "elapsed_s": round(elapsed, 3), "per_second": round(count / elapsed, 1),
            "latency": latency_summary(sorted(latencies)), "errors": errors, "phase": name}


async def run_codes(target: harness.Target, sandbox: harness.Sandbox, *, codes: int, concurrency: int,
                    tag: int) -> dict[str, Any]:
    headers = target.headers
    phones = [f"13{tag % 10}{i // 10000 % 10}{i:07d}"[:11] for i in range(codes)]
    async with httpx.AsyncClient(base_url=target.url, headers=headers, timeout=60,
                                 limits=httpx.Limits(max_connections=concurrency * 2)) as client:
        r = await client.put("/v1/sms/settings", json={"providers": [{"provider": "aliyun-sms"}], "limits": LIMITS})
        r.raise_for_status()

        async def send(c: httpx.AsyncClient, phone: str) -> int:
            return (await c.post("/v1/verification_codes", json={"phone": phone, "purpose": "login"})).status_code

        lat, answers, elapsed = await _timed(client, phones, concurrency, send)
        sent = _summary("send", codes, lat, elapsed, sum(1 for a in answers if a != 200))

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

        lat, answers, elapsed = await _timed(client, phones, concurrency, check)
        checked = _summary("check", codes, lat, elapsed, sum(1 for a in answers if not a))

        lat, answers, elapsed = await _timed(client, phones, concurrency, send)
        refused = _summary("refusal", codes, lat, elapsed, sum(1 for a in answers if a != 429))
    return {"send": sent, "check": checked, "refusal": refused, "codes_read_from_phone": len(found)}


def _redis(run_dir: Path) -> tuple[str, str | None]:
    """(url, directory to stop it with or None): MINIGATE_TEST_REDIS_URL, else a throwaway server."""
    url = os.environ.get("MINIGATE_TEST_REDIS_URL")
    if url:
        return url, None
    out = subprocess.run(["scripts/redis-throwaway.sh", "start"], cwd=ROOT, capture_output=True, text=True,
                         check=True).stdout
    found = dict(re.findall(r"export (\w+)=(\S+)", out))
    return found["MINIGATE_TEST_REDIS_URL"], found["MINIGATE_REDIS_DIR"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench sms", description=__doc__)
    parser.add_argument("--codes", type=int, default=500)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--db", choices=["sqlite", "postgres", "both"], default="both")
    parser.add_argument("--limits", choices=["memory", "redis", "both"], default="both",
                        help="where the gateway keeps its limits (redis: a throwaway server, or "
                             "MINIGATE_TEST_REDIS_URL)")
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
    redis = _redis(run_dir) if "redis" in stores else None
    sandbox = harness.start_sandbox(run_dir)
    receiver = harness.start_receiver(run_dir)
    try:
        for db in dbs:
            for store in stores:
                extra = {"MINIGATE_DATA_DIR": str(run_dir / f"minigate-{db}-{store}")}
                if store == "redis" and redis:
                    extra["MINIGATE_REDIS_URL"] = redis[0]
                target = harness.start_minigate(run_dir, db, sandbox, receiver, pg, "WARNING", extra)
                try:
                    run = asyncio.run(run_codes(target, sandbox, codes=args.codes, concurrency=args.concurrency,
                                                tag=len(results["runs"])))
                finally:
                    target.proc.stop()
                name = f"{db}/{store}"
                results["runs"][name] = run
                for phase in ("send", "check", "refusal"):
                    p = run[phase]
                    report.console.print(f"{name:16} {phase:8} {p['per_second']:8.1f}/s  p50 "
                                         f"{p['latency']['p50_ms']} ms  p99 {p['latency']['p99_ms']} ms  "
                                         f"errors {p['errors']}")
    finally:
        if redis and redis[1]:
            subprocess.run(["scripts/redis-throwaway.sh", "stop", redis[1]], cwd=ROOT, check=False)
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

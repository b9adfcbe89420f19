"""``python -m bench analytics-ingest [--events N] [--batch B ...] [--gateways G] [--concurrency C]``: durable ingest.

Real processes on loopback: G ``minigate serve`` processes sharing one data directory (SQLite ledger, one
analytics store), each a single uvicorn process. The load generator is ``wrk`` (Debian's package; C, one thread
per gateway, every event with its own id, built by a Lua script as the request goes out) when it is installed —
it costs the gateways little CPU — else this process (asyncio + httpx, gzip bodies built before the clock
starts), which competes with them for the same two cores. Per batch size it measures:

1. **acknowledged**: events per second answered 200 — each answer comes only after the events' journal segment
   was ``fsync``-ed (durable), and request latency p50/p99;
2. **queryable**: the time until every event is in DuckDB (the gateways' workers load sealed segments), read
   through ``GET /v1/analytics/top_events``, and the end-to-end rate (events / time from the first request until
   all are queryable).

The goal of issue 7 is 50,000 events/s on this 2-core machine; the ratio printed is measured/goal, in one run.
The generator shares the two cores with the gateways, so the numbers are a floor.

Scenario (e) of ``python -m bench all`` (:func:`scenario`) loads one ``minigate serve`` (with the harness's
worker processes, on SQLite or PostgreSQL) and then the baseline (``bench/baseline/analytics_app.py``: Flask +
SQLAlchemy inserting each batch into an ``events`` table, gunicorn) the same way, and adds the CPU time of the
system's processes per 1,000 events and the ratios to the baseline.
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import json
import os
import random
import re
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from bench import report
from bench.common import PY, ROOT, Proc, free_port, latency_summary, machine_info, running, start

GOAL_EVENTS_PER_SECOND = 50_000
NAMES = ("view_product", "add_to_cart", "checkout", "$pageview", "search", "share", "favorite", "coupon_view")


def _bodies(events: int, batch: int, sent_at: int) -> list[bytes]:
    rng = random.Random(7)
    bodies: list[bytes] = []
    made = 0
    while made < events:
        n = min(batch, events - made)
        evs = []
        for _ in range(n):
            name = rng.choice(NAMES)
            dev = f"dev-{rng.randrange(300_000):06d}"
            evs.append({"id": uuid.uuid4().hex, "type": "page_view" if name == "$pageview" else "event",
                        "name": name, "ts": sent_at - rng.randrange(60_000), "distinct_id": dev,
                        "user_id": f"u-{dev[4:]}" if rng.random() < 0.3 else None, "session_id": "s1",
                        "page": f"pages/p{rng.randrange(50)}/index" if name == "$pageview" else None,
                        "properties": {"sku": f"SKU{rng.randrange(5000)}", "price": rng.randrange(100, 99900),
                                       "channel": rng.choice(("feed", "search", "share"))}})
        bodies.append(gzip.compress(json.dumps({"sent_at": sent_at, "context": {"platform": "wechat"},
                                                "events": evs}).encode(), compresslevel=5))
        made += n
    return bodies


async def _send(urls: list[str], key: str, bodies: list[bytes], concurrency: int
                ) -> tuple[float, list[float], int, int]:
    """(seconds, latencies, events accepted, answers that were not 200)."""
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json", "Content-Encoding": "gzip"}
    latencies: list[float] = []
    accepted = errors = 0
    queue = list(enumerate(bodies))
    queue.reverse()
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(limits=limits, timeout=60) as client:
        async def worker(w: int) -> None:
            nonlocal accepted, errors
            while queue:
                i, body = queue.pop()
                t = time.perf_counter()
                try:
                    r = await client.post(f"{urls[i % len(urls)]}/v1/analytics/collect", content=body,
                                          headers=headers)
                except httpx.HTTPError:
                    errors += 1
                    continue
                latencies.append(time.perf_counter() - t)
                if r.status_code != 200:
                    errors += 1
                    continue
                accepted += r.json()["accepted"]
        t0 = time.perf_counter()
        await asyncio.gather(*(worker(w) for w in range(concurrency)))
        return time.perf_counter() - t0, latencies, accepted, errors


WRK_SCRIPT = r"""
local counter = 0
local batch = tonumber(os.getenv("MG_BATCH"))
local key = os.getenv("MG_KEY")
local names = {"view_product", "add_to_cart", "checkout", "search", "share", "favorite", "coupon_view"}
local tag = os.getenv("MG_TAG")
function request()
  counter = counter + 1
  local now = os.time() * 1000
  local parts = {}
  for i = 1, batch do
    local n = counter * batch + i
    parts[i] = string.format(
      '{"id":"%s-%010d","type":"event","name":"%s","ts":%d,"distinct_id":"dev-%06d","session_id":"s1",' ..
      '"properties":{"sku":"SKU%d","price":%d,"channel":"feed"}}',
      tag, n, names[(n % #names) + 1], now - (n % 60000), (n * 7919) % 300000, n % 5000, 100 + n % 99800)
  end
  local body = '{"sent_at":' .. now .. ',"context":{"platform":"wechat"},"events":[' .. table.concat(parts, ",") .. ']}'
  return wrk.format("POST", "/v1/analytics/collect",
                    {["Authorization"] = "Bearer " .. key, ["Content-Type"] = "application/json"}, body)
end
"""


def _wrk(urls: list[str], key: str, batch: int, seconds: int, concurrency: int, run_dir: Path) -> dict[str, Any]:
    """One wrk per gateway, in parallel; answers (seconds, requests, non-2xx, latency percentiles)."""
    import subprocess

    script = run_dir / "collect.lua"
    script.write_text(WRK_SCRIPT)
    per = max(1, concurrency // len(urls))
    env = os.environ | {"MG_BATCH": str(batch), "MG_KEY": key}
    # every wrk process numbers its events from 1: a tag of its own keeps the ids unique across processes and runs
    procs = [subprocess.Popen(["wrk", "-t1", f"-c{per}", f"-d{seconds}s", "--latency", "-s", str(script), url],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              env=env | {"MG_TAG": uuid.uuid4().hex[:12]}) for url in urls]
    outs = [p.communicate()[0] for p in procs]
    requests = sum(int(re.search(r"(\d+) requests in", o).group(1)) for o in outs)  # type: ignore[union-attr]
    bad = sum(int(m.group(1)) for o in outs for m in [re.search(r"Non-2xx or 3xx responses: (\d+)", o)] if m)
    def ms(label: str, out: str) -> float | None:
        m = re.search(rf"\s{label}\s+([\d.]+)(us|ms|s)\b", out)
        if not m:
            return None
        return round(float(m.group(1)) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[m.group(2)], 2)
    return {"requests": requests, "non_2xx": bad, "seconds": seconds,
            "latency": {"p50_ms": ms("50%", outs[0]), "p99_ms": ms("99%", outs[0])}, "raw": outs}


def _wait_visible(count: Callable[[], int], expected: int, within: float = 300) -> None:
    deadline = time.monotonic() + within
    while (seen := count()) < expected:
        if time.monotonic() > deadline:
            raise RuntimeError(f"only {seen} of {expected} acknowledged events queryable after {within:.0f} s")
        time.sleep(0.05)


def _visible(url: str, headers: dict[str, str]) -> int:
    r = httpx.get(f"{url}/v1/analytics/top_events", params={"limit": 200}, headers=headers, timeout=60)
    r.raise_for_status()
    return sum(row["events"] for row in r.json()["data"])


def measure_batch(urls: list[str], key: str, batch: int, *, seconds: int, events: int, concurrency: int,
                  use_wrk: bool, run_dir: Path, count: Callable[[], int], before: int,
                  cpu: Callable[[], float] | None = None) -> dict[str, Any]:
    """Load ``urls`` with batches of ``batch`` events, then wait until ``count()`` reaches ``before`` + accepted.

    ``cpu``: CPU seconds of the system under test, read before the load and once everything is queryable."""
    cpu0 = cpu() if cpu else None
    load0 = os.getloadavg()[0]
    if use_wrk:
        t_start = time.perf_counter()
        out = _wrk(urls, key, batch, seconds, concurrency, run_dir)
        requests, errors = out["requests"], out["non_2xx"]
        accepted = (requests - errors) * batch
        ack_seconds, latency = float(out["seconds"]), out["latency"]
    else:
        bodies = _bodies(events, batch, int(time.time() * 1000))
        report.console.print(f"[dim]batch {batch}: {len(bodies)} requests of ≤{batch} events (httpx)[/dim]")
        t_start = time.perf_counter()
        ack_seconds, latencies, accepted, errors = asyncio.run(_send(urls, key, bodies, concurrency))
        requests, latency = len(bodies), latency_summary(latencies)
    _wait_visible(count, before + accepted)
    queryable = time.perf_counter() - t_start
    rate = accepted / ack_seconds
    row: dict[str, Any] = {
        "batch": batch, "requests": requests, "accepted": accepted, "errors": errors,
        "ack_seconds": round(ack_seconds, 3), "acked_events_per_s": round(rate),
        "ratio_to_goal": round(rate / GOAL_EVENTS_PER_SECOND, 3), "latency": latency,
        "all_queryable_after_s": round(queryable, 3), "end_to_end_events_per_s": round(accepted / queryable),
        "loadavg_1m": [round(load0, 2), round(os.getloadavg()[0], 2)]}
    if cpu is not None and cpu0 is not None:
        used = cpu() - cpu0
        row["system_cpu_s"] = round(used, 3)
        row["system_cpu_ms_per_1000_events"] = round(used * 1e6 / accepted, 2) if accepted else None
    return row


def run(events: int, batches: list[int], gateways: int, concurrency: int, seconds: int = 10,
        generator: str = "auto") -> dict[str, Any]:
    use_wrk = generator == "wrk" or (generator == "auto" and shutil.which("wrk") is not None)
    run_dir = Path(tempfile.mkdtemp(prefix="bench-analytics-"))
    data_dir = run_dir / "data"
    procs = []
    results: dict[str, Any] = {"machine": machine_info(), "events": events, "gateways": gateways,
                               "concurrency": concurrency, "goal_events_per_s": GOAL_EVENTS_PER_SECOND,
                               "generator": "wrk" if use_wrk else "httpx", "runs": []}
    try:
        urls = []
        for g in range(gateways):
            port = free_port()
            env = {"MINIGATE_DATA_DIR": str(data_dir), "MINIGATE_PORT": str(port),
                   "MINIGATE_PUBLIC_URL": f"http://127.0.0.1:{port}", "MINIGATE_LOG_LEVEL": "WARNING",
                   "MINIGATE_API_REQUESTS_PER_SECOND_PER_KEY": "0", "MINIGATE_WORKERS": "1",
                   "MINIGATE_SANDBOX_DIR": str(run_dir / "sandbox")}
            procs.append(start(f"gateway{g}", [PY, "-m", "minigate.cli", "serve"], env=env,
                               log_dir=run_dir / "logs", base_url=f"http://127.0.0.1:{port}", ready_path="/readyz",
                               timeout=90))
            urls.append(f"http://127.0.0.1:{port}")
            if g == 0:
                text = ""
                deadline = time.monotonic() + 10
                while "test key:" not in text and time.monotonic() < deadline:
                    text = (run_dir / "logs" / "gateway0.stdout").read_text()
                    time.sleep(0.05)
                found = re.search(r"test key: (mg_test_\S+)", text)
                if not found:
                    raise RuntimeError("no test key in the gateway's output")
                secret = {"Authorization": f"Bearer {found.group(1)}"}
                key = _raise_limits_and_key(urls[0], secret)
        with running(procs):
            time.sleep(5.5)          # settings caches expire, so every process sees the raised limits
            total_before = _visible(urls[0], secret)
            for batch in batches:
                row = measure_batch(urls, key, batch, seconds=seconds, events=events, concurrency=concurrency,
                                    use_wrk=use_wrk, run_dir=run_dir, count=lambda: _visible(urls[0], secret),
                                    before=total_before, cpu=lambda: sum(p.cpu() for p in procs))
                if row["errors"]:
                    raise RuntimeError(f"{row['errors']} answers were not 2xx")
                total_before += row["accepted"]
                results["runs"].append(row)
                _print(row)
    finally:
        for p in procs:
            p.stop()
        shutil.rmtree(run_dir, ignore_errors=True)
    return results


def _raise_limits_and_key(url: str, secret: dict[str, str]) -> str:
    """Raise the app's analytics request limits (the load comes from one address) and make a publishable key."""
    httpx.put(f"{url}/v1/analytics/settings", headers=secret, timeout=10,
              json={"requests_per_second": 100_000, "requests_per_minute_per_ip": 1_000_000}).raise_for_status()
    answer = httpx.post(f"{url}/v1/analytics/publishable_keys", headers=secret, timeout=10)
    answer.raise_for_status()
    return str(answer.json()["key"])


# --------------------------------------------------------------------------- scenario (e) of `python -m bench all`

SIZES = {"quick": dict(batches=[20, 500], seconds=4, events=20_000, concurrency=16),
         "full": dict(batches=[20, 100, 500], seconds=10, events=200_000, concurrency=16)}


def start_baseline(run_dir: Path, db: str, pg: Any) -> tuple[Proc, str, str]:
    """(process, database URL, key) of ``bench/baseline/analytics_app.py`` under gunicorn, on a fresh database."""
    from bench.baseline.analytics_app import init_db
    from bench.sms import baseline_database, start_gunicorn_app

    url = baseline_database(run_dir, db, pg, "analyticsbaseline")
    init_db(url)
    key = "pk_test_" + uuid.uuid4().hex
    proc = start_gunicorn_app(f"analytics-baseline-{db}", "bench.baseline.analytics_app:create_app()",
                              run_dir=run_dir, env={"BASELINE_DATABASE_URL": url, "BASELINE_ANALYTICS_KEY": key})
    return proc, url, key


def scenario(system: str, db: str, *, run_dir: Path, sandbox: Any, receiver: Proc, pg: Any, batches: list[int],
             seconds: int, events: int, concurrency: int, log_level: str, generator: str = "auto") -> dict[str, Any]:
    """Scenario (e) for one system on one database: durable ingest per batch size, on a fresh server and database.

    minigate: ``minigate serve`` with the harness's worker processes; its events go to the analytics journal and
    DuckDB (the database holds the ledger: keys, settings, consents). Baseline: the events go to the database."""
    from bench import harness
    from bench.sms import gunicorn_settings

    use_wrk = generator == "wrk" or (generator == "auto" and shutil.which("wrk") is not None)
    out: dict[str, Any] = {"generator": "wrk" if use_wrk else "httpx", "concurrency": concurrency,
                           "goal_events_per_s": GOAL_EVENTS_PER_SECOND, "runs": []}
    if system == "minigate":
        target = harness.start_minigate(run_dir, db, sandbox, receiver, pg, log_level=log_level,
                                        extra_env={"MINIGATE_DATA_DIR": str(run_dir / f"minigate-{db}-analytics")},
                                        workers=harness.INGEST_WORKERS)
        proc, details = target.proc, target.details
        try:
            key = _raise_limits_and_key(proc.base_url, target.headers)
        except BaseException:
            proc.stop()
            raise

        def count() -> int:
            return _visible(proc.base_url, target.headers)
    else:
        proc, _url, key = start_baseline(run_dir, db, pg)
        details = {"server": f"gunicorn {gunicorn_settings()['workers']} sync workers ((2 x cores) + 1)",
                   "stack": "Flask + SQLAlchemy ORM (sync), one INSERT transaction per request"}

        def count() -> int:
            r = httpx.get(f"{proc.base_url}/stats", timeout=60)
            r.raise_for_status()
            return int(r.json()["events"])
    out["server"] = details
    report.console.print(f"[dim]{db}/{system} (e) analytics ingest: {details['server']} on {proc.base_url}[/dim]")
    try:
        if system == "minigate":
            time.sleep(5.5)      # settings caches expire, so every process sees the raised limits
        before = count()
        for batch in batches:
            row = measure_batch([proc.base_url], key, batch, seconds=seconds, events=events, concurrency=concurrency,
                                use_wrk=use_wrk, run_dir=run_dir, count=count, before=before, cpu=proc.cpu)
            before += row["accepted"]
            out["runs"].append(row)
            _print(row)
    finally:
        proc.stop()
    return out


def _print(row: dict[str, Any]) -> None:
    report.console.print(
        f"  batch {row['batch']:>3}: {row['acked_events_per_s']:>7} events/s acknowledged durably "
        f"({row['ratio_to_goal']}× the 50k goal), p50 {row['latency']['p50_ms']} ms, "
        f"p99 {row['latency']['p99_ms']} ms; all queryable after {row['all_queryable_after_s']} s "
        f"({row['end_to_end_events_per_s']} events/s end to end)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench analytics-ingest")
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--batch", type=int, action="append", help="events per request (repeatable)")
    parser.add_argument("--gateways", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--seconds", type=int, default=10, help="wrk: how long each batch size is loaded")
    parser.add_argument("--generator", choices=("auto", "wrk", "httpx"), default="auto")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = parser.parse_args(argv)
    results = run(args.events, args.batch or [500, 100, 20], args.gateways, args.concurrency, args.seconds,
                  args.generator)
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"analytics-ingest-{datetime.now(UTC):%Y%m%d-%H%M%S}.json"
    path.write_text(json.dumps(results, indent=2))
    report.console.print(f"results: {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}")
    return 0


if __name__ == "__main__":
    import sys

    raise SystemExit(main(sys.argv[1:]))

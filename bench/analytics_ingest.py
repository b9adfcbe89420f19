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
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from bench import report
from bench.common import PY, ROOT, free_port, latency_summary, machine_info, running, start

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


async def _send(urls: list[str], key: str, bodies: list[bytes], concurrency: int) -> tuple[float, list[float], int]:
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json", "Content-Encoding": "gzip"}
    latencies: list[float] = []
    accepted = 0
    queue = list(enumerate(bodies))
    queue.reverse()
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(limits=limits, timeout=60) as client:
        async def worker(w: int) -> None:
            nonlocal accepted
            while queue:
                i, body = queue.pop()
                t = time.perf_counter()
                r = await client.post(f"{urls[i % len(urls)]}/v1/analytics/collect", content=body, headers=headers)
                latencies.append(time.perf_counter() - t)
                if r.status_code != 200:
                    raise RuntimeError(f"collect answered {r.status_code}: {r.text[:200]}")
                accepted += r.json()["accepted"]
        t0 = time.perf_counter()
        await asyncio.gather(*(worker(w) for w in range(concurrency)))
        return time.perf_counter() - t0, latencies, accepted


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


def _wait_visible(url: str, headers: dict[str, str], expected: int, within: float = 300) -> None:
    deadline = time.monotonic() + within
    while (seen := _visible(url, headers)) < expected:
        if time.monotonic() > deadline:
            raise RuntimeError(f"only {seen} of {expected} acknowledged events queryable after {within:.0f} s")
        time.sleep(0.05)


def _visible(url: str, headers: dict[str, str]) -> int:
    r = httpx.get(f"{url}/v1/analytics/top_events", params={"limit": 200}, headers=headers, timeout=60)
    r.raise_for_status()
    return sum(row["events"] for row in r.json()["data"])


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
                   "MINIGATE_API_REQUESTS_PER_SECOND_PER_KEY": "0",
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
                httpx.put(f"{urls[0]}/v1/analytics/settings", headers=secret, timeout=10,
                          json={"requests_per_second": 100_000, "requests_per_minute_per_ip": 1_000_000}
                          ).raise_for_status()
                key = httpx.post(f"{urls[0]}/v1/analytics/publishable_keys", headers=secret, timeout=10).json()["key"]
        with running(procs):
            time.sleep(5.5)          # settings caches expire, so every process sees the raised limits
            total_before = _visible(urls[0], secret)
            for batch in batches:
                if use_wrk:
                    t_start = time.perf_counter()
                    out = _wrk(urls, key, batch, seconds, concurrency, run_dir)
                    if out["non_2xx"]:
                        raise RuntimeError(f"{out['non_2xx']} answers were not 2xx:\n{out['raw'][0]}")
                    accepted = out["requests"] * batch
                    _wait_visible(urls[0], secret, total_before + accepted)
                    queryable = time.perf_counter() - t_start
                    total_before += accepted
                    rate = accepted / out["seconds"]
                    row = {"batch": batch, "requests": out["requests"], "accepted": accepted,
                           "ack_seconds": out["seconds"], "acked_events_per_s": round(rate),
                           "ratio_to_goal": round(rate / GOAL_EVENTS_PER_SECOND, 3), "latency": out["latency"],
                           "all_queryable_after_s": round(queryable, 3),
                           "end_to_end_events_per_s": round(accepted / queryable)}
                    results["runs"].append(row)
                    _print(row)
                    continue
                bodies = _bodies(events, batch, int(time.time() * 1000))
                report.console.print(f"[dim]batch {batch}: {len(bodies)} requests of ≤{batch} events (httpx)[/dim]")
                t_start = time.perf_counter()
                wall, latencies, accepted = asyncio.run(_send(urls, key, bodies, concurrency))
                _wait_visible(urls[0], secret, total_before + accepted)
                queryable = time.perf_counter() - t_start
                total_before += accepted
                rate = accepted / wall
                row = {"batch": batch, "requests": len(bodies), "accepted": accepted,
                       "ack_seconds": round(wall, 3), "acked_events_per_s": round(rate),
                       "ratio_to_goal": round(rate / GOAL_EVENTS_PER_SECOND, 3),
                       "latency": latency_summary(latencies),
                       "all_queryable_after_s": round(queryable, 3),
                       "end_to_end_events_per_s": round(accepted / queryable)}
                results["runs"].append(row)
                _print(row)
    finally:
        for p in procs:
            p.stop()
        shutil.rmtree(run_dir, ignore_errors=True)
    return results


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

"""``python -m bench checkout|notify|replay|codes|ingest|limit|profile|all [--full] [--db sqlite|postgres|both]``;
``all`` runs (a) checkout, (b) notification storm, (c) idempotent replay, (d) SMS codes and (e) analytics ingest
against minigate and the baselines on each database, with the limit measured in the same run;
``python -m bench sms [--codes N] [--concurrency C] [--db ...]`` (verification codes, see :mod:`bench.sms`);
``python -m bench analytics [--events N] [--engines]`` (dashboard queries, see :mod:`bench.analytics`);
``python -m bench analytics-ingest [--batch B ...] [--gateways G]`` (durable ingest: :mod:`bench.analytics_ingest`)."""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import analytics_ingest, harness, limit, report, scenarios, sms
from bench.common import ROOT, machine_info

SIZES = {
    #            checkout orders, concurrency, storm, paced (each), replay requests, replay concurrency
    "quick": dict(orders=600, concurrency=32, storm=300, paced=150, replay=600, replay_concurrency=16),
    "full": dict(orders=8000, concurrency=32, storm=4000, paced=2000, replay=8000, replay_concurrency=16),
}
TARGET_NOTIFY_RATE = 1500
#: (d) SMS codes and (e) analytics ingest, per size (each system starts on a fresh server and database)
SMS_SIZES = sms.SIZES
INGEST_SIZES = analytics_ingest.SIZES
ABC = ("checkout", "notify", "replay", "profile", "all")


def _run_loop(coro: Any) -> Any:
    try:
        import uvloop

        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            return runner.run(coro)
    except ImportError:
        return asyncio.run(coro)


def run_system(command: str, system: str, db: str, *, run_dir: Path, sandbox: harness.Sandbox,
               receiver: Any, pg: harness.Postgres | None, size: dict[str, int], log_level: str,
               profile_hook: Any = None) -> dict[str, Any]:
    if system == "minigate":
        target = harness.start_minigate(run_dir, db, sandbox, receiver, pg, log_level)
    else:
        target = harness.start_baseline(run_dir, db, sandbox, pg)
    report.console.print(f"[dim]{db}/{system}: {target.details['server']} on {target.url}[/dim]")
    out: dict[str, Any] = {"server": target.details}
    tag = f"{system[:2].upper()}{db[:2].upper()}{int(time.time()) % 100000}"
    try:
        async def go() -> None:
            if profile_hook is not None:
                profile_hook.start(target)
            checkout, created = await scenarios.checkout(target, sandbox, orders=size["orders"],
                                                         concurrency=size["concurrency"], tag=tag)
            if command in ("checkout", "all", "profile"):
                out["checkout"] = checkout
                report.console.print(f"  checkout: {checkout['throughput_per_s']} orders/s, "
                                     f"p99 {checkout['latency']['p99_ms']} ms, "
                                     f"{checkout['system_cpu_ms_per_order']} CPU ms/order, "
                                     f"errors {checkout['errors']['count']}")
            else:
                out["setup_checkout"] = {k: checkout[k] for k in ("orders", "throughput_per_s", "errors")}
            trade_nos = [d.body["out_trade_no"] for d in created if d.ok]
            if command in ("notify", "all", "profile"):
                storm_set = trade_nos[:size["storm"]]
                rest = trade_nos[size["storm"]:]
                storm = await scenarios.notify(target, sandbox, receiver.base_url, storm_set, rate=None)
                out["notify_storm"] = storm
                report.console.print(f"  notify storm: {storm['notifications']} paid in {storm['all_paid_s']} s "
                                     f"({storm['throughput_per_s']}/s), webhooks {storm.get('all_webhooks_s')} s, "
                                     f"ack p99 {storm['latency']['p99_ms']} ms, complete={storm['complete']}")
                if command != "profile":
                    rates = [TARGET_NOTIFY_RATE]
                    if storm["throughput_per_s"]:
                        half = max(10, round(storm["throughput_per_s"] * 0.5, -1))
                        if half < TARGET_NOTIFY_RATE:
                            rates.append(half)
                    out["notify_paced"] = []
                    for rate in rates:
                        count = min(size["paced"], max(50, int(rate * 8)))   # at most ~8 s of payments
                        chunk, rest = rest[:count], rest[count:]
                        if not chunk:
                            break
                        paced = await scenarios.notify(target, sandbox, receiver.base_url, chunk, rate=rate)
                        out["notify_paced"].append(paced)
                        report.console.print(f"  notify paced {rate:g}/s: {paced['throughput_per_s']}/s, "
                                             f"ack p50 {paced['latency']['p50_ms']} p99 "
                                             f"{paced['latency']['p99_ms']} ms")
            if command in ("replay", "all"):
                rep = await scenarios.replay(target, sandbox, created, requests=size["replay"],
                                             concurrency=size["replay_concurrency"], hit_ratio=0.9, tag=tag + "R")
                out["replay"] = rep
                report.console.print(f"  replay: {rep['throughput_per_s']} req/s, hit p99 "
                                     f"{rep['latency_hits']['p99_ms']} ms, errors {rep['errors']['count']}")

        _run_loop(go())
    finally:
        if profile_hook is not None:
            profile_hook.stop()
        target.proc.stop()
    return out


def main(argv: list[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    if args_list[:1] == ["sms"]:
        return sms.main(args_list[1:])
    if args_list[:1] == ["analytics"]:
        from bench import analytics

        return analytics.main(args_list[1:])
    if args_list[:1] == ["analytics-ingest"]:
        return analytics_ingest.main(args_list[1:])
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("command", choices=["checkout", "notify", "replay", "codes", "ingest", "limit", "profile",
                                            "all"])
    parser.add_argument("--full", action="store_true", help="long runs (default: quick sizes)")
    parser.add_argument("--db", choices=["sqlite", "postgres", "both"], default="both")
    parser.add_argument("--system", choices=["minigate", "baseline", "both"], default="both")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    parser.add_argument("--log-level", default="INFO", help="MINIGATE_LOG_LEVEL of the gateway (default: INFO, "
                        "what `minigate serve` ships with)")
    parser.add_argument("--keep", action="store_true", help="keep the run directory (databases, logs)")
    parser.add_argument("--profiler", choices=["py-spy", "pyinstrument"], default="py-spy")
    parser.add_argument("--orders", type=int, help="override the checkout size")
    args = parser.parse_args(argv)

    size_name = "full" if args.full else "quick"
    size = dict(SIZES[size_name])
    if args.orders:
        size["orders"] = args.orders
        size["storm"] = min(size["storm"], args.orders // 2)
        size["paced"] = min(size["paced"], args.orders // 4)
    dbs = ["sqlite", "postgres"] if args.db == "both" else [args.db]
    systems = ["minigate", "baseline"] if args.system == "both" else [args.system]
    if args.command == "profile":
        systems = ["minigate"]
        dbs = dbs[:1] if args.db != "both" else ["sqlite"]
    run_dir = Path(tempfile.mkdtemp(prefix="minigate-bench-"))
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    results: dict[str, Any] = {
        "command": "python -m bench " + " ".join(argv if argv is not None else sys.argv[1:]),
        "started": datetime.now(UTC).isoformat(timespec="seconds"), "machine": machine_info(),
        "settings": {"sizes": size, "sms_size": SMS_SIZES[size_name], "ingest_size": INGEST_SIZES[size_name],
                     "size_name": size_name, "dbs": dbs, "systems": systems,
                     "gateway_workers": {db: harness.gateway_workers(db) for db in dbs},
                     "gateway_log_level": args.log_level, "sandbox_time_scale": harness.TIME_SCALE,
                     "target_notify_rate": TARGET_NOTIFY_RATE,
                     "sqlite": "WAL + synchronous=FULL (minigate: store/db.py; baseline: bench/baseline/app.py)",
                     "driver": "httpx.AsyncClient on uvloop, one process, closed loop (checkout, replay), "
                               "open loop for paced payments",
                     "notification_latency": "measured by the simulator: callback sent -> acknowledgement received "
                                             "(includes waiting for one of its 100 pooled connections)"},
        "runs": {},
    }
    report.console.print(f"[b]minigate bench[/b] {args.command} ({results['settings']['size_name']}) "
                         f"dbs={dbs} systems={systems}; run dir {run_dir}")
    pg: harness.Postgres | None = None
    redis: sms.Redis | None = None
    procs: list[Any] = []
    try:
        if "postgres" in dbs:
            pg = harness.start_postgres()
            results["settings"]["postgres"] = pg.settings
        if (args.command in ("codes", "all") and "minigate" in systems
                and any(harness.gateway_workers(db) > 1 for db in dbs)):
            redis = sms.start_redis()     # the limits of several gateway processes (the per-phone window)
            results["settings"]["sms_limits_store"] = "redis"
        if args.command in ("limit", "checkout", "codes", "all"):
            pg_limit_url = pg.create_database("bench_limit") if pg else None
            results["limit"] = limit.measure(run_dir, pg_limit_url, full=args.full)
        if args.command != "limit":
            sandbox = harness.start_sandbox(run_dir)
            procs.append(sandbox.proc)
            receiver = harness.start_receiver(run_dir)
            procs.append(receiver)
            hook = None
            if args.command == "profile":
                from bench.profile import Profiler

                hook = Profiler(args.profiler, run_dir, args.out, stamp)
            sms_tag = 0
            for db in dbs:
                results["runs"][db] = {system: {} for system in systems}
                if args.command in ABC:
                    for system in systems:
                        results["runs"][db][system] = run_system(
                            args.command, system, db, run_dir=run_dir, sandbox=sandbox, receiver=receiver, pg=pg,
                            size=size, log_level=args.log_level, profile_hook=hook)
                if args.command in ("codes", "all"):
                    for system in systems:
                        results["runs"][db][system]["sms"] = sms.scenario(
                            system, db, run_dir=run_dir, sandbox=sandbox, receiver=receiver, pg=pg,
                            log_level=args.log_level, redis=redis, run_loop=_run_loop, tag=sms_tag,
                            **SMS_SIZES[size_name])
                        sms_tag += 1     # every run its own numbers: the simulator limits each to 1 SMS a minute
                if args.command in ("ingest", "all"):
                    for system in systems:
                        results["runs"][db][system]["ingest"] = analytics_ingest.scenario(
                            system, db, run_dir=run_dir, sandbox=sandbox, receiver=receiver, pg=pg,
                            log_level=args.log_level, **INGEST_SIZES[size_name])
            if hook is not None:
                results["profile"] = hook.summary
        results["ratios"] = report.ratios(results["runs"])
        results["targets"] = report.targets(results["runs"], results["ratios"], results.get("limit"))
        results["finished"] = datetime.now(UTC).isoformat(timespec="seconds")
    finally:
        for p in reversed(procs):
            p.stop()
        if redis is not None:
            redis.stop()
        if pg is not None:
            pg.stop()
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"{args.command}-{results['settings']['size_name']}-{stamp}.json"
    path.write_text(json.dumps(results, indent=2, ensure_ascii=False))
    report.print_run(results)
    if args.command == "profile" and "profile" in results:
        from bench.profile import print_summary

        print_summary(results["profile"])
    report.console.print(f"results: {path}")
    if args.keep:
        report.console.print(f"run directory kept: {run_dir}")
    else:
        shutil.rmtree(run_dir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

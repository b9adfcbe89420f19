"""``python -m bench analytics [--events N] [--engines] [--persons-table] [--repeats R]``: dashboard queries at scale.

1. **data**: N events (default 10,000,000) generated inside DuckDB with SQL alone (``range()`` plus
   ``hash()``-based pseudo-randomness, so every run builds the same rows) into a file database in a temporary
   directory, with the table from :mod:`minigate.analytics.schema`, loaded in time order like the service's
   journal loader. Shape: N/10 sessions of 10 events over 30 Beijing days; devices (0.036·N ids drawn, ~284,000
   used at 10M) picked with a cubic skew (the busiest 1% of devices make ~20% of the events); each device has a
   first day of its own, so every day has newcomers; 70% WeChat / 30% Alipay; 40% of devices logged in from the
   start, 20% anonymous until a login moment, 40% never logged in; 20 event names, ``$pageview`` over 50 pages
   (skewed), and a shopping path inside sessions (view_product -> add_to_cart -> checkout ->
   ``$payment_request`` -> ``$payment_result``, each deeper stage rarer) with an order id per paying session and
   realistic property objects (product, category, price, WeChat scene code, payment status...).
2. **queries** (:func:`run_queries`): each query of :mod:`minigate.analytics.queries` the dashboards use, on a
   fresh read-only connection per run as the service opens them: one warm-up, then the median of R runs (3) of
   the wall time, with the connection's open time reported apart. Queries: active users by day / week / month over
   the 30 days, daily retention of 14 cohorts with a 7-day horizon, a 4-step funnel with a 1-hour window over the
   30 days, top events, top pages, the payment links over the 30 days (with an ``order_owners`` map of 20,000
   orders), and the pure-Python :func:`payment_funnel` on those links with a ledger built from the data.
3. ``--persons-table``: the queries again with the device -> first user map read from a table built once
   (:func:`run_with_persons_table`) — what a loader-maintained ``persons`` table would save.
4. ``--engines``: the same data and the DAU / retention / funnel in chDB (embedded ClickHouse), see
   :mod:`bench.analytics_engines`.

The goal is every dashboard query under one second at 10M events on this machine; the table shows each query's
median, the open cost, and (open + query) / 1 s. Results go to ``bench/results/analytics-<stamp>.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb

from bench import report
from bench.common import ROOT, machine_info
from minigate.analytics import queries
from minigate.analytics.schema import DDL

GOAL_MS = 1000.0
APP, MODE = "app_bench", "live"
FIRST_DAY = date(2026, 10, 1)      # local (Beijing) date of the first generated day
DAYS = 30
TZ_MINUTES = 480
SESSION = 10                       # events per session
FUNNEL = ("view_product", "add_to_cart", "checkout", "$payment_request")
OTHER_NAMES = ("$pageview", "$app_launch", "$app_show", "$app_hide", "search", "click_banner", "share", "favorite",
               "view_category", "view_cart", "login", "coupon_claim", "scroll_depth", "play_video", "$exception")

# u(x, salt): a uniform double in [0, 1) from DuckDB's 64-bit hash, the same on every run
_MACROS = "CREATE OR REPLACE TEMP MACRO u(x, salt) AS (hash(x, salt) % 1000000007) / 1000000007.0"

GENERATE = """
INSERT INTO events
WITH sessions AS (
    SELECT s, dev, fd,
           CASE WHEN u(dev, 6) < 0.7 THEN 'wechat' ELSE 'alipay' END AS platform,
           u(dev, 7) AS login_class,
           (fd + (($days - fd) * u(dev, 8))) * 86400 AS login_at,
           (fd + floor(($days - fd) * u(s, 3))) * 86400 + floor(86400 * (0.3 + 0.7 * u(s, 4))) AS start_sec,
           CASE WHEN u(s, 5) < 0.45 THEN 0 WHEN u(s, 5) < 0.75 THEN 1 WHEN u(s, 5) < 0.88 THEN 2
                WHEN u(s, 5) < 0.95 THEN 3 ELSE 4 END AS depth
    FROM (SELECT s, dev, floor($days * pow(u(dev, 2), 1.5))::INTEGER AS fd
          FROM (SELECT range AS s, floor($devices * pow(u(range, 1), 3))::BIGINT AS dev
                FROM range($sessions)))
), rows AS (
    SELECT s.*, s.s * $session + j AS e, j, start_sec + j * 40 + floor(30 * u(s.s * $session + j, 9)) AS sec,
           CASE WHEN j = 2 AND depth >= 1 THEN 'view_product'
                WHEN j = 4 AND depth >= 2 THEN 'add_to_cart'
                WHEN j = 6 AND depth >= 3 THEN 'checkout'
                WHEN j = 7 AND depth >= 4 THEN '$payment_request'
                WHEN j = 8 AND depth >= 4 THEN '$payment_result'
                WHEN j = 0 OR u(s.s * $session + j, 10) < 0.45 THEN '$pageview'
                ELSE $others[2 + floor(14 * (u(s.s * $session + j, 10) - 0.45) / 0.55)::INTEGER] END AS name
    FROM sessions s, range($session) AS r(j)
), shaped AS (
    SELECT e, $app AS app_id, $mode AS mode, 'ev-' || e AS event_id, name,
           CASE WHEN name = '$pageview' THEN 'page_view' WHEN name LIKE '$app_%' THEN 'lifecycle' ELSE 'event' END
               AS kind,
           'dev-' || lpad(dev::VARCHAR, 7, '0') AS distinct_id,
           CASE WHEN login_class < 0.4 OR (login_class < 0.6 AND sec >= login_at)
                THEN 'u-' || lpad(dev::VARCHAR, 7, '0') END AS user_id,
           's-' || s AS session_id,
           $base + to_seconds(sec::BIGINT) AS ts,
           $base + to_seconds(sec::BIGINT + 1 + floor(4 * u(e, 12))::BIGINT) AS received_at,
           '/pages/p' || lpad(floor(50 * pow(u(e, 11), 2))::VARCHAR, 2, '0') || '/index' AS page,
           platform,
           CASE WHEN name IN ('$payment_request', '$payment_result') THEN 'mg' || lpad(s::VARCHAR, 9, '0') END
               AS order_id,
           CASE WHEN name IN ('view_product', 'add_to_cart') THEN
                    json_object('product_id', 'sku-' || floor(2000 * pow(u(s, 20), 3))::INTEGER,
                                'category', 'c' || floor(20 * u(s, 21))::INTEGER,
                                'price', 100 + floor(20000 * u(s, 22))::INTEGER)
                WHEN name = 'checkout' THEN
                    json_object('items', 1 + floor(4 * u(s, 23))::INTEGER,
                                'amount', 100 + floor(60000 * u(s, 24))::INTEGER)
                WHEN name = '$payment_request' THEN
                    json_object('order_id', 'mg' || lpad(s::VARCHAR, 9, '0'),
                                'amount', 100 + floor(60000 * u(s, 24))::INTEGER)
                WHEN name = '$payment_result' THEN
                    json_object('order_id', 'mg' || lpad(s::VARCHAR, 9, '0'),
                                'status', CASE WHEN u(s, 25) < 0.85 THEN 'success'
                                               WHEN u(s, 25) < 0.95 THEN 'cancel' ELSE 'fail' END)
                WHEN name = '$pageview' THEN
                    json_object('scene', 1000 + floor(100 * u(e, 26))::INTEGER,
                                'referrer', CASE WHEN j = 0 THEN '' ELSE '/pages/home/index' END)
                ELSE json_object('scene', 1000 + floor(100 * u(e, 26))::INTEGER,
                                 'ab', CASE WHEN u(dev, 27) < 0.5 THEN 'A' ELSE 'B' END) END AS properties
    FROM rows
)
SELECT row_number() OVER (ORDER BY ts, e) AS seq, app_id, mode, event_id, name, kind, distinct_id, user_id,
       session_id, ts, received_at, page, platform, order_id, properties
FROM shaped ORDER BY seq
"""


def generate(path: Path, events: int) -> dict[str, Any]:
    """Build the data set in a new DuckDB file; returns what was built and how long it took."""
    sessions = max(1, events // SESSION)
    devices = max(1000, round(events * 0.036))       # the cubic skew leaves ~17% of them unused: ~300k at 10M
    started = time.perf_counter()
    con = duckdb.connect(str(path))
    try:
        for statement in DDL:
            con.execute(statement)
        con.execute("SET enable_progress_bar = false")
        con.execute(_MACROS)
        base = datetime.combine(FIRST_DAY, datetime.min.time()) - timedelta(minutes=TZ_MINUTES)
        con.execute(GENERATE.replace("$others", "$other_names"), {
            "days": DAYS, "devices": devices, "sessions": sessions, "session": SESSION, "app": APP, "mode": MODE,
            "base": base, "other_names": list(OTHER_NAMES)})
        con.execute("CHECKPOINT")
        elapsed = time.perf_counter() - started
        stats = con.execute(f"""
            WITH ids AS ({queries.PERSONS})
            SELECT count(*), count(DISTINCT e.distinct_id), count(DISTINCT {queries.PERSON}),
                   count(DISTINCT e.user_id), count(DISTINCT e.name), count(DISTINCT e.page),
                   count(*) FILTER (WHERE e.user_id IS NULL), count(DISTINCT e.order_id)
            FROM events e LEFT JOIN ids ON ids.distinct_id = e.distinct_id""", {"app_id": APP, "mode": MODE}
        ).fetchone()
        busiest = con.execute("""
            SELECT sum(n) FILTER (WHERE rk <= greatest(1, total / 100)) / sum(n)
            FROM (SELECT count(*) AS n, row_number() OVER (ORDER BY count(*) DESC) AS rk,
                         count(*) OVER () AS total FROM events GROUP BY distinct_id)""").fetchone()
    finally:
        con.close()
    assert stats is not None and busiest is not None
    return {"events": stats[0], "devices": stats[1], "persons": stats[2], "user_ids": stats[3],
            "event_names": stats[4], "pages": stats[5], "anonymous_share": round(stats[6] / stats[0], 3),
            "orders": stats[7], "busiest_1pct_devices_share": round(float(busiest[0]), 3),
            "sessions": sessions, "days": DAYS, "first_local_day": FIRST_DAY.isoformat(),
            "generate_s": round(elapsed, 2), "file_mb": round(path.stat().st_size / 2**20, 1)}


def _ledger(path: Path) -> dict[str, queries.LedgerOrder]:
    """A ledger matching the data: every order with a success result is paid, except one in 50 (the client was
    wrong); one paid order in 20 without a client success (the result never reached the client)."""
    con = duckdb.connect(str(path), read_only=True)
    try:
        rows = con.execute("""
            SELECT order_id, min(ts), bool_or(json_extract_string(properties, '$.status') = 'success')
            FROM events WHERE name IN ('$payment_request', '$payment_result') GROUP BY order_id""").fetchall()
    finally:
        con.close()
    ledger: dict[str, queries.LedgerOrder] = {}
    for i, (order_id, first, success) in enumerate(rows):
        created = first.replace(tzinfo=UTC) - timedelta(seconds=5)
        paid = (success and i % 50 != 0) or (not success and i % 20 == 0)
        ledger[order_id] = queries.LedgerOrder(order_id, created, "paid" if paid else "closed",
                                               created + timedelta(seconds=30) if paid else None,
                                               100 + i % 60000, (100 + i % 60000) if paid and i % 40 == 0 else 0)
    return ledger


def _owners(path: Path, count: int) -> dict[str, str]:
    """``count`` orders mapped to their payer's device id, as order metadata would name them."""
    con = duckdb.connect(str(path), read_only=True)
    try:
        rows = con.execute("SELECT order_id, any_value(distinct_id) FROM events WHERE order_id IS NOT NULL "
                           "GROUP BY order_id ORDER BY order_id LIMIT $n", {"n": count}).fetchall()
    finally:
        con.close()
    return dict(rows)


def _time(path: Path, fn: Callable[[duckdb.DuckDBPyConnection], Any], repeats: int) -> dict[str, Any]:
    opens: list[float] = []
    runs: list[float] = []
    cpu: list[float] = []
    result: Any = None
    for i in range(repeats + 1):                        # the first run warms the page cache and is not counted
        t0 = time.perf_counter()
        con = duckdb.connect(str(path), read_only=True)
        t1, c1 = time.perf_counter(), time.process_time()
        try:
            result = fn(con)
        finally:
            t2, c2 = time.perf_counter(), time.process_time()
            con.close()
        if i:
            opens.append((t1 - t0) * 1000)
            runs.append((t2 - t1) * 1000)
            cpu.append((c2 - c1) * 1000)
    query_ms, open_ms = statistics.median(runs), statistics.median(opens)
    return {"query_ms": round(query_ms, 1), "open_ms": round(open_ms, 1), "runs_ms": [round(r, 1) for r in runs],
            "cpu_ms": round(statistics.median(cpu), 1), "ratio_to_goal": round((query_ms + open_ms) / GOAL_MS, 3),
            "result": result}


def run_queries(path: Path, *, repeats: int = 3) -> dict[str, Any]:
    """Time every dashboard query against the database at ``path`` (see the module docstring)."""
    scope = queries.Scope(APP, MODE, TZ_MINUTES)
    start, end = FIRST_DAY, FIRST_DAY + timedelta(days=DAYS - 1)
    steps = [queries.Step(name) for name in FUNNEL]
    owners = _owners(path, 20_000)
    plan: dict[str, Callable[[duckdb.DuckDBPyConnection], Any]] = {
        "active_users_day": lambda c: queries.active_users(c, scope, start, end, "day"),
        "active_users_week": lambda c: queries.active_users(c, scope, start, end, "week"),
        "active_users_month": lambda c: queries.active_users(c, scope, start, end, "month"),
        "retention_day_14x7": lambda c: queries.retention(c, scope, start, start + timedelta(days=13), "day", 7),
        "funnel_4_steps_1h": lambda c: queries.funnel(c, scope, steps, start, end, 3600),
        "top_events": lambda c: queries.top_events(c, scope, start, end),
        "top_pages": lambda c: queries.top_pages(c, scope, start, end),
        "payment_links": lambda c: queries.payment_links(c, scope, start, end, 3600, order_owners=owners),
        # what GET /v1/analytics/payment_funnel runs: viewers without orders are counted, not listed
        "payment_links_summary": lambda c: queries.payment_links_summary(c, scope, start, end, 3600,
                                                                         order_owners=owners),
    }
    out: dict[str, Any] = {}
    for name, fn in plan.items():
        timed = _time(path, fn, repeats)
        result = timed.pop("result")
        if name == "payment_links":
            links = result
            timed["summary"] = {"persons": len(links), "orders": sum(len(p.orders) for p in links)}
        elif name == "payment_links_summary":
            viewers, linked = result
            timed["summary"] = {"viewers": viewers, "with_orders": len(linked)}
        elif name.startswith("funnel"):
            timed["summary"] = [r["persons"] for r in result]
        elif name.startswith("retention"):
            timed["summary"] = {"first_cohort": result[0]["retained"], "sizes": [r["size"] for r in result]}
        elif name.startswith("active_users"):
            timed["summary"] = {"periods": len(result), "max": max(r["active_users"] for r in result)}
        else:
            timed["summary"] = result[:3]
        out[name] = timed
        report.console.print(f"  {name:22} {timed['query_ms']:9.1f} ms  (open {timed['open_ms']:.1f} ms, "
                             f"CPU {timed['cpu_ms']:.0f} ms)")
    ledger = _ledger(path)
    runs: list[float] = []
    cpu: list[float] = []
    funnel_result: dict[str, Any] = {}
    for i in range(repeats + 1):
        t0, c0 = time.perf_counter(), time.process_time()
        funnel_result = queries.payment_funnel(links, ledger, 3600)
        if i:
            runs.append((time.perf_counter() - t0) * 1000)
            cpu.append((time.process_time() - c0) * 1000)
    out["payment_funnel_python"] = {
        "query_ms": round(statistics.median(runs), 1), "open_ms": 0.0, "runs_ms": [round(r, 1) for r in runs],
        "cpu_ms": round(statistics.median(cpu), 1), "ratio_to_goal": round(statistics.median(runs) / GOAL_MS, 3),
        "summary": [(s["step"], s["persons"]) for s in funnel_result["steps"]], "ledger_orders": len(ledger)}
    summary_result = queries.payment_funnel(linked, ledger, 3600, viewers=viewers)
    assert summary_result == funnel_result, "the summary path must give the same funnel"
    t0 = time.perf_counter()
    queries.payment_funnel(linked, ledger, 3600, viewers=viewers)
    python_ms = (time.perf_counter() - t0) * 1000
    dashboard = out["payment_links_summary"]["query_ms"] + out["payment_links_summary"]["open_ms"] + python_ms
    out["payment_funnel_dashboard"] = {
        "query_ms": round(dashboard, 1), "open_ms": 0.0, "python_ms": round(python_ms, 1), "runs_ms": [],
        "cpu_ms": 0.0,
        "ratio_to_goal": round(dashboard / GOAL_MS, 3),
        "note": "open + payment_links_summary + payment_funnel(viewers=...): the API path, less the ledger read"}
    report.console.print(f"  {'payment_funnel (API)':22} {dashboard:9.1f} ms  (summary query + open + "
                         f"{python_ms:.0f} ms of Python)")
    return out


PERSONS_TABLE = "SELECT distinct_id, first_user_id FROM persons WHERE app_id = $app_id AND mode = $mode"


def run_with_persons_table(path: Path, *, repeats: int = 3) -> dict[str, Any]:
    """The queries again, with :data:`queries.PERSONS` reading a ``persons`` table built once from the events —
    the measurement behind proposing that the loader maintain one (it is not part of the schema)."""
    con = duckdb.connect(str(path))
    try:
        con.execute("SET enable_progress_bar = false")
        t0 = time.perf_counter()
        con.execute("CREATE OR REPLACE TABLE persons AS SELECT app_id, mode, distinct_id, "
                    "arg_min(user_id, (ts, seq)) AS first_user_id FROM events WHERE user_id IS NOT NULL "
                    "GROUP BY ALL ORDER BY app_id, mode, distinct_id")
        con.execute("CHECKPOINT")
        build_s = time.perf_counter() - t0
    finally:
        con.close()
    original = queries.PERSONS
    queries.PERSONS = PERSONS_TABLE
    try:
        report.console.print("[b]with a persons table[/b]")
        timed = run_queries(path, repeats=repeats)
    finally:
        queries.PERSONS = original
    return {"build_s": round(build_s, 2), "definition": PERSONS_TABLE, "queries": timed}


def print_table(results: dict[str, Any]) -> None:
    from rich.table import Table

    table = Table(title=f"analytics queries at {results['data']['events']:,} events (goal: 1 s each)")
    extra = results.get("persons_table", {}).get("queries", {})
    cols = ["query", "median ms", "open ms", "(open+query) / 1 s", "CPU ms", "runs ms"]
    if extra:
        cols.append("with persons table ms")
    for col in cols:
        table.add_column(col, justify="left" if col == "query" else "right")
    for name, q in results["queries"].items():
        row = [name, f"{q['query_ms']:.1f}", f"{q['open_ms']:.1f}", f"{q['ratio_to_goal']:.3f}",
               f"{q.get('cpu_ms', 0):.0f}", " ".join(f"{r:.0f}" for r in q["runs_ms"])]
        if extra:
            row.append(f"{extra[name]['query_ms']:.1f}" if name in extra else "")
        table.add_row(*row)
    report.console.print(table)
    load = results.get("load_average")
    if load:
        report.console.print(f"load average (1 min) before/after the queries: {load['before'][0]} / {load['after'][0]} "
                             f"on {os.cpu_count()} CPUs")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench analytics", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=10_000_000)
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per query, after one warm-up")
    parser.add_argument("--engines", action="store_true", help="also run DAU / retention / funnel in chDB")
    parser.add_argument("--persons-table", action="store_true",
                        help="also time the queries with the device -> first user map read from a precomputed table "
                             "(what a loader-maintained persons table would give)")
    parser.add_argument("--keep", action="store_true", help="keep the generated database")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = parser.parse_args(argv)
    run_dir = Path(tempfile.mkdtemp(prefix="minigate-bench-analytics-"))
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    path = run_dir / "analytics.duckdb"
    results: dict[str, Any] = {
        "command": "python -m bench analytics " + " ".join(argv if argv is not None else sys.argv[1:]),
        "started": datetime.now(UTC).isoformat(timespec="seconds"), "machine": machine_info(),
        "settings": {"events": args.events, "repeats": args.repeats, "goal_ms": GOAL_MS,
                     "duckdb": duckdb.__version__, "timing": "wall time; one warm-up then the median of the "
                     "repeats; each run opens a fresh read_only connection (open time reported apart)"},
    }
    try:
        report.console.print(f"[b]analytics[/b]: generating {args.events:,} events in {path}")
        results["data"] = generate(path, args.events)
        report.console.print(f"  {json.dumps(results['data'])}")
        results["load_average"] = {"before": os.getloadavg()}
        results["queries"] = run_queries(path, repeats=args.repeats)
        results["load_average"]["after"] = os.getloadavg()
        if args.persons_table:
            results["persons_table"] = run_with_persons_table(path, repeats=args.repeats)
        if args.engines:
            from bench import analytics_engines

            results["engines"] = analytics_engines.run(path, repeats=args.repeats)
        results["finished"] = datetime.now(UTC).isoformat(timespec="seconds")
    finally:
        if args.keep:
            report.console.print(f"database kept: {path}")
        else:
            shutil.rmtree(run_dir, ignore_errors=True)
    print_table(results)
    args.out.mkdir(parents=True, exist_ok=True)
    out = args.out / f"analytics-{stamp}.json"
    out.write_text(json.dumps(results, indent=2, ensure_ascii=False, default=str))
    report.console.print(f"results: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

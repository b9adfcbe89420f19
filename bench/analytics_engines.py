"""``python -m bench analytics --engines``: the same events and the same DAU / retention / funnel in chDB.

Why the store is DuckDB and not an embedded ClickHouse: both run in-process with no server to operate, so the
comparison is the query speed on this machine and what each costs to keep. The generated events are exported
from the DuckDB file to Parquet and loaded into a chDB MergeTree table ordered by ``(app_id, mode, ts)`` (the
equivalent of the DuckDB table's time order), then three queries run with the same person resolution
(``coalesce(user_id, first user_id of the device, distinct_id)``):

- daily active users over the 30 days (``uniqExact`` of the person);
- daily retention, 14 cohorts x 7 days (the same first-day / return-day join as the generic DuckDB rollup);
- the 4-step funnel with a 1-hour window using ClickHouse's own ``windowFunnel`` — its semantics differ a little
  from :func:`minigate.analytics.queries.funnel` (a chain may start at any step-1 event, not only the first one
  in the range), so its counts are reported next to DuckDB's rather than required to match.

Each query: one warm-up, then the median of the repeats on one session (chDB keeps process-wide state, so a fresh
session per run would measure its start-up, reported apart as ``open_ms``). The DAU and retention answers are
checked against DuckDB's. chDB is optional (``bench/requirements.txt``); without it the section says so.
"""

from __future__ import annotations

import importlib
import json
import statistics
import time
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import duckdb

from bench import report
from minigate.analytics import queries

APP, MODE = "app_bench", "live"
FUNNEL = ("view_product", "add_to_cart", "checkout", "$payment_request")

_TABLE = """
CREATE TABLE events (
    seq Int64, app_id String, mode String, name String, kind String, distinct_id String,
    user_id Nullable(String), ts DateTime64(6, 'UTC'), page Nullable(String), platform Nullable(String),
    order_id Nullable(String), properties String
) ENGINE = MergeTree ORDER BY (app_id, mode, ts)
"""

_IDS = (f"ids AS (SELECT distinct_id, argMin(user_id, (ts, seq)) AS first_user_id FROM events "
        f"WHERE app_id = '{APP}' AND mode = '{MODE}' AND user_id IS NOT NULL GROUP BY distinct_id)")
_PERSON = "coalesce(e.user_id, ids.first_user_id, e.distinct_id)"
_WHERE = f"e.app_id = '{APP}' AND e.mode = '{MODE}'"
_SETTINGS = " SETTINGS join_use_nulls = 1"


def _bounds(start: date, end: date) -> tuple[str, str]:
    lo = f"toDateTime64('{start.isoformat()} 00:00:00', 6, 'UTC') - INTERVAL 8 HOUR"
    hi = f"toDateTime64('{(end + timedelta(days=1)).isoformat()} 00:00:00', 6, 'UTC') - INTERVAL 8 HOUR"
    return lo, hi


def _sql(start: date, end: date) -> dict[str, str]:
    lo, hi = _bounds(start, end)
    c0, c1 = start.isoformat(), (start + timedelta(days=13)).isoformat()
    local_day = "toDate(e.ts + INTERVAL 8 HOUR, 'UTC')"
    steps = ", ".join(f"e.name = '{name}'" for name in FUNNEL)
    names = ", ".join(f"'{name}'" for name in FUNNEL)
    return {
        "active_users_day": (
            f"WITH {_IDS} SELECT {local_day} AS d, uniqExact({_PERSON}) FROM events e LEFT JOIN ids "
            f"ON ids.distinct_id = e.distinct_id WHERE {_WHERE} AND e.ts >= {lo} AND e.ts < {hi} "
            "GROUP BY d ORDER BY d" + _SETTINGS),
        "retention_day_14x7": (
            f"WITH {_IDS}, pp AS (SELECT DISTINCT {_PERSON} AS person, {local_day} AS p FROM events e LEFT JOIN ids "
            f"ON ids.distinct_id = e.distinct_id WHERE {_WHERE}), firsts AS (SELECT person, min(p) AS c FROM pp "
            f"GROUP BY person) SELECT f.c, dateDiff('day', f.c, pp.p) AS k, count() FROM firsts f INNER JOIN pp "
            f"ON pp.person = f.person WHERE f.c BETWEEN toDate('{c0}') AND toDate('{c1}') AND pp.p <= f.c + 7 "
            "GROUP BY f.c, k ORDER BY f.c, k" + _SETTINGS),
        "funnel_4_steps_1h": (
            f"WITH {_IDS} SELECT level, count() FROM (SELECT {_PERSON} AS person, "
            f"windowFunnel(3600000000)(toUInt64(toUnixTimestamp64Micro(e.ts)), {steps}) AS level FROM events e "
            "LEFT JOIN ids "
            f"ON ids.distinct_id = e.distinct_id WHERE {_WHERE} AND e.ts >= {lo} AND e.ts < {hi} + INTERVAL 1 HOUR "
            f"AND e.name IN ({names}) GROUP BY person) WHERE level > 0 GROUP BY level ORDER BY level" + _SETTINGS),
    }


def _duckdb_answers(path: Path, start: date, end: date) -> dict[str, Any]:
    con = duckdb.connect(str(path), read_only=True)
    try:
        scope = queries.Scope(APP, MODE)
        dau = queries.active_users(con, scope, start, end, "day")
        ret = queries.retention(con, scope, start, start + timedelta(days=13), "day", 7, as_of=end)
        fun = queries.funnel(con, scope, [queries.Step(n) for n in FUNNEL], start, end, 3600)
    finally:
        con.close()
    return {"active_users_day": [[r["period_start"].isoformat(), r["active_users"]] for r in dau],
            "retention_day_14x7": [[r["cohort"].isoformat(), k, n] for r in ret
                                   for k, n in enumerate(r["retained"]) if n],
            "funnel_4_steps_1h": [r["persons"] for r in fun]}


def run(path: Path, *, repeats: int = 3, start: date = date(2026, 10, 1), days: int = 30) -> dict[str, Any]:
    """Load the DuckDB file's events into chDB and time the three queries there."""
    try:
        chdb: Any = importlib.import_module("chdb")          # untyped: Any keeps strict mypy quiet
        session: Any = importlib.import_module("chdb.session")
    except ImportError:
        report.console.print("  chdb is not installed: engines comparison skipped")
        return {"skipped": "chdb is not installed (pip install -r bench/requirements.txt)"}
    end = start + timedelta(days=days - 1)
    parquet = path.parent / "events.parquet"
    t0 = time.perf_counter()
    con = duckdb.connect(str(path), read_only=True)
    try:
        con.execute("SET enable_progress_bar = false")
        con.execute(f"COPY (SELECT seq, app_id, mode, name, kind, distinct_id, user_id, ts, page, platform, order_id, "
                    f"CAST(properties AS VARCHAR) AS properties FROM events) TO '{parquet}' (FORMAT parquet)")
    finally:
        con.close()
    export_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    sess = session.Session(str(path.parent / "chdb"))
    open_ms = (time.perf_counter() - t0) * 1000
    out: dict[str, Any] = {"engine": f"chDB {chdb.__version__} (ClickHouse {sess.query('SELECT version()', 'CSV')}"
                                     .replace("\n", "").replace('"', "") + ")"}
    try:
        t0 = time.perf_counter()
        sess.query(_TABLE)
        sess.query(f"INSERT INTO events SELECT * FROM file('{parquet}', Parquet)")
        sess.query("OPTIMIZE TABLE events FINAL")
        out["load_s"] = round(time.perf_counter() - t0, 2)
        out["export_parquet_s"] = round(export_s, 2)
        out["open_ms"] = round(open_ms, 1)
        answers = _duckdb_answers(path, start, end)
        for name, sql in _sql(start, end).items():
            runs: list[float] = []
            rows: list[Any] = []
            for i in range(repeats + 1):
                t0 = time.perf_counter()
                result = sess.query(sql, "JSONCompact")
                elapsed = (time.perf_counter() - t0) * 1000
                rows = json.loads(result.data())["data"]
                if i:
                    runs.append(elapsed)
            entry: dict[str, Any] = {"query_ms": round(statistics.median(runs), 1),
                                     "runs_ms": [round(r, 1) for r in runs]}
            if name == "funnel_4_steps_1h":
                reached = {int(level): int(n) for level, n in rows}
                entry["persons_per_step"] = [sum(n for level, n in reached.items() if level >= i)
                                             for i in range(1, len(FUNNEL) + 1)]
                entry["duckdb_persons_per_step"] = answers[name]
            else:
                got = [[str(r[0]), *(int(x) for x in r[1:])] for r in rows]
                entry["matches_duckdb"] = got == answers[name]
            out[name] = entry
            report.console.print(f"  chDB {name:22} {entry['query_ms']:9.1f} ms")
    finally:
        sess.close()
        parquet.unlink(missing_ok=True)
    return out

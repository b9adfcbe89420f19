"""Long simulation runs: ``python -m tests.simulation --seeds 1000`` (``make simulate SEEDS=1000``).

Each seed gets a fresh gateway and database (SQLite by default; ``--backend postgres`` clones a migrated template
on ``MINIGATE_TEST_POSTGRES_URL``). Prints one line per seed, the full report of every failing seed, and the
failing seeds at the end (exit status 1 when there are any). Replay one with ``--start SEED --seeds 1 -v``.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path

from tests.simulation.harness import Report, fresh_gateway, run_seed


def _quiet() -> None:
    import structlog

    logging.disable(logging.CRITICAL)
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.CRITICAL))


async def _pg_template(url: str) -> str:
    from sqlalchemy import text
    from sqlalchemy.ext.asyncio import create_async_engine

    from minigate.store.db import Database
    from minigate.store.migrate import upgrade
    from tests.conftest import _pg

    name = f"mg_simtmpl_{uuid.uuid4().hex[:8]}"
    admin = create_async_engine(_pg(url), isolation_level="AUTOCOMMIT")
    async with admin.connect() as conn:
        await conn.execute(text(f'CREATE DATABASE "{name}"'))
    await admin.dispose()
    db = Database(_pg(url, name))
    await upgrade(db.engine)
    await db.dispose()
    return name


async def _pg_exec(url: str, sql: str) -> None:
    from sqlalchemy import text
    from sqlalchemy.ext.asyncio import create_async_engine

    from tests.conftest import _pg

    admin = create_async_engine(_pg(url), isolation_level="AUTOCOMMIT")
    async with admin.connect() as conn:
        await conn.execute(text(sql))
    await admin.dispose()


async def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.simulation", description=__doc__)
    parser.add_argument("--seeds", type=int, default=100, help="how many seeds (default 100)")
    parser.add_argument("--start", type=int, default=1, help="first seed (default 1)")
    parser.add_argument("--steps", type=int, default=150, help="steps per seed (default 150)")
    parser.add_argument("--backend", choices=("sqlite", "postgres"), default="sqlite")
    parser.add_argument("-v", "--verbose", action="store_true", help="print every seed's full report")
    args = parser.parse_args(argv)
    _quiet()
    pg_url = os.environ.get("MINIGATE_TEST_POSTGRES_URL")
    if args.backend == "postgres" and not pg_url:
        print("--backend postgres needs MINIGATE_TEST_POSTGRES_URL", file=sys.stderr)
        return 2
    failing: list[int] = []
    totals: Counter[str] = Counter()
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="minigate-sim-") as tmp:
        root = Path(tmp)
        template = await _pg_template(pg_url) if args.backend == "postgres" and pg_url else None
        try:
            for seed in range(args.start, args.start + args.seeds):
                t0 = time.monotonic()
                if template and pg_url:
                    from tests.conftest import _pg

                    name = f"mg_sim_{uuid.uuid4().hex[:10]}"
                    await _pg_exec(pg_url, f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
                    url = _pg(pg_url, name)
                else:
                    name, url = "", f"sqlite+aiosqlite:///{root / f'seed{seed}.db'}"
                try:
                    async with fresh_gateway(url, root / f"data{seed}", root / "sandbox") as gw:
                        report: Report = await run_seed(gw, seed, steps=args.steps)
                finally:
                    if name and pg_url:
                        await _pg_exec(pg_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
                    (root / f"seed{seed}.db").unlink(missing_ok=True)
                totals["steps"] += report.steps
                totals["orders"] += report.orders["created"]
                totals["faults"] += sum(report.faults.values())
                totals["checks"] += sum(report.checks.values())
                totals["violations"] += len(report.violations)
                print(f"{report.summary()} [{time.monotonic() - t0:.1f}s]", flush=True)
                if report.violations:
                    failing.append(seed)
                if report.violations or args.verbose:
                    print(report.render(), flush=True)
        finally:
            if template and pg_url:
                await _pg_exec(pg_url, f'DROP DATABASE IF EXISTS "{template}" WITH (FORCE)')
    print(f"\n{args.seeds} seeds ({args.start}…{args.start + args.seeds - 1}) on {args.backend}: "
          f"{totals['steps']} steps, {totals['orders']} orders, {totals['faults']} faults, "
          f"{totals['checks']} invariant checks, {totals['violations']} violations in {len(failing)} seeds "
          f"[{time.monotonic() - started:.0f}s]")
    if failing:
        print("failing seeds: " + " ".join(map(str, failing)))
    return 1 if failing else 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))

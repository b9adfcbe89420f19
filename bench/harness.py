"""Starting the pieces of one run as real subprocesses on free loopback ports.

- the sandbox (WeChat Pay simulator, shared by both systems in a run),
- the merchant's webhook receiver,
- a PostgreSQL server (throwaway, unless ``MINIGATE_TEST_POSTGRES_URL`` points at one), one fresh database
  per system per run,
- the system under test: ``minigate serve`` or the gunicorn baseline.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from bench.common import PY, ROOT, Proc, free_port, start

TIME_SCALE = 0.001   # the simulator's notification retry delays (15 s -> 15 ms)


@dataclass
class Sandbox:
    proc: Proc
    state_dir: Path
    credentials_file: Path

    @property
    def url(self) -> str:
        return self.proc.base_url


def start_sandbox(run_dir: Path) -> Sandbox:
    state_dir = run_dir / "sandbox-state"
    creds_file = run_dir / "wechatpay-credentials.json"
    out = subprocess.run([PY, "-m", "minigate.cli", "sandbox", "credentials", "wechatpay", "--state-dir",
                          str(state_dir)], capture_output=True, text=True, check=True, cwd=ROOT)
    creds_file.write_text(out.stdout)
    port = free_port()
    proc = start("sandbox", [PY, "-m", "bench.sandbox_server", "--port", str(port), "--state-dir", str(state_dir),
                             "--time-scale", str(TIME_SCALE)],
                 env={}, log_dir=run_dir / "logs", base_url=f"http://127.0.0.1:{port}", ready_path="/_sandbox")
    return Sandbox(proc, state_dir, creds_file)


def start_receiver(run_dir: Path) -> Proc:
    port = free_port()
    return start("receiver", [PY, "-m", "bench.receiver", "--port", str(port)], env={},
                 log_dir=run_dir / "logs", base_url=f"http://127.0.0.1:{port}", ready_path="/_stats")


# --------------------------------------------------------------------------- PostgreSQL

@dataclass
class Postgres:
    url: str                   # maintenance database URL
    owned_dir: str | None      # set when we started it (and must stop it)
    settings: dict[str, str] = field(default_factory=dict)

    def create_database(self, name: str) -> str:
        import psycopg2

        conn = psycopg2.connect(self.url)
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(f'CREATE DATABASE "{name}"')
        conn.close()
        return self.url.rsplit("/", 1)[0] + "/" + name

    def stop(self) -> None:
        if self.owned_dir:
            subprocess.run([str(ROOT / "scripts" / "pg-throwaway.sh"), "stop", self.owned_dir], check=False)
            self.owned_dir = None


def start_postgres() -> Postgres:
    url = os.environ.get("MINIGATE_TEST_POSTGRES_URL")
    owned = None
    if not url:
        out = subprocess.run([str(ROOT / "scripts" / "pg-throwaway.sh"), "start"], capture_output=True, text=True,
                             check=True, cwd=ROOT).stdout
        found = dict(re.findall(r"export (\w+)=(\S+)", out))
        url, owned = found["MINIGATE_TEST_POSTGRES_URL"], found["MINIGATE_PG_DIR"]
    pg = Postgres(url, owned)
    import psycopg2

    conn = psycopg2.connect(url)
    with conn.cursor() as cur:
        for name in ("server_version", "fsync", "synchronous_commit", "wal_sync_method", "full_page_writes",
                     "shared_buffers", "max_connections"):
            cur.execute(f"SHOW {name}")
            pg.settings[name] = cur.fetchone()[0]
    conn.close()
    if pg.settings.get("fsync") != "on" or pg.settings.get("synchronous_commit") != "on":
        raise RuntimeError(f"PostgreSQL must run with fsync=on and synchronous_commit=on: {pg.settings}")
    return pg


# --------------------------------------------------------------------------- systems under test

@dataclass
class Target:
    """A running system under test and how to talk to it."""

    system: str                # "minigate" | "baseline"
    db: str                    # "sqlite" | "postgres"
    proc: Proc
    order_path: str
    headers: dict[str, str]
    notify_prefix: str         # the notify URLs the simulator calls for this system
    webhooks: bool             # delivers merchant webhooks (minigate) or is the merchant (baseline)
    database_url: str
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return self.proc.base_url

    def order_body(self, tag: str, i: int) -> dict[str, Any]:
        return {"channel": "wechat_mini", "amount": 100 + i % 97, "description": "Latte",
                "merchant_order_no": f"{tag}{i}", "payer": {"openid": "oBench" + "x" * 22}}


#: `minigate serve --workers` for checkout, storm, replay and SMS: 1 by default. On this 2-core machine, which
#: also runs the simulator, the database, the webhook receiver and the load driver, a second PostgreSQL-backed
#: process gave the same checkout throughput for ~25 % more CPU per order, and two SQLite-backed processes were
#: slower than one (one writer at a time): docs/performance.md. BENCH_GATEWAY_WORKERS=N changes it.
GATEWAY_WORKERS = int(os.environ.get("BENCH_GATEWAY_WORKERS") or 1)
#: analytics ingest writes no database row per request (the journal is fsynced by batch): one process per core
INGEST_WORKERS = int(os.environ.get("BENCH_INGEST_WORKERS") or os.cpu_count() or 1)


def gateway_workers(db: str) -> int:
    """Processes for a gateway whose hot path writes to ``db``: ``GATEWAY_WORKERS`` for both databases today
    (asked per database so that a setting for one does not have to be a setting for both)."""
    return GATEWAY_WORKERS


def start_minigate(run_dir: Path, db: str, sandbox: Sandbox, receiver: Proc, pg: Postgres | None,
                   log_level: str, extra_env: dict[str, str] | None = None, *,
                   workers: int | None = None) -> Target:
    workers = workers or gateway_workers(db)
    port = free_port()
    data_dir = run_dir / f"minigate-{db}"
    env = {"MINIGATE_DATA_DIR": str(data_dir), "MINIGATE_PORT": str(port),
           "MINIGATE_PUBLIC_URL": f"http://127.0.0.1:{port}", "MINIGATE_SANDBOX_URL": sandbox.url,
           "MINIGATE_SANDBOX_DIR": str(sandbox.state_dir), "MINIGATE_SANDBOX_TIME_SCALE": str(TIME_SCALE),
           "MINIGATE_LOG_LEVEL": log_level,
           # one key drives the whole load: the per-key request limit (100/s by default) would measure itself
           "MINIGATE_API_REQUESTS_PER_SECOND_PER_KEY": "0", "MINIGATE_WORKERS": str(workers), **(extra_env or {})}
    if db == "postgres":
        assert pg is not None
        env["MINIGATE_DATABASE_URL"] = pg.create_database(f"bench_minigate_{uuid.uuid4().hex[:8]}")
    url = env.get("MINIGATE_DATABASE_URL") or f"sqlite:///{data_dir / 'minigate.db'}"
    # BENCH_GATEWAY_WRAPPER (e.g. "python -m cProfile -o gw.prof") runs the gateway under a profiler
    wrapper = shlex.split(os.environ.get("BENCH_GATEWAY_WRAPPER", "")) or [PY]
    proc = start(f"minigate-{db}", [*wrapper, "-m", "minigate.cli", "serve"], env=env, log_dir=run_dir / "logs",
                 base_url=f"http://127.0.0.1:{port}", ready_path="/readyz", timeout=90)
    text = ""
    deadline = time.monotonic() + 10
    while "test key:" not in text and time.monotonic() < deadline:
        text = (run_dir / "logs" / f"minigate-{db}.stdout").read_text()
        time.sleep(0.05)
    key = re.search(r"test key: (mg_test_\S+)", text)
    app_id = re.search(r"created app (app_\S+)", text)
    if not key or not app_id:
        proc.stop()
        raise RuntimeError(f"no test key in minigate's output\n{proc.log_tail()}")
    headers = {"Authorization": f"Bearer {key.group(1)}"}
    hook = httpx.post(f"{proc.base_url}/v1/webhook_endpoints", headers=headers,
                      json={"url": f"{receiver.base_url}/hooks"}, timeout=10)
    hook.raise_for_status()
    return Target("minigate", db, proc, "/v1/orders", headers, f"{proc.base_url}/notify/", True, url,
                  {"app_id": app_id.group(1), "workers": workers,
                   "server": f"minigate serve --workers {workers} (uvicorn, uvloop+httptools)",
                   "log_level": log_level, "worker_poll_seconds": 0.5})


def start_baseline(run_dir: Path, db: str, sandbox: Sandbox, pg: Postgres | None) -> Target:
    port = free_port()
    data_dir = run_dir / f"baseline-{db}"
    data_dir.mkdir(parents=True, exist_ok=True)
    if db == "postgres":
        assert pg is not None
        url = pg.create_database(f"bench_baseline_{uuid.uuid4().hex[:8]}").replace(
            "postgresql://", "postgresql+psycopg2://", 1)
    else:
        url = f"sqlite:///{data_dir / 'baseline.db'}"
    env = {"BASELINE_DATABASE_URL": url, "BASELINE_CREDENTIALS": str(sandbox.credentials_file),
           "BASELINE_SANDBOX_URL": f"{sandbox.url}/wechatpay",
           "BASELINE_NOTIFY_URL": f"http://127.0.0.1:{port}/notify"}
    proc = start(f"baseline-{db}", [PY, "-m", "gunicorn", "-c", str(ROOT / "bench/baseline/gunicorn_conf.py"),
                                    "-b", f"127.0.0.1:{port}", "bench.baseline.app:app"],
                 env=env, log_dir=run_dir / "logs", base_url=f"http://127.0.0.1:{port}", ready_path="/healthz",
                 timeout=60)
    workers = 2 * (os.cpu_count() or 1) + 1
    return Target("baseline", db, proc, "/orders", {}, f"{proc.base_url}/notify", False, url,
                  {"server": f"gunicorn {workers} sync workers ((2 x cores) + 1)",
                   "stack": "Flask + wechatpayv3 (requests) + SQLAlchemy ORM (sync)"})


def sandbox_notify_log(sandbox: Sandbox, prefix: str) -> list[list[Any]]:
    response = httpx.get(f"{sandbox.url}/_bench/notify_log", params={"url_prefix": prefix}, timeout=30)
    response.raise_for_status()
    return json.loads(response.content)

"""Shared helpers: free ports, subprocesses, CPU accounting from /proc, percentiles, machine info."""

from __future__ import annotations

import contextlib
import importlib.metadata
import os
import platform
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable
CLK_TCK = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# --------------------------------------------------------------------------- CPU accounting

def _stat(pid: int) -> tuple[int, float] | None:
    """(ppid, utime+stime seconds) of one process, from /proc/<pid>/stat."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = raw[raw.rindex(")") + 2:].split()
    return int(fields[1]), (int(fields[11]) + int(fields[12])) / CLK_TCK


def tree_pids(root: int) -> list[int]:
    """``root`` and all its descendants (gunicorn master + workers)."""
    parents: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            st = _stat(int(entry))
            if st is not None:
                parents.setdefault(st[0], []).append(int(entry))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(parents.get(pid, []))
    return out


def cpu_seconds(root: int) -> float:
    """utime+stime of ``root`` and its live descendants (children that exited are in cutime, not counted:
    our servers keep their workers for the whole run)."""
    total = 0.0
    for pid in tree_pids(root):
        st = _stat(pid)
        if st is not None:
            total += st[1]
    return total


def self_cpu() -> float:
    t = os.times()
    return t.user + t.system


# --------------------------------------------------------------------------- statistics

def percentile(sorted_values: Sequence[float], q: float) -> float | None:
    if not sorted_values:
        return None
    k = (len(sorted_values) - 1) * q
    lo = int(k)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (k - lo)


def latency_summary(seconds: Sequence[float]) -> dict[str, float | None]:
    values = sorted(seconds)
    ms = lambda v: None if v is None else round(v * 1000, 3)  # noqa: E731
    return {"n": len(values), "p50_ms": ms(percentile(values, 0.50)), "p95_ms": ms(percentile(values, 0.95)),
            "p99_ms": ms(percentile(values, 0.99)), "max_ms": ms(values[-1] if values else None),
            "mean_ms": ms(sum(values) / len(values) if values else None)}


# --------------------------------------------------------------------------- processes

@dataclass
class Proc:
    name: str
    popen: subprocess.Popen[bytes]
    base_url: str
    log_dir: Path
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def cpu(self) -> float:
        return cpu_seconds(self.pid)

    def stop(self, timeout: float = 15) -> None:
        if self.popen.poll() is not None:
            return
        self.popen.send_signal(signal.SIGTERM)
        try:
            self.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait(timeout=5)

    def log_tail(self, n: int = 30) -> str:
        text = ""
        for stream in ("stdout", "stderr"):
            path = self.log_dir / f"{self.name}.{stream}"
            if path.exists():
                text += f"--- {path}\n" + "\n".join(path.read_text(errors="replace").splitlines()[-n:]) + "\n"
        return text


def start(name: str, cmd: list[str], *, env: dict[str, str], log_dir: Path, base_url: str,
          ready_path: str, timeout: float = 60) -> Proc:
    log_dir.mkdir(parents=True, exist_ok=True)
    out = open(log_dir / f"{name}.stdout", "wb")  # noqa: SIM115 - kept open for the child's life
    err = open(log_dir / f"{name}.stderr", "wb")  # noqa: SIM115
    full_env = os.environ | {"PYTHONUNBUFFERED": "1", "PYTHONPATH": str(ROOT)} | env
    popen = subprocess.Popen(cmd, env=full_env, stdout=out, stderr=err, cwd=ROOT,
                             start_new_session=True)
    proc = Proc(name, popen, base_url, log_dir)
    deadline = time.monotonic() + timeout
    while True:
        if popen.poll() is not None:
            raise RuntimeError(f"{name} exited with {popen.returncode} during start-up\n{proc.log_tail()}")
        try:
            if httpx.get(base_url + ready_path, timeout=2).status_code < 500:
                return proc
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            proc.stop()
            raise RuntimeError(f"{name} did not become ready in {timeout}s\n{proc.log_tail()}")
        time.sleep(0.1)


@contextlib.contextmanager
def running(procs: list[Proc]) -> Iterator[None]:
    try:
        yield
    finally:
        for p in reversed(procs):
            p.stop()


# --------------------------------------------------------------------------- machine info

def _version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def machine_info() -> dict[str, Any]:
    cpu_model = None
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    mem = None
    with contextlib.suppress(OSError, ValueError, IndexError):
        mem = int(Path("/proc/meminfo").read_text().split()[1]) // 1024
    import sqlite3
    import ssl

    pg = None
    with contextlib.suppress(Exception):
        pg = subprocess.run(["bash", "-c", "ls /usr/lib/postgresql/*/bin/postgres | head -1 | xargs -I{} {} --version"],
                            capture_output=True, text=True, timeout=10).stdout.strip() or None
    git = None
    with contextlib.suppress(Exception):
        git = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                             text=True, timeout=10).stdout.strip() or None
        dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "src"], capture_output=True,
                               text=True, timeout=10).stdout.strip()
        if git and dirty:
            git += "+dirty(src)"
    return {
        "cpu_model": cpu_model, "cores": os.cpu_count(), "memory_mib": mem, "kernel": platform.release(),
        "os": platform.platform(), "python": platform.python_version(), "openssl": ssl.OPENSSL_VERSION,
        "sqlite": sqlite3.sqlite_version, "postgresql": pg, "git": git,
        "packages": {n: _version(n) for n in (
            "minigate", "fastapi", "starlette", "uvicorn", "uvloop", "httptools", "sqlalchemy", "aiosqlite",
            "asyncpg", "cryptography", "httpx", "pydantic", "flask", "gunicorn", "wechatpayv3", "requests",
            "psycopg2-binary", "werkzeug", "py-spy")},
    }

"""``python -m bench profile``: py-spy attached to the gateway during checkout and a notification storm.

py-spy samples the running ``minigate serve`` process (threads holding the GIL, i.e. Python CPU; 250 Hz) from
outside: no code change, little overhead. The raw collapsed stacks are kept next to the JSON (feed them to
``flamegraph.pl`` or https://www.speedscope.app); the summary groups samples by what the CPU was doing.
"""

from __future__ import annotations

import re
import signal
import subprocess
from collections import Counter
from pathlib import Path
from typing import Any

from bench.common import PY
from bench.report import console

#: the first matching frame, walking from the leaf up, names the category of a sample
CATEGORIES: list[tuple[str, re.Pattern[str]]] = [
    ("RSA / AES (cryptography)",
     re.compile(r"cryptography/|minigate/providers/wechatpay/signing\.py|minigate/vault\.py")),
    ("SQLite driver (sqlite3 in aiosqlite's thread)", re.compile(r"aiosqlite/|sqlite3/")),
    ("asyncpg driver", re.compile(r"asyncpg/")),
    ("SQLAlchemy (ORM, core, pool)", re.compile(r"sqlalchemy/")),
    ("logging (structlog)", re.compile(r"structlog/|/logging/|minigate/logging\.py")),
    ("HTTP client (httpx over aiohttp)",
     re.compile(r"httpx/|httpcore/|h11/|anyio/|aiohttp/|yarl/|multidict/|minigate/transport\.py")),
    ("pydantic", re.compile(r"pydantic")),
    ("FastAPI / Starlette", re.compile(r"fastapi/|starlette/")),
    ("prometheus_client", re.compile(r"prometheus_client/")),
    ("uvicorn (HTTP server)", re.compile(r"uvicorn/|httptools/")),
    ("json", re.compile(r"json/")),
    ("minigate (own code)", re.compile(r"minigate/")),
    ("asyncio / uvloop event loop", re.compile(r"asyncio/|uvloop/|concurrent/|threading\.py|queue\.py")),
]


class Profiler:
    def __init__(self, tool: str, run_dir: Path, out_dir: Path, stamp: str) -> None:
        if tool != "py-spy":
            raise SystemExit("only py-spy can attach to a running gateway; pyinstrument needs code changes")
        self.out_dir = out_dir
        self.raw = out_dir / f"profile-{stamp}.collapsed.txt"
        self.proc: subprocess.Popen[bytes] | None = None
        self.summary: dict[str, Any] = {}

    def start(self, target: Any) -> None:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.pid = target.proc.pid
        spy = str(Path(PY).parent / "py-spy")
        self.proc = subprocess.Popen([spy, "record", "-p", str(self.pid), "--subprocesses", "-r", "250", "--gil",
                                      "-f", "raw", "-o", str(self.raw)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def stop(self) -> None:
        if self.proc is None:
            return
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.proc = None
        self.summary = summarise(self.raw)


def _func(frame: str) -> str:
    return re.sub(r":\d+\)$", ")", frame)


def summarise(path: Path, top: int = 25) -> dict[str, Any]:
    stacks: list[tuple[list[str], int]] = []
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if stack and count.isdigit():
            stacks.append((stack.split(";"), int(count)))
    total = sum(c for _, c in stacks) or 1
    categories: Counter[str] = Counter()
    self_time: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    for frames, count in stacks:
        for frame in reversed(frames):
            hit = next((name for name, pattern in CATEGORIES if pattern.search(frame)), None)
            if hit is not None:
                categories[hit] += count
                break
        else:
            categories["other"] += count
        self_time[_func(frames[-1])] += count
        for func in {_func(f) for f in frames}:
            inclusive[func] += count
    pct = lambda c: round(100 * c / total, 1)  # noqa: E731
    interesting = [(f, c) for f, c in inclusive.most_common()
                   if re.search(r"minigate/|sqlalchemy/|aiosqlite/|cryptography/|structlog/|httpx/|fastapi/", f)]
    return {"samples": total, "raw": str(path),
            "categories_pct": {k: pct(v) for k, v in categories.most_common()},
            "top_self_pct": [[f, pct(c)] for f, c in self_time.most_common(top)],
            "top_inclusive_pct": [[f, pct(c)] for f, c in interesting[:top * 2]]}


def print_summary(summary: dict[str, Any]) -> None:
    from rich.table import Table

    t = Table(title=f"Gateway CPU profile by category ({summary['samples']} samples)")
    t.add_column("category")
    t.add_column("% of CPU samples", justify="right")
    for k, v in summary["categories_pct"].items():
        t.add_row(k, f"{v}")
    console.print(t)
    t = Table(title="Top functions, inclusive (minigate, SQLAlchemy, drivers, crypto, logging, httpx)")
    t.add_column("function")
    t.add_column("%", justify="right")
    for f, v in summary["top_inclusive_pct"][:40]:
        t.add_row(f, f"{v}")
    console.print(t)
    t = Table(title="Top functions, self")
    t.add_column("function")
    t.add_column("%", justify="right")
    for f, v in summary["top_self_pct"]:
        t.add_row(f, f"{v}")
    console.print(t)

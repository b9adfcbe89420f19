"""Durable event ingestion and the embedded DuckDB store.

**Why a journal.** An event is acknowledged only once it is on disk, and a request carries a batch. Writing each
batch into DuckDB would make every request a DuckDB transaction (one writer process at a time, a commit per
request). Instead every gateway process appends the batch's lines to its own *journal segment* (newline-delimited
JSON) and the request waits for the ``fsync`` that covers it; concurrent requests share one ``fsync`` (group
commit). A *loader* then moves whole sealed segments into DuckDB in one transaction each, de-duplicating by event
id, and records the segment names in that same transaction (``loaded_segments``), so a crash between the commit
and deleting the files never loads a segment twice. This is the shape of every analytics pipeline that must not
lose data (PostHog: Kafka, then ClickHouse); here the log is a directory, which keeps ``make run`` one process.

**Segments.** ``journal/<host>-<pid>-<start>-<n>.open`` while a process writes it; renamed to ``.ndjson`` (sealed)
when it reaches ``segment_bytes`` or ``segment_seconds`` old, or on :meth:`AnalyticsStore.flush`. A ``.open``
file whose process is gone (same host, pid not alive) or untouched for ``orphan_seconds`` is sealed by the loader
after cutting any torn last line — such a line was never acknowledged.

**Processes and locks.** DuckDB lets one process write a database file, or many read it. Every connection is
opened for one operation under an advisory lock on ``store.lock``: shared for queries (read-only connections),
exclusive for the loader, erasure, purges and pulled metrics. Any number of gateway processes share one
directory; queries wait at most while a load runs (typically milliseconds to a second).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import os
import socket
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import duckdb

from minigate.analytics.schema import DDL, JOURNAL_COLUMNS
from minigate.logging import get_logger

__all__ = ["AnalyticsStore", "StoreBusy"]

log = get_logger("minigate.analytics")
T = TypeVar("T")

_OPEN = ".open"
_SEALED = ".ndjson"


class StoreBusy(Exception):
    """The store's lock could not be taken in time (a long load or erasure holds it)."""


class _Segment:
    """This process's open journal segment."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        self.size = 0
        self.opened = time.monotonic()


class _Journal:
    """Append-and-fsync with group commit: every waiter of one round is covered by one ``fsync``."""

    def __init__(self, directory: Path, *, segment_bytes: int, segment_seconds: float) -> None:
        self.directory = directory
        self.segment_bytes = segment_bytes
        self.segment_seconds = segment_seconds
        self._prefix = f"{socket.gethostname()}-{os.getpid()}-{time.time_ns()}"
        self._counter = 0
        self._segment: _Segment | None = None
        self._pending: list[bytes] = []
        self._waiters: list[asyncio.Future[None]] = []
        self._flusher: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()   # one rotation or write round at a time

    async def append(self, data: bytes) -> None:
        """Return once ``data`` (whole lines) is on disk."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        self._pending.append(data)
        self._waiters.append(future)
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush_rounds())
        await future

    async def _flush_rounds(self) -> None:
        while self._pending:
            chunk, waiters = b"".join(self._pending), self._waiters
            self._pending, self._waiters = [], []
            try:
                async with self._lock:
                    await asyncio.to_thread(self._write_sync, chunk)
            except BaseException as exc:  # every waiter of this round learns the write failed
                for waiter in waiters:
                    if not waiter.done():
                        waiter.set_exception(exc if isinstance(exc, Exception) else RuntimeError(str(exc)))
                if not isinstance(exc, Exception):
                    raise
                continue
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_result(None)

    def _write_sync(self, chunk: bytes) -> None:
        segment = self._segment
        if segment is None or self._due(segment):
            if segment is not None:
                self._seal(segment)
            segment = self._segment = self._new_segment()
        view = memoryview(chunk)
        while view:
            written = os.write(segment.fd, view)
            view = view[written:]
        os.fsync(segment.fd)
        segment.size += len(chunk)

    def _due(self, segment: _Segment) -> bool:
        return segment.size >= self.segment_bytes or time.monotonic() - segment.opened >= self.segment_seconds

    def _new_segment(self) -> _Segment:
        self._counter += 1
        segment = _Segment(self.directory / f"{self._prefix}-{self._counter:08d}{_OPEN}")
        _fsync_dir(self.directory)
        return segment

    def _seal(self, segment: _Segment) -> None:
        os.close(segment.fd)
        if segment.size == 0:
            segment.path.unlink(missing_ok=True)
        else:
            os.replace(segment.path, segment.path.with_suffix(_SEALED))
        _fsync_dir(self.directory)

    async def rotate(self, *, force: bool) -> None:
        """Seal the open segment when it is due (or always, with ``force``), so the loader can take it."""
        async with self._lock:
            segment = self._segment
            if segment is not None and (force or self._due(segment)):
                self._segment = None
                await asyncio.to_thread(self._seal, segment)

    def close(self) -> None:
        if self._segment is not None:
            self._seal(self._segment)
            self._segment = None


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class AnalyticsStore:
    """One directory: ``journal/``, ``events.duckdb`` and ``store.lock``. Safe to share between processes."""

    def __init__(self, directory: Path, *, segment_bytes: int = 8 << 20, segment_seconds: float = 1.0,
                 orphan_seconds: float = 120.0, dedup_days: int = 30, lock_timeout: float = 30.0,
                 memory_limit: str | None = None, threads: int | None = None) -> None:
        self.directory = Path(directory)
        self.journal_dir = self.directory / "journal"
        self.journal_dir.mkdir(parents=True, exist_ok=True)
        self.db_path = self.directory / "events.duckdb"
        self.lock_path = self.directory / "store.lock"
        self.orphan_seconds = orphan_seconds
        self.dedup_days = dedup_days
        self.lock_timeout = lock_timeout
        self._config: dict[str, Any] = {}
        if memory_limit:
            self._config["memory_limit"] = memory_limit
        if threads:
            self._config["threads"] = threads
        self._journal = _Journal(self.journal_dir, segment_bytes=segment_bytes, segment_seconds=segment_seconds)
        self._initialised = False

    # ------------------------------------------------------------------ ingest
    async def append(self, lines: Sequence[bytes]) -> None:
        """Durably journal events (each a JSON object line without its newline); returns when on disk."""
        if lines:
            await self._journal.append(b"\n".join(lines) + b"\n")

    async def flush(self) -> int:
        """Seal this process's segment and load every sealed segment now; returns events loaded."""
        await self._journal.rotate(force=True)
        return await self.load()

    async def tick(self) -> int:
        """The worker's step: seal a due segment, then load what is sealed."""
        await self._journal.rotate(force=False)
        return await self.load()

    async def load(self) -> int:
        return await asyncio.to_thread(self._load_sync)

    def close(self) -> None:
        self._journal.close()

    # ------------------------------------------------------------------ access
    async def read(self, fn: Callable[[duckdb.DuckDBPyConnection], T]) -> T:
        """Run ``fn`` on a read-only connection (in a thread, under the shared lock)."""
        return await asyncio.to_thread(self._with_connection, fn, False)

    async def write(self, fn: Callable[[duckdb.DuckDBPyConnection], T]) -> T:
        """Run ``fn`` in one transaction on a read-write connection (under the exclusive lock)."""
        def tx(con: duckdb.DuckDBPyConnection) -> T:
            con.execute("BEGIN")
            try:
                result = fn(con)
            except BaseException:
                con.execute("ROLLBACK")
                raise
            con.execute("COMMIT")
            return result
        return await asyncio.to_thread(self._with_connection, tx, True)

    def read_sync(self, fn: Callable[[duckdb.DuckDBPyConnection], T]) -> T:
        return self._with_connection(fn, False)

    def _with_connection(self, fn: Callable[[duckdb.DuckDBPyConnection], T], write: bool) -> T:
        with self._locked(exclusive=write or not self._initialised):
            if not self._initialised:
                self._init_schema()
            con = duckdb.connect(str(self.db_path), read_only=not write, config=dict(self._config))
            try:
                return fn(con)
            finally:
                con.close()

    @contextlib.contextmanager
    def _locked(self, *, exclusive: bool) -> Iterator[None]:
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            mode = fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH
            deadline = time.monotonic() + self.lock_timeout
            delay = 0.002
            while True:
                try:
                    fcntl.flock(fd, mode | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() >= deadline:
                        raise StoreBusy(f"analytics store busy for {self.lock_timeout:.0f} s") from None
                    time.sleep(delay)
                    delay = min(delay * 2, 0.05)
            yield
        finally:
            os.close(fd)   # closing the descriptor releases the lock

    def _init_schema(self) -> None:
        """Create the tables once per process (under the exclusive lock held by the caller)."""
        con = duckdb.connect(str(self.db_path), config=dict(self._config))
        try:
            for statement in DDL:
                con.execute(statement)
        finally:
            con.close()
        self._initialised = True

    # ------------------------------------------------------------------ loader
    def _sealed_segments(self) -> list[Path]:
        now = time.time()
        host = socket.gethostname()
        for path in self.journal_dir.glob(f"*{_OPEN}"):
            if path.name.startswith(self._journal._prefix):
                continue
            try:
                stat = path.stat()
            except FileNotFoundError:
                continue
            owner_host, _, rest = path.name.partition("-")
            pid_text = rest.split("-", 1)[0]
            gone = owner_host == host and pid_text.isdigit() and not _pid_alive(int(pid_text))
            if gone or now - stat.st_mtime >= self.orphan_seconds:
                _cut_torn_tail(path)
                with contextlib.suppress(FileNotFoundError):
                    os.replace(path, path.with_suffix(_SEALED))
        return sorted(self.journal_dir.glob(f"*{_SEALED}"))

    def _load_sync(self) -> int:
        segments = self._sealed_segments()
        if not segments:
            return 0
        loaded = 0
        with self._locked(exclusive=True):
            if not self._initialised:
                self._init_schema()
            con = duckdb.connect(str(self.db_path), config=dict(self._config))
            try:
                names = [p.name for p in segments]
                done = {row[0] for row in con.execute(
                    "SELECT name FROM loaded_segments WHERE name IN (SELECT unnest(?))", [names]).fetchall()}
                todo = [p for p in segments if p.name not in done and p.stat().st_size > 0]
                if todo:
                    loaded = self._load_segments(con, todo)
            finally:
                con.close()
        for path in segments:    # committed (or already loaded before): the files can go
            path.unlink(missing_ok=True)
        if loaded:
            log.debug("analytics segments loaded", segments=len(segments), events=loaded)
        return loaded

    def _load_segments(self, con: duckdb.DuckDBPyConnection, todo: list[Path]) -> int:
        columns = "{" + ", ".join(f"'{k}': '{v}'" for k, v in JOURNAL_COLUMNS.items()) + "}"
        horizon = datetime.now(UTC).replace(tzinfo=None) - timedelta(days=self.dedup_days)
        con.execute("BEGIN")
        try:
            base = con.execute("SELECT coalesce(max(seq), 0) FROM events").fetchone()
            start = int(base[0]) if base else 0
            con.execute(f"""
                CREATE TEMP TABLE incoming AS
                SELECT * FROM (
                    SELECT *, row_number() OVER (PARTITION BY app_id, mode, event_id ORDER BY received_at) AS rn
                    FROM read_json(?, format = 'newline_delimited', columns = {columns})
                ) WHERE rn = 1""", [[str(p) for p in todo]])
            con.execute("""
                INSERT INTO events
                SELECT ? + row_number() OVER (ORDER BY n.received_at, n.event_id), n.app_id, n.mode, n.event_id,
                       n.name, n.kind, n.distinct_id, n.user_id, n.session_id, epoch_ms(n.ts), epoch_ms(n.received_at),
                       n.page, n.platform, n.order_id, n.properties
                FROM incoming n
                WHERE NOT EXISTS (SELECT 1 FROM events e
                                  WHERE e.received_at >= ? AND e.event_id = n.event_id
                                    AND e.app_id = n.app_id AND e.mode = n.mode)""", [start, horizon])
            inserted_row = con.execute("SELECT coalesce(max(seq), 0) FROM events").fetchone()
            inserted = (int(inserted_row[0]) if inserted_row else 0) - start
            total_row = con.execute("SELECT count(*) FROM incoming").fetchone()
            total = int(total_row[0]) if total_row else 0
            con.executemany("INSERT INTO loaded_segments VALUES (?, ?, now())",
                            [[p.name, total] for p in todo])
            con.execute("DROP TABLE incoming")
            # names are needed only until their files are deleted, right after this commit
            con.execute("DELETE FROM loaded_segments WHERE loaded_at < now() - INTERVAL 7 DAY")
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise
        return inserted


def _cut_torn_tail(path: Path) -> None:
    """Drop a partial last line (written, never acknowledged) from an orphaned segment."""
    try:
        with open(path, "rb+") as handle:
            data = handle.read()
            end = data.rfind(b"\n") + 1
            if end != len(data):
                handle.truncate(end)
                handle.flush()
                os.fsync(handle.fileno())
    except FileNotFoundError:
        return


def journal_line(record: dict[str, Any]) -> bytes:
    """One event as a journal line (compact JSON, UTF-8)."""
    return json.dumps(record, ensure_ascii=False, separators=(",", ":")).encode()

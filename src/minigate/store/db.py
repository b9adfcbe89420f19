"""The engine: SQLite (WAL, synchronous=FULL, BEGIN IMMEDIATE) by default, PostgreSQL by URL."""

from __future__ import annotations

import asyncio
import time
import weakref
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine

__all__ = ["PING_IDLE_SECONDS", "Database", "after_commit", "normalise_url"]

#: PostgreSQL: a pooled connection idle this long is pinged before use, so a server restart or failover while
#: the gateway was quiet costs nothing. Busier connections are used as they are — SQLAlchemy's ``pool_pre_ping``
#: would ping every checkout (with asyncpg: BEGIN, a query, ROLLBACK — three round trips, ~17 % of checkout's
#: CPU, docs/performance.md). A connection that dies between two uses inside the window fails its transaction,
#: which rolls back like any failure (the client retries with its idempotency key), and SQLAlchemy then
#: replaces every pooled connection opened before the failure.
PING_IDLE_SECONDS = 10.0
_IDLE_SINCE = "minigate_idle_since"

_AFTER_COMMIT = "minigate_after_commit"
#: the databases whose in-process write lock the current task holds (so a nested write cannot wait on itself)
_WRITING: ContextVar[frozenset[Database]] = ContextVar("minigate_writing", default=frozenset())


def after_commit(session: AsyncSession, callback: Callable[[], None]) -> None:
    """Call ``callback`` once the unit of work ``session`` belongs to has committed (never if it rolls back):
    how a transaction tells someone in this process about rows they can now see, e.g. wakes the webhook worker.
    Only for sessions opened by :meth:`Database.transaction`."""
    callbacks: list[Callable[[], None]] = session.info.setdefault(_AFTER_COMMIT, [])
    if callback not in callbacks:
        callbacks.append(callback)


def normalise_url(url: str) -> str:
    """Accept plain ``postgresql://`` / ``sqlite:///`` URLs and pick the async drivers."""
    parsed = make_url(url)
    if parsed.drivername in ("postgresql", "postgres", "postgresql+psycopg2"):
        parsed = parsed.set(drivername="postgresql+asyncpg")
    elif parsed.drivername == "sqlite":
        parsed = parsed.set(drivername="sqlite+aiosqlite")
    return parsed.render_as_string(hide_password=False)


class Database:
    def __init__(self, url: str, *, pool_size: int = 10, echo: bool = False) -> None:
        self.url = normalise_url(url)
        parsed = make_url(self.url)
        self.is_sqlite = parsed.get_backend_name() == "sqlite"
        kwargs: dict[str, Any] = {"echo": echo}
        if self.is_sqlite:
            if parsed.database and parsed.database != ":memory:":
                Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
            kwargs["connect_args"] = {"timeout": 30}
        else:
            kwargs.update(pool_size=pool_size, max_overflow=pool_size)
        self.engine: AsyncEngine = create_async_engine(self.url, **kwargs)
        if self.is_sqlite:
            _configure_sqlite(self.engine)
        else:
            _ping_idle_connections(self.engine)
        self.sessionmaker = async_sessionmaker(self.engine, expire_on_commit=False)
        #: SQLite has one writer at a time: this process's writers queue here, in order, instead of all taking
        #: a connection and spinning in SQLite's busy handler (sleep 1, 2, 5, 10 … ms, retry) for the lock.
        #: Other processes still meet at SQLite's lock. One per event loop (a CLI may run several in turn).
        self._write_locks: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] | None = (
            weakref.WeakKeyDictionary() if self.is_sqlite else None)
        # reads: on SQLite a deferred BEGIN (a snapshot without the write lock: WAL readers never wait for
        # writers); on PostgreSQL an ordinary transaction
        self._read_engine = self.engine.execution_options(minigate_read_only=True)
        self._read_sessionmaker = async_sessionmaker(self._read_engine, expire_on_commit=False)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncSession]:
        """One unit of work: commits on success, rolls back on any exception."""
        async with self._writer(), self.sessionmaker() as session:
            async with session.begin():
                yield session
            for callback in session.info.pop(_AFTER_COMMIT, ()):
                callback()

    @asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncSession]:
        """A transaction that only reads. Writing in it is a bug (SQLite would then take the lock late)."""
        async with self._read_sessionmaker() as session, session.begin():
            yield session

    @asynccontextmanager
    async def core(self) -> AsyncIterator[AsyncConnection]:
        """A write unit of work in SQLAlchemy Core, without an ORM session: for the hot paths (checkout,
        idempotency), where the session's identity map and unit of work cost more CPU than the statements.
        Same transaction semantics and durability as :meth:`transaction` (``BEGIN IMMEDIATE`` on SQLite)."""
        async with self._writer(), self.engine.begin() as conn:
            yield conn

    @asynccontextmanager
    async def core_read(self) -> AsyncIterator[AsyncConnection]:
        """:meth:`read` in SQLAlchemy Core."""
        async with self._read_engine.begin() as conn:
            yield conn

    @asynccontextmanager
    async def _writer(self) -> AsyncIterator[None]:
        if self._write_locks is None:
            yield
            return
        loop = asyncio.get_running_loop()
        lock = self._write_locks.get(loop)
        if lock is None:
            lock = self._write_locks[loop] = asyncio.Lock()
        held = _WRITING.get()
        if self in held:             # a write nested in this task's own write: SQLite decides, as it always did
            yield
            return
        async with lock:
            token = _WRITING.set(held | {self})
            try:
                yield
            finally:
                _WRITING.reset(token)

    async def dispose(self) -> None:
        await self.engine.dispose()


def _ping_idle_connections(engine: AsyncEngine) -> None:
    sync = engine.sync_engine

    @event.listens_for(sync, "checkin")
    def _checked_in(dbapi_connection: Any, record: Any) -> None:
        record.info[_IDLE_SINCE] = time.monotonic()

    @event.listens_for(sync, "checkout")
    def _checked_out(dbapi_connection: Any, record: Any, proxy: Any) -> None:
        since = record.info.get(_IDLE_SINCE)
        if since is None or time.monotonic() - since < PING_IDLE_SECONDS:
            return
        try:
            sync.dialect.do_ping(dbapi_connection)
        except Exception as exc:   # the pool discards this connection and checks out another (up to 3 times)
            raise DisconnectionError("idle connection failed its ping") from exc


def _configure_sqlite(engine: AsyncEngine) -> None:
    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy's "begin" event issue BEGIN IMMEDIATE: a write transaction takes the write lock
        # up front instead of failing with SQLITE_BUSY when it upgrades from a read (no lost updates).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=FULL")   # durability first: never trade it for speed (D-5)
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(conn: Any) -> None:
        # straight to the driver: SQLAlchemy's statement machinery cost more CPU than the BEGIN itself
        cursor = conn.connection.dbapi_connection.cursor()
        try:
            cursor.execute("BEGIN" if conn.get_execution_options().get("minigate_read_only") else "BEGIN IMMEDIATE")
        finally:
            cursor.close()

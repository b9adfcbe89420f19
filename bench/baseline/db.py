"""The baselines' database engine, set up as carefully as minigate's: SQLite in WAL with ``synchronous=FULL``
(every commit durable), or PostgreSQL through psycopg2 with a small pool."""

from __future__ import annotations

from sqlalchemy import create_engine, event
from sqlalchemy.engine import Engine


def make_engine(url: str, *, immediate: bool = False) -> Engine:
    """``immediate``: SQLite transactions take the write lock at BEGIN (SQLAlchemy's documented recipe), for
    apps that read then write in one transaction from several processes — without it the second writer's
    upgrade from read to write fails with "database is locked" instead of waiting."""
    if not url.startswith("sqlite"):
        return create_engine(url, pool_size=5, max_overflow=5, pool_pre_ping=True)
    connect_args: dict[str, object] = {"timeout": 30}
    if immediate:
        connect_args["isolation_level"] = None
    engine = create_engine(url, connect_args=connect_args)

    @event.listens_for(engine, "connect")
    def _pragmas(dbapi_connection, _record):  # type: ignore[no-untyped-def]
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()

    if immediate:
        @event.listens_for(engine, "begin")
        def _begin(conn):  # type: ignore[no-untyped-def]
            conn.exec_driver_sql("BEGIN IMMEDIATE")

    return engine

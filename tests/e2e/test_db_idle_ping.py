"""PostgreSQL connections are pinged before use only after they sat idle (store/db.py ``PING_IDLE_SECONDS``).

The server is made to drop every pooled connection (``pg_terminate_backend``, what a restart or failover does):
after an idle spell the next transaction does not notice; inside the window the first one fails (and changes
nothing), and the one after it works on a fresh connection.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from minigate.store import db as db_module
from minigate.store.db import Database
from tests.conftest import PG_URL, _pg


@pytest.fixture
async def pg() -> AsyncIterator[Database]:
    if not PG_URL:
        pytest.fail("needs PostgreSQL: set MINIGATE_TEST_POSTGRES_URL (scripts/pg-throwaway.sh start)")
    database = Database(_pg(PG_URL), pool_size=2)
    async with database.core() as conn:
        await conn.execute(text("SELECT 1"))   # opens a pooled connection
    yield database
    await database.dispose()


async def _drop_all_connections(database: Database) -> int:
    """Terminate every other backend of this database user's pool, from a connection outside it."""
    outside = Database(_pg(PG_URL or ""), pool_size=1)
    try:
        async with outside.core() as conn:
            killed = (await conn.execute(text(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid() "
                "AND application_name = '' AND backend_type = 'client backend'"))).scalar_one()
    finally:
        await outside.dispose()
    return int(killed)


async def _backend(database: Database) -> int:
    async with database.core_read() as conn:
        return int((await conn.execute(text("SELECT pg_backend_pid()"))).scalar_one())


async def test_idle_connection_is_pinged_and_replaced(pg: Database, monkeypatch: pytest.MonkeyPatch) -> None:
    before = await _backend(pg)
    assert await _drop_all_connections(pg) >= 1
    monkeypatch.setattr(db_module, "PING_IDLE_SECONDS", 0.0)   # every pooled connection counts as idle
    after = await _backend(pg)                                # no error: the ping found it dead
    assert after != before


async def test_busy_connection_is_not_pinged(pg: Database, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(db_module, "PING_IDLE_SECONDS", 3600.0)
    before = await _backend(pg)
    assert await _backend(pg) == before                      # reused as it is
    assert await _drop_all_connections(pg) >= 1
    with pytest.raises(DBAPIError):                           # the first use finds it dead: one failed transaction
        await _backend(pg)
    assert await _backend(pg) != before                       # and the pool has moved on to a fresh connection

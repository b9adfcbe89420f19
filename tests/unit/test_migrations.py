"""The migrations build exactly the schema the tables declare: a column, index or constraint added to
``tables.py`` without its migration (or the reverse) fails here, before it fails on someone's database."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy.ext.asyncio import create_async_engine

from minigate.store.migrate import upgrade
from minigate.store.tables import Base


async def test_migrations_match_the_tables(tmp_path: Path) -> None:
    engine = create_async_engine(f"sqlite+aiosqlite:///{tmp_path / 'schema.db'}")
    try:
        await upgrade(engine)

        def diff(connection: Any) -> list[Any]:
            return list(compare_metadata(MigrationContext.configure(connection), Base.metadata))

        async with engine.connect() as conn:
            differences = await conn.run_sync(diff)
    finally:
        await engine.dispose()
    assert differences == []

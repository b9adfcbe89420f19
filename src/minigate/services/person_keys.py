"""Per-person data keys: crypto-shredding of one person's personal data (C-8, C-9).

The personal data minigate files under one subject of an app — a phone number (SMS messages), an ID number or
the merchant's reference for the person (identity verifications) — is sealed under that subject's own key, a
row of ``person_keys`` keyed by (app, mode, keyed lookup hash of the identifier). Erasure deletes the row in
the transaction that records the deletion, so every copy of those sealed values — a database backup, a dump, a
replica that lags — can no longer be opened by anyone, the operator included.

The key is stored sealed by the vault's shared data key (AES-256-GCM, the associated data binds it to its id),
and that data key is wrapped by the master key: a master-key rotation re-wraps the shared data keys and the
person keys follow without being touched. Keys are read from the database for every use and never cached: a
key erased by one process must not keep sealing or opening in another.

Values sealed before person keys existed name a shared data key and keep opening through the vault; only new
writes use person keys. A value whose person key is gone opens to :data:`ERASED` instead of raising, so a list
or an export shows that it was erased rather than failing.

The person keys must be backed up apart from the data (see ``docs/compliance.md``): a backup of the key table
that outlives the erasure would bring the data back.
"""

from __future__ import annotations

import base64
import os
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass

from sqlalchemy import delete, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession

from minigate.services.apps import AppContext
from minigate.services.runtime import Runtime
from minigate.store.tables import PersonKey
from minigate.vault import Vault

__all__ = ["ERASED", "KEY_PREFIX", "Sealer", "is_person_sealed", "open_many", "open_value", "sealer", "shred"]

#: what a value reads as once its person key has been shredded
ERASED = "[erased]"
#: person key ids start with this; shared data key ids are base32 (no ``-``), so the two never collide
KEY_PREFIX = "pk-"


def _wrap_context(key_id: str) -> str:
    return f"person-key:{key_id}"


@dataclass(frozen=True, slots=True)
class Sealer:
    """Seals values under one person's key (obtained by :func:`sealer` before the caller's transaction)."""

    key_id: str
    _key: bytes

    def seal(self, plaintext: str, *, context: str) -> str:
        return Vault.seal_with(self.key_id, self._key, plaintext, context=context)

    def __repr__(self) -> str:
        return f"Sealer(key_id={self.key_id!r})"


@asynccontextmanager
async def _session(rt: Runtime, session: AsyncSession | None) -> AsyncIterator[AsyncSession]:
    if session is not None:
        yield session
        return
    async with rt.db.transaction() as own:
        yield own


def _unwrap(rt: Runtime, row: PersonKey) -> bytes:
    return base64.b64decode(rt.vault.open(row.wrapped, context=_wrap_context(row.id)))


async def sealer(rt: Runtime, ctx: AppContext, subject_hash: str, *,
                 session: AsyncSession | None = None) -> Sealer:
    """The subject's key, made on first use. Two processes making it at once agree on one row (the insert
    does nothing on conflict; both then read the row that won). Pass ``session`` inside a transaction — on
    SQLite a second transaction would wait for the caller's write lock."""
    key_id = KEY_PREFIX + base64.b32encode(os.urandom(10)).decode().lower()
    raw = os.urandom(32)
    wrapped = rt.vault.seal(base64.b64encode(raw).decode(), context=_wrap_context(key_id))
    insert = sqlite_insert if rt.db.is_sqlite else pg_insert
    statement = insert(PersonKey).values(id=key_id, app_id=ctx.app_id, mode=ctx.mode, subject_hash=subject_hash,
                                         wrapped=wrapped, created_at=rt.now())
    async with _session(rt, session) as s:
        await s.execute(statement.on_conflict_do_nothing(index_elements=["app_id", "mode", "subject_hash"]))
        row = (await s.execute(select(PersonKey).where(
            PersonKey.app_id == ctx.app_id, PersonKey.mode == ctx.mode,
            PersonKey.subject_hash == subject_hash))).scalar_one()
        return Sealer(row.id, raw if row.id == key_id else _unwrap(rt, row))


def is_person_sealed(sealed: str) -> bool:
    key_id = Vault.key_id_of(sealed)
    return key_id is not None and key_id.startswith(KEY_PREFIX)


async def open_many(rt: Runtime, values: Iterable[tuple[str, str]], *,
                    session: AsyncSession | None = None) -> list[str]:
    """Open ``(sealed, context)`` pairs with one read of the person keys they name: shared-key values through
    the vault, person-key values with their key, :data:`ERASED` where the key is gone."""
    pairs = list(values)
    ids = {Vault.key_id_of(sealed) for sealed, _ in pairs if is_person_sealed(sealed)}
    keys: dict[str, bytes] = {}
    if ids:
        if session is not None:
            rows = (await session.execute(select(PersonKey).where(PersonKey.id.in_(ids)))).scalars().all()
        else:
            async with rt.db.read() as own:
                rows = (await own.execute(select(PersonKey).where(PersonKey.id.in_(ids)))).scalars().all()
        keys = {row.id: _unwrap(rt, row) for row in rows}
    out: list[str] = []
    for sealed, context in pairs:
        if not is_person_sealed(sealed):
            out.append(rt.vault.open(sealed, context=context))
            continue
        key = keys.get(Vault.key_id_of(sealed) or "")
        out.append(ERASED if key is None else Vault.open_with(key, sealed, context=context))
    return out


async def open_value(rt: Runtime, sealed: str, *, context: str, session: AsyncSession | None = None) -> str:
    """One value (see :func:`open_many`)."""
    return (await open_many(rt, [(sealed, context)], session=session))[0]


async def shred(session: AsyncSession, ctx: AppContext, subject_hashes: Iterable[str]) -> int:
    """Delete the subjects' keys, in the caller's transaction (the one that records the deletion)."""
    hashes = sorted(set(subject_hashes))
    if not hashes:
        return 0
    gone = (await session.execute(delete(PersonKey).where(
        PersonKey.app_id == ctx.app_id, PersonKey.mode == ctx.mode, PersonKey.subject_hash.in_(hashes))
        .returning(PersonKey.id))).all()
    return len(gone)


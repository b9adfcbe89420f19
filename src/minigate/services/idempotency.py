"""``Idempotency-Key`` with Stripe semantics and Brandur-style recovery points.

* same key + same request      -> the first response, replayed (status and body);
* same key + another request   -> 422 ``idempotency_key_reused``;
* same key while one is running -> 409 ``idempotency_key_in_use`` (retryable);
* a request that failed validation saves nothing (the key can be used again);
* a request whose provider call had an unknown outcome keeps its recovery point: the retry with the same
  key resumes from there, re-using the same provider ids (A-4, A-6); it is never turned into a failure.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, cast

from sqlalchemy import CursorResult, Table, bindparam, delete, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from minigate.errors import ApiError, Conflict, IdempotencyMismatch, InvalidRequest, OutcomeUnknown
from minigate.services.apps import AppContext
from minigate.services.runtime import Runtime
from minigate.store.tables import IdempotencyKey

__all__ = ["Idem", "Response", "fingerprint", "run_idempotent"]

STARTED = "started"
FINISHED = "finished"
#: the table in SQLAlchemy Core: every request with a key reads or writes it, so no ORM session is spent on it
KEYS = cast(Table, IdempotencyKey.__table__)
_COLUMNS = (KEYS.c.id, KEYS.c.fingerprint, KEYS.c.locked_until, KEYS.c.recovery_point, KEYS.c.resource_id,
            KEYS.c.response_status, KEYS.c.response_body, KEYS.c.expires_at)
#: statements built once, values bound per execution (building them each time cost more CPU than running them)
_BY_KEY = select(*_COLUMNS).where(KEYS.c.app_id == bindparam("k_app"), KEYS.c.mode == bindparam("k_mode"),
                                  KEYS.c.key == bindparam("k_key"))
_LOCK_BY_KEY = _BY_KEY.with_for_update()
_INSERT = insert(KEYS)
_CHECKPOINT = update(KEYS).where(KEYS.c.id == bindparam("k_id"))
_FINISH = _CHECKPOINT


@dataclass(slots=True)
class Response:
    status: int
    body: dict[str, Any]


@dataclass(slots=True)
class Idem:
    """Handed to a flow: where a previous attempt stopped, and how to record progress."""

    row_id: int | None = None
    recovery_point: str = STARTED
    resource_id: str | None = None
    replayed: bool = field(default=False)
    #: the response :meth:`finish` stored in a flow's own transaction (then no transaction of its own is needed)
    stored: Response | None = field(default=None)
    #: a new key whose row is written by the flow's first checkpoint (see ``lock_at_checkpoint``)
    deferred: dict[str, Any] | None = field(default=None, repr=False)
    #: the deferred row was inserted in a transaction not yet known to have committed (see :meth:`confirm`)
    unconfirmed: bool = field(default=False, repr=False)

    @property
    def written(self) -> bool:
        """Whether the key has a committed row this request may release or delete."""
        return self.row_id is not None and not self.unconfirmed

    def confirm(self) -> None:
        """Called by a ``lock_at_checkpoint`` flow right after the transaction of its first checkpoint committed.
        Until then the row may have rolled back — and its id, on SQLite, be reused by another request's row —
        so nothing is released or deleted by id."""
        self.unconfirmed = False

    async def checkpoint(self, session: AsyncSession | AsyncConnection, point: str,
                         resource_id: str | None = None) -> None:
        """Record a recovery point inside the caller's transaction (atomic with the phase's writes)."""
        self.recovery_point = point
        if resource_id is not None:
            self.resource_id = resource_id
        if self.row_id is None and self.deferred is not None:
            await self._insert(session, recovery_point=point, resource_id=self.resource_id)
        elif self.row_id is not None:
            await session.execute(_CHECKPOINT, {"k_id": self.row_id, "recovery_point": point,
                                                "resource_id": self.resource_id})

    async def finish(self, session: AsyncSession | AsyncConnection, response: Response) -> None:
        """Store the final response inside the caller's transaction — the flow's last write — so the key is
        finished atomically with it and the request saves one durable commit. The flow must return this very
        ``response``; anything else is stored again by :func:`run_idempotent`."""
        if self.row_id is None and self.deferred is not None:
            await self._insert(session, recovery_point=FINISHED, resource_id=self.resource_id,
                               locked_until=None, response_status=response.status, response_body=response.body)
        elif self.row_id is not None:
            await session.execute(_FINISH, _finish_params(self.row_id, response))
        self.stored = response

    async def _insert(self, session: AsyncSession | AsyncConnection, **values: Any) -> None:
        """The key's first row, in the flow's transaction. A concurrent request with the same key that wrote it
        first wins; this one is refused as in progress (its transaction, with the flow's writes, rolls back)."""
        assert self.deferred is not None
        try:
            created = cast(CursorResult[Any], await session.execute(_INSERT, {**self.deferred, **values}))
        except IntegrityError:
            raise Conflict("a request with this Idempotency-Key is in progress; retry later",
                           code="idempotency_key_in_use") from None
        assert created.inserted_primary_key is not None
        self.row_id = int(created.inserted_primary_key[0])
        self.unconfirmed = True


def _finish_params(row_id: int, response: Response) -> dict[str, Any]:
    return {"k_id": row_id, "recovery_point": FINISHED, "locked_until": None, "response_status": response.status,
            "response_body": response.body}


def fingerprint(method: str, path: str, body: Any) -> str:
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(f"{method.upper()} {path}\n{canonical}".encode()).hexdigest()


async def run_idempotent(rt: Runtime, ctx: AppContext, key: str | None, *, method: str, path: str, body: Any,
                         flow: Callable[[Idem], Awaitable[Response]], lock_at_checkpoint: bool = False) -> Response:
    """Run ``flow`` once per key. ``lock_at_checkpoint``: for a flow whose first checkpoint comes before any
    side effect (order creation: before the provider call), a new key's row is written by that checkpoint, in
    the flow's own transaction, instead of a transaction of its own — one durable commit less per request.
    Two requests racing with one new key then meet at the key's unique index: one wins, the other is refused
    with 409 ``idempotency_key_in_use`` and its writes roll back."""
    if key is None:
        return await flow(Idem())
    if not 1 <= len(key) <= 255 or not key.isprintable():
        raise InvalidRequest("Idempotency-Key must be 1-255 printable characters", param="Idempotency-Key",
                             code="invalid_idempotency_key")
    fp = fingerprint(method, path, body)
    replay, exists = await _finished(rt, ctx, key, fp)
    if replay is not None:        # the common retry: answered from a read, no lock taken
        return replay
    if lock_at_checkpoint and not exists:
        now = rt.now()
        idem = Idem(deferred=dict(
            app_id=ctx.app_id, mode=ctx.mode, key=key, fingerprint=fp, recovery_point=STARTED, resource_id=None,
            locked_until=now + timedelta(seconds=rt.settings.idempotency_lock_seconds), response_status=None,
            response_body=None, created_at=now, expires_at=now + timedelta(hours=rt.settings.idempotency_ttl_hours)))
    else:
        idem, replay = await _acquire(rt, ctx, key, fp)
        if replay is not None:
            return replay
    try:
        response = await flow(idem)
    except OutcomeUnknown:
        await _release(rt, idem)           # keep the recovery point: a retry resumes it
        raise
    except ApiError:
        if not idem.written:
            pass                            # a deferred key never written: nothing to forget
        elif idem.recovery_point == STARTED:  # nothing happened: forget the key
            async with rt.db.core() as conn:
                await conn.execute(delete(KEYS).where(KEYS.c.id == idem.row_id))
        else:
            await _release(rt, idem)
        raise
    except BaseException:
        await _release(rt, idem)
        raise
    if idem.stored is response:      # finished in the flow's last transaction
        return response
    assert not idem.unconfirmed, "a lock_at_checkpoint flow must confirm() its first commit"
    async with rt.db.core() as conn:
        if idem.row_id is None:          # a deferred key whose flow wrote nothing before answering
            await idem.finish(conn, response)
        else:
            await conn.execute(_FINISH, _finish_params(idem.row_id, response))
    return response


def _key_params(ctx: AppContext, key: str) -> dict[str, str]:
    return {"k_app": ctx.app_id, "k_mode": ctx.mode, "k_key": key}


async def _finished(rt: Runtime, ctx: AppContext, key: str, fp: str) -> tuple[Response | None, bool]:
    """(the stored response of a finished, unexpired key, whether the key has a row at all)."""
    async with rt.db.core_read() as conn:
        row = (await conn.execute(_BY_KEY, _key_params(ctx, key))).one_or_none()
    if row is None:
        return None, False
    if row.response_status is None or row.response_body is None or row.expires_at <= rt.now():
        return None, True
    if row.fingerprint != fp:
        raise IdempotencyMismatch("this Idempotency-Key was used with a different request",
                                  code="idempotency_key_reused")
    return Response(row.response_status, row.response_body), True


async def _acquire(rt: Runtime, ctx: AppContext, key: str, fp: str) -> tuple[Idem, Response | None]:
    now = rt.now()
    lock_until = now + timedelta(seconds=rt.settings.idempotency_lock_seconds)
    for _ in range(2):
        try:
            async with rt.db.core() as conn:
                row = (await conn.execute(_LOCK_BY_KEY, _key_params(ctx, key))).one_or_none()
                if row is not None and row.expires_at <= now:
                    await conn.execute(delete(KEYS).where(KEYS.c.id == row.id))
                    row = None
                if row is None:
                    created = await conn.execute(insert(KEYS).values(
                        app_id=ctx.app_id, mode=ctx.mode, key=key, fingerprint=fp, locked_until=lock_until,
                        recovery_point=STARTED, resource_id=None, response_status=None, response_body=None,
                        created_at=now, expires_at=now + timedelta(hours=rt.settings.idempotency_ttl_hours)))
                    assert created.inserted_primary_key is not None
                    return Idem(row_id=int(created.inserted_primary_key[0])), None
                if row.fingerprint != fp:
                    raise IdempotencyMismatch("this Idempotency-Key was used with a different request",
                                              code="idempotency_key_reused")
                if row.response_status is not None and row.response_body is not None:
                    return Idem(row_id=row.id, recovery_point=FINISHED, replayed=True), Response(
                        row.response_status, row.response_body)
                if row.locked_until is not None and row.locked_until > now:
                    raise Conflict("a request with this Idempotency-Key is in progress; retry later",
                                   code="idempotency_key_in_use")
                await conn.execute(update(KEYS).where(KEYS.c.id == row.id).values(locked_until=lock_until))
                return Idem(row_id=row.id, recovery_point=row.recovery_point, resource_id=row.resource_id), None
        except IntegrityError:
            continue  # another request inserted the key between our read and insert: read it again
    raise Conflict("a request with this Idempotency-Key is in progress; retry later", code="idempotency_key_in_use")


async def _release(rt: Runtime, idem: Idem) -> None:
    if not idem.written:         # a deferred key that was never written holds no lock
        return
    async with rt.db.core() as conn:
        await conn.execute(update(KEYS).where(KEYS.c.id == idem.row_id).values(locked_until=None))

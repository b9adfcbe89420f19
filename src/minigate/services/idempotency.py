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
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from minigate.errors import ApiError, Conflict, IdempotencyMismatch, InvalidRequest, OutcomeUnknown
from minigate.services.apps import AppContext
from minigate.services.runtime import Runtime
from minigate.store.tables import IdempotencyKey

__all__ = ["Idem", "Response", "fingerprint", "run_idempotent"]

STARTED = "started"
FINISHED = "finished"


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

    async def checkpoint(self, session: AsyncSession, point: str, resource_id: str | None = None) -> None:
        """Record a recovery point inside the caller's transaction (atomic with the phase's writes)."""
        self.recovery_point = point
        if resource_id is not None:
            self.resource_id = resource_id
        if self.row_id is not None:
            await session.execute(update(IdempotencyKey).where(IdempotencyKey.id == self.row_id).values(
                recovery_point=point, resource_id=self.resource_id))


def fingerprint(method: str, path: str, body: Any) -> str:
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(f"{method.upper()} {path}\n{canonical}".encode()).hexdigest()


async def run_idempotent(rt: Runtime, ctx: AppContext, key: str | None, *, method: str, path: str, body: Any,
                         flow: Callable[[Idem], Awaitable[Response]]) -> Response:
    if key is None:
        return await flow(Idem())
    if not 1 <= len(key) <= 255 or not key.isprintable():
        raise InvalidRequest("Idempotency-Key must be 1-255 printable characters", param="Idempotency-Key",
                             code="invalid_idempotency_key")
    fp = fingerprint(method, path, body)
    replay = await _finished(rt, ctx, key, fp)
    if replay is not None:        # the common retry: answered from a read, no lock taken
        return replay
    idem, replay = await _acquire(rt, ctx, key, fp)
    if replay is not None:
        return replay
    try:
        response = await flow(idem)
    except OutcomeUnknown:
        await _release(rt, idem)           # keep the recovery point: a retry resumes it
        raise
    except ApiError:
        if idem.recovery_point == STARTED:  # nothing happened: forget the key
            async with rt.db.transaction() as session:
                await session.execute(delete(IdempotencyKey).where(IdempotencyKey.id == idem.row_id))
        else:
            await _release(rt, idem)
        raise
    except BaseException:
        await _release(rt, idem)
        raise
    async with rt.db.transaction() as session:
        await session.execute(update(IdempotencyKey).where(IdempotencyKey.id == idem.row_id).values(
            recovery_point=FINISHED, locked_until=None, response_status=response.status,
            response_body=response.body))
    return response


async def _finished(rt: Runtime, ctx: AppContext, key: str, fp: str) -> Response | None:
    async with rt.db.read() as session:
        row = (await session.execute(select(IdempotencyKey).where(
            IdempotencyKey.app_id == ctx.app_id, IdempotencyKey.mode == ctx.mode,
            IdempotencyKey.key == key))).scalar_one_or_none()
    if row is None or row.response_status is None or row.response_body is None or row.expires_at <= rt.now():
        return None
    if row.fingerprint != fp:
        raise IdempotencyMismatch("this Idempotency-Key was used with a different request",
                                  code="idempotency_key_reused")
    return Response(row.response_status, row.response_body)


async def _acquire(rt: Runtime, ctx: AppContext, key: str, fp: str) -> tuple[Idem, Response | None]:
    now = rt.now()
    lock_until = now + timedelta(seconds=rt.settings.idempotency_lock_seconds)
    for _ in range(2):
        try:
            async with rt.db.transaction() as session:
                row = (await session.execute(
                    select(IdempotencyKey).where(IdempotencyKey.app_id == ctx.app_id,
                                                 IdempotencyKey.mode == ctx.mode, IdempotencyKey.key == key)
                    .with_for_update())).scalar_one_or_none()
                if row is not None and row.expires_at <= now:
                    await session.delete(row)
                    await session.flush()
                    row = None
                if row is None:
                    row = IdempotencyKey(app_id=ctx.app_id, mode=ctx.mode, key=key, fingerprint=fp,
                                         locked_until=lock_until, recovery_point=STARTED, created_at=now,
                                         expires_at=now + timedelta(hours=rt.settings.idempotency_ttl_hours))
                    session.add(row)
                    await session.flush()
                    return Idem(row_id=row.id), None
                if row.fingerprint != fp:
                    raise IdempotencyMismatch("this Idempotency-Key was used with a different request",
                                              code="idempotency_key_reused")
                if row.response_status is not None and row.response_body is not None:
                    return Idem(row_id=row.id, recovery_point=FINISHED, replayed=True), Response(
                        row.response_status, row.response_body)
                if row.locked_until is not None and row.locked_until > now:
                    raise Conflict("a request with this Idempotency-Key is in progress; retry later",
                                   code="idempotency_key_in_use")
                row.locked_until = lock_until
                return Idem(row_id=row.id, recovery_point=row.recovery_point, resource_id=row.resource_id), None
        except IntegrityError:
            continue  # another request inserted the key between our read and insert: read it again
    raise Conflict("a request with this Idempotency-Key is in progress; retry later", code="idempotency_key_in_use")


async def _release(rt: Runtime, idem: Idem) -> None:
    async with rt.db.transaction() as session:
        await session.execute(update(IdempotencyKey).where(IdempotencyKey.id == idem.row_id).values(
            locked_until=None))

"""The audit trail (B-15, C-11, C-14): an append-only, hash-chained, tamper-evident log of security-relevant
actions — key use and changes, refunds, manual redeliveries, data exports and erasures, consent changes,
operator SMS, API-key authentication failures.

Each entry carries ``prev_mac`` (the previous entry's ``mac``; the genesis value before the first) and
``mac = HMAC-SHA256(K, prev_mac ‖ canonical JSON of the entry)``. ``K``, the chain key, is used for nothing
else: 32 random bytes made by the first append and kept in the head row sealed by the vault, so it is only as
readable as the master key lets it be and survives a master-key rotation (which re-wraps data keys only).
Without ``K`` nobody can edit, insert, remove or reorder an entry and recompute a chain that :func:`verify`
accepts. Appends lock the one-row ``audit_head`` table in the caller's transaction (on
SQLite the write transaction already holds the database lock), so sequence numbers are gap-free and the chain
never forks, and an entry commits or rolls back with the action it records.

Entries hold identifiers, counts and reasons: never secrets or clear personal data (subjects appear only as
their keyed hash). Retention purges keep at least :data:`MIN_RETENTION_DAYS` and leave a checkpoint (the last
purged entry's number and mac, in the head row and in an ``audit.purged`` entry) so the rest still verifies.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
from collections.abc import AsyncIterator
from contextvars import ContextVar
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import delete, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from minigate.errors import InvalidRequest
from minigate.logging import get_logger, redact
from minigate.services.runtime import Runtime
from minigate.store.tables import AuditEntry, AuditHead, DeletionRecord
from minigate.vault import VaultError

__all__ = ["GENESIS", "MIN_RETENTION_DAYS", "PurgeReport", "VerifyReport", "actor_for", "bind_api_key",
           "bind_actor", "canonical", "entry_view", "export", "list_entries", "purge", "record", "record_auth_failure",
           "record_now", "verify"]

log = get_logger("minigate.audit")

#: ``prev_mac`` of the first entry
GENESIS = "0" * 64
#: security logs are kept at least six months (C-11); purges of younger entries are refused
MIN_RETENTION_DAYS = 183
_HEAD_ID = 1
_PAGE = 500

#: the API key of the request being served (set by :func:`minigate.services.apps.authenticate`)
_api_key: ContextVar[str | None] = ContextVar("minigate_audit_api_key", default=None)


def bind_api_key(key_id: str) -> None:
    """The authenticated API key becomes the actor of entries recorded while serving this request."""
    _api_key.set(key_id)


def bind_actor(actor: str) -> None:
    """A signed-in console user (``console:<user id>``) becomes the actor of entries recorded for this request."""
    _api_key.set(actor)


def actor_for(source: str) -> str | None:
    """The actor for an action started by ``source`` (api, console: the request's key or signed-in person;
    None lets :func:`record` pick)."""
    return {"api": None, "cli": "cli", "console": None, "worker": "worker"}.get(source, "system")


_KEY_CONTEXT = "audit-chain-key"


def _chain_key(rt: Runtime, head: AuditHead) -> bytes:
    if head.key_sealed is None:
        raise RuntimeError("the audit chain key is missing: run `minigate audit verify`")
    return bytes.fromhex(rt.vault.open(head.key_sealed, context=_KEY_CONTEXT))


def _ts(at: datetime) -> str:
    return at.astimezone(UTC).isoformat(timespec="microseconds")


def canonical(*, seq: int, at: datetime, app_id: str | None, mode: str | None, actor: str, action: str,
              target: str | None, details: dict[str, Any]) -> bytes:
    """The bytes an entry's mac covers (after ``prev_mac``): sorted keys, no spaces, UTF-8."""
    doc = {"seq": seq, "at": _ts(at), "app_id": app_id, "mode": mode, "actor": actor, "action": action,
           "target": target, "details": details}
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


def _mac(key: bytes, prev_mac: str, body: bytes) -> str:
    return hmac.new(key, prev_mac.encode("ascii") + body, hashlib.sha256).hexdigest()


def _entry_mac(key: bytes, row: AuditEntry) -> str:
    return _mac(key, row.prev_mac, canonical(seq=row.seq, at=row.at, app_id=row.app_id, mode=row.mode,
                                             actor=row.actor, action=row.action, target=row.target,
                                             details=row.details or {}))


def _clean(details: dict[str, Any]) -> dict[str, Any]:
    """The last line of defence: values under sensitive keys are dropped, free text is scrubbed; the result is
    plain JSON (so what is stored is exactly what was hashed)."""
    cleaned = dict(redact(None, "", dict(details)))
    return dict(json.loads(json.dumps(cleaned, allow_nan=False, default=str)))


async def _lock_head(session: AsyncSession) -> AuditHead:
    head = (await session.execute(select(AuditHead).where(AuditHead.id == _HEAD_ID).with_for_update()
                                  .execution_options(populate_existing=True))).scalar_one_or_none()
    if head is None:
        raise RuntimeError("the audit head row is missing: run `minigate audit verify`")
    return head


async def record(session: AsyncSession, rt: Runtime, *, action: str, app_id: str | None = None,
                 mode: str | None = None, target: str | None = None, details: dict[str, Any] | None = None,
                 actor: str | None = None, fallback_actor: str = "system") -> AuditEntry:
    """Append one entry inside the caller's (write) transaction: it commits or rolls back with the action.

    The actor is ``actor`` if given, else the API key serving the request, else ``fallback_actor``. Call it
    last in the transaction: the head row stays locked until commit.
    """
    head = await _lock_head(session)
    if head.key_sealed is None and head.seq == 0:         # the first append makes the chain key
        head.key_sealed = rt.vault.seal(secrets.token_hex(32), context=_KEY_CONTEXT)
    seq = head.seq + 1
    at = rt.now()            # read under the lock, so time follows sequence
    who = actor or _api_key.get() or fallback_actor
    clean = _clean(details or {})
    mac = _mac(_chain_key(rt, head), head.mac, canonical(seq=seq, at=at, app_id=app_id, mode=mode, actor=who,
                                                   action=action, target=target, details=clean))
    entry = AuditEntry(seq=seq, at=at, app_id=app_id, mode=mode, actor=who, action=action, target=target,
                       details=clean, prev_mac=head.mac, mac=mac)
    session.add(entry)
    head.seq, head.mac, head.updated_at = seq, mac, at
    await session.flush()
    return entry


async def record_now(rt: Runtime, **kwargs: Any) -> AuditEntry:
    """Append one entry in a transaction of its own (for actions that write nothing else)."""
    async with rt.db.transaction() as session:
        return await record(session, rt, **kwargs)


async def record_auth_failure(rt: Runtime, reason: str, *, key: Any = None) -> None:
    """An API-key authentication failure: the reason and, when the key is known (revoked, or live in test mode),
    its id and app — never the key presented. A failure to write is logged, never turned into another error."""
    try:
        await record_now(rt, action="api_key.auth_failed", app_id=getattr(key, "app_id", None),
                         mode=getattr(key, "mode", None), target=getattr(key, "id", None),
                         details={"reason": reason}, actor="anonymous")
    except Exception as exc:
        log.warning("audit entry not written", action="api_key.auth_failed", error=type(exc).__name__)


# -- verification ----------------------------------------------------------------------------------------------
@dataclass
class VerifyReport:
    ok: bool
    checked: int = 0
    problems: int = 0
    first_bad_seq: int | None = None
    first_problem: str | None = None
    head_seq: int = 0
    purged_seq: int = 0
    last_seq: int = 0
    messages: list[str] = field(default_factory=list)

    def add(self, seq: int, problem: str) -> None:
        self.ok = False
        self.problems += 1
        if len(self.messages) < 20:
            self.messages.append(f"#{seq}: {problem}")
        if self.first_bad_seq is None or seq < self.first_bad_seq:
            self.first_bad_seq, self.first_problem = seq, problem

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


async def _read_head(rt: Runtime) -> tuple[AuditHead | None, int | None]:
    async with rt.db.read() as session:
        head = (await session.execute(select(AuditHead).where(AuditHead.id == _HEAD_ID))).scalar_one_or_none()
        first = (await session.execute(select(AuditEntry.seq).order_by(AuditEntry.seq).limit(1))).scalar()
    return head, first


async def verify(rt: Runtime) -> VerifyReport:
    """Walk the whole chain. Detects an edited entry or forged mac (the mac does not match), a removed entry
    (a gap in the numbers), a reordered or inserted one (the link to the previous mac is broken), a truncated
    tail (the head row is ahead of the last entry), an entry added past the head, and a forged purge checkpoint.
    Appends made while it runs are walked too (the head is read again until the walk has caught up)."""
    head, first = await _read_head(rt)
    report = VerifyReport(ok=True)
    if head is None:
        report.add(1 if first is None else first, "the audit head row is missing")
        return report
    if head.key_sealed is None and head.seq == 0 and first is None:
        return report                                        # nothing recorded yet
    try:
        key = _chain_key(rt, head)
    except (RuntimeError, VaultError) as exc:
        report.add(head.purged_seq + 1, f"the chain key cannot be read ({exc})")
        return report
    expected, prev = head.purged_seq + 1, head.purged_mac
    last = head.purged_seq
    #: (through_seq, through_mac) of every audit.purged entry seen
    checkpoints: set[tuple[Any, Any]] = set()
    while True:
        async with rt.db.read() as session:
            rows = list((await session.execute(select(AuditEntry).where(AuditEntry.seq > last)
                                               .order_by(AuditEntry.seq).limit(_PAGE))).scalars())
        for row in rows:
            report.checked += 1
            if row.seq != expected:
                report.add(expected, f"entries {expected}..{row.seq - 1} are missing (removed)")
            if row.prev_mac != prev:
                report.add(row.seq, "does not link to the previous entry (removed, reordered or inserted)")
            if not hmac.compare_digest(_entry_mac(key, row), row.mac):
                report.add(row.seq, "mac does not match the entry (edited or forged)")
            if row.action == "audit.purged":
                checkpoints.add(((row.details or {}).get("through_seq"), (row.details or {}).get("through_mac")))
            expected, prev, last = row.seq + 1, row.mac, row.seq
        if len(rows) == _PAGE:
            continue
        latest, _ = await _read_head(rt)
        head = latest or head
        if not rows or head.seq <= last:
            break                                            # else appended meanwhile: walk on
    report.head_seq, report.purged_seq, report.last_seq = head.seq, head.purged_seq, last
    if last < head.seq:
        report.add(last + 1, f"entries {last + 1}..{head.seq} are missing (tail removed)")
    elif last > head.seq:
        report.add(head.seq + 1, f"entries {head.seq + 1}..{last} lie beyond the head of the chain (inserted)")
    elif prev != head.mac:
        report.add(last, "the last entry is not the head of the chain")
    if head.purged_seq and (head.purged_seq, head.purged_mac) not in checkpoints:
        report.add(head.purged_seq + 1, "the purge checkpoint is not confirmed by an audit.purged entry")
    return report


# -- export, listing -----------------------------------------------------------------------------------------
def entry_view(row: AuditEntry) -> dict[str, Any]:
    return {"seq": row.seq, "at": _ts(row.at), "app_id": row.app_id, "mode": row.mode, "actor": row.actor,
            "action": row.action, "target": row.target, "details": row.details or {},
            "prev_mac": row.prev_mac, "mac": row.mac}


async def export(rt: Runtime, since: datetime | None = None, until: datetime | None = None) -> AsyncIterator[str]:
    """The entries with ``since <= at < until``, in chain order, one JSON object a line (with their macs, so a
    copy kept off-host shows any later change to the database)."""
    last = 0
    while True:
        query = select(AuditEntry).where(AuditEntry.seq > last)
        if since is not None:
            query = query.where(AuditEntry.at >= since)
        if until is not None:
            query = query.where(AuditEntry.at < until)
        async with rt.db.read() as session:
            rows = list((await session.execute(query.order_by(AuditEntry.seq).limit(_PAGE))).scalars())
        for row in rows:
            yield json.dumps(entry_view(row), sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        if len(rows) < _PAGE:
            return
        last = rows[-1].seq


async def list_entries(rt: Runtime, *, app_id: str, mode: str, limit: int, starting_after: int | None = None,
                       action: str | None = None) -> tuple[list[AuditEntry], bool]:
    """One app's entries for one mode and its app-wide ones (no mode), newest first; ``starting_after`` is the
    ``seq`` of the last entry of the previous page."""
    query = select(AuditEntry).where(AuditEntry.app_id == app_id,
                                     or_(AuditEntry.mode == mode, AuditEntry.mode.is_(None)))
    if starting_after is not None:
        query = query.where(AuditEntry.seq < starting_after)
    if action:
        query = query.where(AuditEntry.action == action)
    async with rt.db.read() as session:
        rows = list((await session.execute(query.order_by(AuditEntry.seq.desc()).limit(limit + 1))).scalars())
    return rows[:limit], len(rows) > limit


# -- retention -----------------------------------------------------------------------------------------------
@dataclass
class PurgeReport:
    deleted: int
    through_seq: int
    cutoff: datetime


async def purge(rt: Runtime, older_than: timedelta, *, actor: str = "cli") -> PurgeReport:
    """Delete the oldest entries, those older than ``older_than`` (at least :data:`MIN_RETENTION_DAYS`).

    Only a prefix of the chain goes: everything before the first entry that is younger than the cutoff. The
    last purged entry's number and mac become the checkpoint from which :func:`verify` starts, confirmed by an
    ``audit.purged`` entry appended in the same transaction. A chain that does not verify is not purged.
    """
    if older_than < timedelta(days=MIN_RETENTION_DAYS):
        raise InvalidRequest(f"audit entries are kept at least {MIN_RETENTION_DAYS} days", param="older_than",
                             code="retention_too_short")
    report = await verify(rt)
    if not report.ok:
        raise InvalidRequest(f"the audit chain does not verify (first problem at #{report.first_bad_seq}): "
                             "keep it as evidence, purge nothing", code="audit_chain_broken")
    cutoff = rt.now() - older_than
    async with rt.db.transaction() as session:
        head = await _lock_head(session)
        first_kept = (await session.execute(select(AuditEntry.seq).where(
            AuditEntry.seq > head.purged_seq, AuditEntry.at >= cutoff).order_by(AuditEntry.seq).limit(1))
        ).scalar_one_or_none()
        through = head.seq if first_kept is None else first_kept - 1
        if through <= head.purged_seq:
            return PurgeReport(0, head.purged_seq, cutoff)
        through_mac = (await session.execute(select(AuditEntry.mac).where(AuditEntry.seq == through))).scalar_one()
        gone = len((await session.execute(delete(AuditEntry).where(
            AuditEntry.seq > head.purged_seq, AuditEntry.seq <= through).returning(AuditEntry.seq))).all())
        head.purged_seq, head.purged_mac = through, through_mac
        session.add(DeletionRecord(app_id=None, mode=None, reason="retention_purge", data_class="audit.entries",
                                   subject_hash=None, count=gone, details={"through_seq": through},
                                   created_at=rt.now()))
        await session.flush()
        await record(session, rt, action="audit.purged", actor=actor,
                     details={"through_seq": through, "through_mac": through_mac, "deleted": gone,
                              "older_than_days": older_than.days})
    log.info("audit entries purged", deleted=gone, through_seq=through)
    return PurgeReport(gone, through, cutoff)

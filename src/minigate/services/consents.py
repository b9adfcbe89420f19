"""The consent ledger, one for every purpose: append-only grants and withdrawals per subject (C-2, C-3, C-17).

Purposes and the identifier each is filed under (a keyed hash of it, so the ledger holds no clear personal
data): ``marketing_sms`` — the E.164 number; ``identity_id`` and ``identity_biometric`` — the ID number, or
the merchant's reference for the person (voiceprints); ``analytics`` — the app's user id. Evidence (text
version, source, masked number, keyword of an opt-out reply) is kept with each row. The latest row for (app,
mode, subject, purpose) is the current state; withdrawal takes effect at once, for every process (it is a
database read, not a cache).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from minigate.services import audit
from minigate.services.apps import AppContext
from minigate.services.runtime import Runtime
from minigate.store.tables import ConsentRecord

__all__ = ["ANALYTICS", "IDENTITY_BIOMETRIC", "IDENTITY_ID", "MARKETING_SMS", "PURPOSES", "current", "grant",
           "has_consent", "history", "latest_actions", "record_view", "subject_history", "withdraw"]

MARKETING_SMS = "marketing_sms"
IDENTITY_ID = "identity_id"
IDENTITY_BIOMETRIC = "identity_biometric"
ANALYTICS = "analytics"
PURPOSES = frozenset({MARKETING_SMS, IDENTITY_ID, IDENTITY_BIOMETRIC, ANALYTICS})


async def _add(rt: Runtime, ctx: AppContext, subject_hash: str, purpose: str, action: str, *, source: str,
               text_version: str | None = None, evidence: dict[str, Any] | None = None) -> ConsentRecord:
    row = ConsentRecord(app_id=ctx.app_id, mode=ctx.mode, subject_hash=subject_hash, purpose=purpose,
                        action=action, text_version=text_version, source=source, evidence=evidence or {},
                        created_at=rt.now())
    async with rt.db.transaction() as session:
        session.add(row)
        await audit.record(session, rt, action="consent.changed", app_id=ctx.app_id, mode=ctx.mode, target=subject_hash,
                           details={"purpose": purpose, "change": action, "source": source,
                                    "text_version": text_version}, actor=audit.actor_for(source))
    return row


async def grant(rt: Runtime, ctx: AppContext, subject_hash: str, purpose: str, *, text_version: str, source: str,
                evidence: dict[str, Any] | None = None) -> ConsentRecord:
    return await _add(rt, ctx, subject_hash, purpose, "grant", source=source, text_version=text_version,
                      evidence=evidence)


async def withdraw(rt: Runtime, ctx: AppContext, subject_hash: str, purpose: str, *, source: str,
                   evidence: dict[str, Any] | None = None) -> ConsentRecord:
    return await _add(rt, ctx, subject_hash, purpose, "withdraw", source=source, evidence=evidence)


async def current(rt: Runtime, ctx: AppContext, subject_hash: str, purpose: str) -> ConsentRecord | None:
    async with rt.db.read() as session:
        return (await session.execute(select(ConsentRecord).where(
            ConsentRecord.app_id == ctx.app_id, ConsentRecord.mode == ctx.mode,
            ConsentRecord.subject_hash == subject_hash, ConsentRecord.purpose == purpose)
            .order_by(ConsentRecord.id.desc()).limit(1))).scalar_one_or_none()


async def has_consent(rt: Runtime, ctx: AppContext, subject_hash: str, purpose: str) -> bool:
    latest = await current(rt, ctx, subject_hash, purpose)
    return latest is not None and latest.action == "grant"


async def history(rt: Runtime, ctx: AppContext, subject_hash: str, purpose: str) -> list[ConsentRecord]:
    async with rt.db.read() as session:
        return list((await session.execute(select(ConsentRecord).where(
            ConsentRecord.app_id == ctx.app_id, ConsentRecord.mode == ctx.mode,
            ConsentRecord.subject_hash == subject_hash, ConsentRecord.purpose == purpose)
            .order_by(ConsentRecord.id.desc()))).scalars())


async def latest_actions(rt: Runtime, ctx: AppContext, subject_hashes: list[str], purpose: str) -> dict[str, str]:
    """The current action (``grant`` | ``withdraw``) of each subject that has one, in one read."""
    if not subject_hashes:
        return {}
    async with rt.db.read() as session:
        rows = (await session.execute(select(ConsentRecord.subject_hash, ConsentRecord.action).where(
            ConsentRecord.app_id == ctx.app_id, ConsentRecord.mode == ctx.mode, ConsentRecord.purpose == purpose,
            ConsentRecord.subject_hash.in_(sorted(set(subject_hashes)))).order_by(ConsentRecord.id))).all()
    return {subject: action for subject, action in rows}      # ascending ids: the last row wins


async def subject_history(rt: Runtime, ctx: AppContext, subject_hashes: list[str],
                          purposes: frozenset[str] | None = None) -> list[ConsentRecord]:
    """Every row of these subjects (any purpose, or those given), newest first."""
    if not subject_hashes:
        return []
    query = select(ConsentRecord).where(ConsentRecord.app_id == ctx.app_id, ConsentRecord.mode == ctx.mode,
                                        ConsentRecord.subject_hash.in_(sorted(set(subject_hashes))))
    if purposes is not None:
        query = query.where(ConsentRecord.purpose.in_(sorted(purposes)))
    async with rt.db.read() as session:
        return list((await session.execute(query.order_by(ConsentRecord.id.desc()))).scalars())


def record_view(row: ConsentRecord) -> dict[str, Any]:
    return {"action": row.action, "purpose": row.purpose, "text_version": row.text_version, "source": row.source,
            "evidence": row.evidence, "created": int(row.created_at.timestamp())}

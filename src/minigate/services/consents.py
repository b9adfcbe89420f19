"""The consent ledger: append-only grants and withdrawals per subject and purpose (C-17; PIPL).

A subject is identified by a keyed hash (for SMS: of the E.164 number), so the ledger holds no clear
personal data; evidence (text version, source, masked number, keyword of an opt-out reply) is kept with
each row. The latest row for (app, mode, subject, purpose) is the current state; withdrawal takes effect
at once, for every process (it is a database read, not a cache).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from minigate.services import audit
from minigate.services.apps import AppContext
from minigate.services.runtime import Runtime
from minigate.store.tables import ConsentRecord

__all__ = ["MARKETING_SMS", "PURPOSES", "current", "grant", "has_consent", "history", "record_view", "withdraw"]

MARKETING_SMS = "marketing_sms"
PURPOSES = frozenset({MARKETING_SMS})


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


def record_view(row: ConsentRecord) -> dict[str, Any]:
    return {"action": row.action, "purpose": row.purpose, "text_version": row.text_version, "source": row.source,
            "evidence": row.evidence, "created": int(row.created_at.timestamp())}

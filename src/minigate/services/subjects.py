"""One subject request across every capability (C-8): export everything held about a person, or erase it.

A person is named by the identifiers the capabilities file data under — any of: a phone number (SMS messages,
verification codes, marketing consent, order contact numbers), an ID number or the merchant's reference for
the person (identity verifications and their consents), a user id (analytics events and consent), an openid
(the payer of orders). Each is turned into its keyed lookup hash; nothing is searched in clear.

Erasure deletes what may be deleted — SMS messages and verification codes, identity verifications, analytics
events, the contact number of their orders — and shreds the person keys those values were sealed under, in the
one transaction that writes the deletion records and the audit entry: a backup taken before the erasure no
longer opens them. What the law requires minigate to keep is kept and reported with the reason:

- orders and their payer openid: accounting vouchers, 30 years (会计档案管理办法 art. 14), and transaction
  records, at least 3 years (电子商务法 art. 31); the export shows the payer masked. The order's contact number
  (for order SMS) is not an accounting record and is erased (C-9: payment records keep no phone);
- consent records: the evidence that processing was lawful (PIPL art. 14/15, C-17); they hold keyed hashes and
  masked evidence only;
- SMS send/check decisions: anti-abuse evidence (B-24), keyed hashes only, purged with the decision log.

Analytics events live in the analytics store, not in the database: they are deleted first (a failure there
leaves the database untouched and the request can be repeated); events already forwarded to a destination
carried only a keyed pseudonym, and the destination's own erasure is the operator's.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import delete, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from minigate.errors import InvalidRequest
from minigate.identity import InvalidIdentity, mask_id_number, parse_id_number
from minigate.logging import get_logger
from minigate.phones import InvalidPhone, Phone, parse_phone
from minigate.services import analytics, audit, consents, identity, person_keys, sms
from minigate.services.apps import AppContext
from minigate.services.orders import PAYER_CONTEXT
from minigate.services.runtime import Runtime
from minigate.store.tables import (
    ConsentRecord,
    DeletionRecord,
    IdentityVerification,
    Order,
    SmsDecision,
    SmsMessage,
    VerificationCode,
)
from minigate.vault import mask

__all__ = ["KEPT_REASONS", "Subject", "erase", "export", "resolve"]

log = get_logger("minigate.subjects")

ERASED_MASK = "[erased]"
KEPT_REASONS = {
    "orders": "accounting and transaction records: kept 30 years (会计档案管理办法 art. 14, accounting vouchers; "
              "电子商务法 art. 31: transaction records at least 3 years); the payer stays sealed and is shown "
              "masked; the contact number is erased",
    "consents": "evidence that processing was lawful (PIPL art. 14-15; C-17): keyed hashes and masked evidence only",
    "sms_decisions": "anti-abuse evidence (B-24): keyed hashes only, purged with the decision log",
}


@dataclass(frozen=True, slots=True)
class Subject:
    """The identifiers of one person, validated; and the keyed hashes each capability files them under."""

    phone: Phone | None = None
    id_number: str | None = None
    reference: str | None = None
    user_id: str | None = None
    openid: str | None = None
    hashes: dict[str, str] = field(default_factory=dict)

    def masked(self) -> dict[str, str]:
        out: dict[str, str] = {}
        if self.phone:
            out["phone"] = self.phone.masked
        if self.id_number:
            out["id_number"] = mask_id_number(self.id_number)
        if self.reference:
            out["subject"] = mask(self.reference, keep_start=2, keep_end=0)
        if self.user_id:
            out["user_id"] = mask(self.user_id, keep_start=2, keep_end=0)
        if self.openid:
            out["openid"] = mask(self.openid)
        return out

    @property
    def identity_hashes(self) -> list[str]:
        return [self.hashes[k] for k in ("id_number", "subject") if k in self.hashes]

    @property
    def keyed(self) -> list[str]:
        """Every hash a person key may be filed under (phone; ID number; reference)."""
        return [self.hashes[k] for k in ("phone", "id_number", "subject") if k in self.hashes]

    def __repr__(self) -> str:
        return f"Subject({self.masked()})"


def _text(value: Any, param: str, limit: int) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not 1 <= len(value) <= limit:
        raise InvalidRequest(f"{param} must be 1-{limit} characters", param=param, code="invalid_subject")
    return value


def resolve(rt: Runtime, ctx: AppContext, *, phone: str | None = None, id_number: str | None = None,
            subject: str | None = None, user_id: str | None = None, openid: str | None = None) -> Subject:
    parsed_phone: Phone | None = None
    number: str | None = None
    if phone is not None:
        try:
            parsed_phone = parse_phone(phone, allowed_country_codes=None)
        except InvalidPhone as exc:
            raise InvalidRequest(exc.message, param="phone", code=exc.code) from None
    if id_number is not None:
        try:
            number = parse_id_number(id_number).value
        except InvalidIdentity as exc:
            raise InvalidRequest(exc.message, param="id_number", code=exc.code) from None
    reference = _text(subject, "subject", 128)
    user = _text(user_id, "user_id", 128)
    payer = _text(openid, "openid", 128)
    if not (parsed_phone or number or reference or user or payer):
        raise InvalidRequest("name the person: phone, id_number, subject, user_id and/or openid",
                             code="subject_required")
    hashes: dict[str, str] = {}
    if parsed_phone:
        hashes["phone"] = sms.phone_hash(rt, parsed_phone)
    if number:
        hashes["id_number"] = rt.vault.lookup_hash(number, context=identity.SUBJECT_CONTEXT)
    if reference:
        hashes["subject"] = rt.vault.lookup_hash(reference, context=identity.SUBJECT_CONTEXT)
    if user:
        hashes["user_id"] = analytics.person_hash(rt, ctx, user)
    if payer:
        hashes["openid"] = rt.vault.lookup_hash(payer, context=PAYER_CONTEXT)
    return Subject(parsed_phone, number, reference, user, payer, hashes)


def _ts(value: Any) -> int | None:
    return int(value.timestamp()) if value else None


def _consent_hashes(s: Subject) -> list[str]:
    return [s.hashes[k] for k in ("phone", "id_number", "subject", "user_id") if k in s.hashes]


def _order_filter(s: Subject) -> Any:
    clauses = []
    if "openid" in s.hashes:
        clauses.append(Order.payer_hash == s.hashes["openid"])
    if "phone" in s.hashes:
        clauses.append(Order.contact_phone_hash == s.hashes["phone"])
    return or_(*clauses) if clauses else None


async def _kept(session: AsyncSession, ctx: AppContext, s: Subject) -> dict[str, Any]:
    """What stays, with the reason: orders (masked), consents and SMS decisions (counted)."""
    orders: list[dict[str, Any]] = []
    where = _order_filter(s)
    if where is not None:
        rows = (await session.execute(select(Order).where(Order.app_id == ctx.app_id, Order.mode == ctx.mode, where)
                                      .order_by(Order.created_at))).scalars().all()
        for order in rows:
            by = [k for k, h in (("openid", order.payer_hash), ("phone", order.contact_phone_hash))
                  if h is not None and s.hashes.get(k) == h]
            orders.append({"id": order.id, "merchant_order_no": order.merchant_order_no, "channel": order.channel,
                           "amount": order.amount, "currency": order.currency, "status": order.status,
                           "created": _ts(order.created_at), "matched_by": by,
                           "payer": mask(s.openid) if s.openid and "openid" in by else "***",
                           "contact_phone": s.phone.masked if s.phone and "phone" in by else None})
    consent_count = len(await _consents(session, ctx, s))
    decisions = 0
    if "phone" in s.hashes:
        decisions = int((await session.execute(select(func.count()).select_from(SmsDecision).where(
            SmsDecision.app_id == ctx.app_id, SmsDecision.mode == ctx.mode,
            SmsDecision.phone_hash == s.hashes["phone"]))).scalar_one())
    return {"orders": {"data": orders, "reason": KEPT_REASONS["orders"]},
            "consents": {"count": consent_count, "reason": KEPT_REASONS["consents"]},
            "sms_decisions": {"count": decisions, "reason": KEPT_REASONS["sms_decisions"]}}


async def _consents(session: AsyncSession, ctx: AppContext, s: Subject) -> list[ConsentRecord]:
    hashes = _consent_hashes(s)
    if not hashes:
        return []
    return list((await session.execute(select(ConsentRecord).where(
        ConsentRecord.app_id == ctx.app_id, ConsentRecord.mode == ctx.mode,
        ConsentRecord.subject_hash.in_(hashes)).order_by(ConsentRecord.id))).scalars())


def _audit_target(s: Subject) -> str:
    return next(iter(s.hashes.values()))


async def export(rt: Runtime, ctx: AppContext, s: Subject) -> dict[str, Any]:
    """Everything held about the person, in clear where it is theirs (the copy they are entitled to), the kept
    payment records masked; a value whose person key was shredded reads ``[erased]``."""
    messages: list[SmsMessage] = []
    codes: list[VerificationCode] = []
    verifications: list[IdentityVerification] = []
    async with rt.db.read() as session:
        if "phone" in s.hashes:
            messages = list((await session.execute(select(SmsMessage).where(
                SmsMessage.app_id == ctx.app_id, SmsMessage.mode == ctx.mode,
                SmsMessage.phone_hash == s.hashes["phone"]).order_by(SmsMessage.created_at))).scalars())
            codes = list((await session.execute(select(VerificationCode).where(
                VerificationCode.app_id == ctx.app_id, VerificationCode.mode == ctx.mode,
                VerificationCode.phone_hash == s.hashes["phone"]).order_by(VerificationCode.created_at))).scalars())
        if s.identity_hashes:
            verifications = list((await session.execute(select(IdentityVerification).where(
                IdentityVerification.app_id == ctx.app_id, IdentityVerification.mode == ctx.mode,
                IdentityVerification.subject_hash.in_(s.identity_hashes))
                .order_by(IdentityVerification.created_at))).scalars())
        consent_rows = await _consents(session, ctx, s)
        kept = await _kept(session, ctx, s)
    opened = await person_keys.open_many(rt, [pair for m in messages for pair in (
        (m.phone_sealed, sms.PHONE_CONTEXT), (m.params_sealed, sms.PARAMS_CONTEXT))])
    sms_items = []
    for i, message in enumerate(messages):
        item = sms.message_view(message)
        phone, params = opened[2 * i], opened[2 * i + 1]
        item["phone"] = phone
        item["params"] = params if params == person_keys.ERASED else json.loads(params)
        sms_items.append(item)
    events = await analytics.person_events(rt, ctx, s.user_id) if s.user_id else []
    answer = {
        "object": "subject_export", "generated": int(time.time()), "identifiers": s.masked(),
        "sms": {"messages": sms_items, "verification_codes": [
            {"id": c.id, "purpose": c.purpose, "status": c.status, "created": _ts(c.created_at)} for c in codes]},
        "identity": {"verifications": await identity.verifications_in_clear(rt, verifications)},
        "consents": [consents.record_view(c) for c in consent_rows],
        "analytics": {"events": events},
        "kept": kept,
    }
    counts = {"sms_messages": len(sms_items), "verification_codes": len(codes),
              "verifications": len(verifications), "consents": len(consent_rows), "analytics_events": len(events),
              "orders_kept": len(kept["orders"]["data"])}
    await audit.record_now(rt, action="subject.exported", app_id=ctx.app_id, mode=ctx.mode,
                           target=_audit_target(s), details={"identifiers": sorted(s.hashes), **counts})
    log.info("subject data exported", app_id=ctx.app_id, **counts)
    return answer


async def erase(rt: Runtime, ctx: AppContext, s: Subject) -> dict[str, Any]:
    """Erase what may be erased, shred the person keys, record each deletion and one audit entry; report what
    was erased and what was kept, and why."""
    events, forwarded_to = (await analytics.delete_person_events(rt, ctx, s.user_id)) if s.user_id else (0, [])
    now = rt.now()
    erased: dict[str, int] = {"analytics_events": events}
    async with rt.db.transaction() as session:
        if "phone" in s.hashes:
            ph = s.hashes["phone"]
            erased["sms_messages"] = len((await session.execute(delete(SmsMessage).where(
                SmsMessage.app_id == ctx.app_id, SmsMessage.mode == ctx.mode, SmsMessage.phone_hash == ph)
                .returning(SmsMessage.id))).all())
            erased["verification_codes"] = len((await session.execute(delete(VerificationCode).where(
                VerificationCode.app_id == ctx.app_id, VerificationCode.mode == ctx.mode,
                VerificationCode.phone_hash == ph).returning(VerificationCode.id))).all())
            # an order's contact number serves order SMS only: not an accounting record (C-9), so it goes
            erased["order_contact_phones"] = len((await session.execute(update(Order).where(
                Order.app_id == ctx.app_id, Order.mode == ctx.mode, Order.contact_phone_hash == ph)
                .values(contact_phone_sealed=None, contact_phone_hash=None).returning(Order.id))).all())
        if s.identity_hashes:
            erased["identity_verifications"] = len((await session.execute(delete(IdentityVerification).where(
                IdentityVerification.app_id == ctx.app_id, IdentityVerification.mode == ctx.mode,
                IdentityVerification.subject_hash.in_(s.identity_hashes)).returning(IdentityVerification.id))).all())
        erased["person_keys"] = await person_keys.shred(session, ctx, s.keyed)
        kept = await _kept(session, ctx, s)
        classes = {"sms_messages": "sms.messages", "verification_codes": "sms.verification_codes",
                   "identity_verifications": "identity.verifications", "analytics_events": "analytics_events",
                   "order_contact_phones": "orders.contact_phone",
                   "person_keys": "person_keys"}
        for name, count in erased.items():
            if name == "analytics_events" and not s.user_id:
                continue
            session.add(DeletionRecord(
                app_id=ctx.app_id, mode=ctx.mode, reason="subject_erasure", data_class=classes[name],
                subject_hash=_audit_target(s), count=count, created_at=now,
                details={"identifiers": sorted(s.hashes)} | ({"forwarded_to": forwarded_to}
                                                             if name == "analytics_events" else {})))
        await audit.record(session, rt, action="subject.erased", app_id=ctx.app_id, mode=ctx.mode,
                           target=_audit_target(s), details={"identifiers": sorted(s.hashes), **erased,
                                                             "orders_kept": len(kept["orders"]["data"])})
    log.info("subject data erased", app_id=ctx.app_id, **erased)
    return {"object": "subject_erasure", "at": int(now.timestamp()), "identifiers": s.masked(), "erased": erased,
            # forwarded events carried only a keyed pseudonym; the destinations' own erasure is the operator's
            "forwarded_to": forwarded_to, "kept": kept}

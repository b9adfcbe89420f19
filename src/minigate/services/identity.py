"""Identity verifications: name + ID, face (a provider's mini-program flow, or an uploaded image), voiceprint.

One resource, ``idv_…``: created with a recorded consent (C-3), checked locally first (no provider is paid
for a malformed ID or name), sent to the first configured provider for its kind, and followed from
``pending`` to ``passed`` | ``failed`` | ``expired``. Names and ID numbers are sealed with a keyed-hash lookup
beside them and purged after ``retention_days``; images and audio go to the provider in the same request
and are never stored — only the outcome, the score and the provider's reference (C-4, C-5). Webhook events:
``identity.verified``, ``identity.failed``.
"""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator
from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from minigate.errors import (
    InvalidRequest,
    NotFound,
    OperationNotSupported,
    OutcomeUnknown,
    PermissionDenied,
    ProviderError,
    ServiceUnavailable,
)
from minigate.identity import InvalidIdentity, mask_id_number, mask_name, parse_id_number, parse_name
from minigate.logging import get_logger
from minigate.providers import registry
from minigate.providers.bases.identity import FaceImage, Outcome, PersonId, Verdict, VoiceSample
from minigate.services import audit, consents, person_keys
from minigate.services.app_settings import Section
from minigate.services.apps import AppContext
from minigate.services.ids import new_id
from minigate.services.runtime import Runtime
from minigate.store.tables import ConsentRecord, DeletionRecord, IdentityVerification

__all__ = ["CONSENT_PURPOSES", "IdentitySettings", "check_due_verifications", "create_verification",
           "erase_subject", "export_subject", "get_verification", "list_verifications", "purge_expired",
           "refresh_verification", "verification_view"]

log = get_logger("minigate.identity")

NAME_CONTEXT = "identity:name"
ID_CONTEXT = "identity:id_number"
SUBJECT_CONTEXT = "identity:subject"
#: the separate consent each kind needs (C-3): ID checks, and biometrics
CONSENT_PURPOSES = {"id_card": "identity_id", "face": "identity_biometric", "voiceprint": "identity_biometric"}
#: how often a pending face session is asked for its verdict
POLL_SECONDS = 10
MAX_IMAGE_CHARS = 4 * 1024 * 1024          # Base64 of ~3 MB (Tencent's limit; Baidu's is 2 MB decoded)
MAX_AUDIO_CHARS = 6 * 1024 * 1024          # Base64 of ~4 MB (Unisound)


Kind = Literal["id_card", "face", "voiceprint"]


def _default_providers() -> dict[Kind, list[str]]:
    return {"id_card": ["tencent-faceid", "baidu"], "face": ["tencent-faceid", "baidu"], "voiceprint": ["unisound"]}


class IdentitySettings(BaseModel):
    """Per app and mode (``app_settings`` section ``identity``); every field has a default."""

    model_config = ConfigDict(extra="forbid")
    #: provider order per kind; the first that offers the operation is used, the next on provider trouble
    providers: dict[Kind, list[str]] = Field(default_factory=_default_providers)
    #: names and ID numbers are purged from verification records after this many days
    retention_days: int = Field(default=30, ge=1, le=3650)
    #: verification records (outcome, score, provider reference) are deleted after this many days
    record_retention_days: int = Field(default=1095, ge=1, le=3650)

    @field_validator("providers")
    @classmethod
    def _known_providers(cls, value: dict[Kind, list[str]]) -> dict[Kind, list[str]]:
        for names in value.values():
            for name in names:
                if registry.identity_spec(name) is None:
                    raise ValueError(f"unknown identity provider {name!r}")
        return value


#: stored in ``app_settings`` (section ``identity``), validated, cached briefly, changes audited
settings_section = Section("identity", IdentitySettings, error_code="invalid_identity_settings", label="identity")
_settings = settings_section.load


async def save_settings(rt: Runtime, ctx: AppContext, data: dict[str, Any]) -> IdentitySettings:
    return await settings_section.save(rt, ctx, data)


# --------------------------------------------------------------------------- create

def _person(name: str | None, id_number: str | None) -> PersonId:
    try:
        return PersonId(parse_name(name or ""), parse_id_number(id_number or "").value)
    except InvalidIdentity as exc:
        raise InvalidRequest(exc.message, param="name" if exc.code == "invalid_name" else "id_number",
                             code=exc.code) from None


def _b64(value: str | None, param: str, limit: int) -> str:
    if not isinstance(value, str) or not value or len(value) > limit:
        raise InvalidRequest(f"{param} must be Base64 of at most {limit * 3 // 4} bytes", param=param,
                             code="invalid_media")
    if value.startswith("data:"):
        value = value.split(",", 1)[-1]
    import base64
    import binascii

    try:
        base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidRequest(f"{param} is not Base64", param=param, code="invalid_media") from None
    return value


async def create_verification(rt: Runtime, ctx: AppContext, body: dict[str, Any]) -> IdentityVerification:
    kind = body.get("kind")
    if kind not in CONSENT_PURPOSES:
        raise InvalidRequest("kind must be id_card, face or voiceprint", param="kind", code="invalid_kind")
    consent = body.get("consent")
    if not isinstance(consent, dict) or not consent.get("text_version") or consent.get("granted") is not True:
        raise PermissionDenied(f"a separate, recorded consent is required for {kind} checks: send "
                               '"consent": {"granted": true, "text_version": "..."}', param="consent",
                               code="consent_required")
    action = body.get("action", "verify")
    person: PersonId | None = None
    image: FaceImage | None = None
    sample: VoiceSample | None = None
    if kind in ("id_card", "face"):
        person = _person(body.get("name"), body.get("id_number"))
        subject = rt.vault.lookup_hash(person.id_number, context=SUBJECT_CONTEXT)
        if kind == "face" and body.get("image") is not None:
            image = FaceImage(_b64(body.get("image"), "image", MAX_IMAGE_CHARS))
    else:
        reference = body.get("subject")
        if not isinstance(reference, str) or not 1 <= len(reference) <= 128:
            raise InvalidRequest("subject must be your 1-128 character reference for the person (e.g. a user id)",
                                 param="subject", code="invalid_subject")
        if action not in ("enrol", "verify"):
            raise InvalidRequest("action must be enrol or verify", param="action", code="invalid_action")
        subject = rt.vault.lookup_hash(reference, context=SUBJECT_CONTEXT)
        sample = VoiceSample(_b64(body.get("audio"), "audio", MAX_AUDIO_CHARS),
                             int(body.get("sample_rate", 16000)), str(body.get("audio_format", "pcm")))
    settings = await _settings(rt, ctx)
    available = await rt.identity_provider_names(ctx.app_id, ctx.mode)
    wanted = body.get("provider")
    names = [wanted] if isinstance(wanted, str) else [n for n in settings.providers.get(kind, []) if n in available]
    if isinstance(wanted, str) and wanted not in available:
        raise InvalidRequest(f"provider {wanted!r} is not configured for this app", param="provider",
                             code="provider_not_configured")
    if not names:
        raise InvalidRequest(f"no identity provider is configured for {kind}", code="provider_not_configured")
    now = rt.now()
    record = ConsentRecord(app_id=ctx.app_id, mode=ctx.mode, subject_hash=subject, purpose=CONSENT_PURPOSES[kind],
                           action="grant", text_version=str(consent["text_version"])[:32], source="api",
                           evidence={k: str(v)[:200] for k, v in consent.items() if k in ("channel", "page", "at")},
                           created_at=now)
    row = IdentityVerification(
        id=new_id("idv"), app_id=ctx.app_id, mode=ctx.mode, kind=kind, action=action, provider=None,
        status="pending", reason=None, subject_hash=subject,
        name_sealed=None, id_number_sealed=None,
        masked=({"name": mask_name(person.name), "id_number": mask_id_number(person.id_number)} if person
                else {"subject": f"{str(body['subject'])[:2]}***"}),
        attempts=[], metadata_={k: str(v)[:200] for k, v in (body.get("metadata") or {}).items()},
        created_at=now, updated_at=now)
    async with rt.db.transaction() as session:
        if person is not None:        # sealed under the person's key: their erasure shreds every copy
            keys = await person_keys.sealer(rt, ctx, subject, session=session)
            row.name_sealed = keys.seal(person.name, context=NAME_CONTEXT)
            row.id_number_sealed = keys.seal(person.id_number, context=ID_CONTEXT)
        session.add(record)
        await session.flush()
        row.consent_record_id = record.id
        session.add(row)
    log.info("identity verification created", app_id=ctx.app_id, verification_id=row.id, kind=kind,
             providers=names)
    verdict, provider_name = await _run(rt, ctx, row, names, person=person, image=image, sample=sample,
                                        reference=body.get("subject"))
    return await _apply(rt, row.id, verdict, provider_name)


async def _run(rt: Runtime, ctx: AppContext, row: IdentityVerification, names: list[str], *,
               person: PersonId | None, image: FaceImage | None, sample: VoiceSample | None,
               reference: Any) -> tuple[Verdict | dict[str, Any], str | None]:
    """Ask the providers in order; provider trouble moves to the next (checks are reads: nothing to undo)."""
    last: Verdict = Verdict(Outcome.FAILED, "service_unavailable")
    for name in names:
        provider = await rt.identity_provider(ctx.app_id, ctx.mode, name)
        try:
            if row.kind == "id_card":
                assert person is not None
                result = await provider.check_id(person)
            elif row.kind == "face" and image is not None:
                assert person is not None
                result = await provider.verify_face(person, image)
            elif row.kind == "face":
                if provider.face_mode != "session":
                    continue
                assert person is not None
                started = await provider.start_face(person, reference=row.id)
                if started.ok and started.value is not None:
                    return {"session": started.value}, name
                log.warning("face session refused", provider=name, code=str(started.code))
                continue
            else:
                assert sample is not None
                pseudonym = rt.vault.lookup_hash(f"{ctx.app_id}|{reference}", context="voiceprint")[:32]
                call = provider.enrol_voice if row.action == "enrol" else provider.verify_voice
                result = await call(pseudonym, sample)
        except OperationNotSupported:
            continue
        except (OutcomeUnknown, ProviderError) as exc:
            log.warning("identity provider unavailable", provider=name, error=type(exc).__name__)
            continue
        if result.ok and result.value is not None:
            return result.value, name
        last = Verdict(Outcome.FAILED, "service_unavailable", provider_code=result.provider_code)
        log.warning("identity provider declined the call", provider=name, code=str(result.code))
    return last, None


async def _apply(rt: Runtime, verification_id: str, verdict: Verdict | dict[str, Any],
                 provider: str | None) -> IdentityVerification:
    now = rt.now()
    async with rt.db.transaction() as session:
        row = await _lock(session, verification_id)
        if row.status != "pending":
            return row
        if provider:
            row.provider = provider
        if isinstance(verdict, dict):           # a face session the user now runs in the mini-program
            session_ = verdict["session"]
            row.provider_ref = session_.provider_ref
            row.client_params = session_.client_params
            row.expires_at = now + timedelta(seconds=session_.expires_in)
            row.next_check_at = now + timedelta(seconds=POLL_SECONDS)
            row.updated_at = now
            return row
        row.attempts = [*(row.attempts or []), {"provider": provider, "outcome": str(verdict.outcome),
                                                "reason": verdict.reason, "at": int(now.timestamp())}]
        row.provider_ref = verdict.provider_ref or row.provider_ref
        row.provider_code = verdict.provider_code
        row.score, row.liveness = verdict.score, verdict.liveness
        row.updated_at = now
        if verdict.outcome is Outcome.PENDING:
            row.next_check_at = now + timedelta(seconds=POLL_SECONDS)
            return row
        if verdict.reason == "service_unavailable" and provider is None:
            row.status, row.reason, row.completed_at, row.next_check_at = "failed", verdict.reason, now, None
            await _emit(rt, session, row, "identity.failed")
            raise_unavailable = True
        else:
            row.status = {Outcome.PASSED: "passed", Outcome.EXPIRED: "expired"}.get(verdict.outcome, "failed")
            row.reason, row.completed_at, row.next_check_at = verdict.reason, now, None
            row.client_params = None
            await _emit(rt, session, row, "identity.verified" if row.status == "passed" else "identity.failed")
            log.info("identity verification completed", verification_id=row.id, kind=row.kind, provider=provider,
                     status=row.status, reason=row.reason)
            raise_unavailable = False
    if raise_unavailable:
        raise ServiceUnavailable("no identity provider could run the check; try again shortly",
                                 code="identity_provider_unavailable", details={"verification": row.id})
    return row


async def _emit(rt: Runtime, session: AsyncSession, row: IdentityVerification, type: str) -> None:
    from minigate.services import events

    await events.emit(session, rt, app_id=row.app_id, mode=row.mode, type=type, obj=verification_view(row),
                      now=rt.now())


async def _lock(session: AsyncSession, verification_id: str) -> IdentityVerification:
    row = (await session.execute(select(IdentityVerification).where(IdentityVerification.id == verification_id)
                                 .with_for_update().execution_options(populate_existing=True))).scalar_one_or_none()
    if row is None:
        raise NotFound(f"no such verification: {verification_id}", code="resource_missing")
    return row


# --------------------------------------------------------------------------- follow up

async def get_verification(rt: Runtime, ctx: AppContext, verification_id: str) -> IdentityVerification:
    async with rt.db.read() as session:
        row = await session.get(IdentityVerification, verification_id)
    if row is None or row.app_id != ctx.app_id or row.mode != ctx.mode:
        raise NotFound(f"no such verification: {verification_id}", param="id", code="resource_missing")
    return row


async def refresh_verification(rt: Runtime, ctx: AppContext, verification_id: str) -> IdentityVerification:
    """Ask the provider for the verdict of a pending face session now (the worker also does, every 10 s)."""
    row = await get_verification(rt, ctx, verification_id)
    return await _follow(rt, row)


async def _follow(rt: Runtime, row: IdentityVerification) -> IdentityVerification:
    if row.status != "pending" or row.provider is None or row.provider_ref is None:
        return row
    if row.expires_at is not None and rt.now() >= row.expires_at:
        return await _apply(rt, row.id, Verdict(Outcome.EXPIRED, "expired"), row.provider)
    provider = await rt.identity_provider(row.app_id, row.mode, row.provider)
    try:
        result = await provider.face_result(row.provider_ref)
    except (OutcomeUnknown, ProviderError):
        return row
    if not result.ok or result.value is None:
        return row
    return await _apply(rt, row.id, result.value, row.provider)


async def list_verifications(rt: Runtime, ctx: AppContext, *, limit: int, status: str | None = None,
                             kind: str | None = None) -> list[IdentityVerification]:
    query = select(IdentityVerification).where(IdentityVerification.app_id == ctx.app_id,
                                               IdentityVerification.mode == ctx.mode)
    if status:
        query = query.where(IdentityVerification.status == status)
    if kind:
        query = query.where(IdentityVerification.kind == kind)
    async with rt.db.read() as session:
        return list((await session.execute(query.order_by(IdentityVerification.created_at.desc())
                                           .limit(limit))).scalars())


def verification_view(row: IdentityVerification) -> dict[str, Any]:
    def ts(value: Any) -> int | None:
        return int(value.timestamp()) if value else None

    view: dict[str, Any] = {
        "id": row.id, "object": "identity_verification", "livemode": row.mode == "live", "kind": row.kind,
        "action": row.action, "status": row.status, "reason": row.reason, "provider": row.provider,
        "provider_reference": row.provider_ref, "score": row.score, "liveness": row.liveness,
        "person": row.masked or {}, "metadata": row.metadata_ or {}, "created": ts(row.created_at),
        "completed_at": ts(row.completed_at), "expires_at": ts(row.expires_at),
        "personal_data_purged": row.personal_data_purged_at is not None,
    }
    if row.status == "pending" and row.client_params:
        view["client_params"] = row.client_params
    return view


async def check_due_verifications(rt: Runtime, *, limit: int = 50) -> int:
    """Pending face sessions: ask for their verdict, or expire them."""
    now = rt.now()
    async with rt.db.transaction() as session:
        query = select(IdentityVerification).where(
            IdentityVerification.status == "pending", IdentityVerification.next_check_at.is_not(None),
            IdentityVerification.next_check_at <= now).order_by(IdentityVerification.next_check_at).limit(limit)
        if not rt.db.is_sqlite:
            query = query.with_for_update(skip_locked=True)
        rows = list((await session.execute(query)).scalars())
        for row in rows:
            row.next_check_at = now + timedelta(seconds=POLL_SECONDS)
    for row in rows:
        try:
            await _follow(rt, row)
        except Exception:  # one session must not stop the others; logged with its traceback
            log.exception("identity follow-up failed", verification_id=row.id)
    return len(rows)


# --------------------------------------------------------------------------- retention and subject rights

async def purge_expired(rt: Runtime) -> dict[str, int]:
    """Retention (C-9): names and ID numbers after ``retention_days``; whole records after
    ``record_retention_days``; each purge leaves a deletion record."""
    now = rt.now()
    counts = {"personal_data": 0, "records": 0}
    async with rt.db.read() as session:
        apps = list((await session.execute(select(IdentityVerification.app_id, IdentityVerification.mode)
                                            .distinct())).all())
    for app_id, mode in apps:
        settings = await _settings(rt, AppContext(app_id, mode))
        async with rt.db.transaction() as session:
            rows = list((await session.execute(select(IdentityVerification).where(
                IdentityVerification.app_id == app_id, IdentityVerification.mode == mode,
                IdentityVerification.personal_data_purged_at.is_(None),
                IdentityVerification.created_at <= now - timedelta(days=settings.retention_days)))).scalars())
            for row in rows:
                row.name_sealed = row.id_number_sealed = None
                row.personal_data_purged_at = now
            old = (await session.execute(delete(IdentityVerification).where(
                IdentityVerification.app_id == app_id, IdentityVerification.mode == mode,
                IdentityVerification.created_at <= now - timedelta(days=settings.record_retention_days))
                .returning(IdentityVerification.id))).all()
            for data_class, count in (("identity.personal_data", len(rows)), ("identity.records", len(old))):
                if count:
                    session.add(DeletionRecord(app_id=app_id, mode=mode, reason="retention_purge",
                                               data_class=data_class, count=count, created_at=now,
                                               details={"retention_days": settings.retention_days
                                                        if data_class.endswith("data")
                                                        else settings.record_retention_days}))
        counts["personal_data"] += len(rows)
        counts["records"] += len(old)
    return counts


def _subject(rt: Runtime, id_number: str | None, subject: str | None) -> str:
    if id_number:
        try:
            return rt.vault.lookup_hash(parse_id_number(id_number).value, context=SUBJECT_CONTEXT)
        except InvalidIdentity as exc:
            raise InvalidRequest(exc.message, param="id_number", code=exc.code) from None
    if subject:
        return rt.vault.lookup_hash(subject, context=SUBJECT_CONTEXT)
    raise InvalidRequest("give id_number or subject", code="subject_required")


async def export_subject(rt: Runtime, ctx: AppContext, *, id_number: str | None = None,
                         subject: str | None = None) -> dict[str, Any]:
    """Everything held about one person (C-8): their verifications with the name and ID in clear — this is the
    copy the person is entitled to — and their identity consents."""
    key = _subject(rt, id_number, subject)
    async with rt.db.read() as session:
        rows = list((await session.execute(select(IdentityVerification).where(
            IdentityVerification.app_id == ctx.app_id, IdentityVerification.mode == ctx.mode,
            IdentityVerification.subject_hash == key).order_by(IdentityVerification.created_at))).scalars())
        consent_rows = list((await session.execute(select(ConsentRecord).where(
            ConsentRecord.app_id == ctx.app_id, ConsentRecord.mode == ctx.mode,
            ConsentRecord.subject_hash == key).order_by(ConsentRecord.id))).scalars())
    await audit.record_now(rt, action="identity.exported", app_id=ctx.app_id, mode=ctx.mode, target=key,
                           details={"verifications": len(rows), "consents": len(consent_rows)})
    items = await verifications_in_clear(rt, rows)
    log.info("identity data exported", app_id=ctx.app_id, verifications=len(items))
    return {"object": "identity_export", "generated": int(time.time()), "verifications": items,
            "consents": [consents.record_view(c) for c in consent_rows]}


async def verifications_in_clear(rt: Runtime, rows: list[IdentityVerification]) -> list[dict[str, Any]]:
    """Verification views with the name and ID number opened (the person's own copy); a value whose person key
    was shredded reads as ``[erased]``."""
    sealed = [r for r in rows if r.name_sealed and r.id_number_sealed]
    opened = await person_keys.open_many(rt, [pair for r in sealed for pair in (
        (r.name_sealed or "", NAME_CONTEXT), (r.id_number_sealed or "", ID_CONTEXT))])
    clear = {r.id: {"name": opened[2 * i], "id_number": opened[2 * i + 1]} for i, r in enumerate(sealed)}
    items = []
    for row in rows:
        item = verification_view(row)
        item.pop("client_params", None)
        if row.id in clear:
            item["person"] = clear[row.id]
        items.append(item)
    return items


async def erase_subject(rt: Runtime, ctx: AppContext, *, id_number: str | None = None,
                        subject: str | None = None) -> dict[str, Any]:
    """Erase one person's identity data (C-8): their verifications are deleted and their person key shredded (so
    no backup copy of the name or ID number opens any more); a deletion record says what and when. Consent
    records stay: they are the evidence that processing was lawful (kept per C-17)."""
    key = _subject(rt, id_number, subject)
    now = rt.now()
    async with rt.db.transaction() as session:
        gone = (await session.execute(delete(IdentityVerification).where(
            IdentityVerification.app_id == ctx.app_id, IdentityVerification.mode == ctx.mode,
            IdentityVerification.subject_hash == key).returning(IdentityVerification.id))).all()
        shredded = await person_keys.shred(session, ctx, [key])
        session.add(DeletionRecord(app_id=ctx.app_id, mode=ctx.mode, reason="subject_erasure",
                                   data_class="identity.verifications", subject_hash=key, count=len(gone),
                                   details={"person_keys_shredded": shredded}, created_at=now))
        await audit.record(session, rt, action="identity.erased", app_id=ctx.app_id, mode=ctx.mode, target=key,
                           details={"verifications": len(gone), "person_keys_shredded": shredded})
    log.info("identity data erased", app_id=ctx.app_id, verifications=len(gone))
    return {"object": "identity_erasure", "deleted_verifications": len(gone), "at": int(now.timestamp())}

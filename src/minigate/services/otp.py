"""Verification codes (B-20..B-28): send and check, safe against guessing, bombing and pumping.

- 6 digits from ``secrets`` (B-20); only an HMAC of (app, mode, phone, purpose, code) is stored (B-23);
- valid ``code_ttl_seconds`` (default 300), single use, bound to phone + purpose; a new code supersedes the
  previous one; a code dies after ``max_code_attempts`` wrong tries; at most ``checks_per_phone_day``
  checks per phone and purpose a day (B-21, B-22); the comparison is constant-time;
- sends are limited per phone (1/min, 5/h, 10/day), per IP and per device (10/h, 20/day), per number
  prefix (the number without its last four digits) and per app per day, all *before* any provider call
  (B-24); limits live in Redis when configured, so every process shares them;
- the answer says ``captcha_required`` when a window is nearly spent, and every refusal says it too (B-25);
- +86 only unless the app enables other country codes (B-26); every decision is recorded;
- the answer does not depend on whether the number belongs to a user (B-28): minigate does not know.
"""

from __future__ import annotations

import hmac
import re
import secrets
from datetime import timedelta
from typing import Any

from prometheus_client import Counter
from sqlalchemy import select, update

from minigate.errors import InvalidRequest, RateLimited, ServiceUnavailable
from minigate.logging import get_logger
from minigate.phones import Phone
from minigate.services import person_keys, sms, sms_settings
from minigate.services.apps import AppContext
from minigate.services.ids import new_id
from minigate.services.limiter import Check, per_day, per_hour, per_minute
from minigate.services.runtime import Runtime
from minigate.services.sms_settings import SmsSettings
from minigate.store.tables import VerificationCode

__all__ = ["check_code", "code_view", "send_code"]

log = get_logger("minigate.otp")

PURPOSE = re.compile(r"^[a-z][a-z0-9_]{1,31}$")
CODE = re.compile(r"^\d{6}$")
TEMPLATE = "verification_code"
#: windows whose nearness asks for a captcha
_CAPTCHA_WINDOWS = ("phone_per_hour", "ip_per_hour", "device_per_hour", "ip_per_day", "device_per_day")

CODES_SENT = Counter("minigate_verification_codes_sent_total", "Verification codes sent")
CODES_VERIFIED = Counter("minigate_verification_codes_verified_total", "Verification codes checked successfully")
CODES_REFUSED = Counter("minigate_verification_code_refusals_total", "Code sends refused by a limit", ["limit"])


def _purpose(value: str) -> str:
    if not isinstance(value, str) or not PURPOSE.match(value):
        raise InvalidRequest("purpose must be 2-32 lower-case letters, digits or _ (e.g. login, register)",
                             param="purpose", code="invalid_purpose")
    return value


def _code_hash(rt: Runtime, ctx: AppContext, phone: Phone, purpose: str, code: str) -> str:
    return rt.vault.lookup_hash(f"{ctx.app_id}|{ctx.mode}|{phone.e164}|{purpose}|{code}", context="otp")


def _send_checks(rt: Runtime, ctx: AppContext, settings: SmsSettings, phone: Phone, ip: str | None,
                 device_id: str | None) -> list[Check]:
    limits = settings.limits
    base = f"sms:{ctx.app_id}:{ctx.mode}"
    ph = sms.phone_hash(rt, phone)
    checks = [
        sms.app_budget(ctx, settings),
        Check("prefix_per_hour", per_hour(limits.prefix_per_hour),
              f"{base}:prefix:{rt.vault.lookup_hash(phone.prefix, context='phone-prefix')}"),
    ]
    if ip:
        ih = rt.vault.lookup_hash(ip, context="ip")
        checks += [Check("ip_per_hour", per_hour(limits.ip_per_hour), f"{base}:ip:{ih}"),
                   Check("ip_per_day", per_day(limits.ip_per_day), f"{base}:ip:{ih}")]
    if device_id:
        dh = rt.vault.lookup_hash(device_id, context="device")
        checks += [Check("device_per_hour", per_hour(limits.device_per_hour), f"{base}:device:{dh}"),
                   Check("device_per_day", per_day(limits.device_per_day), f"{base}:device:{dh}")]
    checks += [Check("phone_per_minute", per_minute(limits.phone_per_minute), f"{base}:phone:{ph}"),
               Check("phone_per_hour", per_hour(limits.phone_per_hour), f"{base}:phone:{ph}"),
               Check("phone_per_day", per_day(limits.phone_per_day), f"{base}:phone:{ph}")]
    return checks


async def send_code(rt: Runtime, ctx: AppContext, *, phone_raw: str, purpose: str, ip: str | None = None,
                    device_id: str | None = None) -> dict[str, Any]:
    purpose = _purpose(purpose)
    settings = await sms_settings.load(rt, ctx)
    try:
        phone = sms.parse_app_phone(phone_raw, settings)
    except InvalidRequest as exc:
        await sms.record_decision(rt, ctx, action="send_code", outcome="refused", reason=exc.code, ip=ip,
                                  device_id=device_id, purpose=purpose)
        raise
    template = sms_settings.template(settings, TEMPLATE)
    verdict = await rt.limiter.acquire(_send_checks(rt, ctx, settings, phone, ip, device_id))
    if not verdict.allowed:
        reason = verdict.refused_by or "limit"
        CODES_REFUSED.labels(reason).inc()
        await sms.record_decision(rt, ctx, action="send_code", outcome="refused", reason=reason, phone=phone,
                                  ip=ip, device_id=device_id, purpose=purpose)
        if reason == "prefix_per_hour":   # B-27: many numbers of one range in a short time
            log.warning("possible SMS pumping: a number range hit its limit", app_id=ctx.app_id,
                        prefix=phone.prefix[:-3] + "***")
        raise RateLimited("too many verification codes; try again later", code="rate_limited",
                          details={"limit": reason, "retry_after": verdict.retry_after, "captcha_required": True})
    remaining = verdict.remaining or {}
    captcha = any(remaining.get(name, 1 << 30) <= settings.limits.captcha_remaining for name in _CAPTCHA_WINDOWS)
    code = f"{secrets.randbelow(1_000_000):06d}"
    minutes = str(settings.code_ttl_seconds // 60)
    now = rt.now()
    async with rt.db.transaction() as session:
        # the number is sealed under its person key: erasing the person shreds it (the code is never stored)
        keys = await person_keys.sealer(rt, ctx, sms.phone_hash(rt, phone), session=session)
        message = sms.new_message(rt, ctx, phone=phone, template=template,
                                  params={"code": code, "minutes": minutes}, source="verification", sealer=keys)
        row = VerificationCode(id=new_id("vc"), app_id=ctx.app_id, mode=ctx.mode,
                               phone_hash=sms.phone_hash(rt, phone), purpose=purpose,
                               code_hash=_code_hash(rt, ctx, phone, purpose, code), message_id=message.id,
                               status="active", attempts=0, max_attempts=settings.max_code_attempts,
                               expires_at=now + timedelta(seconds=settings.code_ttl_seconds), created_at=now)
        await session.execute(update(VerificationCode).where(
            VerificationCode.app_id == ctx.app_id, VerificationCode.mode == ctx.mode,
            VerificationCode.phone_hash == row.phone_hash, VerificationCode.purpose == purpose,
            VerificationCode.status == "active").values(status="superseded"))
        session.add(message)
        session.add(row)
        await sms.record_decision(rt, ctx, action="send_code", outcome="allowed",
                                  reason="captcha_advised" if captcha else "ok", phone=phone, ip=ip,
                                  device_id=device_id, purpose=purpose, session=session)
    sent = await sms.deliver(rt, message.id, secret_params={"code": code})
    del code
    if sent.status == "failed":
        async with rt.db.transaction() as session:
            await session.execute(update(VerificationCode).where(VerificationCode.id == row.id)
                                  .values(status="failed"))
        raise ServiceUnavailable("the code could not be sent by any SMS provider; try again shortly",
                                 code="sms_delivery_failed",
                                 details={"sms_message": sent.id, "reason": sent.error_code})
    CODES_SENT.inc()
    view = code_view(row)
    view.update({"phone": phone.masked, "captcha_required": captcha,
                 "message": {"id": sent.id, "status": sent.status, "provider": sent.provider}})
    return view


def code_view(row: VerificationCode) -> dict[str, Any]:
    return {"id": row.id, "object": "verification_code", "livemode": row.mode == "live", "purpose": row.purpose,
            "status": row.status, "expires_at": int(row.expires_at.timestamp()),
            "created": int(row.created_at.timestamp())}


async def check_code(rt: Runtime, ctx: AppContext, *, phone_raw: str, purpose: str, code: str,
                     ip: str | None = None) -> dict[str, Any]:
    purpose = _purpose(purpose)
    settings = await sms_settings.load(rt, ctx)
    phone = sms.parse_app_phone(phone_raw, settings)
    if not isinstance(code, str) or not CODE.match(code):
        raise InvalidRequest("code must be 6 digits", param="code", code="invalid_code_format")
    ph = sms.phone_hash(rt, phone)
    verdict = await rt.limiter.acquire([Check(
        "checks_per_phone_day", per_day(settings.limits.checks_per_phone_day),
        f"sms:{ctx.app_id}:{ctx.mode}:check:{purpose}:{ph}")])
    if not verdict.allowed:
        await sms.record_decision(rt, ctx, action="check_code", outcome="refused", reason="checks_per_phone_day",
                                  phone=phone, ip=ip, purpose=purpose)
        raise RateLimited("too many code checks for this number today", code="rate_limited",
                          details={"limit": "checks_per_phone_day", "retry_after": verdict.retry_after})
    candidate = _code_hash(rt, ctx, phone, purpose, code)
    now = rt.now()
    async with rt.db.transaction() as session:
        query = select(VerificationCode).where(
            VerificationCode.app_id == ctx.app_id, VerificationCode.mode == ctx.mode,
            VerificationCode.phone_hash == ph, VerificationCode.purpose == purpose
        ).order_by(VerificationCode.created_at.desc(), VerificationCode.id.desc()).limit(1).with_for_update()
        row = (await session.execute(query.execution_options(populate_existing=True))).scalar_one_or_none()
        result: dict[str, Any]
        if row is None or row.status in ("superseded", "failed"):
            result = {"verified": False, "reason": "no_active_code"}
        elif row.status == "used":
            result = {"verified": False, "reason": "already_used"}
        elif row.status == "dead":
            result = {"verified": False, "reason": "too_many_attempts"}
        elif now >= row.expires_at:
            result = {"verified": False, "reason": "expired"}
        elif hmac.compare_digest(row.code_hash, candidate):
            row.status, row.used_at = "used", now
            result = {"verified": True, "reason": None}
        else:
            row.attempts += 1
            if row.attempts >= row.max_attempts:
                row.status = "dead"
            result = {"verified": False, "reason": "too_many_attempts" if row.status == "dead" else "wrong_code",
                      "attempts_left": max(0, row.max_attempts - row.attempts)}
        await sms.record_decision(rt, ctx, action="check_code", outcome="allowed" if result["verified"] else "refused",
                                  reason=result["reason"] or "verified", phone=phone, ip=ip, purpose=purpose,
                                  session=session)
    if result["verified"]:
        CODES_VERIFIED.inc()
    return {"object": "verification_check", "purpose": purpose, "phone": phone.masked, **result}

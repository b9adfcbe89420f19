"""SMS messages: create, route across providers with failover, follow up, receive receipts and replies.

Delivery of one message (:func:`deliver`):

1. the message row exists (``queued``) before any provider is called; the provider about to be tried is
   written first (``sending`` + ``provider``), so a crash mid-call leaves a row the worker can settle;
2. providers are tried in the app's order (first attempt weighted), skipping those whose circuit breaker is
   open; a decline for the number itself (``invalid_phone``) ends the message, other declines and errors
   move to the next provider;
3. a timeout is an unknown outcome: the provider is asked (``find``) whether it took the message. Found:
   it was sent. Not found, and the provider's lookup is authoritative: nothing went out, the next provider
   may send. Otherwise the message stays ``unknown`` and is never sent again through another provider —
   a receipt or a later lookup settles it.

Receipts and replies arrive unsigned (no provider signs them): they are authenticated by an unguessable
token in the URL and only ever applied to messages minigate sent; states only move forward.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import random
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from prometheus_client import Counter
from sqlalchemy import or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from minigate.domain.results import StandardCode
from minigate.domain.sms import Template
from minigate.errors import (
    InvalidRequest,
    NotFound,
    NotificationRejected,
    OperationNotSupported,
    OutcomeUnknown,
    PermissionDenied,
    ProviderError,
    ProviderUnreachable,
    RateLimited,
)
from minigate.logging import get_logger
from minigate.money import fen_to_yuan
from minigate.phones import InvalidPhone, Phone, mask_phone, parse_phone
from minigate.providers.bases.payment import NotificationReply
from minigate.providers.bases.sms import DeliveryState, SmsProvider, SmsRequest, TemplateMapping
from minigate.services import audit, consents, person_keys, sms_settings
from minigate.services.apps import AppContext
from minigate.services.ids import new_id
from minigate.services.limiter import Check, per_day
from minigate.services.runtime import Runtime
from minigate.services.sms_settings import SmsSettings
from minigate.store.tables import ConsentRecord, Order, SmsDecision, SmsMessage, SmsReceiptRecord

__all__ = ["PHONE_CONTEXT", "Breaker", "deliver", "get_message", "handle_receipts", "handle_replies",
           "list_messages", "message_view", "parse_app_phone", "queue_for_event", "record_decision",
           "send_due_messages", "send_message"]

log = get_logger("minigate.sms")

PHONE_CONTEXT = "phone"
PARAMS_CONTEXT = "sms:params"
#: a message stuck in ``sending`` this long (a crashed process) is settled by the worker
SENDING_LEASE = timedelta(seconds=60)
#: follow-up lookups of an unknown outcome, then it stays unknown (a receipt may still settle it)
UNKNOWN_CHECKS = (30, 120, 600, 3600, 6 * 3600)
MASKED_CODE = "******"
MAX_PARAM_LENGTH = 100

SMS_ATTEMPTS = Counter("minigate_sms_attempts_total", "SMS provider attempts", ["provider", "outcome"])
SMS_MESSAGES = Counter("minigate_sms_messages_total", "SMS messages by final state", ["kind", "status"])


# --------------------------------------------------------------------------- circuit breaker

class Breaker:
    """Consecutive-failure circuit breaker, one per (app, mode, provider), in this process.

    Closed until ``failures`` consecutive failures; then open for ``open_seconds`` (the provider is skipped);
    then half-open: one trial call, whose outcome closes or re-opens it.
    """

    def __init__(self, failures: int, open_seconds: float) -> None:
        self.threshold = failures
        self.open_seconds = open_seconds
        self.failures = 0
        self.opened_at: float | None = None
        self._trial = False

    @property
    def state(self) -> str:
        if self.opened_at is None:
            return "closed"
        return "half_open" if time.monotonic() - self.opened_at >= self.open_seconds else "open"

    def allow(self) -> bool:
        state = self.state
        if state == "closed":
            return True
        if state == "half_open" and not self._trial:
            self._trial = True
            return True
        return False

    def success(self) -> None:
        self.failures, self.opened_at, self._trial = 0, None, False

    def failure(self) -> None:
        self.failures += 1
        self._trial = False
        if self.failures >= self.threshold or self.opened_at is not None:
            self.opened_at = time.monotonic()


_breakers: dict[tuple[int, str, str, str], Breaker] = {}


def breaker(rt: Runtime, app_id: str, mode: str, provider: str, settings: SmsSettings) -> Breaker:
    key = (id(rt), app_id, mode, provider)
    found = _breakers.get(key)
    if found is None:
        found = _breakers[key] = Breaker(settings.breaker_failures, settings.breaker_open_seconds)
    found.threshold, found.open_seconds = settings.breaker_failures, settings.breaker_open_seconds
    return found


# --------------------------------------------------------------------------- helpers

def parse_app_phone(raw: str, settings: SmsSettings) -> Phone:
    try:
        return parse_phone(raw, allowed_country_codes=set(settings.allowed_country_codes))
    except InvalidPhone as exc:
        raise InvalidRequest(exc.message, param="phone", code=exc.code) from None


def _check_params(template: Template, params: Mapping[str, Any]) -> dict[str, str]:
    expected = set(template.variables)
    given = set(params)
    if given != expected:
        missing, extra = sorted(expected - given), sorted(given - expected)
        raise InvalidRequest(f"template {template.name!r} takes {', '.join(template.variables) or 'no values'}"
                             + (f"; missing {', '.join(missing)}" if missing else "")
                             + (f"; unexpected {', '.join(extra)}" if extra else ""),
                             param="params", code="invalid_template_params")
    clean: dict[str, str] = {}
    for name, value in params.items():
        if not isinstance(value, str) or not value or len(value) > MAX_PARAM_LENGTH:
            raise InvalidRequest(f"params.{name} must be a string of 1-{MAX_PARAM_LENGTH} characters",
                                 param=f"params.{name}", code="invalid_template_params")
        if "【" in value or "】" in value:
            raise InvalidRequest("template values must not contain 【】", param=f"params.{name}",
                                 code="invalid_template_params")
        clean[name] = value
    return clean


def _hash(rt: Runtime, value: str, context: str) -> str:
    return rt.vault.lookup_hash(value, context=context)


def phone_hash(rt: Runtime, phone: Phone) -> str:
    return _hash(rt, phone.e164, PHONE_CONTEXT)


async def record_decision(rt: Runtime, ctx: AppContext, *, action: str, outcome: str, reason: str,
                          phone: Phone | None = None, ip: str | None = None, device_id: str | None = None,
                          purpose: str | None = None, session: AsyncSession | None = None) -> None:
    """Every send/check decision, allowed or refused, is kept (B-24); identifiers only as keyed hashes."""
    log.info("sms decision", app_id=ctx.app_id, mode=ctx.mode, action=action, outcome=outcome, reason=reason,
             purpose=purpose, phone=phone.masked if phone else None)
    row = SmsDecision(app_id=ctx.app_id, mode=ctx.mode, action=action, outcome=outcome, reason=reason,
                      phone_hash=phone_hash(rt, phone) if phone else None,
                      ip_hash=_hash(rt, ip, "ip") if ip else None,
                      device_hash=_hash(rt, device_id, "device") if device_id else None,
                      purpose=purpose, created_at=rt.now())
    if session is not None:
        session.add(row)
        return
    async with rt.db.transaction() as own:
        own.add(row)


def new_message(rt: Runtime, ctx: AppContext, *, phone: Phone, template: Template, params: Mapping[str, str],
                source: str, dedupe_key: str | None = None, metadata: Mapping[str, str] | None = None,
                sealed_phone: str | None = None, send_now: bool = True,
                sealer: person_keys.Sealer | None = None) -> SmsMessage:
    """A ``queued`` message. ``send_now``: the caller delivers it at once; the worker takes it only if that
    caller dies (after the lease); otherwise the worker sends it on its next pass. ``sealer``: the number's
    person key, so that erasing the person makes the number and the values unreadable everywhere; without it
    (an order notification, whose number is the order's own sealed copy) the shared data key seals them."""
    now = rt.now()
    stored = {k: (MASKED_CODE if template.kind == "verification" and k == "code" else v) for k, v in params.items()}
    seal = sealer.seal if sealer is not None else rt.vault.seal
    return SmsMessage(
        id=new_id("msg"), app_id=ctx.app_id, mode=ctx.mode, kind=template.kind, template=template.name,
        phone_sealed=sealed_phone or seal(phone.e164, context=PHONE_CONTEXT),
        phone_hash=phone_hash(rt, phone), phone_masked=phone.masked,
        params_sealed=seal(json.dumps(stored, ensure_ascii=False), context=PARAMS_CONTEXT),
        status="queued", attempts=[], dedupe_key=dedupe_key, source=source,
        next_attempt_at=now + SENDING_LEASE if send_now else now,
        metadata_=dict(metadata or {}), created_at=now, updated_at=now)


# --------------------------------------------------------------------------- API use cases

async def send_message(rt: Runtime, ctx: AppContext, *, phone_raw: str, template_name: str,
                       params: Mapping[str, Any], metadata: Mapping[str, str] | None = None,
                       source: str = "api") -> SmsMessage:
    """A notice or marketing message, sent now (failover included); returns the message in its new state."""
    settings = await sms_settings.load(rt, ctx)
    template = sms_settings.template(settings, template_name)
    if template.kind == "verification":
        raise InvalidRequest("verification templates are sent by POST /v1/verification_codes only",
                             param="template", code="template_kind_not_allowed")
    phone = parse_app_phone(phone_raw, settings)
    clean = _check_params(template, params)
    if template.kind == "marketing" and not await consents.has_consent(rt, ctx, phone_hash(rt, phone),
                                                                        consents.MARKETING_SMS):
        await record_decision(rt, ctx, action="send_message", outcome="refused", reason="consent_required",
                              phone=phone)
        raise PermissionDenied("no recorded marketing consent for this number (or it was withdrawn)",
                               param="phone", code="consent_required")
    verdict = await rt.limiter.acquire([app_budget(ctx, settings)])
    if not verdict.allowed:
        await record_decision(rt, ctx, action="send_message", outcome="refused", reason="app_per_day", phone=phone)
        raise RateLimited("the app's daily SMS budget is spent", code="sms_budget_exhausted",
                          details={"retry_after": verdict.retry_after})
    async with rt.db.transaction() as session:
        keys = await person_keys.sealer(rt, ctx, phone_hash(rt, phone), session=session)
        message = new_message(rt, ctx, phone=phone, template=template, params=clean, source=source,
                              metadata=metadata, sealer=keys)
        session.add(message)
        await record_decision(rt, ctx, action="send_message", outcome="allowed", reason="ok", phone=phone,
                              session=session)
        if source == "cli":
            await audit.record(session, rt, action="sms.sent_by_operator", app_id=ctx.app_id, mode=ctx.mode,
                               target=message.id, details={"template": template.name, "kind": template.kind},
                               actor="cli")
    return await deliver(rt, message.id)


def app_budget(ctx: AppContext, settings: SmsSettings) -> Check:
    return Check("app_per_day", per_day(settings.limits.app_per_day), f"sms:{ctx.app_id}:{ctx.mode}:app")


async def get_message(rt: Runtime, ctx: AppContext, message_id: str) -> SmsMessage:
    async with rt.db.read() as session:
        message = await session.get(SmsMessage, message_id)
    if message is None or message.app_id != ctx.app_id or message.mode != ctx.mode:
        raise NotFound(f"no such message: {message_id}", param="id", code="resource_missing")
    return message


async def list_messages(rt: Runtime, ctx: AppContext, *, limit: int, starting_after: str | None = None,
                        status: str | None = None, kind: str | None = None, template: str | None = None,
                        phone: str | None = None, created_gte: int | None = None,
                        created_lt: int | None = None) -> tuple[list[SmsMessage], bool]:
    query = select(SmsMessage).where(SmsMessage.app_id == ctx.app_id, SmsMessage.mode == ctx.mode)
    if status:
        query = query.where(SmsMessage.status == status)
    if kind:
        query = query.where(SmsMessage.kind == kind)
    if template:
        query = query.where(SmsMessage.template == template)
    if phone:
        try:
            parsed = parse_phone(phone, allowed_country_codes=None)
        except InvalidPhone as exc:
            raise InvalidRequest(exc.message, param="phone", code=exc.code) from None
        query = query.where(SmsMessage.phone_hash == phone_hash(rt, parsed))
    if created_gte is not None:
        query = query.where(SmsMessage.created_at >= datetime.fromtimestamp(created_gte, tz=rt.now().tzinfo))
    if created_lt is not None:
        query = query.where(SmsMessage.created_at < datetime.fromtimestamp(created_lt, tz=rt.now().tzinfo))
    async with rt.db.read() as session:
        if starting_after:
            anchor = await session.get(SmsMessage, starting_after)
            if anchor is None or anchor.app_id != ctx.app_id:
                raise InvalidRequest("starting_after is not a message of this app", param="starting_after")
            query = query.where(or_(SmsMessage.created_at < anchor.created_at,
                                    (SmsMessage.created_at == anchor.created_at) & (SmsMessage.id < anchor.id)))
        rows = list((await session.execute(query.order_by(SmsMessage.created_at.desc(), SmsMessage.id.desc())
                                           .limit(limit + 1))).scalars())
    return rows[:limit], len(rows) > limit


def message_view(message: SmsMessage) -> dict[str, Any]:
    def ts(value: datetime | None) -> int | None:
        return int(value.timestamp()) if value else None

    return {
        "id": message.id, "object": "sms_message", "livemode": message.mode == "live", "kind": message.kind,
        "template": message.template, "phone": message.phone_masked, "status": message.status,
        "provider": message.provider, "provider_message_id": message.provider_message_id,
        "attempts": message.attempts, "carrier_code": message.carrier_code,
        "error": ({"code": message.error_code, "message": message.error_message} if message.error_code else None),
        "source": message.source, "metadata": message.metadata_ or {},
        "created": ts(message.created_at), "sent_at": ts(message.sent_at), "delivered_at": ts(message.delivered_at),
    }


# --------------------------------------------------------------------------- delivery

@dataclass
class _Plan:
    message: SmsMessage
    phone: str
    params: dict[str, str]
    template: Template
    settings: SmsSettings


async def _routes(rt: Runtime, ctx: AppContext, settings: SmsSettings) -> list[str]:
    available = await rt.sms_provider_names(ctx.app_id, ctx.mode)
    if not settings.providers:
        return available
    listed = [r for r in settings.providers if r.provider in available]
    weighted = [r for r in listed if r.weight > 0]
    if not weighted:
        return [r.provider for r in listed]
    first = random.choices(weighted, weights=[r.weight for r in weighted])[0]   # noqa: S311 - load sharing
    return [first.provider, *(r.provider for r in listed if r is not first)]


def _mapped(provider: SmsProvider, template: Template, settings: SmsSettings,
            params: Mapping[str, str]) -> tuple[TemplateMapping, str, tuple[tuple[str, str], ...]] | None:
    mapping = provider.config.template(template.name)
    if mapping is None:
        return None
    sign = settings.sign_name or provider.config.sign_name
    order = mapping.params or template.variables
    if set(order) != set(template.variables):
        return None
    return mapping, sign, tuple((name, params[name]) for name in order)


def _text(template: Template, sign: str, params: Mapping[str, str], settings: SmsSettings) -> str:
    body = template.render(params)
    if template.kind == "marketing" and not body.endswith(settings.opt_out_text):
        body += settings.opt_out_text
    return f"【{sign}】{body}"


async def deliver(rt: Runtime, message_id: str, *, secret_params: Mapping[str, str] | None = None) -> SmsMessage:
    """Send a ``queued`` message through the first provider that takes it. ``secret_params`` (the code of a
    verification message) are used for this send only and never stored."""
    async with rt.db.read() as session:
        peek = await session.get(SmsMessage, message_id)
    if peek is None or peek.status != "queued":
        if peek is None:
            raise NotFound(f"no such message: {message_id}", code="resource_missing")
        return peek
    ctx = AppContext(peek.app_id, peek.mode)
    settings = await sms_settings.load(rt, ctx)
    names = await _routes(rt, ctx, settings)
    # one transaction claims the message and names the first provider (a crash during its call leaves a
    # row that says whom to ask)
    async with rt.db.transaction() as session:
        message = await _lock(session, message_id)
        if message.status != "queued":
            return message
        message.status = "sending"
        message.provider = names[0] if names else None
        message.locked_until = rt.now() + SENDING_LEASE
        message.updated_at = rt.now()
    template = settings.template(message.template)
    phone, sealed_params = await person_keys.open_many(rt, [(message.phone_sealed, PHONE_CONTEXT),
                                                            (message.params_sealed, PARAMS_CONTEXT)])
    if person_keys.ERASED in (phone, sealed_params):
        return await _finish(rt, message_id, status="failed",
                             error=("subject_erased", "the person's data was erased before the message went out"))
    params = json.loads(sealed_params)
    params.update(secret_params or {})
    if template is None or MASKED_CODE in params.values():
        return await _finish(rt, message_id, status="failed", error=("template_unavailable" if template is None
                                                                      else "code_not_available",
                                                                      "the message can no longer be built"))
    plan = _Plan(message, phone, params, template, settings)
    return await _route(rt, ctx, plan, names)


async def _route(rt: Runtime, ctx: AppContext, plan: _Plan, names: list[str]) -> SmsMessage:
    attempts: list[dict[str, Any]] = list(plan.message.attempts or [])
    last_error: tuple[str, str] = ("no_provider", "no SMS provider is configured for this app and mode")
    for index, name in enumerate(names):
        gate = breaker(rt, ctx.app_id, ctx.mode, name, plan.settings)
        if not gate.allow():
            attempts.append(_attempt(rt, name, "skipped", "circuit_open"))
            last_error = ("providers_unavailable", "every provider failed or is circuit-broken")
            continue
        try:
            provider = await rt.sms_provider(ctx.app_id, ctx.mode, name)
        except (NotFound, ValueError) as exc:
            attempts.append(_attempt(rt, name, "skipped", "not_configured"))
            log.warning("SMS provider unusable", provider=name, error=type(exc).__name__)
            continue
        mapped = _mapped(provider, plan.template, plan.settings, plan.params)
        if mapped is None:
            attempts.append(_attempt(rt, name, "skipped", "template_not_mapped"))
            last_error = ("template_not_mapped", f"template {plan.template.name!r} has no id at the providers")
            continue
        mapping, sign, ordered = mapped
        request = SmsRequest(message_id=plan.message.id, phone=plan.phone, sign_name=sign,
                             template_id=mapping.id, params=ordered,
                             text=_text(plan.template, sign, plan.params, plan.settings),
                             sent_at=plan.message.created_at)
        if index or attempts:          # the claim already named the first provider
            await _mark_trying(rt, plan.message.id, name, attempts)
        try:
            result = await provider.send(request)
        except OutcomeUnknown as exc:
            if isinstance(exc, ProviderUnreachable) or exc.http_status == 429:
                # never reached the provider, or refused unprocessed (throttled): the next provider may send
                SMS_ATTEMPTS.labels(name, "unavailable").inc()
                gate.failure()
                attempts.append(_attempt(rt, name, "failed", "unreachable" if exc.http_status is None
                                         else "throttled", exc.provider_code))
                last_error = ("provider_unavailable", f"{name} could not take the message")
                continue
            SMS_ATTEMPTS.labels(name, "unknown").inc()
            settled, found_id = await _settle(provider, request)
            if settled == "found":
                gate.success()
                attempts.append(_attempt(rt, name, "sent", "found_after_timeout"))
                return await _finish(rt, plan.message.id, status="sent", provider=name, attempts=attempts,
                                     provider_message_id=found_id)
            if settled == "not_found":
                gate.failure()
                attempts.append(_attempt(rt, name, "failed", "timeout_not_accepted", exc.provider_code))
                last_error = ("provider_unavailable", f"{name} did not answer")
                continue
            attempts.append(_attempt(rt, name, "unknown", "timeout", exc.provider_code))
            return await _finish(rt, plan.message.id, status="unknown", provider=name, attempts=attempts,
                                 next_check=UNKNOWN_CHECKS[0])
        except ProviderError as exc:
            SMS_ATTEMPTS.labels(name, "error").inc()
            gate.failure()
            attempts.append(_attempt(rt, name, "failed", "provider_error", exc.provider_code))
            last_error = ("provider_error", f"{name} refused the request")
            continue
        if result.ok and result.value is not None:
            SMS_ATTEMPTS.labels(name, "sent").inc()
            gate.success()
            attempts.append(_attempt(rt, name, "sent", "ok"))
            return await _finish(rt, plan.message.id, status="sent", provider=name, attempts=attempts,
                                 provider_message_id=result.value.provider_message_id)
        SMS_ATTEMPTS.labels(name, "declined").inc()
        attempts.append(_attempt(rt, name, "declined", str(result.code), result.provider_code))
        last_error = (str(result.code), result.message or f"{name} declined the message")
        if result.code is StandardCode.INVALID_PHONE:
            break
        if result.code in (StandardCode.RATE_LIMITED, StandardCode.AUTH_FAILED, StandardCode.INSUFFICIENT_BALANCE,
                           StandardCode.DECLINED):
            gate.failure()
    return await _finish(rt, plan.message.id, status="failed", attempts=attempts, error=last_error)


#: how long a request waits to look up a lost answer before leaving it to the worker
SETTLE_WAIT_SECONDS = 2.0


async def _settle(provider: SmsProvider, request: SmsRequest) -> tuple[str, str | None]:
    """(found | not_found | unknown, provider message id) — what happened to a send whose answer was lost.

    "not_found" needs an authoritative lookup made at least ``lookup_settle_seconds`` after the send;
    sooner, absence proves nothing and the message stays unknown for the worker's follow-up."""
    wait = min(provider.lookup_settle_seconds, SETTLE_WAIT_SECONDS)
    await asyncio.sleep(wait)
    try:
        lookup = await provider.find(request)
    except (ProviderError, OperationNotSupported):
        return "unknown", None
    if lookup.ok and lookup.value is not None and lookup.value.found:
        return "found", lookup.value.provider_message_id
    if lookup.ok and lookup.value is not None and provider.lookup_is_authoritative \
            and wait >= provider.lookup_settle_seconds:
        return "not_found", None
    return "unknown", None


def _attempt(rt: Runtime, provider: str, outcome: str, code: str, provider_code: str | None = None) -> dict[str, Any]:
    log.info("sms provider attempt", provider=provider, outcome=outcome, code=code, provider_code=provider_code)
    entry: dict[str, Any] = {"provider": provider, "outcome": outcome, "code": code,
                             "at": int(rt.now().timestamp())}
    if provider_code:
        entry["provider_code"] = provider_code
    return entry


async def _lock(session: AsyncSession, message_id: str) -> SmsMessage:
    message = (await session.execute(select(SmsMessage).where(SmsMessage.id == message_id).with_for_update()
                                     .execution_options(populate_existing=True))).scalar_one_or_none()
    if message is None:
        raise NotFound(f"no such message: {message_id}", code="resource_missing")
    return message


async def _mark_trying(rt: Runtime, message_id: str, provider: str, attempts: list[dict[str, Any]]) -> None:
    """Written before the call: a crash during it leaves a row that names the provider to ask."""
    async with rt.db.transaction() as session:
        message = await _lock(session, message_id)
        message.provider = provider
        message.attempts = list(attempts)
        message.locked_until = rt.now() + SENDING_LEASE
        message.updated_at = rt.now()


async def _finish(rt: Runtime, message_id: str, *, status: str, provider: str | None = None,
                  provider_message_id: str | None = None, attempts: list[dict[str, Any]] | None = None,
                  error: tuple[str, str] | None = None, next_check: int | None = None) -> SmsMessage:
    now = rt.now()
    async with rt.db.transaction() as session:
        message = await _lock(session, message_id)
        if message.status in ("delivered", "failed") and status != "failed":
            status = message.status        # a receipt got here first: keep its verdict, record the rest
        message.status = status
        if provider is not None:
            message.provider = provider
        if provider_message_id:
            message.provider_message_id = provider_message_id
        if attempts is not None:
            message.attempts = attempts
        if status == "sent" and message.sent_at is None:
            message.sent_at = now
        if error is not None:
            message.error_code, message.error_message = error[0][:64], error[1][:255]
        message.locked_until = None
        message.next_attempt_at = now + timedelta(seconds=next_check) if next_check else None
        message.updated_at = now
        if status == "failed":
            await _emit(rt, session, message, "sms.failed")
    SMS_MESSAGES.labels(message.kind, status).inc()
    return message


async def _emit(rt: Runtime, session: AsyncSession, message: SmsMessage, type: str) -> None:
    from minigate.services import events

    await events.emit(session, rt, app_id=message.app_id, mode=message.mode, type=type, obj=message_view(message),
                      now=rt.now())


# --------------------------------------------------------------------------- order notifications

async def queue_for_event(rt: Runtime, session: AsyncSession, *, app_id: str, mode: str, type: str,
                          obj: Mapping[str, Any], now: datetime) -> None:
    """In the transaction of a payment state change: queue the app's opted-in order SMS for it, once."""
    if type not in sms_settings.ORDER_EVENTS:
        return
    ctx = AppContext(app_id, mode)
    settings = await sms_settings.load(rt, ctx, session=session)
    name = settings.order_notifications.get(type)
    if name is None:
        return
    order_id = obj.get("order") if type.startswith("refund.") else obj.get("id")
    order = await session.get(Order, order_id) if isinstance(order_id, str) else None
    if order is None or not order.contact_phone_sealed:
        return
    dedupe = f"{type}:{obj['id']}"
    exists = (await session.execute(select(SmsMessage.id).where(
        SmsMessage.app_id == app_id, SmsMessage.mode == mode, SmsMessage.dedupe_key == dedupe))).first()
    if exists is not None:
        return
    template = settings.template(name)
    assert template is not None
    amount = obj.get("amount", order.amount)
    values = {"order": order.merchant_order_no, "amount": fen_to_yuan(int(amount))}
    params = {k: v for k, v in values.items() if k in template.variables}
    if set(params) != set(template.variables):
        log.warning("order SMS template needs values minigate does not have", template=name)
        return
    phone = parse_phone(rt.vault.open(order.contact_phone_sealed, context=PHONE_CONTEXT),
                        allowed_country_codes=None)
    session.add(new_message(rt, ctx, phone=phone, template=template, params=params, source="order_event",
                            dedupe_key=dedupe, metadata={"order": order.id}, sealed_phone=order.contact_phone_sealed,
                            send_now=False))


# --------------------------------------------------------------------------- worker

async def send_due_messages(rt: Runtime, *, limit: int = 50) -> int:
    """Queued messages (order notifications) are sent; stuck and unknown ones are settled by lookup."""
    now = rt.now()
    async with rt.db.transaction() as session:
        query = select(SmsMessage).where(
            SmsMessage.next_attempt_at.is_not(None), SmsMessage.next_attempt_at <= now,
            or_(SmsMessage.status.in_(("queued", "unknown")),
                (SmsMessage.status == "sending") & (SmsMessage.locked_until <= now)),
            or_(SmsMessage.locked_until.is_(None), SmsMessage.locked_until <= now),
        ).order_by(SmsMessage.next_attempt_at).limit(limit)
        if not rt.db.is_sqlite:
            query = query.with_for_update(skip_locked=True)
        rows = (await session.execute(query)).scalars().all()
        claimed: list[tuple[str, str]] = []
        for row in rows:
            claimed.append((row.id, row.status))
            row.locked_until = now + SENDING_LEASE
            if row.status == "queued":
                row.locked_until = None     # deliver() takes its own lease
    for message_id, status in claimed:
        try:
            if status == "queued":
                await deliver(rt, message_id)
            else:
                await _follow_up(rt, message_id)
        except Exception:  # one message must not stop the others; logged with its traceback
            log.exception("SMS follow-up failed", message_id=message_id)
    return len(claimed)


async def _follow_up(rt: Runtime, message_id: str) -> None:
    async with rt.db.read() as session:
        message = await session.get(SmsMessage, message_id)
    assert message is not None
    checks = sum(1 for a in message.attempts or [] if a.get("outcome") == "lookup")
    attempts = [*(message.attempts or []), _attempt(rt, message.provider or "?", "lookup", "follow_up")]
    if message.provider is None:      # crashed before naming a provider: nothing went out
        await _requeue(rt, message_id)
        return
    phone = await person_keys.open_value(rt, message.phone_sealed, context=PHONE_CONTEXT)
    if phone == person_keys.ERASED:        # nothing left to ask the provider with: stop following it up
        await _finish(rt, message_id, status="unknown", attempts=message.attempts)
        return
    provider = await rt.sms_provider(message.app_id, message.mode, message.provider)
    request = SmsRequest(message_id=message.id, phone=phone, sign_name="", template_id="", params=(),
                         sent_at=message.created_at)
    try:
        lookup = await provider.find(request)
    except (ProviderError, OperationNotSupported):
        lookup = None
    if lookup is not None and lookup.ok and lookup.value is not None and lookup.value.found:
        state = lookup.value.state
        status = {DeliveryState.DELIVERED: "delivered", DeliveryState.FAILED: "failed"}.get(state, "sent") \
            if state else "sent"
        await _finish(rt, message_id, status=status, provider_message_id=lookup.value.provider_message_id,
                      attempts=attempts)
        return
    last_try = max((int(a.get("at", 0)) for a in message.attempts or [] if a.get("provider") == message.provider),
                   default=int(message.created_at.timestamp()))
    settled = rt.now().timestamp() - last_try >= provider.lookup_settle_seconds
    proven_absent = lookup is not None and lookup.ok and provider.lookup_is_authoritative and settled
    if proven_absent and message.kind != "verification":
        await _requeue(rt, message_id, attempts)     # the provider never took it: send it (once) again
        return
    if proven_absent:
        await _finish(rt, message_id, status="failed", attempts=attempts,
                      error=("code_not_available", "the code is not stored, so it cannot be sent again"))
        return
    next_check = UNKNOWN_CHECKS[checks + 1] if checks + 1 < len(UNKNOWN_CHECKS) else None
    await _finish(rt, message_id, status="unknown", attempts=attempts, next_check=next_check)


async def _requeue(rt: Runtime, message_id: str, attempts: list[dict[str, Any]] | None = None) -> None:
    async with rt.db.transaction() as session:
        message = await _lock(session, message_id)
        message.status = "queued"
        message.provider = None
        if attempts is not None:
            message.attempts = attempts
        message.locked_until = None
        message.next_attempt_at = rt.now()
        message.updated_at = rt.now()


# --------------------------------------------------------------------------- receipts and replies

def _check_token(rt: Runtime, provider: str, mode: str, token: str) -> None:
    if mode not in ("test", "live") or not hmac.compare_digest(rt.sms_callback_token(provider, mode), token):
        log.warning("sms push with a wrong token refused", provider=provider, mode=mode)
        raise NotFound("no such notification route", code="route_not_found")


_ORDER = {"queued": 0, "sending": 1, "unknown": 1, "sent": 2, "delivered": 3, "failed": 3}


async def handle_receipts(rt: Runtime, *, provider: str, mode: str, token: str, headers: Mapping[str, str],
                          body: bytes) -> NotificationReply:
    _check_token(rt, provider, mode, token)
    parser = rt.sms_parser(provider)
    try:
        receipts = parser.parse_receipts(headers, body)
    except NotificationRejected as exc:
        log.warning("SMS receipt push rejected", provider=provider, code=exc.code)
        raise
    for receipt in receipts:
        now = rt.now()
        try:
            async with rt.db.transaction() as session:
                record = SmsReceiptRecord(provider=provider, dedupe_key=receipt.dedupe_key[:200], outcome="unmatched",
                                          state=str(receipt.state), carrier_code=receipt.error_code,
                                          received_at=now)
                session.add(record)
                await session.flush()
                message = (await session.execute(select(SmsMessage).where(
                    SmsMessage.provider == provider, SmsMessage.mode == mode,
                    SmsMessage.provider_message_id == receipt.provider_message_id).with_for_update()
                    .execution_options(populate_existing=True))).scalar_one_or_none()
                if message is None and receipt.message_id:
                    candidate = await _lock_optional(session, receipt.message_id)
                    if candidate is not None and candidate.mode == mode and candidate.provider == provider \
                            and candidate.provider_message_id in (None, receipt.provider_message_id):
                        message = candidate
                if message is None:
                    continue
                record.message_id = message.id
                target = "delivered" if receipt.state is DeliveryState.DELIVERED else "failed"
                if receipt.state is DeliveryState.ACCEPTED or _ORDER[message.status] >= 3:
                    record.outcome = "stale"
                    continue
                record.outcome = "applied"
                log.info("sms receipt applied", provider=provider, message_id=message.id, state=target)
                message.status = target
                message.provider_message_id = message.provider_message_id or receipt.provider_message_id
                message.carrier_code = (receipt.error_code or "")[:64] or None
                message.sent_at = message.sent_at or now
                if target == "delivered":
                    message.delivered_at = receipt.reported_at or now
                else:
                    message.error_code = "undelivered"
                    message.error_message = (receipt.description or "the carrier did not deliver it")[:255]
                message.next_attempt_at = None
                message.locked_until = None
                message.updated_at = now
                await _emit(rt, session, message, f"sms.{target}")
        except IntegrityError:
            continue          # the same report again: already recorded
    return parser.receipt_ack()


async def _lock_optional(session: AsyncSession, message_id: str) -> SmsMessage | None:
    try:
        return await _lock(session, message_id)
    except NotFound:
        return None


async def handle_replies(rt: Runtime, *, provider: str, mode: str, token: str, headers: Mapping[str, str],
                         body: bytes) -> NotificationReply:
    """Upstream replies: an opt-out keyword withdraws marketing consent at once (C-17).

    A reply reaches minigate per provider account, not per app: the withdrawal applies to every app of the
    mode that holds marketing consent for the number (over-honouring an opt-out is lawful; missing one is not).
    """
    _check_token(rt, provider, mode, token)
    parser = rt.sms_parser(provider)
    try:
        replies = parser.parse_replies(headers, body)
    except NotificationRejected as exc:
        log.warning("SMS reply push rejected", provider=provider, code=exc.code)
        raise
    except OperationNotSupported:
        raise NotFound("this provider pushes no replies", code="route_not_found") from None
    for reply in replies:
        try:
            phone = parse_phone(reply.phone, allowed_country_codes=None)
        except InvalidPhone:
            continue
        subject = phone_hash(rt, phone)
        async with rt.db.read() as session:
            app_ids = set((await session.execute(select(ConsentRecord.app_id).where(
                ConsentRecord.mode == mode, ConsentRecord.subject_hash == subject,
                ConsentRecord.purpose == consents.MARKETING_SMS))).scalars())
        word = reply.text.strip().upper()
        for app_id in sorted(app_ids):
            ctx = AppContext(app_id, mode)
            settings = await sms_settings.load(rt, ctx)
            if word in {k.upper() for k in settings.opt_out_keywords}:
                await consents.withdraw(rt, ctx, subject, consents.MARKETING_SMS, source="sms_reply",
                                        evidence={"provider": provider, "keyword": word[:16],
                                                  "phone": mask_phone(phone.e164)})
                log.info("marketing consent withdrawn by SMS reply", provider=provider, app_id=app_id)
    return parser.receipt_ack()

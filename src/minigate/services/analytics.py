"""Analytics: publishable keys, collection, queries joined to the ledger, forwarding, pulling, retention, rights.

- **Collection** (:func:`collect`): a batch from the mini-program SDK, authenticated by a publishable key, checked
  (:mod:`minigate.analytics.ingest`) and journalled durably before it is acknowledged (:mod:`~.store`).
- **Server events**: ``order.paid`` and ``refund.succeeded`` become ``$payment_verified`` / ``$refund_succeeded``
  in the same transaction as the ledger change (``analytics_outbox``), then join the client's events.
- **Queries** run on read-only DuckDB connections in a thread; the payment funnel reads the ledger (SQL) for the
  orders the events name, so "paid" means verified by the provider, never "the phone said so".
- **Forwarding** to GrowingIO / Youshu: per (app, mode, destination) a cursor over the store's ``seq``; a batch
  is sent, then the cursor moves — at-least-once, never blocking collection; failures back off and show in
  ``GET /v1/analytics/forwarding``. Users are pseudonymous there: a keyed hash of the id, never the id.
- **Pulling** WeChat datacube / Umeng+ numbers for each finished day into ``external_metrics``.
- **Retention** per app (``retention_days``), purged by the worker with a deletion record; per-person export
  and erasure.
"""

from __future__ import annotations

import hashlib
import secrets
import time
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import asdict, is_dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any, Literal, cast

from prometheus_client import Counter
from pydantic import BaseModel, ConfigDict, Field, field_validator
from sqlalchemy import Table, delete, insert, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from minigate.analytics import ingest
from minigate.analytics.store import journal_line
from minigate.errors import (
    ApiError,
    AuthenticationFailed,
    InvalidRequest,
    MinigateError,
    NotFound,
    OutcomeUnknown,
    RateLimited,
)
from minigate.logging import get_logger
from minigate.providers import registry
from minigate.providers.bases.analytics import ForwardEvent, MetricRow
from minigate.services import audit
from minigate.services.app_settings import Section
from minigate.services.apps import AppContext
from minigate.services.ids import new_id
from minigate.services.limiter import Check, per_minute, per_second
from minigate.services.runtime import Runtime
from minigate.store.tables import (
    AnalyticsForwardCursor,
    AnalyticsOutbox,
    AnalyticsPull,
    App,
    DeletionRecord,
    Order,
    PublishableKey,
)

__all__ = ["AnalyticsSettings", "collect", "create_publishable_key", "parse_where", "query_range", "settings_section"]

log = get_logger("minigate.analytics")

BEIJING = timedelta(hours=8)
MAX_COMPRESSED_BYTES = 1 << 20
MAX_DECODED_BYTES = 4 << 20
#: server events: ledger event type -> analytics event name
SERVER_EVENTS = {"order.paid": "$payment_verified", "refund.succeeded": "$refund_succeeded"}
FORWARD_BACKOFF = (5, 15, 60, 300, 900, 3600)
PULL_BACKOFF = (300, 900, 3600, 4 * 3600)
PURGE_EVERY_SECONDS = 3600.0


# --------------------------------------------------------------------------- settings

class ForwardRoute(BaseModel):
    model_config = ConfigDict(extra="forbid")
    provider: str
    #: event names to forward; ``*`` = all
    events: list[str] = Field(default_factory=lambda: ["*"])

    @field_validator("provider")
    @classmethod
    def _known(cls, value: str) -> str:
        if value not in registry.analytics_forwarder_specs():
            raise ValueError(f"unknown destination {value!r}; known: "
                             f"{', '.join(registry.analytics_forwarder_specs())}")
        return value


class PaymentFunnelSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")
    view_events: list[str] = Field(default_factory=lambda: ["view_product"], min_length=1, max_length=10)
    window_seconds: int = Field(default=86_400, ge=60, le=30 * 86_400)


class AnalyticsSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")
    #: what happens to an event carrying a phone number, name or ID number: refused, or the field removed
    personal_data: Literal["reject", "drop"] = "reject"
    #: more property keys this app considers personal data
    personal_keys: list[str] = Field(default_factory=list, max_length=100)
    #: events older than this are purged (C-9); also the longest an offline phone may hold an event
    retention_days: int = Field(default=365, ge=1, le=3650)
    max_event_age_days: int = Field(default=30, ge=1, le=365)
    #: collection limits per app (a publishable key is public: these bound what a stolen one can do)
    requests_per_second: int = Field(default=2000, ge=1, le=100_000)
    requests_per_minute_per_ip: int = Field(default=600, ge=1, le=1_000_000)
    payment_funnel: PaymentFunnelSettings = Field(default_factory=PaymentFunnelSettings)
    forward: list[ForwardRoute] = Field(default_factory=list, max_length=10)
    #: sources pulled daily (credentials: minigate apps set-credentials APP SOURCE --file ...)
    sources: list[str] = Field(default_factory=list, max_length=10)
    #: events of an identified user (``user_id``) are kept only while the consent ledger holds a current
    #: ``analytics`` grant for that user; the others are refused per event (``consent_withdrawn``,
    #: ``consent_missing``). Anonymous events (no ``user_id``) are not affected.
    consent_required: bool = False

    @field_validator("sources")
    @classmethod
    def _known_sources(cls, value: list[str]) -> list[str]:
        unknown = [s for s in value if s not in registry.analytics_source_specs()]
        if unknown:
            raise ValueError(f"unknown sources {unknown}; known: {', '.join(registry.analytics_source_specs())}")
        return value

    def limits(self) -> ingest.Limits:
        return ingest.Limits(max_age_days=self.max_event_age_days, personal_data=self.personal_data,
                             personal_keys=frozenset(ingest.normalise_key(k) for k in self.personal_keys))


settings_section = Section("analytics", AnalyticsSettings, error_code="invalid_analytics_settings",
                           label="analytics")


# --------------------------------------------------------------------------- publishable keys

def _digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def _key_view(rt: Runtime, row: PublishableKey) -> dict[str, Any]:
    return {"id": row.id, "object": "publishable_key", "livemode": row.mode == "live",
            "key": rt.vault.open(row.key_sealed, context="publishable-key"),
            "created": int(row.created_at.timestamp()),
            "revoked": int(row.revoked_at.timestamp()) if row.revoked_at else None}


async def create_publishable_key(rt: Runtime, ctx: AppContext) -> dict[str, Any]:
    key = f"mg_pk_{ctx.mode}_{secrets.token_urlsafe(24).replace('-', 'A').replace('_', 'B')}"
    row = PublishableKey(id=new_id("pk"), app_id=ctx.app_id, mode=ctx.mode, digest=_digest(key),
                         key_sealed=rt.vault.seal(key, context="publishable-key"), created_at=rt.now(),
                         revoked_at=None)
    async with rt.db.transaction() as session:
        session.add(row)
        await audit.record(session, rt, action="publishable_key.created", app_id=ctx.app_id, mode=ctx.mode,
                           target=row.id, details={})
    return _key_view(rt, row)


async def list_publishable_keys(rt: Runtime, ctx: AppContext) -> list[dict[str, Any]]:
    async with rt.db.read() as session:
        rows = (await session.execute(select(PublishableKey).where(
            PublishableKey.app_id == ctx.app_id, PublishableKey.mode == ctx.mode
        ).order_by(PublishableKey.created_at))).scalars().all()
    return [_key_view(rt, row) for row in rows]


async def revoke_publishable_key(rt: Runtime, ctx: AppContext, key_id: str) -> dict[str, Any]:
    async with rt.db.transaction() as session:
        row = await session.get(PublishableKey, key_id)
        if row is None or row.app_id != ctx.app_id or row.mode != ctx.mode:
            raise NotFound("no such publishable key", param="id", code="resource_missing")
        if row.revoked_at is None:
            row.revoked_at = rt.now()
            await audit.record(session, rt, action="publishable_key.revoked", app_id=ctx.app_id, mode=ctx.mode,
                               target=row.id, details={})
    _key_cache.pop(row.digest, None)
    return _key_view(rt, row)


#: digest -> (checked at, context or None); a revocation reaches every process within this many seconds
_KEY_CACHE_SECONDS = 30.0
_key_cache: dict[str, tuple[float, AppContext | None]] = {}


async def authenticate_publishable(rt: Runtime, key: str) -> AppContext:
    digest = _digest(key)
    cached = _key_cache.get(digest)
    if cached is None or time.monotonic() - cached[0] >= _KEY_CACHE_SECONDS:
        async with rt.db.read() as session:
            row = (await session.execute(select(PublishableKey).where(
                PublishableKey.digest == digest))).scalar_one_or_none()
        found = (AppContext(row.app_id, row.mode) if row is not None and row.revoked_at is None else None)
        if len(_key_cache) > 10_000:
            _key_cache.clear()
        cached = _key_cache[digest] = (time.monotonic(), found)
    ctx = cached[1]
    if ctx is None or (ctx.mode == "live" and rt.settings.mode != "live"):
        raise AuthenticationFailed("unknown or revoked publishable key", code="invalid_publishable_key")
    return ctx


# --------------------------------------------------------------------------- collection

def _decode_body(body: bytes, content_encoding: str | None) -> bytes:
    if len(body) > MAX_COMPRESSED_BYTES:
        raise PayloadTooLarge(f"request bodies are limited to {MAX_COMPRESSED_BYTES} bytes")
    encoding = (content_encoding or "identity").strip().lower()
    if encoding in ("", "identity"):
        data = body
    elif encoding == "gzip":
        inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
        try:
            data = inflater.decompress(body, MAX_DECODED_BYTES + 1)
        except zlib.error:
            raise InvalidRequest("the body is not valid gzip", code="invalid_batch") from None
        if len(data) > MAX_DECODED_BYTES or inflater.unconsumed_tail:
            raise PayloadTooLarge(f"decompressed bodies are limited to {MAX_DECODED_BYTES} bytes")
    else:
        raise UnsupportedEncoding(f"unsupported Content-Encoding {encoding!r}: use gzip or none")
    return data


class PayloadTooLarge(ApiError):
    http_status = 413
    code = "payload_too_large"


class UnsupportedEncoding(ApiError):
    http_status = 415
    code = "unsupported_content_encoding"


async def collect(rt: Runtime, ctx: AppContext, body: bytes, *, content_encoding: str | None,
                  client_ip: str | None) -> dict[str, Any]:
    """Validate a batch and journal its events durably; the answer lists each refused event."""
    settings = await settings_section.load(rt, ctx)
    checks = [Check("app_per_second", per_second(settings.requests_per_second), f"an:{ctx.app_id}:{ctx.mode}")]
    if client_ip:
        checks.append(Check("ip_per_minute", per_minute(settings.requests_per_minute_per_ip),
                            f"an-ip:{ctx.app_id}:{client_ip}"))
    verdict = await rt.limiter.acquire(checks)
    if not verdict.allowed:
        raise RateLimited("too many analytics requests; retry later", code="rate_limited",
                          details={"retry_after": verdict.retry_after or 1})
    data = _decode_body(body, content_encoding)
    received_ms = int(rt.now().timestamp() * 1000)
    try:
        text = data.decode()
    except UnicodeDecodeError:
        raise InvalidRequest("the body is not UTF-8 JSON", code="invalid_batch") from None
    try:
        decoded = ingest.decode_json(data)
        parsed = ingest.parse_batch(decoded, app_id=ctx.app_id, mode=ctx.mode,
                                    received_ms=received_ms, limits=settings.limits(), raw=text)
    except ingest.BatchError as exc:
        raise InvalidRequest(str(exc), param=exc.param, code="invalid_batch") from None
    if settings.consent_required:
        await _drop_without_consent(rt, ctx, parsed, decoded)
    await rt.analytics.append([journal_line(r) for r in parsed.records])
    answer: dict[str, Any] = {"accepted": len(parsed.records), "rejected": parsed.rejected}
    if parsed.dropped_fields:
        answer["dropped_fields"] = parsed.dropped_fields
    if parsed.rejected:
        log.info("analytics events refused", app=ctx.app_id, refused=len(parsed.rejected),
                 codes=sorted({r["code"] for r in parsed.rejected}))
    return answer


CONSENT_DROPS = Counter("minigate_analytics_consent_drops_total",
                        "Analytics events refused for an identified user without a current analytics consent",
                        ["code"])


async def _drop_without_consent(rt: Runtime, ctx: AppContext, parsed: ingest.Parsed, decoded: Any) -> None:
    """Remove the events of users whose latest ``analytics`` consent is not a grant (one ledger read per batch)."""
    from minigate.services import consents

    users = {r["user_id"] for r in parsed.records if r.get("user_id")}
    if not users:
        return
    by_hash = {person_hash(rt, ctx, user): user for user in users}
    latest = await consents.latest_actions(rt, ctx, list(by_hash), consents.ANALYTICS)
    refused = {user: ("consent_withdrawn" if latest.get(h) == "withdraw" else "consent_missing")
               for h, user in by_hash.items() if latest.get(h) != "grant"}
    if not refused:
        return
    events = decoded.get("events") if isinstance(decoded, dict) else None
    index_of = {e.get("id"): i for i, e in enumerate(events or []) if isinstance(e, dict)}
    kept = []
    for record in parsed.records:
        code = refused.get(record.get("user_id") or "")
        if code is None:
            kept.append(record)
            continue
        CONSENT_DROPS.labels(code).inc()
        parsed.rejected.append({"index": index_of.get(record["event_id"]), "id": record["event_id"], "code": code,
                                "message": "the user has no current analytics consent"})
    parsed.records = kept


# --------------------------------------------------------------------------- server events

#: Core, in the ledger's ORM transaction without its unit of work (see ``events.emit``)
_INSERT_OUTBOX = insert(cast(Table, AnalyticsOutbox.__table__))


async def queue_server_event(session: AsyncSession, *, app_id: str, mode: str, type: str, event_id: str,
                             obj: dict[str, Any], now: datetime) -> None:
    """Called by ``events.emit`` in the ledger's transaction: the verified payment joins the analytics."""
    name = SERVER_EVENTS.get(type)
    if name is None:
        return
    metadata = obj.get("metadata") or {}
    order_id = obj.get("order") if type.startswith("refund.") else obj.get("id")
    distinct = metadata.get("analytics_distinct_id") if isinstance(metadata, dict) else None
    user = metadata.get("analytics_user_id") if isinstance(metadata, dict) else None
    properties = {"order_id": order_id, "amount": obj.get("amount"), "channel": obj.get("channel"),
                  "currency": obj.get("currency")}
    await session.execute(_INSERT_OUTBOX, {
        "app_id": app_id, "mode": mode, "event_id": event_id, "name": name,
        "distinct_id": str(distinct) if distinct else f"order:{order_id}", "user_id": str(user) if user else None,
        "properties": {k: v for k, v in properties.items() if v is not None}, "occurred_at": now})


async def move_outbox(rt: Runtime, *, limit: int = 1000) -> int:
    """Journal pending server events, then delete them (the loader's de-duplication makes this exactly once)."""
    async with rt.db.read() as session:
        rows = (await session.execute(select(AnalyticsOutbox).order_by(AnalyticsOutbox.id).limit(limit))
                ).scalars().all()
    if not rows:
        return 0
    now_ms = int(rt.now().timestamp() * 1000)
    lines = [journal_line({
        "app_id": r.app_id, "mode": r.mode, "event_id": r.event_id, "name": r.name, "kind": "server",
        "distinct_id": r.distinct_id, "user_id": r.user_id, "session_id": None,
        "ts": int(r.occurred_at.timestamp() * 1000), "received_at": now_ms, "page": None, "platform": "server",
        "order_id": r.properties.get("order_id"), "properties": r.properties}) for r in rows]
    await rt.analytics.append(lines)
    ids = [r.id for r in rows]
    async with rt.db.transaction() as session:
        await session.execute(delete(AnalyticsOutbox).where(AnalyticsOutbox.id.in_(ids)))
    return len(rows)


# --------------------------------------------------------------------------- queries

def _json_ready(value: Any) -> Any:
    if is_dataclass(value) and not isinstance(value, type):
        return _json_ready(asdict(value))
    if isinstance(value, dict):
        return {k: _json_ready(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_ready(v) for v in value]
    if isinstance(value, datetime):
        return int(value.replace(tzinfo=value.tzinfo or UTC).timestamp())
    if isinstance(value, date):
        return value.isoformat()
    return value


def _scope(ctx: AppContext, platform: str | None, where: dict[str, str]) -> Any:
    from minigate.analytics.queries import Scope

    try:
        return Scope(app_id=ctx.app_id, mode=ctx.mode, platform=platform, properties=where)
    except ValueError as exc:
        raise InvalidRequest(str(exc), param="where", code="invalid_filter") from None


def _check_range(start: date, end: date, *, max_days: int = 400) -> None:
    if end < start:
        raise InvalidRequest("to must not be before from", param="to", code="invalid_range")
    if (end - start).days >= max_days:
        raise InvalidRequest(f"ranges are limited to {max_days} days", param="to", code="invalid_range")


async def _run(rt: Runtime, fn: Any) -> Any:
    try:
        return await rt.analytics.read(fn)
    except ValueError as exc:
        raise InvalidRequest(str(exc), code="invalid_query") from None


async def active_users(rt: Runtime, ctx: AppContext, *, start: date, end: date, interval: str,
                       platform: str | None = None, where: dict[str, str] | None = None) -> dict[str, Any]:
    from minigate.analytics import queries

    _check_range(start, end)
    scope = _scope(ctx, platform, where or {})
    rows = await _run(rt, lambda con: queries.active_users(con, scope, start, end, interval))  # type: ignore[arg-type]
    return {"object": "active_users", "interval": interval, "data": _json_ready(rows)}


async def retention(rt: Runtime, ctx: AppContext, *, start: date, end: date, period: str, horizon: int,
                    platform: str | None = None, where: dict[str, str] | None = None) -> dict[str, Any]:
    from minigate.analytics import queries

    _check_range(start, end)
    scope = _scope(ctx, platform, where or {})
    rows = await _run(rt, lambda con: queries.retention(con, scope, start, end, period=period,  # type: ignore[arg-type]
                                                        horizon=horizon))
    return {"object": "retention", "period": period, "horizon": horizon, "data": _json_ready(rows)}


async def funnel(rt: Runtime, ctx: AppContext, *, steps: Sequence[str], start: date, end: date,
                 window_seconds: int, platform: str | None = None,
                 where: dict[str, str] | None = None) -> dict[str, Any]:
    from minigate.analytics import queries

    _check_range(start, end)
    if not 2 <= len(steps) <= 10:
        raise InvalidRequest("a funnel has 2 to 10 steps", param="steps", code="invalid_funnel")
    for name in steps:
        if not ingest.EVENT_NAME.match(name):
            raise InvalidRequest(f"invalid step name {name!r}", param="steps", code="invalid_funnel")
    scope = _scope(ctx, platform, where or {})
    step_specs = [queries.Step(name) for name in steps]
    rows = await _run(rt, lambda con: queries.funnel(con, scope, step_specs, start, end, window_seconds))
    return {"object": "funnel", "window_seconds": window_seconds, "data": _json_ready(rows)}


async def top(rt: Runtime, ctx: AppContext, *, what: Literal["events", "pages"], start: date, end: date,
              limit: int, platform: str | None = None, where: dict[str, str] | None = None) -> dict[str, Any]:
    from minigate.analytics import queries

    _check_range(start, end)
    scope = _scope(ctx, platform, where or {})
    fn = queries.top_events if what == "events" else queries.top_pages
    rows = await _run(rt, lambda con: fn(con, scope, start, end, limit=limit))
    return {"object": f"top_{what}", "data": _json_ready(rows)}


async def payment_funnel(rt: Runtime, ctx: AppContext, *, start: date, end: date, window_seconds: int | None = None,
                         view_events: Sequence[str] | None = None, platform: str | None = None,
                         where: dict[str, str] | None = None) -> dict[str, Any]:
    """From product view to a payment the provider verified: events joined to the ledger's orders."""
    from minigate.analytics import queries

    _check_range(start, end)
    settings = await settings_section.load(rt, ctx)
    window = window_seconds or settings.payment_funnel.window_seconds
    views = list(view_events or settings.payment_funnel.view_events)
    scope = _scope(ctx, platform, where or {})
    owners = await _order_owners(rt, ctx, start, end, window)
    viewers, links = await _run(rt, lambda con: queries.payment_links_summary(
        con, scope, start, end, window, view_events=views, order_owners=owners))
    order_ids = {link.order_id for person in links for link in person.orders}
    ledger = await _ledger(rt, ctx, order_ids)
    result = queries.payment_funnel(links, ledger, window, viewers=viewers)
    return {"object": "payment_funnel", "window_seconds": window, "view_events": views, **_json_ready(result)}


async def _order_owners(rt: Runtime, ctx: AppContext, start: date, end: date, window: int) -> dict[str, str]:
    """Orders whose creator named the analytics id in ``metadata.analytics_distinct_id`` / ``analytics_user_id``."""
    lo = datetime.combine(start, datetime.min.time(), UTC) - BEIJING
    hi = datetime.combine(end + timedelta(days=1), datetime.min.time(), UTC) - BEIJING + timedelta(seconds=window)
    owners: dict[str, str] = {}
    async with rt.db.read() as session:
        rows = (await session.execute(select(Order.id, Order.metadata_).where(
            Order.app_id == ctx.app_id, Order.mode == ctx.mode, Order.created_at >= lo, Order.created_at < hi))).all()
    for order_id, metadata in rows:
        if isinstance(metadata, dict):
            owner = metadata.get("analytics_user_id") or metadata.get("analytics_distinct_id")
            if isinstance(owner, str) and owner:
                owners[order_id] = owner
    return owners


async def _ledger(rt: Runtime, ctx: AppContext, order_ids: set[str]) -> dict[str, Any]:
    from minigate.analytics.queries import LedgerOrder

    found: dict[str, Any] = {}
    ids = sorted(order_ids)
    async with rt.db.read() as session:
        for i in range(0, len(ids), 500):
            rows = (await session.execute(select(Order).where(
                Order.app_id == ctx.app_id, Order.mode == ctx.mode, Order.id.in_(ids[i:i + 500])))).scalars().all()
            for o in rows:
                found[o.id] = LedgerOrder(order_id=o.id, created_at=o.created_at, status=o.status, paid_at=o.paid_at,
                                          amount=o.amount, amount_refunded=o.amount_refunded)
    return found


async def external_metrics(rt: Runtime, ctx: AppContext, *, source: str, metric: str, start: date,
                           end: date) -> dict[str, Any]:
    from minigate.analytics import queries

    _check_range(start, end)
    if source not in registry.analytics_source_specs():
        raise InvalidRequest(f"unknown source {source!r}", param="source", code="unknown_source")
    rows = await _run(rt, lambda con: queries.external_metrics(con, ctx.app_id, ctx.mode, source, metric,
                                                               start, end))
    return {"object": "external_metrics", "source": source, "data": _json_ready(rows)}


# --------------------------------------------------------------------------- rights and retention

async def _every_app(rt: Runtime) -> list[tuple[AppContext, AnalyticsSettings]]:
    """Every app, in both modes, with its analytics settings (the worker's scheduled steps walk these)."""
    async with rt.db.read() as session:
        apps = (await session.execute(select(App.id))).scalars().all()
    return [(ctx, await settings_section.load(rt, ctx)) for app_id in apps for ctx in
            (AppContext(app_id, "test"), AppContext(app_id, "live"))]


def _subject_hash(rt: Runtime, ctx: AppContext, person: str) -> str:
    return rt.vault.lookup_hash(person, context=f"analytics-person:{ctx.app_id}")


def person_hash(rt: Runtime, ctx: AppContext, person: str) -> str:
    """The keyed hash a user or device id is filed under (consent ledger, deletion records)."""
    return _subject_hash(rt, ctx, person)


async def person_events(rt: Runtime, ctx: AppContext, person: str) -> list[dict[str, Any]]:
    """Every stored event of a person (user id or device id), ready for JSON."""
    from minigate.analytics import queries

    await rt.analytics.flush()
    rows = await rt.analytics.read(lambda con: queries.person_events(con, ctx.app_id, ctx.mode, person))
    return list(_json_ready(rows))


async def delete_person_events(rt: Runtime, ctx: AppContext, person: str) -> tuple[int, list[str]]:
    """Delete a person's events; (how many, the destinations they may have been forwarded to)."""
    from minigate.analytics import queries

    await rt.analytics.flush()
    count = await rt.analytics.write(lambda con: queries.erase_person(con, ctx.app_id, ctx.mode, person))
    settings = await settings_section.load(rt, ctx)
    return count, [route.provider for route in settings.forward]


async def export_person(rt: Runtime, ctx: AppContext, person: str) -> dict[str, Any]:
    from minigate.analytics import queries

    await rt.analytics.flush()
    rows = await rt.analytics.read(lambda con: queries.person_events(con, ctx.app_id, ctx.mode, person))
    async with rt.db.transaction() as session:
        await audit.record(session, rt, action="analytics.person_exported", app_id=ctx.app_id, mode=ctx.mode,
                           target=_subject_hash(rt, ctx, person)[:16], details={"events": len(rows)})
    return {"object": "analytics_export", "person": person, "events": _json_ready(rows)}


async def erase_person(rt: Runtime, ctx: AppContext, person: str) -> dict[str, Any]:
    count, forwarded_to = await delete_person_events(rt, ctx, person)
    async with rt.db.transaction() as session:
        session.add(DeletionRecord(app_id=ctx.app_id, mode=ctx.mode, reason="subject_erasure",
                                   data_class="analytics_events", subject_hash=_subject_hash(rt, ctx, person),
                                   count=count, details={"forwarded_to": forwarded_to}, created_at=rt.now()))
        await audit.record(session, rt, action="analytics.person_erased", app_id=ctx.app_id, mode=ctx.mode,
                           target=_subject_hash(rt, ctx, person)[:16], details={"events": count})
    return {"object": "analytics_erasure", "deleted": count,
            # what was forwarded carried only a keyed hash of the id; the destinations' own erasure is theirs
            "forwarded_to": forwarded_to}


async def purge_expired(rt: Runtime) -> int:
    """Delete events older than each app's retention; one deletion record per app and mode."""
    total = 0
    for ctx, settings in await _every_app(rt):
        app_id, mode = ctx.app_id, ctx.mode
        cutoff = (rt.now() - timedelta(days=settings.retention_days)).astimezone(UTC).replace(tzinfo=None)

        def purge(con: Any, app_id: str = app_id, mode: str = mode, cutoff: datetime = cutoff) -> int:
            row = con.execute("SELECT count(*) FROM events WHERE app_id = ? AND mode = ? AND ts < ?",
                              [app_id, mode, cutoff]).fetchone()
            count = int(row[0]) if row else 0
            if count:
                con.execute("DELETE FROM events WHERE app_id = ? AND mode = ? AND ts < ?", [app_id, mode, cutoff])
            return count

        count = await rt.analytics.write(purge)
        if count:
            total += count
            async with rt.db.transaction() as session:
                session.add(DeletionRecord(app_id=app_id, mode=mode, reason="retention_purge",
                                           data_class="analytics_events", subject_hash=None, count=count,
                                           details={"retention_days": settings.retention_days},
                                           created_at=rt.now()))
    return total


# --------------------------------------------------------------------------- forwarding

def _user_key(rt: Runtime, app_id: str, user_id: str | None, distinct_id: str) -> tuple[str, bool]:
    value, logged_in = (user_id, True) if user_id else (distinct_id, False)
    return rt.vault.lookup_hash(value, context=f"analytics-forward:{app_id}")[:32], logged_in


def _forward_event(rt: Runtime, row: dict[str, Any]) -> ForwardEvent:
    import json

    key, logged_in = _user_key(rt, row["app_id"], row["user_id"], row["distinct_id"])
    props = row["properties"]
    if isinstance(props, str):
        props = json.loads(props)
    ts = row["ts"]
    return ForwardEvent(event_id=row["event_id"], name=row["name"], kind=row["kind"], user_key=key,
                        logged_in=logged_in, ts_ms=int(ts.replace(tzinfo=UTC).timestamp() * 1000),
                        page=row["page"], platform=row["platform"], properties=props or {})


async def forward_due(rt: Runtime, *, limit: int = 20) -> int:
    """Forward one batch per due cursor; creates cursors for newly configured destinations."""
    now = rt.now()
    await _ensure_cursors(rt, now)
    async with rt.db.transaction() as session:
        rows = (await session.execute(select(AnalyticsForwardCursor).where(
            AnalyticsForwardCursor.next_attempt_at <= now,
            or_(AnalyticsForwardCursor.claimed_until.is_(None), AnalyticsForwardCursor.claimed_until < now),
        ).limit(limit).with_for_update(skip_locked=True))).scalars().all()
        for row in rows:
            row.claimed_until = now + timedelta(seconds=120)
        claimed = [(r.id, r.app_id, r.mode, r.provider, r.last_seq) for r in rows]
    done = 0
    for cursor_id, app_id, mode, provider, last_seq in claimed:
        done += await _forward_one(rt, cursor_id, AppContext(app_id, mode), provider, last_seq)
    return done


async def _ensure_cursors(rt: Runtime, now: datetime) -> None:
    async with rt.db.read() as session:
        existing = {(c.app_id, c.mode, c.provider) for c in (await session.execute(
            select(AnalyticsForwardCursor))).scalars().all()}
    for ctx, settings in await _every_app(rt):
        app_id, mode = ctx.app_id, ctx.mode
        for route in settings.forward:
            if (app_id, mode, route.provider) in existing:
                continue
            async with rt.db.transaction() as session:
                # forwarding starts with events collected from now on, not with the whole history
                session.add(AnalyticsForwardCursor(
                    app_id=app_id, mode=mode, provider=route.provider, last_seq=await _max_seq(rt),
                    forwarded=0, failures=0, next_attempt_at=now, claimed_until=None, last_error=None,
                    last_success_at=None, updated_at=now))


async def _max_seq(rt: Runtime) -> int:
    row = await rt.analytics.read(lambda con: con.execute("SELECT coalesce(max(seq), 0) FROM events").fetchone())
    return int(row[0]) if row else 0


async def _forward_one(rt: Runtime, cursor_id: int, ctx: AppContext, provider: str, last_seq: int) -> int:
    settings = await settings_section.load(rt, ctx)
    route = next((r for r in settings.forward if r.provider == provider), None)
    if route is None:   # no longer configured: leave the cursor parked
        await _settle_cursor(rt, cursor_id, next_in=3600, error=None, sent=0, new_seq=None)
        return 0
    try:
        forwarder = await rt.analytics_provider(ctx.app_id, ctx.mode, provider)
    except MinigateError as exc:
        await _settle_cursor(rt, cursor_id, next_in=None, error=f"{_code(exc)}: {exc}", sent=0, new_seq=None)
        return 0
    names = None if "*" in route.events else list(route.events)

    def fetch(con: Any) -> list[dict[str, Any]]:
        sql = ("SELECT seq, app_id, event_id, name, kind, distinct_id, user_id, ts, page, platform, properties "
               "FROM events WHERE seq > ? AND app_id = ? AND mode = ?")
        params: list[Any] = [last_seq, ctx.app_id, ctx.mode]
        if names is not None:
            sql += " AND list_contains(?, name)"
            params.append(names)
        sql += " ORDER BY seq LIMIT ?"
        params.append(forwarder.max_batch)
        cur = con.execute(sql, params)
        columns = [d[0] for d in cur.description]
        return [dict(zip(columns, r, strict=True)) for r in cur.fetchall()]

    rows = await rt.analytics.read(fetch)
    if not rows:
        await _settle_cursor(rt, cursor_id, next_in=2, error=None, sent=0, new_seq=None)
        return 0
    batch = [_forward_event(rt, r) for r in rows]
    try:
        result = await forwarder.forward(batch)
    except OutcomeUnknown as exc:
        await _settle_cursor(rt, cursor_id, next_in=None, error=f"outcome_unknown: {exc}", sent=0, new_seq=None)
        return 0
    if not result.ok:
        await _settle_cursor(rt, cursor_id, next_in=None, error=f"{result.code}: {result.provider_code or ''} "
                             f"{result.message or ''}".strip(), sent=0, new_seq=None)
        return 0
    await _settle_cursor(rt, cursor_id, next_in=0, error=None, sent=len(batch), new_seq=int(rows[-1]["seq"]))
    return len(batch)


async def _settle_cursor(rt: Runtime, cursor_id: int, *, next_in: float | None, error: str | None, sent: int,
                         new_seq: int | None) -> None:
    now = rt.now()
    async with rt.db.transaction() as session:
        row = await session.get(AnalyticsForwardCursor, cursor_id)
        if row is None:
            return
        row.claimed_until = None
        row.updated_at = now
        if error is not None:
            row.failures += 1
            row.last_error = error[:300]
            delay = FORWARD_BACKOFF[min(row.failures - 1, len(FORWARD_BACKOFF) - 1)]
            row.next_attempt_at = now + timedelta(seconds=delay)
            log.warning("analytics forwarding failed", provider=row.provider, app=row.app_id, failures=row.failures,
                        error=row.last_error)
            return
        if new_seq is not None:
            row.last_seq = new_seq
            row.forwarded += sent
            row.last_success_at = now
        row.failures = 0
        row.last_error = None
        row.next_attempt_at = now + timedelta(seconds=next_in or 0)


async def forwarding_status(rt: Runtime, ctx: AppContext) -> dict[str, Any]:
    head = await _max_seq(rt)
    async with rt.db.read() as session:
        rows = (await session.execute(select(AnalyticsForwardCursor).where(
            AnalyticsForwardCursor.app_id == ctx.app_id, AnalyticsForwardCursor.mode == ctx.mode))).scalars().all()
    return {"object": "list", "data": [{
        "provider": r.provider, "forwarded": r.forwarded, "last_seq": r.last_seq, "store_seq": head,
        "failures": r.failures, "last_error": r.last_error,
        "status": "failing" if r.failures else "ok",
        "last_success_at": int(r.last_success_at.timestamp()) if r.last_success_at else None,
        "next_attempt_at": int(r.next_attempt_at.timestamp())} for r in rows]}


# --------------------------------------------------------------------------- pulling

def beijing_today(now: datetime) -> date:
    return (now.astimezone(UTC) + BEIJING).date()


def query_range(now: datetime, start: date | None, end: date | None) -> tuple[date, date]:
    """A query's days: up to ``end`` (default: today in Beijing), from ``start`` (default: the 7 days to ``end``)."""
    end = end or beijing_today(now)
    return start or end - timedelta(days=6), end


def parse_where(items: Iterable[str]) -> dict[str, str]:
    """Property filters given as ``key:value`` strings."""
    found: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition(":")
        if not sep or not key:
            raise InvalidRequest("where filters are key:value", param="where", code="invalid_filter")
        found[key] = value
    return found


async def request_pull(rt: Runtime, ctx: AppContext, *, source: str, day: date) -> dict[str, Any]:
    if source not in registry.analytics_source_specs():
        raise InvalidRequest(f"unknown source {source!r}", param="source", code="unknown_source")
    if day >= beijing_today(rt.now()):
        raise InvalidRequest("only days that are over can be pulled", param="date", code="invalid_range")
    pull_id = await _ensure_pull(rt, ctx, source, day, force=True)
    await _pull_one(rt, pull_id)
    return await _pull_view(rt, pull_id)


async def _ensure_pull(rt: Runtime, ctx: AppContext, source: str, day: date, *, force: bool) -> int:
    now = rt.now()
    async with rt.db.transaction() as session:
        row = (await session.execute(select(AnalyticsPull).where(
            AnalyticsPull.app_id == ctx.app_id, AnalyticsPull.mode == ctx.mode, AnalyticsPull.source == source,
            AnalyticsPull.ref_date == day.isoformat()))).scalar_one_or_none()
        if row is None:
            row = AnalyticsPull(app_id=ctx.app_id, mode=ctx.mode, source=source, ref_date=day.isoformat(),
                                status="pending", attempts=0, rows=0, next_attempt_at=now, claimed_until=None,
                                last_error=None, updated_at=now)
            session.add(row)
            await session.flush()
        elif force:
            row.status = "pending"
            row.next_attempt_at = now
        return row.id


async def pull_due(rt: Runtime, *, limit: int = 10) -> int:
    """Queue yesterday for every configured source, then pull what is due."""
    now = rt.now()
    yesterday = beijing_today(now) - timedelta(days=1)
    for ctx, settings in await _every_app(rt):
        for source in settings.sources:
            await _ensure_pull(rt, ctx, source, yesterday, force=False)
    async with rt.db.transaction() as session:
        rows = (await session.execute(select(AnalyticsPull).where(
            AnalyticsPull.status == "pending", AnalyticsPull.next_attempt_at <= now,
            or_(AnalyticsPull.claimed_until.is_(None), AnalyticsPull.claimed_until < now),
        ).limit(limit).with_for_update(skip_locked=True))).scalars().all()
        for row in rows:
            row.claimed_until = now + timedelta(seconds=300)
        ids = [r.id for r in rows]
    for pull_id in ids:
        await _pull_one(rt, pull_id)
    return len(ids)


async def _pull_one(rt: Runtime, pull_id: int) -> None:
    async with rt.db.read() as session:
        pull = await session.get(AnalyticsPull, pull_id)
    if pull is None:
        return
    error: str | None = None
    rows: list[MetricRow] = []
    try:
        source = await rt.analytics_provider(pull.app_id, pull.mode, pull.source)
        result = await source.pull(date.fromisoformat(pull.ref_date))
        if result.ok:
            rows = list(result.value or [])
        else:
            error = f"{result.code}: {result.provider_code or ''} {result.message or ''}".strip()
    except OutcomeUnknown as exc:
        error = f"outcome_unknown: {exc}"
    except MinigateError as exc:
        error = f"{_code(exc)}: {exc}"
    if error is None:
        await rt.analytics.write(lambda con: _replace_metrics(con, pull.app_id, pull.mode, pull.source,
                                                              date.fromisoformat(pull.ref_date), rows))
    now = rt.now()
    async with rt.db.transaction() as session:
        row = await session.get(AnalyticsPull, pull_id)
        if row is None:
            return
        row.claimed_until = None
        row.updated_at = now
        row.attempts += 1
        if error is None:
            row.status, row.rows, row.last_error = "done", len(rows), None
        else:
            row.last_error = error[:300]
            if row.attempts >= len(PULL_BACKOFF) + 1:
                row.status = "failed"
            else:
                row.next_attempt_at = now + timedelta(seconds=PULL_BACKOFF[row.attempts - 1])
            log.warning("analytics pull failed", source=row.source, app=row.app_id, day=row.ref_date,
                        attempts=row.attempts, error=row.last_error)


def _code(exc: Exception) -> str:
    return str(getattr(exc, "code", None) or type(exc).__name__)


def _replace_metrics(con: Any, app_id: str, mode: str, source: str, day: date, rows: Sequence[MetricRow]) -> int:
    con.execute("DELETE FROM external_metrics WHERE source = ? AND app_id = ? AND mode = ? AND ref_date = ?",
                [source, app_id, mode, day])
    if rows:
        pulled = datetime.now(UTC).replace(tzinfo=None)
        con.executemany("INSERT INTO external_metrics VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        [[source, app_id, mode, r.metric, r.ref_date, r.dimension, r.key, r.value, pulled]
                         for r in rows])
    return len(rows)


async def _pull_view(rt: Runtime, pull_id: int) -> dict[str, Any]:
    async with rt.db.read() as session:
        row = await session.get(AnalyticsPull, pull_id)
    assert row is not None
    return {"object": "analytics_pull", "source": row.source, "date": row.ref_date, "status": row.status,
            "attempts": row.attempts, "rows": row.rows, "last_error": row.last_error}


async def list_pulls(rt: Runtime, ctx: AppContext, *, limit: int = 100) -> dict[str, Any]:
    async with rt.db.read() as session:
        ids = (await session.execute(select(AnalyticsPull.id).where(
            AnalyticsPull.app_id == ctx.app_id, AnalyticsPull.mode == ctx.mode
        ).order_by(AnalyticsPull.ref_date.desc(), AnalyticsPull.source).limit(limit))).scalars().all()
    return {"object": "list", "data": [await _pull_view(rt, i) for i in ids]}


# --------------------------------------------------------------------------- the worker's step

class AnalyticsWorker:
    """Load sealed journal segments, move server events, forward, pull, purge — each failure isolated."""

    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        self._last_purge = float("-inf")
        self._last_pull = float("-inf")

    async def run_once(self) -> int:
        done = 0
        for name, step in (("outbox", move_outbox), ("load", lambda rt: rt.analytics.tick()),
                           ("forward", forward_due)):
            try:
                done += await step(self.rt)
            except Exception:  # logged with its traceback; retried on the next pass
                log.exception("analytics step failed", step=name)
        if time.monotonic() - self._last_pull >= 60:
            self._last_pull = time.monotonic()
            try:
                await pull_due(self.rt)
            except Exception:  # logged with its traceback; retried on a later pass
                log.exception("analytics step failed", step="pull")
        if time.monotonic() - self._last_purge >= PURGE_EVERY_SECONDS:
            self._last_purge = time.monotonic()
            try:
                await purge_expired(self.rt)
            except Exception:  # logged with its traceback; retried on a later pass
                log.exception("analytics step failed", step="purge")
        return done



"""Merchant-facing events and the webhook outbox, written in the caller's transaction."""

from __future__ import annotations

import asyncio
import secrets
import weakref
from datetime import datetime, timedelta
from typing import Any, cast
from urllib.parse import urlsplit

from sqlalchemy import Table, bindparam, insert, select
from sqlalchemy.ext.asyncio import AsyncSession

from minigate.errors import InvalidRequest, NotFound
from minigate.services import audit
from minigate.services.apps import AppContext
from minigate.services.ids import new_id
from minigate.services.runtime import Runtime
from minigate.store.db import after_commit
from minigate.store.tables import Event, WebhookDelivery, WebhookEndpoint

__all__ = ["EVENT_TYPES", "create_endpoint", "delete_endpoint", "delivery_view", "emit", "endpoint_view",
           "event_view", "get_endpoint", "list_deliveries", "list_endpoints", "outbox_signal", "redeliver",
           "rotate_secret", "signing_secrets"]

EVENT_TYPES = frozenset({
    "order.paid", "order.closed", "order.paid_after_close",
    "refund.succeeded", "refund.failed",
    "sms.delivered", "sms.failed",
    "identity.verified", "identity.failed",
})


#: per runtime: set when a transaction of this process committed new webhook deliveries
_outbox_signals: weakref.WeakKeyDictionary[Runtime, asyncio.Event] = weakref.WeakKeyDictionary()


def outbox_signal(rt: Runtime) -> asyncio.Event:
    """The event this process's webhook worker waits on, so a delivery starts as soon as its row is committed
    instead of at the next poll (other processes' rows are still found by polling)."""
    signal = _outbox_signals.get(rt)
    if signal is None:
        signal = _outbox_signals[rt] = asyncio.Event()
    return signal


#: the outbox writes, as SQLAlchemy Core statements built once: they run in the caller's ORM transaction but
#: skip its unit of work (no identity map, no extra flush), which was most of a callback's SQLAlchemy time
_INSERT_EVENT = insert(cast(Table, Event.__table__))
_INSERT_DELIVERIES = insert(cast(Table, WebhookDelivery.__table__))
_ENDPOINTS = cast(Table, WebhookEndpoint.__table__)
_SUBSCRIBED = select(_ENDPOINTS.c.id, _ENDPOINTS.c.enabled_events).where(
    _ENDPOINTS.c.app_id == bindparam("app_id"), _ENDPOINTS.c.mode == bindparam("mode"),
    _ENDPOINTS.c.enabled.is_(True))


async def emit(session: AsyncSession, rt: Runtime, *, app_id: str, mode: str, type: str, obj: dict[str, Any],
               now: datetime) -> str:
    """Record an event, queue one delivery per subscribed endpoint and the app's opted-in order SMS —
    atomically with the state change. Returns the event's id."""
    event_id = new_id("evt")
    await session.execute(_INSERT_EVENT, {"id": event_id, "app_id": app_id, "mode": mode, "type": type,
                                          "object_id": obj["id"], "data": {"object": obj}, "created_at": now})
    endpoints = (await session.execute(_SUBSCRIBED, {"app_id": app_id, "mode": mode})).all()
    deliveries = [{"event_id": event_id, "endpoint_id": endpoint_id, "app_id": app_id, "status": "pending",
                   "attempts": 0, "next_attempt_at": now, "created_at": now}
                  for endpoint_id, enabled_events in endpoints if "*" in enabled_events or type in enabled_events]
    if deliveries:
        await session.execute(_INSERT_DELIVERIES, deliveries)
        after_commit(session, outbox_signal(rt).set)
    from minigate.services.analytics import queue_server_event
    from minigate.services.sms import queue_for_event

    await queue_for_event(rt, session, app_id=app_id, mode=mode, type=type, obj=obj, now=now)
    await queue_server_event(session, app_id=app_id, mode=mode, type=type, event_id=event_id, obj=obj, now=now)
    return event_id


def event_view(event: Event) -> dict[str, Any]:
    return {"id": event.id, "object": "event", "type": event.type, "livemode": event.mode == "live",
            "created": int(event.created_at.timestamp()), "data": event.data}


def _check_url(rt: Runtime, url: str, mode: str) -> None:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidRequest("url must be an absolute http(s) URL", param="url", code="invalid_url")
    if mode == "live" and parts.scheme != "https":
        raise InvalidRequest("live-mode webhook endpoints must use https", param="url", code="insecure_url")
    if len(url) > 2048:
        raise InvalidRequest("url too long", param="url", code="invalid_url")


async def create_endpoint(rt: Runtime, ctx: AppContext, *, url: str, enabled_events: list[str]) -> dict[str, Any]:
    _check_url(rt, url, ctx.mode)
    events = enabled_events or ["*"]
    unknown = [e for e in events if e != "*" and e not in EVENT_TYPES]
    if unknown:
        raise InvalidRequest(f"unknown event types: {', '.join(unknown)}", param="enabled_events",
                             code="unknown_event_type")
    secret = _new_secret()
    endpoint = WebhookEndpoint(id=new_id("we"), app_id=ctx.app_id, mode=ctx.mode, url=url,
                               secret_sealed=rt.vault.seal(secret, context="webhook-secret"),
                               enabled_events=events, enabled=True, created_at=rt.now())
    async with rt.db.transaction() as session:
        session.add(endpoint)
        await session.flush()
        await audit.record(session, rt, action="webhook_endpoint.created", app_id=ctx.app_id, mode=ctx.mode,
                           target=endpoint.id, details={"enabled_events": events})
    view = endpoint_view(endpoint)
    view["secret"] = secret          # shown once
    return view


def endpoint_view(endpoint: WebhookEndpoint) -> dict[str, Any]:
    return {"id": endpoint.id, "object": "webhook_endpoint", "url": endpoint.url,
            "enabled_events": endpoint.enabled_events, "status": "enabled" if endpoint.enabled else "disabled",
            "livemode": endpoint.mode == "live", "created": int(endpoint.created_at.timestamp())}


async def get_endpoint(rt: Runtime, ctx: AppContext, endpoint_id: str) -> WebhookEndpoint:
    async with rt.db.read() as session:
        row = await session.get(WebhookEndpoint, endpoint_id)
    if row is None or row.app_id != ctx.app_id or row.mode != ctx.mode:
        raise NotFound("no such webhook endpoint", code="resource_missing", details={"id": endpoint_id})
    return row


async def list_endpoints(rt: Runtime, ctx: AppContext) -> list[WebhookEndpoint]:
    async with rt.db.read() as session:
        return list((await session.execute(select(WebhookEndpoint).where(
            WebhookEndpoint.app_id == ctx.app_id, WebhookEndpoint.mode == ctx.mode)
            .order_by(WebhookEndpoint.created_at))).scalars().all())


def _new_secret() -> str:
    return "whsec_" + secrets.token_urlsafe(32).replace("-", "A").replace("_", "B")


def signing_secrets(rt: Runtime, endpoint: WebhookEndpoint, now: datetime) -> list[str]:
    """The secrets a delivery is signed with: the current one, plus the previous one until it expires."""
    keys = [rt.vault.open(endpoint.secret_sealed, context="webhook-secret")]
    if endpoint.previous_secret_sealed and endpoint.previous_secret_expires_at and \
            endpoint.previous_secret_expires_at > now:
        keys.append(rt.vault.open(endpoint.previous_secret_sealed, context="webhook-secret"))
    return keys


async def rotate_secret(rt: Runtime, ctx: AppContext, endpoint_id: str, *, overlap_seconds: int) -> dict[str, Any]:
    """A new secret (shown once); the old one keeps signing for ``overlap_seconds`` so receivers can switch."""
    if not 0 <= overlap_seconds <= 7 * 86400:
        raise InvalidRequest("expire_previous_in must be between 0 and 604800 seconds", param="expire_previous_in")
    await get_endpoint(rt, ctx, endpoint_id)
    secret = _new_secret()
    now = rt.now()
    async with rt.db.transaction() as session:
        row = (await session.execute(select(WebhookEndpoint).where(WebhookEndpoint.id == endpoint_id)
                                     .with_for_update())).scalar_one()
        row.previous_secret_sealed = row.secret_sealed if overlap_seconds else None
        row.previous_secret_expires_at = now + timedelta(seconds=overlap_seconds) if overlap_seconds else None
        row.secret_sealed = rt.vault.seal(secret, context="webhook-secret")
        await audit.record(session, rt, action="webhook_endpoint.secret_rotated", app_id=ctx.app_id,
                           mode=ctx.mode, target=endpoint_id, details={"overlap_seconds": overlap_seconds})
    view = endpoint_view(row)
    view["secret"] = secret
    view["previous_secret_expires_at"] = int(row.previous_secret_expires_at.timestamp()) \
        if row.previous_secret_expires_at else None
    return view


async def redeliver(rt: Runtime, *, event: Event, endpoint_ids: list[str] | None) -> int:
    """Queue the event again for its app's enabled endpoints (or the ones named), at once, with a fresh retry
    window. Returns how many deliveries were queued."""
    now = rt.now()
    async with rt.db.transaction() as session:
        query = select(WebhookEndpoint).where(WebhookEndpoint.app_id == event.app_id,
                                              WebhookEndpoint.mode == event.mode, WebhookEndpoint.enabled.is_(True))
        if endpoint_ids:
            query = query.where(WebhookEndpoint.id.in_(endpoint_ids))
        endpoints = (await session.execute(query)).scalars().all()
        if endpoint_ids and len(endpoints) != len(set(endpoint_ids)):
            raise NotFound("no such webhook endpoint", code="resource_missing")
        for endpoint in endpoints:
            row = (await session.execute(select(WebhookDelivery).where(
                WebhookDelivery.event_id == event.id, WebhookDelivery.endpoint_id == endpoint.id)
                .with_for_update())).scalar_one_or_none()
            if row is None:
                session.add(WebhookDelivery(event_id=event.id, endpoint_id=endpoint.id, app_id=event.app_id,
                                            status="pending", attempts=0, next_attempt_at=now, created_at=now))
            else:
                row.status, row.next_attempt_at, row.created_at, row.locked_until = "pending", now, now, None
        if endpoints:
            after_commit(session, outbox_signal(rt).set)
        await audit.record(session, rt, action="webhook.redelivered", app_id=event.app_id, mode=event.mode,
                           target=event.id, details={"endpoints": sorted(e.id for e in endpoints)},
                           fallback_actor="cli")
        return len(endpoints)


def delivery_view(row: WebhookDelivery) -> dict[str, Any]:
    return {"object": "webhook_delivery", "event": row.event_id, "endpoint": row.endpoint_id, "status": row.status,
            "attempts": row.attempts, "last_status_code": row.last_status_code, "last_error": row.last_error,
            "next_attempt_at": int(row.next_attempt_at.timestamp()) if row.status == "pending" else None,
            "delivered_at": int(row.delivered_at.timestamp()) if row.delivered_at else None,
            "created": int(row.created_at.timestamp())}


async def list_deliveries(rt: Runtime, ctx: AppContext, *, event_id: str | None, status: str | None,
                          limit: int) -> list[WebhookDelivery]:
    query = select(WebhookDelivery).join(WebhookEndpoint, WebhookEndpoint.id == WebhookDelivery.endpoint_id).where(
        WebhookDelivery.app_id == ctx.app_id, WebhookEndpoint.mode == ctx.mode)
    if event_id:
        query = query.where(WebhookDelivery.event_id == event_id)
    if status:
        query = query.where(WebhookDelivery.status == status)
    async with rt.db.read() as session:
        return list((await session.execute(query.order_by(WebhookDelivery.created_at.desc()).limit(limit)))
                    .scalars().all())


async def delete_endpoint(rt: Runtime, ctx: AppContext, endpoint_id: str) -> None:
    await get_endpoint(rt, ctx, endpoint_id)
    async with rt.db.transaction() as session:
        row = await session.get(WebhookEndpoint, endpoint_id)
        if row is not None:
            row.enabled = False
            await audit.record(session, rt, action="webhook_endpoint.disabled", app_id=ctx.app_id, mode=ctx.mode,
                               target=endpoint_id)

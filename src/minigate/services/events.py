"""Merchant-facing events and the webhook outbox, written in the caller's transaction."""

from __future__ import annotations

import secrets
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from minigate.errors import InvalidRequest, NotFound
from minigate.services.apps import AppContext
from minigate.services.ids import new_id
from minigate.services.runtime import Runtime
from minigate.store.tables import Event, WebhookDelivery, WebhookEndpoint

__all__ = ["EVENT_TYPES", "create_endpoint", "delete_endpoint", "emit", "endpoint_view", "event_view",
           "get_endpoint", "list_endpoints"]

EVENT_TYPES = frozenset({
    "order.paid", "order.closed", "order.paid_after_close",
    "refund.succeeded", "refund.failed",
})


async def emit(session: AsyncSession, *, app_id: str, mode: str, type: str, obj: dict[str, Any],
               now: datetime) -> Event:
    """Record an event and queue one delivery per subscribed endpoint — atomically with the state change."""
    event = Event(id=new_id("evt"), app_id=app_id, mode=mode, type=type, object_id=obj["id"],
                  data={"object": obj}, created_at=now)
    session.add(event)
    await session.flush()
    endpoints = (await session.execute(select(WebhookEndpoint).where(
        WebhookEndpoint.app_id == app_id, WebhookEndpoint.mode == mode,
        WebhookEndpoint.enabled.is_(True)))).scalars().all()
    for endpoint in endpoints:
        if "*" in endpoint.enabled_events or type in endpoint.enabled_events:
            session.add(WebhookDelivery(event_id=event.id, endpoint_id=endpoint.id, app_id=app_id,
                                        status="pending", attempts=0, next_attempt_at=now, created_at=now))
    return event


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
    secret = "whsec_" + secrets.token_urlsafe(32).replace("-", "A").replace("_", "B")
    endpoint = WebhookEndpoint(id=new_id("we"), app_id=ctx.app_id, mode=ctx.mode, url=url,
                               secret_sealed=rt.vault.seal(secret, context="webhook-secret"),
                               enabled_events=events, enabled=True, created_at=rt.now())
    async with rt.db.transaction() as session:
        session.add(endpoint)
    view = endpoint_view(endpoint)
    view["secret"] = secret          # shown once
    return view


def endpoint_view(endpoint: WebhookEndpoint) -> dict[str, Any]:
    return {"id": endpoint.id, "object": "webhook_endpoint", "url": endpoint.url,
            "enabled_events": endpoint.enabled_events, "status": "enabled" if endpoint.enabled else "disabled",
            "livemode": endpoint.mode == "live", "created": int(endpoint.created_at.timestamp())}


async def get_endpoint(rt: Runtime, ctx: AppContext, endpoint_id: str) -> WebhookEndpoint:
    async with rt.db.transaction() as session:
        row = await session.get(WebhookEndpoint, endpoint_id)
    if row is None or row.app_id != ctx.app_id or row.mode != ctx.mode:
        raise NotFound("no such webhook endpoint", code="resource_missing", details={"id": endpoint_id})
    return row


async def list_endpoints(rt: Runtime, ctx: AppContext) -> list[WebhookEndpoint]:
    async with rt.db.transaction() as session:
        return list((await session.execute(select(WebhookEndpoint).where(
            WebhookEndpoint.app_id == ctx.app_id, WebhookEndpoint.mode == ctx.mode)
            .order_by(WebhookEndpoint.created_at))).scalars().all())


async def delete_endpoint(rt: Runtime, ctx: AppContext, endpoint_id: str) -> None:
    await get_endpoint(rt, ctx, endpoint_id)
    async with rt.db.transaction() as session:
        row = await session.get(WebhookEndpoint, endpoint_id)
        if row is not None:
            row.enabled = False

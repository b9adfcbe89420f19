"""/v1/payment_exceptions: the queue of money states awaiting a decision; webhook redelivery and rotation."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr

from minigate.api.deps import AppDep, RuntimeDep
from minigate.errors import NotFound
from minigate.services import events, exceptions
from minigate.store.tables import Event

router = APIRouter(prefix="/v1")


class Resolve(BaseModel):
    model_config = ConfigDict(extra="forbid")
    action: Literal["refund", "accept"] = Field(description="refund everything still refundable, or accept (ship)")


class Rotate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    expire_previous_in: StrictInt = Field(default=86400, description="seconds the old secret keeps signing")


class Redeliver(BaseModel):
    model_config = ConfigDict(extra="forbid")
    endpoints: list[StrictStr] | None = Field(default=None, description="default: every enabled endpoint")


@router.get("/payment_exceptions", tags=["exceptions"], summary="List payment exceptions (newest first)")
async def list_exceptions(rt: RuntimeDep, ctx: AppDep, status: Literal["open", "resolved"] | None = None,
                          limit: Annotated[int, Query(ge=1, le=100)] = 20) -> dict[str, Any]:
    rows = await exceptions.list_exceptions(rt, ctx, status=status, limit=limit)
    return {"object": "list", "data": [exceptions.exception_view(r) for r in rows], "has_more": False}


@router.get("/payment_exceptions/{exception_id}", tags=["exceptions"], summary="Retrieve a payment exception")
async def get_exception(exception_id: str, rt: RuntimeDep, ctx: AppDep) -> dict[str, Any]:
    return exceptions.exception_view(await exceptions.get_exception(rt, ctx, exception_id))


@router.post("/payment_exceptions/{exception_id}/resolve", tags=["exceptions"],
             summary="Decide a payment exception: refund or accept (once)")
async def resolve_exception(exception_id: str, body: Resolve, rt: RuntimeDep, ctx: AppDep) -> dict[str, Any]:
    return exceptions.exception_view(await exceptions.resolve_exception(rt, ctx, exception_id, body.action))


@router.post("/webhook_endpoints/{endpoint_id}/rotate_secret", tags=["webhooks"],
             summary="New signing secret; the previous one keeps signing for expire_previous_in seconds")
async def rotate_secret(endpoint_id: str, rt: RuntimeDep, ctx: AppDep, body: Rotate | None = None) -> dict[str, Any]:
    return await events.rotate_secret(rt, ctx, endpoint_id, overlap_seconds=(body or Rotate()).expire_previous_in)


@router.post("/events/{event_id}/redeliver", tags=["webhooks"],
             summary="Send an event again to its endpoints (or those named), with a fresh retry window")
async def redeliver(event_id: str, rt: RuntimeDep, ctx: AppDep, body: Redeliver | None = None) -> dict[str, Any]:
    async with rt.db.transaction() as session:
        event = await session.get(Event, event_id)
    if event is None or event.app_id != ctx.app_id or event.mode != ctx.mode:
        raise NotFound("no such event", code="resource_missing", details={"id": event_id})
    queued = await events.redeliver(rt, event=event, endpoint_ids=(body or Redeliver()).endpoints)
    return {"object": "redelivery", "event": event_id, "queued": queued}


@router.get("/webhook_deliveries", tags=["webhooks"], summary="Webhook deliveries and their state")
async def list_deliveries(rt: RuntimeDep, ctx: AppDep, event: str | None = None,
                          status: Literal["pending", "delivered", "dead"] | None = None,
                          limit: Annotated[int, Query(ge=1, le=100)] = 20) -> dict[str, Any]:
    rows = await events.list_deliveries(rt, ctx, event_id=event, status=status, limit=limit)
    return {"object": "list", "data": [events.delivery_view(r) for r in rows], "has_more": False}

"""/v1/api_keys: the app's secret keys for the caller's mode — create (restricted to scopes), list, roll with an
overlap, revoke. A clear key appears once, in the answer that made it; lists show its hint only."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body
from pydantic import BaseModel, ConfigDict, Field

from minigate.api.deps import AppDep, RuntimeDep
from minigate.services import apps

router = APIRouter(prefix="/v1", tags=["api keys"])


class CreateKey(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(max_length=120)
    scopes: list[str] = Field(description="<resource>:read or <resource>:write, or * (everything)")
    expires_in: int | None = Field(default=None, description="seconds until the key is refused")


class RollKey(BaseModel):
    model_config = ConfigDict(extra="forbid")

    expire_previous_in: int = Field(default=86400, description="seconds the previous key keeps working "
                                                               f"(0: refused at once; at most "
                                                               f"{apps.MAX_ROLL_OVERLAP_SECONDS})")


@router.post("/api_keys", summary="Create an API key (shown once)")
async def create_key(body: CreateKey, rt: RuntimeDep, ctx: AppDep) -> dict[str, Any]:
    return await apps.create_api_key(rt, ctx, name=body.name, scopes=body.scopes, expires_in=body.expires_in)


@router.get("/api_keys", summary="The app's API keys for this mode (no secrets)")
async def list_keys(rt: RuntimeDep, ctx: AppDep) -> dict[str, Any]:
    return {"object": "list", "data": await apps.list_api_keys(rt, ctx)}


@router.post("/api_keys/{key_id}/roll", summary="Replace a key; the previous one keeps working for an overlap")
async def roll_key(key_id: str, rt: RuntimeDep, ctx: AppDep,
                   body: Annotated[RollKey | None, Body()] = None) -> dict[str, Any]:
    return await apps.roll_api_key(rt, ctx, key_id, expire_previous_in=(body or RollKey()).expire_previous_in)


@router.delete("/api_keys/{key_id}", summary="Revoke a key at once")
async def revoke_key(key_id: str, rt: RuntimeDep, ctx: AppDep) -> dict[str, Any]:
    return await apps.revoke_api_key(rt, ctx, key_id)

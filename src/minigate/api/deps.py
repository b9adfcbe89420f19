"""Dependencies: the runtime, the authenticated app, the Idempotency-Key."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, Header, Request

from minigate.errors import InvalidRequest
from minigate.services.apps import AppContext, authenticate
from minigate.services.runtime import Runtime

__all__ = ["AppDep", "IdempotencyKeyDep", "JsonObjectDep", "RuntimeDep"]


def get_runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]


async def get_app_context(rt: RuntimeDep, authorization: Annotated[str | None, Header()] = None) -> AppContext:
    return await authenticate(rt, authorization)


AppDep = Annotated[AppContext, Depends(get_app_context)]
IdempotencyKeyDep = Annotated[str | None, Header(alias="Idempotency-Key")]


async def json_object(request: Request) -> dict[str, Any]:
    """A request body that must be one JSON object (settings documents validated by their own models)."""
    try:
        data = await request.json()
    except ValueError:
        raise InvalidRequest("the body is not JSON", code="invalid_json") from None
    if not isinstance(data, dict):
        raise InvalidRequest("the body must be a JSON object", code="invalid_json")
    return data


JsonObjectDep = Annotated[dict[str, Any], Depends(json_object)]

"""Dependencies: the runtime, the authenticated app, the Idempotency-Key."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Header, Request

from minigate.services.apps import AppContext, authenticate
from minigate.services.runtime import Runtime

__all__ = ["AppDep", "IdempotencyKeyDep", "RuntimeDep"]


def get_runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]


async def get_app_context(rt: RuntimeDep, authorization: Annotated[str | None, Header()] = None) -> AppContext:
    return await authenticate(rt, authorization)


AppDep = Annotated[AppContext, Depends(get_app_context)]
IdempotencyKeyDep = Annotated[str | None, Header(alias="Idempotency-Key")]

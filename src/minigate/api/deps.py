"""Dependencies: the runtime, the authenticated app, the Idempotency-Key.

Every request to a ``/v1`` route that takes a secret key goes through :func:`get_app_context`, in this order:

1. **Lock-out.** A client IP with ``auth_failures_per_ip`` authentication failures (unknown, revoked, expired or
   malformed keys) within ``auth_failure_window_seconds`` is refused — 429 ``too_many_authentication_failures``
   with ``Retry-After`` — for every request, a valid key or not, for one whole window from the failure that
   locked it. Nothing else is read while it lasts (no database query: a key-guessing run costs one limiter test
   a request). The first request of a lock-out writes an ``auth.lockout`` audit entry and a WARNING line; they
   carry the address and counts, never key material. A missing header and a live key on a test gateway are not
   guesses and are not counted.
2. **Authentication** (:func:`minigate.services.apps.authenticate`): one database read.
3. **The key's rate**: ``api_requests_per_second_per_key`` requests per second (429 ``rate_limited``).
4. **Scope**: the key must hold the scope the matched route requires (:mod:`minigate.api.scopes`), else 403
   ``insufficient_scope`` naming it.

The counters live in the limiter (:mod:`minigate.services.limiter`): in Redis when configured, so every process
shares the count and the lock-out; in process memory otherwise.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Annotated, Any

from fastapi import Depends, Header, Request
from limits import RateLimitItem, RateLimitItemPerSecond

from minigate.api.scopes import UNCLASSIFIED, required_scope
from minigate.errors import AuthenticationFailed, InvalidRequest, PermissionDenied, RateLimited
from minigate.logging import get_logger
from minigate.services import audit
from minigate.services.apps import AppContext, authenticate, grants
from minigate.services.limiter import Check
from minigate.services.runtime import Runtime

__all__ = ["AppDep", "IdempotencyKeyDep", "JsonObjectDep", "RuntimeDep", "client_ip"]

log = get_logger("minigate.api")


def get_runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]


def client_ip(request: Request) -> str:
    """The peer address as the ASGI server reports it (behind a proxy: as the server was told to trust)."""
    return request.client.host if request.client else "unknown"


@lru_cache(maxsize=64)
def _per_seconds(amount: int, seconds: int) -> RateLimitItem:
    return RateLimitItemPerSecond(amount, seconds)


async def _locked_out(rt: Runtime, ip: str) -> None:
    """Refuse a locked-out address before anything else is done for it."""
    settings = rt.settings
    check = Check("auth_lockout", _per_seconds(1, settings.auth_failure_window_seconds), f"auth_lockout/{ip}")
    verdict = await rt.limiter.test([check])
    if not verdict.allowed:
        raise RateLimited("too many authentication failures from this address; retry later",
                          code="too_many_authentication_failures",
                          details={"retry_after": verdict.retry_after or settings.auth_failure_window_seconds})


async def _count_failure(rt: Runtime, ip: str) -> None:
    """Count one failure; the one that fills the window locks the address for a whole window."""
    settings = rt.settings
    window = settings.auth_failure_window_seconds
    failures = _per_seconds(settings.auth_failures_per_ip, window)
    strategy = rt.limiter.strategy
    key = f"auth_failures/{ip}"
    counted = await strategy.hit(failures, key)
    if counted and await strategy.test(failures, key):
        return
    if await strategy.hit(_per_seconds(1, window), f"auth_lockout/{ip}"):      # the first lock-out of this window
        log.warning("client locked out after repeated API-key authentication failures", client_ip=ip,
                    failures=settings.auth_failures_per_ip, window_seconds=window)
        try:
            await audit.record_now(rt, action="auth.lockout", actor="anonymous", target=ip,
                                   details={"client_ip": ip, "failures": settings.auth_failures_per_ip,
                                            "window_seconds": window})
        except Exception as exc:
            log.warning("audit entry not written", action="auth.lockout", error=type(exc).__name__)


async def _within_key_rate(rt: Runtime, ctx: AppContext) -> None:
    per_second = rt.settings.api_requests_per_second_per_key
    if per_second <= 0 or ctx.key_id is None:
        return
    check = Check("api_requests_per_second_per_key", _per_seconds(per_second, 1), f"api_key_rate/{ctx.key_id}")
    if await rt.limiter.strategy.hit(check.item, check.key):
        return
    verdict = await rt.limiter.test([check])
    raise RateLimited("too many requests with this API key; slow down", code="rate_limited",
                      details={"limit": check.name, "retry_after": verdict.retry_after or 1})


async def get_app_context(request: Request, rt: RuntimeDep,
                          authorization: Annotated[str | None, Header()] = None) -> AppContext:
    ip = client_ip(request)
    guarded = rt.settings.auth_failures_per_ip > 0
    if guarded:
        await _locked_out(rt, ip)
    try:
        ctx = await authenticate(rt, authorization)
    except AuthenticationFailed as exc:
        if guarded and exc.code == "invalid_api_key":
            await _count_failure(rt, ip)
        raise
    await _within_key_rate(rt, ctx)
    route = request.scope.get("route")
    path = getattr(route, "path", None)
    needed = required_scope(request.method, path) if isinstance(path, str) else UNCLASSIFIED
    if not grants(ctx.scopes, needed):
        raise PermissionDenied(f"this API key lacks the scope {needed!r} this request needs",
                               code="insufficient_scope", details={"scope": needed})
    return ctx


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

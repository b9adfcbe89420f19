"""Merchant apps, their API keys (stored as digests, shown once) and their provider credentials."""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import time
import weakref
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from minigate.errors import AuthenticationFailed, InvalidRequest, NotFound, PermissionDenied
from minigate.providers import registry
from minigate.providers.wechat.config import WeChatMiniProgramConfig
from minigate.services import audit
from minigate.services.ids import new_id
from minigate.services.runtime import Runtime
from minigate.store.tables import ApiKey, App, AppCredential

__all__ = ["API_KEY_CACHE_SECONDS", "RESOURCES", "AppContext", "CreatedApp", "app_exists", "authenticate",
           "create_api_key", "create_app", "forget_api_keys", "grants", "list_api_keys", "normalise_scopes",
           "revoke_api_key", "roll_api_key", "set_credentials"]

#: login clients that are not payment providers
_LOGIN_MODELS: dict[str, Any] = {"wechat": WeChatMiniProgramConfig}


def _config_model(provider: str) -> Any:
    spec = registry.payment_spec(provider)
    if spec is not None:
        return spec.config_model()
    service = registry.sms_spec(provider) or registry.identity_spec(provider) or registry.analytics_spec(provider)
    if service is not None:
        return service.config_model()
    return _LOGIN_MODELS.get(provider)


#: what a scope ``<resource>:<read|write>`` may name (the routes of each: :mod:`minigate.api.scopes`)
RESOURCES = ("orders", "webhooks", "sms", "identity", "analytics", "audit", "keys", "login")
#: the longest roll overlap: the previous key keeps working at most this long
MAX_ROLL_OVERLAP_SECONDS = 7 * 86400
#: the longest lifetime a new key may be given
MAX_KEY_LIFETIME_SECONDS = 5 * 366 * 86400


@dataclass(frozen=True, slots=True)
class AppContext:
    """Who is calling: the app and the mode of the key used, and (for API requests) the key and its scopes."""

    app_id: str
    mode: str
    key_id: str | None = None
    scopes: tuple[str, ...] = ("*",)


def grants(held: Iterable[str], needed: str) -> bool:
    """Whether scopes ``held`` allow ``needed``: ``*`` allows everything, ``x:write`` also allows ``x:read``;
    ``needed == "*"`` (a route nobody classified) only ``*`` allows."""
    held = set(held)
    if "*" in held or needed in held:
        return True
    resource, _, access = needed.partition(":")
    return access == "read" and f"{resource}:write" in held


def normalise_scopes(scopes: Any) -> list[str]:
    """A key's requested scopes, checked against the vocabulary, deduplicated and sorted."""
    if not isinstance(scopes, list) or not scopes or len(scopes) > 2 * len(RESOURCES):
        raise InvalidRequest(f"scopes must be a list of 1-{2 * len(RESOURCES)} scopes", param="scopes")
    valid = {"*"} | {f"{r}:{a}" for r in RESOURCES for a in ("read", "write")}
    for scope in scopes:
        if scope not in valid:
            raise InvalidRequest(f"unknown scope {str(scope)[:40]!r}: use <resource>:read or <resource>:write "
                                 f"with a resource among {', '.join(RESOURCES)}, or *", param="scopes")
    return sorted(set(scopes))


@dataclass(frozen=True, slots=True)
class CreatedApp:
    id: str
    name: str
    test_key: str
    live_key: str


def _digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def _new_key(mode: str) -> str:
    return f"mg_{mode}_{secrets.token_urlsafe(32).replace('-', 'A').replace('_', 'B')}"


async def create_app(rt: Runtime, *, name: str) -> CreatedApp:
    name = name.strip()
    if not 1 <= len(name) <= 120:
        raise InvalidRequest("app name must be 1-120 characters", param="name")
    now = rt.now()
    app = App(id=new_id("app"), name=name, created_at=now)
    keys = {mode: _new_key(mode) for mode in ("test", "live")}
    async with rt.db.transaction() as session:
        session.add(app)
        await session.flush()
        for mode, key in keys.items():
            session.add(ApiKey(id=new_id("key"), app_id=app.id, mode=mode, digest=_digest(key),
                               hint=f"{key[:8]}…{key[-4:]}", created_at=now, revoked_at=None,
                               scopes=["*"], name="default", expires_at=None))
        await audit.record(session, rt, action="app.created", app_id=app.id, target=app.id,
                           details={"app_name": app.name}, fallback_actor="cli")
    return CreatedApp(id=app.id, name=app.name, test_key=keys["test"], live_key=keys["live"])


#: how long an accepted API key is taken from this process's memory instead of the database. A key revoked (or
#: rolled) through this process is forgotten at once; one revoked by another process or straight in the database
#: is refused by this one at most this many seconds later. Expiry is checked on every request, cached or not.
API_KEY_CACHE_SECONDS = 5.0
#: accepted keys remembered per process at most (only keys that authenticated are kept, so guessing cannot fill it)
_API_KEY_CACHE_SIZE = 10_000


@dataclass(frozen=True, slots=True)
class _AcceptedKey:
    """What authentication needs of a key row, without the ORM object (no session, no lazy loads)."""

    id: str
    app_id: str
    mode: str
    digest: str
    scopes: tuple[str, ...]
    expires_at: datetime | None
    read_at: float


#: per runtime (tests run several gateways with different databases in one process): digest -> accepted key
_accepted: weakref.WeakKeyDictionary[Runtime, dict[str, _AcceptedKey]] = weakref.WeakKeyDictionary()


def _key_cache(rt: Runtime) -> dict[str, _AcceptedKey]:
    cache = _accepted.get(rt)
    if cache is None:
        cache = _accepted[rt] = {}
    return cache


#: per runtime: app id -> when it was last read and found (apps are never deleted; the time bounds the memory's age)
_known_apps: weakref.WeakKeyDictionary[Runtime, dict[str, float]] = weakref.WeakKeyDictionary()


async def app_exists(rt: Runtime, app_id: str) -> bool:
    """Whether the app exists, from memory for :data:`API_KEY_CACHE_SECONDS` after a read found it: a provider
    callback asks this before anything else, and it was a transaction of its own per notification."""
    known = _known_apps.get(rt)
    if known is None:
        known = _known_apps[rt] = {}
    seen = known.get(app_id)
    if seen is not None and time.monotonic() - seen < API_KEY_CACHE_SECONDS:
        return True
    async with rt.db.read() as session:
        found = (await session.execute(select(App.id).where(App.id == app_id))).scalar_one_or_none() is not None
    if found:
        if len(known) >= _API_KEY_CACHE_SIZE:
            known.clear()
        known[app_id] = time.monotonic()
    return found


def forget_api_keys(rt: Runtime, key_id: str | None = None) -> None:
    """Drop the remembered key ``key_id`` (every key when None), so its next use reads the database."""
    cache = _key_cache(rt)
    if key_id is None:
        cache.clear()
        return
    for digest in [d for d, k in cache.items() if k.id == key_id]:
        del cache[digest]


async def authenticate(rt: Runtime, authorization: str | None) -> AppContext:
    """``Authorization: Bearer mg_test_…`` -> the app. The digest lookup is exact; no timing leak on the key.

    A key that authenticated is remembered for :data:`API_KEY_CACHE_SECONDS`: every API request needs it, and
    reading it each time was a database transaction per request."""
    if not authorization:
        raise AuthenticationFailed("missing API key: send Authorization: Bearer <key>", code="missing_api_key")
    scheme, _, key = authorization.partition(" ")
    key = key.strip()
    if scheme.lower() != "bearer" or not key.startswith(("mg_test_", "mg_live_")):
        await audit.record_auth_failure(rt, "malformed_api_key")
        raise AuthenticationFailed("malformed API key", code="invalid_api_key")
    digest = _digest(key)
    cache = _key_cache(rt)
    accepted = cache.get(digest)
    if accepted is not None and time.monotonic() - accepted.read_at < API_KEY_CACHE_SECONDS \
            and hmac.compare_digest(accepted.digest, digest) \
            and (accepted.expires_at is None or accepted.expires_at > rt.now()):
        audit.bind_api_key(accepted.id)
        return AppContext(app_id=accepted.app_id, mode=accepted.mode, key_id=accepted.id, scopes=accepted.scopes)
    cache.pop(digest, None)
    async with rt.db.read() as session:
        row = (await session.execute(select(ApiKey).where(ApiKey.digest == digest))).scalar_one_or_none()
    if row is None or row.revoked_at is not None or not hmac.compare_digest(row.digest, digest):
        await audit.record_auth_failure(rt, "revoked_api_key" if row else "unknown_api_key", key=row)
        raise AuthenticationFailed("invalid API key", code="invalid_api_key")
    if row.expires_at is not None and row.expires_at <= rt.now():
        await audit.record_auth_failure(rt, "expired_api_key", key=row)
        raise AuthenticationFailed("invalid API key", code="invalid_api_key")
    if row.mode == "live" and rt.settings.mode != "live":
        await audit.record_auth_failure(rt, "live_mode_disabled", key=row)
        raise AuthenticationFailed("live keys are refused: this gateway runs in test mode (MINIGATE_MODE=test)",
                                   code="live_mode_disabled")
    audit.bind_api_key(row.id)
    scopes = tuple(row.scopes or ())
    if len(cache) >= _API_KEY_CACHE_SIZE:
        cache.clear()
    cache[digest] = _AcceptedKey(id=row.id, app_id=row.app_id, mode=row.mode, digest=row.digest, scopes=scopes,
                                 expires_at=row.expires_at, read_at=time.monotonic())
    return AppContext(app_id=row.app_id, mode=row.mode, key_id=row.id, scopes=scopes)


# -- key management (/v1/api_keys) ----------------------------------------------------------------------------
def _ts(at: datetime | None) -> int | None:
    return int(at.timestamp()) if at is not None else None


def key_view(row: ApiKey, *, key: str | None = None) -> dict[str, Any]:
    """What the API shows of a key: never its digest; the clear key only in the answer that made it."""
    view: dict[str, Any] = {"id": row.id, "object": "api_key", "livemode": row.mode == "live", "name": row.name,
                            "hint": row.hint, "scopes": list(row.scopes or []), "created": _ts(row.created_at),
                            "expires": _ts(row.expires_at), "revoked": _ts(row.revoked_at)}
    if key is not None:
        view["key"] = key
    return view


def _check_not_escalating(ctx: AppContext, scopes: Iterable[str]) -> None:
    for scope in scopes:
        if not grants(ctx.scopes, scope):
            raise PermissionDenied(f"this key does not hold the scope {scope!r}, so it cannot give it to a key",
                                   code="insufficient_scope", details={"scope": scope})


def _new_row(rt: Runtime, ctx: AppContext, *, name: str | None, scopes: list[str],
             expires_at: datetime | None) -> tuple[ApiKey, str]:
    key = _new_key(ctx.mode)
    row = ApiKey(id=new_id("key"), app_id=ctx.app_id, mode=ctx.mode, digest=_digest(key),
                 hint=f"{key[:8]}…{key[-4:]}", created_at=rt.now(), revoked_at=None, scopes=scopes, name=name,
                 expires_at=expires_at)
    return row, key


async def create_api_key(rt: Runtime, ctx: AppContext, *, name: str, scopes: Any,
                         expires_in: int | None = None) -> dict[str, Any]:
    """A new key of the caller's app and mode, with no scope the caller's key lacks; shown once."""
    name = name.strip()
    if not 1 <= len(name) <= 120:
        raise InvalidRequest("name must be 1-120 characters", param="name")
    wanted = normalise_scopes(scopes)
    _check_not_escalating(ctx, wanted)
    if expires_in is not None and not 1 <= expires_in <= MAX_KEY_LIFETIME_SECONDS:
        raise InvalidRequest(f"expires_in must be 1-{MAX_KEY_LIFETIME_SECONDS} seconds", param="expires_in")
    expires_at = rt.now() + timedelta(seconds=expires_in) if expires_in is not None else None
    row, key = _new_row(rt, ctx, name=name, scopes=wanted, expires_at=expires_at)
    async with rt.db.transaction() as session:
        session.add(row)
        await session.flush()
        await audit.record(session, rt, action="api_key.created", app_id=ctx.app_id, mode=ctx.mode, target=row.id,
                           details={"scopes": wanted, "expires": _ts(expires_at)})
    return key_view(row, key=key)


async def list_api_keys(rt: Runtime, ctx: AppContext) -> list[dict[str, Any]]:
    async with rt.db.read() as session:
        rows = (await session.execute(select(ApiKey).where(ApiKey.app_id == ctx.app_id, ApiKey.mode == ctx.mode)
                                      .order_by(ApiKey.created_at, ApiKey.id))).scalars().all()
    return [key_view(row) for row in rows]


async def _managed_key(session: AsyncSession, ctx: AppContext, key_id: str) -> ApiKey:
    """One of the caller's keys (another app's or mode's is a 404), whose every scope the caller holds: a key
    cannot roll (and so obtain) or revoke a key more powerful than itself."""
    row: ApiKey | None = await session.get(ApiKey, key_id, with_for_update=True)
    if row is None or row.app_id != ctx.app_id or row.mode != ctx.mode:
        raise NotFound("no such API key", param="id", code="resource_missing")
    _check_not_escalating(ctx, row.scopes or ["*"])
    return row


async def roll_api_key(rt: Runtime, ctx: AppContext, key_id: str, *, expire_previous_in: int = 86400
                       ) -> dict[str, Any]:
    """A new key with the same name and scopes; the previous one keeps working ``expire_previous_in`` seconds
    (0: refused at once), so the new key can be deployed before the old one stops."""
    if not 0 <= expire_previous_in <= MAX_ROLL_OVERLAP_SECONDS:
        raise InvalidRequest(f"expire_previous_in must be 0-{MAX_ROLL_OVERLAP_SECONDS} seconds",
                             param="expire_previous_in")
    now = rt.now()
    async with rt.db.transaction() as session:
        old = await _managed_key(session, ctx, key_id)
        if old.revoked_at is not None or (old.expires_at is not None and old.expires_at <= now):
            raise InvalidRequest("the key is revoked or expired: create a new one instead", param="id",
                                 code="api_key_inactive")
        row, key = _new_row(rt, ctx, name=old.name, scopes=list(old.scopes or ["*"]), expires_at=old.expires_at)
        until = now + timedelta(seconds=expire_previous_in)
        old.expires_at = until if old.expires_at is None else min(old.expires_at, until)
        session.add(row)
        await session.flush()
        await audit.record(session, rt, action="api_key.rolled", app_id=ctx.app_id, mode=ctx.mode, target=old.id,
                           details={"new_key": row.id, "previous_expires": _ts(old.expires_at)})
    forget_api_keys(rt, old.id)      # its new expiry applies to this process's next request
    return key_view(row, key=key) | {"previous": key_view(old)}


async def revoke_api_key(rt: Runtime, ctx: AppContext, key_id: str) -> dict[str, Any]:
    """Refused from now on (the calling key may revoke itself: its next request is a 401)."""
    async with rt.db.transaction() as session:
        row = await _managed_key(session, ctx, key_id)
        if row.revoked_at is None:
            row.revoked_at = rt.now()
            await audit.record(session, rt, action="api_key.revoked", app_id=ctx.app_id, mode=ctx.mode,
                               target=row.id, details={"self": row.id == ctx.key_id})
    forget_api_keys(rt, row.id)      # refused from this process's next request on, not after the cache's seconds
    return key_view(row)


async def set_credentials(rt: Runtime, *, app_id: str, mode: str, provider: str, config: dict[str, Any]) -> list[str]:
    """Validate and store (sealed) credentials for a provider. Returns the providers configured.

    A credentials JSON may carry more than one provider's settings (WeChat Pay's includes the mini-program
    app secret used for login); each part is validated against its own model before anything is stored.
    """
    if mode not in ("test", "live"):
        raise InvalidRequest("mode must be test or live", param="mode")
    spec = registry.payment_spec(provider)
    parts: dict[str, dict[str, Any]] = {provider: dict(config)}
    if spec is not None:
        main, others = spec.split_credentials(config)
        parts = {provider: main, **others}
    sealed: dict[str, str] = {}
    for name, raw in parts.items():
        model = _config_model(name)
        if model is None:
            raise InvalidRequest(f"unknown provider {name!r}", param="provider")
        try:
            validated = model(**raw)
        except ValidationError as exc:
            fields = ", ".join(".".join(str(p) for p in e["loc"]) or e["msg"].removeprefix("Value error, ")
                               for e in exc.errors())
            raise InvalidRequest(f"invalid {name} credentials: {fields}", param="config") from None
        problems = validated.problems() if mode == "live" and hasattr(validated, "problems") else []
        if problems:
            raise InvalidRequest(f"{name} credentials would not work: " + "; ".join(problems), param="config")
        plain = json.loads(validated.model_dump_json())
        for key, value in validated:
            if hasattr(value, "get_secret_value"):
                plain[key] = value.get_secret_value()
        sealed[name] = rt.vault.seal(json.dumps(plain), context=f"credentials:{name}")
    async with rt.db.transaction() as session:
        app = await session.get(App, app_id)
        if app is None:
            raise NotFound("no such app", code="app_not_found")
        for name, value in sealed.items():
            row = (await session.execute(select(AppCredential).where(
                AppCredential.app_id == app_id, AppCredential.mode == mode,
                AppCredential.provider == name))).scalar_one_or_none()
            if row is None:
                session.add(AppCredential(app_id=app_id, mode=mode, provider=name, sealed_config=value,
                                          updated_at=rt.now()))
            else:
                row.sealed_config = value
                row.updated_at = rt.now()
        await audit.record(session, rt, action="credentials.set", app_id=app_id, mode=mode, target=provider,
                           details={"providers": sorted(sealed)}, fallback_actor="cli")
    for name in sealed:
        rt.forget_provider(app_id, mode, name)
    return sorted(sealed)

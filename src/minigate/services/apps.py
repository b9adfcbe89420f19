"""Merchant apps, their API keys (stored as digests, shown once) and their provider credentials."""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError
from sqlalchemy import select

from minigate.errors import AuthenticationFailed, InvalidRequest, NotFound
from minigate.providers import registry
from minigate.providers.wechat.config import WeChatMiniProgramConfig
from minigate.services import audit
from minigate.services.ids import new_id
from minigate.services.runtime import Runtime
from minigate.store.tables import ApiKey, App, AppCredential

__all__ = ["AppContext", "CreatedApp", "authenticate", "create_app", "set_credentials"]

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


@dataclass(frozen=True, slots=True)
class AppContext:
    """Who is calling: the app and the mode of the key used."""

    app_id: str
    mode: str


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
                               hint=f"{key[:8]}…{key[-4:]}", created_at=now, revoked_at=None))
        await audit.record(session, rt, action="app.created", app_id=app.id, target=app.id,
                           details={"app_name": app.name}, fallback_actor="cli")
    return CreatedApp(id=app.id, name=app.name, test_key=keys["test"], live_key=keys["live"])


async def authenticate(rt: Runtime, authorization: str | None) -> AppContext:
    """``Authorization: Bearer mg_test_…`` -> the app. The digest lookup is exact; no timing leak on the key."""
    if not authorization:
        raise AuthenticationFailed("missing API key: send Authorization: Bearer <key>", code="missing_api_key")
    scheme, _, key = authorization.partition(" ")
    key = key.strip()
    if scheme.lower() != "bearer" or not key.startswith(("mg_test_", "mg_live_")):
        await audit.record_auth_failure(rt, "malformed_api_key")
        raise AuthenticationFailed("malformed API key", code="invalid_api_key")
    digest = _digest(key)
    async with rt.db.read() as session:
        row = (await session.execute(select(ApiKey).where(ApiKey.digest == digest))).scalar_one_or_none()
    if row is None or row.revoked_at is not None or not hmac.compare_digest(row.digest, digest):
        await audit.record_auth_failure(rt, "revoked_api_key" if row else "unknown_api_key", key=row)
        raise AuthenticationFailed("invalid API key", code="invalid_api_key")
    if row.mode == "live" and rt.settings.mode != "live":
        await audit.record_auth_failure(rt, "live_mode_disabled", key=row)
        raise AuthenticationFailed("live keys are refused: this gateway runs in test mode (MINIGATE_MODE=test)",
                                   code="live_mode_disabled")
    audit.bind_api_key(row.id)
    return AppContext(app_id=row.app_id, mode=row.mode)


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

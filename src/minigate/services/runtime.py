"""The runtime every use case receives: settings, database, vault, HTTP clients, sandbox, providers."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import httpx
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from minigate.config import Settings
from minigate.errors import ConfigurationError, NotFound
from minigate.logging import get_logger
from minigate.providers import registry

if TYPE_CHECKING:
    from minigate.providers.alipay.login import AlipayLoginClient
from minigate.providers.bases.payment import PaymentProvider
from minigate.providers.bases.sms import SmsProvider
from minigate.providers.wechat.config import WeChatMiniProgramConfig
from minigate.providers.wechat.login import WeChatMiniProgramClient
from minigate.store.db import Database
from minigate.store.tables import AppCredential, DataKey
from minigate.vault import LOOKUP_KEY_ID, Vault, WrappedKey

__all__ = ["CHANNELS", "CREDENTIALS_RECHECK_SECONDS", "Runtime"]

#: how often a cached provider client re-checks that its stored credentials did not change
CREDENTIALS_RECHECK_SECONDS = 30.0

log = get_logger("minigate.runtime")

#: channel -> provider name
CHANNELS: dict[str, str] = registry.channels()


def _utcnow() -> datetime:
    return datetime.now(UTC)


class Runtime:
    """Long-lived objects of one gateway process."""

    def __init__(self, settings: Settings, *, db: Database | None = None,
                 sandbox_transport: httpx.AsyncBaseTransport | None = None,
                 webhook_transport: httpx.AsyncBaseTransport | None = None,
                 clock: Callable[[], datetime] = _utcnow) -> None:
        self.settings = settings
        self.db = db or Database(settings.effective_database_url, pool_size=settings.database_pool_size)
        self.vault = Vault(settings.master_key.get_secret_value())
        self.now = clock
        self.sandbox: Any = None
        self._sandbox_transport = sandbox_transport
        self.webhook_client = httpx.AsyncClient(transport=webhook_transport,
                                                timeout=settings.webhook_timeout_seconds,
                                                follow_redirects=False)
        self._provider_client: httpx.AsyncClient | None = None
        #: (app, mode, provider) -> (credentials version, client, checked at)
        self._providers: dict[tuple[str, str, str], tuple[str, Any, float]] = {}
        self._sms_parsers: dict[str, SmsProvider] = {}
        #: (app, mode) -> (read at, SMS providers with credentials), re-read like provider clients
        self._sms_names: dict[tuple[str, str], tuple[float, list[str]]] = {}
        self._sms_sandbox_registered: set[str] = set()
        self._limiter: Any = None
        self._analytics: Any = None

    # -- life cycle -------------------------------------------------------------------------------
    async def start(self) -> None:
        await self._load_data_keys()
        # Test keys (mg_test_…) always reach the sandbox; live keys are accepted only in live mode.
        self._start_sandbox()

    @property
    def analytics(self) -> Any:
        """The analytics store (journal + DuckDB), opened on first use."""
        if self._analytics is None:
            from minigate.analytics.store import AnalyticsStore

            self._analytics = AnalyticsStore(self.settings.analytics_dir or self.settings.data_dir / "analytics")
        return self._analytics

    @property
    def limiter(self) -> Any:
        """Rate limits shared by every process when ``MINIGATE_REDIS_URL`` is set, else this process's memory."""
        if self._limiter is None:
            from minigate.services.limiter import Limiter

            self._limiter = Limiter(self.settings.redis_url)
        return self._limiter

    async def aclose(self) -> None:
        if self._analytics is not None:
            self._analytics.close()
        if self._limiter is not None:
            await self._limiter.aclose()
        if self.sandbox is not None:
            await self.sandbox.aclose()
        if self._provider_client is not None:
            await self._provider_client.aclose()
        await self.webhook_client.aclose()
        await self.db.dispose()

    def _start_sandbox(self) -> None:
        """Test mode talks to the simulators: in-process by default, or an external ``sandbox serve``."""
        from minigate.simulators.sandbox import Sandbox

        self.sandbox = Sandbox(self.settings.effective_sandbox_dir, time_scale=self.settings.sandbox_time_scale,
                               notify_client=self.webhook_client)
        if self.settings.sandbox_url:
            self.sandbox_base_url = self.settings.sandbox_url.rstrip("/")
            self._provider_client = httpx.AsyncClient(transport=self._sandbox_transport, timeout=10.0)
        else:
            self.sandbox_base_url = "http://sandbox"
            transport = self._sandbox_transport or httpx.ASGITransport(app=self.sandbox.app)
            self._provider_client = httpx.AsyncClient(transport=transport, timeout=10.0)

    async def _load_data_keys(self) -> None:
        """Unwrap the data keys and the lookup key (made on first start). During a master-key rotation
        (``MINIGATE_MASTER_KEY_PREVIOUS`` set) rows still wrapped by the previous key are read with it."""
        try:
            await self._load_data_keys_once()
        except IntegrityError:        # another process made the first keys at the same moment: read theirs
            await self._load_data_keys_once()

    async def _load_data_keys_once(self) -> None:
        previous = (Vault(self.settings.master_key_previous.get_secret_value())
                    if self.settings.master_key_previous else None)
        async with self.db.transaction() as session:
            rows = (await session.execute(select(DataKey).order_by(DataKey.created_at))).scalars().all()
            lookup = next((r for r in rows if r.id == LOOKUP_KEY_ID), None)
            deks = [r for r in rows if r.id != LOOKUP_KEY_ID]
            if lookup is None:   # a new database gets a random key; an older one keeps the key it hashed with
                wrapped = self.vault.new_lookup_key(legacy=bool(deks))
                session.add(DataKey(id=wrapped.key_id, wrapped=wrapped.wrapped, active=False,
                                    created_at=self.now()))
            else:
                self.vault.load_lookup_key(self._readable(previous, WrappedKey(lookup.id, lookup.wrapped)))
            if not deks:
                wrapped = self.vault.new_data_key()
                session.add(DataKey(id=wrapped.key_id, wrapped=wrapped.wrapped, active=True,
                                    created_at=self.now()))
                return
            for row in deks:
                key = self._readable(previous, WrappedKey(row.id, row.wrapped))
                self.vault.load_data_key(key, current=row.active)

    def _readable(self, previous: Vault | None, key: WrappedKey) -> WrappedKey:
        """``key`` as the current master key can unwrap it (re-wrapped in memory from the previous key)."""
        if self.vault.can_unwrap(key) or previous is None:
            return key
        return previous.rewrap(key, self.vault)

    # -- providers --------------------------------------------------------------------------------
    @property
    def provider_client(self) -> httpx.AsyncClient:
        if self._provider_client is None:
            self._provider_client = httpx.AsyncClient(timeout=10.0)
        return self._provider_client

    async def _stored_config(self, app_id: str, mode: str, provider: str) -> tuple[str, dict[str, Any]] | None:
        async with self.db.read() as session:
            row = (await session.execute(select(AppCredential).where(
                AppCredential.app_id == app_id, AppCredential.mode == mode,
                AppCredential.provider == provider))).scalar_one_or_none()
        if row is None:
            return None
        config: dict[str, Any] = json.loads(self.vault.open(row.sealed_config, context=f"credentials:{provider}"))
        return row.sealed_config, config

    async def provider_config(self, app_id: str, mode: str, provider: str) -> tuple[str, dict[str, Any]]:
        """(version, config): stored credentials for the app and mode; test mode falls back to the sandbox."""
        stored = await self._stored_config(app_id, mode, provider)
        if stored is not None:
            return stored
        if mode == "test":
            return "sandbox", self.sandbox_config(provider)
        raise NotFound(f"no live {provider} credentials configured for this app (minigate apps set-credentials)",
                       code="provider_not_configured")

    def sandbox_config(self, provider: str) -> dict[str, Any]:
        if self.sandbox is None:
            raise ConfigurationError("the sandbox is not running")
        if provider == "wechat":
            login = self.sandbox.credentials("wechat")
            return {"appid": login["appid"], "app_secret": login["app_secret"],
                    "base_url": f"{self.sandbox_base_url}/wechat"}
        service = (registry.sms_spec(provider) or registry.identity_spec(provider)
                   or registry.analytics_spec(provider))
        if service is not None:
            return service.sandbox(self.sandbox_context())
        spec = registry.payment_spec(provider)
        if spec is None:
            raise NotFound(f"unknown provider {provider}", code="unknown_provider")
        return spec.sandbox_config(self.sandbox_context())

    def sandbox_context(self) -> registry.SandboxContext:
        browser = self.settings.sandbox_url or f"{self.settings.public_url}/sandbox"
        return registry.SandboxContext(credentials=self.sandbox.credentials, base_url=self.sandbox_base_url,
                                       browser_url=browser.rstrip("/"))

    async def _cached(self, app_id: str, mode: str, provider: str, build: Callable[[dict[str, Any]], Any], *,
                      config_of: str | None = None) -> Any:
        """One client per (app, mode, provider), rebuilt when its stored credentials change (checked at most
        every ``CREDENTIALS_RECHECK_SECONDS``, so ``apps set-credentials`` in another process takes effect)."""
        key = (app_id, mode, provider)
        now = time.monotonic()
        cached = self._providers.get(key)
        if cached is not None and now - cached[2] < CREDENTIALS_RECHECK_SECONDS:
            return cached[1]
        version, raw = await self.provider_config(app_id, mode, config_of or provider)
        if cached is not None and cached[0] == version:
            self._providers[key] = (version, cached[1], now)
            return cached[1]
        instance = build(raw)
        self._providers[key] = (version, instance, now)
        return instance

    async def payment_provider(self, app_id: str, mode: str, provider: str) -> PaymentProvider:
        spec = registry.payment_spec(provider)
        if spec is None:
            raise NotFound(f"unknown payment provider {provider}", code="unknown_provider")
        instance: PaymentProvider = await self._cached(app_id, mode, provider,
                                                       lambda raw: spec.build(raw, self.provider_client))
        return instance

    async def wechat_login_client(self, app_id: str, mode: str) -> WeChatMiniProgramClient:
        client: WeChatMiniProgramClient = await self._cached(
            app_id, mode, "wechat",
            lambda raw: WeChatMiniProgramClient(WeChatMiniProgramConfig(**raw), self.provider_client))
        return client

    async def alipay_login_client(self, app_id: str, mode: str) -> AlipayLoginClient:
        """Alipay login signs with the app's payment credentials (same app_id and keys)."""
        from minigate.providers.alipay.config import AlipayConfig
        from minigate.providers.alipay.login import AlipayLoginClient as Client

        client: AlipayLoginClient = await self._cached(
            app_id, mode, "alipay-login", lambda raw: Client(AlipayConfig(**raw), self.provider_client),
            config_of="alipay")
        return client

    # -- SMS ----------------------------------------------------------------------------------------
    async def sms_provider(self, app_id: str, mode: str, provider: str) -> SmsProvider:
        spec = registry.sms_spec(provider)
        if spec is None:
            raise NotFound(f"unknown SMS provider {provider}", code="unknown_provider")
        if mode == "test" and provider not in self._sms_sandbox_registered:
            if await self._stored_config(app_id, mode, provider) is None:
                await self._register_sms_callbacks(provider, mode)
        instance: SmsProvider = await self._cached(app_id, mode, provider,
                                                   lambda raw: spec.build(raw, self.provider_client))
        return instance

    async def sms_provider_names(self, app_id: str, mode: str) -> list[str]:
        """SMS providers with credentials for the app and mode, in registry order; in test mode with none
        stored, every sandbox SMS provider."""
        cached = self._sms_names.get((app_id, mode))
        if cached is not None and time.monotonic() - cached[0] < CREDENTIALS_RECHECK_SECONDS:
            return list(cached[1])
        names = list(registry.sms_specs())
        async with self.db.read() as session:
            stored = set((await session.execute(select(AppCredential.provider).where(
                AppCredential.app_id == app_id, AppCredential.mode == mode,
                AppCredential.provider.in_(names)))).scalars())
        found = [n for n in names if n in stored] if stored else (names if mode == "test" else [])
        self._sms_names[(app_id, mode)] = (time.monotonic(), found)
        return list(found)

    async def identity_provider(self, app_id: str, mode: str, provider: str) -> Any:
        spec = registry.identity_spec(provider)
        if spec is None:
            raise NotFound(f"unknown identity provider {provider}", code="unknown_provider")
        return await self._cached(app_id, mode, provider, lambda raw: spec.build(raw, self.provider_client))

    async def identity_provider_names(self, app_id: str, mode: str) -> list[str]:
        """Identity providers with credentials for the app and mode; in test mode with none stored, all."""
        names = list(registry.identity_specs())
        async with self.db.read() as session:
            stored = set((await session.execute(select(AppCredential.provider).where(
                AppCredential.app_id == app_id, AppCredential.mode == mode,
                AppCredential.provider.in_(names)))).scalars())
        if stored:
            return [n for n in names if n in stored]
        return names if mode == "test" else []

    async def analytics_provider(self, app_id: str, mode: str, provider: str) -> Any:
        """A forwarding destination or a source of third-party numbers (test mode: its simulator)."""
        spec = registry.analytics_spec(provider)
        if spec is None:
            raise NotFound(f"unknown analytics provider {provider}", code="unknown_provider")
        return await self._cached(app_id, mode, provider, lambda raw: spec.build(raw, self.provider_client))

    def sms_parser(self, provider: str) -> SmsProvider:
        """A client used only to read pushed receipts and replies (their format does not depend on the account)."""
        parser = self._sms_parsers.get(provider)
        if parser is None:
            spec = registry.sms_spec(provider)
            if spec is None:
                raise NotFound("no such notification route", code="route_not_found")
            # any valid configuration will do: the sandbox's is always at hand
            parser = spec.build(self.sandbox_config(provider), self.provider_client)
            self._sms_parsers[provider] = parser
        return parser

    def sms_callback_token(self, provider: str, mode: str) -> str:
        """The unguessable path segment that authenticates SMS receipt/reply pushes (which are unsigned)."""
        return self.vault.lookup_hash(f"{provider}|{mode}", context="sms-callback")[:40]

    def sms_callback_url(self, provider: str, mode: str, kind: str) -> str:
        token = self.sms_callback_token(provider, mode)
        return f"{self.settings.public_url}/notify/sms/{provider}/{mode}/{token}/{kind}"

    async def _register_sms_callbacks(self, provider: str, mode: str) -> None:
        """What a merchant does in the provider's console: set the receipt and reply URLs (sandbox only)."""
        url = f"{self.sandbox_base_url}/{provider}/_sandbox/callbacks"
        body = {"receipt_url": self.sms_callback_url(provider, mode, "receipts"),
                "reply_url": self.sms_callback_url(provider, mode, "replies")}
        try:
            response = await self.provider_client.post(url, json=body)
            response.raise_for_status()
        except httpx.HTTPError as exc:
            log.warning("sandbox SMS callbacks not registered", provider=provider, error=type(exc).__name__)
            return
        self._sms_sandbox_registered.add(provider)

    def notify_url(self, provider: str, mode: str, app_id: str) -> str:
        return f"{self.settings.public_url}/notify/{provider}/{mode}/{app_id}"

    def return_url(self, provider: str, mode: str, app_id: str) -> str:
        return f"{self.settings.public_url}/return/{provider}/{mode}/{app_id}"

    def forget_provider(self, app_id: str, mode: str, provider: str) -> None:
        self._providers.pop((app_id, mode, provider), None)
        self._sms_names.pop((app_id, mode), None)

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
from minigate.transport import outbound_client
from minigate.vault import LOOKUP_KEY_ID, ROOT_KEY_PREFIX, Vault, VaultError, WrappedKey, describe_wrapping

if TYPE_CHECKING:
    from minigate.kms import KeyWrapper

__all__ = ["CHANNELS", "CREDENTIALS_RECHECK_SECONDS", "Runtime"]

#: how often a cached provider client re-checks that its stored credentials did not change
CREDENTIALS_RECHECK_SECONDS = 30.0

log = get_logger("minigate.runtime")

#: channel -> provider name
CHANNELS: dict[str, str] = registry.channels()


#: connections kept open to the providers: more than the concurrent requests a busy process makes (httpx keeps
#: 20 by default, so a burst of 32 checkouts kept opening new TLS connections)
PROVIDER_CONNECTIONS = httpx.Limits(max_connections=200, max_keepalive_connections=100, keepalive_expiry=30)


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
        self.vault = Vault(settings.vault_master_key)
        if settings.master_key_previous:
            self.vault.add_previous_master(settings.master_key_previous.get_secret_value())
        from minigate.kms import build_wrapper

        #: the KMS wrapping the root key (MINIGATE_KMS), called at start and by rotations only
        self.kms: KeyWrapper | None = build_wrapper(settings)
        self.now = clock
        self.sandbox: Any = None
        self._sandbox_transport = sandbox_transport
        self.webhook_client = outbound_client(settings.http_transport, transport=webhook_transport,
                                              timeout=settings.webhook_timeout_seconds, follow_redirects=False)
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
        if self.kms is not None:
            await self.kms.aclose()
        await self.db.dispose()

    def _start_sandbox(self) -> None:
        """Test mode talks to the simulators: in-process by default, or an external ``sandbox serve``."""
        from minigate.simulators.sandbox import Sandbox

        self.sandbox = Sandbox(self.settings.effective_sandbox_dir, time_scale=self.settings.sandbox_time_scale,
                               notify_client=self.webhook_client)
        if self.settings.sandbox_url:
            self.sandbox_base_url = self.settings.sandbox_url.rstrip("/")
            self._provider_client = outbound_client(self.settings.http_transport, transport=self._sandbox_transport,
                                                    timeout=10.0, limits=PROVIDER_CONNECTIONS)
        else:
            self.sandbox_base_url = "http://sandbox"
            transport = self._sandbox_transport or httpx.ASGITransport(app=self.sandbox.app)
            self._provider_client = httpx.AsyncClient(transport=transport, timeout=10.0)

    async def _load_data_keys(self) -> None:
        """Unwrap the data keys and the lookup key (made on first start), refusing to start when one cannot be.

        The KMS is called once per root key in use (normally one); every data key is then unwrapped locally.
        Rows still wrapped by ``MINIGATE_MASTER_KEY_PREVIOUS`` (a master-key rotation) are read with it."""
        try:
            await self._load_data_keys_once()
        except IntegrityError:        # another process made the first keys at the same moment: read theirs
            await self._load_data_keys_once()

    async def refresh_keys(self) -> None:
        """Re-read ``data_keys``: after a rotation by another process, or on :class:`minigate.vault.UnknownWrapping`
        (a data key under a root this process has not loaded). Roots already held cost no KMS call."""
        await self._load_data_keys()

    async def _load_data_keys_once(self) -> None:
        async with self.db.read() as session:
            rows = list((await session.execute(select(DataKey).order_by(DataKey.created_at))).scalars().all())
        roots = [r for r in rows if r.id.startswith(ROOT_KEY_PREFIX)]
        lookup = next((r for r in rows if r.id == LOOKUP_KEY_ID), None)
        deks = [r for r in rows if r.id != LOOKUP_KEY_ID and not r.id.startswith(ROOT_KEY_PREFIX)]
        active = next((r for r in roots if r.active), None)
        needed = {describe_wrapping(r.wrapped).get("root") for r in [*deks, *([lookup] if lookup else [])]}
        kms_calls = 0
        for row in roots:
            fingerprint = row.id.removeprefix(ROOT_KEY_PREFIX)
            if self.vault.has_root(fingerprint) or (row is not active and fingerprint not in needed):
                continue                      # held already, or a retired root nothing refers to any more
            self.vault.install_root(await self.unwrap_root(row), current=False)
            kms_calls += 1
        created: list[DataKey] = []
        if active is not None:
            self.vault.use_root(active.id.removeprefix(ROOT_KEY_PREFIX))
        elif not rows and self.kms is not None:       # a new database under a KMS: its first root key
            created.append(await self._new_root())
            kms_calls += 1
        else:
            self.vault.use_master_for_new_keys()
        if lookup is None:   # a new database gets a random key; an older one keeps the key it hashed with
            wrapped = self.vault.new_lookup_key(legacy=bool(deks))
            created.append(DataKey(id=wrapped.key_id, wrapped=wrapped.wrapped, active=False, created_at=self.now()))
        else:
            self.vault.load_lookup_key(WrappedKey(lookup.id, lookup.wrapped))
        if not deks:
            wrapped = self.vault.new_data_key()
            created.append(DataKey(id=wrapped.key_id, wrapped=wrapped.wrapped, active=True, created_at=self.now()))
        for row in deks:
            self.vault.load_data_key(WrappedKey(row.id, row.wrapped), current=row.active)
        if created:
            async with self.db.transaction() as session:
                session.add_all(created)
        kek = self.vault.current_kek
        # a line per KMS use (matched with the KMS's own trail by request id); otherwise nothing new to say
        (log.info if kms_calls else log.debug)("data keys unwrapped", data_keys=len(deks), kms_calls=kms_calls,
                 new_keys_wrapped_by="master key" if kek is None or kek.fingerprint is None
                 else f"root {kek.fingerprint}", kms=self.kms.name if self.kms is not None else None)

    async def _new_root(self) -> DataKey:
        """A random root key wrapped by the KMS, installed as the KEK of new data keys (not yet stored)."""
        import os

        from minigate.kms import tag
        from minigate.vault import root_key_id

        assert self.kms is not None
        raw = os.urandom(32)
        key_id = root_key_id(raw)
        wrapped = tag(self.kms, await self.kms.wrap(key_id, raw))
        self.vault.install_root(raw, current=True)
        return DataKey(id=key_id, wrapped=wrapped, active=True, created_at=self.now())

    async def unwrap_root(self, row: DataKey) -> bytes:
        """A stored root key through the KMS that wrapped it (named in the row); a clear error otherwise."""
        from minigate.kms import parse_tagged
        from minigate.vault import root_key_id

        name, ref, payload = parse_tagged(row.wrapped)
        if self.kms is None or self.kms.name != name:
            raise VaultError(f"data keys are wrapped by root key {row.id}, held by {name} key {ref}: configure "
                             f"MINIGATE_KMS for it (now: {self.kms.name if self.kms else 'unset'})")
        raw = await self.kms.unwrap(row.id, payload)
        if len(raw) != 32 or root_key_id(raw) != row.id:
            raise VaultError(f"root key {row.id}: the KMS answered another key")
        return raw

    # -- providers --------------------------------------------------------------------------------
    @property
    def provider_client(self) -> httpx.AsyncClient:
        if self._provider_client is None:
            self._provider_client = outbound_client(self.settings.http_transport, timeout=10.0,
                                                    limits=PROVIDER_CONNECTIONS)
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

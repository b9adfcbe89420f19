"""Settings: ``MINIGATE_*`` environment variables, then an optional TOML file (``MINIGATE_CONFIG``)."""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from minigate.errors import ConfigurationError

__all__ = ["Settings", "load_settings"]

_DEFAULT_MASTER_KEY = "minigate-insecure-development-master-key-change-me"


class _TomlSource(PydanticBaseSettingsSource):
    """Reads the file named by ``MINIGATE_CONFIG``; environment variables win over it."""

    def __init__(self, settings_cls: type[BaseSettings]) -> None:
        super().__init__(settings_cls)
        path = os.environ.get("MINIGATE_CONFIG")
        self._data: dict[str, Any] = {}
        if path:
            try:
                self._data = tomllib.loads(Path(path).read_text())
            except (OSError, tomllib.TOMLDecodeError) as exc:
                raise ConfigurationError(f"cannot read MINIGATE_CONFIG={path}: {exc}") from exc

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return self._data.get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return {k: v for k, v in self._data.items() if k in self.settings_cls.model_fields}


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="MINIGATE_", extra="ignore", frozen=True)

    mode: Literal["test", "live"] = "test"
    data_dir: Path = Path(".minigate")
    database_url: str = ""
    #: AES-256-GCM key material protecting personal data and stored credentials (any length; HKDF-derived).
    master_key: SecretStr = SecretStr(_DEFAULT_MASTER_KEY)
    #: during a master-key rotation: the key being replaced, still accepted for reading wrapped data keys
    master_key_previous: SecretStr | None = None
    #: KMS holding the root key that wraps the data keys (docs/security.md "KMS"): ``aliyun`` or
    #: ``package.module:factory``; unset: the master key wraps them
    kms: str | None = None
    #: Alibaba Cloud KMS: the key (id, alias or ARN) new root keys are wrapped with, the endpoint (default
    #: ``https://kms.<region>.aliyuncs.com``) and a RAM AccessKey allowed kms:Encrypt and kms:Decrypt
    kms_key_id: str | None = None
    kms_endpoint: str | None = None
    kms_region_id: str = "cn-hangzhou"
    kms_access_key_id: str | None = None
    kms_access_key_secret: SecretStr | None = None
    kms_timeout_seconds: float = Field(default=10.0, gt=0)
    #: Base URL the providers call back (notify URLs) and the console links to.
    public_url: str = "http://127.0.0.1:8000"
    host: str = "127.0.0.1"
    port: int = 8000
    #: ``serve``: processes sharing the port (uvicorn's workers). More than one needs an external sandbox
    #: (``sandbox_url``) when the sandbox is exposed, since the built-in one keeps its orders in memory.
    workers: int = Field(default=1, ge=1)
    log_level: str = "INFO"
    log_json: bool = True
    #: Sandbox (test mode): where simulator credentials live, and how fast simulated time runs.
    sandbox_dir: Path | None = None
    sandbox_time_scale: float = 1.0
    #: Use an external ``minigate sandbox serve`` (e.g. http://127.0.0.1:8900) instead of the in-process one.
    sandbox_url: str | None = None
    #: Mount the sandbox (simulators and their unauthenticated control routes) under /sandbox.
    #: Default: yes in test mode, no in live mode (a production port carries no payer remote control).
    expose_sandbox: bool | None = None
    #: The analytics store (journal + DuckDB file); processes that share it must share this directory.
    #: Default: ``<data_dir>/analytics``.
    analytics_dir: Path | None = None
    #: download WeChat Pay platform certificates this often (WeChat asks for less than 12 hours)
    certificate_refresh_hours: float = 10.0
    #: Run the background worker (webhooks, active queries) inside ``serve``.
    run_worker: bool = True
    worker_poll_seconds: float = 0.5
    #: Inbound callbacks and API requests larger than this are refused (413).
    max_body_bytes: int = 1_048_576
    idempotency_ttl_hours: int = 72
    idempotency_lock_seconds: int = 90
    #: Outbound webhooks: give up after this long (Stripe: 3 days), then dead-letter.
    webhook_retry_window_hours: int = 72
    webhook_timeout_seconds: float = 10.0
    #: what carries outbound HTTP (provider calls, webhooks): aiohttp's connection pool under httpx (default,
    #: ~9x less CPU per request, docs/performance.md) or httpx's own transport
    http_transport: Literal["aiohttp", "httpx"] = "aiohttp"
    #: A payment reported for an order already closed: ``review`` queues it for the merchant's decision
    #: (refund or ship); ``refund`` refunds it in full automatically. Either way order.paid_after_close is sent.
    paid_after_close: Literal["review", "refund"] = "review"
    redis_url: str | None = None
    database_pool_size: int = Field(default=10, ge=1)
    #: serve HTTPS directly (PEM files); otherwise terminate TLS in front of minigate
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None
    #: API-key lock-out: this many authentication failures from one client IP within the window lock that IP
    #: out (429) until the window has passed; 0 disables the lock-out.
    auth_failures_per_ip: int = Field(default=20, ge=0)
    auth_failure_window_seconds: int = Field(default=300, ge=1)
    #: requests each API key may make per second (429 beyond); 0 disables the limit.
    api_requests_per_second_per_key: int = Field(default=100, ge=0)
    #: admin console (/console): a session ends after this long without a request, and after
    #: console_session_hours in any case
    console_idle_minutes: int = Field(default=30, ge=1)
    console_session_hours: int = Field(default=12, ge=1)
    #: this many wrong passwords or codes in a row lock a console account for console_lockout_minutes
    console_login_failures: int = Field(default=5, ge=1)
    console_lockout_minutes: int = Field(default=15, ge=1)
    #: console refunds above this amount (fen) need a second person's approval; 0: every refund does
    console_refund_approval_amount: int = Field(default=100_000, ge=0)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, _TomlSource(settings_cls), file_secret_settings)

    @field_validator("public_url")
    @classmethod
    def _strip_slash(cls, value: str) -> str:
        return value.rstrip("/")

    @model_validator(mode="after")
    def _refuse_default_secrets_in_live_mode(self) -> Settings:
        if self.kms == "aliyun":
            missing = [name for name, value in (("MINIGATE_KMS_KEY_ID", self.kms_key_id),
                                                ("MINIGATE_KMS_ACCESS_KEY_ID", self.kms_access_key_id),
                                                ("MINIGATE_KMS_ACCESS_KEY_SECRET", self.kms_access_key_secret))
                       if not value]
            if missing:
                raise ConfigurationError(f"MINIGATE_KMS=aliyun needs {', '.join(missing)}")
        if self.mode == "live":
            # with a KMS the master key is optional (it only reads what it wrapped before); unset, it stays
            # the default, which then wraps nothing
            if self.master_key.get_secret_value() == _DEFAULT_MASTER_KEY and not self.kms:
                raise ConfigurationError("live mode refuses the default MINIGATE_MASTER_KEY; set a real one")
            if len(self.master_key.get_secret_value()) < 32:
                raise ConfigurationError("MINIGATE_MASTER_KEY must be at least 32 characters in live mode")
            if self.kms == "aliyun" and self.kms_endpoint and not self.kms_endpoint.startswith("https://"):
                raise ConfigurationError("live mode needs an https:// MINIGATE_KMS_ENDPOINT")
            if not self.database_url:
                raise ConfigurationError("live mode needs MINIGATE_DATABASE_URL")
            if not self.public_url.startswith("https://"):
                # providers call back at public_url: WeChat, Alipay and JD require HTTPS notify URLs (B-6)
                raise ConfigurationError("live mode needs an https:// MINIGATE_PUBLIC_URL (the notify URLs)")
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ConfigurationError("set both MINIGATE_TLS_CERT_FILE and MINIGATE_TLS_KEY_FILE, or neither")
        return self

    @property
    def effective_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite+aiosqlite:///{(self.data_dir / 'minigate.db').as_posix()}"

    @property
    def effective_sandbox_dir(self) -> Path:
        return self.sandbox_dir or (self.data_dir / "sandbox")

    @property
    def sandbox_exposed(self) -> bool:
        return self.mode == "test" if self.expose_sandbox is None else self.expose_sandbox

    @property
    def uses_default_master_key(self) -> bool:
        return self.master_key.get_secret_value() == _DEFAULT_MASTER_KEY

    @property
    def vault_master_key(self) -> str | None:
        """The master key the vault reads and (without a KMS root) wraps with; None in live mode with a KMS and
        no master key of its own (the development default never protects live data)."""
        if self.kms and self.mode == "live" and self.uses_default_master_key:
            return None
        return self.master_key.get_secret_value()


def load_settings(**overrides: Any) -> Settings:
    try:
        return Settings(**overrides)
    except ConfigurationError:
        raise
    except ValueError as exc:
        raise ConfigurationError(str(exc)) from exc

"""Configuration of one Alibaba Cloud SMS (dysmsapi 2017-05-25) account."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import ConfigDict, Field, SecretStr

from minigate.providers.bases.sms import SmsProviderConfig
from minigate.providers.registry import SandboxContext

__all__ = ["LIVE_BASE_URL", "AliyunSmsConfig", "sandbox_config"]

#: The central endpoint (service-protocols.md §1.1); RPC-style, so every call goes to ``/``.
LIVE_BASE_URL = "https://dysmsapi.aliyuncs.com"


class AliyunSmsConfig(SmsProviderConfig):
    """An AccessKey pair (RAM user with ``AliyunDysmsFullAccess`` or narrower), the approved sign name and
    the template codes. Field names match ``minigate sandbox credentials aliyun-sms`` where they overlap.

    ``signature_version``: ``v3`` (ACS3-HMAC-SHA256 in an ``Authorization`` header, what the current official
    SDK sends) or ``rpc`` (the legacy HMAC-SHA1 ``Signature`` query parameter).
    ``security_token``: set with STS temporary credentials.
    """

    model_config = ConfigDict(extra="forbid")

    access_key_id: str = Field(min_length=1, max_length=128)
    access_key_secret: SecretStr
    security_token: SecretStr | None = None
    signature_version: Literal["v3", "rpc"] = "v3"
    region_id: str = "cn-hangzhou"
    #: scheme + host (+ port), e.g. ``https://dysmsapi.aliyuncs.com`` or ``http://sandbox/aliyun-sms``
    base_url: str = LIVE_BASE_URL
    request_timeout_seconds: float = Field(default=10.0, gt=0)
    #: ``QuerySendDetails`` pages read by ``find`` (50 records a page) before giving up
    lookup_max_pages: int = Field(default=4, ge=1, le=100)

    def problems(self) -> list[str]:
        """What would make these credentials fail in production."""
        found: list[str] = []
        if not self.access_key_secret.get_secret_value():
            found.append("access_key_secret is empty")
        if not self.sign_name:
            found.append("sign_name is required (the approved signature text)")
        for name in self.templates:
            mapping = self.template(name)
            if mapping is not None and not mapping.id.startswith("SMS_"):
                found.append(f"template {name}: Alibaba template codes look like SMS_123456789")
        if not self.base_url.startswith("https://"):
            found.append("base_url must be https:// in live mode")
        return found


def sandbox_config(ctx: SandboxContext) -> dict[str, Any]:
    """The configuration that talks to the ``aliyun-sms`` simulator of ``ctx``."""
    creds: dict[str, Any] = dict(ctx.credentials("aliyun-sms"))
    return {"access_key_id": creds["access_key_id"], "access_key_secret": creds["access_key_secret"],
            "sign_name": creds["sign_name"], "templates": dict(creds["templates"]),
            "base_url": f"{ctx.base_url}/aliyun-sms"}

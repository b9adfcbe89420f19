"""Configuration of one Umeng+ account's OpenAPI access to one mini-program (a "data source").

The account's OpenAPI credentials are an ``apiKey`` (it travels in the URL path) and an ``apiSecurity`` (the HMAC
key; never sent). The mini-program is its ``dataSourceId`` (the appKey Umeng shows for it). Several choices are
not confirmed by Umeng's published material (service-protocols.md §8 item 7) and so are settings: whether
``_aop_timestamp`` is sent, the retention API's ``indicator`` spellings, and the API refusal codes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

from minigate.providers.umeng.codes import MEANINGS

if TYPE_CHECKING:
    from minigate.providers.registry import SandboxContext

__all__ = ["LIVE_BASE_URL", "NAMESPACE", "UmengConfig", "sandbox_config"]

LIVE_BASE_URL = "https://gateway.open.umeng.com"
NAMESPACE = "com.umeng.umini"
_PATH_SAFE = r"^[A-Za-z0-9_.-]+$"


class UmengConfig(BaseModel):
    """Field names match ``minigate sandbox credentials umeng`` (``api_key``, ``api_security``,
    ``data_source_id``)."""

    model_config = ConfigDict(extra="forbid")

    api_key: str = Field(min_length=1, max_length=64, pattern=_PATH_SAFE)
    api_security: SecretStr
    data_source_id: str = Field(min_length=1, max_length=64)
    #: the gateway host; ``/openapi/param2/1/<namespace>/<apiName>/<apiKey>`` is appended
    base_url: str = LIVE_BASE_URL
    namespace: str = Field(default=NAMESPACE, pattern=_PATH_SAFE)
    #: the SDKs send a form POST; GET with the same parameters in the query works too
    http_method: Literal["GET", "POST"] = "POST"
    #: send (and so sign) ``_aop_timestamp`` in epoch milliseconds; the official SDKs leave it out [U]
    send_timestamp: bool = False
    #: also pull ``umeng.umini.getTotalUser`` (cumulative users at the end of the day)
    pull_total_user: bool = True
    #: the retention cohorts to pull: row key -> the ``indicator`` value sent. Umeng documents ``newuser`` and
    #: ``activeUser`` [U: spelling]; ``{}`` skips the retention API.
    retention_indicators: dict[str, str] = Field(
        default_factory=lambda: {"new_user": "newuser", "active_user": "activeUser"})
    request_timeout_seconds: float = Field(default=10.0, gt=0, le=120)
    #: ``{"<gw.Name or API code>": "<meaning>"}`` laid over :mod:`~minigate.providers.umeng.codes`; a meaning is a
    #: decline code (``invalid_request``, ``auth_failed``, ``rate_limited``, ``declined``...) or ``unknown_outcome``
    error_codes: dict[str, str] = Field(default_factory=dict)

    @field_validator("error_codes")
    @classmethod
    def _known_meanings(cls, value: dict[str, str]) -> dict[str, str]:
        unknown = sorted({m for m in value.values() if m not in MEANINGS})
        if unknown:
            raise ValueError(f"unknown meanings {unknown}; use one of {sorted(MEANINGS)}")
        return value

    @field_validator("retention_indicators")
    @classmethod
    def _row_keys(cls, value: dict[str, str]) -> dict[str, str]:
        if any(not key or not indicator for key, indicator in value.items()):
            raise ValueError("retention_indicators needs non-empty row keys and indicator values")
        return value

    def problems(self) -> list[str]:
        """What would make this configuration fail in production."""
        found: list[str] = []
        if not self.api_security.get_secret_value():
            found.append("api_security is required")
        if not self.base_url.startswith("https://"):
            found.append("base_url must be https:// in live mode")
        return found


def sandbox_config(ctx: SandboxContext) -> dict[str, Any]:
    """The configuration that talks to the sandbox's ``umeng`` simulator."""
    creds = ctx.credentials("umeng")
    return {"api_key": creds["api_key"], "api_security": creds["api_security"],
            "data_source_id": creds["data_source_id"], "base_url": f"{ctx.base_url}/umeng"}

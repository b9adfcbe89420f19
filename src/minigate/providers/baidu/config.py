"""Configuration of one Baidu AI application (AppID, API Key, Secret Key) for the face APIs."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

from minigate.providers.baidu.codes import MEANINGS

if TYPE_CHECKING:
    from minigate.providers.registry import SandboxContext

__all__ = ["LIVE_BASE_URL", "TOKEN_PATH", "BaiduFaceConfig", "Control", "sandbox_config"]

LIVE_BASE_URL = "https://aip.baidubce.com"
TOKEN_PATH = "/oauth/2.0/token"

Control = Literal["NONE", "LOW", "NORMAL", "HIGH"]


class BaiduFaceConfig(BaseModel):
    """Field names match ``minigate sandbox credentials baidu``.

    ``pass_threshold`` is the similarity score (0-100) from which a face counts as the same person. Baidu's
    documentation suggests 80 (about 1 in 10,000 false accepts); that figure is not confirmed, so it is a setting.
    """

    model_config = ConfigDict(extra="forbid")

    api_key: str = Field(min_length=1, max_length=128, description="the application's API Key (client_id)")
    secret_key: SecretStr
    #: the application's AppID; the wire protocol does not carry it (tokens name it), kept for reference
    app_id: str | None = Field(default=None, max_length=32)
    base_url: str = LIVE_BASE_URL
    #: the OAuth token endpoint; None = ``<base_url>/oauth/2.0/token``
    token_url: str | None = None
    pass_threshold: float = Field(default=80.0, ge=0, le=100)
    #: liveness check on LIVE images (person/verify, and match for images whose kind is LIVE)
    liveness_control: Control = "NORMAL"
    quality_control: Control = "LOW"
    #: anti-spoofing (synthetic image) check on person/verify; None = not sent
    spoofing_control: Control | None = None
    request_timeout_seconds: float = Field(default=10.0, gt=0)
    #: a cached token is renewed this long before it expires (the official SDK uses 30 s)
    token_refresh_margin_seconds: float = Field(default=30.0, ge=0)
    #: ``{"<error_code>": "<meaning>"}`` laid over the built-in table (whose 2223xx rows are not confirmed); a
    #: meaning is a verdict reason (``no_face``, ``poor_image``, ``mismatch``, ...), a decline code
    #: (``invalid_request``, ``rate_limited``, ``auth_failed``, ``declined``, ...) or ``unknown_outcome``
    error_codes: dict[int, str] = Field(default_factory=dict)

    @field_validator("error_codes")
    @classmethod
    def _known_meanings(cls, value: dict[int, str]) -> dict[int, str]:
        unknown = sorted({m for m in value.values() if m not in MEANINGS})
        if unknown:
            raise ValueError(f"unknown meanings {unknown}; use one of {sorted(MEANINGS)}")
        return value

    @property
    def resolved_token_url(self) -> str:
        return self.token_url or self.base_url.rstrip("/") + TOKEN_PATH

    def problems(self) -> list[str]:
        """What would make this configuration fail in production (checked by ``apps set-credentials``)."""
        found: list[str] = []
        if not self.secret_key.get_secret_value():
            found.append("secret_key is required")
        if not self.base_url.startswith("https://"):
            found.append("base_url must be https:// in live mode")
        if self.token_url is not None and not self.token_url.startswith("https://"):
            found.append("token_url must be https:// in live mode")
        return found


def sandbox_config(ctx: SandboxContext) -> dict[str, Any]:
    """The configuration that talks to the sandbox's ``baidu`` simulator."""
    creds = ctx.credentials("baidu")
    return {"api_key": creds["api_key"], "secret_key": creds["secret_key"], "app_id": creds["app_id"],
            "base_url": f"{ctx.base_url}/baidu"}

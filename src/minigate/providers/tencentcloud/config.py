"""Configuration of one Tencent Cloud SMS application (SmsSdkAppId) and its API key pair."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from pydantic import ConfigDict, Field, SecretStr

from minigate.providers.bases.sms import SmsProviderConfig

if TYPE_CHECKING:
    from minigate.providers.registry import SandboxContext

__all__ = ["LIVE_BASE_URL", "SERVICE", "VERSION", "TencentSmsConfig", "sandbox_config"]

LIVE_BASE_URL = "https://sms.tencentcloudapi.com"
SERVICE = "sms"
VERSION = "2021-01-11"


class TencentSmsConfig(SmsProviderConfig):
    """Field names match ``minigate sandbox credentials tencentcloud`` where they overlap.

    ``templates`` maps minigate template names to Tencent template ids. Tencent templates are positional
    (``{1}``, ``{2}``...): give ``{"id": "1234567", "params": ["code", "minutes"]}`` when the template's variable
    order differs from minigate's.
    """

    model_config = ConfigDict(extra="forbid")

    secret_id: str = Field(min_length=1, max_length=128)
    secret_key: SecretStr
    sms_sdk_app_id: str = Field(pattern=r"^\d{5,20}$", description="the SMS application's SdkAppId, e.g. 1400006666")
    #: X-TC-Region; SMS serves ap-guangzhou, ap-beijing, ap-nanjing (list not confirmed: any value is accepted)
    region: str = "ap-guangzhou"
    #: temporary-credential token (X-TC-Token), only with STS keys
    token: SecretStr | None = None
    base_url: str = LIVE_BASE_URL
    request_timeout_seconds: float = Field(default=10.0, gt=0)
    #: X-TC-Language for Error.Message texts; None = Tencent's default (zh-CN)
    language: Literal["zh-CN", "en-US"] | None = None
    #: look messages up with PullSmsSendStatusByPhoneNumber. Tencent echoes SessionContext in pulled statuses only
    #: once its support has enabled that for the account; without it ``find`` cannot identify a message
    pull_session_context: bool = True
    #: how far before ``sent_at`` the status pull starts (seconds; clock differences)
    lookup_margin_seconds: int = Field(default=300, ge=0)

    def problems(self) -> list[str]:
        """What would make these credentials fail in production (checked by ``apps set-credentials``)."""
        found: list[str] = []
        if not self.secret_id.startswith("AKID"):
            found.append("secret_id should be an API key id starting with AKID")
        if len(self.secret_key.get_secret_value()) != 32:
            found.append("secret_key should be the 32-character SecretKey of that key id")
        if not self.sign_name:
            found.append("sign_name is required for mainland numbers")
        if not self.base_url.startswith("https://"):
            found.append("base_url must be https:// in live mode")
        return found


def sandbox_config(ctx: SandboxContext) -> dict[str, Any]:
    """The configuration that talks to the sandbox's ``tencentcloud`` simulator (templates with their order)."""
    from minigate.simulators._sms import DEFAULT_TEMPLATES

    creds = ctx.credentials("tencentcloud")
    ids: Any = creds["templates"]             # a JSON object in the credentials file
    templates: dict[str, Any] = {}
    for name, template_id in dict(ids).items():
        template = DEFAULT_TEMPLATES.get(name)
        templates[name] = ({"id": template_id, "params": list(template.variables)} if template is not None
                           else template_id)
    return {"secret_id": creds["secret_id"], "secret_key": creds["secret_key"],
            "sms_sdk_app_id": creds["sms_sdk_app_id"], "sign_name": creds["sign_name"], "templates": templates,
            "base_url": f"{ctx.base_url}/tencentcloud"}

"""Configuration of one WeChat Pay merchant (direct merchant, JSAPI / mini-program product)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr

__all__ = ["WeChatPayConfig", "from_credentials"]

LIVE_BASE_URL = "https://api.mch.weixin.qq.com"


class WeChatPayConfig(BaseModel):
    """Everything the client needs. Field names match ``minigate sandbox credentials wechatpay``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    mchid: str = Field(min_length=1, max_length=32)
    appid: str = Field(min_length=1, max_length=32, description="mini-program AppID bound to mchid")
    merchant_serial_no: str = Field(min_length=1, description="serial of the merchant API certificate")
    merchant_private_key: SecretStr = Field(description="apiclient_key.pem (PKCS#8 or PKCS#1 PEM)")
    apiv3_key: SecretStr = Field(description="APIv3 key: 32 ASCII bytes, used as the AES-256-GCM key")
    #: WeChat Pay public-key mode (recommended): the key and its ``PUB_KEY_ID_…`` id.
    platform_public_key: str | None = None
    platform_public_key_id: str | None = None
    #: Certificate mode: platform certificates known up front (more are downloaded from /v3/certificates).
    platform_certificates: tuple[str, ...] = ()
    #: ``public_key``: only the public key; ``certificate``: only platform certificates;
    #: ``mixed``: both, during WeChat's migration from certificates to the public key.
    verify_mode: Literal["public_key", "certificate", "mixed"] = "public_key"
    base_url: str = LIVE_BASE_URL
    #: |now - Wechatpay-Timestamp| must stay below this (WeChat's SDKs use 5 minutes).
    timestamp_tolerance_seconds: int = 300
    request_timeout_seconds: float = 10.0

    def problems(self) -> list[str]:
        """What would make these credentials fail in production (checked by ``apps set-credentials``)."""
        from minigate.providers.wechatpay import signing

        found: list[str] = []
        if len(self.apiv3_key.get_secret_value().encode()) != 32:
            found.append("apiv3_key must be exactly 32 ASCII characters (it is the AES-256-GCM key)")
        try:
            signing.load_private_key(self.merchant_private_key.get_secret_value())
        except (ValueError, TypeError):
            found.append("merchant_private_key is not a readable RSA private key (PEM)")
        if self.verify_mode in ("public_key", "mixed"):
            if not self.platform_public_key or not self.platform_public_key_id:
                found.append(f"verify_mode {self.verify_mode} needs platform_public_key and platform_public_key_id")
            else:
                try:
                    signing.load_public_key(self.platform_public_key)
                except (ValueError, TypeError):
                    found.append("platform_public_key is not a readable RSA public key")
                if not self.platform_public_key_id.startswith("PUB_KEY_ID_"):
                    found.append("platform_public_key_id should look like PUB_KEY_ID_…")
        for pem in self.platform_certificates:
            try:
                signing.load_certificate(pem)
            except ValueError:
                found.append("a platform certificate is not a readable X.509 PEM")
        if not self.base_url.startswith("https://"):
            found.append("base_url must be https:// in live mode")
        return found


def from_credentials(raw: dict[str, Any]) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """Accept the JSON that ``minigate sandbox credentials wechatpay`` (or a merchant) has: a single
    ``platform_certificate`` becomes the list, and ``app_secret`` goes to the mini-program login config."""
    config = dict(raw)
    extra: dict[str, dict[str, Any]] = {}
    if "platform_certificate" in config:
        cert = config.pop("platform_certificate")
        config["platform_certificates"] = [*config.get("platform_certificates", ()), *([cert] if cert else [])]
    if "app_secret" in config:
        extra["wechat"] = {"appid": config.get("appid", ""), "app_secret": config.pop("app_secret")}
    return config, extra

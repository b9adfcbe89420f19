"""Configuration of one WeChat Pay merchant (direct merchant, JSAPI / mini-program product)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr

__all__ = ["WeChatPayConfig"]

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

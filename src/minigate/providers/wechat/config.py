"""Configuration of a WeChat mini-program for its server-side APIs."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, SecretStr

__all__ = ["WeChatMiniProgramConfig"]


class WeChatMiniProgramConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    appid: str = Field(min_length=1, max_length=32)
    app_secret: SecretStr
    base_url: str = "https://api.weixin.qq.com"
    request_timeout_seconds: float = 10.0

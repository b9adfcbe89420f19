"""Mini-program login: ``GET /sns/jscode2session`` exchanges a ``wx.login`` code for the user's openid.

The request URL carries the app secret (WeChat's design), so the URL never goes into a message, a log line or
an exception chain: transport errors are re-raised ``from None`` and :class:`LoginError` messages are built
from fixed texts plus the numeric ``errcode``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import httpx
from pydantic import SecretStr

from minigate.errors import MinigateError, ProviderError, ProviderTimeout, ProviderUnavailable
from minigate.providers._http import send
from minigate.providers.wechat.config import WeChatMiniProgramConfig

__all__ = ["ERRCODES", "LoginError", "Session", "WeChatMiniProgramClient"]

PROVIDER = "wechat"

#: WeChat ``errcode`` -> (minigate code, safe message).
ERRCODES: dict[int, tuple[str, str]] = {
    40029: ("invalid_code", "the login code is invalid"),
    40163: ("code_used", "the login code has already been used"),
    45011: ("rate_limited", "too many login attempts for this user"),
    40226: ("user_blocked", "WeChat refused the login of a high-risk user"),
    -1: ("busy", "WeChat is busy, try again"),
}


class LoginError(MinigateError):
    """``code2session`` refused. ``code`` is minigate's, ``errcode`` WeChat's; the message is always safe."""

    def __init__(self, code: str, errcode: int | None, message: str) -> None:
        super().__init__(f"{code}: {message}" + (f" (errcode {errcode})" if errcode is not None else ""))
        self.code = code
        self.errcode = errcode
        self.message = message


@dataclass(frozen=True, slots=True)
class Session:
    openid: str
    unionid: str | None
    session_key: SecretStr


class WeChatMiniProgramClient:
    def __init__(self, config: WeChatMiniProgramConfig, client: httpx.AsyncClient) -> None:
        self.config = config
        self.client = client

    def build_code2session(self, js_code: str) -> httpx.Request:
        params = {"appid": self.config.appid, "secret": self.config.app_secret.get_secret_value(),
                  "js_code": js_code, "grant_type": "authorization_code"}
        timeout = httpx.Timeout(self.config.request_timeout_seconds)
        return httpx.Request("GET", self.config.base_url.rstrip("/") + "/sns/jscode2session", params=params,
                             headers={"Accept": "application/json", "User-Agent": "minigate/0.1"},
                             extensions={"timeout": timeout.as_dict()})

    @staticmethod
    def parse_code2session(response: httpx.Response) -> Session:
        if response.status_code >= 500 or response.status_code == 429:
            raise ProviderUnavailable(f"{PROVIDER}: jscode2session answered HTTP {response.status_code}",
                                      provider=PROVIDER, http_status=response.status_code)
        try:
            data: Any = json.loads(response.content)
        except ValueError:
            data = None
        if response.status_code != 200 or not isinstance(data, dict):
            raise ProviderUnavailable(f"{PROVIDER}: jscode2session answered HTTP {response.status_code} "
                                      "without a JSON object", provider=PROVIDER,
                                      http_status=response.status_code)
        errcode = data.get("errcode", 0)
        if errcode not in (0, None):
            number = errcode if isinstance(errcode, int) and not isinstance(errcode, bool) else None
            code, message = ERRCODES.get(number if number is not None else 0,
                                         ("login_failed", "WeChat refused the login code"))
            raise LoginError(code, number, message)
        openid, session_key, unionid = data.get("openid"), data.get("session_key"), data.get("unionid")
        if not isinstance(openid, str) or not openid or not isinstance(session_key, str) or not session_key:
            raise LoginError("login_failed", None, "WeChat answered without openid or session_key")
        return Session(openid=openid, unionid=unionid if isinstance(unionid, str) and unionid else None,
                       session_key=SecretStr(session_key))

    async def code2session(self, js_code: str) -> Session:
        if not js_code or len(js_code) > 256:
            raise LoginError("invalid_code", None, "the login code is empty or too long")
        try:
            response = await send(self.client, self.build_code2session(js_code), provider=PROVIDER)
        except ProviderTimeout as exc:     # drop the httpx cause: it holds the request and so the secret
            raise ProviderTimeout(str(exc), provider=PROVIDER) from None
        except ProviderError as exc:
            raise ProviderUnavailable(str(exc), provider=PROVIDER, http_status=exc.http_status) from None
        return self.parse_code2session(response)

"""Mini-program login: ``alipay.system.oauth.token`` exchanges a ``my.getAuthCode`` code for the user's ids.

``grant_type``/``code`` are top-level request parameters of this method (not ``biz_content``). The answer is
verified like every other OpenAPI answer. Refusals raise :class:`LoginError` with a fixed, safe message; the
access token only ever lives in a :class:`~pydantic.SecretStr`.

Whether ``user_id`` (legacy 2088… ids) or ``open_id`` (new open-id apps) is filled depends on the app's
setting on the open platform; both are returned when present.
"""

from __future__ import annotations

from dataclasses import dataclass

import httpx
from pydantic import SecretStr

from minigate.errors import MinigateError
from minigate.providers.alipay.codes import DEFAULT_ERROR_MAPPER, AlipayError
from minigate.providers.alipay.config import AlipayConfig
from minigate.providers.alipay.openapi import OpenApi

__all__ = ["OAUTH_METHOD", "SUB_CODES", "AlipayLoginClient", "AlipaySession", "LoginError"]

OAUTH_METHOD = "alipay.system.oauth.token"

#: Alipay ``sub_code`` -> (minigate code, safe message).
SUB_CODES: dict[str, tuple[str, str]] = {
    "isv.code-invalid": ("invalid_code", "the auth code is invalid, expired or already used"),
    "isv.grant-type-invalid": ("invalid_grant_type", "grant_type is not accepted"),
    "isv.refresh-token-invalid": ("invalid_refresh_token", "the refresh token is invalid"),
}


class LoginError(MinigateError):
    """The code exchange was refused. ``code`` is minigate's, ``sub_code`` Alipay's; the message is safe."""

    def __init__(self, code: str, sub_code: str | None, message: str) -> None:
        super().__init__(f"{code}: {message}" + (f" ({sub_code})" if sub_code else ""))
        self.code = code
        self.sub_code = sub_code
        self.message = message


@dataclass(frozen=True, slots=True)
class AlipaySession:
    user_id: str | None
    open_id: str | None
    access_token: SecretStr


class AlipayLoginClient:
    def __init__(self, config: AlipayConfig, client: httpx.AsyncClient) -> None:
        self.config = config
        self.api = OpenApi(config, client)

    def build_oauth_token(self, auth_code: str) -> httpx.Request:
        return self.api.build(OAUTH_METHOD, extra={"grant_type": "authorization_code", "code": auth_code})

    async def oauth_token(self, auth_code: str) -> AlipaySession:
        if not auth_code or len(auth_code) > 256:
            raise LoginError("invalid_code", None, "the auth code is empty or too long")
        answer = await self.api.call(OAUTH_METHOD, extra={"grant_type": "authorization_code", "code": auth_code})
        if answer.error is not None:
            _refuse(answer.error)
        data = answer.data
        user_id, open_id, token = data.get("user_id"), data.get("open_id"), data.get("access_token")
        user_id = user_id if isinstance(user_id, str) and user_id else None
        open_id = open_id if isinstance(open_id, str) and open_id else None
        if (user_id is None and open_id is None) or not isinstance(token, str) or not token:
            raise LoginError("login_failed", None, "Alipay answered without a user id or access token")
        return AlipaySession(user_id=user_id, open_id=open_id, access_token=SecretStr(token))


def _refuse(err: AlipayError) -> None:
    known = SUB_CODES.get(err.sub_code or "")
    if known is not None:   # trusted even unsigned: a refused login changes no state
        raise LoginError(known[0], err.sub_code, known[1])
    DEFAULT_ERROR_MAPPER.raise_or_decline(err, op="oauth_token")   # unknown outcome / misconfigured raise
    raise LoginError("login_failed", err.sub_code, "Alipay refused the auth code")

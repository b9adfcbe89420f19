"""WeChat mini-program server API simulator: ``GET /sns/jscode2session`` and the "user" who logs in.

``POST /_sandbox/login`` with ``{"user": "<name>"}`` answers ``{"code": "..."}`` — what ``wx.login`` gives
that user on the device: single use, valid 5 minutes. ``/sns/jscode2session`` exchanges it for a stable
openid per (appid, user) and a fresh session_key. Errors come as HTTP 200 with ``errcode``/``errmsg``,
as the real API answers: 40013 invalid appid, 40125 invalid appsecret, 40029 invalid code (unknown or
expired), 40163 code been used, 40002 invalid grant_type.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from dataclasses import dataclass
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from minigate.simulators._core import (
    Clock,
    CredentialStore,
    Faults,
    fault_routes,
    json_response,
    read_json_object,
)
from minigate.simulators.wechatpay import create_credentials

__all__ = ["CODE_TTL_SECONDS", "WeChatSimulator"]

CODE_TTL_SECONDS = 300


@dataclass
class _Code:
    user: str
    expires_at: float
    used: bool = False


class WeChatSimulator:
    """Mini-program login. Shares appid/app_secret with the WeChat Pay sandbox merchant."""

    name = "wechat"

    def __init__(self, store: CredentialStore, *, clock: Clock, faults: Faults | None = None) -> None:
        pay = store.load_or_create("wechatpay", create_credentials)
        self.appid: str = pay["merchant"]["appid"]
        self.app_secret: str = pay["merchant"]["app_secret"]
        self._openid_secret = bytes.fromhex(pay["simulator"]["openid_secret"])
        self.clock = clock
        self.faults = faults or Faults()
        self._codes: dict[str, _Code] = {}
        self.app = Starlette(routes=[
            Route("/sns/jscode2session", self._jscode2session, methods=["GET"]),
            Route("/_sandbox/login", self._login, methods=["POST"]),
            *fault_routes(self.faults),
        ])

    def credentials(self) -> dict[str, str]:
        return {"appid": self.appid, "app_secret": self.app_secret}

    def openid(self, user: str, appid: str | None = None) -> str:
        """``o`` + 27 chars of base64url(HMAC-SHA256(secret, appid|user)): 28 chars, like real openids."""
        message = f"{appid or self.appid}\x00{user}".encode()
        digest = hmac.new(self._openid_secret, message, hashlib.sha256).digest()
        return "o" + base64.urlsafe_b64encode(digest).decode()[:27]

    def login(self, user: str) -> str:
        now = self.clock.now()
        self._codes = {c: v for c, v in self._codes.items() if v.expires_at > now - CODE_TTL_SECONDS}
        code = secrets.token_hex(16)
        self._codes[code] = _Code(user=user, expires_at=now + CODE_TTL_SECONDS)
        return code

    async def _login(self, request: Request) -> Response:
        data = await read_json_object(request)
        user = data.get("user") if data else None
        if not isinstance(user, str) or not user:
            return json_response({"code": "PARAM_ERROR", "message": 'JSON {"user": "<name>"} expected'}, 400)
        return json_response({"code": self.login(user)})

    def _error(self, errcode: int, errmsg: str) -> Response:
        return json_response({"errcode": errcode, "errmsg": f"{errmsg}, rid: {secrets.token_hex(12)}"})

    async def _jscode2session(self, request: Request) -> Response:
        fault = self.faults.take_call("/sns/jscode2session")
        if fault is not None and fault.kind in ("http_500", "timeout", "charged_then_timeout"):
            return Response(b"", status_code=500 if fault.kind == "http_500" else 504)
        if fault is not None and fault.kind == "http_429":
            return self._error(45011, "api minute-quota reach limit  mush slower  retry next minute")
        q = request.query_params
        if q.get("appid") != self.appid:
            return self._error(40013, "invalid appid")
        if not hmac.compare_digest(q.get("secret", ""), self.app_secret):
            return self._error(40125, "invalid appsecret")
        if q.get("grant_type") != "authorization_code":
            return self._error(40002, "invalid grant_type")
        entry = self._codes.get(q.get("js_code", ""))
        if entry is None or self.clock.now() + self.faults.clock_skew_seconds >= entry.expires_at:
            return self._error(40029, "invalid code")
        if entry.used:
            return self._error(40163, "code been used")
        entry.used = True
        answer: dict[str, Any] = {"session_key": base64.b64encode(secrets.token_bytes(16)).decode(),
                                  "openid": self.openid(entry.user, q.get("appid"))}
        return json_response(answer)

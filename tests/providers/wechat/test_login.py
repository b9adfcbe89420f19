"""WeChatMiniProgramClient.code2session against a MockTransport jscode2session endpoint."""

from __future__ import annotations

import json
import traceback
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from minigate.errors import MinigateError, ProviderTimeout, ProviderUnavailable
from minigate.providers.wechat.config import WeChatMiniProgramConfig
from minigate.providers.wechat.login import LoginError, WeChatMiniProgramClient

SECRET = "8d3c7f1e0b2a49c6a5f4e3d2c1b0a9f8"
CONFIG = WeChatMiniProgramConfig(
    appid="wx1234567890abcdef", app_secret=SecretStr(SECRET), base_url="http://sandbox/wechat"
)


def answer(status: int, body: Any) -> httpx.Response:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return httpx.Response(
        status, headers={"Content-Type": "application/json"}, stream=httpx.ByteStream(content)
    )


def client_for(handler: Callable[[httpx.Request], httpx.Response]) -> WeChatMiniProgramClient:
    return WeChatMiniProgramClient(CONFIG, httpx.AsyncClient(transport=httpx.MockTransport(handler)))


async def test_success_with_unionid() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return answer(
            200,
            {
                "openid": "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o",
                "session_key": "tiihtNczf5v6AKRyjwEUhQ==",
                "unionid": "o6_bmasdasdsad6_2sgVt7hMZOPfL",
            },
        )

    session = await client_for(handler).code2session("0a3xyz")
    assert (
        session.openid == "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o"
        and session.unionid == "o6_bmasdasdsad6_2sgVt7hMZOPfL"
    )
    assert session.session_key.get_secret_value() == "tiihtNczf5v6AKRyjwEUhQ=="
    assert "tiihtNczf5v6AKRyjwEUhQ==" not in repr(session)
    (request,) = seen
    assert request.method == "GET" and request.url.path == "/wechat/sns/jscode2session"
    assert dict(request.url.params) == {
        "appid": "wx1234567890abcdef",
        "secret": SECRET,
        "js_code": "0a3xyz",
        "grant_type": "authorization_code",
    }


async def test_success_without_unionid() -> None:
    session = await client_for(lambda r: answer(200, {"openid": "o1", "session_key": "k"})).code2session("c")
    assert session.unionid is None


@pytest.mark.parametrize(
    ("errcode", "code"),
    [
        (40029, "invalid_code"),
        (40163, "code_used"),
        (45011, "rate_limited"),
        (-1, "busy"),
        (40226, "user_blocked"),
        (99999, "login_failed"),
    ],
)
async def test_errcodes(errcode: int, code: str) -> None:
    body = {"errcode": errcode, "errmsg": f"invalid code, secret {SECRET}, rid: 6650a1b2-1"}
    with pytest.raises(LoginError) as info:
        await client_for(lambda r: answer(200, body)).code2session("0a3xyz")
    err = info.value
    assert isinstance(err, MinigateError) and err.code == code
    assert err.errcode == (errcode if errcode != 99999 else 99999)
    for text in (str(err), repr(err), err.message, *map(str, err.args)):
        assert SECRET not in text and "0a3xyz" not in text


async def test_answer_without_openid_is_a_login_error() -> None:
    with pytest.raises(LoginError) as info:
        await client_for(lambda r: answer(200, {"errcode": 0, "errmsg": "ok"})).code2session("c")
    assert info.value.code == "login_failed"


@pytest.mark.parametrize(
    ("status", "body"), [(500, b"oops"), (502, {"errcode": -1}), (200, b"<html>"), (429, b"")]
)
async def test_server_trouble_is_unavailable(status: int, body: Any) -> None:
    with pytest.raises(ProviderUnavailable) as info:
        await client_for(lambda r: answer(status, body)).code2session("c")
    assert SECRET not in str(info.value)


@pytest.mark.parametrize(
    ("exc", "kind"),
    [(httpx.ReadTimeout("slow"), ProviderTimeout), (httpx.ConnectTimeout("no connection"), ProviderUnavailable),
     (httpx.ConnectError("refused"), ProviderUnavailable)],
)
async def test_transport_errors_do_not_carry_the_url(exc: Exception, kind: type[Exception]) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise exc

    with pytest.raises(kind) as info:
        await client_for(handler).code2session("c")
    text = "".join(traceback.format_exception(info.value))
    assert SECRET not in text and info.value.__cause__ is None


async def test_empty_code_is_refused_without_a_call() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise AssertionError("no request expected")

    with pytest.raises(LoginError) as info:
        await client_for(handler).code2session("")
    assert info.value.code == "invalid_code"

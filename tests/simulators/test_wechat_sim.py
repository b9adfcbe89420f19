"""Mini-program login simulator: wx.login codes and /sns/jscode2session."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from minigate.simulators import Sandbox


@pytest.fixture(scope="module")
def state_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("sandbox")


@pytest.fixture
async def env(state_dir: Path) -> AsyncIterator[tuple[Sandbox, httpx.AsyncClient]]:
    sandbox = Sandbox(state_dir)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=sandbox.app), base_url="http://sandbox"
    ) as c:
        yield sandbox, c
    await sandbox.aclose()


async def login(client: httpx.AsyncClient, user: str) -> str:
    response = await client.post("/wechat/_sandbox/login", json={"user": user})
    assert response.status_code == 200
    return str(response.json()["code"])


async def exchange(
    client: httpx.AsyncClient, sandbox: Sandbox, code: str, **override: str
) -> dict[str, object]:
    creds = sandbox.credentials("wechat")
    params = {
        "appid": creds["appid"],
        "secret": creds["app_secret"],
        "js_code": code,
        "grant_type": "authorization_code",
    } | override
    response = await client.get("/wechat/sns/jscode2session", params=params)
    assert response.status_code == 200  # WeChat answers errors with HTTP 200 + errcode
    return dict(response.json())


async def test_credentials_shared_with_wechatpay(env: tuple[Sandbox, httpx.AsyncClient]) -> None:
    sandbox, _ = env
    wechat, pay = sandbox.credentials("wechat"), sandbox.credentials("wechatpay")
    assert set(wechat) == {"appid", "app_secret"}
    assert wechat == {"appid": pay["appid"], "app_secret": pay["app_secret"]}


async def test_code_is_single_use_and_openid_stable(env: tuple[Sandbox, httpx.AsyncClient]) -> None:
    sandbox, client = env
    code = await login(client, "alice")
    first = await exchange(client, sandbox, code)
    assert "errcode" not in first
    openid = str(first["openid"])
    assert len(openid) == 28 and openid.startswith("o") and len(str(first["session_key"])) == 24
    used = await exchange(client, sandbox, code)
    assert used["errcode"] == 40163 and str(used["errmsg"]).startswith("code been used")
    again = await exchange(client, sandbox, await login(client, "alice"))
    assert again["openid"] == openid and again["session_key"] != first["session_key"]
    bob = await exchange(client, sandbox, await login(client, "bob"))
    assert bob["openid"] != openid
    # stable across restarts of the sandbox (secret kept in the state dir)
    assert Sandbox(sandbox.state_dir).wechat.openid("alice") == openid


async def test_code_expires_after_five_minutes(env: tuple[Sandbox, httpx.AsyncClient]) -> None:
    sandbox, client = env
    fresh = await login(client, "carol")
    old = await login(client, "carol")
    sandbox.clock.advance(299)
    assert "openid" in await exchange(client, sandbox, fresh)
    sandbox.clock.advance(2)
    assert (await exchange(client, sandbox, old))["errcode"] == 40029


async def test_errors(env: tuple[Sandbox, httpx.AsyncClient]) -> None:
    sandbox, client = env
    code = await login(client, "dave")
    assert (await exchange(client, sandbox, code, secret="0" * 32))["errcode"] == 40125
    assert (await exchange(client, sandbox, code, appid="wx0000000000000000"))["errcode"] == 40013
    assert (await exchange(client, sandbox, code, grant_type="client_credential"))["errcode"] == 40002
    assert (await exchange(client, sandbox, "not-a-code"))["errcode"] == 40029
    assert "openid" in await exchange(client, sandbox, code)  # failed attempts did not burn the code
    bad = await client.post("/wechat/_sandbox/login", json={"name": "x"})
    assert bad.status_code == 400


async def test_fault_knobs(env: tuple[Sandbox, httpx.AsyncClient]) -> None:
    sandbox, client = env
    assert (await client.post("/wechat/_sandbox/faults", json={"next_call": "http_500"})).status_code == 200
    creds = sandbox.credentials("wechat")
    response = await client.get("/wechat/sns/jscode2session", params={"appid": creds["appid"]})
    assert response.status_code == 500
    await client.post("/wechat/_sandbox/faults", json={"next_call": "http_429"})
    assert (await exchange(client, sandbox, "x"))["errcode"] == 45011
    assert (await client.delete("/wechat/_sandbox/faults")).json()["next_call"] == []

"""``alipay.system.oauth.token`` through AlipayLoginClient against the simulator (and a fake for edge cases)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.routing import Mount

from minigate.errors import ProviderUnavailable
from minigate.providers.alipay.config import AlipayConfig
from minigate.providers.alipay.login import AlipayLoginClient, LoginError
from minigate.simulators._core import Clock, CredentialStore, Faults
from minigate.simulators.alipay import AlipaySimulator
from tests.providers.alipay.test_provider import BASE, MERCHANT, FakeAlipay, signed_answer


@pytest.fixture
async def env(tmp_path: Path) -> AsyncIterator[tuple[AlipaySimulator, AlipayLoginClient, httpx.AsyncClient]]:
    sim = AlipaySimulator(CredentialStore(tmp_path), clock=Clock(), faults=Faults())
    app = Starlette(routes=[Mount("/alipay", app=sim.app)])
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://sandbox") as http:
        cfg = AlipayConfig.model_validate(sim.credentials() | {"base_url": "http://sandbox/alipay/gateway.do"})
        yield sim, AlipayLoginClient(cfg, http), http


async def code_for(http: httpx.AsyncClient, user: str) -> str:
    r = await http.post("/alipay/_sandbox/login", json={"user": user})
    assert r.status_code == 200
    return str(r.json()["code"])


async def test_login_gives_stable_ids_per_user(env: Any) -> None:
    sim, login, http = env
    first = await login.oauth_token(await code_for(http, "alice"))
    again = await login.oauth_token(await code_for(http, "alice"))
    bob = await login.oauth_token(await code_for(http, "bob"))
    assert (first.user_id, first.open_id) == (again.user_id, again.open_id)
    assert first.user_id != bob.user_id and first.open_id != bob.open_id
    assert first.user_id is not None and first.user_id.startswith("2088") and len(first.user_id) == 16
    assert first.open_id is not None and len(first.open_id) == 47
    assert first.access_token.get_secret_value() not in repr(first)


async def test_code_is_single_use_and_expires(env: Any) -> None:
    sim, login, http = env
    code = await code_for(http, "alice")
    await login.oauth_token(code)
    with pytest.raises(LoginError) as info:
        await login.oauth_token(code)
    assert (info.value.code, info.value.sub_code) == ("invalid_code", "isv.code-invalid")
    late = await code_for(http, "alice")
    sim.clock.advance(301)
    with pytest.raises(LoginError):
        await login.oauth_token(late)
    with pytest.raises(LoginError):
        await login.oauth_token("")
    with pytest.raises(LoginError):
        await login.oauth_token("unknown")


async def test_login_request_shape_and_server_trouble(env: Any) -> None:
    sim, login, http = env
    request = login.build_oauth_token("abc")
    body = request.content.decode()
    assert "grant_type=authorization_code" in body and "code=abc" in body and "biz_content" not in body
    await http.post("/alipay/_sandbox/faults", json={"next_call": "http_500"})
    with pytest.raises(ProviderUnavailable):
        await login.oauth_token(await code_for(http, "alice"))
    bad = await http.post("/alipay/_sandbox/login", json={})
    assert bad.status_code == 400


async def test_login_answer_without_ids_is_refused() -> None:
    fake = FakeAlipay({"alipay.system.oauth.token": {"access_token": "t"}})
    client = AlipayLoginClient(AlipayConfig.model_validate(MERCHANT | {"base_url": BASE}), httpx.AsyncClient(
        transport=httpx.MockTransport(fake)))
    with pytest.raises(LoginError) as info:
        await client.oauth_token("abc")
    assert info.value.code == "login_failed"
    fake.answers["alipay.system.oauth.token"] = lambda p: signed_answer(
        "error_response", {"code": "40002", "sub_code": "isv.code-invalid"}, sign="")
    with pytest.raises(LoginError) as refused:
        await client.oauth_token("abc")
    assert refused.value.code == "invalid_code"

"""Umeng+ OpenAPI simulator: the gateway's checks and error bodies, the umini APIs, deterministic numbers and
the control route -- over HTTP, signed with the pure signer."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from minigate.providers.umeng import signing
from minigate.simulators import Sandbox
from minigate.simulators.sandbox import REGISTRY

DAY = dt.date(2025, 3, 12)
OVERVIEW = "umeng.umini.getOverview"
TOTAL_USER = "umeng.umini.getTotalUser"
RETENTION = "umeng.umini.getRetentionByDataSourceId"
ALL_INDICATORS = "newUser,activeUser,launch,visitTimes,onceDuration,dailyDuration"


@pytest.fixture
async def env(tmp_path: Path) -> AsyncIterator[tuple[Sandbox, httpx.AsyncClient]]:
    sandbox = Sandbox(tmp_path)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=sandbox.app), base_url="http://sandbox") as c:
        yield sandbox, c
    await sandbox.aclose()


def signed(creds: dict[str, str], api: str, params: dict[str, str], *, key: str | None = None,
           security: str | None = None) -> tuple[str, dict[str, str]]:
    api_key = key or creds["api_key"]
    path = signing.url_path("com.umeng.umini", api, api_key)
    fields = dict(params)
    fields["_aop_signature"] = signing.sign(path, fields, security or creds["api_security"])
    return f"/umeng/openapi/{path}", fields


def day_params(creds: dict[str, str], day: dt.date = DAY, **extra: str) -> dict[str, str]:
    return {"dataSourceId": creds["data_source_id"], "fromDate": day.isoformat(), "toDate": day.isoformat(),
            "timeUnit": "day"} | extra


async def call(client: httpx.AsyncClient, creds: dict[str, str], api: str, params: dict[str, str], *,
               method: str = "POST", **kw: Any) -> httpx.Response:
    url, fields = signed(creds, api, params, **kw)
    if method == "GET":
        return await client.get(url, params=fields)
    return await client.post(url, data=fields)


def test_registered() -> None:
    assert REGISTRY["umeng"] == "minigate.simulators.umeng:UmengSimulator"


async def test_credentials_shape_and_persistence(env: tuple[Sandbox, httpx.AsyncClient], tmp_path: Path) -> None:
    sandbox, _ = env
    creds = sandbox.credentials("umeng")
    assert set(creds) == {"api_key", "api_security", "data_source_id"}
    assert creds["api_key"].isdigit() and len(creds["data_source_id"]) == 24
    assert Sandbox(tmp_path).credentials("umeng") == creds


async def test_overview_answers_the_day_values_post_and_get(env: tuple[Sandbox, httpx.AsyncClient]) -> None:
    sandbox, client = env
    creds = sandbox.credentials("umeng")
    expected = sandbox.simulator("umeng").day_values(DAY)["overview"]
    for method in ("POST", "GET"):
        response = await call(client, creds, OVERVIEW, day_params(creds, indicators=ALL_INDICATORS), method=method)
        assert response.status_code == 200
        body = response.json()
        assert body["success"] is True and body["code"] == 200
        assert body["data"] == {"currentPage": 1, "totalCount": 1, "data": [{"dateTime": "2025-03-12", **expected}]}
    only = await call(client, creds, OVERVIEW, day_params(creds, indicators="newUser"))
    assert only.json()["data"]["data"] == [{"dateTime": "2025-03-12", "newUser": expected["newUser"]}]


async def test_numbers_are_seeded_by_data_source_and_day(env: tuple[Sandbox, httpx.AsyncClient],
                                                         tmp_path: Path) -> None:
    sandbox, _ = env
    sim = sandbox.simulator("umeng")
    twin = Sandbox(tmp_path).simulator("umeng")           # same state dir: same data source
    assert sim.day_values(DAY) == twin.day_values(DAY)
    assert sim.day_values(DAY) != sim.day_values(DAY + dt.timedelta(days=1))
    other = Sandbox(tmp_path / "other").simulator("umeng")
    assert other.day_values(DAY)["overview"] != sim.day_values(DAY)["overview"]


async def test_a_range_is_paged_and_stops_at_yesterday(env: tuple[Sandbox, httpx.AsyncClient]) -> None:
    sandbox, client = env
    creds = sandbox.credentials("umeng")
    yesterday = sandbox.simulator("umeng").yesterday()
    params = day_params(creds, indicators="newUser") | {"fromDate": (yesterday - dt.timedelta(days=4)).isoformat(),
                                                        "toDate": (yesterday + dt.timedelta(days=3)).isoformat(),
                                                        "pageIndex": "2", "pageSize": "2"}
    data = (await call(client, creds, OVERVIEW, params)).json()["data"]
    assert data["totalCount"] == 5 and data["currentPage"] == 2
    assert [item["dateTime"] for item in data["data"]] == [(yesterday - dt.timedelta(days=n)).isoformat()
                                                            for n in (2, 1)]
    future = day_params(creds, yesterday + dt.timedelta(days=1), indicators="newUser")
    assert (await call(client, creds, OVERVIEW, future)).json()["data"]["data"] == []


async def test_total_user_is_a_plain_list(env: tuple[Sandbox, httpx.AsyncClient]) -> None:
    sandbox, client = env
    creds = sandbox.credentials("umeng")
    params = {k: v for k, v in day_params(creds).items() if k != "timeUnit"}
    body = (await call(client, creds, TOTAL_USER, params)).json()
    assert body["data"] == [{"dateTime": "2025-03-12",
                             "totalUser": sandbox.simulator("umeng").day_values(DAY)["total_user"]}]


async def test_retention_days_appear_as_they_end(env: tuple[Sandbox, httpx.AsyncClient]) -> None:
    sandbox, client = env
    creds = sandbox.credentials("umeng")
    sim = sandbox.simulator("umeng")
    recent = sim.yesterday() - dt.timedelta(days=2)
    params = day_params(creds, recent, indicator="newuser", valueType="num")
    item = (await call(client, creds, RETENTION, params)).json()["data"]["data"][0]
    assert item["value"] == sim.day_values(recent)["overview"]["newUser"]
    assert item["v1"].isdigit() and item["v2"].isdigit() and item["v3"] == "" and item["v30"] == ""
    sandbox.clock.advance(86400)
    item = (await call(client, creds, RETENTION, params)).json()["data"]["data"][0]
    assert item["v3"].isdigit() and item["v4"] == ""
    active = (await call(client, creds, RETENTION, params | {"indicator": "ACTIVEUSER"})).json()["data"]["data"][0]
    assert active["value"] == sim.day_values(recent)["overview"]["activeUser"]
    rate = (await call(client, creds, RETENTION, params | {"valueType": "rate"})).json()["data"]["data"][0]
    assert rate["v1"] == f"{int(item['v1']) * 100 / item['value']:.2f}%"


@pytest.mark.parametrize(("change", "code", "text"), [
    ({"dataSourceId": ""}, 400, "dataSourceId is required"),
    ({"dataSourceId": "000000000000000000000000"}, 403, "no permission"),
    ({"fromDate": "20250312"}, 400, "fromDate must be yyyy-MM-dd"),
    ({"toDate": "2025-02-30"}, 400, "toDate must be yyyy-MM-dd"),
    ({"fromDate": "2025-03-13"}, 400, "fromDate must not be after toDate"),
    ({"timeUnit": "hour"}, 400, "timeUnit must be one of"),
    ({"timeUnit": "week"}, 400, "timeUnit=day only"),
    ({"indicators": "newUser,sales"}, 400, "indicators"),
    ({"indicators": ""}, 400, "indicators"),
    ({"pageSize": "1000"}, 400, "pageSize"),
])
async def test_api_refusals(env: tuple[Sandbox, httpx.AsyncClient], change: dict[str, str], code: int,
                            text: str) -> None:
    sandbox, client = env
    creds = sandbox.credentials("umeng")
    response = await call(client, creds, OVERVIEW, day_params(creds, indicators="newUser") | change)
    assert response.status_code == 200
    body = response.json()
    assert body["success"] is False and body["code"] == code and text in body["msg"] and "data" not in body


async def test_retention_parameter_refusals(env: tuple[Sandbox, httpx.AsyncClient]) -> None:
    sandbox, client = env
    creds = sandbox.credentials("umeng")
    for change in ({"valueType": ""}, {"valueType": "num", "indicator": "launch"}, {"timeUnit": "month"}):
        body = (await call(client, creds, RETENTION, day_params(creds, valueType="rate") | change)).json()
        assert body["success"] is False and body["code"] == 400, change


async def test_gateway_refusals(env: tuple[Sandbox, httpx.AsyncClient]) -> None:
    sandbox, client = env
    creds = sandbox.credentials("umeng")
    params = day_params(creds, indicators="newUser")

    async def refused(response: httpx.Response) -> str:
        assert response.status_code == 400
        body = response.json()
        assert set(body) == {"error_code", "error_message", "exception"}
        return str(body["error_code"])

    assert await refused(await call(client, creds, "umeng.umini.getNothing", params)) == "gw.APIUnsupported"
    url, fields = signed(creds, OVERVIEW, params)
    assert await refused(await client.post(url.replace("com.umeng.umini", "com.umeng.uapp"), data=fields)) \
        == "gw.APIUnsupported"
    assert await refused(await call(client, creds, OVERVIEW, params, key="7654321")) == "gw.AppKeyNotFound"
    assert await refused(await client.post(url, data=params)) == "gw.SignatureMissing"
    assert await refused(await call(client, creds, OVERVIEW, params, security="wrong")) == "gw.SignatureInvalid"
    tampered = fields | {"indicators": "activeUser"}
    assert await refused(await client.post(url, data=tampered)) == "gw.SignatureInvalid"
    assert (await client.post(url, data=fields | {"_aop_signature": fields["_aop_signature"].lower()})).json()[
        "success"] is True


async def test_the_timestamp_is_optional_but_checked_when_sent(env: tuple[Sandbox, httpx.AsyncClient]) -> None:
    sandbox, client = env
    creds = sandbox.credentials("umeng")
    now_ms = int(sandbox.clock.now() * 1000)
    params = day_params(creds, indicators="newUser")
    fresh = await call(client, creds, OVERVIEW, params | {"_aop_timestamp": str(now_ms - 60_000)})
    assert fresh.json()["success"] is True
    for stamp in (str(now_ms - 16 * 60_000), str(now_ms + 16 * 60_000), "soon"):
        stale = await call(client, creds, OVERVIEW, params | {"_aop_timestamp": stamp})
        assert stale.status_code == 400 and stale.json()["error_code"] == "gw.TimestampInvalid", stamp


async def test_faults(env: tuple[Sandbox, httpx.AsyncClient]) -> None:
    sandbox, client = env
    creds = sandbox.credentials("umeng")
    params = day_params(creds, indicators="newUser")
    await client.post("/umeng/_sandbox/faults", json={"next_call": "http_429"})
    limited = await call(client, creds, OVERVIEW, params)
    assert limited.status_code == 400 and limited.json()["error_code"] == "gw.QosAppFrequencyLimit"
    await client.post("/umeng/_sandbox/faults", json={"next_call": "http_500"})
    assert (await call(client, creds, OVERVIEW, params)).status_code == 500
    await client.post("/umeng/_sandbox/faults", json={"next_call": "timeout", "seconds": 0, "path": "/openapi"})
    assert (await call(client, creds, OVERVIEW, params)).status_code == 504
    assert (await call(client, creds, OVERVIEW, params)).json()["success"] is True
    # a refused signature does not use up the fault
    await client.post("/umeng/_sandbox/faults", json={"next_call": "http_500"})
    assert (await call(client, creds, OVERVIEW, params, security="wrong")).status_code == 400
    assert (await call(client, creds, OVERVIEW, params)).status_code == 500


async def test_control_route_sets_shows_and_forgets_a_day(env: tuple[Sandbox, httpx.AsyncClient]) -> None:
    sandbox, client = env
    creds = sandbox.credentials("umeng")
    generated = sandbox.simulator("umeng").day_values(DAY)
    told = {"date": "2025-03-12", "overview": {"newUser": 7}, "retention": {"newuser": {"value": 7, "v1": "3"}}}
    response = await client.post("/umeng/_sandbox/data", json=told)
    assert response.status_code == 200
    assert response.json()["overview"] == {"newUser": 7}
    assert response.json()["total_user"] == generated["total_user"]       # sections not given stay generated
    shown = (await client.get("/umeng/_sandbox/data", params={"date": "2025-03-12"})).json()
    assert shown == response.json()
    data = (await call(client, creds, OVERVIEW, day_params(creds, indicators=ALL_INDICATORS))).json()["data"]
    assert data["data"] == [{"dateTime": "2025-03-12", "newUser": 7}]
    retention = await call(client, creds, RETENTION, day_params(creds, indicator="activeUser", valueType="num"))
    assert retention.json()["data"]["data"] == [{"dateTime": "2025-03-12"}]
    await client.delete("/umeng/_sandbox/data")
    assert (await client.get("/umeng/_sandbox/data", params={"date": "2025-03-12"})).json()["overview"] == \
        generated["overview"]


@pytest.mark.parametrize("body", [[1], {"date": "12/03/2025"}, {"date": "2025-03-12", "sales": {}},
                                  {"date": "2025-03-12", "overview": {"revenue": 1}},
                                  {"date": "2025-03-12", "total_user": "many"},
                                  {"date": "2025-03-12", "retention": {"newuser": {"v99": "1"}}},
                                  {"date": "2025-03-12", "retention": {"returning": {}}}])
async def test_control_route_refuses_malformed_days(env: tuple[Sandbox, httpx.AsyncClient], body: Any) -> None:
    _, client = env
    response = await client.post("/umeng/_sandbox/data", json=body)
    assert response.status_code == 400 and response.json()["code"] == "PARAM_ERROR"
    assert (await client.get("/umeng/_sandbox/data", params={"date": "bad"})).status_code == 400

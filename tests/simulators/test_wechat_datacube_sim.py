"""WeChat simulator, server side of data analysis: the access token (/cgi-bin/token, /cgi-bin/stable_token), the
datacube APIs' token, date and range rules, the answer shapes and numbers, the control route and the faults."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from minigate.simulators import Sandbox
from minigate.simulators.wechat import DATACUBE_APIS

DAY = dt.date(2025, 3, 12)                 # a Wednesday
SUNDAY = dt.date(2025, 3, 16)
MONTH_END = dt.date(2025, 2, 28)


@pytest.fixture(scope="module")
def state_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("sandbox")      # the app's keys are made once for the module


@pytest.fixture
async def env(state_dir: Path) -> AsyncIterator[tuple[Sandbox, httpx.AsyncClient]]:
    sandbox = Sandbox(state_dir)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=sandbox.app), base_url="http://sandbox") as c:
        yield sandbox, c
    await sandbox.aclose()


def ymd(day: dt.date) -> str:
    return day.strftime("%Y%m%d")


async def token(client: httpx.AsyncClient, sandbox: Sandbox, **override: str) -> dict[str, Any]:
    creds = sandbox.credentials("wechat")
    params = {"grant_type": "client_credential", "appid": creds["appid"], "secret": creds["app_secret"]} | override
    response = await client.get("/wechat/cgi-bin/token", params=params)
    assert response.status_code == 200
    return dict(response.json())


async def datacube(client: httpx.AsyncClient, access_token: str, name: str, begin: dt.date | str,
                   end: dt.date | str | None = None) -> dict[str, Any]:
    body = {"begin_date": begin if isinstance(begin, str) else ymd(begin),
            "end_date": (end if isinstance(end, str) else ymd(end)) if end is not None else
            (begin if isinstance(begin, str) else ymd(begin))}
    response = await client.post(f"/wechat/datacube/{name}", params={"access_token": access_token}, json=body)
    assert response.status_code == 200
    return dict(response.json())


# --------------------------------------------------------------------------- access token

@pytest.mark.parametrize(("override", "errcode"), [
    ({"grant_type": "authorization_code"}, 40002), ({"appid": ""}, 41002), ({"appid": "wx0000000000000000"}, 40013),
    ({"secret": ""}, 41004), ({"secret": "0" * 32}, 40125)])
async def test_token_refusals(env: tuple[Sandbox, httpx.AsyncClient], override: dict[str, str],
                              errcode: int) -> None:
    sandbox, client = env
    answer = await token(client, sandbox, **override)
    assert answer["errcode"] == errcode and "access_token" not in answer


async def test_a_token_lives_7200_seconds_on_the_sandbox_clock(env: tuple[Sandbox, httpx.AsyncClient]) -> None:
    sandbox, client = env
    answer = await token(client, sandbox)
    assert answer["expires_in"] == 7200 and len(answer["access_token"]) > 100
    name = "getweanalysisappiddailysummarytrend"
    assert "list" in await datacube(client, answer["access_token"], name, DAY)
    sandbox.clock.advance(7199)
    assert "list" in await datacube(client, answer["access_token"], name, DAY)
    sandbox.clock.advance(1)
    assert (await datacube(client, answer["access_token"], name, DAY))["errcode"] == 42001
    assert (await datacube(client, "not-a-token", name, DAY))["errcode"] == 40001
    missing = await client.post(f"/wechat/datacube/{name}", json={"begin_date": ymd(DAY), "end_date": ymd(DAY)})
    assert missing.json()["errcode"] == 41001


async def test_a_new_token_leaves_the_old_one_five_minutes(env: tuple[Sandbox, httpx.AsyncClient]) -> None:
    sandbox, client = env
    old = (await token(client, sandbox))["access_token"]
    new = (await token(client, sandbox))["access_token"]
    assert old != new
    name = "getweanalysisappiddailyvisittrend"
    sandbox.clock.advance(299)
    assert "list" in await datacube(client, old, name, DAY)
    sandbox.clock.advance(1)
    assert (await datacube(client, old, name, DAY))["errcode"] == 40001
    assert "list" in await datacube(client, new, name, DAY)


async def test_stable_token(env: tuple[Sandbox, httpx.AsyncClient]) -> None:
    sandbox, client = env
    creds = sandbox.credentials("wechat")
    body = {"grant_type": "client_credential", "appid": creds["appid"], "secret": creds["app_secret"]}
    first = (await client.post("/wechat/cgi-bin/stable_token", json=body)).json()
    sandbox.clock.advance(100)
    again = (await client.post("/wechat/cgi-bin/stable_token", json=body | {"force_refresh": False})).json()
    assert again["access_token"] == first["access_token"] and 7099 <= again["expires_in"] <= 7100
    plain = (await token(client, sandbox))["access_token"]          # /cgi-bin/token does not replace it
    forced = (await client.post("/wechat/cgi-bin/stable_token", json=body | {"force_refresh": True})).json()
    assert forced["access_token"] != first["access_token"] and forced["expires_in"] == 7200
    sandbox.clock.advance(300)
    name = "getweanalysisappiddailysummarytrend"
    assert (await datacube(client, first["access_token"], name, DAY))["errcode"] == 40001
    assert "list" in await datacube(client, forced["access_token"], name, DAY)
    assert "list" in await datacube(client, plain, name, DAY)
    wrong = (await client.post("/wechat/cgi-bin/stable_token", json=body | {"secret": "x"})).json()
    assert wrong["errcode"] == 40125
    not_json = await client.post("/wechat/cgi-bin/stable_token", content=b"grant_type=client_credential")
    assert not_json.json()["errcode"] == 47001


# --------------------------------------------------------------------------- datacube rules

@pytest.mark.parametrize(("name", "begin", "end", "errcode"), [
    ("getweanalysisappiddailyvisittrend", "2025-03-12", "2025-03-12", 61500),
    ("getweanalysisappiddailyvisittrend", "20250230", "20250230", 61500),
    ("getweanalysisappiddailyvisittrend", "", "20250312", 61500),
    ("getweanalysisappiddailyvisittrend", "20250311", "20250312", 61501),
    ("getweanalysisappiddailyretaininfo", "20250313", "20250312", 61501),
    ("getweanalysisappidweeklyvisittrend", "20250311", "20250317", 61501),   # not a Monday
    ("getweanalysisappidweeklyretaininfo", "20250310", "20250315", 61501),   # not Monday to Sunday
    ("getweanalysisappidmonthlyvisittrend", "20250201", "20250227", 61501),
    ("getweanalysisappidmonthlyretaininfo", "20250202", "20250228", 61501),
    ("getweanalysisappiduserportrait", "20250301", "20250312", 61501),       # 12 days: 1, 7 or 30 only
])
async def test_date_rules(env: tuple[Sandbox, httpx.AsyncClient], name: str, begin: str, end: str,
                          errcode: int) -> None:
    sandbox, client = env
    access = (await token(client, sandbox))["access_token"]
    assert (await datacube(client, access, name, begin, end))["errcode"] == errcode


async def test_end_date_must_be_over_in_beijing(env: tuple[Sandbox, httpx.AsyncClient]) -> None:
    sandbox, client = env
    access = (await token(client, sandbox))["access_token"]
    yesterday = sandbox.simulator("wechat").yesterday()
    beijing_now = dt.datetime.fromtimestamp(sandbox.clock.now(), dt.timezone(dt.timedelta(hours=8)))
    assert yesterday == beijing_now.date() - dt.timedelta(days=1)
    name = "getweanalysisappiddailysummarytrend"
    assert "list" in await datacube(client, access, name, yesterday)
    assert (await datacube(client, access, name, yesterday + dt.timedelta(days=1)))["errcode"] == 61501


async def test_body_and_route_errors(env: tuple[Sandbox, httpx.AsyncClient]) -> None:
    sandbox, client = env
    access = (await token(client, sandbox))["access_token"]
    bad = await client.post("/wechat/datacube/getweanalysisappidvisitpage", params={"access_token": access},
                            content=b"begin_date=20250312")
    assert bad.json()["errcode"] == 47001
    unknown = await client.post("/wechat/datacube/getweanalysisappidnothing", params={"access_token": access},
                                json={"begin_date": ymd(DAY), "end_date": ymd(DAY)})
    assert unknown.status_code == 404
    assert len(DATACUBE_APIS) == 10


# --------------------------------------------------------------------------- answers and numbers

async def test_answers_carry_the_numbers_of_the_day(env: tuple[Sandbox, httpx.AsyncClient]) -> None:
    sandbox, client = env
    access = (await token(client, sandbox))["access_token"]
    day = sandbox.simulator("wechat").datacube_day(DAY)
    summary = await datacube(client, access, "getweanalysisappiddailysummarytrend", DAY)
    assert summary == {"list": [{"ref_date": "20250312", **day["summary"]}]}
    visit = await datacube(client, access, "getweanalysisappiddailyvisittrend", DAY)
    assert visit == {"list": [{"ref_date": "20250312", **day["visit"]}]}
    retain = await datacube(client, access, "getweanalysisappiddailyretaininfo", DAY)
    assert retain["ref_date"] == "20250312"
    assert retain["visit_uv_new"] == [{"key": int(k), "value": v} for k, v in day["retention"]["visit_uv_new"].items()]
    assert [i["key"] for i in retain["visit_uv"]] == [0, 1, 2, 3, 4, 5, 6, 7, 14, 30]
    assert retain["visit_uv"][0]["value"] == day["visit"]["visit_uv"]
    portrait = await datacube(client, access, "getweanalysisappiduserportrait", DAY)
    assert portrait == {"ref_date": "20250312", **day["portrait"]}
    assert set(portrait["visit_uv"]) == {"province", "city", "genders", "platforms", "ages", "devices"}
    assert set(portrait["visit_uv"]["devices"][0]) == {"name", "value"}
    week = await datacube(client, access, "getweanalysisappiduserportrait", DAY - dt.timedelta(days=6), DAY)
    assert week["ref_date"] == "20250306-20250312" and set(week) == {"ref_date", "visit_uv_new", "visit_uv"}
    distribution = await datacube(client, access, "getweanalysisappidvisitdistribution", DAY)
    assert {e["index"] for e in distribution["list"]} == {"access_source_session_cnt", "access_staytime_info",
                                                          "access_depth_info"}
    pages = await datacube(client, access, "getweanalysisappidvisitpage", DAY)
    assert pages == {"ref_date": "20250312", "list": day["pages"]}


async def test_weeks_and_months(env: tuple[Sandbox, httpx.AsyncClient]) -> None:
    sandbox, client = env
    access = (await token(client, sandbox))["access_token"]
    sim = sandbox.simulator("wechat")
    monday = SUNDAY - dt.timedelta(days=6)
    weekly = await datacube(client, access, "getweanalysisappidweeklyvisittrend", monday, SUNDAY)
    assert weekly == {"list": [{"ref_date": "20250310-20250316", **sim.datacube_day(SUNDAY)["weekly_visit"]}]}
    retain = await datacube(client, access, "getweanalysisappidweeklyretaininfo", monday, SUNDAY)
    assert retain["ref_date"] == "20250310-20250316" and [i["key"] for i in retain["visit_uv"]] == [0, 1, 2, 3, 4]
    monthly = await datacube(client, access, "getweanalysisappidmonthlyvisittrend", dt.date(2025, 2, 1), MONTH_END)
    assert monthly == {"list": [{"ref_date": "202502", **sim.datacube_day(MONTH_END)["monthly_visit"]}]}
    assert "weekly_visit" not in sim.datacube_day(DAY) and "monthly_visit" not in sim.datacube_day(SUNDAY)


async def test_numbers_are_seeded_by_appid_and_day(env: tuple[Sandbox, httpx.AsyncClient], state_dir: Path,
                                                  tmp_path: Path) -> None:
    sandbox, _ = env
    sim = sandbox.simulator("wechat")
    assert Sandbox(state_dir).simulator("wechat").datacube_day(DAY) == sim.datacube_day(DAY)
    assert sim.datacube_day(DAY)["visit"] != sim.datacube_day(DAY - dt.timedelta(days=1))["visit"]
    assert Sandbox(tmp_path / "other").simulator("wechat").datacube_day(DAY)["visit"] != sim.datacube_day(DAY)["visit"]


async def test_retention_keys_appear_as_days_end(env: tuple[Sandbox, httpx.AsyncClient]) -> None:
    sandbox, client = env
    sim = sandbox.simulator("wechat")
    recent = sim.yesterday() - dt.timedelta(days=1)
    assert list(sim.datacube_day(recent)["retention"]["visit_uv"]) == ["0", "1"]
    sandbox.clock.advance(86400)
    assert list(sim.datacube_day(recent)["retention"]["visit_uv"]) == ["0", "1", "2"]
    access = (await token(client, sandbox))["access_token"]
    retain = await datacube(client, access, "getweanalysisappiddailyretaininfo", recent)
    assert [i["key"] for i in retain["visit_uv_new"]] == [0, 1, 2]


async def test_control_route(env: tuple[Sandbox, httpx.AsyncClient]) -> None:
    sandbox, client = env
    generated = sandbox.simulator("wechat").datacube_day(DAY)
    told = {"date": "2025-03-12", "summary": {"visit_total": 1, "share_pv": 2, "share_uv": 3},
            "retention": {"visit_uv": {"0": 10}}}
    response = await client.post("/wechat/_sandbox/datacube", json=told)
    assert response.status_code == 200
    assert response.json()["summary"] == told["summary"] and response.json()["visit"] == generated["visit"]
    assert (await client.get("/wechat/_sandbox/datacube", params={"date": "2025-03-12"})).json() == response.json()
    access = (await token(client, sandbox))["access_token"]
    retain = await datacube(client, access, "getweanalysisappiddailyretaininfo", DAY)
    assert retain == {"ref_date": "20250312", "visit_uv_new": [], "visit_uv": [{"key": 0, "value": 10}]}
    weekly = {"date": SUNDAY.isoformat(), "weekly_visit": {"visit_uv": 5}}
    assert (await client.post("/wechat/_sandbox/datacube", json=weekly)).status_code == 200
    monday = SUNDAY - dt.timedelta(days=6)
    answer = await datacube(client, access, "getweanalysisappidweeklyvisittrend", monday, SUNDAY)
    assert answer == {"list": [{"ref_date": "20250310-20250316", "visit_uv": 5}]}
    await client.delete("/wechat/_sandbox/datacube")
    assert (await client.get("/wechat/_sandbox/datacube", params={"date": "2025-03-12"})).json()["summary"] == \
        generated["summary"]


@pytest.mark.parametrize("body", [
    {"date": "2025/03/12"}, {"date": "2025-03-12", "visitors": {}},
    {"date": "2025-03-12", "summary": {"visit_total": "many"}}, {"date": "2025-03-12", "visit": {"pv": 1}},
    {"date": "2025-03-12", "weekly_visit": {"visit_uv": 1}},          # not a Sunday
    {"date": "2025-03-12", "monthly_retention": {}},                   # not a month end
    {"date": "2025-03-12", "retention": {"visit_uv": {"first": 1}}},
    {"date": "2025-03-12", "portrait": {"visit_uv": {"planet": []}}},
    {"date": "2025-03-12", "distribution": {"access_depth_info": {"1": "x"}}},
    {"date": "2025-03-12", "pages": [{"page_visit_pv": 1}]},
])
async def test_control_route_refuses_malformed_days(env: tuple[Sandbox, httpx.AsyncClient], body: Any) -> None:
    _, client = env
    response = await client.post("/wechat/_sandbox/datacube", json=body)
    assert response.status_code == 400 and response.json()["code"] == "PARAM_ERROR"


async def test_faults(env: tuple[Sandbox, httpx.AsyncClient]) -> None:
    sandbox, client = env
    access = (await token(client, sandbox))["access_token"]
    name = "getweanalysisappidvisitpage"
    await client.post("/wechat/_sandbox/faults", json={"next_call": "http_429", "path": "/datacube"})
    assert (await datacube(client, access, name, DAY))["errcode"] == 45009
    await client.post("/wechat/_sandbox/faults", json={"next_call": "http_500", "path": "/datacube"})
    response = await client.post(f"/wechat/datacube/{name}", params={"access_token": access},
                                 json={"begin_date": ymd(DAY), "end_date": ymd(DAY)})
    assert response.status_code == 500
    await client.post("/wechat/_sandbox/faults", json={"next_call": "timeout", "seconds": 0, "path": "/cgi-bin"})
    assert (await client.get("/wechat/cgi-bin/token", params={"grant_type": "client_credential"})).status_code == 504
    await client.post("/wechat/_sandbox/faults", json={"next_call": "http_429", "path": "/cgi-bin/token"})
    assert (await token(client, sandbox))["errcode"] == 45009
    # an expired token is refused before any fault is used
    await client.post("/wechat/_sandbox/faults", json={"next_call": "http_500", "path": "/datacube"})
    assert (await datacube(client, "unknown", name, DAY))["errcode"] == 40001
    response = await client.post(f"/wechat/datacube/{name}", params={"access_token": access},
                                 json={"begin_date": ymd(DAY), "end_date": ymd(DAY)})
    assert response.status_code == 500

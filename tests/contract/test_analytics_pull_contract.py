"""The analytics-pull contract: every analytics source, against its simulator, behaves the same way.

Pulling a day gives exactly the numbers the simulator was told to report for that day, each row carrying the
source's name and that date; wrong credentials are an ``auth_failed`` decline; an HTTP 500 or a gateway timeout
is an unknown outcome; a day that is not over is an ``invalid_request`` decline (both sources refuse it before
sending: WeChat would refuse it too, Umeng would answer partial numbers); the configuration's repr shows no
secret. A new analytics source passes this file before it is registered.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from minigate.domain.results import StandardCode
from minigate.errors import OutcomeUnknown
from minigate.providers import registry
from minigate.providers.bases.analytics import AnalyticsSource, MetricRow
from minigate.simulators.sandbox import Sandbox

#: a Wednesday in the middle of a month: no weekly or monthly rows
DAY = dt.date(2025, 3, 12)

Expected = set[tuple[str, str, str, float]]


def _datacube_told() -> tuple[str, str, dict[str, Any], Expected]:
    page_numbers = {"page_visit_pv": 213429, "page_visit_uv": 55423, "page_staytime_pv": 8.139198,
                    "entrypage_pv": 117922, "exitpage_pv": 61304, "page_share_pv": 180, "page_share_uv": 166}
    told: dict[str, Any] = {
        "summary": {"visit_total": 391, "share_pv": 572, "share_uv": 383},
        "visit": {"session_cnt": 142549, "visit_pv": 472351, "visit_uv": 55500, "visit_uv_new": 5464,
                  "stay_time_uv": 8.2135, "stay_time_session": 0, "visit_depth": 1.9838},
        "retention": {"visit_uv_new": {"0": 5464, "1": 1200}, "visit_uv": {"0": 55500, "7": 9000}},
        "portrait": {"visit_uv_new": {"province": [{"id": 31, "name": "广东省", "value": 215}],
                                      "devices": [{"name": "iPhone 15", "value": 99}]},
                     "visit_uv": {"genders": [{"id": 1, "name": "男", "value": 2146},
                                              {"id": 2, "name": "女", "value": 1999}]}},
        "distribution": {"access_source_session_cnt": {"10": 2, "1001": 112}, "access_depth_info": {"1": 3}},
        "pages": [{"page_path": "pages/main/main", **page_numbers}],
    }
    expected: Expected = {
        ("daily_summary", "", "visit_total", 391), ("daily_summary", "", "share_pv", 572),
        ("daily_summary", "", "share_uv", 383),
        ("daily_visit", "", "session_cnt", 142549), ("daily_visit", "", "visit_pv", 472351),
        ("daily_visit", "", "visit_uv", 55500), ("daily_visit", "", "visit_uv_new", 5464),
        ("daily_visit", "", "stay_time_uv", 8.2135), ("daily_visit", "", "stay_time_session", 0),
        ("daily_visit", "", "visit_depth", 1.9838),
        ("daily_retention", "retention_day:0", "visit_uv_new", 5464),
        ("daily_retention", "retention_day:1", "visit_uv_new", 1200),
        ("daily_retention", "retention_day:0", "visit_uv", 55500),
        ("daily_retention", "retention_day:7", "visit_uv", 9000),
        ("user_portrait", "province:广东省", "visit_uv_new", 215),
        ("user_portrait", "devices:iPhone 15", "visit_uv_new", 99),
        ("user_portrait", "genders:男", "visit_uv", 2146), ("user_portrait", "genders:女", "visit_uv", 1999),
        ("visit_distribution", "access_source_session_cnt:10", "count", 2),
        ("visit_distribution", "access_source_session_cnt:1001", "count", 112),
        ("visit_distribution", "access_depth_info:1", "count", 3),
        *(("visit_page", "page:pages/main/main", key, value) for key, value in page_numbers.items()),
    }
    return "wechat", "/wechat/_sandbox/datacube", told, expected


def _umeng_told() -> tuple[str, str, dict[str, Any], Expected]:
    told: dict[str, Any] = {
        "overview": {"newUser": 12, "activeUser": 340, "launch": 512, "visitTimes": 2048, "onceDuration": "83.25",
                     "dailyDuration": "00:03:20"},
        "total_user": 98765,
        "retention": {"newuser": {"value": 12, "v1": "5", "v7": "2", "v30": ""},
                      "activeUser": {"value": 340, "v1": "201", "v14": "77"}},
    }
    expected: Expected = {
        ("overview", "", "new_user", 12), ("overview", "", "active_user", 340), ("overview", "", "launch", 512),
        ("overview", "", "visit_times", 2048), ("overview", "", "once_duration", 83.25),
        ("overview", "", "daily_duration", 200),
        ("total_user", "", "total_user", 98765),
        ("retention", "retention_day:0", "new_user", 12), ("retention", "retention_day:1", "new_user", 5),
        ("retention", "retention_day:7", "new_user", 2),
        ("retention", "retention_day:0", "active_user", 340), ("retention", "retention_day:1", "active_user", 201),
        ("retention", "retention_day:14", "active_user", 77),
    }
    return "umeng", "/umeng/_sandbox/data", told, expected


#: source -> (simulator, control route, what it is told for DAY, the rows expected), and its secret field
DRIVERS: dict[str, tuple[Callable[[], tuple[str, str, dict[str, Any], Expected]], str]] = {
    "wechat-datacube": (_datacube_told, "app_secret"),
    "umeng": (_umeng_told, "api_security"),
}


@dataclass
class Harness:
    name: str
    sandbox: Sandbox
    client: httpx.AsyncClient
    config: dict[str, Any]
    source: AnalyticsSource

    @property
    def spec(self) -> registry.AnalyticsSpec:
        spec = registry.analytics_source_specs()[self.name]
        return spec

    def build(self, **override: Any) -> AnalyticsSource:
        source: AnalyticsSource = self.spec.build(self.config | override, self.client)
        return source


def test_every_registered_source_has_a_driver() -> None:
    assert set(registry.analytics_source_specs()) == set(DRIVERS)


@pytest.fixture(scope="module")
def state_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("sandbox")      # credentials are made once for the module


@pytest.fixture(params=sorted(registry.analytics_source_specs()))
async def h(request: pytest.FixtureRequest, state_dir: Path) -> AsyncIterator[Harness]:
    name = str(request.param)
    sandbox = Sandbox(state_dir)
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=sandbox.app), base_url="http://sandbox")
    spec = registry.analytics_source_specs()[name]
    config = spec.sandbox(registry.SandboxContext(credentials=sandbox.credentials, base_url="http://sandbox",
                                                  browser_url="http://sandbox"))
    yield Harness(name, sandbox, client, config, spec.build(config, client))
    await sandbox.aclose()
    await client.aclose()


def _facts(rows: list[MetricRow]) -> Expected:
    return {(r.metric, r.dimension, r.key, r.value) for r in rows}


async def test_a_day_gives_exactly_what_the_simulator_was_told(h: Harness) -> None:
    _, route, told, expected = DRIVERS[h.name][0]()
    response = await h.client.post(route, json={"date": DAY.isoformat(), **told})
    assert response.status_code == 200, response.text
    result = await h.source.pull(DAY)
    assert result.ok and result.value is not None, result
    assert _facts(result.value) == expected
    assert len(result.value) == len(expected)            # no (metric, dimension, key) twice


async def test_every_row_names_the_source_and_the_day(h: Harness) -> None:
    result = await h.source.pull(DAY)
    assert result.ok and result.value, result
    assert {r.source for r in result.value} == {h.name} == {h.source.name}
    assert {r.ref_date for r in result.value} == {DAY}
    assert {r.metric for r in result.value} <= set(type(h.source).metrics)
    keys = [(r.metric, r.dimension, r.key) for r in result.value]
    assert len(keys) == len(set(keys))


async def test_another_day_gives_other_numbers(h: Harness) -> None:
    first, second = await h.source.pull(DAY), await h.source.pull(DAY - dt.timedelta(days=1))
    assert first.ok and second.ok and first.value and second.value
    assert _facts(first.value) != _facts(second.value)


async def test_wrong_credentials_are_auth_failed(h: Harness) -> None:
    secret_field = DRIVERS[h.name][1]
    bad = h.build(**{secret_field: "x" * len(str(h.config[secret_field]))})
    result = await bad.pull(DAY)
    assert not result.ok and result.code is StandardCode.AUTH_FAILED, result
    assert result.provider_code


@pytest.mark.parametrize("fault", ["http_500", "timeout"])
async def test_a_failed_or_lost_answer_is_an_unknown_outcome(h: Harness, fault: str) -> None:
    await h.source.pull(DAY - dt.timedelta(days=2))       # (a token, where the source needs one, is cached)
    response = await h.client.post(f"/{DRIVERS[h.name][0]()[0]}/_sandbox/faults",
                                   json={"next_call": fault, "seconds": 0})
    assert response.status_code == 200
    with pytest.raises(OutcomeUnknown):
        await h.source.pull(DAY)
    again = await h.source.pull(DAY)                      # one fault, one failed pull
    assert again.ok


async def test_a_day_that_is_not_over_is_invalid_request(h: Harness) -> None:
    today = dt.datetime.now(dt.timezone(dt.timedelta(hours=8))).date()
    for day in (today, today + dt.timedelta(days=30)):
        result = await h.source.pull(day)
        assert not result.ok and result.code is StandardCode.INVALID_REQUEST, result


async def test_the_configuration_repr_hides_secrets(h: Harness) -> None:
    secret_field = DRIVERS[h.name][1]
    secret = str(h.config[secret_field])
    model = h.spec.config_model()(**h.config)
    for text in (repr(model), str(model), repr(h.source.config), str(h.source.config), model.model_dump_json()):
        assert secret not in text
    assert "**********" in repr(model)

"""WeChat datacube source: the parse functions on the documented answer shapes (service-protocols.md §3.4), the
periods a pull covers, the access-token cache and the errcode mapping (httpx.MockTransport)."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import traceback
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from pydantic import SecretStr, ValidationError

from minigate.domain.results import StandardCode
from minigate.errors import OutcomeUnknown, ProviderUnavailable
from minigate.providers.bases.analytics import MetricRow
from minigate.providers.wechat.datacube import (
    API_NAMES,
    WeChatDatacubeConfig,
    WeChatDatacubeSource,
    month_period,
    parse_distribution,
    parse_portrait,
    parse_retention,
    parse_summary,
    parse_visit_page,
    parse_visit_trend,
    week_period,
)

DAY = dt.date(2017, 3, 13)                      # a Monday, the day of WeChat's documentation examples
SECRET = "8d3c7f1e0b2a49c6a5f4e3d2c1b0a9f8"
NOW = dt.datetime(2017, 4, 10, 4, tzinfo=dt.UTC).timestamp()


def facts(rows: list[MetricRow]) -> set[tuple[str, str, str, float]]:
    return {(r.metric, r.dimension, r.key, r.value) for r in rows}


# --------------------------------------------------------------------------- parsing

def test_summary_and_visit_trend_read_the_list_item_of_the_day() -> None:
    summary = {"list": [{"ref_date": "20170313", "visit_total": 391, "share_pv": 572, "share_uv": 383}]}
    assert parse_summary(summary, DAY) == [
        MetricRow("wechat-datacube", "daily_summary", DAY, "", "visit_total", 391.0),
        MetricRow("wechat-datacube", "daily_summary", DAY, "", "share_pv", 572.0),
        MetricRow("wechat-datacube", "daily_summary", DAY, "", "share_uv", 383.0)]
    visit = {"list": [{"ref_date": "20170313", "session_cnt": 142549, "visit_pv": 472351, "visit_uv": 55500,
                       "visit_uv_new": 5464, "stay_time_session": 0, "visit_depth": 1.9838}]}
    assert facts(parse_visit_trend(visit, DAY)) == {
        ("daily_visit", "", "session_cnt", 142549), ("daily_visit", "", "visit_pv", 472351),
        ("daily_visit", "", "visit_uv", 55500), ("daily_visit", "", "visit_uv_new", 5464),
        ("daily_visit", "", "stay_time_session", 0), ("daily_visit", "", "visit_depth", 1.9838)}
    assert parse_summary({"list": [{"ref_date": "20170312", "visit_total": 1}]}, DAY) == []
    assert parse_summary({"list": []}, DAY) == []
    with pytest.raises(ValueError):
        parse_summary({"errcode": 0}, DAY)


def test_weekly_and_monthly_trends_match_their_period_ref_date() -> None:
    sunday = dt.date(2017, 3, 12)
    week = {"list": [{"ref_date": "20170306-20170312", "session_cnt": 986780, "visit_uv": 3},
                     {"ref_date": "20170227-20170305", "session_cnt": 1}]}
    rows = parse_visit_trend(week, sunday, metric="weekly_visit", period=week_period(sunday))
    assert facts(rows) == {("weekly_visit", "", "session_cnt", 986780), ("weekly_visit", "", "visit_uv", 3)}
    assert {r.ref_date for r in rows} == {sunday}
    month_end = dt.date(2017, 2, 28)
    month = {"list": [{"ref_date": "201702", "visit_pv": 126803}]}
    assert facts(parse_visit_trend(month, month_end, metric="monthly_visit", period=month_period(month_end))) == {
        ("monthly_visit", "", "visit_pv", 126803)}


def test_retention_rows_per_key_and_measure() -> None:
    answer = {"ref_date": "20170313", "visit_uv_new": [{"key": 0, "value": 5464}, {"key": 1, "value": 1200}],
              "visit_uv": [{"key": 0, "value": 55500}, {"key": "bad", "value": 1}]}
    assert facts(parse_retention(answer, DAY)) == {
        ("daily_retention", "retention_day:0", "visit_uv_new", 5464),
        ("daily_retention", "retention_day:1", "visit_uv_new", 1200),
        ("daily_retention", "retention_day:0", "visit_uv", 55500)}
    assert parse_retention(answer | {"ref_date": "20170314"}, DAY) == []
    weekly = {"ref_date": "20170306-20170312", "visit_uv_new": [{"key": 2, "value": 7}], "visit_uv": []}
    sunday = dt.date(2017, 3, 12)
    assert facts(parse_retention(weekly, sunday, metric="weekly_retention", period=week_period(sunday))) == {
        ("weekly_retention", "retention_week:2", "visit_uv_new", 7)}
    monthly = {"ref_date": "201702", "visit_uv_new": [], "visit_uv": [{"key": 1, "value": 9}]}
    end = dt.date(2017, 2, 28)
    assert facts(parse_retention(monthly, end, metric="monthly_retention", period=month_period(end))) == {
        ("monthly_retention", "retention_month:1", "visit_uv", 9)}
    with pytest.raises(ValueError):
        parse_retention({"ref_date": "20170313", "visit_uv_new": []}, DAY)


def test_portrait_rows_by_breakdown_name_with_duplicates_added_up() -> None:
    section = {"province": [{"id": 31, "name": "广东省", "value": 215}, {"id": 31, "name": "广东省", "value": 5}],
               "city": [{"id": 3, "name": "", "value": 4}],
               "genders": [{"id": 1, "name": "男", "value": 2146}],
               "devices": [{"name": "OPPO R9", "value": 61}]}
    answer = {"ref_date": "20170313", "visit_uv_new": section, "visit_uv": {"ages": [{"id": 1, "name": "17岁以下",
                                                                                       "value": 151}]}}
    assert facts(parse_portrait(answer, DAY)) == {
        ("user_portrait", "province:广东省", "visit_uv_new", 220), ("user_portrait", "city:3", "visit_uv_new", 4),
        ("user_portrait", "genders:男", "visit_uv_new", 2146),
        ("user_portrait", "devices:OPPO R9", "visit_uv_new", 61), ("user_portrait", "ages:17岁以下", "visit_uv", 151)}
    with pytest.raises(ValueError):
        parse_portrait({"ref_date": "20170313", "visit_uv_new": section}, DAY)


def test_distribution_and_pages() -> None:
    distribution = {"ref_date": "20170313", "list": [
        {"index": "access_source_session_cnt", "item_list": [{"key": 10, "value": 5}, {"key": 8, "value": 687}]},
        {"index": "access_staytime_info", "item_list": [{"key": 1, "value": 3}]}]}
    assert facts(parse_distribution(distribution, DAY)) == {
        ("visit_distribution", "access_source_session_cnt:10", "count", 5),
        ("visit_distribution", "access_source_session_cnt:8", "count", 687),
        ("visit_distribution", "access_staytime_info:1", "count", 3)}
    pages = {"ref_date": "20170313", "list": [
        {"page_path": "pages/main/main", "page_visit_pv": 213429, "page_visit_uv": 55423, "page_staytime_pv": 8.139198,
         "entrypage_pv": 117922, "exitpage_pv": 61304, "page_share_pv": 180, "page_share_uv": 166},
        {"page_path": "", "page_visit_pv": 1}]}
    rows = parse_visit_page(pages, DAY)
    assert len(rows) == 7 and {r.dimension for r in rows} == {"page:pages/main/main"}
    assert ("visit_page", "page:pages/main/main", "page_staytime_pv", 8.139198) in facts(rows)


def test_periods() -> None:
    assert week_period(dt.date(2017, 3, 8)) == (dt.date(2017, 3, 6), dt.date(2017, 3, 12))
    assert week_period(dt.date(2017, 3, 12)) == (dt.date(2017, 3, 6), dt.date(2017, 3, 12))
    assert month_period(dt.date(2016, 2, 10)) == (dt.date(2016, 2, 1), dt.date(2016, 2, 29))
    assert month_period(dt.date(2017, 12, 31)) == (dt.date(2017, 12, 1), dt.date(2017, 12, 31))


# --------------------------------------------------------------------------- source

def config(**override: Any) -> WeChatDatacubeConfig:
    values: dict[str, Any] = {"appid": "wx1234567890abcdef", "app_secret": SecretStr(SECRET),
                              "base_url": "http://sandbox/wechat"}
    return WeChatDatacubeConfig(**(values | override))


def source(handler: Callable[[httpx.Request], httpx.Response], *, clock: Callable[[], float] = lambda: NOW,
           **override: Any) -> WeChatDatacubeSource:
    return WeChatDatacubeSource(config(**override), httpx.AsyncClient(transport=httpx.MockTransport(handler)),
                                clock=clock)


def test_the_plan_adds_the_week_on_sundays_and_the_month_on_month_ends() -> None:
    src = source(lambda r: httpx.Response(599))
    assert [m for m, _, _ in src.plan(DAY)] == list(API_NAMES)[:6]
    sunday_month_end = dt.date(2017, 4, 30)
    plan = src.plan(sunday_month_end)
    assert plan[6:] == [("weekly_visit", dt.date(2017, 4, 24), sunday_month_end),
                        ("weekly_retention", dt.date(2017, 4, 24), sunday_month_end),
                        ("monthly_visit", dt.date(2017, 4, 1), sunday_month_end),
                        ("monthly_retention", dt.date(2017, 4, 1), sunday_month_end)]
    lean = source(lambda r: httpx.Response(599), periods=False, metrics=("daily_visit",))
    assert lean.plan(sunday_month_end) == [("daily_visit", sunday_month_end, sunday_month_end)]
    with pytest.raises(ValidationError):
        config(metrics=("weekly_visit",))
    assert SECRET not in repr(config()) and SECRET not in str(config())


def answer(body: Any, status: int = 200) -> httpx.Response:
    return httpx.Response(status, content=json.dumps(body).encode(), headers={"content-type": "application/json"})


class Fake:
    """A token endpoint and datacube answers; ``refuse`` holds errcodes the next datacube calls get."""

    def __init__(self) -> None:
        self.seen: list[httpx.Request] = []
        self.issued = 0
        self.refuse: list[int] = []
        self.token_answer: dict[str, Any] | None = None

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.seen.append(request)
        if request.url.path.endswith("/cgi-bin/token") or request.url.path.endswith("/cgi-bin/stable_token"):
            if self.token_answer is not None:
                return answer(self.token_answer)
            self.issued += 1
            return answer({"access_token": f"TOKEN{self.issued}", "expires_in": 7200})
        if self.refuse:
            return answer({"errcode": self.refuse.pop(0), "errmsg": "refused"})
        body = json.loads(request.content)
        assert body == {"begin_date": "20170313", "end_date": "20170313"}
        return answer({"ref_date": "20170313", "list": [], "visit_uv_new": [], "visit_uv": []}
                      if "visitpage" not in request.url.path else {"ref_date": "20170313", "list": []})

    def datacube_calls(self) -> list[httpx.Request]:
        return [r for r in self.seen if "/datacube/" in r.url.path]


async def test_one_token_serves_a_pull_and_is_cached_until_the_margin() -> None:
    fake = Fake()
    now = [NOW]
    src = source(fake, clock=lambda: now[0], metrics=("daily_visit", "daily_summary"))
    assert (await src.pull(DAY)).ok and (await src.pull(DAY)).ok
    token_calls = [r for r in fake.seen if r.url.path.endswith("/cgi-bin/token")]
    assert len(token_calls) == 1 and src.token_fetches == 1
    assert dict(token_calls[0].url.params) == {"grant_type": "client_credential", "appid": "wx1234567890abcdef",
                                               "secret": SECRET}
    assert {r.url.params["access_token"] for r in fake.datacube_calls()} == {"TOKEN1"}
    assert [r.url.path for r in fake.datacube_calls()[:2]] == [
        "/wechat/datacube/getweanalysisappiddailysummarytrend", "/wechat/datacube/getweanalysisappiddailyvisittrend"]
    now[0] += 7200 - 300 + 1                              # inside the refresh margin
    assert (await src.pull(DAY)).ok and src.token_fetches == 2


async def test_concurrent_pulls_share_one_token_fetch() -> None:
    fake = Fake()
    src = source(fake, metrics=("daily_visit",))
    results = await asyncio.gather(*(src.pull(DAY) for _ in range(5)))
    assert all(r.ok for r in results) and src.token_fetches == 1


@pytest.mark.parametrize("errcode", [40001, 40014, 42001])
async def test_a_refused_token_is_fetched_again_once(errcode: int) -> None:
    fake = Fake()
    src = source(fake, metrics=("daily_visit",))
    fake.refuse = [errcode]
    assert (await src.pull(DAY)).ok and src.token_fetches == 2
    assert [r.url.params["access_token"] for r in fake.datacube_calls()] == ["TOKEN1", "TOKEN2"]
    fake.refuse = [errcode, errcode]                       # still refused after the new token
    result = await src.pull(DAY)
    assert not result.ok and result.code is StandardCode.AUTH_FAILED and result.provider_code == str(errcode)
    assert src.token_fetches == 3


async def test_stable_token_endpoint_and_forced_refresh_after_a_refusal() -> None:
    fake = Fake()
    src = source(fake, metrics=("daily_visit",), token_endpoint="stable_token")
    fake.refuse = [40001]
    assert (await src.pull(DAY)).ok
    bodies = [json.loads(r.content) for r in fake.seen if r.url.path.endswith("/cgi-bin/stable_token")]
    assert bodies == [{"grant_type": "client_credential", "appid": "wx1234567890abcdef", "secret": SECRET,
                       "force_refresh": False},
                      {"grant_type": "client_credential", "appid": "wx1234567890abcdef", "secret": SECRET,
                       "force_refresh": True}]


@pytest.mark.parametrize(("errcode", "code"), [(40013, StandardCode.AUTH_FAILED), (40125, StandardCode.AUTH_FAILED),
                                               (40164, StandardCode.AUTH_FAILED), (45009, StandardCode.RATE_LIMITED),
                                               (99999, StandardCode.DECLINED)])
async def test_token_refusals_are_declines(errcode: int, code: StandardCode) -> None:
    fake = Fake()
    fake.token_answer = {"errcode": errcode, "errmsg": "no"}
    result = await source(fake).pull(DAY)
    assert not result.ok and result.code is code and result.provider_code == str(errcode)
    assert fake.datacube_calls() == []


@pytest.mark.parametrize(("errcode", "code"), [(45009, StandardCode.RATE_LIMITED),
                                               (61500, StandardCode.INVALID_REQUEST),
                                               (61501, StandardCode.INVALID_REQUEST),
                                               (48001, StandardCode.AUTH_FAILED)])
async def test_datacube_refusals_decline_the_whole_day(errcode: int, code: StandardCode) -> None:
    fake = Fake()
    fake.refuse = [errcode]
    result = await source(fake).pull(DAY)
    assert not result.ok and result.code is code and result.value is None
    assert len(fake.datacube_calls()) == 1


async def test_configured_errcodes_override_the_table() -> None:
    fake = Fake()
    fake.refuse = [61500]
    result = await source(fake, error_codes={61500: "declined"}).pull(DAY)
    assert not result.ok and result.code is StandardCode.DECLINED


@pytest.mark.parametrize("reply", [answer({"errcode": -1, "errmsg": "system error"}),
                                   httpx.Response(502, content=b"bad gateway"),
                                   httpx.Response(200, content=b"<html></html>"),
                                   answer({"errcode": "x"}),
                                   answer({"ref_date": "20170313"})])          # no list
async def test_unknown_outcomes_raise(reply: httpx.Response) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if "/cgi-bin/" in request.url.path:
            return answer({"access_token": "T", "expires_in": 7200})
        return reply

    with pytest.raises(ProviderUnavailable):
        await source(handler, metrics=("visit_page",)).pull(DAY)


async def test_a_lost_token_answer_leaks_neither_secret_nor_url() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout(f"timed out reading {request.url}", request=request)

    with pytest.raises(OutcomeUnknown) as caught:
        await source(handler).pull(DAY)
    text = "".join(traceback.format_exception(caught.value))
    assert SECRET not in text and "secret=" not in text
    assert caught.value.__cause__ is None and caught.value.__suppress_context__


async def test_a_day_not_over_is_declined_without_a_call() -> None:
    fake = Fake()
    beijing_today = dt.datetime.fromtimestamp(NOW, dt.timezone(dt.timedelta(hours=8))).date()
    result = await source(fake).pull(beijing_today)
    assert not result.ok and result.code is StandardCode.INVALID_REQUEST and fake.seen == []

"""Umeng+ OpenAPI: the AOP signer (service-protocols.md §5 cross-check value), request building, answer parsing
and refusal mapping -- pure code, with httpx.MockTransport where an answer is needed."""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qsl

import httpx
import pytest
from pydantic import SecretStr, ValidationError

from minigate.domain.results import StandardCode
from minigate.errors import OutcomeUnknown, ProviderUnavailable
from minigate.providers.bases.analytics import MetricRow
from minigate.providers.umeng import signing
from minigate.providers.umeng.config import UmengConfig
from minigate.providers.umeng.provider import (
    OVERVIEW,
    RETENTION,
    TOTAL_USER,
    UmengSource,
    parse_overview,
    parse_retention,
    parse_seconds,
    parse_total_user,
)

SECURITY = "apiSecurityX"
PATH = "param2/1/com.umeng.umini/umeng.umini.getOverview/1234567"
VECTOR_PARAMS = {"dataSourceId": "5f0000000000000000000000", "fromDate": "2020-03-10", "toDate": "2020-03-31",
                 "timeUnit": "day", "indicators": "newUser,activeUser"}
DAY = dt.date(2025, 3, 12)
NOON = dt.datetime(2025, 3, 20, 12, tzinfo=dt.UTC).timestamp()


# --------------------------------------------------------------------------- signing

def test_cross_check_value_of_section_5() -> None:
    path = signing.url_path("com.umeng.umini", "umeng.umini.getOverview", "1234567")
    assert path == PATH
    assert signing.sign(path, VECTOR_PARAMS, SECURITY) == "4EC073D9C8A893319D2ED86DDCA88BC628BEB762"


def test_string_to_sign_is_the_path_then_sorted_name_value_pairs_unencoded() -> None:
    assert signing.string_to_sign(PATH, VECTOR_PARAMS) == (
        PATH + "dataSourceId5f0000000000000000000000fromDate2020-03-10indicatorsnewUser,activeUser"
        "timeUnitdaytoDate2020-03-31")
    # insertion order does not matter; values are not URL-encoded (the comma above, the space and 中文 here)
    reordered = dict(reversed(list(VECTOR_PARAMS.items())))
    assert signing.sign(PATH, reordered, SECURITY) == signing.sign(PATH, VECTOR_PARAMS, SECURITY)
    assert signing.string_to_sign("p", {"b": "中 文", "a": "x&y"}) == "pax&yb中 文"


def test_the_sort_is_over_name_plus_value_strings_as_the_official_sdk_does() -> None:
    # "ab"+"c" = "abc" sorts before "a"+"z" = "az", although the name "a" sorts before "ab"
    assert signing.string_to_sign("p", {"a": "z", "ab": "c"}) == "pabcaz"
    expected = hmac.new(b"k", b"pabcaz", hashlib.sha1).hexdigest().upper()
    assert signing.sign("p", {"a": "z", "ab": "c"}, "k") == expected


def test_the_signature_itself_is_left_out_and_the_timestamp_is_signed() -> None:
    with_signature = VECTOR_PARAMS | {signing.SIGNATURE_PARAM: "ANYTHING"}
    assert signing.sign(PATH, with_signature, SECURITY) == "4EC073D9C8A893319D2ED86DDCA88BC628BEB762"
    stamped = VECTOR_PARAMS | {signing.TIMESTAMP_PARAM: "1700000000000"}
    assert signing.string_to_sign(PATH, stamped).startswith(PATH + "_aop_timestamp1700000000000dataSourceId")
    assert signing.sign(PATH, stamped, SECURITY) != "4EC073D9C8A893319D2ED86DDCA88BC628BEB762"


def test_verify_is_exact_but_not_case_sensitive() -> None:
    good = "4EC073D9C8A893319D2ED86DDCA88BC628BEB762"
    assert signing.verify(good, PATH, VECTOR_PARAMS, SECURITY)
    assert signing.verify(good.lower(), PATH, VECTOR_PARAMS, SECURITY)
    assert not signing.verify(good[:-1] + "3", PATH, VECTOR_PARAMS, SECURITY)
    assert not signing.verify(good, PATH, VECTOR_PARAMS | {"timeUnit": "week"}, SECURITY)
    assert not signing.verify(good, PATH.replace("1234567", "7654321"), VECTOR_PARAMS, SECURITY)
    assert not signing.verify("", PATH, VECTOR_PARAMS, SECURITY)
    assert not signing.verify("非十六进制", PATH, VECTOR_PARAMS, SECURITY)


# --------------------------------------------------------------------------- configuration and building

def config(**override: Any) -> UmengConfig:
    values: dict[str, Any] = {"api_key": "1234567", "api_security": SecretStr(SECURITY),
                              "data_source_id": "5f0000000000000000000000", "base_url": "http://sandbox/umeng"}
    return UmengConfig(**(values | override))


def source(handler: Callable[[httpx.Request], httpx.Response] | None = None, **override: Any) -> UmengSource:
    transport = httpx.MockTransport(handler or (lambda request: httpx.Response(599)))
    return UmengSource(config(**override), httpx.AsyncClient(transport=transport), clock=lambda: NOON)


def test_config_hides_the_secret_and_checks_its_fields() -> None:
    cfg = config()
    assert SECURITY not in repr(cfg) and SECURITY not in str(cfg) and SECURITY not in cfg.model_dump_json()
    with pytest.raises(ValidationError):
        config(api_key="12/34")                          # it is a URL path segment
    with pytest.raises(ValidationError):
        config(error_codes={"400": "nonsense"})
    with pytest.raises(ValidationError):
        config(unknown_field=1)
    assert config(base_url="https://gateway.open.umeng.com").problems() == []
    assert "base_url must be https:// in live mode" in cfg.problems()


def test_post_request_is_a_signed_form_at_the_openapi_path() -> None:
    src = source()
    request = src.build(OVERVIEW, src.params(OVERVIEW, DAY, indicators="newUser"))
    assert request.method == "POST"
    assert str(request.url) == f"http://sandbox/umeng/openapi/{PATH}"
    assert request.headers["content-type"].startswith("application/x-www-form-urlencoded")
    form = dict(parse_qsl(request.content.decode()))
    assert form == {"dataSourceId": "5f0000000000000000000000", "fromDate": "2025-03-12", "toDate": "2025-03-12",
                    "timeUnit": "day", "indicators": "newUser", "_aop_signature": form["_aop_signature"]}
    assert form["_aop_signature"] == signing.sign(PATH, form, SECURITY)
    assert SECURITY not in request.content.decode() and SECURITY not in str(request.url)


def test_get_request_and_the_optional_timestamp() -> None:
    src = source(http_method="GET", send_timestamp=True)
    request = src.build(TOTAL_USER, src.params(TOTAL_USER, DAY))
    assert request.method == "GET" and request.content == b""
    query = dict(request.url.params)
    assert query["_aop_timestamp"] == str(int(NOON * 1000))
    assert "timeUnit" not in query                       # getTotalUser takes no timeUnit
    path = PATH.replace(OVERVIEW, TOTAL_USER)
    assert request.url.path == f"/umeng/openapi/{path}"
    assert signing.verify(query["_aop_signature"], path, query, SECURITY)


# --------------------------------------------------------------------------- parsing

def overview_page(*items: dict[str, Any]) -> dict[str, Any]:
    return {"currentPage": 1, "totalCount": len(items), "data": list(items)}


def test_parse_overview_reads_every_indicator_of_the_day() -> None:
    data = overview_page({"dateTime": "2025-03-11", "newUser": 1},
                         {"dateTime": "2025-03-12", "newUser": 12, "activeUser": 340, "launch": 512,
                          "visitTimes": 2048, "onceDuration": "83.25", "dailyDuration": "01:02:03"})
    rows = parse_overview(data, DAY)
    assert rows == [MetricRow("umeng", "overview", DAY, "", "new_user", 12.0),
                    MetricRow("umeng", "overview", DAY, "", "active_user", 340.0),
                    MetricRow("umeng", "overview", DAY, "", "launch", 512.0),
                    MetricRow("umeng", "overview", DAY, "", "visit_times", 2048.0),
                    MetricRow("umeng", "overview", DAY, "", "once_duration", 83.25),
                    MetricRow("umeng", "overview", DAY, "", "daily_duration", 3723.0)]
    assert parse_overview(overview_page({"dateTime": "20250312", "newUser": "7"}), DAY, source="x") == [
        MetricRow("x", "overview", DAY, "", "new_user", 7.0)]
    assert parse_overview(overview_page(), DAY) == []
    with pytest.raises(ValueError):
        parse_overview({"currentPage": 1}, DAY)


@pytest.mark.parametrize(("text", "seconds"), [("83.25", 83.25), (12, 12.0), ("00:01:23", 83.0), ("2:03", 123.0),
                                               ("1:00:00.5", 3600.5), ("", None), ("-", None), ("1:2:3:4", None),
                                               ("ab:cd", None), (None, None), (True, None)])
def test_durations_are_seconds_or_clock_text(text: Any, seconds: float | None) -> None:
    assert parse_seconds(text) == seconds


def test_parse_total_user_takes_a_plain_list() -> None:
    data = [{"dateTime": "2025-03-12", "totalUser": 98765}]
    assert parse_total_user(data, DAY) == [MetricRow("umeng", "total_user", DAY, "", "total_user", 98765.0)]
    assert parse_total_user([{"dateTime": "2025-03-12", "totalUser": None}], DAY) == []
    assert parse_total_user(overview_page({"dateTime": "2025-03-12", "totalUser": 3}), DAY)[0].value == 3.0


def test_parse_retention_keeps_the_days_umeng_has() -> None:
    data = overview_page({"dateTime": "2025-03-12", "value": 340, "v1": "201", "v2": "", "v3": "-", "v7": "99",
                          "v30": None, "other": "1"})
    assert parse_retention(data, DAY, "active_user") == [
        MetricRow("umeng", "retention", DAY, "retention_day:0", "active_user", 340.0),
        MetricRow("umeng", "retention", DAY, "retention_day:1", "active_user", 201.0),
        MetricRow("umeng", "retention", DAY, "retention_day:7", "active_user", 99.0)]


# --------------------------------------------------------------------------- answers and pulls

def json_answer(status: int, body: Any) -> httpx.Response:
    return httpx.Response(status, content=json.dumps(body).encode(), headers={"content-type": "application/json"})


def success(data: Any) -> httpx.Response:
    return json_answer(200, {"data": data, "code": 200, "msg": "success", "success": True})


def by_api(answers: dict[str, httpx.Response], seen: list[httpx.Request]) -> Callable[[httpx.Request], httpx.Response]:
    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return answers[request.url.path.split("/")[-2]]
    return handler


async def test_a_pull_asks_each_api_once_and_collects_its_rows() -> None:
    seen: list[httpx.Request] = []
    answers = {OVERVIEW: success(overview_page({"dateTime": "2025-03-12", "newUser": 3})),
               TOTAL_USER: success([{"dateTime": "2025-03-12", "totalUser": 50}]),
               RETENTION: success(overview_page({"dateTime": "2025-03-12", "value": 3, "v1": "1"}))}
    result = await source(by_api(answers, seen)).pull(DAY)
    assert result.ok and result.value is not None
    assert {(r.metric, r.dimension, r.key, r.value) for r in result.value} == {
        ("overview", "", "new_user", 3), ("total_user", "", "total_user", 50),
        ("retention", "retention_day:0", "new_user", 3), ("retention", "retention_day:1", "new_user", 1),
        ("retention", "retention_day:0", "active_user", 3), ("retention", "retention_day:1", "active_user", 1)}
    forms = [dict(parse_qsl(r.content.decode())) for r in seen]
    assert [f.get("indicator") for f in forms] == [None, None, "newuser", "activeUser"]
    assert forms[0]["indicators"] == "newUser,activeUser,launch,visitTimes,onceDuration,dailyDuration"
    assert forms[2]["valueType"] == "num" and forms[2]["timeUnit"] == "day"


async def test_options_skip_total_user_and_retention() -> None:
    seen: list[httpx.Request] = []
    answers = {OVERVIEW: success(overview_page())}
    result = await source(by_api(answers, seen), pull_total_user=False, retention_indicators={}).pull(DAY)
    assert result.ok and result.value == [] and len(seen) == 1


async def test_a_day_not_over_in_beijing_is_declined_without_a_call() -> None:
    seen: list[httpx.Request] = []
    src = source(by_api({}, seen))
    beijing_today = dt.datetime.fromtimestamp(NOON, dt.timezone(dt.timedelta(hours=8))).date()
    for day in (beijing_today, beijing_today + dt.timedelta(days=1)):
        result = await src.pull(day)
        assert not result.ok and result.code is StandardCode.INVALID_REQUEST and result.provider_code is None
    assert seen == []
    # 2025-03-20 00:30 in Beijing is still 2025-03-19 in UTC: the 19th is over in Beijing
    late = UmengSource(config(), httpx.AsyncClient(transport=httpx.MockTransport(by_api({}, seen))),
                       clock=lambda: dt.datetime(2025, 3, 19, 16, 30, tzinfo=dt.UTC).timestamp())
    assert late.is_over(dt.date(2025, 3, 19)) and not late.is_over(dt.date(2025, 3, 20))


@pytest.mark.parametrize(("answer", "code", "provider_code"), [
    (json_answer(400, {"error_code": "gw.SignatureInvalid", "error_message": "bad", "exception": "bad"}),
     StandardCode.AUTH_FAILED, "gw.SignatureInvalid"),
    (json_answer(400, {"error_code": "gw.AppKeyNotFound", "error_message": "no"}), StandardCode.AUTH_FAILED,
     "gw.AppKeyNotFound"),
    (json_answer(400, {"error_code": "gw.QosAppFrequencyLimit", "error_message": "slow"}),
     StandardCode.RATE_LIMITED, "gw.QosAppFrequencyLimit"),
    (json_answer(400, {"error_code": "gw.SomethingNew", "error_message": "?"}), StandardCode.DECLINED,
     "gw.SomethingNew"),
    (json_answer(200, {"success": False, "code": 400, "msg": "fromDate must be yyyy-MM-dd"}),
     StandardCode.INVALID_REQUEST, "400"),
    (json_answer(200, {"success": False, "code": 403, "msg": "no permission"}), StandardCode.AUTH_FAILED, "403"),
])
async def test_refusals_are_declines(answer: httpx.Response, code: StandardCode, provider_code: str) -> None:
    result = await source(lambda request: answer).pull(DAY)
    assert not result.ok and result.code is code and result.provider_code == provider_code


@pytest.mark.parametrize("answer", [
    httpx.Response(500, content=b"<html>oops</html>"),
    httpx.Response(504, content=b""),
    httpx.Response(400, content=b"not json"),
    json_answer(400, {"message": "no error_code"}),
    json_answer(200, {"success": False, "code": 500, "msg": "internal"}),
    json_answer(200, {"success": True, "code": 200}),                           # no data
    success({"currentPage": 1, "data": "not a list"}),
    json_answer(200, ["not", "an", "object"]),
])
async def test_unknown_outcomes_raise(answer: httpx.Response) -> None:
    with pytest.raises(ProviderUnavailable):
        await source(lambda request: answer).pull(DAY)


async def test_configured_codes_override_the_table() -> None:
    answer = json_answer(200, {"success": False, "code": 1001, "msg": "quota"})
    result = await source(lambda request: answer, error_codes={"1001": "rate_limited"}).pull(DAY)
    assert not result.ok and result.code is StandardCode.RATE_LIMITED
    with pytest.raises(ProviderUnavailable):
        await source(lambda request: answer, error_codes={"1001": "unknown_outcome"}).pull(DAY)


async def test_transport_failures_are_unknown_outcomes() -> None:
    def fail(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("slow", request=request)

    with pytest.raises(OutcomeUnknown):
        await source(fail).pull(DAY)

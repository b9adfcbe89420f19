"""Umeng+ OpenAPI client for a mini-program's daily numbers (service-protocols.md §3.1).

One signed call per API, over the Alibaba open-platform gateway::

    POST https://gateway.open.umeng.com/openapi/param2/1/com.umeng.umini/<apiName>/<apiKey>
    Content-Type: application/x-www-form-urlencoded;charset=UTF-8

    dataSourceId=…&fromDate=2025-03-12&toDate=2025-03-12&timeUnit=day&…&_aop_signature=<UPPER hex HMAC-SHA1>

(GET with the same query is the ``http_method`` alternative; ``_aop_timestamp`` is added when configured.) The
signature is :mod:`minigate.providers.umeng.signing`. :meth:`UmengSource.pull` asks, for one day
(``fromDate = toDate = day``, ``timeUnit = day``):

- ``umeng.umini.getOverview`` with every indicator (``newUser,activeUser,launch,visitTimes,onceDuration,
  dailyDuration``) -> metric ``overview``, dimension ``""``, keys ``new_user``, ``active_user``, ``launch``,
  ``visit_times``, ``once_duration`` and ``daily_duration`` (seconds: Umeng answers the durations as text,
  read either as a number of seconds or as ``[HH:]MM:SS``);
- ``umeng.umini.getTotalUser`` (``pull_total_user``) -> metric ``total_user``, key ``total_user``;
- ``umeng.umini.getRetentionByDataSourceId`` once per configured cohort (``indicator``), ``valueType=num`` ->
  metric ``retention``, dimension ``retention_day:<n>`` (``0`` = the cohort itself, then ``v1``…``v7``,
  ``v14``, ``v30``), key = the cohort's row key (``new_user``/``active_user``). Days whose number Umeng does not
  have yet (empty or ``-``) give no row.

A success is HTTP 200 with ``{"success": true, "code", "msg", "data"}``; the numbers are the ``data`` item whose
``dateTime`` is the day. Refusals (gateway ``error_code`` on HTTP 4xx; ``success: false`` with a ``code``) map
through :mod:`~minigate.providers.umeng.codes` to declines; HTTP 5xx, a lost answer or an unreadable one raise
:class:`~minigate.errors.OutcomeUnknown` (a pull changes nothing: pull again later). A day that is not over yet
in Beijing time is declined ``invalid_request`` before anything is sent: Umeng would answer such a day with
partial or no numbers rather than a refusal [U], and a half-day must not be stored as the day's figures.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import time
from collections.abc import Callable, Mapping
from decimal import Decimal, InvalidOperation
from typing import Any, ClassVar
from urllib.parse import urlencode

import httpx

from minigate.domain.results import ProviderResult, StandardCode
from minigate.errors import ProviderUnavailable
from minigate.providers._http import send
from minigate.providers.bases.analytics import AnalyticsSource, MetricRow
from minigate.providers.umeng import signing
from minigate.providers.umeng.codes import PROVIDER, UNKNOWN_OUTCOME, classify
from minigate.providers.umeng.config import UmengConfig

__all__ = ["BEIJING", "INDICATORS", "OVERVIEW", "RETENTION", "RETENTION_DAYS", "TOTAL_USER", "UmengSource",
           "parse_overview", "parse_retention", "parse_seconds", "parse_total_user"]

BEIJING = dt.timezone(dt.timedelta(hours=8))
OVERVIEW = "umeng.umini.getOverview"
TOTAL_USER = "umeng.umini.getTotalUser"
RETENTION = "umeng.umini.getRetentionByDataSourceId"
#: getOverview indicator -> row key
INDICATORS: Mapping[str, str] = {"newUser": "new_user", "activeUser": "active_user", "launch": "launch",
                                 "visitTimes": "visit_times", "onceDuration": "once_duration",
                                 "dailyDuration": "daily_duration"}
_DURATIONS = frozenset({"onceDuration", "dailyDuration"})
#: retention fields: ``value`` is the cohort (day 0), ``v<n>`` those still active n days later
RETENTION_DAYS: Mapping[str, int] = {"value": 0, "v1": 1, "v2": 2, "v3": 3, "v4": 4, "v5": 5, "v6": 6, "v7": 7,
                                     "v14": 14, "v30": 30}
CONTENT_TYPE = "application/x-www-form-urlencoded;charset=UTF-8"
USER_AGENT = "minigate/0.1 (umeng-openapi)"


# --------------------------------------------------------------------------- pure parsing

def _number(value: Any) -> float | None:
    """A JSON number, or text holding one; None for anything else (``""``, ``"-"``, null)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float | Decimal):
        return float(value)
    if isinstance(value, str):
        text = value.strip().replace(",", "")
        try:
            number = Decimal(text)
        except InvalidOperation:
            return None
        return float(number) if number.is_finite() else None
    return None


def parse_seconds(value: Any) -> float | None:
    """A duration in seconds: a number (or numeric text) of seconds, or ``[HH:]MM:SS``."""
    number = _number(value)
    if number is not None:
        return number
    if not isinstance(value, str) or ":" not in value:
        return None
    parts = value.strip().split(":")
    if len(parts) not in (2, 3) or not all(p.strip().replace(".", "", 1).isdigit() for p in parts):
        return None
    seconds = 0.0
    for part in parts:
        seconds = seconds * 60 + float(part)
    return seconds


def _items(data: Any) -> list[Mapping[str, Any]]:
    """The row list of an answer's ``data``: a list, or a page ``{"currentPage", "totalCount", "data": [...]}``."""
    if isinstance(data, Mapping):
        data = data.get("data")
    if not isinstance(data, list):
        raise ValueError("data holds no list of rows")
    return [item for item in data if isinstance(item, Mapping)]


def _same_day(value: Any, day: dt.date) -> bool:
    """``dateTime`` names ``day`` (``2025-03-12``; ``20250312`` and a trailing time are tolerated)."""
    if not isinstance(value, str):
        return False
    text = value.strip()[:10]
    return text in (day.isoformat(), day.strftime("%Y%m%d"))


def _day_items(data: Any, day: dt.date) -> list[Mapping[str, Any]]:
    return [item for item in _items(data) if _same_day(item.get("dateTime"), day)]


def parse_overview(data: Any, day: dt.date, *, source: str = PROVIDER) -> list[MetricRow]:
    """getOverview's ``data`` -> ``overview`` rows for ``day`` (raises ValueError when it is not a row list)."""
    rows: list[MetricRow] = []
    for item in _day_items(data, day)[:1]:
        for indicator, key in INDICATORS.items():
            value = parse_seconds(item.get(indicator)) if indicator in _DURATIONS else _number(item.get(indicator))
            if value is not None:
                rows.append(MetricRow(source, "overview", day, "", key, value))
    return rows


def parse_total_user(data: Any, day: dt.date, *, source: str = PROVIDER) -> list[MetricRow]:
    """getTotalUser's ``data`` -> one ``total_user`` row for ``day`` (none when Umeng has no number)."""
    for item in _day_items(data, day)[:1]:
        value = _number(item.get("totalUser"))
        if value is not None:
            return [MetricRow(source, "total_user", day, "", "total_user", value)]
    return []


def parse_retention(data: Any, day: dt.date, key: str, *, source: str = PROVIDER) -> list[MetricRow]:
    """getRetentionByDataSourceId's ``data`` (``valueType=num``) -> ``retention`` rows of one cohort."""
    rows: list[MetricRow] = []
    for item in _day_items(data, day)[:1]:
        for field, n in RETENTION_DAYS.items():
            value = _number(item.get(field))
            if value is not None:
                rows.append(MetricRow(source, "retention", day, f"retention_day:{n}", key, value))
    return rows


def _text(value: Any, limit: int = 200) -> str | None:
    return value[:limit] if isinstance(value, str) and value else None


class _Refused(Exception):
    """A refusal the caller turns into a decline."""

    def __init__(self, code: StandardCode, provider_code: str, message: str | None) -> None:
        super().__init__(provider_code)
        self.code = code
        self.provider_code = provider_code
        self.message = message


# --------------------------------------------------------------------------- the source

class UmengSource(AnalyticsSource):
    """Umeng+ mini-program statistics over an injected :class:`httpx.AsyncClient`."""

    name: ClassVar[str] = PROVIDER
    metrics: ClassVar[tuple[str, ...]] = ("overview", "total_user", "retention")

    def __init__(self, config: UmengConfig, client: httpx.AsyncClient, *,
                 clock: Callable[[], float] = time.time) -> None:
        super().__init__(client)
        self.config = config
        self._clock = clock

    # ------------------------------------------------------------------ building (pure but for the clock)
    def params(self, api_name: str, day: dt.date, **extra: str) -> dict[str, str]:
        """The API parameters for one day, without the signature."""
        params = {"dataSourceId": self.config.data_source_id, "fromDate": day.isoformat(),
                  "toDate": day.isoformat()}
        if api_name != TOTAL_USER:
            params["timeUnit"] = "day"
        params.update(extra)
        return params

    def build(self, api_name: str, params: Mapping[str, str]) -> httpx.Request:
        """The signed request for ``api_name`` (adds ``_aop_timestamp`` when configured)."""
        fields = dict(params)
        if self.config.send_timestamp:
            fields[signing.TIMESTAMP_PARAM] = str(int(self._clock() * 1000))
        path = signing.url_path(self.config.namespace, api_name, self.config.api_key)
        fields[signing.SIGNATURE_PARAM] = signing.sign(path, fields, self.config.api_security.get_secret_value())
        url = f"{self.config.base_url.rstrip('/')}/openapi/{path}"
        extensions = {"timeout": httpx.Timeout(self.config.request_timeout_seconds).as_dict()}
        headers = {"Accept": "application/json", "User-Agent": USER_AGENT}
        if self.config.http_method == "GET":
            return httpx.Request("GET", url, params=fields, headers=headers, extensions=extensions)
        return httpx.Request("POST", url, content=urlencode(fields).encode("ascii"),
                             headers=headers | {"Content-Type": CONTENT_TYPE}, extensions=extensions)

    # ------------------------------------------------------------------ answers
    def open(self, response: httpx.Response, api_name: str) -> Any:
        """The ``data`` of a success; raises _Refused for a refusal, ProviderUnavailable when the outcome is
        unknown or the answer unreadable."""
        status = response.status_code
        try:
            document = json.loads(response.content, parse_float=Decimal)
        except (UnicodeDecodeError, ValueError):
            document = None
        if status >= 500 or not isinstance(document, dict):
            raise ProviderUnavailable(f"{PROVIDER}: {api_name}: HTTP {status} without a readable answer"
                                      if status < 500 else f"{PROVIDER}: {api_name}: HTTP {status}",
                                      provider=PROVIDER, http_status=status)
        gateway_code = document.get("error_code")
        if status != 200 or isinstance(gateway_code, str):
            if not isinstance(gateway_code, str) or not gateway_code:
                raise ProviderUnavailable(f"{PROVIDER}: {api_name}: HTTP {status} without an error_code",
                                          provider=PROVIDER, http_status=status)
            self._refuse(gateway_code, _text(document.get("error_message")), api_name, status)
        success = document.get("success")
        raw_code = document.get("code")
        code = str(raw_code) if isinstance(raw_code, int | str) and not isinstance(raw_code, bool) else None
        if success is False or (success is None and code not in (None, "0", "200")):
            self._refuse(code or "unknown", _text(document.get("msg")), api_name, status)
        if "data" not in document:
            raise ProviderUnavailable(f"{PROVIDER}: {api_name}: success without data", provider=PROVIDER,
                                      http_status=status)
        return document["data"]

    def _refuse(self, code: str, message: str | None, api_name: str, status: int) -> None:
        meaning = classify(code, self.config.error_codes)
        if meaning == UNKNOWN_OUTCOME:
            raise ProviderUnavailable(f"{PROVIDER}: {api_name}: {code}: outcome unknown", provider=PROVIDER,
                                      provider_code=code, http_status=status)
        raise _Refused(StandardCode(meaning), code, message)

    async def call(self, api_name: str, params: Mapping[str, str]) -> Any:
        """Sign, send, open: the answer's ``data``."""
        response = await send(self.client, self.build(api_name, params), provider=PROVIDER)
        return self.open(response, api_name)

    # ------------------------------------------------------------------ AnalyticsSource
    def is_over(self, day: dt.date) -> bool:
        """Whether ``day`` has ended in Beijing time."""
        return day < dt.datetime.fromtimestamp(self._clock(), BEIJING).date()

    async def pull(self, day: dt.date) -> ProviderResult[list[MetricRow]]:
        if not self.is_over(day):
            return ProviderResult.decline(StandardCode.INVALID_REQUEST, provider_code=None,
                                          message=f"{day.isoformat()} is not over yet (Beijing time)")
        calls: list[tuple[str, dict[str, str], Callable[[Any], list[MetricRow]]]] = [
            (OVERVIEW, self.params(OVERVIEW, day, indicators=",".join(INDICATORS)),
             functools.partial(parse_overview, day=day, source=self.name))]
        if self.config.pull_total_user:
            calls.append((TOTAL_USER, self.params(TOTAL_USER, day),
                          functools.partial(parse_total_user, day=day, source=self.name)))
        for key, indicator in self.config.retention_indicators.items():
            calls.append((RETENTION, self.params(RETENTION, day, indicator=indicator, valueType="num"),
                          functools.partial(parse_retention, day=day, key=key, source=self.name)))
        rows: list[MetricRow] = []
        for api_name, params, parse in calls:
            try:
                data = await self.call(api_name, params)
            except _Refused as refused:
                return ProviderResult.decline(refused.code, provider_code=refused.provider_code,
                                              message=refused.message)
            try:
                rows.extend(parse(data))
            except ValueError as exc:
                raise ProviderUnavailable(f"{PROVIDER}: {api_name}: unexpected answer ({exc})",
                                          provider=PROVIDER, http_status=200) from None
        return ProviderResult.success(rows)


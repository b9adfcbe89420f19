"""WeChat mini-program data analysis ("datacube", We分析) as an analytics source: service-protocols.md §3.4.

**Access token.** ``GET /cgi-bin/token?grant_type=client_credential&appid=&secret=`` (or ``POST
/cgi-bin/stable_token``, ``token_endpoint``) answers ``{"access_token", "expires_in": 7200}``; it is cached until
``token_refresh_margin_seconds`` before it runs out, one :class:`asyncio.Lock` sharing a fetch between concurrent
pulls. A call refused with ``40001``/``40014``/``42001`` (another server may have fetched a new token) fetches a
token again -- once, however many calls saw it -- and is retried once. The token URL holds the app secret, so no
URL goes into a message or an exception chain.

**Calls.** ``POST /datacube/<name>?access_token=<token>`` with ``{"begin_date": "yyyymmdd", "end_date":
"yyyymmdd"}``; WeChat answers HTTP 200, refusals as ``{"errcode", "errmsg"}``. :meth:`WeChatDatacubeSource.pull`
asks for one day (``begin_date = end_date = day``):

- ``getweanalysisappiddailysummarytrend`` -> ``daily_summary``: ``visit_total``, ``share_pv``, ``share_uv``;
- ``…dailyvisittrend`` -> ``daily_visit``: ``session_cnt``, ``visit_pv``, ``visit_uv``, ``visit_uv_new``,
  ``stay_time_uv``, ``stay_time_session``, ``visit_depth`` (all with dimension ``""``);
- ``…dailyretaininfo`` -> ``daily_retention``: dimension ``retention_day:<n>`` (0 = the day itself), keys
  ``visit_uv_new`` and ``visit_uv``;
- ``…userportrait`` -> ``user_portrait``: dimension ``<province|city|genders|platforms|ages|devices>:<name>``,
  keys ``visit_uv_new`` and ``visit_uv``;
- ``…visitdistribution`` -> ``visit_distribution``: dimension ``<index>:<bucket key>``, key ``count``;
- ``…visitpage`` -> ``visit_page``: dimension ``page:<page_path>``, keys ``page_visit_pv``, ``page_visit_uv``,
  ``page_staytime_pv``, ``entrypage_pv``, ``exitpage_pv``, ``page_share_pv``, ``page_share_uv``.

With ``periods`` on, a Sunday also pulls the week it ends (``getweanalysisappidweeklyvisittrend`` ->
``weekly_visit``, ``…weeklyretaininfo`` -> ``weekly_retention`` with ``retention_week:<n>``) and the last day of a
month the month (``monthly_visit``, ``monthly_retention`` with ``retention_month:<n>``); those rows carry the
period's last day as their date. Only items whose ``ref_date`` names the asked period count.

Refusals are declines through :data:`ERRCODES` (``error_codes`` lays the account's own over it; the date
errors ``61500``/``61501`` are not confirmed); ``-1``, HTTP errors, timeouts and unreadable answers raise
:class:`~minigate.errors.OutcomeUnknown`. A pull is all or nothing. A day not over in Beijing time is declined
``invalid_request`` before anything is sent (WeChat refuses ``end_date`` after yesterday too).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import time
from collections.abc import Callable, Iterable, Mapping
from decimal import Decimal
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import httpx
from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

from minigate.domain.results import ProviderResult, StandardCode
from minigate.errors import ProviderError, ProviderTimeout, ProviderUnavailable
from minigate.providers._http import send
from minigate.providers.bases.analytics import AnalyticsSource, MetricRow

if TYPE_CHECKING:
    from minigate.providers.registry import SandboxContext

__all__ = ["API_NAMES", "BEIJING", "DAILY_METRICS", "ERRCODES", "PERIOD_METRICS", "TOKEN_ERRCODES",
           "WeChatDatacubeConfig", "WeChatDatacubeSource", "month_period", "parse_distribution",
           "parse_portrait", "parse_retention", "parse_summary", "parse_visit_page", "parse_visit_trend",
           "ref_date", "sandbox_config", "week_period"]

PROVIDER = "wechat-datacube"
LIVE_BASE_URL = "https://api.weixin.qq.com"
BEIJING = dt.timezone(dt.timedelta(hours=8))
UNKNOWN_OUTCOME = "unknown_outcome"
USER_AGENT = "minigate/0.1 (wechat-datacube)"

#: metric -> datacube API name
API_NAMES: Mapping[str, str] = {
    "daily_summary": "getweanalysisappiddailysummarytrend",
    "daily_visit": "getweanalysisappiddailyvisittrend",
    "daily_retention": "getweanalysisappiddailyretaininfo",
    "user_portrait": "getweanalysisappiduserportrait",
    "visit_distribution": "getweanalysisappidvisitdistribution",
    "visit_page": "getweanalysisappidvisitpage",
    "weekly_visit": "getweanalysisappidweeklyvisittrend",
    "weekly_retention": "getweanalysisappidweeklyretaininfo",
    "monthly_visit": "getweanalysisappidmonthlyvisittrend",
    "monthly_retention": "getweanalysisappidmonthlyretaininfo",
}
DAILY_METRICS = ("daily_summary", "daily_visit", "daily_retention", "user_portrait", "visit_distribution",
                 "visit_page")
PERIOD_METRICS = ("weekly_visit", "weekly_retention", "monthly_visit", "monthly_retention")

SUMMARY_FIELDS = ("visit_total", "share_pv", "share_uv")
VISIT_FIELDS = ("session_cnt", "visit_pv", "visit_uv", "visit_uv_new", "stay_time_uv", "stay_time_session",
                "visit_depth")
PORTRAIT_BREAKDOWNS = ("province", "city", "genders", "platforms", "ages", "devices")
PAGE_FIELDS = ("page_visit_pv", "page_visit_uv", "page_staytime_pv", "entrypage_pv", "exitpage_pv",
               "page_share_pv", "page_share_uv")
MEASURES = ("visit_uv_new", "visit_uv")

#: WeChat ``errcode`` -> meaning (a :class:`StandardCode` value, or ``unknown_outcome``). Credentials: 40001
#: (token endpoint: AppSecret wrong; API: token invalid, refreshed first), 40013 appid, 40014 access_token,
#: 40125 appsecret, 40164 caller IP not whitelisted, 41001/41002/41004 access_token/appid/secret missing, 42001
#: access_token expired.
ERRCODES: Mapping[int, str] = {
    -1: UNKNOWN_OUTCOME,                      # system busy
    40002: StandardCode.INVALID_REQUEST,      # invalid grant_type
    **dict.fromkeys((40001, 40013, 40014, 40125, 40164, 41001, 41002, 41004, 42001), StandardCode.AUTH_FAILED),
    45009: StandardCode.RATE_LIMITED,         # API daily quota reached
    45011: StandardCode.RATE_LIMITED,         # API frequency limit
    47001: StandardCode.INVALID_REQUEST,      # data format error
    48001: StandardCode.AUTH_FAILED,          # API unauthorized for this app
    61500: StandardCode.INVALID_REQUEST,      # date format error [U]
    61501: StandardCode.INVALID_REQUEST,      # date range error [U]
}
#: answers that mean "this access token is no longer good": fetch a new one and retry once
TOKEN_ERRCODES = frozenset({40001, 40014, 42001})
_MEANINGS = frozenset({*(c.value for c in StandardCode if c is not StandardCode.OK), UNKNOWN_OUTCOME})


class WeChatDatacubeConfig(BaseModel):
    """A mini-program's appid and app secret (the same pair as its login), and the pull options."""

    model_config = ConfigDict(extra="forbid")

    appid: str = Field(min_length=1, max_length=32)
    app_secret: SecretStr
    base_url: str = LIVE_BASE_URL
    request_timeout_seconds: float = Field(default=10.0, gt=0, le=120)
    #: ``token`` (``GET /cgi-bin/token``) or ``stable_token`` (``POST /cgi-bin/stable_token``, which does not
    #: invalidate the token other servers of the same app hold)
    token_endpoint: Literal["token", "stable_token"] = "token"
    #: a cached token is renewed this long before ``expires_in`` runs out
    token_refresh_margin_seconds: float = Field(default=300.0, ge=0)
    #: the daily APIs :meth:`WeChatDatacubeSource.pull` calls (each costs one call of that API's daily quota)
    metrics: tuple[str, ...] = DAILY_METRICS
    #: on a Sunday / the last day of a month, also pull that week / month
    periods: bool = True
    #: ``{"<errcode>": "<meaning>"}`` laid over :data:`ERRCODES` (a decline code or ``unknown_outcome``)
    error_codes: dict[int, str] = Field(default_factory=dict)

    @field_validator("metrics")
    @classmethod
    def _known_metrics(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        unknown = sorted(set(value) - set(DAILY_METRICS))
        if unknown:
            raise ValueError(f"unknown metrics {unknown}; use some of {list(DAILY_METRICS)}")
        return value

    @field_validator("error_codes")
    @classmethod
    def _known_meanings(cls, value: dict[int, str]) -> dict[int, str]:
        unknown = sorted({m for m in value.values() if m not in _MEANINGS})
        if unknown:
            raise ValueError(f"unknown meanings {unknown}; use one of {sorted(_MEANINGS)}")
        return value

    def problems(self) -> list[str]:
        """What would make this configuration fail in production."""
        found: list[str] = []
        if not self.app_secret.get_secret_value():
            found.append("app_secret is required")
        if not self.base_url.startswith("https://"):
            found.append("base_url must be https:// in live mode")
        return found


def sandbox_config(ctx: SandboxContext) -> dict[str, Any]:
    """The configuration that talks to the sandbox's ``wechat`` simulator (the app of the WeChat Pay sandbox)."""
    creds = ctx.credentials("wechatpay")
    return {"appid": creds["appid"], "app_secret": creds["app_secret"], "base_url": f"{ctx.base_url}/wechat"}


# --------------------------------------------------------------------------- periods and dates

def ref_date(day: dt.date) -> str:
    return day.strftime("%Y%m%d")


def week_period(day: dt.date) -> tuple[dt.date, dt.date]:
    """The Monday-to-Sunday week holding ``day``."""
    monday = day - dt.timedelta(days=day.weekday())
    return monday, monday + dt.timedelta(days=6)


def month_period(day: dt.date) -> tuple[dt.date, dt.date]:
    """The first and last day of ``day``'s month."""
    first = day.replace(day=1)
    following = (first + dt.timedelta(days=32)).replace(day=1)
    return first, following - dt.timedelta(days=1)


def _period_ref(metric: str, begin: dt.date, end: dt.date) -> str:
    """The ``ref_date`` WeChat gives a period: ``20170313``, ``20170306-20170312`` or ``201702``."""
    if metric.startswith("weekly"):
        return f"{ref_date(begin)}-{ref_date(end)}"
    if metric.startswith("monthly"):
        return begin.strftime("%Y%m")
    return ref_date(end) if begin == end else f"{ref_date(begin)}-{ref_date(end)}"


# --------------------------------------------------------------------------- pure parsing

def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float | Decimal):
        return float(value)
    if isinstance(value, str):
        try:
            number = Decimal(value.strip())
        except ArithmeticError:
            return None
        return float(number) if number.is_finite() else None
    return None


def _list(document: Mapping[str, Any], name: str) -> list[Mapping[str, Any]]:
    value = document.get(name)
    if not isinstance(value, list):
        raise ValueError(f"answer has no {name} list")
    return [item for item in value if isinstance(item, Mapping)]


def _row(metric: str, day: dt.date, dimension: str, key: str, value: Any, *, source: str) -> MetricRow | None:
    """A row, or None when ``value`` is not a number."""
    number = _number(value)
    return MetricRow(source, metric, day, dimension, key, number) if number is not None else None


def _summed(rows: Iterable[MetricRow | None]) -> list[MetricRow]:
    """Rows with the same (dimension, key) added up (a breakdown listing one name twice), in first-seen order."""
    merged: dict[tuple[str, str], MetricRow] = {}
    for row in rows:
        if row is None:
            continue
        seen = merged.get((row.dimension, row.key))
        merged[(row.dimension, row.key)] = row if seen is None else MetricRow(
            row.source, row.metric, row.ref_date, row.dimension, row.key, seen.value + row.value)
    return list(merged.values())


_UNITS = {"daily": "day", "weekly": "week", "monthly": "month"}


def _matches(document: Mapping[str, Any], expected: str) -> bool:
    ref = document.get("ref_date")
    return ref is None or str(ref) == expected


def _trend(document: Mapping[str, Any], metric: str, day: dt.date, expected: str, fields: tuple[str, ...], *,
           source: str) -> list[MetricRow]:
    for item in _list(document, "list"):
        if str(item.get("ref_date")) == expected:
            return _summed(_row(metric, day, "", f, item.get(f), source=source) for f in fields)
    return []


def parse_summary(document: Mapping[str, Any], day: dt.date, *, source: str = PROVIDER) -> list[MetricRow]:
    """``…dailysummarytrend`` -> ``daily_summary`` rows (ValueError when the answer has no ``list``)."""
    return _trend(document, "daily_summary", day, ref_date(day), SUMMARY_FIELDS, source=source)


def parse_visit_trend(document: Mapping[str, Any], day: dt.date, *, metric: str = "daily_visit",
                      period: tuple[dt.date, dt.date] | None = None, source: str = PROVIDER) -> list[MetricRow]:
    """``…daily/weekly/monthlyvisittrend`` -> ``metric`` rows dated ``day``; ``period`` (begin, end) names the
    week or month whose ``ref_date`` counts (default: ``day`` itself)."""
    begin, end = period or (day, day)
    return _trend(document, metric, day, _period_ref(metric, begin, end), VISIT_FIELDS, source=source)


def parse_retention(document: Mapping[str, Any], day: dt.date, *, metric: str = "daily_retention",
                    period: tuple[dt.date, dt.date] | None = None, source: str = PROVIDER) -> list[MetricRow]:
    """``…retaininfo`` -> ``retention_<day|week|month>:<key>`` rows for ``visit_uv_new`` and ``visit_uv``."""
    begin, end = period or (day, day)
    if not _matches(document, _period_ref(metric, begin, end)):
        return []
    unit = _UNITS[metric.split("_", 1)[0]]
    rows: list[MetricRow | None] = []
    for measure in MEASURES:
        for item in _list(document, measure):
            key = item.get("key")
            if isinstance(key, int) and not isinstance(key, bool):
                rows.append(_row(metric, day, f"retention_{unit}:{key}", measure, item.get("value"), source=source))
    return _summed(rows)


def parse_portrait(document: Mapping[str, Any], day: dt.date, *, source: str = PROVIDER) -> list[MetricRow]:
    """``…userportrait`` -> ``user_portrait`` rows ``<breakdown>:<name>`` for both measures."""
    if not _matches(document, ref_date(day)):
        return []
    rows: list[MetricRow | None] = []
    for measure in MEASURES:
        section = document.get(measure)
        if not isinstance(section, Mapping):
            raise ValueError(f"answer has no {measure} object")
        for breakdown in PORTRAIT_BREAKDOWNS:
            for item in _list(section, breakdown) if breakdown in section else []:
                name = item.get("name")
                label = name if isinstance(name, str) and name else item.get("id")
                if isinstance(label, str | int) and not isinstance(label, bool) and str(label):
                    rows.append(_row("user_portrait", day, f"{breakdown}:{label}", measure, item.get("value"),
                                     source=source))
    return _summed(rows)


def parse_distribution(document: Mapping[str, Any], day: dt.date, *, source: str = PROVIDER) -> list[MetricRow]:
    """``…visitdistribution`` -> ``visit_distribution`` rows ``<index>:<bucket key>`` -> ``count``."""
    if not _matches(document, ref_date(day)):
        return []
    rows: list[MetricRow | None] = []
    for entry in _list(document, "list"):
        index = entry.get("index")
        if not isinstance(index, str) or not index:
            continue
        for item in _list(entry, "item_list"):
            key = item.get("key")
            if isinstance(key, int | str) and not isinstance(key, bool):
                rows.append(_row("visit_distribution", day, f"{index}:{key}", "count", item.get("value"),
                                 source=source))
    return _summed(rows)


def parse_visit_page(document: Mapping[str, Any], day: dt.date, *, source: str = PROVIDER) -> list[MetricRow]:
    """``…visitpage`` -> ``visit_page`` rows ``page:<page_path>``."""
    if not _matches(document, ref_date(day)):
        return []
    rows: list[MetricRow | None] = []
    for item in _list(document, "list"):
        path = item.get("page_path")
        if isinstance(path, str) and path:
            rows.extend(_row("visit_page", day, f"page:{path}", f, item.get(f), source=source) for f in PAGE_FIELDS)
    return _summed(rows)


# --------------------------------------------------------------------------- the source

class _Refused(Exception):
    """An ``errcode`` answer (turned into a decline, or a token refresh)."""

    def __init__(self, errcode: int, errmsg: str | None) -> None:
        super().__init__(errcode)
        self.errcode = errcode
        self.errmsg = errmsg


class WeChatDatacubeSource(AnalyticsSource):
    """WeChat mini-program datacube over an injected :class:`httpx.AsyncClient`."""

    name: ClassVar[str] = PROVIDER
    metrics: ClassVar[tuple[str, ...]] = DAILY_METRICS + PERIOD_METRICS

    def __init__(self, config: WeChatDatacubeConfig, client: httpx.AsyncClient, *,
                 clock: Callable[[], float] = time.time) -> None:
        super().__init__(client)
        self.config = config
        self._clock = clock
        self._base = config.base_url.rstrip("/")
        self._errcodes: dict[int, str] = {**ERRCODES, **config.error_codes}
        self._token: str | None = None
        self._token_expires_at = 0.0
        self._token_lock = asyncio.Lock()
        #: how many tokens this source has fetched (observability and tests)
        self.token_fetches = 0

    def _extensions(self) -> dict[str, Any]:
        return {"timeout": httpx.Timeout(self.config.request_timeout_seconds).as_dict()}

    async def _send(self, request: httpx.Request, what: str) -> httpx.Response:
        """Send without letting the request (its URL holds the secret or the token) into an exception chain."""
        try:
            return await send(self.client, request, provider=PROVIDER)
        except ProviderTimeout as exc:
            raise ProviderTimeout(f"{what}: {exc}", provider=PROVIDER) from None
        except ProviderError as exc:
            raise ProviderUnavailable(f"{what}: {exc}", provider=PROVIDER, http_status=exc.http_status) from None

    # ------------------------------------------------------------------ access token
    def token_request(self, *, force_refresh: bool = False) -> httpx.Request:
        secret = self.config.app_secret.get_secret_value()
        headers = {"Accept": "application/json", "User-Agent": USER_AGENT}
        if self.config.token_endpoint == "stable_token":
            body = json.dumps({"grant_type": "client_credential", "appid": self.config.appid, "secret": secret,
                               "force_refresh": force_refresh}, separators=(",", ":")).encode()
            return httpx.Request("POST", f"{self._base}/cgi-bin/stable_token", content=body,
                                 headers=headers | {"Content-Type": "application/json"},
                                 extensions=self._extensions())
        params = {"grant_type": "client_credential", "appid": self.config.appid, "secret": secret}
        return httpx.Request("GET", f"{self._base}/cgi-bin/token", params=params, headers=headers,
                             extensions=self._extensions())

    async def access_token(self, *, refused: str | None = None) -> str:
        """The cached token, or a new one; ``refused``: a token WeChat just refused (replaced unless another call
        replaced it already). Raises _Refused when WeChat refuses the credentials."""
        async with self._token_lock:
            token = self._token
            if (token is not None and token != refused
                    and self._clock() < self._token_expires_at - self.config.token_refresh_margin_seconds):
                return token
            response = await self._send(self.token_request(force_refresh=refused is not None), "token")
            fetched_at = self._clock()
            document = self._document(response, "token")
            new, expires_in = document.get("access_token"), document.get("expires_in")
            if (not isinstance(new, str) or not new or isinstance(expires_in, bool)
                    or not isinstance(expires_in, int | float) or expires_in <= 0):
                raise ProviderUnavailable(f"{PROVIDER}: token: answer has no access_token/expires_in",
                                          provider=PROVIDER, http_status=response.status_code)
            self.token_fetches += 1
            self._token, self._token_expires_at = new, fetched_at + float(expires_in)
            return new

    # ------------------------------------------------------------------ calls
    def build(self, api_name: str, begin: dt.date, end: dt.date, token: str) -> httpx.Request:
        body = json.dumps({"begin_date": ref_date(begin), "end_date": ref_date(end)}, separators=(",", ":"))
        headers = {"Content-Type": "application/json", "Accept": "application/json", "User-Agent": USER_AGENT}
        return httpx.Request("POST", f"{self._base}/datacube/{api_name}", params={"access_token": token},
                             content=body.encode(), headers=headers, extensions=self._extensions())

    def _document(self, response: httpx.Response, what: str) -> dict[str, Any]:
        """The JSON object of a 200 answer; raises _Refused for an ``errcode``, ProviderUnavailable otherwise."""
        status = response.status_code
        if status != 200:
            raise ProviderUnavailable(f"{PROVIDER}: {what}: HTTP {status}", provider=PROVIDER, http_status=status)
        try:
            document = json.loads(response.content, parse_float=Decimal)
        except (UnicodeDecodeError, ValueError):
            document = None
        if not isinstance(document, dict):
            raise ProviderUnavailable(f"{PROVIDER}: {what}: answer is not a JSON object", provider=PROVIDER,
                                      http_status=status)
        errcode = document.get("errcode", 0)
        if errcode not in (0, None):
            if not isinstance(errcode, int) or isinstance(errcode, bool):
                raise ProviderUnavailable(f"{PROVIDER}: {what}: errcode is not a number", provider=PROVIDER,
                                          http_status=status)
            message = document.get("errmsg")
            raise _Refused(errcode, message[:200] if isinstance(message, str) and message else None)
        return document

    async def call(self, api_name: str, begin: dt.date, end: dt.date) -> dict[str, Any]:
        """Token, send, open; on a token refusal a new token and one retry."""
        token = await self.access_token()
        what = f"datacube/{api_name}"
        try:
            return self._document(await self._send(self.build(api_name, begin, end, token), what), what)
        except _Refused as refused:
            if refused.errcode not in TOKEN_ERRCODES:
                raise
        token = await self.access_token(refused=token)
        return self._document(await self._send(self.build(api_name, begin, end, token), what), what)

    def _decline(self, refused: _Refused) -> ProviderResult[list[MetricRow]]:
        meaning = self._errcodes.get(refused.errcode, StandardCode.DECLINED.value)
        if meaning == UNKNOWN_OUTCOME:
            raise ProviderUnavailable(f"{PROVIDER}: errcode {refused.errcode}: outcome unknown", provider=PROVIDER,
                                      provider_code=str(refused.errcode))
        return ProviderResult.decline(StandardCode(meaning), provider_code=str(refused.errcode),
                                      message=refused.errmsg)

    # ------------------------------------------------------------------ AnalyticsSource
    def is_over(self, day: dt.date) -> bool:
        """Whether ``day`` has ended in Beijing time."""
        return day < dt.datetime.fromtimestamp(self._clock(), BEIJING).date()

    def plan(self, day: dt.date) -> list[tuple[str, dt.date, dt.date]]:
        """(metric, begin_date, end_date) of every call a pull of ``day`` makes."""
        calls = [(metric, day, day) for metric in DAILY_METRICS if metric in self.config.metrics]
        if self.config.periods:
            monday, sunday = week_period(day)
            if day == sunday:
                calls += [("weekly_visit", monday, sunday), ("weekly_retention", monday, sunday)]
            first, last = month_period(day)
            if day == last:
                calls += [("monthly_visit", first, last), ("monthly_retention", first, last)]
        return calls

    def parse(self, metric: str, document: Mapping[str, Any], day: dt.date,
              period: tuple[dt.date, dt.date]) -> list[MetricRow]:
        """Rows of one answer (raises ValueError when its shape is wrong)."""
        if metric == "daily_summary":
            return parse_summary(document, day, source=self.name)
        if metric.endswith("_visit"):
            return parse_visit_trend(document, day, metric=metric, period=period, source=self.name)
        if metric.endswith("_retention"):
            return parse_retention(document, day, metric=metric, period=period, source=self.name)
        if metric == "user_portrait":
            return parse_portrait(document, day, source=self.name)
        if metric == "visit_distribution":
            return parse_distribution(document, day, source=self.name)
        return parse_visit_page(document, day, source=self.name)

    async def pull(self, day: dt.date) -> ProviderResult[list[MetricRow]]:
        if not self.is_over(day):
            return ProviderResult.decline(StandardCode.INVALID_REQUEST, provider_code=None,
                                          message=f"{day.isoformat()} is not over yet (Beijing time)")
        rows: list[MetricRow] = []
        for metric, begin, end in self.plan(day):
            try:
                document = await self.call(API_NAMES[metric], begin, end)
            except _Refused as refused:
                return self._decline(refused)
            try:
                rows.extend(self.parse(metric, document, day, (begin, end)))
            except ValueError as exc:
                raise ProviderUnavailable(f"{PROVIDER}: {API_NAMES[metric]}: unexpected answer ({exc})",
                                          provider=PROVIDER, http_status=200) from None
        return ProviderResult.success(rows)

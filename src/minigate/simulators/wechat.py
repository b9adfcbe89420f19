"""WeChat mini-program server API simulator: login (``/sns/jscode2session``), the access token
(``/cgi-bin/token``, ``/cgi-bin/stable_token``) and the data-analysis APIs (``/datacube/<name>``).

**Login.** ``POST /_sandbox/login`` with ``{"user": "<name>"}`` answers ``{"code": "..."}`` — what ``wx.login``
gives that user on the device: single use, valid 5 minutes. ``/sns/jscode2session`` exchanges it for a stable
openid per (appid, user) and a fresh session_key. Errors come as HTTP 200 with ``errcode``/``errmsg``,
as the real API answers: 40013 invalid appid, 40125 invalid appsecret, 40029 invalid code (unknown or
expired), 40163 code been used, 40002 invalid grant_type.

**Access token.** ``GET /cgi-bin/token?grant_type=client_credential&appid=&secret=`` checks ``grant_type``
(40002), ``appid`` present (41002) and the app's (40013), ``secret`` present (41004) and right (40125, constant
time), and answers ``{"access_token", "expires_in"}``: 7200 s (``token_lifetime_seconds``) on the sandbox clock; a
newer token leaves the older ones 5 more minutes. ``POST /cgi-bin/stable_token`` (``{"grant_type", "appid",
"secret", "force_refresh"}``, same checks) answers the current stable token and its remaining lifetime, or a new
one when there is none or ``force_refresh`` is true [U: stable_token details].

**Datacube.** ``POST /datacube/<name>?access_token=<token>`` with ``{"begin_date": "yyyymmdd", "end_date":
"yyyymmdd"}``. Check order: token present (41001), known (40001 ``invalid credential``; also for a replaced
token after its 5 minutes), not expired (42001) -> the next-call fault -> the body is a JSON object (47001) ->
both dates present and valid ``yyyymmdd`` (61500 ``date format error``) -> the range (61501 ``date range
error``): ``end_date`` at most yesterday (Beijing time, sandbox clock) and, per API, one day
(``…dailysummarytrend``, ``…dailyvisittrend``, ``…dailyretaininfo``, ``…visitdistribution``, ``…visitpage``),
Monday to Sunday (``…weeklyvisittrend``, ``…weeklyretaininfo``), a calendar month (``…monthlyvisittrend``,
``…monthlyretaininfo``), or 1/7/30 days (``…userportrait``). 61500/61501 and their texts are not confirmed.

**Numbers.** :meth:`WeChatSimulator.datacube_day` is what the simulator reports for a day: numbers from a generator
seeded with (appid, day) -- tests can predict them -- with the sections set through ``POST /_sandbox/datacube``
laid over them. Sections (each replaces the generated one; exactly what was set is reported): ``summary`` and
``visit`` (objects of the API's fields), ``retention`` (``{"visit_uv_new": {"<key>": n}, "visit_uv": {...}}``),
``portrait`` (``{"<measure>": {"province": [{"id", "name", "value"}], ..., "devices": [{"name", "value"}]}}``),
``distribution`` (``{"<index>": {"<key>": n}}``), ``pages`` (a list of page items), and ``weekly_visit`` /
``weekly_retention`` (set on the week's Sunday), ``monthly_visit`` / ``monthly_retention`` (on the month's last
day). Example: ``{"date": "2025-03-12", "visit": {"visit_uv": 55500}}``. ``GET /_sandbox/datacube?date=`` shows a
day, ``DELETE`` forgets every setting. Generated retention key n of day d appears once d + n is over.

**Faults** (``/_sandbox/faults``, ``path`` a prefix such as ``/datacube`` or ``/cgi-bin/token``): ``timeout``
(after ``seconds``) and ``charged_then_timeout`` answer 504, ``http_500`` 500, ``http_429`` the quota refusal
(45009 on datacube and the token, 45011 on jscode2session).
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import hashlib
import hmac
import random
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from minigate.simulators._core import (
    BEIJING,
    CallFault,
    Clock,
    CredentialStore,
    Faults,
    day_values_control,
    fault_routes,
    json_response,
    read_json_object,
)
from minigate.simulators.wechatpay import create_credentials

__all__ = ["CODE_TTL_SECONDS", "DATACUBE_APIS", "TOKEN_LIFETIME_SECONDS", "WeChatSimulator"]

CODE_TTL_SECONDS = 300
TOKEN_LIFETIME_SECONDS = 7200
#: how long a replaced access token keeps working
TOKEN_OVERLAP_SECONDS = 300
#: datacube API -> (date rule, section of the day's numbers)
DATACUBE_APIS: Mapping[str, tuple[str, str]] = {
    "getweanalysisappiddailysummarytrend": ("day", "summary"),
    "getweanalysisappiddailyvisittrend": ("day", "visit"),
    "getweanalysisappidweeklyvisittrend": ("week", "weekly_visit"),
    "getweanalysisappidmonthlyvisittrend": ("month", "monthly_visit"),
    "getweanalysisappiddailyretaininfo": ("day", "retention"),
    "getweanalysisappidweeklyretaininfo": ("week", "weekly_retention"),
    "getweanalysisappidmonthlyretaininfo": ("month", "monthly_retention"),
    "getweanalysisappiduserportrait": ("portrait", "portrait"),
    "getweanalysisappidvisitdistribution": ("day", "distribution"),
    "getweanalysisappidvisitpage": ("day", "pages"),
}
SUMMARY_FIELDS = ("visit_total", "share_pv", "share_uv")
VISIT_FIELDS = ("session_cnt", "visit_pv", "visit_uv", "visit_uv_new", "stay_time_uv", "stay_time_session",
                "visit_depth")
PAGE_FIELDS = ("page_visit_pv", "page_visit_uv", "page_staytime_pv", "entrypage_pv", "exitpage_pv",
               "page_share_pv", "page_share_uv")
MEASURES = ("visit_uv_new", "visit_uv")
RETENTION_KEYS = {"retention": (0, 1, 2, 3, 4, 5, 6, 7, 14, 30), "weekly_retention": (0, 1, 2, 3, 4),
                  "monthly_retention": (0, 1)}
DISTRIBUTIONS = {"access_source_session_cnt": tuple(range(1, 13)), "access_staytime_info": tuple(range(1, 9)),
                 "access_depth_info": tuple(range(1, 7))}
_PORTRAIT_NAMES: Mapping[str, tuple[tuple[int, str], ...]] = {
    "province": ((44, "广东省"), (33, "浙江省"), (11, "北京"), (31, "上海"), (32, "江苏省")),
    "city": ((4401, "广州"), (4403, "深圳"), (3301, "杭州"), (1101, "北京"), (3101, "上海")),
    "genders": ((1, "男"), (2, "女"), (0, "未知")),
    "platforms": ((1, "iPhone"), (2, "Android"), (3, "其他")),
    "ages": ((1, "17岁以下"), (2, "18-24岁"), (3, "25-29岁"), (4, "30-39岁"), (5, "40-49岁"), (6, "50岁以上")),
    "devices": ((0, "iPhone 15"), (0, "HUAWEI Mate 60"), (0, "Xiaomi 14"), (0, "OPPO Reno11")),
}
_PAGES = ("pages/index/index", "pages/goods/detail", "pages/cart/cart", "pages/order/list")
_WEEKLY = frozenset({"weekly_visit", "weekly_retention"})
_MONTHLY = frozenset({"monthly_visit", "monthly_retention"})
_SECTIONS = frozenset({"summary", "visit", "retention", "portrait", "distribution", "pages", *_WEEKLY, *_MONTHLY})


class _Errcode(Exception):
    def __init__(self, errcode: int, errmsg: str) -> None:
        super().__init__(errcode)
        self.errcode = errcode
        self.errmsg = errmsg


@dataclass
class _Token:
    expires_at: float
    stable: bool
    replaced_at: float | None = None


def _yyyymmdd(day: dt.date) -> str:
    return day.strftime("%Y%m%d")


def _month_end(day: dt.date) -> dt.date:
    return ((day.replace(day=1) + dt.timedelta(days=32)).replace(day=1)) - dt.timedelta(days=1)


@dataclass
class _Code:
    user: str
    expires_at: float
    used: bool = False


class WeChatSimulator:
    """Mini-program login. Shares appid/app_secret with the WeChat Pay sandbox merchant."""

    name = "wechat"

    def __init__(self, store: CredentialStore, *, clock: Clock, faults: Faults | None = None) -> None:
        pay = store.load_or_create("wechatpay", create_credentials)
        self.appid: str = pay["merchant"]["appid"]
        self.app_secret: str = pay["merchant"]["app_secret"]
        self._openid_secret = bytes.fromhex(pay["simulator"]["openid_secret"])
        self.clock = clock
        self.faults = faults or Faults()
        self._codes: dict[str, _Code] = {}
        self.token_lifetime_seconds = TOKEN_LIFETIME_SECONDS
        self.tokens: dict[str, _Token] = {}
        self._stable_token: str | None = None
        #: day -> datacube sections set through ``/_sandbox/datacube``
        self.datacube_overrides: dict[dt.date, dict[str, Any]] = {}
        self.app = Starlette(routes=[
            Route("/sns/jscode2session", self._jscode2session, methods=["GET"]),
            Route("/cgi-bin/token", self._token, methods=["GET"]),
            Route("/cgi-bin/stable_token", self._stable_token_endpoint, methods=["POST"]),
            Route("/datacube/{name}", self._datacube, methods=["POST"]),
            Route("/_sandbox/login", self._login, methods=["POST"]),
            Route("/_sandbox/datacube", self._datacube_control, methods=["GET", "POST", "DELETE"]),
            *fault_routes(self.faults),
        ])

    def credentials(self) -> dict[str, str]:
        return {"appid": self.appid, "app_secret": self.app_secret}

    def openid(self, user: str, appid: str | None = None) -> str:
        """``o`` + 27 chars of base64url(HMAC-SHA256(secret, appid|user)): 28 chars, like real openids."""
        message = f"{appid or self.appid}\x00{user}".encode()
        digest = hmac.new(self._openid_secret, message, hashlib.sha256).digest()
        return "o" + base64.urlsafe_b64encode(digest).decode()[:27]

    def login(self, user: str) -> str:
        now = self.clock.now()
        self._codes = {c: v for c, v in self._codes.items() if v.expires_at > now - CODE_TTL_SECONDS}
        code = secrets.token_hex(16)
        self._codes[code] = _Code(user=user, expires_at=now + CODE_TTL_SECONDS)
        return code

    async def _login(self, request: Request) -> Response:
        data = await read_json_object(request)
        user = data.get("user") if data else None
        if not isinstance(user, str) or not user:
            return json_response({"code": "PARAM_ERROR", "message": 'JSON {"user": "<name>"} expected'}, 400)
        return json_response({"code": self.login(user)})

    def _error(self, errcode: int, errmsg: str) -> Response:
        return json_response({"errcode": errcode, "errmsg": f"{errmsg}, rid: {secrets.token_hex(12)}"})

    async def _jscode2session(self, request: Request) -> Response:
        fault = self.faults.take_call("/sns/jscode2session")
        if fault is not None and fault.kind in ("http_500", "timeout", "charged_then_timeout"):
            return Response(b"", status_code=500 if fault.kind == "http_500" else 504)
        if fault is not None and fault.kind == "http_429":
            return self._error(45011, "api minute-quota reach limit  mush slower  retry next minute")
        q = request.query_params
        if q.get("appid") != self.appid:
            return self._error(40013, "invalid appid")
        if not hmac.compare_digest(q.get("secret", ""), self.app_secret):
            return self._error(40125, "invalid appsecret")
        if q.get("grant_type") != "authorization_code":
            return self._error(40002, "invalid grant_type")
        entry = self._codes.get(q.get("js_code", ""))
        if entry is None or self.clock.now() + self.faults.clock_skew_seconds >= entry.expires_at:
            return self._error(40029, "invalid code")
        if entry.used:
            return self._error(40163, "code been used")
        entry.used = True
        answer: dict[str, Any] = {"session_key": base64.b64encode(secrets.token_bytes(16)).decode(),
                                  "openid": self.openid(entry.user, q.get("appid"))}
        return json_response(answer)

    # ------------------------------------------------------------------ access token
    def now(self) -> float:
        """The simulator's clock: the shared clock plus the ``clock_skew_seconds`` fault."""
        return self.clock.now() + self.faults.clock_skew_seconds

    async def _fault(self, path: str, quota: int) -> Response | None:
        """The answer of the next-call fault on ``path``, or None when there is none."""
        fault = self.faults.take_call(path)
        return None if fault is None else await self._fault_answer(fault, quota)

    async def _fault_answer(self, fault: CallFault, quota: int) -> Response:
        """504 after ``seconds`` for the timeouts (the datacube only reads: ``charged_then_timeout`` is a timeout
        there), 500, or the ``quota`` refusal."""
        if fault.kind == "http_429":
            return self._error(quota, "reach max api daily quota limit")
        if fault.kind in ("timeout", "charged_then_timeout"):
            await asyncio.sleep(fault.seconds)
            return Response(b"<html><body>Gateway Timeout</body></html>", 504, media_type="text/html")
        return Response(b"<html><body>upstream error</body></html>", 500, media_type="text/html")

    def _check_app(self, params: Mapping[str, Any]) -> None:
        if params.get("grant_type") != "client_credential":
            raise _Errcode(40002, "invalid grant_type")
        appid, secret = params.get("appid"), params.get("secret")
        if not isinstance(appid, str) or not appid:
            raise _Errcode(41002, "appid missing")
        if appid != self.appid:
            raise _Errcode(40013, "invalid appid")
        if not isinstance(secret, str) or not secret:
            raise _Errcode(41004, "appsecret missing")
        if not hmac.compare_digest(secret.encode(), self.app_secret.encode()):
            raise _Errcode(40125, "invalid appsecret")

    def _issue(self, *, stable: bool) -> str:
        now = self.now()
        for known in self.tokens.values():
            if known.stable == stable and known.replaced_at is None:
                known.replaced_at = now
        token = secrets.token_urlsafe(96)
        self.tokens[token] = _Token(expires_at=now + self.token_lifetime_seconds, stable=stable)
        if stable:
            self._stable_token = token
        return token

    async def _token(self, request: Request) -> Response:
        fault = self.faults.take_call("/cgi-bin/token")
        if fault is not None and fault.kind != "charged_then_timeout":
            return await self._fault_answer(fault, 45009)
        try:
            self._check_app(request.query_params)
        except _Errcode as refused:
            return self._error(refused.errcode, refused.errmsg)
        answer = {"access_token": self._issue(stable=False), "expires_in": int(self.token_lifetime_seconds)}
        if fault is not None:               # charged_then_timeout: the token was issued (replacing the last one)
            return await self._fault_answer(fault, 45009)
        return json_response(answer)

    async def _stable_token_endpoint(self, request: Request) -> Response:
        fault = await self._fault("/cgi-bin/stable_token", 45009)
        if fault is not None:
            return fault
        body = await read_json_object(request)
        if body is None:
            return self._error(47001, "data format error")
        try:
            self._check_app(body)
        except _Errcode as refused:
            return self._error(refused.errcode, refused.errmsg)
        current = self.tokens.get(self._stable_token or "")
        if current is None or body.get("force_refresh") is True or self.now() >= current.expires_at:
            token = self._issue(stable=True)
            return json_response({"access_token": token, "expires_in": int(self.token_lifetime_seconds)})
        assert self._stable_token is not None
        return json_response({"access_token": self._stable_token,
                              "expires_in": int(current.expires_at - self.now())})

    def _check_token(self, token: str) -> None:
        if not token:
            raise _Errcode(41001, "access_token missing")
        known = self.tokens.get(token)
        now = self.now()
        if known is None or (known.replaced_at is not None and now >= known.replaced_at + TOKEN_OVERLAP_SECONDS):
            raise _Errcode(40001, "invalid credential, access_token is invalid or not latest")
        if now >= known.expires_at:
            raise _Errcode(42001, "access_token expired")

    # ------------------------------------------------------------------ datacube numbers
    def datacube_generated(self, day: dt.date) -> dict[str, Any]:
        """The generated numbers of ``day`` (and of the week / month it ends, when it is a Sunday / month end)."""
        rng = random.Random(f"datacube|{self.appid}|{day.isoformat()}")
        uv = rng.randint(500, 20_000)
        new = rng.randint(uv // 20, uv // 3)
        values: dict[str, Any] = {
            "summary": {"visit_total": 100_000 + (day - dt.date(2020, 1, 1)).days * 50 + rng.randint(0, 49),
                        "share_pv": rng.randint(0, uv // 5), "share_uv": rng.randint(0, uv // 10)},
            "visit": self._visit(rng, uv, new),
            "retention": self._retention(rng, {"visit_uv_new": new, "visit_uv": uv}, "retention", day),
            "portrait": {measure: self._portrait(rng, base) for measure, base in (("visit_uv_new", new),
                                                                                 ("visit_uv", uv))},
            "distribution": {index: {str(key): rng.randint(0, uv // 4) for key in keys}
                             for index, keys in DISTRIBUTIONS.items()},
            "pages": [{"page_path": path, "page_visit_pv": rng.randint(10, uv * 3),
                       "page_visit_uv": rng.randint(5, uv), "page_staytime_pv": round(rng.uniform(5, 120), 4),
                       "entrypage_pv": rng.randint(0, uv), "exitpage_pv": rng.randint(0, uv),
                       "page_share_pv": rng.randint(0, uv // 20), "page_share_uv": rng.randint(0, uv // 40)}
                      for path in _PAGES],
        }
        for period, ends, low, high in (("weekly", day.weekday() == 6, 3_000, 100_000),
                                        ("monthly", day == _month_end(day), 10_000, 400_000)):
            if ends:
                prng = random.Random(f"datacube-{period}|{self.appid}|{day.isoformat()}")
                puv = prng.randint(low, high)
                pnew = prng.randint(puv // 20, puv // 3)
                values[f"{period}_visit"] = self._visit(prng, puv, pnew)
                values[f"{period}_retention"] = self._retention(prng, {"visit_uv_new": pnew, "visit_uv": puv},
                                                                f"{period}_retention", day)
        return values

    @staticmethod
    def _visit(rng: random.Random, uv: int, new: int) -> dict[str, Any]:
        sessions = uv + rng.randint(0, uv)
        return {"session_cnt": sessions, "visit_pv": sessions * rng.randint(2, 8), "visit_uv": uv,
                "visit_uv_new": new, "stay_time_uv": round(rng.uniform(30, 600), 4),
                "stay_time_session": round(rng.uniform(20, 300), 4), "visit_depth": round(rng.uniform(1, 6), 4)}

    def _retention(self, rng: random.Random, bases: Mapping[str, int], section: str,
                   end: dt.date) -> dict[str, dict[str, int]]:
        """Key n is there once its period is over: day + n, week end + 7n, month end + n months <= yesterday."""
        yesterday = self.yesterday()
        step = {"retention": 1, "weekly_retention": 7, "monthly_retention": 31}[section]
        result: dict[str, dict[str, int]] = {}
        for measure, base in bases.items():
            rates = sorted((rng.uniform(0.05, 0.6) for _ in RETENTION_KEYS[section]), reverse=True)
            result[measure] = {str(key): base if key == 0 else int(base * rate)
                               for key, rate in zip(RETENTION_KEYS[section], rates, strict=True)
                               if end + dt.timedelta(days=step * key) <= yesterday}
        return result

    @staticmethod
    def _portrait(rng: random.Random, base: int) -> dict[str, list[dict[str, Any]]]:
        portrait: dict[str, list[dict[str, Any]]] = {}
        for breakdown, names in _PORTRAIT_NAMES.items():           # devices have no id
            portrait[breakdown] = [({"name": name} if breakdown == "devices" else {"id": ident, "name": name})
                                   | {"value": rng.randint(0, max(1, base // len(names)))} for ident, name in names]
        return portrait

    def datacube_day(self, day: dt.date) -> dict[str, Any]:
        """What the simulator reports for ``day``: the generated numbers with the set sections laid over."""
        return self.datacube_generated(day) | self.datacube_overrides.get(day, {})

    def yesterday(self) -> dt.date:
        """The last day that is over, Beijing time, on the sandbox clock."""
        return dt.datetime.fromtimestamp(self.now(), BEIJING).date() - dt.timedelta(days=1)

    # ------------------------------------------------------------------ datacube API
    async def _datacube(self, request: Request) -> Response:
        name = request.path_params["name"]
        api = DATACUBE_APIS.get(name)
        if api is None:
            return Response(b"<html><body>404 Not Found</body></html>", 404, media_type="text/html")
        try:
            self._check_token(request.query_params.get("access_token", ""))
        except _Errcode as refused:
            return self._error(refused.errcode, refused.errmsg)
        fault = await self._fault(f"/datacube/{name}", 45009)
        if fault is not None:
            return fault
        body = await read_json_object(request)
        if body is None:
            return self._error(47001, "data format error")
        try:
            begin, end = self._dates(body, api[0])
        except _Errcode as refused:
            return self._error(refused.errcode, refused.errmsg)
        return json_response(self._answer(api[1], begin, end))

    def _dates(self, body: Mapping[str, Any], rule: str) -> tuple[dt.date, dt.date]:
        dates: list[dt.date] = []
        for field in ("begin_date", "end_date"):
            raw = body.get(field)
            try:
                if not isinstance(raw, str) or len(raw) != 8 or not raw.isdigit():
                    raise ValueError(raw)
                dates.append(dt.datetime.strptime(raw, "%Y%m%d").date())
            except ValueError:
                raise _Errcode(61500, "date format error") from None
        begin, end = dates
        span = (end - begin).days
        valid = {"day": span == 0, "week": begin.weekday() == 0 and span == 6,
                 "month": begin.day == 1 and end == _month_end(begin), "portrait": span in (0, 6, 29)}[rule]
        if not valid or end > self.yesterday():
            raise _Errcode(61501, "date range error")
        return begin, end

    def _answer(self, section: str, begin: dt.date, end: dt.date) -> dict[str, Any]:
        if section.startswith("weekly"):
            ref = f"{_yyyymmdd(begin)}-{_yyyymmdd(end)}"
        elif section.startswith("monthly"):
            ref = begin.strftime("%Y%m")
        else:
            ref = _yyyymmdd(end) if begin == end else f"{_yyyymmdd(begin)}-{_yyyymmdd(end)}"
        values = self.datacube_day(end)
        if section == "portrait" and begin != end:
            values = self.datacube_generated(end) | {"portrait": {
                measure: self._portrait(random.Random(f"datacube-portrait|{self.appid}|{ref}|{measure}"),
                                        20_000 * ((end - begin).days + 1))
                for measure in MEASURES}}
        data = values.get(section, {})
        if section in ("summary", "visit", "weekly_visit", "monthly_visit"):
            return {"list": [{"ref_date": ref, **data}] if data else []}
        if section.endswith("retention"):
            return {"ref_date": ref, **{m: [{"key": int(k), "value": v} for k, v in data.get(m, {}).items()]
                                        for m in MEASURES}}
        if section == "portrait":
            return {"ref_date": ref, **{measure: data.get(measure, {}) for measure in MEASURES}}
        if section == "distribution":
            return {"ref_date": ref, "list": [{"index": index, "item_list": [{"key": int(k), "value": v}
                                                                              for k, v in items.items()]}
                                              for index, items in data.items()]}
        return {"ref_date": ref, "list": list(data)}

    # ------------------------------------------------------------------ datacube control
    async def _datacube_control(self, request: Request) -> Response:
        return await day_values_control(request, clear=self.datacube_overrides.clear, show=self.datacube_day,
                                        record=self._record_datacube)

    def _record_datacube(self, spec: dict[str, Any]) -> str | None:
        problem = _datacube_problem(spec)
        if problem is None:
            day = dt.date.fromisoformat(spec["date"])
            self.datacube_overrides.setdefault(day, {}).update({k: v for k, v in spec.items() if k != "date"})
        return problem


def _numbers(value: Any, fields: tuple[str, ...] | None = None) -> bool:
    """A JSON object of numbers (with keys from ``fields`` when given)."""
    return (isinstance(value, dict) and (fields is None or set(value) <= set(fields))
            and all(isinstance(v, int | float) and not isinstance(v, bool) for v in value.values()))


def _datacube_problem(spec: Mapping[str, Any]) -> str | None:
    """What is wrong with a ``/_sandbox/datacube`` body (None when it can be recorded)."""
    try:
        day = dt.date.fromisoformat(str(spec.get("date", "")))
    except ValueError:
        return "date must be yyyy-mm-dd"
    unknown = set(spec) - _SECTIONS - {"date"}
    if unknown:
        return f"unknown sections {sorted(unknown)}; known: {sorted(_SECTIONS)}"
    if _WEEKLY & set(spec) and day.weekday() != 6:
        return "weekly sections are set for the week's Sunday"
    if _MONTHLY & set(spec) and day != _month_end(day):
        return "monthly sections are set for the month's last day"
    def retention(v: Any) -> bool:
        return isinstance(v, dict) and set(v) <= set(MEASURES) and all(_numbers(m) and all(k.isdigit() for k in m)
                                                                        for m in v.values())

    checks: dict[str, Callable[[Any], bool]] = {
        "summary": lambda v: _numbers(v, SUMMARY_FIELDS),
        **dict.fromkeys(("visit", "weekly_visit", "monthly_visit"), lambda v: _numbers(v, VISIT_FIELDS)),
        **dict.fromkeys(("retention", "weekly_retention", "monthly_retention"), retention),
        "distribution": lambda v: isinstance(v, dict) and all(_numbers(i) and all(k.isdigit() for k in i)
                                                              for i in v.values()),
        "pages": lambda v: isinstance(v, list) and all(
            isinstance(p, dict) and isinstance(p.get("page_path"), str) and _numbers(
                {k: x for k, x in p.items() if k != "page_path"}, PAGE_FIELDS) for p in v),
        "portrait": lambda v: isinstance(v, dict) and set(v) <= set(MEASURES) and all(
            isinstance(m, dict) and set(m) <= set(_PORTRAIT_NAMES) and all(
                isinstance(items, list) and all(isinstance(i, dict) and "value" in i for i in items)
                for items in m.values()) for m in v.values()),
    }
    bad = sorted(section for section in set(spec) - {"date"} if not checks[section](spec[section]))
    return f"malformed sections {bad} (see the simulator's documentation)" if bad else None

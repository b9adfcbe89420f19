"""Umeng+ OpenAPI simulator: the gateway (``gateway.open.umeng.com``) and three ``com.umeng.umini`` APIs
(service-protocols.md §3.1), with deterministic numbers per (data source, day).

**Calls**, ``GET`` or form ``POST`` ``/openapi/param2/1/com.umeng.umini/<apiName>/<apiKey>`` (parameters in the
query string, the form body, or both). Check order, as the gateway does: the API exists (``gw.APIUnsupported``)
-> the apiKey is the account's (``gw.AppKeyNotFound``) -> ``_aop_signature`` present (``gw.SignatureMissing``)
-> ``_aop_timestamp``, when sent, is epoch milliseconds within :attr:`UmengSimulator.timestamp_window_seconds` of
the sandbox clock (``gw.TimestampInvalid``) -> the signature verifies, compared in constant time
(``gw.SignatureInvalid``) -> the next-call fault -> the API's own checks. Gateway refusals are HTTP 400 with
``{"error_code", "error_message", "exception"}``; API answers are HTTP 200 with
``{"success", "code", "msg", "data"}`` -- ``code`` 200 on success, 400 for a missing or malformed parameter
(dates ``yyyy-MM-dd``, ``fromDate`` after ``toDate``, ``timeUnit``, ``indicators``, ``valueType``), 403 when
``dataSourceId`` is not the account's.

- ``umeng.umini.getOverview`` (``dataSourceId``, ``fromDate``, ``toDate``, ``timeUnit``, ``indicators``,
  ``pageIndex``, ``pageSize``): ``data = {"currentPage", "totalCount", "data": [{"dateTime", <indicator>...}]}``,
  one item per day; durations are text (seconds with two decimals).
- ``umeng.umini.getTotalUser`` (``dataSourceId``, ``fromDate``, ``toDate``): ``data = [{"dateTime",
  "totalUser"}]``.
- ``umeng.umini.getRetentionByDataSourceId`` (``dataSourceId``, ``fromDate``, ``toDate``, ``timeUnit``,
  ``valueType`` ``num``|``rate``, ``indicator`` ``newuser``|``activeUser``, case ignored): a page of
  ``{"dateTime", "value", "v1"…"v7", "v14", "v30"}``; ``v<n>`` is text, empty until day + n is over.

Only ``timeUnit=day`` is served (others answer 400). Days not over yet (Beijing time, sandbox clock) have no
item: Umeng has no final number for them.

**Numbers.** :meth:`UmengSimulator.day_values` is what the simulator reports for a day: generated from a generator
seeded with (dataSourceId, day), so tests can predict them, with the sections set through
``POST /_sandbox/data`` laid over them::

    {"date": "2025-03-12", "overview": {"newUser": 12, "activeUser": 340, ...}, "total_user": 98765,
     "retention": {"newuser": {"value": 12, "v1": "5"}, "activeUser": {...}}}

A section given replaces that section of the day (exactly what was set is reported). ``GET /_sandbox/data?date=``
shows a day, ``DELETE`` forgets every setting. ``/_sandbox/faults``: next-call faults (``timeout``, ``http_500``,
``charged_then_timeout`` answer 5xx; ``http_429`` answers ``gw.QosAppFrequencyLimit``).

Not confirmed, and so plain constants here: the HTTP status of gateway refusals, the name
``gw.TimestampInvalid`` and the timestamp window, the API's refusal codes and success ``code``, the duration
format, and what Umeng answers for days not over yet.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import random
import secrets
import string
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import parse_qsl

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from minigate.providers.umeng import signing
from minigate.simulators._core import (
    BEIJING,
    Clock,
    CredentialStore,
    Faults,
    day_values_control,
    fault_routes,
    json_response,
)

__all__ = ["NAMESPACE", "OVERVIEW_INDICATORS", "RETENTION_FIELDS", "UmengSimulator", "create_credentials"]

NAMESPACE = "com.umeng.umini"
OVERVIEW = "umeng.umini.getOverview"
TOTAL_USER = "umeng.umini.getTotalUser"
RETENTION = "umeng.umini.getRetentionByDataSourceId"
OVERVIEW_INDICATORS = ("newUser", "activeUser", "launch", "visitTimes", "onceDuration", "dailyDuration")
OVERVIEW_TIME_UNITS = ("day", "7day", "30day", "week", "month")
RETENTION_TIME_UNITS = ("day", "week")
#: retention fields after ``value``, and the day each one is about
RETENTION_FIELDS: Mapping[str, int] = {"v1": 1, "v2": 2, "v3": 3, "v4": 4, "v5": 5, "v6": 6, "v7": 7, "v14": 14,
                                       "v30": 30}
RETENTION_INDICATORS = {"newuser": "newuser", "activeuser": "activeUser"}
CREDENTIAL_FIELDS = ("api_key", "api_security", "data_source_id")
MAX_DAYS = 366
MAX_PAGE_SIZE = 100


def create_credentials() -> dict[str, Any]:
    """An OpenAPI key pair (a 7-digit apiKey, a 24-character apiSecurity) and one mini-program data source (a
    24-hex-digit appKey)."""
    return {"api_key": str(1_000_000 + secrets.randbelow(9_000_000)),
            "api_security": "".join(secrets.choice(string.ascii_letters + string.digits) for _ in range(24)),
            "data_source_id": secrets.token_hex(12)}


class _GatewayError(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(code)
        self.code = code
        self.message = message


class _ApiError(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(code)
        self.code = code
        self.message = message


def _date(params: Mapping[str, str], name: str) -> dt.date:
    raw = params.get(name, "")
    if not raw:
        raise _ApiError(400, f"{name} is required")
    try:
        if len(raw) != 10:
            raise ValueError(raw)
        return dt.date.fromisoformat(raw)
    except ValueError:
        raise _ApiError(400, f"{name} must be yyyy-MM-dd") from None


def _page(params: Mapping[str, str]) -> tuple[int, int]:
    try:
        index = int(params.get("pageIndex") or 1)
        size = int(params.get("pageSize") or 30)
    except ValueError:
        raise _ApiError(400, "pageIndex and pageSize must be integers") from None
    if index < 1 or not 1 <= size <= MAX_PAGE_SIZE:
        raise _ApiError(400, f"pageIndex must be >= 1 and pageSize within 1..{MAX_PAGE_SIZE}")
    return index, size


class UmengSimulator:
    """One Umeng+ account with OpenAPI access to one mini-program data source. ``app`` is the ASGI app."""

    name = "umeng"

    def __init__(self, store: CredentialStore, *, clock: Clock, faults: Faults | None = None) -> None:
        self.account: dict[str, Any] = store.load_or_create(self.name, create_credentials)
        self.clock = clock
        self.faults = faults or Faults()
        #: ``_aop_timestamp`` may differ from the sandbox clock by this much [U]
        self.timestamp_window_seconds = 15 * 60
        #: day -> sections set through ``/_sandbox/data``
        self.overrides: dict[dt.date, dict[str, Any]] = {}
        self._apis: dict[str, Callable[[Mapping[str, str]], Any]] = {
            OVERVIEW: self._overview, TOTAL_USER: self._total_user, RETENTION: self._retention}
        self.app = Starlette(routes=[
            Route("/openapi/{protocol}/{version}/{namespace}/{api_name}/{api_key}", self._gateway,
                  methods=["GET", "POST"]),
            Route("/_sandbox/data", self._data_endpoint, methods=["GET", "POST", "DELETE"]),
            *fault_routes(self.faults),
        ])

    def credentials(self) -> dict[str, Any]:
        return {k: self.account[k] for k in CREDENTIAL_FIELDS}

    def now(self) -> float:
        return self.clock.now() + self.faults.clock_skew_seconds

    def yesterday(self) -> dt.date:
        """The last day that is over, Beijing time, on the sandbox clock."""
        return dt.datetime.fromtimestamp(self.now(), BEIJING).date() - dt.timedelta(days=1)

    # ------------------------------------------------------------------ numbers
    def generated(self, day: dt.date) -> dict[str, Any]:
        """The day's numbers from the generator seeded with (dataSourceId, day); retention days not over yet
        are empty text."""
        rng = random.Random(f"umeng|{self.account['data_source_id']}|{day.isoformat()}")
        active = rng.randint(800, 5000)
        new = rng.randint(50, active // 3)
        launch = active + rng.randint(0, active)
        overview = {"newUser": new, "activeUser": active, "launch": launch,
                    "visitTimes": launch * rng.randint(2, 6), "onceDuration": f"{rng.uniform(20, 300):.2f}",
                    "dailyDuration": f"{rng.uniform(60, 900):.2f}"}
        total = 50_000 + (day - dt.date(2020, 1, 1)).days * 40 + rng.randint(0, 39)
        yesterday = self.yesterday()
        retention: dict[str, dict[str, Any]] = {}
        for indicator, cohort in (("newuser", new), ("activeUser", active)):
            rates = sorted((rng.uniform(0.05, 0.6) for _ in RETENTION_FIELDS), reverse=True)
            retention[indicator] = {"value": cohort} | {
                field: str(int(cohort * rate)) if day + dt.timedelta(days=n) <= yesterday else ""
                for (field, n), rate in zip(RETENTION_FIELDS.items(), rates, strict=True)}
        return {"overview": overview, "total_user": total, "retention": retention}

    def day_values(self, day: dt.date) -> dict[str, Any]:
        """What the simulator reports for ``day``: the generated numbers with the set sections laid over."""
        return self.generated(day) | self.overrides.get(day, {})

    def _retention_of(self, day: dt.date, indicator: str) -> dict[str, Any]:
        sections: dict[str, Any] = self.day_values(day)["retention"]
        wanted = indicator.lower()
        return next((dict(v) for k, v in sections.items() if k.lower() == wanted), {})

    # ------------------------------------------------------------------ the gateway
    async def _gateway(self, request: Request) -> Response:
        p = request.path_params
        params: dict[str, str] = dict(parse_qsl(request.url.query, keep_blank_values=True))
        if request.method == "POST":
            body = (await request.body()).decode("utf-8", "replace")
            params |= dict(parse_qsl(body, keep_blank_values=True))
        try:
            handler = self._check(p["protocol"], p["version"], p["namespace"], p["api_name"], p["api_key"], params)
        except _GatewayError as refused:
            return self._gateway_error(refused.code, refused.message)
        fault = self.faults.take_call(f"/openapi/{p['protocol']}/{p['version']}/{p['namespace']}/{p['api_name']}")
        if fault is not None and fault.kind in ("timeout", "http_500"):
            if fault.kind == "timeout":
                await asyncio.sleep(fault.seconds)
            return Response(b"<html><body>Gateway Timeout</body></html>", 504 if fault.kind == "timeout" else 500,
                            media_type="text/html")
        if fault is not None and fault.kind == "http_429":
            return self._gateway_error("gw.QosAppFrequencyLimit", "App call exceeds limited frequency")
        try:
            answer = json_response({"data": handler(params), "code": 200, "msg": "success", "success": True})
        except _ApiError as refused:
            answer = json_response({"code": refused.code, "msg": refused.message, "success": False})
        if fault is not None and fault.kind == "charged_then_timeout":
            await asyncio.sleep(fault.seconds)
            return Response(b"<html><body>Gateway Timeout</body></html>", 504, media_type="text/html")
        return answer

    def _check(self, protocol: str, version: str, namespace: str, api_name: str, api_key: str,
               params: Mapping[str, str]) -> Callable[[Mapping[str, str]], Any]:
        handler = self._apis.get(api_name)
        if protocol != signing.PROTOCOL or version != signing.VERSION or namespace != NAMESPACE or handler is None:
            raise _GatewayError("gw.APIUnsupported", f"API {namespace}:{api_name}-{version} is not supported")
        if not secrets.compare_digest(api_key.encode(), str(self.account["api_key"]).encode()):
            raise _GatewayError("gw.AppKeyNotFound", "AppKey is not found")
        signature = params.get(signing.SIGNATURE_PARAM, "")
        if not signature:
            raise _GatewayError("gw.SignatureMissing", "Signature is required")
        stamp = params.get(signing.TIMESTAMP_PARAM)
        if stamp is not None:
            if not stamp.isdigit() or abs(int(stamp) / 1000 - self.now()) > self.timestamp_window_seconds:
                raise _GatewayError("gw.TimestampInvalid", "_aop_timestamp is invalid or out of the allowed window")
        path = signing.url_path(namespace, api_name, api_key, protocol=protocol, version=version)
        if not signing.verify(signature, path, params, str(self.account["api_security"])):
            raise _GatewayError("gw.SignatureInvalid", "Request signature is invalid")
        return handler

    @staticmethod
    def _gateway_error(code: str, message: str) -> Response:
        return json_response({"error_message": message, "exception": message, "error_code": code}, 400)

    # ------------------------------------------------------------------ APIs
    def _days(self, params: Mapping[str, str]) -> list[dt.date]:
        source = params.get("dataSourceId", "")
        if not source:
            raise _ApiError(400, "dataSourceId is required")
        if not secrets.compare_digest(source.encode(), str(self.account["data_source_id"]).encode()):
            raise _ApiError(403, "no permission for this dataSourceId")
        first, last = _date(params, "fromDate"), _date(params, "toDate")
        if first > last:
            raise _ApiError(400, "fromDate must not be after toDate")
        if (last - first).days >= MAX_DAYS:
            raise _ApiError(400, f"the date range may span at most {MAX_DAYS} days")
        last = min(last, self.yesterday())
        return [first + dt.timedelta(days=i) for i in range((last - first).days + 1)]

    @staticmethod
    def _time_unit(params: Mapping[str, str], allowed: tuple[str, ...]) -> None:
        unit = params.get("timeUnit", "")
        if unit not in allowed:
            raise _ApiError(400, f"timeUnit must be one of {','.join(allowed)}")
        if unit != "day":
            raise _ApiError(400, "the sandbox serves timeUnit=day only")

    @staticmethod
    def _paged(items: list[dict[str, Any]], params: Mapping[str, str]) -> dict[str, Any]:
        index, size = _page(params)
        return {"currentPage": index, "totalCount": len(items), "data": items[(index - 1) * size: index * size]}

    def _overview(self, params: Mapping[str, str]) -> Any:
        days = self._days(params)
        self._time_unit(params, OVERVIEW_TIME_UNITS)
        indicators = [i for i in params.get("indicators", "").split(",") if i]
        if not indicators or any(i not in OVERVIEW_INDICATORS for i in indicators):
            raise _ApiError(400, f"indicators must be a comma-separated subset of {','.join(OVERVIEW_INDICATORS)}")
        items = []
        for day in days:
            values = self.day_values(day)["overview"]
            items.append({"dateTime": day.isoformat()} | {i: values[i] for i in indicators if i in values})
        return self._paged(items, params)

    def _total_user(self, params: Mapping[str, str]) -> Any:
        return [{"dateTime": day.isoformat(), "totalUser": self.day_values(day)["total_user"]}
                for day in self._days(params)]

    def _retention(self, params: Mapping[str, str]) -> Any:
        days = self._days(params)
        self._time_unit(params, RETENTION_TIME_UNITS)
        value_type = params.get("valueType", "")
        if value_type not in ("num", "rate"):
            raise _ApiError(400, "valueType must be num or rate")
        indicator = params.get("indicator") or "newuser"
        if indicator.lower() not in RETENTION_INDICATORS:
            raise _ApiError(400, "indicator must be newuser or activeUser")
        items = []
        for day in days:
            values = self._retention_of(day, indicator)
            if value_type == "rate":
                cohort = values.get("value")
                for field in RETENTION_FIELDS:
                    count = values.get(field)
                    if field in values and isinstance(cohort, int) and cohort > 0 and str(count).isdigit():
                        values[field] = f"{int(str(count)) * 100 / cohort:.2f}%"
            items.append({"dateTime": day.isoformat()} | values)
        return self._paged(items, params)

    # ------------------------------------------------------------------ control
    async def _data_endpoint(self, request: Request) -> Response:
        return await day_values_control(request, clear=self.overrides.clear, show=self.day_values, record=self._set)

    def _set(self, spec: Any) -> str | None:
        """Record the sections of ``spec``; an error message when it is malformed."""
        if not isinstance(spec, dict):
            return "body must be a JSON object"
        try:
            day = dt.date.fromisoformat(str(spec.get("date", "")))
        except ValueError:
            return "date must be yyyy-mm-dd"
        unknown = set(spec) - {"date", "overview", "total_user", "retention"}
        if unknown:
            return f"unknown sections: {sorted(unknown)}"
        if "overview" in spec and (not isinstance(spec["overview"], dict)
                                   or set(spec["overview"]) - set(OVERVIEW_INDICATORS)):
            return f"overview must be an object with keys from {list(OVERVIEW_INDICATORS)}"
        if "total_user" in spec and (not isinstance(spec["total_user"], int) or isinstance(spec["total_user"], bool)):
            return "total_user must be an integer"
        if "retention" in spec:
            retention = spec["retention"]
            if not isinstance(retention, dict) or any(
                    k.lower() not in RETENTION_INDICATORS or not isinstance(v, dict)
                    or set(v) - {"value", *RETENTION_FIELDS} for k, v in retention.items()):
                return "retention must map newuser/activeUser to objects with value, v1..v7, v14, v30"
        self.overrides.setdefault(day, {}).update({k: v for k, v in spec.items() if k != "date"})
        return None

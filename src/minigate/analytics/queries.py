"""Dashboard queries over the analytics store (DuckDB), as pure synchronous functions of a connection.

Every function takes a ``duckdb.DuckDBPyConnection`` (the service opens a read-only one per request and calls
these in a worker thread) and, for the dashboards, a :class:`Scope`. User input never becomes SQL text: app,
mode, platform, property values, event names and dates are bound parameters; property keys are checked against
:data:`PROPERTY_KEY` and then bound too, as the JSON path ``'$.' || key``. Only whitelisted words (``day``,
``week``, ``month``) are written into the statements.

Semantics
---------
**Scope.** Every event a query considers belongs to ``scope.app_id`` and ``scope.mode``; when ``platform`` is
set it must equal the event's ``platform``; each ``properties`` item ``key -> value`` requires
``json_extract_string(properties, '$.' || key) = value``. JSON numbers and booleans therefore compare as their
text (``"3"``, ``"true"``), and a dotted key (``a.b``) reads a nested object.

**Days.** A local day is ``CAST(ts + tz_offset AS DATE)`` with ``ts`` in UTC and ``tz_offset_minutes`` fixed
(480, Beijing, by default; no DST). A range ``start..end`` is inclusive of both local dates, i.e. the UTC
half-open interval ``[start 00:00 - tz, end+1 00:00 - tz)``, which the queries bind as timestamps so DuckDB can
skip row groups by their ``ts`` min/max.

**Person.** ``coalesce(user_id, first user_id ever seen on the event's distinct_id in this app+mode,
distinct_id)`` (:data:`PERSONS`, :data:`PERSON`): a device's anonymous events before its login count for the
user who logged in on it, and a user's devices are one person. Identity is resolved over every event of the
app+mode, without the scope's platform/property filters: a person is the same whichever slice one looks at.
"First" is the earliest ``ts`` (then the lowest ``seq``). User ids and device ids share one name space: an app
whose user ids can equal device ids should prefix one of them at the SDK.

:func:`active_users`
    One row per period (``day``; ``week`` starting Monday; ``month`` starting on the 1st) that overlaps the
    range, zeros included: ``{"period_start": date, "active_users": int}``, the distinct persons with any event
    on a day of that period that lies inside the range (the first and last periods may be partial). Server events
    (``kind = 'server'``, e.g. ``$payment_verified``) are not activity: active users and retention ignore them;
    funnels, tops and the payment funnel count them like any event.

:func:`retention`
    Cohort periods (``day`` or ``week``) are those whose first day lies in the range. A person's cohort is the
    period of their first event ever (all history of the app+mode, scope filters applied, server events left
    out). ``retained[k]`` (``k = 0..horizon``) counts the cohort's persons with any event in period
    ``cohort + k``; ``retained[0]`` equals ``size``. A period whose first day is after ``as_of`` is ``None``
    (not observed yet); ``as_of`` defaults to the local date of the app+mode's latest event (unfiltered: a day
    the app has data for but the slice has none is a real zero), or ``end`` when it has none. Empty cohorts are
    included.

:func:`funnel`
    2..10 :class:`Step` (an event name plus property filters of its own, on top of the scope's). A person enters
    at their FIRST step-1 event inside the range; step ``k`` is reached at the first step-``k`` event with
    ``ts >= ts(step k-1)`` and ``ts <= ts(step 1) + window`` (so later steps may fall after ``end``, and when two
    consecutive steps have the same name one event satisfies both). Rows: ``step`` (1-based), ``name``,
    ``persons``, ``conversion_from_previous`` (``None`` for step 1 or when the previous step has nobody),
    ``conversion_overall`` (against step 1; ``None`` when step 1 has nobody), ``median_seconds_from_previous``
    (interpolated median over the persons reaching the step; ``None`` for step 1 or nobody); floats rounded to 4
    places.

:func:`top_events` / :func:`top_pages`
    Event names (resp. ``page`` of ``kind = 'page_view'`` events, NULL pages left out) in the range, by event
    count descending then name: ``{"name", "events", "persons"}`` / ``{"page", "views", "persons"}``.

Payment funnel, in two parts. :func:`payment_links` (SQL) finds, for every person with a view event in the
range (entered at their first one, ``view_ts``), the orders linked to them: an ``order_id`` of the person's
``$payment_request``/``$payment_result`` events with ``view_ts <= ts <= view_ts + window``, or an order whose
owner (``order_owners``: order id -> distinct_id or user_id, resolved to a person the same way as events) is
that person. Per order it reports the first ``$payment_request`` time and the LAST ``$payment_result`` (by
``ts``, then ``seq``) with its ``properties.status`` normalised to ``success``/``cancel``/``fail``/``unknown``;
these facts come from every in-scope event carrying that order id from the range start on (bounded so a year of
history is not scanned). Persons without any linked order are returned too: they are the funnel's first step.
:func:`payment_funnel` (pure Python) then joins the links to the ledger, which is the truth: an order counts
for a person only if the ledger knows it and either events linked it or, linked only by its owner, its
``created_at`` lies in ``[view_ts, view_ts + window]``. Steps (persons): ``viewed``, ``ordered`` (a counted
order), ``payment_requested`` (a counted order with a request event), ``client_reported_success`` (a counted
order whose last client result is ``success``), ``verified_paid`` (a counted order the ledger has paid). The last
three are each a subset of ``ordered`` but not of one another: a payment verified by the ledger whose client
never reported back counts in ``verified_paid`` only, so ``conversion_from_previous`` can exceed 1.0; the
diagnostics name those orders.

Query shapes (the same answers, chosen for speed; the tests run every case through both)
--------------------------------------------------------------------------------------
Resolving the person of every row is a hash join over all events, and counting distinct (bucket, person) pairs a
hash aggregate keyed on several strings; at 10M events each costs more than the one-second budget on a small
machine. So the counting queries first group rows by ``(distinct_id, user_id)`` only — with one ``bit_or`` of
``1 << bucket`` (bucket = the day of the range, or the rank of the event name / page among the winners) — resolve
identity on those few hundred thousand rows, OR the masks per person and count set bits (:data:`MASK_BITS`
buckets fit a HUGEINT). Ranges longer than that, or top lists longer than that, take the generic rollup
(group by bucket, device and user, then ``count(DISTINCT person)``). The map device -> first user id
(:data:`PERSONS`) is recomputed by every query from the events; a table kept by the loader would remove about a
third of each query's time (``python -m bench analytics --persons-table``).

Exports: :func:`person_events` returns every event of a person — rows whose ``distinct_id`` or ``user_id`` is
the id, plus the anonymous rows (``user_id IS NULL``) of every device on which that user id ever appeared — in
``ts, seq`` order, ``properties`` parsed. On a device shared by two users this takes its anonymous rows even
where the person model credits them to the device's first user (an erasure errs towards removing), but never
another user's identified rows. :func:`erase_person` deletes exactly those rows.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, Literal, NamedTuple

import duckdb

__all__ = [
    "MASK_BITS", "PAYMENT_REQUEST", "PAYMENT_RESULT", "PERSON", "PERSONS", "PROPERTY_KEY", "LedgerOrder", "OrderLink",
    "PersonPayments", "Scope", "Step", "active_users", "erase_person", "erase_person_sql", "external_metrics",
    "funnel", "payment_funnel", "payment_links", "person_events", "retention", "top_events", "top_pages",
]

#: property keys a filter may name (letters, digits, ``_ . $ -``; dots address nested objects)
PROPERTY_KEY = re.compile(r"^[A-Za-z_$][A-Za-z0-9_.$-]{0,99}$")

PAYMENT_REQUEST = "$payment_request"
PAYMENT_RESULT = "$payment_result"
RESULT_STATUSES = frozenset({"success", "cancel", "fail"})

#: distinct_id -> the first user_id ever seen on it in ``$app_id``/``$mode`` (a CTE body, named ``ids`` below)
PERSONS = (
    "SELECT distinct_id, arg_min(user_id, (ts, seq)) AS first_user_id FROM events "
    "WHERE app_id = $app_id AND mode = $mode AND user_id IS NOT NULL GROUP BY distinct_id"
)
#: the person of an event row ``e`` left-joined to ``ids`` on ``distinct_id``
PERSON = "coalesce(e.user_id, ids.first_user_id, e.distinct_id)"

_PLACEHOLDER = re.compile(r"\$([A-Za-z_][A-Za-z0-9_]*)")
#: the local day of ``e.ts`` as a day number since 1970-01-01: integer arithmetic, several times cheaper per row
#: than ``CAST(ts + INTERVAL AS DATE)``, and what the rollups group by
_DAY_NO = "((epoch_us(e.ts) + $tz::BIGINT * 60000000) // 86400000000)"
_DAY_OF = "(DATE '1970-01-01' + {}::INTEGER)"
_UNITS = {"day": "day", "week": "week", "month": "month"}
#: days, names or pages one HUGEINT bitmask holds (bits 0..125, so literals stay exact); longer ranges and larger
#: limits take the generic rollup, which gives the same answers more slowly
MASK_BITS = 126
_EPOCH = date(1970, 1, 1)
_MAX_TZ = 14 * 60


@dataclass(frozen=True, slots=True)
class Scope:
    """Which events a dashboard looks at, and in which time zone it counts days."""

    app_id: str
    mode: str
    tz_offset_minutes: int = 480
    platform: str | None = None
    properties: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.tz_offset_minutes, int) or not -_MAX_TZ <= self.tz_offset_minutes <= _MAX_TZ:
            raise ValueError("tz_offset_minutes must be an integer within ±840")
        _check_properties(self.properties)


@dataclass(frozen=True, slots=True)
class Step:
    """One funnel step: an event name, optionally narrowed by property values."""

    name: str
    properties: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("a step needs an event name")
        _check_properties(self.properties)


class OrderLink(NamedTuple):
    """An order tied to a viewer, with what the client reported about it (times are aware UTC)."""

    order_id: str
    via_events: bool                 # the person's own payment events in the window carry it
    via_owner: bool                  # order_owners names the person
    requested_at: datetime | None    # first $payment_request
    result_status: str | None        # last $payment_result: success | cancel | fail | unknown; None: no result
    result_at: datetime | None


class PersonPayments(NamedTuple):
    """A person with a view event in the range, and their linked orders (often none).

    Named tuples, not dataclasses: :func:`payment_links` builds one per viewer (200,000 at 10M events) and a
    frozen dataclass takes half as long again to construct."""

    person: str
    view_ts: datetime                # aware UTC, the person's first view event in the range
    orders: tuple[OrderLink, ...]


@dataclass(frozen=True, slots=True)
class LedgerOrder:
    """The gateway ledger's view of an order (amounts in fen)."""

    order_id: str
    created_at: datetime             # aware UTC
    status: str
    paid_at: datetime | None
    amount: int
    amount_refunded: int


# --------------------------------------------------------------------------- SQL building

def _check_properties(properties: Mapping[str, str]) -> None:
    for key, value in properties.items():
        if not isinstance(key, str) or not PROPERTY_KEY.match(key):
            raise ValueError(f"invalid property key {key!r}")
        if not isinstance(value, str):
            raise ValueError(f"property {key!r}: filter values are strings")


class _Params:
    """Named parameters of one statement; :meth:`add` returns the placeholder."""

    def __init__(self, scope: Scope | None = None, **fixed: Any) -> None:
        self.values: dict[str, Any] = dict(fixed)
        if scope is not None:
            self.values.update(app_id=scope.app_id, mode=scope.mode, tz=scope.tz_offset_minutes)

    def add(self, value: Any) -> str:
        name = f"p{len(self.values)}"
        self.values[name] = value
        return "$" + name

    def run(self, con: duckdb.DuckDBPyConnection, sql: str) -> duckdb.DuckDBPyConnection:
        """Execute ``sql`` with the parameters it names (DuckDB refuses unused ones)."""
        used = set(_PLACEHOLDER.findall(sql))
        return con.execute(sql, {k: v for k, v in self.values.items() if k in used})


def _property_sql(properties: Mapping[str, str], params: _Params, alias: str = "e") -> list[str]:
    return [f"json_extract_string({alias}.properties, {params.add('$.' + key)}) = {params.add(value)}"
            for key, value in properties.items()]


def _scope_sql(scope: Scope, params: _Params) -> list[str]:
    where = ["e.app_id = $app_id", "e.mode = $mode"]
    if scope.platform is not None:
        where.append(f"e.platform = {params.add(scope.platform)}")
    return where + _property_sql(scope.properties, params)


#: activity is what people do: server events ($payment_verified...) count in funnels and tops, not as activity
_CLIENT = "e.kind <> 'server'"


def _events_cte(scope: Scope, params: _Params, columns: Iterable[str], where: Iterable[str] = ()) -> str:
    """``WITH ids AS (...), ev AS (...)``: the scope's events with their ``person``."""
    cols = ", ".join(f"e.{c}" for c in columns)
    conditions = " AND ".join([*_scope_sql(scope, params), *where])
    return (f"WITH ids AS ({PERSONS}), "
            f"ev AS (SELECT {PERSON} AS person, {cols} FROM events e LEFT JOIN ids ON ids.distinct_id = e.distinct_id "
            f"WHERE {conditions})")


def _rollup_cte(scope: Scope, params: _Params, keys: Sequence[tuple[str, str]], where: Iterable[str] = (),
                aggregates: Sequence[tuple[str, str]] = ()) -> str:
    """``WITH ids AS (...), r AS (...), ev AS (...)``: the scope's events grouped by ``keys`` (alias, expression)
    and by device and user id, then given their ``person``.

    Resolving identity per row costs a hash join over every event; grouping first by the stored columns (DuckDB
    hashes their dictionaries) leaves a few hundred thousand rows to resolve at 10M events."""
    conditions = " AND ".join([*_scope_sql(scope, params), *where])
    grouped = ", ".join([*(f"{expr} AS {alias}" for alias, expr in keys), "e.distinct_id", "e.user_id",
                         *(f"{expr} AS {alias}" for alias, expr in aggregates)])
    carried = ", ".join([*(f"e.{alias}" for alias, _ in keys), f"{PERSON} AS person",
                         *(f"e.{alias}" for alias, _ in aggregates)])
    return (f"WITH ids AS ({PERSONS}), "
            f"r AS (SELECT {grouped} FROM events e WHERE {conditions} GROUP BY ALL), "
            f"ev AS (SELECT {carried} FROM r e LEFT JOIN ids ON ids.distinct_id = e.distinct_id)")


def _mask_cte(scope: Scope, params: _Params, bucket: str, where: Iterable[str] = (), join: str = "",
              first_day: bool = False) -> str:
    """``WITH ids AS (...), r AS (...), pm AS (...)``: per person, the bitmask ``m`` of the buckets (bit numbers
    0..MASK_BITS-1 from the SQL expression ``bucket``; NULL for none) holding any of their events, and with
    ``first_day`` their first local day number among the rows considered.

    Four times cheaper than grouping by (bucket, device, user): the 10M rows are grouped by device and user only,
    with one ``bit_or`` each, and identity is resolved on that small result."""
    conditions = " AND ".join([*_scope_sql(scope, params), *where])
    first = (f", min({_DAY_NO}) AS first_day", ", min(e.first_day) AS first_day") if first_day else ("", "")
    return (f"WITH ids AS ({PERSONS}), "
            f"r AS (SELECT e.distinct_id, e.user_id, bit_or(1::HUGEINT << ({bucket})::HUGEINT) AS m{first[0]} "
            f"FROM events e {join} WHERE {conditions} GROUP BY ALL), "
            f"pm AS (SELECT {PERSON} AS person, coalesce(bit_or(e.m), 0::HUGEINT) AS m{first[1]} FROM r e "
            "LEFT JOIN ids ON ids.distinct_id = e.distinct_id GROUP BY person)")


def _hugeint(value: int) -> str:
    """A mask literal (computed here, never from input), exact whatever its size."""
    return f"'{int(value)}'::HUGEINT"


def _day_no(day: date) -> int:
    return (day - _EPOCH).days


def _utc_bounds(scope: Scope, start: date, end: date) -> tuple[datetime, datetime]:
    """Naive UTC ``[lo, hi)`` covering the local dates ``start..end``."""
    if start > end:
        raise ValueError("start is after end")
    shift = timedelta(minutes=scope.tz_offset_minutes)
    return (datetime.combine(start, time()) - shift, datetime.combine(end + timedelta(days=1), time()) - shift)


def _period_start(day: date, unit: str) -> date:
    if unit == "week":
        return day - timedelta(days=day.weekday())
    if unit == "month":
        return day.replace(day=1)
    return day


def _next_period(day: date, unit: str) -> date:
    if unit == "week":
        return day + timedelta(days=7)
    if unit == "month":
        return date(day.year + day.month // 12, day.month % 12 + 1, 1)
    return day + timedelta(days=1)


def _rows(cursor: duckdb.DuckDBPyConnection) -> list[dict[str, Any]]:
    names = [d[0] for d in cursor.description or ()]
    return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


def _ratio(num: int, den: int) -> float | None:
    return round(num / den, 4) if den else None


def _aware(ts: datetime | None) -> datetime | None:
    return None if ts is None else ts.replace(tzinfo=UTC)


# --------------------------------------------------------------------------- dashboards

def active_users(con: duckdb.DuckDBPyConnection, scope: Scope, start: date, end: date,
                 interval: Literal["day", "week", "month"] = "day") -> list[dict[str, Any]]:
    """Distinct persons per period overlapping ``start..end`` (zeros included)."""
    unit = _UNITS.get(interval)
    if unit is None:
        raise ValueError(f"interval must be day, week or month, not {interval!r}")
    lo, hi = _utc_bounds(scope, start, end)
    periods: list[date] = []
    period = _period_start(start, unit)
    while period <= end:
        periods.append(period)
        period = _next_period(period, unit)
    params = _Params(scope)
    where = [f"e.ts >= {params.add(lo)}", f"e.ts < {params.add(hi)}", _CLIENT]
    if (end - start).days < MASK_BITS:
        # bit d = the range's day d; a period's mask holds its days inside the range
        masks = [sum(1 << d for d in range((max(p, start) - start).days,
                                           (min(_next_period(p, unit) - timedelta(days=1), end) - start).days + 1))
                 for p in periods]
        sql = (_mask_cte(scope, params, f"{_DAY_NO} - {params.add(_day_no(start))}", where) + " SELECT "
               + ", ".join(f"count(*) FILTER (WHERE (m & {_hugeint(mask)}) <> 0)" for mask in masks) + " FROM pm")
        row = params.run(con, sql).fetchone() or ()
        counts = dict(zip(periods, row, strict=True))
    else:
        sql = (_rollup_cte(scope, params, [("day_no", _DAY_NO)], where)
               + f" SELECT CAST(date_trunc('{unit}', {_DAY_OF.format('day_no')}) AS DATE) AS period, "
               "count(DISTINCT person) FROM ev GROUP BY period")
        counts = dict(params.run(con, sql).fetchall())
    return [{"period_start": p, "active_users": int(counts.get(p, 0))} for p in periods]


def retention(con: duckdb.DuckDBPyConnection, scope: Scope, start: date, end: date,
              period: Literal["day", "week"] = "day", horizon: int = 7,
              as_of: date | None = None) -> list[dict[str, Any]]:
    """Cohorts by first event ever, and how many of each come back ``k`` periods later."""
    if period not in ("day", "week"):
        raise ValueError(f"period must be day or week, not {period!r}")
    if not 0 <= horizon <= 366:
        raise ValueError("horizon must be within 0..366")
    if start > end:
        raise ValueError("start is after end")
    step = 7 if period == "week" else 1
    cohorts: list[date] = []
    c = _period_start(start, period)
    while c <= end:
        if c >= start:
            cohorts.append(c)
        c = _next_period(c, period)
    if as_of is None:                   # max(ts) is answered from the row groups' statistics
        last = _Params(scope).run(con, "SELECT CAST(max(ts) + to_minutes($tz) AS DATE) FROM events "
                                       "WHERE app_id = $app_id AND mode = $mode").fetchone()
        as_of = last[0] if last and last[0] is not None else end
    counts: dict[tuple[date, int], int] = {}
    window = (cohorts[-1] - cohorts[0]).days + (horizon + 1) * step if cohorts else 0
    if cohorts and window <= MASK_BITS:
        # bit d = day d from the first cohort's first day; the first day is over all history
        params = _Params(scope)
        d0, d1 = params.add(_day_no(cohorts[0])), params.add(_day_no(cohorts[0]) + window - 1)
        bucket = f"CASE WHEN {_DAY_NO} BETWEEN {d0} AND {d1} THEN {_DAY_NO} - {d0} END"
        cohort_sql = "first_day" if step == 1 else "first_day - (first_day + 3) % 7"  # 1970-01-01 was a Thursday
        period_bits = _hugeint((1 << step) - 1)
        sql = (_mask_cte(scope, params, bucket, [_CLIENT], first_day=True)
               + " SELECT c, " + ", ".join(
                   f"count(*) FILTER (WHERE ((m >> (c - {d0} + {k * step})::HUGEINT) & {period_bits}) <> 0)"
                   for k in range(horizon + 1))
               + f" FROM (SELECT {cohort_sql} AS c, m FROM pm) WHERE c BETWEEN {params.add(_day_no(cohorts[0]))} "
               f"AND {params.add(_day_no(cohorts[-1]))} GROUP BY c")
        for row in params.run(con, sql).fetchall():
            for k, n in enumerate(row[1:]):
                counts[(_EPOCH + timedelta(days=int(row[0])), k)] = int(n)
    elif cohorts:
        params = _Params(scope)
        first_c, last_c = params.add(cohorts[0]), params.add(cohorts[-1])
        sql = (_rollup_cte(scope, params, [("day_no", _DAY_NO)], [_CLIENT])
               + f", pp AS (SELECT DISTINCT person, CAST(date_trunc('{period}', {_DAY_OF.format('day_no')}) AS DATE) "
               "AS p FROM ev)"
               ", firsts AS (SELECT person, min(p) AS c FROM pp GROUP BY person)"
               f" SELECT f.c, date_diff('day', f.c, pp.p) // {step} AS k, count(*) FROM firsts f "
               f"JOIN pp ON pp.person = f.person WHERE f.c BETWEEN {first_c} AND {last_c} "
               f"AND pp.p <= f.c + {params.add(horizon * step)}::INTEGER GROUP BY ALL")
        counts = {(row[0], int(row[1])): int(row[2]) for row in params.run(con, sql).fetchall()}
    out: list[dict[str, Any]] = []
    for cohort in cohorts:
        retained: list[int | None] = [
            None if cohort + timedelta(days=k * step) > as_of else counts.get((cohort, k), 0)
            for k in range(horizon + 1)]
        out.append({"cohort": cohort, "size": counts.get((cohort, 0), 0), "retained": retained})
    return out


def funnel(con: duckdb.DuckDBPyConnection, scope: Scope, steps: Sequence[Step], start: date, end: date,
           window_seconds: int) -> list[dict[str, Any]]:
    """Ordered conversion through ``steps`` within ``window_seconds`` of each person's first step-1 event."""
    if not 2 <= len(steps) <= 10:
        raise ValueError("a funnel has 2 to 10 steps")
    if window_seconds <= 0:
        raise ValueError("window_seconds must be positive")
    lo, hi = _utc_bounds(scope, start, end)
    params = _Params(scope)
    p_lo, p_hi, p_win = params.add(lo), params.add(hi), params.add(window_seconds)
    names = [params.add(s.name) for s in steps]
    columns = ["ts", "name"] + (["properties"] if any(s.properties for s in steps) else [])
    ev = _events_cte(scope, params, columns, [
        f"e.ts >= {p_lo}", f"e.ts <= {p_hi} + to_seconds({p_win}::BIGINT)",
        f"e.name IN ({', '.join(dict.fromkeys(names))})"])
    ctes = [ev]
    cond = " AND ".join([f"e.name = {names[0]}", f"e.ts < {p_hi}", *_property_sql(steps[0].properties, params)])
    ctes.append(f"s1 AS (SELECT e.person, min(e.ts) AS t1, min(e.ts) AS t, NULL::DOUBLE AS d FROM ev e "
                f"WHERE {cond} GROUP BY e.person)")
    for i in range(2, len(steps) + 1):
        cond = " AND ".join([f"e.name = {names[i - 1]}", "e.ts >= s.t", f"e.ts <= s.t1 + to_seconds({p_win}::BIGINT)",
                             *_property_sql(steps[i - 1].properties, params)])
        ctes.append(f"s{i} AS (SELECT s.person, s.t1, min(e.ts) AS t, epoch(min(e.ts)) - epoch(s.t) AS d "
                    f"FROM s{i - 1} s JOIN ev e ON e.person = s.person WHERE {cond} GROUP BY s.person, s.t1, s.t)")
    select = " UNION ALL ".join(f"SELECT {i} AS step, count(*) AS persons, median(d) AS med FROM s{i}"
                                for i in range(1, len(steps) + 1))
    result = {int(r[0]): (int(r[1]), r[2])
              for r in params.run(con, ", ".join(ctes) + " " + select).fetchall()}
    out: list[dict[str, Any]] = []
    first = result[1][0]
    for i, step in enumerate(steps, start=1):
        persons, med = result[i]
        prev = result[i - 1][0] if i > 1 else 0
        out.append({"step": i, "name": step.name, "persons": persons,
                    "conversion_from_previous": _ratio(persons, prev) if i > 1 else None,
                    "conversion_overall": _ratio(persons, first),
                    "median_seconds_from_previous": None if med is None or i == 1 else round(float(med), 4)})
    return out


def top_events(con: duckdb.DuckDBPyConnection, scope: Scope, start: date, end: date,
               limit: int = 20) -> list[dict[str, Any]]:
    """The most frequent event names in the range, with the distinct persons behind each."""
    return _top(con, scope, start, end, limit, "name", ("name", "events"), None)


def top_pages(con: duckdb.DuckDBPyConnection, scope: Scope, start: date, end: date,
              limit: int = 20) -> list[dict[str, Any]]:
    """The most viewed pages (``kind = 'page_view'``) in the range."""
    return _top(con, scope, start, end, limit, "page", ("page", "views"), "e.kind = 'page_view' AND e.page IS NOT NULL")


def _top(con: duckdb.DuckDBPyConnection, scope: Scope, start: date, end: date, limit: int, column: str,
         labels: tuple[str, str], extra: str | None) -> list[dict[str, Any]]:
    if not 1 <= limit <= 1000:
        raise ValueError("limit must be within 1..1000")
    lo, hi = _utc_bounds(scope, start, end)
    params = _Params(scope)
    where = [f"e.ts >= {params.add(lo)}", f"e.ts < {params.add(hi)}"] + ([extra] if extra else [])
    if limit > MASK_BITS:
        sql = (_rollup_cte(scope, params, [(column, f"e.{column}")], where, [("n", "count(*)")])
               + f" SELECT {column}, sum(n) AS total, count(DISTINCT person) AS persons FROM ev GROUP BY {column} "
               f"ORDER BY total DESC, {column} LIMIT {params.add(limit)}")
        return [{labels[0]: key, labels[1]: int(n), "persons": int(persons)}
                for key, n, persons in params.run(con, sql).fetchall()]
    # the ranking needs no identity (a 10M-row count by one column); persons only for the winners, as bit i of
    # each person's mask = "has an event of the i-th key"
    conditions = " AND ".join([*_scope_sql(scope, params), *where])
    top = params.run(con, f"SELECT e.{column}, count(*) AS n FROM events e WHERE {conditions} GROUP BY e.{column} "
                          f"ORDER BY n DESC, e.{column} LIMIT {params.add(limit)}").fetchall()
    if not top:
        return []
    keys = params.add([key for key, _ in top])
    join = (f"JOIN (SELECT unnest({keys}::VARCHAR[]) AS k, unnest(range(len({keys}::VARCHAR[]))) AS i) nm "
            f"ON nm.k = e.{column}")
    sql = (_mask_cte(scope, params, "nm.i", where, join=join) + " SELECT "
           + ", ".join(f"count(*) FILTER (WHERE ((m >> {i}::HUGEINT) & 1) <> 0)" for i in range(len(top)))
           + " FROM pm")
    persons = params.run(con, sql).fetchone() or ()
    return [{labels[0]: key, labels[1]: int(n), "persons": int(p)}
            for (key, n), p in zip(top, persons, strict=True)]


# --------------------------------------------------------------------------- payment funnel

def payment_links(con: duckdb.DuckDBPyConnection, scope: Scope, start: date, end: date, window_seconds: int,
                  view_events: Sequence[str] = ("view_product",),
                  order_owners: Mapping[str, str] | None = None) -> list[PersonPayments]:
    """Every person with a view event in the range, and the orders linked to them (see the module docstring)."""
    return _payment_links(con, scope, start, end, window_seconds, view_events, order_owners, linked_only=False)[1]


def payment_links_summary(con: duckdb.DuckDBPyConnection, scope: Scope, start: date, end: date,
                          window_seconds: int, view_events: Sequence[str] = ("view_product",),
                          order_owners: Mapping[str, str] | None = None) -> tuple[int, list[PersonPayments]]:
    """(how many persons viewed, the viewers with linked orders): what :func:`payment_funnel` needs, without one
    object per viewer who never ordered — most of them, and most of the cost at millions of events."""
    return _payment_links(con, scope, start, end, window_seconds, view_events, order_owners, linked_only=True)


def _payment_links(con: duckdb.DuckDBPyConnection, scope: Scope, start: date, end: date, window_seconds: int,
                   view_events: Sequence[str], order_owners: Mapping[str, str] | None, *,
                   linked_only: bool) -> tuple[int, list[PersonPayments]]:
    if window_seconds <= 0:
        raise ValueError("window_seconds must be positive")
    if not view_events:
        raise ValueError("at least one view event name is needed")
    lo, hi = _utc_bounds(scope, start, end)
    owners = dict(order_owners or {})
    params = _Params(scope)
    p_lo, p_hi, p_win = params.add(lo), params.add(hi), params.add(window_seconds)
    views = ", ".join(params.add(name) for name in dict.fromkeys(view_events))
    p_req, p_res = params.add(PAYMENT_REQUEST), params.add(PAYMENT_RESULT)
    p_oids, p_owners = params.add(list(owners)), params.add(list(owners.values()))
    conditions = " AND ".join([*_scope_sql(scope, params), f"e.ts >= {p_lo}",
                               f"((e.name IN ({views}) AND e.ts < {p_hi}) OR "
                               f"(e.name IN ({p_req}, {p_res}) AND e.order_id IS NOT NULL))"])
    sql = (
        # only a result's status is carried, not every row's JSON
        f"WITH ids AS ({PERSONS}), ev AS (SELECT {PERSON} AS person, e.ts, e.seq, e.name, e.order_id, "
        f"CASE WHEN e.name = {p_res} THEN coalesce(json_extract_string(e.properties, '$.status'), '') END AS status "
        f"FROM events e LEFT JOIN ids ON ids.distinct_id = e.distinct_id WHERE {conditions})"
        f", views AS (SELECT person, min(ts) AS view_ts FROM ev WHERE name IN ({views}) AND ts < {p_hi} "
        "GROUP BY person)"
        f", pay AS (SELECT * FROM ev WHERE name IN ({p_req}, {p_res}))"
        ", by_event AS (SELECT DISTINCT v.person, p.order_id FROM views v JOIN pay p ON p.person = v.person "
        f"AND p.ts >= v.view_ts AND p.ts <= v.view_ts + to_seconds({p_win}::BIGINT))"
        f", owners AS (SELECT unnest({p_oids}::VARCHAR[]) AS order_id, unnest({p_owners}::VARCHAR[]) AS owner)"
        ", by_owner AS (SELECT DISTINCT coalesce(ids.first_user_id, o.owner) AS person, o.order_id FROM owners o "
        "LEFT JOIN ids ON ids.distinct_id = o.owner)"
        ", links AS (SELECT person, order_id, bool_or(via_event) AS via_event, bool_or(via_owner) AS via_owner "
        "FROM (SELECT person, order_id, true AS via_event, false AS via_owner FROM by_event UNION ALL "
        "SELECT person, order_id, false, true FROM by_owner SEMI JOIN views USING (person)) GROUP BY person, order_id)"
        f", facts AS (SELECT order_id, min(ts) FILTER (WHERE name = {p_req}) AS requested_at, "
        f"arg_max(status, (ts, seq)) FILTER (WHERE name = {p_res}) AS status, "
        f"max(ts) FILTER (WHERE name = {p_res}) AS result_at, count(*) FILTER (WHERE name = {p_res}) AS results "
        "FROM pay SEMI JOIN links USING (order_id) GROUP BY order_id)"
        " SELECT v.person, v.view_ts, l.order_id, l.via_event, l.via_owner, f.requested_at, f.status, f.result_at, "
        f"f.results FROM views v {'' if linked_only else 'LEFT '}JOIN links l ON l.person = v.person "
        "LEFT JOIN facts f ON f.order_id = l.order_id"
        # linked only: the viewers without orders are counted, not listed (a first row with no person)
        + (" UNION ALL SELECT NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, count(*) FROM views"
           if linked_only else "")
        + " ORDER BY 1 NULLS FIRST, 3"
    )
    rows = params.run(con, sql).fetchall()
    viewers = 0
    if linked_only:
        viewers, rows = int(rows[0][8]), rows[1:]
    out: list[PersonPayments] = []
    i, n = 0, len(rows)
    while i < n:                        # rows come grouped by person; most persons have no order (one row)
        person, view_ts = rows[i][0], rows[i][1].replace(tzinfo=UTC)
        if rows[i][2] is None:
            out.append(PersonPayments(person, view_ts, ()))
            i += 1
            continue
        orders: list[OrderLink] = []
        while i < n and rows[i][0] == person:
            _, _, order_id, via_event, via_owner, requested_at, status, result_at, results = rows[i]
            orders.append(OrderLink(order_id, bool(via_event), bool(via_owner), _aware(requested_at),
                                    (status if status in RESULT_STATUSES else "unknown") if results else None,
                                    _aware(result_at)))
            i += 1
        out.append(PersonPayments(person, view_ts, tuple(orders)))
    return (viewers if linked_only else len(out)), out


def payment_funnel(links: Sequence[PersonPayments], ledger: Mapping[str, LedgerOrder],
                   window_seconds: int, *, viewers: int | None = None) -> dict[str, Any]:
    """Join the client's view of payments to the ledger; the ledger decides what was paid. ``viewers`` is the
    first step's count when ``links`` holds only the viewers with orders (:func:`payment_links_summary`)."""
    window = timedelta(seconds=window_seconds)
    reached = {name: 0 for name in ("viewed", "ordered", "payment_requested", "client_reported_success",
                                    "verified_paid")}
    linked: set[str] = set()
    not_in_ledger: set[str] = set()
    outside_window: set[str] = set()
    counted: dict[str, LedgerOrder] = {}
    requested: set[str] = set()
    client_success: set[str] = set()
    for pp in links:
        reached["viewed"] += 1
        mine: list[tuple[OrderLink, LedgerOrder]] = []
        for link in pp.orders:
            linked.add(link.order_id)
            order = ledger.get(link.order_id)
            if order is None:
                not_in_ledger.add(link.order_id)
            elif link.via_events or pp.view_ts <= order.created_at <= pp.view_ts + window:
                mine.append((link, order))
            else:
                outside_window.add(link.order_id)
        if not mine:
            continue
        reached["ordered"] += 1
        for link, order in mine:
            counted[order.order_id] = order
            if link.requested_at is not None:
                requested.add(order.order_id)
            if link.result_status == "success":
                client_success.add(order.order_id)
        reached["payment_requested"] += any(link.requested_at is not None for link, _ in mine)
        reached["client_reported_success"] += any(link.result_status == "success" for link, _ in mine)
        reached["verified_paid"] += any(order.paid_at is not None for _, order in mine)
    if viewers is not None:
        reached["viewed"] = viewers
    paid = {oid for oid, order in counted.items() if order.paid_at is not None}
    outside_window -= set(counted)
    steps: list[dict[str, Any]] = []
    previous: int | None = None
    for name, persons in reached.items():
        steps.append({"step": name, "persons": persons,
                      "conversion_from_previous": None if previous is None else _ratio(persons, previous),
                      "conversion_overall": _ratio(persons, reached["viewed"])})
        previous = persons
    success_unverified = sorted(client_success - paid)
    verified_no_success = sorted(paid - client_success)
    return {
        "steps": steps,
        "orders": {"linked": len(linked), "counted": len(counted), "not_in_ledger": len(not_in_ledger),
                   "owner_link_outside_window": len(outside_window), "payment_requested": len(requested),
                   "client_reported_success": len(client_success), "verified_paid": len(paid)},
        "diagnostics": {
            "client_success_not_verified": len(success_unverified),
            "client_success_not_verified_orders": success_unverified,
            "verified_without_client_success": len(verified_no_success),
            "verified_without_client_success_orders": verified_no_success,
            "paid_amount": sum(counted[oid].amount for oid in paid),
            "refunded_amount": sum(counted[oid].amount_refunded for oid in paid),
        },
    }


# --------------------------------------------------------------------------- metrics, export, erasure

def external_metrics(con: duckdb.DuckDBPyConnection, app_id: str, mode: str, source: str, metric: str,
                     start: date, end: date) -> list[dict[str, Any]]:
    """One source's metric rows for ``start..end`` (``ref_date`` is the source's own date), date-ordered."""
    if start > end:
        raise ValueError("start is after end")
    return _rows(con.execute(
        "SELECT ref_date, dimension, key, value, pulled_at FROM external_metrics WHERE app_id = $app_id "
        "AND mode = $mode AND source = $source AND metric = $metric AND ref_date BETWEEN $start AND $end "
        "ORDER BY ref_date, dimension, key",
        {"app_id": app_id, "mode": mode, "source": source, "metric": metric, "start": start, "end": end}))


_PERSON_MATCH = (
    "app_id = $app_id AND mode = $mode AND (distinct_id = $person OR user_id = $person OR (user_id IS NULL "
    "AND distinct_id IN (SELECT distinct_id FROM events WHERE app_id = $app_id AND mode = $mode "
    "AND user_id = $person)))"
)


def person_events(con: duckdb.DuckDBPyConnection, app_id: str, mode: str, person_id: str,
                  limit: int | None = None) -> list[dict[str, Any]]:
    """Every event of a person, oldest first, ``properties`` as an object (for a data-subject export)."""
    params: dict[str, Any] = {"app_id": app_id, "mode": mode, "person": person_id}
    sql = f"SELECT * FROM events WHERE {_PERSON_MATCH} ORDER BY ts, seq"
    if limit is not None:
        if limit < 1:
            raise ValueError("limit must be positive")
        sql += " LIMIT $limit"
        params["limit"] = limit
    rows = _rows(con.execute(sql, params))
    for row in rows:
        if isinstance(row.get("properties"), str):
            row["properties"] = json.loads(row["properties"])
    return rows


def erase_person_sql(app_id: str, mode: str, person_id: str) -> tuple[str, dict[str, Any]]:
    """The DELETE that removes :func:`person_events`' rows, with its parameters."""
    return f"DELETE FROM events WHERE {_PERSON_MATCH}", {"app_id": app_id, "mode": mode, "person": person_id}


def erase_person(con: duckdb.DuckDBPyConnection, app_id: str, mode: str, person_id: str) -> int:
    """Delete a person's events; returns how many rows went."""
    sql, params = erase_person_sql(app_id, mode, person_id)
    row = con.execute(sql, params).fetchone()
    return int(row[0]) if row else 0

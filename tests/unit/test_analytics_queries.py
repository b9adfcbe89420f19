"""The analytics queries against a small data set whose every answer is computed by hand below.

The data set (app ``app1``, mode ``live`` unless noted; times are Beijing local, stored as UTC = local - 8 h;
March 2026, where 03-02 is a Monday). ``e<n>`` is the event id and row number; a person is the user id when the
device ever logged in, else the device id.

======  ===============  ==================  ====  =========  ======  ======================================
person  local time       name                dev   user_id    plat.   notes
======  ===============  ==================  ====  =========  ======  ======================================
alice   03-02 10:00      $pageview /home     d1    -          wechat  anonymous, d1's first user is u_alice
        03-02 10:05      view_product        d1    -          wechat  color=red, page /detail
        03-02 10:06      login               d1    u_alice
        03-02 10:20      add_to_cart         d1    u_alice
        03-02 10:35      checkout            d1    u_alice
        03-02 10:40/41   $payment_request/   d1    u_alice            order o1, result success
                         $payment_result
        03-05 09:00      $pageview /home     d1b   u_alice    alipay  second device
        03-09 20:00      view_product        d1b   u_alice    alipay  color=blue
bob     03-01 12:00      $pageview /home     d2    u_bob      alipay  ab-test=B
        03-03 12:00      view_product        d2    u_bob      alipay  color=blue
        03-03 12:30      add_to_cart
        03-03 13:00      checkout                                     exactly view + 3600 s
        03-03 13:01..06  request, result cancel, request, result success  (order o2, outside bob's window)
        03-08 08:00      $pageview /cart
d3      03-03 07:30      $pageview /home     d3    -          wechat  = 03-02 23:30 UTC (tz edge)
        03-03 07:40      view_product                                 color=red
        03-03 08:40      $payment_request                             order o7 (not in the ledger), view + 3600 s
        03-03 08:40:01   add_to_cart                                  view + 3601 s: outside the window
        03-04 10:00      $pageview /list
dora    03-04 10:55      $payment_request    d4    u_dora             order o10, before her view: not linked
        03-04 11:00      add_to_cart         d4    u_dora             before her view: must not convert
        03-04 11:10      view_product                                 color=red, page /detail
        03-04 11:20      $pageview /detail
d5      03-05 09:00      view_product        d5    -                  color=green (entry)
        03-05 09:30      $payment_request                             order o3
        03-05 11:00      view_product                                 color=red (repeated step 1)
        03-05 11:30      add_to_cart                                  2.5 h after the entry
frank   03-06 10:00      view_product        d6    -                  color=red; d6 logs in as u_frank later
        03-06 10:00      add_to_cart         d6    -                  same instant as the view
        03-06 10:30      checkout            d6    -
        03-07 09:00      login               d6    u_frank
        03-07 09:05      view_product        d6    u_frank
        03-10 09:00      $pageview /home     d6    u_frank
gina    02-27 10:00      $pageview /home     d7    u_gina             before every range
        03-02 10:00      $pageview /home
        03-13 10:00      view_product                                 after the range end 03-12
carol   03-08 10:00      $pageview /home     d8    -                  shared device: d8's first user is carol
        03-08 10:05      login               d8    u_carol
dave    03-09 10:00      login               d8    u_dave
        03-09 10:05      view_product        d8    u_dave             color=red
        03-09 10:10      add_to_cart         d8    u_dave
        03-09 10:12      $payment_request    d8    u_dave             order o6
carol   03-09 10:15      $pageview /cart     d8    -                  anonymous on d8 -> carol (first user)
dave    03-09 10:20      $payment_result     d8    u_dave             o6 fail
        03-09 10:25      $payment_result     d8    u_dave             o6, no status -> last result "unknown"
d10     03-12 23:50      view_product        d10   -                  color=green, last range day
        03-13 00:20      add_to_cart         d10   -                  after the range end, inside the window
u_zed   03-10 12:00      $payment_verified   d11   u_zed      server  kind "server": counted by tops, never as
                                                                      activity (active users, retention)
======  ===============  ==================  ====  =========  ======  ======================================

Noise that every query must ignore: app2 ``login`` of d1 as ``u_other`` on 03-01 08:00 (earlier than alice's
login: an app-blind identity would make d1 ``u_other``) and an app2 page view on 03-20 (after app1's last day);
an app1 ``test``-mode view by d9 on 03-03.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from typing import Any

import duckdb
import pytest

from minigate.analytics import queries
from minigate.analytics.queries import (
    LedgerOrder,
    OrderLink,
    PersonPayments,
    Scope,
    Step,
    active_users,
    erase_person,
    erase_person_sql,
    external_metrics,
    funnel,
    payment_funnel,
    payment_links,
    payment_links_summary,
    person_events,
    retention,
    top_events,
    top_pages,
)
from minigate.analytics.schema import DDL


def day(n: int) -> date:
    return date(2026, 3, n) if n <= 20 else date(2026, 2, n)


def local(n: int, hms: str) -> datetime:
    """Beijing local 2026-03-<n> (02-<n> for n > 20) at ``hms``, as the naive UTC the table stores."""
    h, m, *s = (int(x) for x in hms.split(":"))
    return datetime(day(n).year, day(n).month, day(n).day, h, m, s[0] if s else 0) - timedelta(hours=8)


def utc(n: int, hms: str) -> datetime:
    """The same instant as :func:`local`, UTC-aware (what the payment code returns)."""
    return local(n, hms).replace(tzinfo=UTC)


W, A = "wechat", "alipay"
PV = "$pageview"
REQ, RES = "$payment_request", "$payment_result"

# (n, day, time, name, distinct_id, user_id, platform, page, order_id, properties[, app, mode])
ROWS: list[tuple[Any, ...]] = [
    (1, 2, "10:00", PV, "d1", None, W, "/home", None, {}),
    (2, 2, "10:05", "view_product", "d1", None, W, "/detail", None, {"product": "p1", "color": "red"}),
    (3, 2, "10:06", "login", "d1", "u_alice", W, None, None, {}),
    (4, 2, "10:20", "add_to_cart", "d1", "u_alice", W, None, None, {"product": "p1"}),
    (5, 2, "10:35", "checkout", "d1", "u_alice", W, None, None, {}),
    (6, 2, "10:40", REQ, "d1", "u_alice", W, None, "o1", {"order_id": "o1"}),
    (7, 2, "10:41", RES, "d1", "u_alice", W, None, "o1", {"order_id": "o1", "status": "success"}),
    (8, 5, "09:00", PV, "d1b", "u_alice", A, "/home", None, {}),
    (9, 9, "20:00", "view_product", "d1b", "u_alice", A, None, None, {"color": "blue"}),
    (10, 1, "12:00", PV, "d2", "u_bob", A, "/home", None, {"ab-test": "B"}),
    (11, 3, "12:00", "view_product", "d2", "u_bob", A, None, None, {"color": "blue"}),
    (12, 3, "12:30", "add_to_cart", "d2", "u_bob", A, None, None, {}),
    (13, 3, "13:00", "checkout", "d2", "u_bob", A, None, None, {}),
    (14, 3, "13:01", REQ, "d2", "u_bob", A, None, "o2", {}),
    (15, 3, "13:02", RES, "d2", "u_bob", A, None, "o2", {"status": "cancel"}),
    (16, 3, "13:05", REQ, "d2", "u_bob", A, None, "o2", {}),
    (17, 3, "13:06", RES, "d2", "u_bob", A, None, "o2", {"status": "success"}),
    (18, 8, "08:00", PV, "d2", "u_bob", A, "/cart", None, {}),
    (19, 3, "07:30", PV, "d3", None, W, "/home", None, {}),
    (20, 3, "07:40", "view_product", "d3", None, W, None, None, {"color": "red"}),
    (21, 3, "08:40:01", "add_to_cart", "d3", None, W, None, None, {}),
    (22, 4, "10:00", PV, "d3", None, W, "/list", None, {}),
    (23, 4, "11:00", "add_to_cart", "d4", "u_dora", W, None, None, {}),
    (24, 4, "11:10", "view_product", "d4", "u_dora", W, "/detail", None, {"color": "red"}),
    (25, 4, "11:20", PV, "d4", "u_dora", W, "/detail", None, {}),
    (26, 5, "09:00", "view_product", "d5", None, W, None, None, {"color": "green"}),
    (27, 5, "11:00", "view_product", "d5", None, W, None, None, {"color": "red"}),
    (28, 5, "11:30", "add_to_cart", "d5", None, W, None, None, {}),
    (29, 6, "10:00", "view_product", "d6", None, W, None, None, {"color": "red"}),
    (30, 6, "10:00", "add_to_cart", "d6", None, W, None, None, {}),
    (31, 6, "10:30", "checkout", "d6", None, W, None, None, {}),
    (32, 7, "09:00", "login", "d6", "u_frank", W, None, None, {}),
    (33, 7, "09:05", "view_product", "d6", "u_frank", W, None, None, {}),
    (34, 10, "09:00", PV, "d6", "u_frank", W, "/home", None, {}),
    (35, 27, "10:00", PV, "d7", "u_gina", W, "/home", None, {}),
    (36, 2, "10:00", PV, "d7", "u_gina", W, "/home", None, {}),
    (37, 13, "10:00", "view_product", "d7", "u_gina", W, None, None, {}),
    (38, 8, "10:00", PV, "d8", None, W, "/home", None, {}),
    (39, 8, "10:05", "login", "d8", "u_carol", W, None, None, {}),
    (40, 9, "10:00", "login", "d8", "u_dave", W, None, None, {}),
    (41, 9, "10:05", "view_product", "d8", "u_dave", W, None, None, {"color": "red"}),
    (42, 9, "10:10", "add_to_cart", "d8", "u_dave", W, None, None, {}),
    (43, 9, "10:15", PV, "d8", None, W, "/cart", None, {}),
    (44, 1, "08:00", "login", "d1", "u_other", W, None, None, {}, "app2", "live"),
    (45, 3, "10:00", "view_product", "d9", None, W, None, None, {"color": "red"}, "app1", "test"),
    (46, 12, "23:50", "view_product", "d10", None, W, None, None, {"color": "green"}),
    (47, 13, "00:20", "add_to_cart", "d10", None, W, None, None, {}),
    (48, 5, "09:30", REQ, "d5", None, W, None, "o3", {}),
    (49, 3, "08:40", REQ, "d3", None, W, None, "o7", {}),
    (50, 9, "10:12", REQ, "d8", "u_dave", W, None, "o6", {}),
    (51, 9, "10:20", RES, "d8", "u_dave", W, None, "o6", {"status": "fail"}),
    (52, 9, "10:25", RES, "d8", "u_dave", W, None, "o6", {}),
    (53, 20, "09:00", PV, "d1", "u_other", W, "/home", None, {}, "app2", "live"),
    (54, 4, "10:55", REQ, "d4", "u_dora", W, None, "o10", {}),
    (55, 10, "12:00", "$payment_verified", "d11", "u_zed", "server", None, None, {}),
]

KINDS = {PV: "page_view", "$payment_verified": "server"}
SCOPE = Scope("app1", "live")
START, END = day(1), day(12)


def build() -> duckdb.DuckDBPyConnection:
    con = duckdb.connect()
    for statement in DDL:
        con.execute(statement)
    for row in ROWS:
        n, d, hms, name, did, uid, platform, page, order_id, props, *where = row
        app, mode = where or ("app1", "live")
        ts = local(d, hms)
        con.execute(
            "INSERT INTO events VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [n, app, mode, f"e{n}", name, KINDS.get(name, "event"), did, uid, f"s-{did}", ts,
             ts + timedelta(seconds=2), page, platform, order_id, json.dumps(props)])
    return con


@pytest.fixture(autouse=True, params=["bitmask", "generic"])
def query_path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run every test on both query shapes: bitmask rollups (short ranges, small limits) and the generic rollup."""
    if request.param == "generic":
        monkeypatch.setattr(queries, "MASK_BITS", 0)
    return str(request.param)


@pytest.fixture
def con() -> Iterator[duckdb.DuckDBPyConnection]:
    c = build()
    yield c
    c.close()


def test_data_set_is_as_described(con: duckdb.DuckDBPyConnection) -> None:
    # 55 rows: 52 of app1/live, 2 of app2, 1 of app1/test; the tz edge row is stored on the previous UTC day
    assert con.execute("SELECT count(*) FROM events").fetchone() == (55,)
    assert con.execute("SELECT count(*) FROM events WHERE app_id = 'app1' AND mode = 'live'").fetchone() == (52,)
    assert con.execute("SELECT ts FROM events WHERE seq = 19").fetchone() == (datetime(2026, 3, 2, 23, 30),)


# --------------------------------------------------------------------------- active users

def test_active_users_by_local_day(con: duckdb.DuckDBPyConnection) -> None:
    # 03-01 bob | 03-02 alice, gina (d3's 23:30 UTC view is 03-03 local) | 03-03 bob, d3 | 03-04 d3, dora
    # 03-05 alice (d1b), d5 | 03-06 frank (anonymous d6, resolved) | 03-07 frank | 03-08 bob, carol
    # 03-09 alice, dave, carol (anonymous on d8 -> carol) | 03-10 frank (u_zed's server event is not activity)
    # 03-11 nobody | 03-12 d10
    # gina's 02-27 and 03-13 rows and d10's 03-13 00:20 (16:20 UTC on 03-12) are outside the range.
    assert active_users(con, SCOPE, START, END, "day") == [
        {"period_start": day(n), "active_users": c}
        for n, c in zip(range(1, 13), [1, 2, 2, 2, 2, 1, 1, 2, 3, 1, 0, 1], strict=True)]


def test_active_users_by_week_and_month(con: duckdb.DuckDBPyConnection) -> None:
    # weeks start Monday: 03-01 is a Sunday, so its week starts 02-23 (only 03-01 is inside the range: bob);
    # 03-02..03-08: alice, gina, bob, d3, dora, d5, frank, carol = 8; 03-09..03-12: alice, dave, carol, frank, d10
    assert active_users(con, SCOPE, START, END, "week") == [
        {"period_start": date(2026, 2, 23), "active_users": 1},
        {"period_start": day(2), "active_users": 8},
        {"period_start": day(9), "active_users": 5},
    ]
    # the ten persons of the range (gina counts through 03-02)
    assert active_users(con, SCOPE, START, END, "month") == [{"period_start": day(1), "active_users": 10}]
    # a range across a month boundary yields both months; February's part is 02-27..02-28: gina only
    assert active_users(con, SCOPE, date(2026, 2, 27), day(1), "month") == [
        {"period_start": date(2026, 2, 1), "active_users": 1}, {"period_start": day(1), "active_users": 1}]


def test_active_users_time_zone(con: duckdb.DuckDBPyConnection) -> None:
    # at UTC, d3's 07:30-07:50 local rows fall on 03-02 (23:30-23:50 UTC): 03-02 = alice, gina, d3;
    # 03-03 = bob (04:00-05:06 UTC) and d3's add_to_cart (00:40:01 UTC)
    assert active_users(con, Scope("app1", "live", tz_offset_minutes=0), day(2), day(3)) == [
        {"period_start": day(2), "active_users": 3}, {"period_start": day(3), "active_users": 2}]
    assert active_users(con, SCOPE, day(2), day(3)) == [
        {"period_start": day(2), "active_users": 2}, {"period_start": day(3), "active_users": 2}]


def test_active_users_filters(con: duckdb.DuckDBPyConnection) -> None:
    # alipay rows: bob 03-01, 03-03, 03-08; alice (d1b) 03-05, 03-09
    alipay = active_users(con, Scope("app1", "live", platform="alipay"), START, END)
    assert [r["active_users"] for r in alipay] == [1, 0, 1, 0, 1, 0, 0, 1, 1, 0, 0, 0]
    # color=red rows: alice 03-02, d3 03-03, dora 03-04, d5 03-05 (11:00), frank 03-06 / dave 03-09
    red = active_users(con, Scope("app1", "live", properties={"color": "red"}), START, END, "week")
    assert [r["active_users"] for r in red] == [0, 5, 1]
    # a value is a bound parameter, never SQL: the classic injection matches nothing
    evil = active_users(con, Scope("app1", "live", properties={"color": "red' OR '1'='1"}), START, END, "month")
    assert evil == [{"period_start": day(1), "active_users": 0}]
    # a key with a dash (bob's ab-test=B, 03-01); mode "test" holds only d9's 03-03 row
    assert [r["active_users"] for r in active_users(
        con, Scope("app1", "live", properties={"ab-test": "B"}), START, day(3))] == [1, 0, 0]
    assert [r["active_users"] for r in active_users(con, Scope("app1", "test"), START, day(4))] == [0, 0, 1, 0]


# --------------------------------------------------------------------------- retention

def test_daily_retention_with_as_of(con: duckdb.DuckDBPyConnection) -> None:
    # first days: alice 03-02 (gina's first is 02-27: not a 03-02 newcomer), d3 03-03, dora 03-04, d5 03-05.
    # alice returns 03-05 (k=3); d3 returns 03-04 (k=1); with as_of 03-06 the periods from 03-07 are unknown.
    assert retention(con, SCOPE, day(2), day(5), "day", horizon=3, as_of=day(6)) == [
        {"cohort": day(2), "size": 1, "retained": [1, 0, 0, 1]},
        {"cohort": day(3), "size": 1, "retained": [1, 1, 0, 0]},
        {"cohort": day(4), "size": 1, "retained": [1, 0, 0, None]},
        {"cohort": day(5), "size": 1, "retained": [1, 0, None, None]},
    ]


def test_retention_reaches_the_last_day_of_the_horizon(con: duckdb.DuckDBPyConnection) -> None:
    # alice's 03-05 return is exactly cohort + horizon (the window's last day)
    assert retention(con, SCOPE, day(2), day(2), "day", horizon=3) == [
        {"cohort": day(2), "size": 1, "retained": [1, 0, 0, 1]}]


def test_daily_retention_default_as_of_and_empty_cohorts(con: duckdb.DuckDBPyConnection) -> None:
    # as_of defaults to app1/live's last local day, 03-13 (gina, d10); app2's 03-20 row does not count.
    # 03-10 and 03-11 have no newcomer (frank started 03-06; u_zed's only row is a server event); d10 starts 03-12
    # and returns 03-13.
    assert retention(con, SCOPE, day(10), day(12), "day", horizon=3) == [
        {"cohort": day(10), "size": 0, "retained": [0, 0, 0, 0]},
        {"cohort": day(11), "size": 0, "retained": [0, 0, 0, None]},
        {"cohort": day(12), "size": 1, "retained": [1, 1, None, None]},
    ]


def test_weekly_retention(con: duckdb.DuckDBPyConnection) -> None:
    # cohort weeks starting inside 03-01..03-12: 03-02 and 03-09 (02-23's week starts before the range).
    # 03-02 newcomers: alice, d3, dora, d5, frank, carol (bob started 03-01, gina 02-27: earlier week);
    # back in 03-09's week: alice (03-09), frank (03-10), carol (03-09) = 3; 03-16 is after as_of 03-13.
    # 03-09 newcomers: dave, d10.
    assert retention(con, SCOPE, START, END, "week", horizon=2) == [
        {"cohort": day(2), "size": 6, "retained": [6, 3, None]},
        {"cohort": day(9), "size": 2, "retained": [2, None, None]},
    ]
    # alipay only: alice's first alipay row is 03-05 (cohort 03-02) and she is back 03-09; bob's first is 03-01
    assert retention(con, Scope("app1", "live", platform="alipay"), START, END, "week", horizon=1) == [
        {"cohort": day(2), "size": 1, "retained": [1, 1]},
        {"cohort": day(9), "size": 0, "retained": [0, None]},
    ]


# --------------------------------------------------------------------------- funnel

STEPS = [Step("view_product"), Step("add_to_cart"), Step("checkout")]


def _funnel_rows(*rows: tuple[int, str, int, float | None, float | None, float | None]) -> list[dict[str, Any]]:
    return [{"step": s, "name": n, "persons": p, "conversion_from_previous": c, "conversion_overall": o,
             "median_seconds_from_previous": m} for s, n, p, c, o, m in rows]


def test_funnel(con: duckdb.DuckDBPyConnection) -> None:
    # entries (first view in range): alice 03-02 10:05 (anonymous d1 -> u_alice), bob, d3, dora, d5 09:00,
    # frank, dave, d10 = 8 (gina's view is 03-13).
    # add_to_cart within 3600 s: alice +900, bob +1800, frank +0 (same instant), dave +300, d10 +1800 (on 03-13,
    # after the range end but inside the window); d3 +3601 no; dora's is before her view; d5's is 9000 s after
    # her FIRST view. 5 persons, median of [0, 300, 900, 1800, 1800] = 900.
    # checkout after add_to_cart and <= view + 3600: alice 10:35 (+900), bob 13:00 = view + 3600 exactly
    # (+1800), frank (+1800). 3 persons, median 1800.
    assert funnel(con, SCOPE, STEPS, START, END, 3600) == _funnel_rows(
        (1, "view_product", 8, None, 1.0, None),
        (2, "add_to_cart", 5, 0.625, 0.625, 900.0),
        (3, "checkout", 3, 0.6, 0.375, 1800.0),
    )


def test_funnel_window_edge_is_inclusive(con: duckdb.DuckDBPyConnection) -> None:
    # one second less: bob's checkout (view + 3600) drops out; step 3 = alice (+900), frank (+1800) -> 1350
    assert funnel(con, SCOPE, STEPS, START, END, 3599) == _funnel_rows(
        (1, "view_product", 8, None, 1.0, None),
        (2, "add_to_cart", 5, 0.625, 0.625, 900.0),
        (3, "checkout", 2, 0.4, 0.25, 1350.0),
    )


def test_funnel_step_properties(con: duckdb.DuckDBPyConnection) -> None:
    # red views: alice, d3, dora, d5 (her 11:00 view is her first RED one), frank, dave = 6.
    # add_to_cart: alice +900, d5 11:30 (+1800), frank +0, dave +300 -> 4, median (300 + 900) / 2 = 600.
    # checkout: alice (+900), frank (+1800) -> 2, median 1350.
    steps = [Step("view_product", {"color": "red"}), Step("add_to_cart"), Step("checkout")]
    assert funnel(con, SCOPE, steps, START, END, 3600) == _funnel_rows(
        (1, "view_product", 6, None, 1.0, None),
        (2, "add_to_cart", 4, 0.6667, 0.6667, 600.0),
        (3, "checkout", 2, 0.5, 0.3333, 1350.0),
    )


def test_funnel_scope_filters_apply_to_every_step(con: duckdb.DuckDBPyConnection) -> None:
    # alipay: alice enters at 03-09 20:00 (d1b) and never adds to cart there; bob converts (+1800, +1800)
    assert funnel(con, Scope("app1", "live", platform="alipay"), STEPS, START, END, 3600) == _funnel_rows(
        (1, "view_product", 2, None, 1.0, None),
        (2, "add_to_cart", 1, 0.5, 0.5, 1800.0),
        (3, "checkout", 1, 1.0, 0.5, 1800.0),
    )
    # color=red on the scope: no add_to_cart row has a color, so nobody gets past step 1
    assert funnel(con, Scope("app1", "live", properties={"color": "red"}), STEPS, START, END, 3600) == _funnel_rows(
        (1, "view_product", 6, None, 1.0, None),
        (2, "add_to_cart", 0, 0.0, 0.0, None),
        (3, "checkout", 0, None, 0.0, None),
    )


def test_funnel_first_step_ends_with_the_range(con: duckdb.DuckDBPyConnection) -> None:
    # add_to_cart entries: alice, bob, d3, dora, d5, frank, dave = 7; d10's 03-13 00:20 add_to_cart is inside
    # "end + window" (where later steps may fall) but not inside the range, so d10 does not enter.
    # checkout: alice 10:20 -> 10:35 (+900), bob 12:30 -> 13:00 (+1800), frank 10:00 -> 10:30 (+1800).
    assert funnel(con, SCOPE, STEPS[1:], START, END, 3600) == _funnel_rows(
        (1, "add_to_cart", 7, None, 1.0, None),
        (2, "checkout", 3, 0.4286, 0.4286, 1800.0),
    )


def test_funnel_entry_must_be_inside_the_range(con: duckdb.DuckDBPyConnection) -> None:
    # from 03-04: dora, d5, frank, dave, d10 and alice (03-09 20:00) enter; bob and d3 viewed on 03-03.
    # add_to_cart: frank +0, dave +300, d10 +1800 -> median 300; checkout: frank +1800.
    assert funnel(con, SCOPE, STEPS, day(4), END, 3600) == _funnel_rows(
        (1, "view_product", 6, None, 1.0, None),
        (2, "add_to_cart", 3, 0.5, 0.5, 300.0),
        (3, "checkout", 1, 0.3333, 0.1667, 1800.0),
    )


# --------------------------------------------------------------------------- top events / pages

def test_top_events(con: duckdb.DuckDBPyConnection) -> None:
    # 49 app1/live rows in 03-01..03-12 (52 less gina's 02-27 and 03-13 rows and d10's 03-13 add_to_cart).
    # $pageview: rows 1 8 10 18 19 22 25 34 36 38 43 = 11, persons alice bob d3 dora frank gina carol = 7
    # (without identity resolution d1's anonymous row would be an 8th person); view_product: 11 rows of alice
    # bob d3 dora d5 frank dave d10 = 8; $payment_request 7 rows (alice, bob x2, d5, d3, dave, dora) / 6;
    # add_to_cart 7 rows / 7; $payment_result 5 rows (alice, bob x2, dave x2) / 3; login 4 / 4; checkout 3 / 3;
    # u_zed's server event counts here (1 / 1).
    # Ties by name: "$pageview" < "view_product", "$payment_request" < "add_to_cart".
    assert top_events(con, SCOPE, START, END) == [
        {"name": "$pageview", "events": 11, "persons": 7},
        {"name": "view_product", "events": 11, "persons": 8},
        {"name": "$payment_request", "events": 7, "persons": 6},
        {"name": "add_to_cart", "events": 7, "persons": 7},
        {"name": "$payment_result", "events": 5, "persons": 3},
        {"name": "login", "events": 4, "persons": 4},
        {"name": "checkout", "events": 3, "persons": 3},
        {"name": "$payment_verified", "events": 1, "persons": 1},
    ]
    assert [r["name"] for r in top_events(con, SCOPE, START, END, limit=2)] == ["$pageview", "view_product"]
    # alipay: $pageview 3 (alice, bob x2); then 2-event ties by name; then 1-event ties
    assert top_events(con, Scope("app1", "live", platform="alipay"), START, END) == [
        {"name": "$pageview", "events": 3, "persons": 2},
        {"name": "$payment_request", "events": 2, "persons": 1},
        {"name": "$payment_result", "events": 2, "persons": 1},
        {"name": "view_product", "events": 2, "persons": 2},
        {"name": "add_to_cart", "events": 1, "persons": 1},
        {"name": "checkout", "events": 1, "persons": 1},
    ]


def test_top_pages(con: duckdb.DuckDBPyConnection) -> None:
    # page views in range: /home rows 1 8 10 19 34 36 38 (alice twice) -> 7 views / 6 persons (gina's 02-27
    # view is outside); /cart 18 43; /detail 25 only (views 2 and 24 carry page /detail but are not page views);
    # /list 22
    assert top_pages(con, SCOPE, START, END) == [
        {"page": "/home", "views": 7, "persons": 6},
        {"page": "/cart", "views": 2, "persons": 2},
        {"page": "/detail", "views": 1, "persons": 1},
        {"page": "/list", "views": 1, "persons": 1},
    ]
    assert top_pages(con, Scope("app1", "live", platform="alipay"), START, END, limit=1) == [
        {"page": "/home", "views": 2, "persons": 2}]


# --------------------------------------------------------------------------- payment funnel

OWNERS = {"o1": "d1", "o2": "u_bob", "o4": "d6", "o5": "u_frank", "o8": "zed", "o9": "u_gina"}


def test_payment_links(con: duckdb.DuckDBPyConnection) -> None:
    # viewers in range, ordered by person id: d10, d3, d5, u_alice, u_bob, u_dave, u_dora, u_frank.
    # d3: o7 by event (08:40 = view 07:40 + 3600 s exactly: the window is inclusive). d5: o3 by event (09:30). alice: o1 by events 10:40/10:41
    # and by owner "d1" (d1 resolves to u_alice). bob: his payment rows are 13:01.. (> 12:00 + 1 h), so o2 is
    # linked by owner only; its first request is 13:01 and its LAST result the 13:06 success (not the cancel).
    # dave: o6 by event; his last result (10:25) has no status -> "unknown". dora: her o10 request (10:55) is
    # before her view (11:10), so nothing is linked. frank: o4 via owner "d6" (resolved)
    # and o5 via "u_frank". o8 (unknown owner) and o9 (gina has no view in range) belong to nobody returned.
    assert payment_links(con, SCOPE, START, END, 3600, order_owners=OWNERS) == [
        PersonPayments("d10", utc(12, "23:50"), ()),
        PersonPayments("d3", utc(3, "07:40"), (OrderLink("o7", True, False, utc(3, "08:40"), None, None),)),
        PersonPayments("d5", utc(5, "09:00"), (OrderLink("o3", True, False, utc(5, "09:30"), None, None),)),
        PersonPayments("u_alice", utc(2, "10:05"), (
            OrderLink("o1", True, True, utc(2, "10:40"), "success", utc(2, "10:41")),)),
        PersonPayments("u_bob", utc(3, "12:00"), (
            OrderLink("o2", False, True, utc(3, "13:01"), "success", utc(3, "13:06")),)),
        PersonPayments("u_dave", utc(9, "10:05"), (
            OrderLink("o6", True, False, utc(9, "10:12"), "unknown", utc(9, "10:25")),)),
        PersonPayments("u_dora", utc(4, "11:10"), ()),
        PersonPayments("u_frank", utc(6, "10:00"), (
            OrderLink("o4", False, True, None, None, None), OrderLink("o5", False, True, None, None, None))),
    ]


def test_payment_links_scope_filters_and_identity(con: duckdb.DuckDBPyConnection) -> None:
    # red views only; identity is still resolved over all rows (alice's and frank's anonymous views map to their
    # user ids), and the payment rows carry no color, so no order is linked; d5 enters at her red view 11:00
    links = payment_links(con, Scope("app1", "live", properties={"color": "red"}), START, END, 3600)
    assert [(p.person, p.view_ts, p.orders) for p in links] == [
        ("d3", utc(3, "07:40"), ()), ("d5", utc(5, "11:00"), ()), ("u_alice", utc(2, "10:05"), ()),
        ("u_dave", utc(9, "10:05"), ()), ("u_dora", utc(4, "11:10"), ()), ("u_frank", utc(6, "10:00"), ())]
    # another view event: add_to_cart entries; d10's 03-13 add_to_cart is outside the range
    carts = payment_links(con, SCOPE, START, END, 3600, view_events=["add_to_cart"])
    assert [p.person for p in carts] == ["d3", "d5", "u_alice", "u_bob", "u_dave", "u_dora", "u_frank"]


LEDGER = {
    "o1": LedgerOrder("o1", utc(2, "10:39"), "paid", utc(2, "10:41"), 1000, 300),
    "o2": LedgerOrder("o2", utc(3, "12:59"), "closed", None, 2000, 0),
    "o3": LedgerOrder("o3", utc(5, "09:29"), "paid", utc(5, "09:31"), 500, 0),
    "o4": LedgerOrder("o4", utc(6, "11:00"), "created", None, 700, 0),          # view + 3600 s exactly
    "o5": LedgerOrder("o5", utc(7, "12:00"), "paid", utc(7, "12:05"), 900, 400),  # owner-linked, a day late
    "o6": LedgerOrder("o6", utc(9, "10:11"), "refunded", utc(9, "10:30"), 1500, 1500),
}


def test_payment_funnel(con: duckdb.DuckDBPyConnection) -> None:
    links = payment_links(con, SCOPE, START, END, 3600, order_owners=OWNERS)
    # viewed 8. Counted orders: d5 o3, alice o1, bob o2 (owner-linked, created 12:59 inside 12:00 + 1 h),
    # dave o6, frank o4 (created exactly view + 3600 s); not counted: o7 (not in the ledger), o5 (owner-linked,
    # created the next day). ordered = d5, alice, bob, dave, frank = 5; requested (a request row) = d5, alice,
    # bob, dave = 4; client success = alice, bob = 2; ledger paid = alice (o1), d5 (o3), dave (o6) = 3.
    result = payment_funnel(links, LEDGER, 3600)
    assert result["steps"] == [
        {"step": "viewed", "persons": 8, "conversion_from_previous": None, "conversion_overall": 1.0},
        {"step": "ordered", "persons": 5, "conversion_from_previous": 0.625, "conversion_overall": 0.625},
        {"step": "payment_requested", "persons": 4, "conversion_from_previous": 0.8, "conversion_overall": 0.5},
        {"step": "client_reported_success", "persons": 2, "conversion_from_previous": 0.5,
         "conversion_overall": 0.25},
        {"step": "verified_paid", "persons": 3, "conversion_from_previous": 1.5, "conversion_overall": 0.375},
    ]
    assert result["orders"] == {"linked": 7, "counted": 5, "not_in_ledger": 1, "owner_link_outside_window": 1,
                                "payment_requested": 4, "client_reported_success": 2, "verified_paid": 3}
    # o2: the client saw success, the ledger never got paid; o3 (no result) and o6 ("unknown") were paid.
    # paid: 1000 + 500 + 1500 (o5's 900 is not counted); refunded: 300 + 0 + 1500 (not o5's 400).
    assert result["diagnostics"] == {
        "client_success_not_verified": 1, "client_success_not_verified_orders": ["o2"],
        "verified_without_client_success": 2, "verified_without_client_success_orders": ["o3", "o6"],
        "paid_amount": 3000, "refunded_amount": 1800,
    }


def test_the_summary_gives_the_same_funnel_without_listing_viewers_who_never_ordered(
        con: duckdb.DuckDBPyConnection) -> None:
    full = payment_links(con, SCOPE, START, END, 3600, order_owners=OWNERS)
    viewers, linked = payment_links_summary(con, SCOPE, START, END, 3600, order_owners=OWNERS)
    assert viewers == len(full) == 8
    assert linked == [p for p in full if p.orders]
    assert payment_funnel(linked, LEDGER, 3600, viewers=viewers) == payment_funnel(full, LEDGER, 3600)
    assert payment_links_summary(con, SCOPE, START, END, 3600, view_events=["nothing_like_it"]) == (0, [])


def test_payment_funnel_owner_window_edges() -> None:
    view = utc(6, "10:00")
    links = [PersonPayments("p", view, (OrderLink("a", False, True, None, None, None),))]
    ledger = {"a": LedgerOrder("a", view - timedelta(seconds=1), "paid", view, 100, 0)}
    # created one second before the view: an owner-only link does not count
    assert payment_funnel(links, ledger, 60)["steps"][1]["persons"] == 0
    ledger = {"a": LedgerOrder("a", view, "paid", view, 100, 0)}
    out = payment_funnel(links, ledger, 60)
    assert [s["persons"] for s in out["steps"]] == [1, 1, 0, 0, 1]
    assert out["diagnostics"]["paid_amount"] == 100
    # linked by events, the ledger time does not matter
    links = [PersonPayments("p", view, (OrderLink("a", True, False, None, None, None),))]
    ledger = {"a": LedgerOrder("a", view - timedelta(days=3), "paid", view, 100, 0)}
    assert payment_funnel(links, ledger, 60)["orders"]["counted"] == 1
    # nobody viewed: conversions are undefined
    assert payment_funnel([], {}, 60)["steps"][1] == {
        "step": "ordered", "persons": 0, "conversion_from_previous": None, "conversion_overall": None}


# --------------------------------------------------------------------------- external metrics, export, erasure

def test_external_metrics(con: duckdb.DuckDBPyConnection) -> None:
    pulled = datetime(2026, 3, 4, 1, 0)
    rows = [
        ("wechat-datacube", "app1", "live", "daily_visit", day(2), "", "visit_uv", 10.0),
        ("wechat-datacube", "app1", "live", "daily_visit", day(1), "province", "Beijing", 3.0),
        ("wechat-datacube", "app1", "live", "daily_visit", day(1), "", "visit_uv", 8.0),
        ("wechat-datacube", "app1", "live", "daily_visit", day(5), "", "visit_uv", 99.0),    # after the range
        ("wechat-datacube", "app1", "live", "daily_retain", day(1), "", "visit_uv", 7.0),   # other metric
        ("umeng", "app1", "live", "daily_visit", day(1), "", "visit_uv", 6.0),              # other source
        ("wechat-datacube", "app2", "live", "daily_visit", day(1), "", "visit_uv", 5.0),    # other app
        ("wechat-datacube", "app1", "test", "daily_visit", day(1), "", "visit_uv", 4.0),    # other mode
    ]
    for r in rows:
        con.execute("INSERT INTO external_metrics VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", [*r, pulled])
    assert external_metrics(con, "app1", "live", "wechat-datacube", "daily_visit", day(1), day(3)) == [
        {"ref_date": day(1), "dimension": "", "key": "visit_uv", "value": 8.0, "pulled_at": pulled},
        {"ref_date": day(1), "dimension": "province", "key": "Beijing", "value": 3.0, "pulled_at": pulled},
        {"ref_date": day(2), "dimension": "", "key": "visit_uv", "value": 10.0, "pulled_at": pulled},
    ]


def _ids(rows: list[dict[str, Any]]) -> list[str]:
    return [r["event_id"] for r in rows]


def test_person_events(con: duckdb.DuckDBPyConnection) -> None:
    # u_alice: her identified rows 3-9 plus d1's anonymous rows 1-2; app2's u_other rows on d1 are not hers
    alice = person_events(con, "app1", "live", "u_alice")
    assert _ids(alice) == [f"e{n}" for n in range(1, 10)]
    assert alice[6]["properties"] == {"order_id": "o1", "status": "success"}
    assert alice[0]["ts"] == local(2, "10:00") and alice[0]["app_id"] == "app1" and alice[0]["seq"] == 1
    assert _ids(person_events(con, "app1", "live", "u_alice", limit=2)) == ["e1", "e2"]
    # u_dave: his rows plus d8's anonymous rows (38, 43), in time order; carol's login (39) is not his
    assert _ids(person_events(con, "app1", "live", "u_dave")) == ["e38", "e40", "e41", "e42", "e50", "e43", "e51",
                                                                    "e52"]
    # a device id matches its own rows
    assert _ids(person_events(con, "app1", "live", "d3")) == ["e19", "e20", "e49", "e21", "e22"]
    assert _ids(person_events(con, "app1", "test", "d9")) == ["e45"]
    assert person_events(con, "app1", "live", "nobody") == []


def test_erase_person(con: duckdb.DuckDBPyConnection) -> None:
    sql, params = erase_person_sql("app1", "live", "u_dave")
    assert sql.startswith("DELETE FROM events WHERE") and params == {"app_id": "app1", "mode": "live",
                                                                     "person": "u_dave"}
    assert "u_dave" not in sql
    assert erase_person(con, "app1", "live", "u_dave") == 8
    assert person_events(con, "app1", "live", "u_dave") == []
    # carol keeps her identified login; d8's anonymous rows went with dave
    assert _ids(person_events(con, "app1", "live", "u_carol")) == ["e39"]
    assert con.execute("SELECT count(*) FROM events").fetchone() == (47,)
    assert erase_person(con, "app1", "live", "u_dave") == 0
    # erasing in app1 leaves app2's rows of the same device alone
    assert erase_person(con, "app1", "live", "d1") == 7
    assert _ids(person_events(con, "app2", "live", "u_other")) == ["e44", "e53"]


# --------------------------------------------------------------------------- validation

@pytest.mark.parametrize("key", ["", "1abc", "a b", "color'", "a'); DROP TABLE events; --", "x" * 101, "é"])
def test_invalid_property_keys(key: str) -> None:
    with pytest.raises(ValueError, match="property key"):
        Scope("app1", "live", properties={key: "x"})
    with pytest.raises(ValueError, match="property key"):
        Step("view_product", {key: "x"})


def test_valid_property_keys_are_accepted() -> None:
    for key in ("color", "_x", "$os", "a.b", "ab-test", "x" * 100):
        assert Scope("app1", "live", properties={key: "1"}).properties == {key: "1"}


def test_invalid_arguments(con: duckdb.DuckDBPyConnection) -> None:
    with pytest.raises(ValueError):
        Scope("app1", "live", tz_offset_minutes=900)
    with pytest.raises(ValueError):
        Scope("app1", "live", properties={"color": 1})  # type: ignore[dict-item]
    with pytest.raises(ValueError):
        active_users(con, SCOPE, START, END, "year")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        active_users(con, SCOPE, END, START)
    with pytest.raises(ValueError):
        retention(con, SCOPE, START, END, "month")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        funnel(con, SCOPE, STEPS[:1], START, END, 3600)
    with pytest.raises(ValueError):
        funnel(con, SCOPE, STEPS * 4, START, END, 3600)
    with pytest.raises(ValueError):
        funnel(con, SCOPE, STEPS, START, END, 0)
    with pytest.raises(ValueError):
        top_events(con, SCOPE, START, END, limit=0)
    with pytest.raises(ValueError):
        payment_links(con, SCOPE, START, END, 3600, view_events=[])

"""The dashboard and an analytics page in a real browser, over a real gateway: orders created and paid over HTTP
on two channels and events collected with a publishable key; the numbers the drawn ECharts instances hold equal
the seeded ones; no script error or CSP violation; the dashboard fits a 390 px phone without sideways scrolling."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from tests.console.conftest import LiveConsole
from tests.console.support import screenshot, sign_in

WECHAT = [120, 880]        # fen, paid on WeChat Pay
ALIPAY = [450]             # paid on Alipay
UNPAID = 1                 # created, never paid
SERIES = "(el) => echarts.getInstanceByDom(el).getOption().series.map(s => s.data)"
ALL_DRAWN = ("() => { const c = [...document.querySelectorAll('.chart')];"
             " return c.length > 0 && c.every(e => e.getAttribute('data-rendered') === 'true'); }")


def _until(what: Callable[[], bool], message: str, seconds: float = 20.0) -> None:
    deadline = time.monotonic() + seconds
    while not what():
        assert time.monotonic() < deadline, message
        time.sleep(0.05)


def _order(http: httpx.Client, channel: str, amount: int, payer: str) -> dict[str, Any]:
    r = http.post("/v1/orders", json={"channel": channel, "amount": amount, "description": "Browser item",
                                      "merchant_order_no": f"B{uuid.uuid4().hex[:16]}", "payer": {"openid": payer}})
    assert r.status_code == 200, r.text
    return dict(r.json())


def _pay(http: httpx.Client, provider: str, order: dict[str, Any]) -> None:
    r = http.post(f"/sandbox/{provider}/_sandbox/pay", json={"out_trade_no": order["out_trade_no"]})
    assert r.status_code == 200, r.text
    _until(lambda: http.get(f"/v1/orders/{order['id']}").json()["status"] == "paid", f"{order['id']} not paid")


@pytest.fixture(scope="module")
def seeded(live_console: LiveConsole) -> LiveConsole:
    with httpx.Client(base_url=live_console.url, headers={"Authorization": f"Bearer {live_console.test_key}"},
                      timeout=10) as http:
        for amount in WECHAT:
            _pay(http, "wechatpay", _order(http, "wechat_mini", amount, "oTestOpenid0000000000000001"))
        for amount in ALIPAY:
            _pay(http, "alipay", _order(http, "alipay_mini", amount, "2088000000000001"))
        for _ in range(UNPAID):
            _order(http, "wechat_mini", 999, "oTestOpenid0000000000000001")
        key = http.post("/v1/analytics/publishable_keys").json()["key"]
        now = int(time.time() * 1000)
        events = [{"id": uuid.uuid4().hex, "type": "event", "name": "view_product", "ts": now,
                   "distinct_id": f"dev-{i}", "session_id": "s1", "properties": {}} for i in range(3)]
        r = http.post("/v1/analytics/collect", headers={"Authorization": f"Bearer {key}"},
                      json={"sent_at": now, "context": {"platform": "wechat"}, "events": events})
        assert r.status_code == 200 and r.json()["accepted"] == 3, r.text
        # the gateway's worker loads the journal into the store within a couple of seconds
        # (with a $payment_verified server event per paid order)
        expected = {"view_product": 3, "$payment_verified": len(WECHAT) + len(ALIPAY)}
        _until(lambda: {row["name"]: row["events"] for row in http.get("/v1/analytics/top_events").json()["data"]}
               == expected, "events never loaded")
    return live_console


def _drawn(page: Any) -> dict[str, list[Any]]:
    page.wait_for_function(ALL_DRAWN, timeout=15_000)
    return {el.get_attribute("data-chart"): page.evaluate(SERIES, el) for el in page.query_selector_all(".chart")}


def test_dashboard_charts_hold_the_seeded_numbers_on_laptop_and_phone(page: Any, seeded: LiveConsole) -> None:
    sign_in(page, seeded.url, "viewer")
    page.goto(f"{seeded.url}/console/")
    drawn = _drawn(page)
    assert set(drawn) == {"volume", "amount", "success", "refunds"}      # no SMS or identity checks were made
    zeros = [0] * 13
    assert drawn["volume"] == [zeros + [len(ALIPAY)], zeros + [len(WECHAT)]]     # alipay_mini, wechat_mini
    assert drawn["amount"] == [zeros + [sum(ALIPAY) / 100], zeros + [sum(WECHAT) / 100]]
    paid, created = len(WECHAT) + len(ALIPAY), len(WECHAT) + len(ALIPAY) + UNPAID
    assert drawn["success"] == [[None] * 13 + [round(100 * paid / created, 1)]]
    assert page.locator("[data-kpi=pending] .value").inner_text() == str(UNPAID)
    screenshot(page, "dashboard")
    assert page.errors == []

    page.set_viewport_size({"width": 390, "height": 844})
    page.reload()
    assert _drawn(page)["volume"] == drawn["volume"]
    assert page.evaluate("() => document.documentElement.scrollWidth") <= 390
    screenshot(page, "dashboard-phone")
    assert page.errors == []


def test_analytics_chart_holds_the_collected_events(page: Any, seeded: LiveConsole) -> None:
    sign_in(page, seeded.url, "viewer")
    page.goto(f"{seeded.url}/console/analytics")
    drawn = _drawn(page)
    assert drawn["active_users"][0][-1] == 3
    top = page.evaluate("(el) => { const o = echarts.getInstanceByDom(el).getOption();"
                        " return [o.yAxis[0].data, o.series[0].data]; }", page.query_selector("[data-chart=top_events]"))
    assert dict(zip(*top, strict=True)) == {"view_product": 3, "$payment_verified": len(WECHAT) + len(ALIPAY)}
    screenshot(page, "analytics")
    assert page.errors == []

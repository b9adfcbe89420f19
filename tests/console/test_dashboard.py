"""The dashboard over HTTP (SQLite and PostgreSQL): a known set of payments on two channels, unpaid and
unknown-outcome orders, refunds, failing and abandoned webhooks, delivered and failed SMS and passed and failed
identity checks; every number the charts carry and the tables list equals what was seeded, for this app and mode
only; the range and the day boundary can be chosen; bad input is refused with the API's codes."""

from __future__ import annotations

import html
import json
import re
from datetime import UTC, datetime, time, timedelta
from html.parser import HTMLParser
from typing import Any

import httpx
from sqlalchemy import select, update

from minigate.store.tables import Order, WebhookDelivery
from tests.conftest import Gateway
from tests.console.conftest import Console

_CHART = re.compile(r'data-chart="([a-z_]+)" data-option="([^"]*)"')
_KPI = re.compile(r'data-kpi="([a-z_]+)"><div class="label">[^<]*</div><div class="value">([^<]*)</div>')

WECHAT = [100, 250, 990]          # paid on WeChat Pay (fen)
ALIPAY = [500, 1200]              # paid on Alipay
UNPAID = [700, 800]               # created, never paid
REFUND = 300                      # refunded from the 990 order


def charts_of(page: str) -> dict[str, dict[str, Any]]:
    return {name: json.loads(html.unescape(option)) for name, option in _CHART.findall(page)}


def kpis_of(page: str) -> dict[str, str]:
    return {name: html.unescape(value).strip() for name, value in _KPI.findall(page)}


class _Tables(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tables: dict[str, list[list[str]]] = {}
        self._table: str | None = None
        self._cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "table":
            self._table = dict(attrs).get("data-table")
            if self._table:
                self.tables[self._table] = []
        elif tag == "tr" and self._table:
            self.tables[self._table].append([])
        elif tag in ("td", "th") and self._table:
            self._cell = []

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._table and self._cell is not None:
            self.tables[self._table][-1].append("".join(self._cell).strip())
            self._cell = None
        elif tag == "table":
            self._table = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)


def tables_of(page: str) -> dict[str, list[list[str]]]:
    parser = _Tables()
    parser.feed(page)
    return parser.tables


def series(option: dict[str, Any]) -> dict[str, list[Any]]:
    return {s.get("name", ""): s["data"] for s in option["series"]}


async def alipay_order(gw: Gateway, amount: int) -> dict[str, Any]:
    r = await gw.http.post("/v1/orders", headers=gw.auth, json={
        "channel": "alipay_mini", "amount": amount, "description": "Alipay item",
        "merchant_order_no": f"ALI{amount}", "payer": {"openid": "2088000000000001"}})
    assert r.status_code == 200, r.text
    r2 = await gw.http.post("/sandbox/alipay/_sandbox/pay", json={"out_trade_no": r.json()["out_trade_no"]})
    assert r2.status_code == 200, r2.text
    await gw.settle()
    return dict(r.json())


async def seed(gw: Gateway) -> None:
    """The data set every assertion below is about."""
    await gw.add_webhook(["order.paid"])
    gw.merchant.fail_next = 10_000
    paid = []
    for amount in WECHAT:
        order = await gw.create_order(amount=amount)
        await gw.pay(order)
        paid.append(order)
    for amount in ALIPAY:
        await alipay_order(gw, amount)
    for amount in UNPAID:
        await gw.create_order(amount=amount)
    for o in paid:
        assert (await gw.order(o["id"]))["status"] == "paid"
    r = await gw.http.post("/v1/refunds", headers=gw.auth, json={"order": paid[2]["id"], "amount": REFUND})
    assert r.status_code == 200, r.text
    await gw.settle()
    # webhooks: every delivery fails once; one of them has been failing for longer than the retry window
    await gw.run_worker()
    async with gw.rt.db.transaction() as session:
        first = (await session.execute(select(WebhookDelivery.id).order_by(WebhookDelivery.id).limit(1))).scalar_one()
        await session.execute(update(WebhookDelivery).where(WebhookDelivery.id == first).values(
            created_at=gw.rt.now() - timedelta(hours=72, seconds=1), next_attempt_at=gw.rt.now()))
    await gw.run_worker()
    # an order whose creation answer was lost: its outcome is unknown
    r = await gw.http.post("/sandbox/wechatpay/_sandbox/faults", json={
        "seconds": 0, "next_call": "charged_then_timeout", "path": "/v3/pay/transactions/jsapi"})
    assert r.status_code < 300, r.text
    r = await gw.http.post("/v1/orders", headers=gw.auth, json={
        "channel": "wechat_mini", "amount": 4321, "description": "Lost answer", "merchant_order_no": "LOST-1",
        "payer": {"openid": "oTestOpenid0000000000000001"}})
    assert r.status_code == 503, r.text
    # SMS: two delivered, one to a phone that cannot be reached
    r = await gw.http.post("/sandbox/aliyun-sms/_sandbox/phones", json={"phone": "13800138010",
                                                                         "state": "unreachable"})
    assert r.status_code == 200, r.text
    for phone in ("13800138001", "13800138002", "13800138010"):
        r = await gw.http.post("/v1/sms/messages", headers=gw.auth, json={
            "phone": phone, "template": "order_paid", "params": {"order": "A1", "amount": "9.90"}})
        assert r.status_code == 200 and r.json()["provider"] == "aliyun-sms", r.text
    await gw.settle()
    # identity: one pass and two failures
    r = await gw.http.post("/sandbox/tencentcloud/_sandbox/persons",
                           json={"name": "张三", "id_number": "11010519491231002X"})
    assert r.status_code == 200, r.text
    consent = {"granted": True, "text_version": "2026-11-v1"}
    for name, expected in (("张三", "passed"), ("李四", "failed"), ("王五", "failed")):
        r = await gw.http.post("/v1/identity/verifications", headers=gw.auth, json={
            "consent": consent, "kind": "id_card", "name": name, "id_number": "11010519491231002X",
            "provider": "tencent-faceid"})
        assert r.status_code == 200 and r.json()["status"] == expected, r.text


async def dashboard(client: Any, **params: str) -> httpx.Response:
    r = await client.get("/console/", **params)
    assert r.status_code == 200, r.text[:600]
    return r  # type: ignore[no-any-return]


async def test_dashboard_numbers_equal_the_seeded_ledger(console: Console) -> None:
    gw = console.gw
    await seed(gw)
    # another app's orders must not show
    _, other_key = await gw.new_app("Other shop")
    r = await gw.http.post("/v1/orders", headers={"Authorization": f"Bearer {other_key}"}, json={
        "channel": "wechat_mini", "amount": 55555, "description": "Elsewhere", "merchant_order_no": "OTHER-1",
        "payer": {"openid": "oTestOpenid0000000000000001"}})
    assert r.status_code == 200, r.text
    page = (await dashboard(console.viewer)).text
    today = gw.rt.now().astimezone(UTC).date()
    days = [(today - timedelta(days=13 - i)).isoformat() for i in range(14)]
    charts = charts_of(page)
    assert set(charts) == {"volume", "amount", "success", "refunds", "sms", "identity"}
    zeros = [0] * 13
    volume = charts["volume"]
    assert volume["xAxis"]["data"] == days
    assert series(volume) == {"alipay_mini": zeros + [len(ALIPAY)], "wechat_mini": zeros + [len(WECHAT)]}
    assert series(charts["amount"]) == {"alipay_mini": zeros + [sum(ALIPAY) / 100],
                                        "wechat_mini": zeros + [sum(WECHAT) / 100]}
    created = len(WECHAT) + len(ALIPAY) + len(UNPAID) + 1       # + the unknown outcome
    rate = round(100 * (len(WECHAT) + len(ALIPAY)) / created, 1)
    assert series(charts["success"]) == {"Success rate": [None] * 13 + [rate]}
    assert series(charts["refunds"]) == {"Refunds": zeros + [1]}
    assert charts["sms"]["xAxis"]["data"] == ["aliyun-sms"]
    assert series(charts["sms"]) == {"Delivered": [round(200 / 3, 1)]}
    pie = {d["name"]: d["value"] for d in charts["identity"]["series"][0]["data"]}
    assert pie == {"passed": 1, "failed": 2}

    kpis = kpis_of(page)
    assert kpis == {
        "created": str(created), "paid": "5", "paid_amount": f"¥{sum(WECHAT + ALIPAY) // 100}.{sum(WECHAT + ALIPAY) % 100:02d}",
        "success_rate": f"{rate}%", "pending": str(len(UNPAID)), "unknown": "1", "refunds": "1",
        "refunded_amount": "¥3.00", "webhook_backlog": "4", "webhook_dead": "1",
        "sms_rate": f"{round(200 / 3, 1)}%", "identity_rate": f"{round(100 / 3, 1)}%"}

    tables = tables_of(page)
    assert tables["volume"][0] == ["Day", "alipay_mini", "wechat_mini", "Total"]
    assert tables["volume"][-1] == [days[-1], "2", "3", "5"]
    assert tables["amount"][-1] == [days[-1], "¥17.00", "¥13.40"]
    assert tables["success"][-1] == [days[-1], str(created), "5", f"{rate}%"]
    assert tables["success"][1] == [days[0], "0", "0", "—"]
    refunds = {row[0]: row[1:] for row in tables["refunds"]}
    assert refunds[days[-1]] == ["1", "¥3.00"] and refunds["succeeded"] == ["1", "¥3.00"]
    assert refunds["failed"] == ["0", "¥0.00"]
    assert tables["sms"][1] == ["aliyun-sms", "0", "0", "0", "2", "1", "0", f"{round(200 / 3, 1)}%"]
    assert tables["identity"][1] == ["id_card", "1", "2", "0", "0"]
    assert tables["webhooks"] == [["Waiting to be delivered", "4"], ["of which failed at least once", "4"],
                                  ["Abandoned (created in the range)", "1"]]
    for secret in ("13800138001", "11010519491231002X", "张三", "oTestOpenid0000000000000001"):
        assert secret not in page


async def test_range_and_day_boundary_are_chosen_by_query(console: Console) -> None:
    gw = console.gw
    order = await gw.create_order(amount=1234)
    await gw.pay(order)
    now = gw.rt.now()
    beijing_today = (now.astimezone(UTC) + timedelta(hours=8)).date()
    page = (await dashboard(console.admin, tz="Asia/Shanghai")).text
    volume = charts_of(page)["volume"]
    assert volume["xAxis"]["data"][-1] == beijing_today.isoformat()
    assert series(volume) == {"wechat_mini": [0] * 13 + [1]}
    assert 'option value="Asia/Shanghai" selected' in page
    # a range that ends before today holds nothing, and has exactly its days
    end = now.astimezone(UTC).date() - timedelta(days=1)
    start = end - timedelta(days=2)
    page = (await dashboard(console.admin, **{"from": start.isoformat(), "to": end.isoformat()})).text
    charts = charts_of(page)
    assert charts["volume"]["xAxis"]["data"] == [(start + timedelta(days=i)).isoformat() for i in range(3)]
    assert series(charts["volume"]) == {}
    assert kpis_of(page)["created"] == "0" and kpis_of(page)["success_rate"] == "—"
    assert set(charts) == {"volume", "amount", "success", "refunds"}      # nothing to draw for SMS and identity
    assert 'data-empty="sms"' in page and 'data-empty="identity"' in page
    # the day boundary: one second before Beijing midnight is the day before; midnight itself is the new day
    midnight = datetime.combine(beijing_today - timedelta(days=1), time(), UTC) - timedelta(hours=8)
    for at in (midnight - timedelta(seconds=1), midnight):
        unpaid = await gw.create_order(amount=1)
        async with gw.rt.db.transaction() as session:
            await session.execute(update(Order).where(Order.id == unpaid["id"]).values(created_at=at))
    two_days = {"from": (beijing_today - timedelta(days=2)).isoformat(),
                "to": (beijing_today - timedelta(days=1)).isoformat()}
    created = [row[1] for row in tables_of((await dashboard(console.admin, tz="Asia/Shanghai", **two_days)).text)[
        "success"][1:]]
    assert created == ["1", "1"]
    created = [row[1] for row in tables_of((await dashboard(console.admin, tz="UTC", **two_days)).text)[
        "success"][1:]]
    # 15:59:59 and 16:00:00 UTC of the same UTC day; between 16:00 and 24:00 UTC that day is also the UTC day of
    # the order paid above (it is already tomorrow in Beijing)
    paid_that_day = int(now.astimezone(UTC).date() == beijing_today - timedelta(days=1))
    assert created == ["2", str(paid_that_day)]
    # Chinese labels render too; live mode holds none of the test mode's orders
    r = await console.admin.post("/console/session", {"lang": "zh", "mode": "live", "back": "/console/"})
    assert r.status_code == 303, r.text[:400]
    page = (await dashboard(console.admin)).text
    assert "支付成功率" in page
    assert kpis_of(page)["created"] == "0" and series(charts_of(page)["volume"]) == {}


async def test_bad_ranges_are_refused_with_the_apis_codes(console: Console) -> None:
    cases = [({"from": "yesterday"}, "parameter_invalid"), ({"from": "2026-01-10", "to": "2026-01-01"}, "invalid_range"),
             ({"from": "2025-01-01", "to": "2026-01-01"}, "invalid_range"), ({"tz": "Mars/Olympus"}, "parameter_invalid")]
    for params, code in cases:
        r = await console.viewer.get("/console/", **params)
        assert r.status_code == 400, (params, r.status_code)
        assert f'data-code="{code}"' in r.text, (params, r.text[:400])


async def test_signed_out_is_sent_to_sign_in(console: Console) -> None:
    r = await console.gw.http.get("/console/")
    assert r.status_code == 303 and r.headers["location"].startswith("/console/login")

"""Analytics pages over HTTP (SQLite and PostgreSQL ledgers, the DuckDB store): events collected with a
publishable key show in active users, top events and pages, retention, a funnel the person picks and the payment
funnel joined to the ledger; the filters narrow them as the API's do; bad filters are refused with its codes."""

from __future__ import annotations

from typing import Any

from tests.api.test_analytics import event, publishable
from tests.conftest import Gateway
from tests.console.conftest import Console
from tests.console.test_dashboard import charts_of, series, tables_of


async def seed(gw: Gateway) -> dict[str, Any]:
    client = await publishable(gw)
    paid = await gw.create_order(amount=990, metadata={"analytics_distinct_id": "dev-paid"})
    unpaid = await gw.create_order(amount=500)
    r = await client.send([
        event("$pageview", distinct="dev-paid", page="pages/item/item"),
        event("view_product", distinct="dev-paid"),
        event("add_to_cart", distinct="dev-paid"),
        event("$payment_request", distinct="dev-paid", order_id=paid["id"]),
        event("$payment_result", distinct="dev-paid", order_id=paid["id"], status="success"),
        event("$pageview", distinct="dev-liar", page="pages/item/item"),
        event("view_product", distinct="dev-liar", sku="B2"),
        event("$payment_request", distinct="dev-liar", order_id=unpaid["id"]),
        event("$payment_result", distinct="dev-liar", order_id=unpaid["id"], status="success"),
        event("$pageview", distinct="dev-browse", page="pages/index/index"),
        event("view_product", distinct="dev-browse", sku="B2"),
    ])
    assert r.status_code == 200 and r.json()["accepted"] == 11, r.text
    r = await client.send([event("view_product", distinct="dev-ali"), event("add_to_cart", distinct="dev-ali")],
                          platform="alipay")
    assert r.status_code == 200 and r.json()["accepted"] == 2, r.text
    await gw.pay(paid)
    await gw.run_worker()
    await gw.rt.analytics.flush()
    return {"paid": paid, "unpaid": unpaid}


async def page(console: Console, path: str, **params: Any) -> str:
    r = await console.viewer.get(path, **params)
    assert r.status_code == 200, r.text[:600]
    return r.text


async def test_overview_retention_funnel_and_payment_funnel_show_the_collected_events(console: Console) -> None:
    gw = console.gw
    orders = await seed(gw)

    overview = await page(console, "/console/analytics")
    charts = charts_of(overview)
    assert series(charts["active_users"])["Active users"][-1] == 4        # dev-paid, -liar, -browse, -ali
    assert len(charts["active_users"]["xAxis"]["data"]) == 7               # the API's default: 7 Beijing days
    tables = tables_of(overview)
    top = {row[0]: row[1:] for row in tables["top_events"][1:]}
    assert top["view_product"] == ["4", "4"] and top["add_to_cart"] == ["2", "2"] and top["$pageview"] == ["3", "3"]
    assert dict(zip(charts["top_events"]["yAxis"]["data"], series(charts["top_events"])["Events"], strict=True))[
        "view_product"] == 4
    assert tables["top_pages"][1:] == [["pages/item/item", "2", "2"], ["pages/index/index", "1", "1"]]

    wechat = tables_of(await page(console, "/console/analytics", platform="wechat", where="sku:B2"))
    assert {row[0]: row[1] for row in wechat["top_events"][1:]} == {"view_product": "2"}

    retention = charts_of(await page(console, "/console/analytics/retention", horizon="3"))["retention"]
    assert retention["xAxis"]["data"] == ["+0", "+1", "+2", "+3"]
    last = len(retention["yAxis"]["data"]) - 1
    assert [0, last, 100.0] in retention["series"][0]["data"]
    assert all(cell[1] == last for cell in retention["series"][0]["data"])   # nobody seen before today

    picker = await page(console, "/console/analytics/funnels")
    assert 'data-testid="pick-steps"' in picker and '<option value="add_to_cart"' in picker
    funnel_page = await page(console, "/console/analytics/funnels", step=["view_product", "add_to_cart"],
                             window="3600")
    funnel = charts_of(funnel_page)["funnel"]
    assert [(d["name"], d["value"]) for d in funnel["series"][0]["data"]] == [
        ("1. view_product", 4), ("2. add_to_cart", 2)]
    assert tables_of(funnel_page)["funnel"][2][:5] == ["2", "add_to_cart", "2", "50.0%", "50.0%"]

    payments = await page(console, "/console/analytics/payments")
    steps = charts_of(payments)["payment_funnel"]["series"][0]["data"]
    assert [d["value"] for d in steps] == [4, 2, 2, 2, 1]       # viewed (4 persons, dev-ali too) … verified paid
    assert [d["name"] for d in steps][-1] == "Verified paid"
    assert 'data-fact="paid_amount">¥9.90<' in payments
    assert f'href="/console/orders/{orders["unpaid"]["id"]}"' in payments


async def test_bad_filters_are_refused_with_the_apis_codes(console: Console) -> None:
    cases = [("/console/analytics", {"platform": "desktop"}, "parameter_invalid"),
             ("/console/analytics", {"where": "no colon here"}, "invalid_filter"),
             ("/console/analytics", {"from": "2026-02-01", "to": "2026-01-01"}, "invalid_range"),
             ("/console/analytics", {"interval": "hour"}, "parameter_invalid"),
             ("/console/analytics/retention", {"horizon": "99"}, "parameter_invalid"),
             ("/console/analytics/funnels", {"step": ["view_product", "bad name!"]}, "invalid_funnel"),
             ("/console/analytics/payments", {"window": "5"}, "parameter_invalid")]
    for path, params, code in cases:
        r = await console.viewer.get(path, **params)
        assert r.status_code == 400, (path, params, r.status_code)
        assert f'data-code="{code}"' in r.text, (path, params, r.text[:400])


async def test_every_tab_renders_in_chinese_with_no_data(console: Console) -> None:
    r = await console.viewer.post("/console/session", {"lang": "zh", "back": "/console/analytics"})
    assert r.status_code == 303, r.text[:400]
    for path, label in (("/console/analytics", "活跃用户"), ("/console/analytics/retention", "留存率"),
                        ("/console/analytics/funnels", "至少选择两个步骤"), ("/console/analytics/payments", "确认到账")):
        assert label in await page(console, path)

"""The operations pages in a real browser, over a real gateway seeded over HTTP (a paid order, a webhook endpoint
that refuses connections, a reconciliation run with a difference queued as an exception, an SMS, an identity
check): each page shows its rows with no script error or CSP violation, fits a 390 px phone without sideways
scrolling, and the operator's redeliver button works."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
from sqlalchemy import update

from minigate.services.reconcile import BEIJING, reconcile
from minigate.services.runtime import Runtime
from minigate.store.tables import Order
from tests.console.conftest import LiveConsole
from tests.console.support import screenshot, sign_in

NAME, ID_NUMBER, PHONE = "张三", "11010519491231002X", "13800138031"
OPENID = "oTestOpenid0000000000000001"


def _until(what: Callable[[], bool], message: str, seconds: float = 20.0) -> None:
    deadline = time.monotonic() + seconds
    while not what():
        assert time.monotonic() < deadline, message
        time.sleep(0.05)


def _mismatch_and_reconcile(live: LiveConsole, order_id: str) -> None:
    """The ledger says one fen less than the provider's bill: reconciliation reports it and queues an exception."""
    async def run() -> None:
        rt = Runtime(live.rt.settings)
        await rt.start()
        try:
            async with rt.db.transaction() as session:
                await session.execute(update(Order).where(Order.id == order_id).values(amount=Order.amount - 1))
            await reconcile(rt, app_id=live.app_id, mode="test", provider="wechatpay",
                            bill_date=rt.now().astimezone(BEIJING).date())
        finally:
            await rt.aclose()
    with ThreadPoolExecutor(1) as pool:           # Playwright's sync API keeps an event loop in this thread
        pool.submit(asyncio.run, run()).result()


@pytest.fixture(scope="module")
def seeded(live_console: LiveConsole) -> LiveConsole:
    with httpx.Client(base_url=live_console.url, headers={"Authorization": f"Bearer {live_console.test_key}"},
                      timeout=10) as http:
        r = http.post("/v1/webhook_endpoints", json={"url": "http://127.0.0.1:9/hooks", "enabled_events": ["*"]})
        assert r.status_code == 200, r.text
        r = http.post("/v1/orders", json={"channel": "wechat_mini", "amount": 1800, "description": "Flat white",
                                          "merchant_order_no": f"O{uuid.uuid4().hex[:16]}", "payer": {"openid": OPENID}})
        assert r.status_code == 200, r.text
        order = r.json()
        assert http.post("/sandbox/wechatpay/_sandbox/pay", json={"out_trade_no": order["out_trade_no"]}).status_code \
            == 200
        _until(lambda: http.get(f"/v1/orders/{order['id']}").json()["status"] == "paid", "never paid")
        _mismatch_and_reconcile(live_console, order["id"])
        r = http.post("/v1/sms/messages", json={"phone": PHONE, "template": "order_paid",
                                                "params": {"order": "A3001", "amount": "18.00"}})
        assert r.status_code == 200, r.text
        assert http.post("/sandbox/tencentcloud/_sandbox/persons",
                         json={"name": NAME, "id_number": ID_NUMBER}).status_code == 200
        r = http.post("/v1/identity/verifications", json={
            "kind": "id_card", "name": NAME, "id_number": ID_NUMBER, "provider": "tencent-faceid",
            "consent": {"granted": True, "text_version": "2026-11-v1"}})
        assert r.status_code == 200, r.text
        _until(lambda: any(d["attempts"] for d in http.get("/v1/webhook_deliveries").json()["data"]),
               "the worker never tried a delivery")
    return live_console


PAGES = [("webhooks", "[data-delivery]"), ("reconciliation", "[data-run]"), ("exceptions", "[data-exception]"),
         ("sms", "[data-message]"), ("identity", "[data-verification]"), ("audit", "[data-seq]")]


def test_each_operations_page_on_laptop_and_phone(page: Any, seeded: LiveConsole) -> None:
    sign_in(page, seeded.url, "operator")
    for name, rows in PAGES:
        page.set_viewport_size({"width": 1366, "height": 860})
        page.goto(f"{seeded.url}/console/{name}")
        assert page.locator(rows).count() >= 1, name
        html = page.content()
        for clear in (NAME, ID_NUMBER, PHONE, OPENID):
            assert clear not in html, (name, clear)
        screenshot(page, f"ops-{name}")
        page.set_viewport_size({"width": 390, "height": 844})
        page.reload()
        assert page.evaluate("() => document.documentElement.scrollWidth") <= 390, name
    page.set_viewport_size({"width": 1366, "height": 860})
    page.goto(f"{seeded.url}/console/reconciliation")
    page.click("[data-run] a")                                # a run's detail: the difference and its state
    assert page.locator("[data-finding]").count() == 1
    assert page.locator("[data-testid=resolution] .badge.open").count() == 1
    page.goto(f"{seeded.url}/console/webhooks")
    page.locator("[data-testid=redeliver]").first.click()
    assert page.locator("[data-testid=notice]").is_visible()
    page.goto(f"{seeded.url}/console/audit")
    assert page.locator("[data-action='webhook.redelivered']").count() == 1
    assert page.errors == []

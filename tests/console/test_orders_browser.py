"""Orders and refund approvals in a real browser: find a paid order, refund it through the confirmation step and
see the refund in its timeline; a large refund waits for a second person; a viewer has no refund button and a
forged refund is refused."""

from __future__ import annotations

import time
import uuid
from typing import Any

import httpx

from tests.console.conftest import LiveConsole
from tests.console.support import screenshot, sign_in


def _paid_order(live: LiveConsole, amount: int) -> dict[str, Any]:
    """Create and pay an order over HTTP, as a merchant and a payer would; the worker applies the payment."""
    auth = {"Authorization": f"Bearer {live.test_key}"}
    with httpx.Client(base_url=live.url, timeout=10) as http:
        r = http.post("/v1/orders", headers=auth, json={
            "channel": "wechat_mini", "amount": amount, "description": "Flat white",
            "merchant_order_no": f"HC{uuid.uuid4().hex[:12]}", "payer": {"openid": "oBrowserPayer00000000000042"}})
        assert r.status_code == 200, r.text
        order = dict(r.json())
        paid = http.post("/sandbox/wechatpay/_sandbox/pay", json={"out_trade_no": order["out_trade_no"]})
        assert paid.status_code == 200, paid.text
        for _ in range(200):                       # the notification arrives in the background
            if http.get(f"/v1/orders/{order['id']}", headers=auth).json()["status"] == "paid":
                return order
            time.sleep(0.05)
    raise AssertionError("the order was not paid")


def _refunds(live: LiveConsole, order_id: str) -> list[dict[str, Any]]:
    with httpx.Client(base_url=live.url, timeout=10) as http:
        r = http.get("/v1/refunds", params={"order": order_id}, headers={"Authorization": f"Bearer {live.test_key}"})
        assert r.status_code == 200, r.text
        return list(r.json()["data"])


def _sign_out(page: Any) -> None:
    page.click("[data-testid=sign-out]")
    page.wait_for_url("**/console/login")


def test_find_refund_and_approve(page: Any, live_console: LiveConsole) -> None:
    live = live_console
    order = _paid_order(live, 880)
    sign_in(page, live.url, "operator")
    page.click("[data-nav=orders]")
    page.fill("[data-testid=order-search]", order["merchant_order_no"])
    page.click("[data-testid=order-search-submit]")
    rows = page.locator("[data-testid=orders] tbody tr")
    assert rows.count() == 1 and rows.first.get_attribute("data-order") == order["id"]
    screenshot(page, "orders-list")
    rows.first.locator("a").click()
    page.wait_for_url(f"**/console/orders/{order['id']}")
    assert "oBrowserPayer00000000000042" not in page.content()
    page.fill("[data-testid=refund-form] input[name=amount]", "3.80")
    page.fill("[data-testid=refund-form] input[name=reason]", "spilled")
    page.click("[data-testid=refund-review]")
    assert page.locator("[data-testid=confirm-amount]").inner_text() == "¥3.80"
    assert _refunds(live, order["id"]) == []                              # nothing happens before the confirmation
    page.click("[data-testid=refund-confirm-submit]")
    page.wait_for_url(f"**/console/orders/{order['id']}?notice=*")
    (refund,) = _refunds(live, order["id"])
    assert refund["amount"] == 380
    assert page.locator(f"[data-refund={refund['id']}]").count() == 1
    assert page.locator("[data-testid=timeline] [data-kind=refund]").count() == 1
    screenshot(page, "order-detail")
    page.set_viewport_size({"width": 390, "height": 844})                 # a phone: nothing wider than the screen
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    page.set_viewport_size({"width": 1366, "height": 860})

    # above the approval amount: the operator's request waits for another person
    large = _paid_order(live, 150_000)
    page.goto(f"{live.url}/console/orders/{large['id']}")
    page.check("[data-testid=refund-form] input[name=full]")
    page.click("[data-testid=refund-review]")
    assert page.locator("[data-testid=needs-approval]").is_visible()
    page.click("[data-testid=refund-confirm-submit]")
    page.wait_for_url("**/console/approvals?focus=*")
    assert page.locator("[data-testid=waiting]").count() == 1
    assert page.locator("[data-testid=approve]").count() == 0
    assert _refunds(live, large["id"]) == []
    _sign_out(page)
    sign_in(page, live.url, "approver")
    page.goto(f"{live.url}/console/approvals")
    screenshot(page, "approvals")
    page.click("[data-testid=approve]")
    page.wait_for_url(f"**/console/orders/{large['id']}?notice=*")
    (big,) = _refunds(live, large["id"])
    assert big["amount"] == 150_000
    assert page.locator(f"[data-refund={big['id']}]").count() == 1
    assert page.errors == []


def test_viewer_cannot_refund(page: Any, live_console: LiveConsole) -> None:
    live = live_console
    order = _paid_order(live, 500)
    sign_in(page, live.url, "viewer")
    page.goto(f"{live.url}/console/orders/{order['id']}")
    assert page.locator("[data-testid=order-facts]").is_visible()
    assert page.locator("[data-testid=refund-form]").count() == 0
    assert page.locator("[data-testid=refund-review]").count() == 0
    forged = page.request.post(f"{live.url}/console/orders/{order['id']}/refund/confirm",
                               form={"amount": "5.00", "nonce": "f" * 32, "csrf_token": "forged"})
    assert forged.status == 403
    assert 'data-code="role_required"' in forged.text()
    assert _refunds(live, order["id"]) == []
    assert page.errors == []

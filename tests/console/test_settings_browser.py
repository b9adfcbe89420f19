"""Settings and the sandbox panel in a real browser: an admin walks every settings page, creates a key (shown
once), opens a provider's credential form and adds a console user; an operator pays an order from the sandbox
panel. No script error, CSP violation or failed sub-resource on the way; laptop and phone widths."""

from __future__ import annotations

import uuid
from typing import Any

import httpx

from tests.console.conftest import LiveConsole
from tests.console.support import screenshot, sign_in


def _fits_the_width(page: Any) -> bool:
    return bool(page.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1"))


def test_admin_walks_the_settings_pages(page: Any, live_console: LiveConsole) -> None:
    live = live_console
    sign_in(page, live.url, "admin")
    page.click("[data-nav=settings]")
    page.wait_for_url(f"{live.url}/console/settings")
    assert page.locator("[data-testid=apps]").inner_text().count("Harbour Coffee") == 1
    screenshot(page, "settings")

    page.click("[data-tab=keys]")
    page.fill("[data-testid=create-key] input[name=name]", "till 3")
    page.check("[data-testid=create-key] input[value='orders:read']")
    page.click("[data-testid=create-key] button.primary")
    key = page.locator("[data-testid=secret]").inner_text()
    assert key.startswith("mg_test_")
    page.goto(f"{live.url}/console/settings/keys")
    listing = page.content()
    assert key not in listing and f"{key[:8]}…{key[-4:]}" in listing
    screenshot(page, "settings-keys")

    page.click("[data-tab=credentials]")
    page.wait_for_url("**/console/settings/credentials")
    page.wait_for_load_state("load")                                # console.js has wired the select
    page.select_option("select[name=provider]", "wechatpay")        # console.js submits the choice
    page.wait_for_url("**/console/settings/credentials?provider=wechatpay")
    assert page.locator("textarea[name=f_merchant_private_key]").is_visible()
    assert page.locator("input[type=password][name=f_apiv3_key]").is_visible()

    for tab in ("sms", "webhooks", "publishable"):
        page.click(f"[data-tab={tab}]")
        page.wait_for_url(f"**/console/settings/{tab}")

    page.click("[data-tab=users]")
    form = "[data-testid=user-form]"
    page.fill(f"{form} input[name=email]", "cashier@shop.example")
    page.fill(f"{form} input[name=name]", "Cashier")
    page.select_option(f"{form} select[name=role]", "viewer")
    page.fill(f"{form} input[name=password]", "cashier password 2026")
    page.click(f"{form} button.primary")
    page.wait_for_selector("[data-testid=notice]")
    assert page.locator("tr[data-user='cashier@shop.example']").count() == 1
    screenshot(page, "settings-users")

    page.set_viewport_size({"width": 390, "height": 844})
    for path in ("/console/settings", "/console/settings/keys", "/console/settings/users"):
        page.goto(f"{live.url}{path}")
        assert _fits_the_width(page), path
    assert page.errors == []


def test_the_sandbox_panel_pays_an_order(page: Any, live_console: LiveConsole) -> None:
    live = live_console
    auth = {"Authorization": f"Bearer {live.test_key}"}
    created = httpx.post(f"{live.url}/v1/orders", headers=auth, timeout=30, json={
        "channel": "wechat_mini", "amount": 2800, "description": "Flat white", "merchant_order_no": uuid.uuid4().hex,
        "payer": {"openid": "oTestOpenid0000000000000001"}})
    assert created.status_code == 200, created.text
    order = created.json()

    sign_in(page, live.url, "operator")
    page.click("[data-nav=sandbox]")
    page.wait_for_url(f"{live.url}/console/sandbox")
    page.fill("[data-testid=sandbox-pay] input[name=order]", order["id"])
    page.click("[data-testid=pay]")
    page.wait_for_selector("[data-testid=order-status] .badge.paid")
    page.fill("[data-testid=sandbox-login] input[name=user]", "alice")
    page.click("[data-testid=sandbox-login] button.primary")
    assert page.locator("[data-testid=login-code]").inner_text()
    page.goto(f"{live.url}/console/sandbox?order={order['id']}")
    screenshot(page, "sandbox")
    assert httpx.get(f"{live.url}/v1/orders/{order['id']}", headers=auth, timeout=30).json()["status"] == "paid"

    page.set_viewport_size({"width": 390, "height": 844})
    page.reload()
    assert _fits_the_width(page)
    assert page.errors == []

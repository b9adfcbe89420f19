"""Sign-in in a real browser: password, wrong password, the viewer's menu, sign-out."""

from __future__ import annotations

from typing import Any

from tests.console.conftest import LiveConsole
from tests.console.support import screenshot, sign_in


def test_sign_in_and_out(page: Any, live_console: LiveConsole) -> None:
    live = live_console
    page.goto(f"{live.url}/console/account")
    assert page.url.startswith(f"{live.url}/console/login?next=")          # not signed in: sent to sign in
    page.fill("input[name=email]", "admin@shop.example")
    page.fill("input[name=password]", "not the password at all")
    page.click("button[type=submit]")
    assert page.locator("[data-code=invalid_credentials]").is_visible()
    screenshot(page, "sign-in")
    sign_in(page, live.url, "admin")
    assert page.locator("[data-nav=settings]").count() == 1
    page.click("[data-testid=sign-out]")
    page.wait_for_url(f"{live.url}/console/login")
    page.goto(f"{live.url}/console/")
    assert "/console/login" in page.url
    assert page.errors == []


def test_viewer_menu_has_no_settings(page: Any, live_console: LiveConsole) -> None:
    sign_in(page, live_console.url, "viewer")
    assert page.locator("[data-nav=dashboard]").count() == 1
    assert page.locator("[data-nav=settings]").count() == 0
    assert page.locator("[data-nav=sandbox]").count() == 0

"""No personal data or secret unmasked on any console page, as the browser renders it.

A real gateway is given personal data of every kind it keeps — a payer's openid and a contact phone on an order,
an SMS to a phone, a verification code, a name and ID number checked by the identity service, a webhook
endpoint's secret, API keys — then an admin (who sees the most) opens every page reachable by links in
Chromium. Each page's DOM after its scripts ran and its visible text are scanned for those values and for
anything shaped like a mainland mobile number, an ID number, an API key, a webhook secret or a PEM block.
"""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import urlsplit

import httpx

from tests.console.conftest import LiveConsole
from tests.console.support import sign_in
from tests.security.test_leak_scan import API_KEY, ID_LIKE, MOBILE, PEM, WHSEC, looks_like_id

PHONE, CODE_PHONE = "13800138123", "13900139456"
NAME, ID_NUMBER = "王小明", "11010519491231002X"


def _seed(live: LiveConsole) -> dict[str, str]:
    auth = {"Authorization": f"Bearer {live.test_key}"}
    with httpx.Client(base_url=live.url, timeout=20) as http:
        code = http.post("/sandbox/wechat/_sandbox/login", json={"user": "scan-payer"}).json()["code"]
        openid = http.post("/v1/wechat/login", headers=auth, json={"code": code}).json()["openid"]
        endpoint = http.post("/v1/webhook_endpoints", headers=auth, json={
            "url": "http://127.0.0.1:9/hooks", "enabled_events": ["*"]}).json()
        order = http.post("/v1/orders", headers=auth, json={
            "channel": "wechat_mini", "amount": 1234, "description": "Scan latte", "merchant_order_no": "SCAN-1",
            "payer": {"openid": openid}, "contact_phone": PHONE}).json()
        assert http.post("/sandbox/wechatpay/_sandbox/pay", json={"out_trade_no": order["out_trade_no"]}
                         ).status_code == 200
        deadline = time.monotonic() + 20
        while http.get(f"/v1/orders/{order['id']}", headers=auth).json()["status"] != "paid":
            assert time.monotonic() < deadline, "the order was not paid"
            time.sleep(0.05)
        http.post("/v1/refunds", headers=auth, json={"order": order["id"], "amount": 234, "reason": "scan"})
        assert http.post("/v1/sms/messages", headers=auth, json={
            "phone": PHONE, "template": "order_paid", "params": {"order": "SCAN-1", "amount": "12.34"}}
        ).status_code == 200
        assert http.post("/v1/verification_codes", headers=auth, json={"phone": CODE_PHONE, "purpose": "login"}
                         ).status_code == 200
        assert http.post("/sandbox/tencentcloud/_sandbox/persons", json={"name": NAME, "id_number": ID_NUMBER}
                         ).status_code == 200
        assert http.post("/v1/identity/verifications", headers=auth, json={
            "kind": "id_card", "name": NAME, "id_number": ID_NUMBER, "provider": "tencent-faceid",
            "consent": {"granted": True, "text_version": "2026-11-v1"}}).status_code == 200
    return {"openid": openid, "webhook secret": endpoint["secret"], "test key": live.test_key, "phone": PHONE,
            "code phone": CODE_PHONE, "name": NAME, "ID number": ID_NUMBER}


def _leaks(where: str, text: str, needles: dict[str, str]) -> list[str]:
    found = [f"{what} on {where}" for what, value in needles.items() if value in text]
    for what, pattern in (("mobile number", MOBILE), ("API key", API_KEY), ("webhook secret", WHSEC),
                          ("PEM block", PEM), ("ID number", ID_LIKE)):
        for match in pattern.finditer(text):
            if what != "ID number" or looks_like_id(match.group(0)):
                found.append(f"{what} {match.group(0)!r} on {where}")
    return found


def test_no_page_shows_personal_data_or_secrets(page: Any, live_console: LiveConsole) -> None:
    live = live_console
    needles = _seed(live)
    sign_in(page, live.url, "admin")
    queue, seen, leaks, scanned = ["/console/"], set(), [], 0
    while queue and scanned < 120:
        path = queue.pop(0)
        if path in seen:
            continue
        seen.add(path)
        response = page.goto(f"{live.url}{path}")
        assert response is not None and response.status == 200, path
        page.wait_for_load_state("load")
        scanned += 1
        leaks += _leaks(f"{path} (DOM)", page.content(), needles)
        leaks += _leaks(f"{path} (text)", page.inner_text("body"), needles)
        for href in page.eval_on_selector_all("a[href]", "els => els.map(e => e.href)"):
            target = urlsplit(href)
            link = target.path + (f"?{target.query}" if target.query else "")
            if (target.netloc == urlsplit(live.url).netloc and link.startswith("/console/")
                    and not link.startswith(("/console/static", "/console/logout")) and link not in seen):
                queue.append(link)
    assert scanned >= 20, seen
    assert any(p.startswith("/console/orders/ord_") for p in seen), "an order's page was scanned"
    assert leaks == [], "\n".join(leaks)
    assert page.errors == []

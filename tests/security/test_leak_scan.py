"""Leak scan (B-7, B-15, B-23, C-*): a broad flow — payments on two channels, a refund, webhooks, SMS codes and
a marketing message, identity checks, and failures of each — with every log line and every API response
body captured, and every page of the admin console reachable by links read, then all scanned for secrets and
unmasked personal data.

Forbidden everywhere: PEM blocks, full API keys, webhook secrets, the provider secrets of the sandbox, 11-digit
mainland mobile numbers, 18-character ID numbers, the verification codes, the names used. The API answers may
carry exactly what they exist to return: a webhook endpoint's secret when it is created or rotated, and the
person's own data in a subject export; nothing else.
"""

from __future__ import annotations

import base64
import io
import json
import re
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from sqlalchemy import update

from minigate.logging import configure_logging
from tests.conftest import Gateway
from tests.console.support import ConsoleClient, add_user, crawl
from tests.security.conftest import record

PHONES = ("13800138091", "13900139092", "15000150093")
NAME, ID_NUMBER, OTHER_ID = "张三", "11010519491231002X", "440524188001010014"
OTHER_NAME = "李四"
CONSENT = {"granted": True, "text_version": "2026-11-v1"}
SECRET_FIELDS = re.compile(r"secret|private_key|apiv3_key|des_key|apikey|api_key|api_security")
PROVIDERS = ("wechatpay", "alipay", "jdpay", "wechat", "aliyun-sms", "tencentcloud", "yunpian", "baidu", "unisound",
             "growingio", "youshu", "umeng")

MOBILE = re.compile(r"(?<![0-9A-Za-z])1[3-9]\d{9}(?![0-9A-Za-z])")
ID_LIKE = re.compile(r"(?<![0-9A-Za-z])\d{17}[0-9Xx](?![0-9A-Za-z])")
API_KEY = re.compile(r"mg_(?:test|live)_[A-Za-z0-9]{12,}")
WHSEC = re.compile(r"whsec_[A-Za-z0-9_\-]{8,}")
PEM = re.compile(r"-----BEGIN [A-Z ]*(?:PRIVATE KEY|CERTIFICATE)-----")


def looks_like_id(number: str) -> bool:
    """GB 11643: a region (first digit 1-8), a birth date, and the ISO 7064 MOD 11-2 check character; so that
    a provider's 18-digit reference number is not taken for one."""
    year, month, day = int(number[6:10]), int(number[10:12]), int(number[12:14])
    if number[0] not in "12345678" or not (1900 <= year <= 2099 and 1 <= month <= 12 and 1 <= day <= 31):
        return False
    weights = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
    total = sum(int(d) * w for d, w in zip(number[:17], weights, strict=True))
    return "10X98765432"[total % 11] == number[17].upper()


def secret_needles(gw: Gateway) -> dict[str, str]:
    """Provider secrets as the text that would show if leaked (a PEM: one line of its body)."""
    out: dict[str, str] = {}
    for provider in PROVIDERS:
        for field, value in gw.rt.sandbox.credentials(provider).items():
            if not isinstance(value, str) or not SECRET_FIELDS.search(field) or len(value) < 8:
                continue
            if "-----BEGIN" in value:
                value = max((line for line in value.splitlines() if "-----" not in line), key=len)
            out[f"{provider}.{field}"] = value
    return out


class Capture:
    """Every response of the gateway's own API (/v1, /notify), as text."""

    def __init__(self) -> None:
        self.bodies: list[tuple[str, str]] = []

    async def __call__(self, response: httpx.Response) -> None:
        path = response.request.url.path
        if path.startswith(("/v1/", "/notify/", "/return/")):
            await response.aread()
            self.bodies.append((f"{response.request.method} {path} -> {response.status_code}", response.text))


async def flow(gw: Gateway) -> dict[str, Any]:
    """The broad flow; returns what was handed out (codes, secrets) for the scan."""
    seen: dict[str, Any] = {"codes": [], "whsec": []}
    h = gw.auth
    endpoint = (await gw.http.post("/v1/webhook_endpoints", headers=h, json={
        "url": "http://merchant.example/hooks", "enabled_events": ["*"]})).json()
    gw.merchant.secrets.append(endpoint["secret"])
    seen["whsec"].append(endpoint["secret"])
    rotated = (await gw.http.post(f"/v1/webhook_endpoints/{endpoint['id']}/rotate_secret", headers=h,
                                  json={"expire_previous_in": 3600})).json()
    seen["whsec"].append(rotated["secret"])
    gw.merchant.secrets.append(rotated["secret"])
    # payments: WeChat with a contact phone, Alipay; a forged callback; a refund, an over-refund, a provider fault
    openid = await gw.login("dave")
    order = await gw.create_order(amount=800, payer={"openid": openid}, contact_phone=PHONES[0])
    await gw.http.post(f"/notify/wechatpay/test/{gw.app_id}", content=b'{"id":"x"}', headers={
        "Wechatpay-Timestamp": "1", "Wechatpay-Nonce": "n", "Wechatpay-Serial": "s",
        "Wechatpay-Signature": "AAAA"})
    await gw.pay(order)
    alipay = (await gw.http.post("/v1/orders", headers=h, json={
        "channel": "alipay_mini", "amount": 500, "description": "Leak scan item", "merchant_order_no": "LEAK-ALI-1",
        "payer": {"openid": "2088000000000001"}})).json()
    await gw.http.post("/sandbox/alipay/_sandbox/pay", json={"out_trade_no": alipay.get("out_trade_no", "")})
    await gw.settle()
    await gw.http.post("/v1/refunds", headers=h, json={"order": order["id"], "amount": 100, "reason": "scan"})
    await gw.http.post("/v1/refunds", headers=h, json={"order": order["id"], "amount": 99999})
    await gw.http.post("/sandbox/wechatpay/_sandbox/faults", json={"next_call": "http_500", "seconds": 0})
    await gw.http.post("/v1/refunds", headers=h, json={"order": order["id"], "amount": 100})
    await gw.http.get("/v1/orders", headers={"Authorization": f"Bearer {gw.key}x"})
    await gw.http.get("/v1/orders", headers={"Authorization": "Bearer mg_live_" + "A" * 32})
    await gw.http.get("/v1/orders", headers=h, params={"payer_openid": openid})
    await gw.http.get(f"/v1/orders/{order['id']}", headers=h)
    await gw.http.post("/sandbox/aliyun-sms/_sandbox/faults", json={"next_call": "http_429"})
    # SMS: a code (a wrong try, the right one, a refused resend), a malformed number, marketing with consent
    for phone in PHONES[:2]:
        await gw.http.post("/v1/verification_codes", headers=h,
                           json={"phone": phone, "purpose": "login", "ip": "203.0.113.9"})
        await gw.settle()
        inbox = (await gw.http.get("/sandbox/_sandbox/messages", params={"phone": phone})).json()["messages"]
        code = re.search(r"验证码为(\d{6})", inbox[0]["text"]).group(1)  # type: ignore[union-attr]
        seen["codes"].append(code)
        wrong = "000000" if code != "000000" else "111111"
        await gw.http.post("/v1/verification_codes/check", headers=h,
                           json={"phone": phone, "purpose": "login", "code": wrong})
        await gw.http.post("/v1/verification_codes/check", headers=h,
                           json={"phone": phone, "purpose": "login", "code": code})
        await gw.http.post("/v1/verification_codes/check", headers=h,     # reused: refused
                           json={"phone": phone, "purpose": "login", "code": code})
        await gw.http.post("/v1/verification_codes", headers=h, json={"phone": phone, "purpose": "login"})
    await gw.http.post("/v1/verification_codes", headers=h, json={"phone": PHONES[2] + "9", "purpose": "login"})
    await gw.http.post("/v1/sms/messages", headers=h, json={
        "phone": PHONES[2], "template": "marketing_promo", "params": {"promo": "八折"}})       # no consent
    await gw.http.post("/v1/consents", headers=h, json={"phone": PHONES[2], "action": "grant", "text_version": "v1"})
    await gw.http.post("/v1/sms/messages", headers=h, json={
        "phone": PHONES[2], "template": "order_paid", "params": {"order": "A1", "amount": "8.00"}})
    await gw.http.post("/v1/sms/messages", headers=h, json={
        "phone": PHONES[2], "template": "marketing_promo", "params": {"promo": "八折"}})
    await gw.settle()
    await gw.http.get("/v1/sms/messages", headers=h, params={"phone": PHONES[2]})
    await gw.http.get("/v1/consents", headers=h, params={"phone": PHONES[2]})
    # identity: a pass, a mismatch, an unknown ID, malformed input, no consent; then reads
    photo = base64.b64encode(b"\xff\xd8\xff face for the leak scan " * 20).decode()
    for sim in ("tencentcloud", "baidu"):
        await gw.http.post(f"/sandbox/{sim}/_sandbox/persons", json={"name": NAME, "id_number": ID_NUMBER,
                                                                    "photo": photo})
    for provider in ("tencent-faceid", "baidu"):
        for name, number in ((NAME, ID_NUMBER), (OTHER_NAME, ID_NUMBER), (NAME, OTHER_ID)):
            await gw.http.post("/v1/identity/verifications", headers=h, json={
                "kind": "id_card", "name": name, "id_number": number, "provider": provider, "consent": CONSENT})
    await gw.http.post("/v1/identity/verifications", headers=h, json={
        "kind": "id_card", "name": NAME, "id_number": "110105194912310021", "consent": CONSENT})
    await gw.http.post("/v1/identity/verifications", headers=h, json={
        "kind": "id_card", "name": NAME, "id_number": ID_NUMBER,
        "consent": {"granted": False, "text_version": "v1"}})
    await gw.http.post("/v1/identity/verifications", headers=h, json={
        "kind": "face", "name": NAME, "id_number": ID_NUMBER, "image": photo, "consent": CONSENT})
    await gw.http.get("/v1/identity/verifications", headers=h)
    # one subject request across capabilities (the export is the person's own copy; the erasure reports masked)
    person = {"phone": PHONES[2], "id_number": ID_NUMBER, "user_id": "u-leak", "openid": openid}
    for r in [await gw.http.post("/v1/consents", headers=h, json={"purpose": "analytics", "user_id": "u-leak",
                                                                  "action": "grant", "text_version": "v1"}),
              await gw.http.post("/v1/consents", headers=h, json={"purpose": "identity_id", "id_number": ID_NUMBER,
                                                                  "action": "withdraw"}),
              await gw.http.get("/v1/consents", headers=h, params={"user_id": "u-leak"}),
              await gw.http.post("/v1/privacy/subjects/export", headers=h, json=person),
              await gw.http.post("/v1/identity/subjects/export", headers=h, json={"id_number": ID_NUMBER}),
              await gw.http.post("/v1/privacy/subjects/erase", headers=h, json=person),
              await gw.http.post("/v1/privacy/subjects/export", headers=h, json=person)]:  # after: kept only
        assert r.status_code == 200, r.text
    await gw.http.post("/v1/identity/subjects/erase", headers=h, json={"id_number": ID_NUMBER})
    # analytics: events (one carrying a phone number, refused), forwarded to GrowingIO and Youshu, numbers pulled
    await gw.http.put("/v1/analytics/settings", headers=h, json={
        "forward": [{"provider": "growingio"}, {"provider": "youshu"}], "sources": ["wechat-datacube", "umeng"]})
    await gw.run_worker()
    from minigate.services import analytics
    from minigate.store.tables import AnalyticsForwardCursor

    analytics.settings_section._cache.clear()
    await gw.run_worker()
    key = (await gw.http.post("/v1/analytics/publishable_keys", headers=h)).json()["key"]
    now_ms = int(time.time() * 1000)
    await gw.http.post("/v1/analytics/collect", headers={"Authorization": f"Bearer {key}"}, json={
        "sent_at": now_ms, "events": [
            {"id": "leak-scan-0001", "name": "view_product", "ts": now_ms, "distinct_id": "dev-leak",
             "user_id": "u-leak", "properties": {"sku": "A1"}},
            {"id": "leak-scan-0002", "name": "signup", "ts": now_ms, "distinct_id": "dev-leak",
             "properties": {"note": f"call {PHONES[0]}"}}]})
    await gw.rt.analytics.flush()
    async with gw.rt.db.transaction() as session:
        await session.execute(update(AnalyticsForwardCursor).values(next_attempt_at=gw.rt.now()))
    yesterday = (datetime.now(UTC) + timedelta(hours=8)).date() - timedelta(days=1)
    for source in ("wechat-datacube", "umeng"):
        r = await gw.http.post("/v1/analytics/pulls", headers=h, json={"source": source, "date": yesterday.isoformat()})
        assert r.status_code == 200 and r.json()["status"] == "done", r.text
    # webhooks and analytics go out; the lists are read
    await gw.run_worker()
    forwarding = (await gw.http.get("/v1/analytics/forwarding", headers=h)).json()["data"]
    # the client event and the server events of the payments above ($payment_verified...)
    assert sorted(f["provider"] for f in forwarding if f["forwarded"] >= 2 and not f["failures"]) == [
        "growingio", "youshu"], forwarding
    for path in ("/v1/events", "/v1/webhook_deliveries", "/v1/refunds", "/v1/payment_exceptions",
                 "/v1/webhook_endpoints", "/v1/audit_events"):
        await gw.http.get(path, headers=h, params={"limit": 100})
    return seen


def allowed_in_body(where: str, value: str, body: str) -> bool:
    """What an answer exists to return: the endpoint's secret (create / rotate), the subject's own export."""
    if "/v1/identity/subjects/export" in where or "/v1/privacy/subjects/export" in where:
        return True
    if value.startswith("whsec_") and re.match(r"POST /v1/webhook_endpoints(/[^/]+/rotate_secret)? -> 200", where):
        return json.loads(body).get("secret") == value
    return False


async def test_no_secret_or_personal_data_in_logs_or_answers(gateway: Gateway) -> None:
    stream = io.StringIO()
    capture = Capture()
    gateway.http.event_hooks = {"request": [], "response": [capture]}
    configure_logging("DEBUG", json=True, stream=stream)
    try:
        seen = await flow(gateway)
        # the admin console, as an admin sees it: every page reachable by links, with the same data behind it
        await add_user(gateway.rt, "scan-admin@shop.example", "admin")
        browser = ConsoleClient.on(gateway.app)
        assert (await browser.sign_in("scan-admin@shop.example")).status_code == 303
        console_pages = [(f"console page {path}", html) for path, html in await crawl(browser)]
        await browser.aclose()
    finally:
        configure_logging("INFO")
        gateway.http.event_hooks = {"request": [], "response": []}
    assert len(console_pages) > 20, [p for p, _ in console_pages]
    record("leak scan: console pages", len(console_pages))
    lines = [line for line in stream.getvalue().splitlines() if line.strip()]
    for line in lines:
        json.loads(line)          # each line is one JSON record
    hooks = [(f"webhook {e.get('type')}", json.dumps(e, ensure_ascii=False)) for e in gateway.merchant.events]
    texts = [(f"log line {i}", line) for i, line in enumerate(lines, 1)] + capture.bodies + hooks + console_pages
    assert hooks, "the flow must deliver webhooks"
    assert len(lines) > 30 and len(capture.bodies) > 40, (len(lines), len(capture.bodies))
    record("leak scan: log lines", len(lines))
    record("leak scan: API answers", len(capture.bodies))
    record("leak scan: webhook bodies", len(hooks))

    needles = {"test API key": gateway.key, **secret_needles(gateway),
               "master key": "test-master-key-0123456789abcdef0123456789",
               **{f"webhook secret {i}": s for i, s in enumerate(seen["whsec"])},
               **{f"verification code {i}": c for i, c in enumerate(seen["codes"])},
               **{f"phone {p}": p for p in PHONES}, "phone digits": PHONES[0][3:],
               "ID number": ID_NUMBER, "other ID number": OTHER_ID, "malformed ID": "110105194912310021",
               "name": NAME, "other name": OTHER_NAME}
    patterns = {"PEM block": PEM, "API key": API_KEY, "webhook secret": WHSEC, "mobile number": MOBILE,
                "ID number": ID_LIKE}
    leaks: list[str] = []
    for where, text in texts:
        for what, needle in needles.items():
            if what.startswith("verification code"):
                found = re.search(rf"(?<!\d){needle}(?!\d)", text) is not None
            else:
                found = needle in text
            if found and not allowed_in_body(where, needle, text):
                leaks.append(f"{what} in {where}: {text[:300]}")
        for what, pattern in patterns.items():
            for match in pattern.finditer(text):
                value = match.group(0)
                if what == "ID number" and not looks_like_id(value) and value != "110105194912310021":
                    continue
                if not allowed_in_body(where, value, text):
                    leaks.append(f"{what} {value!r} in {where}: {text[:300]}")
    assert leaks == [], "\n".join(leaks)

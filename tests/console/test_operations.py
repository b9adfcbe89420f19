"""The operations pages over HTTP (SQLite and PostgreSQL): webhooks and deliveries, reconciliation runs, the
exceptions queue, SMS, identity verifications and the audit trail — seeded through the API as a merchant would,
read by a viewer, acted on by an operator; roles enforced; no phone number, name, ID number or openid in clear."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select, update

from minigate.console.pages import operations
from minigate.services import audit
from minigate.services.reconcile import BEIJING, reconcile
from minigate.store.tables import AuditEntry, Order, PaymentException, WebhookDelivery
from tests.conftest import Gateway
from tests.console.conftest import Console
from tests.console.support import ConsoleClient

PHONE = "13800138021"
CODE_PHONE = "13900139022"
NAME, ID_NUMBER = "张三", "11010519491231002X"
OPENID = "oTestOpenid0000000000000001"           # the payer of Gateway.create_order
CLEAR = (PHONE, CODE_PHONE, NAME, ID_NUMBER, OPENID)
PAGES = ("/console/webhooks", "/console/reconciliation", "/console/exceptions", "/console/sms",
         "/console/identity", "/console/audit")


@dataclass
class Seeded:
    paid: dict[str, Any]
    mismatched: dict[str, Any]
    endpoint: dict[str, Any]
    run_id: str
    exception_id: str
    message_id: str
    code_message_id: str
    verification_id: str


async def seed(gw: Gateway) -> Seeded:
    """A webhook endpoint; two paid orders (delivered to the endpoint); a reconciliation run that finds one of
    them with a different amount (queued as an exception); a notice SMS and a verification code; an identity
    check of a person known to the sandbox."""
    endpoint = await gw.add_webhook()
    paid = await gw.create_order(amount=1000)
    await gw.pay(paid)
    mismatched = await gw.create_order(amount=2500)
    await gw.pay(mismatched)
    await gw.run_worker()
    async with gw.rt.db.transaction() as session:
        await session.execute(update(Order).where(Order.id == mismatched["id"]).values(amount=2499))
    report = await reconcile(gw.rt, app_id=gw.app_id, mode="test", provider="wechatpay",
                             bill_date=gw.rt.now().astimezone(BEIJING).date())
    async with gw.rt.db.read() as session:
        exception_id = (await session.execute(select(PaymentException.id))).scalar_one()
    r = await gw.http.post("/v1/sms/messages", headers=gw.auth, json={
        "phone": PHONE, "template": "order_paid", "params": {"order": "A2001", "amount": "10.00"}})
    assert r.status_code == 200, r.text
    message_id = r.json()["id"]
    r = await gw.http.post("/v1/verification_codes", headers=gw.auth, json={"phone": CODE_PHONE, "purpose": "login"})
    assert r.status_code == 200, r.text
    code_message_id = r.json()["message"]["id"]
    await gw.settle()
    r = await gw.http.post("/sandbox/tencentcloud/_sandbox/persons", json={"name": NAME, "id_number": ID_NUMBER})
    assert r.status_code == 200, r.text
    r = await gw.http.post("/v1/identity/verifications", headers=gw.auth, json={
        "kind": "id_card", "name": NAME, "id_number": ID_NUMBER, "provider": "tencent-faceid",
        "consent": {"granted": True, "text_version": "2026-11-v1"}})
    assert r.status_code == 200 and r.json()["status"] == "passed", r.text
    event = (await gw.http.get("/v1/events", headers=gw.auth, params={"type": "order.paid"})).json()["data"][0]
    r2 = await gw.http.post(f"/v1/events/{event['id']}/redeliver", headers=gw.auth)      # an audit entry by key
    assert r2.status_code == 200, r2.text
    return Seeded(paid, mismatched, endpoint, report.id, exception_id, message_id, code_message_id, r.json()["id"])


def assert_no_clear_personal_data(html: str) -> None:
    for value in CLEAR:
        assert value not in html, value
    assert "whsec_" not in html                 # never a webhook secret


async def page(client: ConsoleClient, path: str, **params: Any) -> str:
    r = await client.get(path, **params)
    assert r.status_code == 200, (path, r.status_code, r.text[:600])
    return r.text


async def error_code(r: Any) -> str:
    found = re.search(r'data-code="([^"]+)"', r.text)
    assert found, r.text[:600]
    return found.group(1)


async def audit_entries(gw: Gateway, action: str) -> list[AuditEntry]:
    async with gw.rt.db.read() as session:
        return list((await session.execute(select(AuditEntry).where(AuditEntry.action == action)
                                           .order_by(AuditEntry.seq))).scalars())


async def test_every_page_lists_the_seeded_data_in_both_languages_and_masks_personal_data(console: Console) -> None:
    s = await seed(console.gw)
    viewer = console.viewer
    for lang in ("en", "zh"):
        if lang == "zh":
            await viewer.get("/console/webhooks")
            assert (await viewer.post("/console/session", {"lang": "zh", "back": "/console/webhooks"})).status_code \
                == 303
        html = await page(viewer, "/console/webhooks")
        assert s.endpoint["id"] in html and "http://merchant.example/hooks" in html
        assert 'data-delivery="' in html and "order.paid" in html and 'class="badge delivered"' in html
        assert_no_clear_personal_data(html)

        html = await page(viewer, "/console/reconciliation")
        assert f'data-run="{s.run_id}"' in html and "wechatpay" in html
        html = await page(viewer, f"/console/reconciliation/{s.run_id}")
        assert f'data-finding="{s.mismatched["out_trade_no"]}"' in html
        assert "amount_mismatch" in html and "¥24.99" in html and "¥25.00" in html
        assert s.paid["out_trade_no"] not in html                       # matched rows are counted, not listed
        assert_no_clear_personal_data(html)

        html = await page(viewer, "/console/exceptions")
        assert f'data-exception="{s.exception_id}"' in html and s.mismatched["id"] in html
        assert_no_clear_personal_data(html)

        html = await page(viewer, "/console/sms")
        assert f'data-message="{s.message_id}"' in html and f'data-message="{s.code_message_id}"' in html
        assert "138****8021" in html and "order_paid" in html
        assert_no_clear_personal_data(html)

        html = await page(viewer, "/console/identity")
        assert f'data-verification="{s.verification_id}"' in html and "tencent-faceid" in html
        assert "张*" in html and "110***********002X" in html          # exactly as the API masks them
        assert_no_clear_personal_data(html)

        html = await page(viewer, "/console/audit")
        assert 'data-action="app.created"' in html and 'data-action="webhook.redelivered"' in html
        assert_no_clear_personal_data(html)
    assert "对账" in html and "审计日志" in html


async def test_sms_delivery_rate_by_provider_follows_the_filters(console: Console) -> None:
    gw = console.gw
    for i, state in enumerate(("ok", "ok", "unreachable")):
        phone = f"1370013{i:04d}"
        if state != "ok":
            r = await gw.http.post("/sandbox/aliyun-sms/_sandbox/phones", json={"phone": phone, "state": state})
            assert r.status_code == 200
        r = await gw.http.post("/v1/sms/messages", headers=gw.auth, json={
            "phone": phone, "template": "order_paid", "params": {"order": f"B{i}", "amount": "1.00"}})
        assert r.status_code == 200, r.text
    await gw.settle()
    html = await page(console.viewer, "/console/sms")
    rates = html[html.index('data-testid="rates"'):html.index('data-testid="messages"')]
    rows = re.findall(r'<tr data-provider="([^"]*)">(.*?)</tr>', rates, re.S)
    assert rows, rates
    numbers = {p: re.findall(r'<td class="num"[^>]*>([^<]*)</td>', cells) for p, cells in rows}
    total = sum(int(n[0]) for n in numbers.values())
    assert total == 3
    delivered = sum(int(n[1]) for n in numbers.values())
    failed = sum(int(n[2]) for n in numbers.values())
    assert failed == 1 and delivered + failed + sum(int(n[3]) for n in numbers.values()) == 3
    tomorrow = (gw.rt.now().astimezone(BEIJING) + timedelta(days=1)).date().isoformat()
    html = await page(console.viewer, "/console/sms", **{"from": tomorrow})
    assert 'data-message="' not in html and 'data-provider="' not in html      # nothing in that range
    html = await page(console.viewer, "/console/sms", status="failed")
    assert html.count('data-message="') == 1


async def test_operator_redelivers_an_event_the_service_queues_it_and_audits_it(console: Console) -> None:
    gw = console.gw
    order = await gw.create_order(amount=300)
    await gw.add_webhook(["order.paid"])
    await gw.pay(order)
    await gw.run_worker()
    async with gw.rt.db.read() as session:
        event_id, first = (await session.execute(select(WebhookDelivery.event_id, WebhookDelivery.endpoint_id)))\
            .one()
    second = await gw.add_webhook(["order.paid"])             # registered after the event: no delivery yet
    before = await gw.count(WebhookDelivery)
    html = await page(console.operator, "/console/webhooks", event=event_id)
    assert f'action="/console/webhooks/events/{event_id}/redeliver"' in html
    r = await console.operator.post("/console/webhooks/redeliver", {"event": event_id})
    assert r.status_code == 303 and (await console.operator.follow(r)).status_code == 200
    assert await gw.count(WebhookDelivery) == before + 1      # a delivery for the new endpoint
    async with gw.rt.db.read() as session:
        rows = {d.endpoint_id: d.status for d in (await session.execute(
            select(WebhookDelivery).where(WebhookDelivery.event_id == event_id))).scalars()}
    assert rows == {first: "pending", second["id"]: "pending"}
    [entry] = await audit_entries(gw, "webhook.redelivered")
    assert entry.target == event_id and entry.actor == f"console:{console.users['operator']['id']}"
    assert entry.details == {"endpoints": sorted([first, second["id"]])}
    html = await page(console.viewer, "/console/audit", action="webhook.redelivered")
    assert f'data-seq="{entry.seq}"' in html and f"console:{console.users['operator']['id']}" in html
    await gw.run_worker()
    assert len([e for e in gw.merchant.events if e.get("id") == event_id]) == 3     # once, then to both again
    r = await console.operator.post(f"/console/webhooks/events/{event_id}/redeliver")     # a row's button
    assert r.status_code == 303
    assert len(await audit_entries(gw, "webhook.redelivered")) == 2
    assert await gw.count(WebhookDelivery) == before + 1      # the same rows, queued again


async def test_viewer_cannot_redeliver_or_resolve_and_sees_no_such_buttons(console: Console) -> None:
    s = await seed(console.gw)
    gw, viewer = console.gw, console.viewer
    html = await page(viewer, "/console/webhooks")
    assert "/redeliver" not in html
    html = await page(viewer, "/console/exceptions")
    assert "/resolve" not in html
    async with gw.rt.db.read() as session:
        event_id = (await session.execute(select(WebhookDelivery.event_id).limit(1))).scalar_one()
    deliveries = await gw.count(WebhookDelivery)
    r = await viewer.post(f"/console/webhooks/events/{event_id}/redeliver")
    assert r.status_code == 403 and await error_code(r) == "role_required"
    r = await viewer.post("/console/webhooks/redeliver", {"event": event_id})
    assert r.status_code == 403 and await error_code(r) == "role_required"
    r = await viewer.post(f"/console/exceptions/{s.exception_id}/resolve", {"action": "accept"})
    assert r.status_code == 403 and await error_code(r) == "role_required"
    async with gw.rt.db.read() as session:
        assert (await session.get(PaymentException, s.exception_id)).status == "open"  # type: ignore[union-attr]
    assert await gw.count(WebhookDelivery) == deliveries
    assert len(await audit_entries(gw, "webhook.redelivered")) == 1          # the seed's own, by API key
    # nor can an operator verify the chain (admins only)
    r = await console.operator.post("/console/audit/verify")
    assert r.status_code == 403 and await error_code(r) == "role_required"


async def test_operator_resolves_an_exception_with_the_api_choices(console: Console) -> None:
    s = await seed(console.gw)
    gw, operator = console.gw, console.operator
    html = await page(operator, "/console/exceptions", status="open")
    assert f'action="/console/exceptions/{s.exception_id}/resolve"' in html
    assert 'value="refund"' in html and 'value="accept"' in html
    r = await operator.post(f"/console/exceptions/{s.exception_id}/resolve", {"action": "ignore"})
    assert r.status_code == 400 and await error_code(r) == "invalid_action"
    r = await operator.post(f"/console/exceptions/{s.exception_id}/resolve", {"action": "accept"}, csrf="forged")
    assert r.status_code == 403 and await error_code(r) == "csrf_failed"
    async with gw.rt.db.read() as session:
        assert (await session.get(PaymentException, s.exception_id)).status == "open"  # type: ignore[union-attr]
    r = await operator.post(f"/console/exceptions/{s.exception_id}/resolve", {"action": "accept"})
    assert r.status_code == 303
    html = (await operator.follow(r)).text
    assert 'data-testid="notice"' in html and f'data-exception="{s.exception_id}"' in html
    async with gw.rt.db.read() as session:
        row = await session.get(PaymentException, s.exception_id)
    assert row is not None and (row.status, row.resolution) == ("resolved", "accept")
    [entry] = await audit_entries(gw, "payment_exception.resolved")
    assert entry.target == s.exception_id and entry.actor == f"console:{console.users['operator']['id']}"
    assert entry.details == {"resolution": "accept", "kind": "amount_mismatch", "order": s.mismatched["id"]}
    r = await operator.post(f"/console/exceptions/{s.exception_id}/resolve", {"action": "refund"})
    assert r.status_code == 400 and await error_code(r) == "exception_already_resolved"
    html = await page(console.viewer, f"/console/reconciliation/{s.run_id}")
    resolution = re.search(r'data-testid="resolution">(.*?)</td>', html, re.S)
    assert resolution and "badge resolved" in resolution.group(1) and "accept" in resolution.group(1)


async def test_admin_verifies_the_audit_chain(console: Console, monkeypatch: pytest.MonkeyPatch) -> None:
    await seed(console.gw)
    monkeypatch.setattr(operations, "PAGE", 1)
    html = await page(console.viewer, "/console/audit")
    assert "/console/audit/verify" not in html
    await console.admin.get("/console/audit")
    r = await console.admin.post("/console/audit/verify")
    assert r.status_code == 200
    assert 'data-testid="verify-result" data-ok="true"' in r.text
    assert 'href="/console/audit?after=' in r.text              # the list under the result pages on as usual
    async with console.gw.rt.db.transaction() as session:            # an entry edited behind the chain's back
        await session.execute(update(AuditEntry).where(AuditEntry.seq == 1).values(action="edited"))
    r = await console.admin.post("/console/audit/verify")
    assert r.status_code == 200 and 'data-ok="false"' in r.text and "#1" in r.text


async def test_pages_walk_every_row_once_page_by_page(console: Console, monkeypatch: pytest.MonkeyPatch) -> None:
    gw = console.gw
    await seed(gw)
    for amount in (101, 102, 103):                  # more deliveries, runs, exceptions, audit entries
        order = await gw.create_order(amount=amount)
        await gw.pay(order)
        async with gw.rt.db.transaction() as session:
            await session.execute(update(Order).where(Order.id == order["id"]).values(amount=amount - 1))
    await gw.run_worker()
    day = gw.rt.now().astimezone(BEIJING).date()
    for back in (1, 2):                             # more runs (empty days)
        await reconcile(gw.rt, app_id=gw.app_id, mode="test", provider="wechatpay", bill_date=day - timedelta(back))
    await reconcile(gw.rt, app_id=gw.app_id, mode="test", provider="wechatpay", bill_date=day)
    for phone in ("13700137001", "13700137002"):
        await gw.http.post("/v1/sms/messages", headers=gw.auth, json={
            "phone": phone, "template": "order_paid", "params": {"order": "C1", "amount": "1.00"}})
    for name in ("李四", "王五"):
        r = await gw.http.post("/v1/identity/verifications", headers=gw.auth, json={
            "kind": "id_card", "name": name, "id_number": "440524188001010014", "provider": "tencent-faceid",
            "consent": {"granted": True, "text_version": "2026-11-v1"}})
        assert r.status_code == 200, r.text
    event = (await gw.http.get("/v1/events", headers=gw.auth)).json()["data"][0]["id"]
    for _ in range(2):                              # more audit entries
        assert (await gw.http.post(f"/v1/events/{event}/redeliver", headers=gw.auth)).status_code == 200
    marker = re.compile(r'<tr data-(?:delivery|run|exception|message|verification|seq)="([^"]+)"')
    paths = (*PAGES, "/console/webhooks?status=delivered", "/console/exceptions?status=open")   # filters kept
    everything = {path: marker.findall(await page(console.viewer, path)) for path in paths}
    monkeypatch.setattr(operations, "PAGE", 2)
    for path, rows in everything.items():
        assert len(rows) >= 3, path
        seen: list[str] = []
        url: str | None = path
        while url:
            html = (await console.viewer.http.get(url)).text
            found_rows = marker.findall(html)
            assert 0 < len(found_rows) <= 2, (url, found_rows)
            seen += found_rows
            found = re.search(r'href="([^"]+)" data-testid="next-page"', html)
            url = found.group(1).replace("&amp;", "&") if found else None
        assert seen == rows, path                   # newest first, every row once, in the same order


@pytest.mark.parametrize(("path", "params", "code"), [
    ("/console/webhooks", {"status": "lost"}, "parameter_invalid"),
    ("/console/exceptions", {"kind": "anything"}, "parameter_invalid"),
    ("/console/sms", {"from": "yesterday"}, "parameter_invalid"),
    ("/console/identity", {"status": "maybe"}, "parameter_invalid"),
    ("/console/reconciliation", {"date": "2026-13-01"}, "parameter_invalid"),
    ("/console/audit", {"after": "x"}, "parameter_invalid"),
    ("/console/exceptions", {"after": "exc_not_there"}, "parameter_invalid"),
    ("/console/reconciliation/run_missing", {}, "resource_missing"),
])
async def test_bad_filters_are_an_error_page_with_the_api_code(console: Console, path: str, params: dict[str, str],
                                                               code: str) -> None:
    r = await console.viewer.get(path, **params)
    assert r.status_code in (400, 404) and await error_code(r) == code


async def test_redelivering_an_unknown_event_changes_nothing(console: Console) -> None:
    await console.operator.get("/console/webhooks")
    r = await console.operator.post("/console/webhooks/events/evt_not_there/redeliver")
    assert r.status_code == 404 and await error_code(r) == "resource_missing"
    r = await console.operator.post("/console/webhooks/redeliver", {"event": ""})
    assert r.status_code == 400 and await error_code(r) == "parameter_missing"
    assert await audit_entries(console.gw, "webhook.redelivered") == []


async def test_another_apps_rows_are_not_shown(console: Console) -> None:
    gw = console.gw
    s = await seed(gw)
    other_id, other_key = await gw.new_app("Other shop")
    r = await gw.http.post("/v1/sms/messages", headers={"Authorization": f"Bearer {other_key}"}, json={
        "phone": "13600136000", "template": "order_paid", "params": {"order": "X", "amount": "1.00"}})
    assert r.status_code == 200, r.text
    html = await page(console.viewer, "/console/sms")
    assert r.json()["id"] not in html and s.message_id in html
    r2 = await console.viewer.get("/console/sms", after=r.json()["id"])       # another app's cursor
    assert r2.status_code == 400
    other = await audit.record_now(gw.rt, action="api_key.created", app_id=other_id, mode="test", target="key_x")
    html = await page(console.viewer, "/console/audit")
    assert 'data-seq="' in html and f'data-seq="{other.seq}"' not in html

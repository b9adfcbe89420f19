"""The sandbox panel over HTTP (SQLite and PostgreSQL): the payer pays an order, faults are injected and
cleared, the sandbox phone shows a verification code, a login code is handed out — each action audited — and the
panel is refused in live mode and to viewers."""

from __future__ import annotations

import re

from sqlalchemy import select

from minigate.store.tables import AuditEntry
from tests.console.conftest import Console

PHONE = "13800138055"


async def audited(console: Console, action: str) -> list[AuditEntry]:
    async with console.gw.rt.db.read() as session:
        return list((await session.execute(select(AuditEntry).where(AuditEntry.action == action))).scalars())


async def test_the_panel_pays_an_order(console: Console) -> None:
    gw, operator = console.gw, console.operator
    order = await gw.create_order(amount=1234)
    assert (await operator.get("/console/sandbox")).status_code == 200
    r = await operator.post("/console/sandbox/pay", {"order": order["out_trade_no"]})
    assert r.status_code == 303, r.text[:800]
    assert r.headers["location"].startswith(f"/console/sandbox?order={order['id']}")
    assert (await gw.order(order["id"]))["status"] == "paid"      # queried at once, not waiting for the callback
    page = (await operator.follow(r)).text
    assert re.search(r'data-testid="order-status"><span class="badge paid">paid</span>', page)
    await gw.settle()                                          # the notification arrives too, changing nothing
    assert (await gw.order(order["id"]))["status"] == "paid"
    [entry] = await audited(console, "sandbox.paid")
    assert entry.actor == f"console:{console.users['operator']['id']}" and entry.target == order["id"]

    # paying again: the simulator refuses, the page says so with a code
    await operator.get("/console/sandbox")
    r = await operator.post("/console/sandbox/pay", {"order": order["id"]})
    assert r.status_code == 409 and 'data-code="sandbox_refused"' in r.text
    r = await operator.post("/console/sandbox/pay", {"order": "ord_doesnotexist"})
    assert r.status_code == 404 and 'data-code="resource_missing"' in r.text


async def test_the_payer_fails_or_never_pays(console: Console) -> None:
    """WeChat Pay: a failed payment (PAYERROR) leaves the order open but unpayable; a payer who never pays makes it
    expire, and the gateway closes it on the query that follows."""
    gw, operator = console.gw, console.operator
    failing, expiring = await gw.create_order(amount=500), await gw.create_order(amount=600)
    await operator.get("/console/sandbox")
    r = await operator.post("/console/sandbox/pay", {"order": failing["id"], "outcome": "fail"})
    assert r.status_code == 303, r.text[:800]
    queried = (await gw.http.get(f"/sandbox/wechatpay/_sandbox/orders/{failing['out_trade_no']}")).json()
    assert queried["transaction"]["trade_state"] == "PAYERROR"
    assert (await gw.order(failing["id"]))["status"] == "pending"     # WeChat lets it run to its expiry
    r = await operator.post("/console/sandbox/pay", {"order": failing["id"]})
    assert r.status_code == 409 and 'data-code="sandbox_refused"' in r.text      # cannot be paid any more

    r = await operator.post("/console/sandbox/pay", {"order": expiring["id"], "outcome": "expire"})
    assert r.status_code == 303, r.text[:800]
    assert (await gw.order(expiring["id"]))["status"] == "closed"
    assert [e.target for e in await audited(console, "sandbox.payment_failed")] == [failing["id"]]
    assert [e.target for e in await audited(console, "sandbox.expired")] == [expiring["id"]]
    r = await operator.post("/console/sandbox/pay", {"order": expiring["id"], "outcome": "refund"})
    assert r.status_code == 400 and 'data-code="parameter_invalid"' in r.text


async def test_a_fault_is_injected_shown_and_cleared(console: Console) -> None:
    gw, operator = console.gw, console.operator
    await operator.get("/console/sandbox")
    r = await operator.post("/console/sandbox/faults", {"sim": "wechatpay", "kind": "http_500", "path": "/v3/pay",
                                                        "count": "2"})
    assert r.status_code == 303
    page = (await operator.follow(r)).text
    assert 'data-testid="faults"' in page and "<code>http_500</code>" in page and "<code>/v3/pay</code>" in page
    assert gw.rt.sandbox.wechatpay.faults.snapshot()["next_call"] == [
        {"kind": "http_500", "path": "/v3/pay", "count": 2, "seconds": 30.0}]
    # the fault is real: creating an order now fails at the provider
    r = await gw.http.post("/v1/orders", headers=gw.auth, json={
        "channel": "wechat_mini", "amount": 100, "description": "x", "merchant_order_no": "F1",
        "payer": {"openid": "oTestOpenid0000000000000001"}})
    assert r.status_code >= 500 or r.json().get("status") != "pending"

    r = await operator.post("/console/sandbox/faults", {"sim": "alipay", "kind": "drop", "count": "1"})
    assert "<code>drop</code>" in (await operator.follow(r)).text
    r = await operator.post("/console/sandbox/faults/clear", {"sim": "wechatpay"})
    assert r.status_code == 303
    page = (await operator.follow(r)).text
    assert 'data-testid="faults"' not in page
    assert gw.rt.sandbox.wechatpay.faults.snapshot()["next_call"] == []
    assert gw.rt.sandbox.simulator("alipay").faults.snapshot()["notify"] != []

    for bad in ({"sim": "wechatpay", "kind": "explode"}, {"sim": "nosuchsim", "kind": "timeout"},
                {"sim": "wechatpay", "kind": "timeout", "seconds": "soon"}):
        r = await operator.post("/console/sandbox/faults", bad)
        assert r.status_code == 400 and 'data-code="parameter_invalid"' in r.text
    assert len(await audited(console, "sandbox.fault_added")) == 2
    assert len(await audited(console, "sandbox.faults_cleared")) == 1


async def test_the_sandbox_phone_shows_a_verification_code(console: Console) -> None:
    gw, operator = console.gw, console.operator
    empty = (await operator.get("/console/sandbox", phone=PHONE)).text
    assert 'data-testid="messages"' not in empty
    r = await gw.http.post("/v1/verification_codes", headers=gw.auth, json={"phone": PHONE, "purpose": "login"})
    assert r.status_code == 200, r.text
    page = (await operator.get("/console/sandbox", phone=PHONE)).text
    assert 'data-testid="messages"' in page
    code = re.search(r"<td>[^<]*?(\d{6})[^<]*</td>", page)
    assert code, page
    check = await gw.http.post("/v1/verification_codes/check", headers=gw.auth,
                               json={"phone": PHONE, "purpose": "login", "code": code.group(1)})
    assert check.status_code == 200 and check.json()["verified"] is True, check.text


async def test_a_login_code_exchanges_for_an_openid(console: Console) -> None:
    gw, operator = console.gw, console.operator
    await operator.get("/console/sandbox")
    r = await operator.post("/console/sandbox/login", {"provider": "wechat", "user": "bob"})
    assert r.status_code == 200
    found = re.search(r'data-testid="login-code">([^<]+)<', r.text)
    assert found
    login = await gw.http.post("/v1/wechat/login", headers=gw.auth, json={"code": found.group(1)})
    assert login.status_code == 200, login.text
    assert login.json()["openid"]
    [entry] = await audited(console, "sandbox.login_code")
    assert entry.target == "wechat"


async def test_the_panel_is_refused_in_live_mode_and_to_viewers(console: Console) -> None:
    gw, operator, viewer = console.gw, console.operator, console.viewer
    order = await gw.create_order()
    r = await viewer.get("/console/sandbox")
    assert r.status_code == 403 and 'data-code="role_required"' in r.text
    assert 'data-nav="sandbox"' not in (await viewer.get("/console/")).text
    assert 'data-nav="sandbox"' in (await operator.get("/console/")).text

    assert (await operator.post("/console/session", {"mode": "live", "back": "/console/"})).status_code == 303
    page = await operator.get("/console/")
    assert 'data-nav="sandbox"' not in page.text
    r = await operator.get("/console/sandbox")
    assert r.status_code == 409 and 'data-code="sandbox_test_mode_only"' in r.text
    r = await operator.post("/console/sandbox/pay", {"order": order["id"]})
    assert r.status_code == 409 and 'data-code="sandbox_test_mode_only"' in r.text
    r = await operator.post("/console/sandbox/faults", {"sim": "wechatpay", "kind": "timeout"})
    assert r.status_code == 409
    assert (await gw.order(order["id"]))["status"] == "pending"
    assert gw.rt.sandbox.wechatpay.faults.snapshot()["next_call"] == []
    assert await audited(console, "sandbox.paid") == []


async def test_the_panel_renders_every_part_in_chinese(console: Console) -> None:
    gw, operator = console.gw, console.operator
    order = await gw.create_order()
    await gw.http.post("/v1/verification_codes", headers=gw.auth, json={"phone": PHONE, "purpose": "login"})
    await operator.get("/console/sandbox")
    assert (await operator.post("/console/session", {"lang": "zh", "back": "/console/sandbox"})).status_code == 303
    await operator.post("/console/sandbox/faults", {"sim": "wechatpay", "kind": "clock_skew_seconds", "seconds": "90"})
    await operator.post("/console/sandbox/faults", {"sim": "wechatpay", "kind": "delay", "seconds": "5"})
    r = await operator.get("/console/sandbox", order=order["id"], phone=PHONE)
    assert r.status_code == 200
    for label in ("模拟用户付款", "故障注入", "时钟偏移", "沙箱手机", "渠道订单号"):
        assert label in r.text
    assert 'data-testid="messages"' in r.text and 'data-testid="sandbox-order"' in r.text
    assert gw.rt.sandbox.wechatpay.faults.snapshot()["clock_skew_seconds"] == 90.0
    r = await operator.post("/console/sandbox/login", {"provider": "alipay", "user": "li"})
    assert r.status_code == 200 and 'data-testid="login-code"' in r.text and "小程序登录" in r.text

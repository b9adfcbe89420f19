"""Console orders over HTTP (SQLite and PostgreSQL): search, the masked timeline, refunds with their confirmation
step, close, query, and the refusals (role, CSRF, bad amount) that change nothing."""

from __future__ import annotations

import re
from typing import Any

from sqlalchemy import func, select

from minigate.console.pages.orders import mask_payload
from minigate.store.tables import AuditEntry, InboundNotification, Refund
from tests.console.conftest import Console
from tests.console.support import ConsoleClient

OPENID = "oTestOpenid0000000000000001"


async def _paid(console: Console, amount: int = 100) -> dict[str, Any]:
    order = await console.gw.create_order(amount=amount)
    await console.gw.pay(order)
    assert (await console.gw.order(order["id"]))["status"] == "paid"
    return order


async def _count(console: Console, model: Any, *where: Any) -> int:
    async with console.gw.rt.db.read() as session:
        return int((await session.execute(select(func.count()).select_from(model).where(*where))).scalar_one())


def _code(r: Any) -> str | None:
    found = re.search(r'data-code="([^"]+)"', r.text)
    return found.group(1) if found else None


async def _refund(client: ConsoleClient, order_id: str, amount: str, reason: str = "") -> Any:
    """Both steps of a console refund: the review page, then its confirmation form as the browser sends it."""
    await client.get(f"/console/orders/{order_id}")
    review = await client.post(f"/console/orders/{order_id}/refund", {"amount": amount, "reason": reason})
    assert review.status_code == 200, review.text[:500]
    client.csrf = re.search(r'name="csrf_token" value="([^"]+)"', review.text).group(1)  # type: ignore[union-attr]
    fields = dict(re.findall(r'<input type="hidden" name="(amount|reason|nonce)" value="([^"]*)"', review.text))
    return await client.post(f"/console/orders/{order_id}/refund/confirm", fields), fields


async def test_search_finds_a_paid_order_by_any_of_its_numbers(console: Console) -> None:
    order = await _paid(console, amount=250)
    other = await console.gw.create_order(amount=999)
    paid = await console.gw.order(order["id"])
    for q in (order["id"], order["merchant_order_no"], order["out_trade_no"], paid["provider_trade_id"], OPENID):
        r = await console.viewer.get("/console/orders", q=q)
        assert r.status_code == 200
        assert f'data-order="{order["id"]}"' in r.text, q
        assert f'data-order="{other["id"]}"' not in r.text or q == OPENID   # both orders share the test payer
    listed = await console.viewer.get("/console/orders", status="paid")
    assert f'data-order="{order["id"]}"' in listed.text and f'data-order="{other["id"]}"' not in listed.text
    assert "¥2.50" in listed.text
    ranged = await console.viewer.get("/console/orders", min="5", max="20")
    assert f'data-order="{other["id"]}"' in ranged.text and f'data-order="{order["id"]}"' not in ranged.text
    bad = await console.viewer.get("/console/orders", min="abc")
    assert bad.status_code == 400 and _code(bad) == "amount_invalid"


async def test_list_is_newest_first_with_a_cursor(console: Console) -> None:
    ids = [(await console.gw.create_order(amount=100 + i))["id"] for i in range(27)]
    first = await console.viewer.get("/console/orders")
    shown = re.findall(r'data-order="([^"]+)"', first.text)
    assert shown == ids[::-1][:25]
    nxt = re.search(r'href="([^"]+)" data-testid="next-page"', first.text)
    assert nxt is not None
    second = await console.viewer.get(nxt.group(1).replace("&amp;", "&"))
    assert re.findall(r'data-order="([^"]+)"', second.text) == ids[::-1][25:]
    assert 'data-testid="next-page"' not in second.text


async def test_detail_shows_the_timeline_with_payloads_masked(console: Console) -> None:
    order = await _paid(console)
    # a provider whose notifications carry the payer in clear (form and JSON bodies): kept raw, shown masked
    async with console.gw.rt.db.transaction() as session:
        session.add(InboundNotification(
            provider="wechatpay", app_id=console.gw.app_id, mode="test", dedupe_key=None, order_id=order["id"],
            outcome="rejected", error_code="signature_invalid", headers={"wechatpay-serial": "ABC"},
            body=(b'{"payer": {"openid": "' + OPENID.encode() + b'"}, "sign": "c2lnbmF0dXJlc2lnbmF0dXJlc2ln",'
                  b' "note": "call 13812345678", "resource": {"ciphertext": "QUJDREVGR0hJSktMTU5PUA=="}}'),
            received_at=console.gw.rt.now()))
    r = await console.viewer.get(f"/console/orders/{order['id']}")
    assert r.status_code == 200
    page = r.text
    assert OPENID not in page                                  # not in the facts, not in any payload
    assert "oTe********************0001" in page                # masked as the API masks it
    assert 'data-kind="notification"' in page and 'data-kind="state"' in page and 'data-kind="event"' in page
    assert "order.paid" in page
    assert "c2lnbmF0dXJlc2lnbmF0dXJlc2ln" not in page and "13812345678" not in page
    assert "QUJDREVGR0hJSktMTU5PUA==" not in page and "[encrypted, 24 characters]" in page
    # the genuine sandbox notification is there too, processed
    notes = page.split('<li data-kind="notification">')[1:]
    assert len(notes) == 2
    assert any('class="badge paid"' in n.split("</li>")[0] for n in notes)      # the outcome of applying it
    # the viewer sees no action
    assert 'data-testid="refund-form"' not in page and 'data-testid="close-order"' not in page


async def test_pages_render_in_chinese(console: Console) -> None:
    order = await _paid(console)
    client = console.operator
    await client.get("/console/orders")
    assert (await client.post("/console/session", {"lang": "zh", "back": "/console/orders"})).status_code == 303
    assert "商户订单号" in (await client.get("/console/orders")).text
    detail = await client.get(f"/console/orders/{order['id']}")
    assert detail.status_code == 200 and "时间线" in detail.text and "渠道通知" in detail.text
    review = await client.post(f"/console/orders/{order['id']}/refund", {"amount": "0.10"})
    assert review.status_code == 200 and "确认退款" in review.text
    assert "退款审批" in (await client.get("/console/approvals")).text


def test_masking_of_form_and_xml_bodies() -> None:
    form = mask_payload(b"buyer_id=2088102177846880&buyer_logon_id=158****1234&sign=abcdefabcdefabcdefabcdef&"
                        b"total_amount=1.00")
    assert "2088102177846880" not in form and "208*********6880" in form
    assert "abcdefabcdefabcdefabcdef" not in form and '"total_amount": "1.00"' in form
    xml = mask_payload(b"<xml><openid>oAbCdEfGhIjKlMnOpQrStUv</openid><sign>0123456789ABCDEF</sign></xml>")
    assert "oAbCdEfGhIjKlMnOpQrStUv" not in xml and "0123456789ABCDEF" not in xml
    assert mask_payload("free text with oSecretPayer9", clear=("oSecretPayer9",)) == "free text with oSe******yer9"


async def test_operator_refund_under_the_threshold_goes_straight_to_the_timeline(console: Console) -> None:
    order = await _paid(console, amount=300)
    r, fields = await _refund(console.operator, order["id"], "1.20", reason="damaged")
    assert fields["amount"] == "1.20"
    assert r.status_code == 303 and r.headers["location"].startswith(f"/console/orders/{order['id']}")
    await console.gw.settle()
    async with console.gw.rt.db.read() as session:
        refund = (await session.execute(select(Refund).where(Refund.order_id == order["id"]))).scalar_one()
    assert refund.amount == 120 and refund.reason == "damaged"
    page = await console.operator.follow(r)
    assert f'data-refund="{refund.id}"' in page.text and "refund.created" in page.text
    # the same confirmation sent again (a double click) is the same refund
    again = await console.operator.post(f"/console/orders/{order['id']}/refund/confirm", fields)
    assert again.status_code == 303
    assert await _count(console, Refund, Refund.order_id == order["id"]) == 1
    async with console.gw.rt.db.read() as session:
        actors = (await session.execute(select(AuditEntry.actor).where(AuditEntry.action == "refund.created",
                                                                       AuditEntry.target == refund.id))).scalars()
        assert list(actors) == [f"console:{console.users['operator']['id']}"]


async def test_confirmation_step_changes_nothing(console: Console) -> None:
    order = await _paid(console, amount=300)
    await console.operator.get(f"/console/orders/{order['id']}")
    review = await console.operator.post(f"/console/orders/{order['id']}/refund", {"full": "1"})
    assert review.status_code == 200 and 'data-testid="refund-confirm"' in review.text
    assert "¥3.00" in review.text and order["merchant_order_no"] in review.text
    assert await _count(console, Refund, Refund.order_id == order["id"]) == 0


async def test_viewer_cannot_refund(console: Console) -> None:
    order = await _paid(console)
    await console.viewer.get(f"/console/orders/{order['id']}")
    for path in ("refund", "refund/confirm"):
        r = await console.viewer.post(f"/console/orders/{order['id']}/{path}",
                                      {"amount": "1.00", "nonce": "a" * 32})
        assert r.status_code == 403 and _code(r) == "role_required"
    assert await _count(console, Refund, Refund.order_id == order["id"]) == 0


async def test_forged_csrf_is_refused(console: Console) -> None:
    order = await _paid(console)
    await console.operator.get(f"/console/orders/{order['id']}")
    r = await console.operator.post(f"/console/orders/{order['id']}/refund/confirm",
                                    {"amount": "1.00", "nonce": "b" * 32}, csrf="forged-token")
    assert r.status_code == 403 and _code(r) == "csrf_failed"
    r = await console.operator.post(f"/console/orders/{order['id']}/close", csrf="")
    assert r.status_code == 403 and _code(r) == "csrf_failed"
    assert await _count(console, Refund, Refund.order_id == order["id"]) == 0
    assert (await console.gw.order(order["id"]))["status"] == "paid"


async def test_bad_amounts_are_refused(console: Console) -> None:
    order = await _paid(console, amount=100)
    await console.operator.get(f"/console/orders/{order['id']}")
    for amount in ("abc", "-1", "0", "1.234", ""):
        r = await console.operator.post(f"/console/orders/{order['id']}/refund", {"amount": amount})
        assert r.status_code == 400 and _code(r) in ("amount_invalid", "parameter_missing"), amount
    too_much = await console.operator.post(f"/console/orders/{order['id']}/refund", {"amount": "1.01"})
    assert too_much.status_code == 400 and _code(too_much) == "refund_exceeds_refundable"
    assert await _count(console, Refund, Refund.order_id == order["id"]) == 0


async def test_close_an_unpaid_order(console: Console) -> None:
    order = await console.gw.create_order(amount=500)
    page = await console.operator.get(f"/console/orders/{order['id']}")
    assert 'data-testid="close-order"' in page.text
    r = await console.operator.post(f"/console/orders/{order['id']}/close")
    assert r.status_code == 303
    assert (await console.gw.order(order["id"]))["status"] == "closed"
    page = await console.operator.follow(r)
    assert "order.closed" in page.text and 'data-testid="close-order"' not in page.text
    assert await _count(console, AuditEntry, AuditEntry.action == "console.order_closed",
                        AuditEntry.target == order["id"]) == 1
    paid = await _paid(console)
    refused = await console.operator.post(f"/console/orders/{paid['id']}/close")
    assert refused.status_code == 409 and _code(refused) == "order_already_paid"


async def test_query_now_applies_a_payment_the_notification_did_not_bring(console: Console) -> None:
    order = await console.gw.create_order(amount=700)
    r = await console.gw.http.post("/sandbox/wechatpay/_sandbox/faults", json={"seconds": 0, "notify": "drop"})
    assert r.status_code < 300, r.text
    await console.gw.pay(order)                                  # paid at the provider; the callback is lost
    assert (await console.gw.order(order["id"]))["status"] == "pending"
    await console.viewer.get(f"/console/orders/{order['id']}")
    refused = await console.viewer.post(f"/console/orders/{order['id']}/query")
    assert refused.status_code == 403 and _code(refused) == "role_required"
    await console.operator.get(f"/console/orders/{order['id']}")
    r = await console.operator.post(f"/console/orders/{order['id']}/query")
    assert r.status_code == 303
    assert (await console.gw.order(order["id"]))["status"] == "paid"
    page = await console.operator.follow(r)
    assert 'data-testid="notice"' in page.text and "paid" in page.text
    assert await _count(console, AuditEntry, AuditEntry.action == "console.order_queried",
                        AuditEntry.target == order["id"]) == 1

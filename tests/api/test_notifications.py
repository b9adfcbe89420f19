"""Inbound WeChat Pay callbacks: genuine ones change state exactly once; anything else changes nothing."""

from __future__ import annotations

import json
from typing import Any

import pytest

from minigate.providers.wechatpay import signing
from minigate.store.tables import Event, InboundNotification, OrderEvent
from tests.conftest import Gateway


def notify_url(gateway: Gateway) -> str:
    return f"/notify/wechatpay/test/{gateway.app_id}"


def transaction(gateway: Gateway, order: dict[str, Any], **overrides: Any) -> dict[str, Any]:
    creds = gateway.rt.sandbox.credentials("wechatpay")
    plain = {"mchid": creds["mchid"], "appid": creds["appid"], "out_trade_no": order["out_trade_no"],
             "transaction_id": "4200000000202611260000000001", "trade_type": "JSAPI", "trade_state": "SUCCESS",
             "trade_state_desc": "支付成功", "bank_type": "OTHERS", "attach": "",
             "success_time": "2026-11-26T10:00:00+08:00", "payer": {"openid": "oPayer000000001"},
             "amount": {"total": order["amount"], "payer_total": order["amount"], "currency": "CNY",
                        "payer_currency": "CNY"}}
    plain.update(overrides)
    return plain


async def send_signed(gateway: Gateway, plain: dict[str, Any], *, event_id: str = "EV-1",
                      mutate_body: Any = None, mutate_headers: Any = None) -> Any:
    """A notification encrypted and signed with the sandbox's genuine WeChat keys, optionally altered."""
    sim = gateway.sim
    creds = gateway.rt.sandbox.credentials("wechatpay")
    nonce = "abcdefghijkl"
    event = {"id": event_id, "create_time": "2026-11-26T10:00:01+08:00", "resource_type": "encrypt-resource",
             "event_type": "TRANSACTION.SUCCESS", "summary": "支付成功",
             "resource": {"original_type": "transaction", "algorithm": "AEAD_AES_256_GCM",
                          "ciphertext": signing.aes_gcm_encrypt(creds["apiv3_key"].encode(), nonce, "transaction",
                                                                json.dumps(plain, ensure_ascii=False)),
                          "associated_data": "transaction", "nonce": nonce}}
    body = json.dumps(event, separators=(",", ":"), ensure_ascii=False).encode()
    headers = sim.signed_headers("public_key", body)
    if mutate_body:
        body = mutate_body(body)
    if mutate_headers:
        headers = mutate_headers(headers)
    return await gateway.http.post(notify_url(gateway), content=body,
                                   headers=headers | {"Content-Type": "application/json"})


async def assert_unchanged(gateway: Gateway, order: dict[str, Any]) -> None:
    assert (await gateway.order(order["id"]))["status"] == "pending"
    assert await gateway.count(Event) == 0


async def test_genuine_notification_pays_exactly_once(gateway: Gateway) -> None:
    await gateway.add_webhook()
    order = await gateway.create_order(amount=321)
    plain = transaction(gateway, order)
    first = await send_signed(gateway, plain, event_id="EV-A")
    assert first.status_code in (200, 204)
    again = await send_signed(gateway, plain, event_id="EV-A")          # a retry of the same event
    other_id = await send_signed(gateway, plain, event_id="EV-B")       # same payment, another event id
    assert again.status_code in (200, 204) and other_id.status_code in (200, 204)
    final = await gateway.order(order["id"])
    assert final["status"] == "paid" and final["provider_trade_id"] == plain["transaction_id"]
    await gateway.run_worker()
    assert gateway.merchant.types() == ["order.paid"]
    async with gateway.rt.db.transaction() as session:
        from sqlalchemy import select
        paid = (await session.execute(select(OrderEvent).where(OrderEvent.type == "order.paid"))).scalars().all()
    assert len(paid) == 1


async def test_sandbox_duplicate_fault_is_deduplicated(gateway: Gateway) -> None:
    await gateway.add_webhook()
    await gateway.http.post("/sandbox/wechatpay/_sandbox/faults", json={"notify": "duplicate"})
    order = await gateway.create_order()
    await gateway.pay(order)
    await gateway.run_worker()
    assert gateway.merchant.types() == ["order.paid"]
    outcomes = await gateway.count(InboundNotification)
    assert outcomes == 1   # the duplicate was acknowledged without a second record


@pytest.mark.parametrize("case", ["flipped_body_byte", "bad_signature", "signtest_probe", "replayed_after_window",
                                  "future_timestamp", "unknown_serial", "missing_headers", "wrong_amount",
                                  "other_mchid", "other_appid", "unknown_order", "not_json"])
async def test_forged_or_invalid_notifications_change_nothing(gateway: Gateway, case: str) -> None:
    await gateway.add_webhook()
    order = await gateway.create_order(amount=500)
    plain = transaction(gateway, order)
    kwargs: dict[str, Any] = {}
    expected_code = {"flipped_body_byte": "invalid_signature", "bad_signature": "invalid_signature",
                     "signtest_probe": "signature_probe", "replayed_after_window": "timestamp_out_of_window",
                     "future_timestamp": "timestamp_out_of_window", "unknown_serial": "unknown_serial",
                     "missing_headers": "missing_signature_headers", "wrong_amount": "amount_mismatch",
                     "other_mchid": "merchant_mismatch", "other_appid": "app_mismatch",
                     "unknown_order": "unknown_order", "not_json": "invalid_signature"}[case]
    if case == "flipped_body_byte":
        kwargs["mutate_body"] = lambda b: b.replace(b"encrypt-resource", b"encrypt-resourcf")
    elif case == "bad_signature":
        kwargs["mutate_headers"] = lambda h: h | {"Wechatpay-Signature": "AAAA" + h["Wechatpay-Signature"][4:]}
    elif case == "signtest_probe":
        kwargs["mutate_headers"] = lambda h: h | {"Wechatpay-Signature": "WECHATPAY/SIGNTEST/" + "A" * 300}
    elif case in ("replayed_after_window", "future_timestamp"):
        delta = -301 if case == "replayed_after_window" else 301

        def skew(h: dict[str, str]) -> dict[str, str]:
            return h | {"Wechatpay-Timestamp": str(int(h["Wechatpay-Timestamp"]) + delta)}
        kwargs["mutate_headers"] = skew
    elif case == "unknown_serial":
        kwargs["mutate_headers"] = lambda h: h | {"Wechatpay-Serial": "PUB_KEY_ID_0000000000000000000000000000000000"}
    elif case == "missing_headers":
        kwargs["mutate_headers"] = lambda h: {k: v for k, v in h.items() if k != "Wechatpay-Nonce"}
    elif case == "wrong_amount":
        plain = transaction(gateway, order, amount={"total": 1, "payer_total": 1, "currency": "CNY",
                                                    "payer_currency": "CNY"})
    elif case == "other_mchid":
        plain = transaction(gateway, order, mchid="1900000000")
    elif case == "other_appid":
        plain = transaction(gateway, order, appid="wx0000000000000000")
    elif case == "unknown_order":
        plain = transaction(gateway, order, out_trade_no="MGNOSUCHORDER0000001")
    elif case == "not_json":
        kwargs["mutate_body"] = lambda b: b"not json at all"
    r = await send_signed(gateway, plain, **kwargs)
    assert 400 <= r.status_code < 600, r.text
    assert r.json()["code"] == "FAIL"
    await assert_unchanged(gateway, order)
    async with gateway.rt.db.transaction() as session:
        from sqlalchemy import select
        rows = (await session.execute(select(InboundNotification))).scalars().all()
    assert [row.outcome for row in rows] == ["rejected"]
    assert rows[0].error_code == expected_code
    assert rows[0].body  # the raw bytes are kept for investigation


async def test_sandbox_tamper_and_probe_faults_are_refused_then_genuine_retry_lands(gateway: Gateway) -> None:
    for fault in ("tamper", "signtest_probe"):
        await gateway.http.post("/sandbox/wechatpay/_sandbox/faults", json={"notify": fault})
        order = await gateway.create_order()
        await gateway.pay(order)
        # the altered first attempt was refused; the genuine retry (WeChat's schedule, compressed) paid it
        assert (await gateway.order(order["id"]))["status"] == "paid"
        log = (await gateway.http.get("/sandbox/wechatpay/_sandbox/notifications")).json()
        statuses = [a["status"] for a in log["data"][0]["log"]]
        assert statuses[0] >= 400 and statuses[-1] in (200, 204)


async def test_notification_for_unknown_app_or_mode(gateway: Gateway) -> None:
    r = await gateway.http.post("/notify/wechatpay/test/app_nonexistent", content=b"{}")
    assert r.status_code == 404
    r = await gateway.http.post(f"/notify/wechatpay/live/{gateway.app_id}", content=b"{}")
    assert r.status_code == 404
    r = await gateway.http.post(f"/notify/paypal/test/{gateway.app_id}", content=b"{}")
    assert r.status_code == 404


async def test_verified_but_unhandled_events_are_acknowledged_and_kept(gateway: Gateway) -> None:
    """A genuine event minigate does not act on is acknowledged (else the provider resends it for a day)."""
    _, body = gateway.sim._event("PROFITSHARING.FINISHED", "分账完成", "profitsharing", {"mchid": "1"})
    headers = gateway.sim.signed_headers("public_key", body) | {"Content-Type": "application/json"}
    r = await gateway.http.post(notify_url(gateway), content=body, headers=headers)
    assert r.status_code in (200, 204)
    async with gateway.rt.db.transaction() as session:
        from sqlalchemy import select
        rows = (await session.execute(select(InboundNotification))).scalars().all()
    assert [(row.outcome, row.error_code) for row in rows] == [("ignored", "unsupported_event")]
    assert await gateway.count(Event) == 0

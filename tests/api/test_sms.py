"""SMS end to end through the gateway and the sandbox simulators (SQLite and PostgreSQL).

Codes are read from the sandbox phone, as a user would read them; failover, unknown outcomes, receipts,
limits, consent and order notifications each have their own test.
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select, update

from minigate.store.tables import ConsentRecord, SmsDecision, SmsMessage, VerificationCode
from tests.conftest import Gateway

PROVIDERS = ("aliyun-sms", "tencentcloud", "yunpian")
CODE = re.compile(r"验证码为(\d{6})")


async def configure(gw: Gateway, **settings: Any) -> dict[str, Any]:
    r = await gw.http.put("/v1/sms/settings", headers=gw.auth, json=settings)
    assert r.status_code == 200, r.text
    return dict(r.json())


async def phone_messages(gw: Gateway, phone: str) -> list[dict[str, Any]]:
    r = await gw.http.get("/sandbox/_sandbox/messages", params={"phone": phone})
    assert r.status_code == 200, r.text
    return list(r.json()["messages"])


async def read_code(gw: Gateway, phone: str) -> str:
    newest = (await phone_messages(gw, phone))[0]
    match = CODE.search(newest["text"])
    assert match, newest["text"]
    return match.group(1)


async def send_code(gw: Gateway, phone: str, purpose: str = "login", **extra: Any) -> Any:
    return await gw.http.post("/v1/verification_codes", headers=gw.auth,
                              json={"phone": phone, "purpose": purpose, **extra})


async def check(gw: Gateway, phone: str, code: str, purpose: str = "login") -> dict[str, Any]:
    r = await gw.http.post("/v1/verification_codes/check", headers=gw.auth,
                           json={"phone": phone, "purpose": purpose, "code": code})
    assert r.status_code == 200, r.text
    return dict(r.json())


async def fault(gw: Gateway, provider: str, spec: dict[str, Any]) -> None:
    r = await gw.http.post(f"/sandbox/{provider}/_sandbox/faults", json=spec)
    assert r.status_code == 200, r.text


async def message(gw: Gateway, message_id: str) -> dict[str, Any]:
    r = await gw.http.get(f"/v1/sms/messages/{message_id}", headers=gw.auth)
    assert r.status_code == 200, r.text
    return dict(r.json())


# --------------------------------------------------------------------------- codes per provider

@pytest.mark.parametrize("provider", PROVIDERS)
async def test_code_through_each_provider_is_read_from_the_phone_and_checked(gateway: Gateway, provider: str) -> None:
    await configure(gateway, providers=[{"provider": provider}])
    phone = "13800138001"
    r = await send_code(gateway, phone)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["object"] == "verification_code" and body["phone"] == "+86138****8001"
    assert body["message"]["provider"] == provider and body["message"]["status"] == "sent"
    inbox = await phone_messages(gateway, phone)
    assert [m["provider"] for m in inbox] == [provider]
    assert inbox[0]["text"].startswith("【") and "5分钟内有效" in inbox[0]["text"]
    code = await read_code(gateway, phone)
    wrong = f"{(int(code) + 1) % 1_000_000:06d}"
    assert await check(gateway, phone, wrong) == {
        "object": "verification_check", "purpose": "login", "phone": "+86138****8001", "verified": False,
        "reason": "wrong_code", "attempts_left": 4}
    assert (await check(gateway, phone, code, purpose="register"))["reason"] == "no_active_code"
    assert (await check(gateway, phone, code))["verified"] is True
    assert (await check(gateway, phone, code))["reason"] == "already_used"
    # receipts arrive (pushed by the simulator to the gateway) and move the message forward
    await gateway.settle()
    assert (await message(gateway, body["message"]["id"]))["status"] == "delivered"


async def test_code_is_stored_only_as_a_keyed_hash_and_the_number_only_sealed(gateway: Gateway) -> None:
    phone = "13800138002"
    assert (await send_code(gateway, phone)).status_code == 200
    code = await read_code(gateway, phone)
    async with gateway.rt.db.read() as session:
        rows = [*(await session.execute(select(VerificationCode))).scalars(),
                *(await session.execute(select(SmsMessage))).scalars()]
    dump = repr([vars(r) for r in rows])
    assert code not in dump and phone not in dump and "13800138002" not in dump
    assert "138****8002" in dump       # the masked number is kept for display


async def test_a_new_code_supersedes_the_old_one_and_codes_expire(gateway: Gateway) -> None:
    phone = "13800138003"
    await configure(gateway, limits={"phone_per_minute": 5})
    assert (await send_code(gateway, phone)).status_code == 200
    first = await read_code(gateway, phone)
    assert (await send_code(gateway, phone)).status_code == 200
    second = await read_code(gateway, phone)
    if first != second:
        assert (await check(gateway, phone, first))["verified"] is False
    async with gateway.rt.db.transaction() as session:   # the code's five minutes pass
        await session.execute(update(VerificationCode).where(VerificationCode.status == "active")
                              .values(expires_at=gateway.rt.now()))
    assert (await check(gateway, phone, second))["reason"] == "expired"


# --------------------------------------------------------------------------- abuse

async def test_brute_force_kills_the_code_after_five_wrong_tries(gateway: Gateway) -> None:
    phone = "13800138004"
    assert (await send_code(gateway, phone)).status_code == 200
    code = await read_code(gateway, phone)
    wrong = [f"{(int(code) + i) % 1_000_000:06d}" for i in range(1, 6)]
    reasons = [(await check(gateway, phone, guess))["reason"] for guess in wrong]
    assert reasons == ["wrong_code"] * 4 + ["too_many_attempts"]
    assert (await check(gateway, phone, code))["reason"] == "too_many_attempts"


async def test_code_checks_per_phone_are_capped(gateway: Gateway) -> None:
    phone = "13800138005"
    await configure(gateway, limits={"checks_per_phone_day": 3})
    assert (await send_code(gateway, phone)).status_code == 200
    for _ in range(3):
        await check(gateway, phone, "000000")
    r = await gateway.http.post("/v1/verification_codes/check", headers=gateway.auth,
                                json={"phone": phone, "purpose": "login", "code": "000000"})
    assert r.status_code == 429 and r.json()["error"]["limit"] == "checks_per_phone_day"


async def test_sms_bombing_one_number_is_stopped_before_any_provider_call(gateway: Gateway) -> None:
    phone = "13800138006"
    assert (await send_code(gateway, phone)).status_code == 200
    r = await send_code(gateway, phone)
    assert r.status_code == 429
    error = r.json()["error"]
    assert error["code"] == "rate_limited" and error["limit"] == "phone_per_minute"
    assert error["captcha_required"] is True and error["retry_after"] >= 1
    assert len(await phone_messages(gateway, phone)) == 1          # the refused send cost nothing
    async with gateway.rt.db.read() as session:
        decisions = [(d.outcome, d.reason) for d in (await session.execute(
            select(SmsDecision).order_by(SmsDecision.id))).scalars()]
    assert decisions == [("allowed", "ok"), ("refused", "phone_per_minute")]


async def test_rotating_numbers_from_one_ip_and_one_range_hit_their_caps(gateway: Gateway) -> None:
    await configure(gateway, limits={"ip_per_hour": 3, "prefix_per_hour": 50, "captcha_remaining": 1})
    answers = [await send_code(gateway, f"1390013{i:04d}", ip="203.0.113.9") for i in range(4)]
    assert [a.status_code for a in answers] == [200, 200, 200, 429]
    assert [a.json().get("captcha_required") for a in answers[:3]] == [False, True, True]
    assert answers[3].json()["error"]["limit"] == "ip_per_hour"
    # a pumping ring walks one number range from many IPs: the prefix window stops it
    await configure(gateway, limits={"prefix_per_hour": 2})
    ring = [await send_code(gateway, f"1370013{i:04d}", ip=f"198.51.100.{i}") for i in range(3)]
    assert [a.status_code for a in ring] == [200, 200, 429]
    assert ring[2].json()["error"]["limit"] == "prefix_per_hour"


async def test_other_countries_are_refused_unless_enabled(gateway: Gateway) -> None:
    r = await send_code(gateway, "+85261234567")
    assert r.status_code == 400 and r.json()["error"]["code"] == "country_not_allowed"
    r = await send_code(gateway, "12345")
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_phone"
    assert await gateway.count(SmsMessage) == 0


# --------------------------------------------------------------------------- failover and unknown outcomes

async def test_failover_moves_to_the_next_provider_when_the_first_is_down(gateway: Gateway) -> None:
    """A throttled (429) provider did not take the message: the next one sends, and only it."""
    await configure(gateway, providers=[{"provider": "aliyun-sms"}, {"provider": "tencentcloud", "weight": 0},
                                        {"provider": "yunpian", "weight": 0}])
    await fault(gateway, "aliyun-sms", {"next_call": "http_429", "count": 10})
    phone = "13800138007"
    r = await send_code(gateway, phone)
    assert r.status_code == 200, r.text
    sent = await message(gateway, r.json()["message"]["id"])
    assert sent["provider"] == "tencentcloud"
    assert [(a["provider"], a["outcome"], a["code"]) for a in sent["attempts"]] == [
        ("aliyun-sms", "failed", "throttled"), ("tencentcloud", "sent", "ok")]
    inbox = await phone_messages(gateway, phone)
    assert [m["provider"] for m in inbox] == ["tencentcloud"]       # delivered once, by one provider
    code = await read_code(gateway, phone)
    assert (await check(gateway, phone, code))["verified"] is True


async def test_code_nobody_could_send_is_a_503_naming_the_message(gateway: Gateway) -> None:
    """Every provider refuses: a clean 503 ``sms_delivery_failed`` carrying the message id (not a 500), and the
    code is not usable."""
    await configure(gateway, providers=[{"provider": "aliyun-sms"}])
    await fault(gateway, "aliyun-sms", {"next_call": "http_429", "count": 10})
    phone = "13800138017"
    r = await send_code(gateway, phone)
    assert r.status_code == 503, r.text
    error = r.json()["error"]
    assert error["code"] == "sms_delivery_failed" and error["type"] == "api_error"
    assert error["message"].startswith("the code could not be sent")
    sent = await message(gateway, error["sms_message"])
    assert sent["status"] == "failed" and [a["outcome"] for a in sent["attempts"]] == ["failed"]
    assert await phone_messages(gateway, phone) == []


async def test_unreachable_provider_is_failed_over_at_once(gateway: Gateway) -> None:
    """Connection refused: the request never left, so the next provider sends without waiting."""
    import httpx

    from minigate.providers import registry

    await configure(gateway, providers=[{"provider": "aliyun-sms"}, {"provider": "yunpian", "weight": 0}])
    config = registry.sms_spec("aliyun-sms").sandbox(gateway.rt.sandbox_context())  # type: ignore[union-attr]
    broken = registry.sms_spec("aliyun-sms").build(  # type: ignore[union-attr]
        config | {"base_url": "http://127.0.0.1:9/aliyun-sms"}, httpx.AsyncClient(timeout=2))
    version = "sandbox"
    gateway.rt._providers[(gateway.app_id, "test", "aliyun-sms")] = (version, broken, 1e18)
    phone = "13800138015"
    r = await gateway.http.post("/v1/sms/messages", headers=gateway.auth, json={
        "phone": phone, "template": "order_paid", "params": {"order": "A1003", "amount": "1.00"}})
    assert r.status_code == 200, r.text
    assert r.json()["provider"] == "yunpian" and r.json()["attempts"][0]["code"] == "unreachable"
    assert [m["provider"] for m in await phone_messages(gateway, phone)] == ["yunpian"]
    await broken.client.aclose()


async def test_a_500_is_an_unknown_outcome_settled_later_and_sent_once(gateway: Gateway,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """HTTP 500: the provider may have acted. Nothing else sends; once its lookup can prove absence, the
    worker sends the message again — exactly once in all."""
    await configure(gateway, providers=[{"provider": "aliyun-sms"}, {"provider": "tencentcloud", "weight": 0}])
    await fault(gateway, "aliyun-sms", {"next_call": "http_500", "count": 2})      # the send and the lookup
    phone = "13800138016"
    r = await gateway.http.post("/v1/sms/messages", headers=gateway.auth, json={
        "phone": phone, "template": "order_paid", "params": {"order": "A1004", "amount": "1.00"}})
    assert r.status_code == 200 and r.json()["status"] == "unknown", r.text
    assert await phone_messages(gateway, phone) == []
    real_now = gateway.rt.now
    monkeypatch.setattr(gateway.rt, "now", lambda: real_now() + timedelta(seconds=300))
    await gateway.run_worker()        # lookup: not there after the settle time -> queued again
    await gateway.run_worker()        # sent
    assert (await message(gateway, r.json()["id"]))["status"] in ("sent", "delivered")
    assert [m["provider"] for m in await phone_messages(gateway, phone)] == ["aliyun-sms"]


async def test_an_open_circuit_skips_the_broken_provider(gateway: Gateway) -> None:
    await configure(gateway, providers=[{"provider": "aliyun-sms"}, {"provider": "tencentcloud", "weight": 0}],
                    breaker_failures=2, limits={"phone_per_minute": 10, "phone_per_hour": 10})
    await fault(gateway, "aliyun-sms", {"next_call": "http_429", "count": 2})
    for i in range(3):
        assert (await send_code(gateway, f"1360013{i:04d}")).status_code == 200
    r = await gateway.http.get("/v1/sms/messages", headers=gateway.auth)
    newest = r.json()["data"][0]
    assert newest["attempts"][0] == {**newest["attempts"][0], "provider": "aliyun-sms", "outcome": "skipped",
                                     "code": "circuit_open"}


async def test_a_lost_answer_that_was_sent_is_found_and_not_sent_again(gateway: Gateway) -> None:
    """aliyun-sms takes the message, then the answer is lost: QuerySendDetails finds it; no failover."""
    await configure(gateway, providers=[{"provider": "aliyun-sms"}, {"provider": "tencentcloud", "weight": 0}])
    await fault(gateway, "aliyun-sms", {"next_call": "charged_then_timeout", "path": "", "seconds": 0})
    phone = "13800138008"
    r = await send_code(gateway, phone)
    assert r.status_code == 200, r.text
    sent = await message(gateway, r.json()["message"]["id"])
    assert sent["status"] in ("sent", "delivered") and sent["provider"] == "aliyun-sms"
    assert sent["provider_message_id"] and sent["attempts"][-1]["code"] == "found_after_timeout"
    assert [m["provider"] for m in await phone_messages(gateway, phone)] == ["aliyun-sms"]


async def test_an_unknown_outcome_is_never_failed_over(gateway: Gateway) -> None:
    """tencentcloud's lookup cannot prove a message was *not* taken: after a timeout the message stays
    unknown and no other provider sends it."""
    await configure(gateway, providers=[{"provider": "tencentcloud"}, {"provider": "aliyun-sms", "weight": 0}])
    await fault(gateway, "tencentcloud", {"next_call": "timeout", "seconds": 0})
    phone = "13800138009"
    r = await gateway.http.post("/v1/sms/messages", headers=gateway.auth, json={
        "phone": phone, "template": "order_shipped",
        "params": {"order": "A1001", "carrier": "顺丰", "tracking": "SF123"}})
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "unknown" and r.json()["provider"] == "tencentcloud"
    assert await phone_messages(gateway, phone) == []
    # taken, then the answer lost: its receipt shows up in the lookup, so it is sent -- once
    await fault(gateway, "tencentcloud", {"next_call": "charged_then_timeout", "seconds": 0})
    r = await gateway.http.post("/v1/sms/messages", headers=gateway.auth, json={
        "phone": "13800138017", "template": "order_shipped",
        "params": {"order": "A1001", "carrier": "顺丰", "tracking": "SF123"}})
    assert r.json()["status"] in ("sent", "delivered") and r.json()["provider"] == "tencentcloud"
    assert [m["provider"] for m in await phone_messages(gateway, "13800138017")] == ["tencentcloud"]


# --------------------------------------------------------------------------- receipts

async def test_an_undelivered_message_is_failed_by_its_receipt(gateway: Gateway) -> None:
    await gateway.add_webhook(["sms.failed", "sms.delivered"])
    phone = "13800138010"
    r = await gateway.http.post("/sandbox/aliyun-sms/_sandbox/phones", json={"phone": phone, "state": "unreachable"})
    assert r.status_code == 200
    r = await gateway.http.post("/v1/sms/messages", headers=gateway.auth, json={
        "phone": phone, "template": "order_paid", "params": {"order": "A1002", "amount": "9.90"}})
    assert r.status_code == 200 and r.json()["status"] == "sent"
    await gateway.settle()
    failed = await message(gateway, r.json()["id"])
    assert failed["status"] == "failed" and failed["error"]["code"] == "undelivered" and failed["carrier_code"]
    await gateway.run_worker()
    assert [e["type"] for e in gateway.merchant.events] == ["sms.failed"]


async def test_forged_receipts_change_nothing(gateway: Gateway) -> None:
    r = await gateway.http.post("/notify/sms/aliyun-sms/test/not-the-token/receipts", content=b"[]")
    assert r.status_code == 404
    token = gateway.rt.sms_callback_token("aliyun-sms", "test")
    forged = (b'[{"phone_number":"13800138011","send_time":"2026-01-01 00:00:00","report_time":"2026-01-01 00:00:01",'
              b'"success":true,"err_code":"DELIVERED","err_msg":"ok","sms_size":"1","biz_id":"999^0","out_id":"msg_x"}]')
    r = await gateway.http.post(f"/notify/sms/aliyun-sms/test/{token}/receipts", content=forged,
                                headers={"content-type": "application/json"})
    assert r.status_code == 200          # acknowledged (or the provider would push forever) ...
    assert await gateway.count(SmsMessage) == 0   # ... and applied to nothing
    r = await gateway.http.post(f"/notify/sms/aliyun-sms/test/{token}/receipts", content=b"{not json",
                                headers={"content-type": "application/json"})
    assert r.status_code == 400 and r.json()["error"]["code"]


# --------------------------------------------------------------------------- marketing and consent

async def test_marketing_needs_consent_and_a_td_reply_withdraws_it_at_once(gateway: Gateway) -> None:
    phone = "13800138012"
    promo = {"phone": phone, "template": "marketing_promo", "params": {"promo": "双十一全场八折"}}
    r = await gateway.http.post("/v1/sms/messages", headers=gateway.auth, json=promo)
    assert r.status_code == 403 and r.json()["error"]["code"] == "consent_required"
    r = await gateway.http.post("/v1/consents", headers=gateway.auth,
                                json={"phone": phone, "action": "grant", "text_version": "2026-11"})
    assert r.status_code == 200 and r.json()["granted"] is True
    r = await gateway.http.post("/v1/sms/messages", headers=gateway.auth, json=promo)
    assert r.status_code == 200, r.text
    text = (await phone_messages(gateway, phone))[0]["text"]
    assert text.endswith("回TD退订") and "双十一全场八折" in text
    # the recipient answers "TD": the provider pushes the reply, consent is withdrawn
    r = await gateway.http.post(f"/sandbox/{r.json()['provider']}/_sandbox/reply", json={"phone": phone, "text": "TD"})
    assert r.status_code == 200, r.text
    await gateway.settle()
    r = await gateway.http.get("/v1/consents", headers=gateway.auth, params={"phone": phone})
    assert r.json()["granted"] is False
    assert [h["action"] for h in r.json()["history"]] == ["withdraw", "grant"]
    assert r.json()["history"][0]["source"] == "sms_reply"
    r = await gateway.http.post("/v1/sms/messages", headers=gateway.auth, json=promo)
    assert r.status_code == 403
    async with gateway.rt.db.read() as session:
        assert phone not in repr([vars(c) for c in (await session.execute(select(ConsentRecord))).scalars()])


async def test_verification_templates_cannot_be_sent_as_messages(gateway: Gateway) -> None:
    r = await gateway.http.post("/v1/sms/messages", headers=gateway.auth, json={
        "phone": "13800138013", "template": "verification_code", "params": {"code": "123456", "minutes": "5"}})
    assert r.status_code == 400 and r.json()["error"]["code"] == "template_kind_not_allowed"
    r = await gateway.http.post("/v1/sms/messages", headers=gateway.auth, json={
        "phone": "13800138013", "template": "order_paid", "params": {"order": "A1"}})
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_template_params"
    assert await gateway.count(SmsMessage) == 0


# --------------------------------------------------------------------------- order notifications

async def test_order_paid_sms_goes_out_exactly_once(gateway: Gateway) -> None:
    await configure(gateway, order_notifications={"order.paid": "order_paid"})
    order = await gateway.create_order(amount=1234, contact_phone="+86 138-0013-8014")
    assert order["contact_phone"] == "+86138****8014"
    await gateway.pay(order)
    # the same payment notified again changes nothing
    body, headers = gateway.sim.build_notification(order["out_trade_no"])
    r = await gateway.http.post(f"/notify/wechatpay/test/{gateway.app_id}", content=body, headers=headers)
    assert r.status_code in (200, 204)
    for _ in range(3):
        await gateway.run_worker()
    await gateway.settle()
    inbox = await phone_messages(gateway, "13800138014")
    assert len(inbox) == 1 and order["merchant_order_no"] in inbox[0]["text"] and "12.34元" in inbox[0]["text"]
    r = await gateway.http.get("/v1/sms/messages", headers=gateway.auth, params={"template": "order_paid"})
    assert [m["source"] for m in r.json()["data"]] == ["order_event"]
    assert r.json()["data"][0]["metadata"] == {"order": order["id"]}


async def test_settings_are_validated(gateway: Gateway) -> None:
    for bad, where in [({"providers": [{"provider": "nope"}]}, "providers"),
                       ({"sign_name": "【太长了太长了太长了太长了】"}, "sign_name"),
                       ({"templates": {"x": {"kind": "notice", "text": "【签名】你好"}}}, "templates"),
                       ({"order_notifications": {"order.paid": "marketing_promo"}}, None),
                       ({"unknown": 1}, "unknown")]:
        r = await gateway.http.put("/v1/sms/settings", headers=gateway.auth, json=bad)
        assert r.status_code == 400, (bad, r.text)
        assert r.json()["error"]["code"] == "invalid_sms_settings"
        if where:
            assert r.json()["error"]["param"].startswith(where)
    r = await gateway.http.get("/v1/sms/settings", headers=gateway.auth)
    assert r.json()["available_providers"] == list(PROVIDERS) and r.json()["limits"]["phone_per_minute"] == 1

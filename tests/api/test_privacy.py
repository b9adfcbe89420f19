"""Per-person data keys, one subject request across capabilities, and one consent ledger (SQLite and PostgreSQL).

Erasure shreds the person's key: a copy of their sealed values taken before (a backup) no longer opens, while
other persons' values and values sealed before person keys existed still do. The export gathers what SMS,
identity, consents and analytics hold about the person and reports the payment records kept, masked. Consent
for every purpose is granted, withdrawn and read through one API, and analytics collection drops the events of
a user who withdrew when the app requires consent.
"""

from __future__ import annotations

import base64
import json
import re
from typing import Any

import pytest
from sqlalchemy import select

from minigate.services import analytics, person_keys
from minigate.services.apps import AppContext
from minigate.store.tables import AuditEntry, DeletionRecord, IdentityVerification, PersonKey, SmsMessage
from minigate.vault import VaultError
from tests.conftest import Gateway

PHONE, OTHER_PHONE = "13800138031", "13900139032"
E164 = "+86" + PHONE
NAME, ID_NUMBER = "张三", "11010519491231002X"
CONSENT = {"granted": True, "text_version": "2026-11-v1"}
PHOTO = base64.b64encode(b"\xff\xd8\xff face of zhang san " * 20).decode()


async def ok(r: Any) -> dict[str, Any]:
    assert r.status_code == 200, r.text
    return dict(r.json())


async def seed_sms(gw: Gateway, phone: str) -> None:
    """A verification code and a marketing message (with its consent) to ``phone``."""
    await ok(await gw.http.post("/v1/verification_codes", headers=gw.auth, json={"phone": phone, "purpose": "login"}))
    await ok(await gw.http.post("/v1/consents", headers=gw.auth,
                                json={"phone": phone, "action": "grant", "text_version": "2026-11"}))
    await ok(await gw.http.post("/v1/sms/messages", headers=gw.auth, json={
        "phone": phone, "template": "marketing_promo", "params": {"promo": "双十一全场八折"}}))


async def seed_identity(gw: Gateway) -> dict[str, Any]:
    await ok(await gw.http.post("/sandbox/tencentcloud/_sandbox/persons",
                                json={"name": NAME, "id_number": ID_NUMBER, "photo": PHOTO}))
    return await ok(await gw.http.post("/v1/identity/verifications", headers=gw.auth, json={
        "kind": "id_card", "name": NAME, "id_number": ID_NUMBER, "provider": "tencent-faceid", "consent": CONSENT}))


async def sealed_rows(gw: Gateway, phone_e164: str) -> list[tuple[str, str]]:
    """(sealed, context) of every SMS value of a number, straight from the database: the "backup"."""
    from minigate.services import sms

    async with gw.rt.db.read() as session:
        rows = (await session.execute(select(SmsMessage))).scalars().all()
    out = []
    for row in rows:
        if await person_keys.open_value(gw.rt, row.phone_sealed, context=sms.PHONE_CONTEXT) == phone_e164:
            out += [(row.phone_sealed, sms.PHONE_CONTEXT), (row.params_sealed, sms.PARAMS_CONTEXT)]
    return out


async def test_erasure_shreds_the_person_key_so_a_backup_copy_no_longer_opens(gateway: Gateway) -> None:
    gw = gateway
    await seed_sms(gw, PHONE)
    await seed_sms(gw, OTHER_PHONE)
    await seed_identity(gw)
    await gw.settle()
    backup = await sealed_rows(gw, E164)
    other = await sealed_rows(gw, "+86" + OTHER_PHONE)
    async with gw.rt.db.read() as session:
        idv = (await session.execute(select(IdentityVerification))).scalars().one()
    assert idv.name_sealed and idv.id_number_sealed
    backup_identity = [(idv.name_sealed, "identity:name"), (idv.id_number_sealed, "identity:id_number")]
    # two messages per number (the code and the promotion), each sealed under that number's own person key
    assert len(backup) == 4 and len(other) == 4
    for sealed, _ in backup + other + backup_identity:
        assert person_keys.is_person_sealed(sealed), sealed
    assert {sealed.split(".")[1] for sealed, _ in backup}.isdisjoint({sealed.split(".")[1] for sealed, _ in other})
    opened = await person_keys.open_many(gw.rt, backup + backup_identity)
    assert E164 in opened and NAME in opened and ID_NUMBER in opened
    # a value sealed with the shared data key before person keys existed keeps opening
    legacy = gw.rt.vault.seal(E164, context="phone")
    assert await person_keys.open_value(gw.rt, legacy, context="phone") == E164

    report = await ok(await gw.http.post("/v1/privacy/subjects/erase", headers=gw.auth,
                                         json={"phone": PHONE, "id_number": ID_NUMBER}))
    assert report["erased"] == {"analytics_events": 0, "sms_messages": 2, "verification_codes": 1,
                                "order_contact_phones": 0, "identity_verifications": 1, "person_keys": 2}, report
    # the copies taken before the erasure no longer open: not with the shared keys, not at all
    assert await person_keys.open_many(gw.rt, backup + backup_identity) == [person_keys.ERASED] * 6
    for sealed, context in backup + backup_identity:
        with pytest.raises(VaultError):
            gw.rt.vault.open(sealed, context=context)
    # the other person and the legacy value are untouched
    assert (await person_keys.open_many(gw.rt, other))[0::2] == ["+86" + OTHER_PHONE] * 2
    assert await person_keys.open_value(gw.rt, legacy, context="phone") == E164
    async with gw.rt.db.read() as session:
        keys = (await session.execute(select(PersonKey))).scalars().all()
        records = (await session.execute(select(DeletionRecord).where(
            DeletionRecord.reason == "subject_erasure"))).scalars().all()
        entries = (await session.execute(select(AuditEntry).where(AuditEntry.action == "subject.erased"))
                   ).scalars().all()
    assert len(keys) == 1 and keys[0].id == other[0][0].split(".")[1]
    assert {(r.data_class, r.count) for r in records} == {
        ("sms.messages", 2), ("sms.verification_codes", 1), ("orders.contact_phone", 0),
        ("identity.verifications", 1), ("person_keys", 2)}
    assert len(entries) == 1
    # the other person's messages still list and still carry their masked number
    listed = await ok(await gw.http.get("/v1/sms/messages", headers=gw.auth, params={"phone": OTHER_PHONE}))
    assert len(listed["data"]) == 2 and listed["data"][0]["phone"] == "+86139****9032"
    assert (await ok(await gw.http.get("/v1/sms/messages", headers=gw.auth, params={"phone": PHONE})))["data"] == []


async def test_a_message_whose_key_was_shredded_before_sending_fails_cleanly(gateway: Gateway) -> None:
    """A value whose person key is gone reads as erased; the queued message fails with a code, no exception."""
    from minigate.services import sms
    from minigate.services.apps import AppContext

    gw = gateway
    ctx = AppContext(gw.app_id, "test")
    settings = await sms.sms_settings.load(gw.rt, ctx)
    phone = sms.parse_app_phone(PHONE, settings)
    async with gw.rt.db.transaction() as session:
        keys = await person_keys.sealer(gw.rt, ctx, sms.phone_hash(gw.rt, phone), session=session)
        message = sms.new_message(gw.rt, ctx, phone=phone, template=settings.template("order_paid"),
                                  params={"order": "A1", "amount": "8.00"}, source="api", sealer=keys,
                                  send_now=False)
        session.add(message)
    async with gw.rt.db.transaction() as session:
        assert await person_keys.shred(session, ctx, [sms.phone_hash(gw.rt, phone)]) == 1
    sent = await sms.deliver(gw.rt, message.id)
    assert sent.status == "failed" and sent.error_code == "subject_erased"
    listed = await ok(await gw.http.get("/v1/sms/messages", headers=gw.auth))
    assert [m["id"] for m in listed["data"]] == [message.id]


async def test_the_export_gathers_every_capability_and_the_erasure_keeps_the_payments(gateway: Gateway) -> None:
    gw = gateway
    openid = await gw.login("zhangsan")
    order = await gw.create_order(amount=880, payer={"openid": openid}, contact_phone=PHONE)
    await gw.pay(order)
    await seed_sms(gw, PHONE)
    verification = await seed_identity(gw)
    await ok(await gw.http.post("/v1/consents", headers=gw.auth, json={
        "purpose": "analytics", "user_id": "user-zs", "action": "grant", "text_version": "a-1"}))
    key = (await ok(await gw.http.post("/v1/analytics/publishable_keys", headers=gw.auth)))["key"]
    now_ms = int(gw.rt.now().timestamp() * 1000)
    batch = {"sent_at": now_ms, "events": [
        {"id": f"zs-event-{i}", "name": "view_product", "ts": now_ms, "distinct_id": "dev-zs", "user_id": "user-zs"}
        for i in range(3)]}
    collected = await ok(await gw.http.post("/v1/analytics/collect", json=batch,
                                            headers={"Authorization": f"Bearer {key}"}))
    assert collected["accepted"] == 3, collected
    await gw.settle()
    person = {"phone": PHONE, "id_number": ID_NUMBER, "user_id": "user-zs", "openid": openid}

    r = await gw.http.post("/v1/privacy/subjects/export", headers=gw.auth, json=person)
    assert r.status_code == 200 and r.headers["cache-control"] == "no-store"
    export = r.json()
    messages = export["sms"]["messages"]
    assert {m["phone"] for m in messages} == {E164}                          # the person's own copy, in clear
    assert {"promo": "双十一全场八折"} in [m["params"] for m in messages]
    assert [c["purpose"] for c in export["sms"]["verification_codes"]] == ["login"]
    assert [(v["id"], v["person"]) for v in export["identity"]["verifications"]] == [
        (verification["id"], {"name": NAME, "id_number": ID_NUMBER})]
    assert {c["purpose"] for c in export["consents"]} == {"marketing_sms", "identity_id", "analytics"}
    assert sorted(e["event_id"] for e in export["analytics"]["events"]) == ["zs-event-0", "zs-event-1", "zs-event-2"]
    kept = export["kept"]["orders"]
    assert [(o["id"], sorted(o["matched_by"])) for o in kept["data"]] == [(order["id"], ["openid", "phone"])]
    assert openid not in json.dumps(kept) and PHONE not in json.dumps(kept)   # masked in the kept section
    assert kept["data"][0]["payer"].startswith(openid[:3]) and "*" in kept["data"][0]["payer"]
    assert "30 years" in kept["reason"]

    report = await ok(await gw.http.post("/v1/privacy/subjects/erase", headers=gw.auth, json=person))
    assert report["erased"]["analytics_events"] == 3 and report["erased"]["sms_messages"] == 2
    assert report["erased"]["identity_verifications"] == 1 and report["erased"]["person_keys"] == 2
    assert report["erased"]["order_contact_phones"] == 1         # not an accounting record (C-9): erased
    assert [(o["id"], o["matched_by"]) for o in report["kept"]["orders"]["data"]] == [(order["id"], ["openid"])]
    assert report["kept"]["consents"]["count"] == 3
    text = json.dumps(report, ensure_ascii=False)
    for clear in (PHONE, ID_NUMBER, NAME, openid):
        assert clear not in text, clear
    after = await ok(await gw.http.post("/v1/privacy/subjects/export", headers=gw.auth, json=person))
    assert after["sms"]["messages"] == [] and after["identity"]["verifications"] == []
    assert after["analytics"]["events"] == [] and len(after["kept"]["orders"]["data"]) == 1
    kept_order = await gw.order(order["id"])                                # the payment record is kept
    assert kept_order["status"] == "paid" and kept_order["contact_phone"] is None


async def test_one_consent_ledger_for_every_purpose(gateway: Gateway) -> None:
    gw = gateway
    cases = [("marketing_sms", {"phone": PHONE}, {"phone": PHONE}),
             ("identity_id", {"subject": "member-42"}, {"subject": "member-42", "purpose": "identity_id"}),
             ("identity_biometric", {"subject": "member-42"},
              {"subject": "member-42", "purpose": "identity_biometric"}),
             ("analytics", {"user_id": "user-42"}, {"user_id": "user-42"})]
    for purpose, who, query in cases:
        r = await ok(await gw.http.post("/v1/consents", headers=gw.auth, json={
            "purpose": purpose, "action": "grant", "text_version": f"{purpose}-v1", **who}))
        assert r["granted"] is True and r["purpose"] == purpose and r["text_version"] == f"{purpose}-v1"
        assert (await ok(await gw.http.get("/v1/consents", headers=gw.auth, params=query)))["granted"] is True
        await ok(await gw.http.post("/v1/consents", headers=gw.auth, json={
            "purpose": purpose, "action": "withdraw", **who, "evidence": {"channel": "settings page"}}))
        state = await ok(await gw.http.get("/v1/consents", headers=gw.auth, params=query))
        assert state["granted"] is False, (purpose, state)
        assert [(h["action"], h["text_version"]) for h in state["history"]] == [
            ("withdraw", None), ("grant", f"{purpose}-v1")], (purpose, state)
        assert state["history"][0]["evidence"]["channel"] == "settings page"
    # a subject reference without a purpose: both identity purposes, each withdrawn
    both = await ok(await gw.http.get("/v1/consents", headers=gw.auth, params={"subject": "member-42"}))
    assert both["current"] == {"identity_id": False, "identity_biometric": False} and len(both["history"]) == 4
    # an ID number files identity consent under the same hash the verifications use
    await ok(await gw.http.post("/v1/consents", headers=gw.auth, json={
        "purpose": "identity_id", "id_number": ID_NUMBER, "action": "grant", "text_version": "id-v2"}))
    export = await ok(await gw.http.post("/v1/privacy/subjects/export", headers=gw.auth,
                                         json={"id_number": ID_NUMBER}))
    assert [(c["purpose"], c["text_version"]) for c in export["consents"]] == [("identity_id", "id-v2")]
    # the wrong identifier, a grant without its text version, and a key without the purpose's scope are refused
    for body, code in (({"purpose": "analytics", "phone": PHONE, "action": "grant", "text_version": "v"},
                        "subject_required"),
                       ({"purpose": "marketing_sms", "phone": PHONE, "action": "grant"}, "text_version_required")):
        r = await gw.http.post("/v1/consents", headers=gw.auth, json=body)
        assert r.status_code == 400 and r.json()["error"]["code"] == code, r.text
    sms_only = (await ok(await gw.http.post("/v1/api_keys", headers=gw.auth,
                                            json={"name": "sms", "scopes": ["sms:write"]})))["key"]
    r = await gw.http.post("/v1/consents", headers={"Authorization": f"Bearer {sms_only}"}, json={
        "purpose": "analytics", "user_id": "user-42", "action": "grant", "text_version": "v"})
    assert r.status_code == 403 and r.json()["error"]["code"] == "insufficient_scope", r.text
    r = await gw.http.post("/v1/consents", headers={"Authorization": f"Bearer {sms_only}"},
                           json={"phone": PHONE, "action": "grant", "text_version": "v"})
    assert r.status_code == 200, r.text


async def test_subject_requests_need_every_capability_scope(gateway: Gateway) -> None:
    gw = gateway
    narrow = (await ok(await gw.http.post("/v1/api_keys", headers=gw.auth,
                                          json={"name": "idv", "scopes": ["identity:write"]})))["key"]
    for path in ("/v1/privacy/subjects/export", "/v1/privacy/subjects/erase"):
        r = await gw.http.post(path, headers={"Authorization": f"Bearer {narrow}"}, json={"phone": PHONE})
        assert r.status_code == 403 and r.json()["error"]["code"] == "insufficient_scope", r.text
    wide = (await ok(await gw.http.post("/v1/api_keys", headers=gw.auth, json={
        "name": "dpo", "scopes": ["identity:write", "sms:write", "analytics:write", "orders:read"]})))["key"]
    r = await gw.http.post("/v1/privacy/subjects/export", headers={"Authorization": f"Bearer {wide}"},
                           json={"phone": PHONE})
    assert r.status_code == 200, r.text
    r = await gw.http.post("/v1/privacy/subjects/erase", headers=gw.auth, json={})
    assert r.status_code == 400 and r.json()["error"]["code"] == "subject_required", r.text
    r = await gw.http.post("/v1/privacy/subjects/erase", headers=gw.auth, json={"id_number": "110105194912310021"})
    assert r.status_code == 400, r.text


async def test_analytics_collection_drops_the_events_of_a_user_who_withdrew(gateway: Gateway) -> None:
    gw = gateway
    key = (await ok(await gw.http.post("/v1/analytics/publishable_keys", headers=gw.auth)))["key"]
    for user, actions in (("u-yes", ["grant"]), ("u-no", ["grant", "withdraw"])):
        for action in actions:
            await ok(await gw.http.post("/v1/consents", headers=gw.auth, json={
                "purpose": "analytics", "user_id": user, "action": action, "text_version": "a-1"}))

    async def collect(prefix: str) -> dict[str, Any]:
        now_ms = int(gw.rt.now().timestamp() * 1000)
        events = [{"id": f"{prefix}-event-{user or 'anon'}", "name": "view_product", "ts": now_ms, "distinct_id": "dev-1",
                   **({"user_id": user} if user else {})} for user in ("u-yes", "u-no", "u-none", None)]
        return await ok(await gw.http.post("/v1/analytics/collect", headers={"Authorization": f"Bearer {key}"},
                                           json={"sent_at": now_ms, "events": events}))

    # consent not required (the default): every event is taken
    assert (await collect("off"))["accepted"] == 4
    await ok(await gw.http.put("/v1/analytics/settings", headers=gw.auth, json={"consent_required": True}))
    analytics.settings_section._cache.clear()
    withdrawn = analytics.CONSENT_DROPS.labels("consent_withdrawn")._value.get()
    missing = analytics.CONSENT_DROPS.labels("consent_missing")._value.get()
    answer = await collect("on")
    assert answer["accepted"] == 2, answer
    assert sorted((r["index"], r["id"], r["code"]) for r in answer["rejected"]) == [
        (1, "on-event-u-no", "consent_withdrawn"), (2, "on-event-u-none", "consent_missing")]
    assert analytics.CONSENT_DROPS.labels("consent_withdrawn")._value.get() == withdrawn + 1
    assert analytics.CONSENT_DROPS.labels("consent_missing")._value.get() == missing + 1
    await gw.rt.analytics.flush()
    stored = await analytics.person_events(gw.rt, AppContext(gw.app_id, "test"), "dev-1")
    assert sorted(e["event_id"] for e in stored if e["event_id"].startswith("on-")) == ["on-event-anon", "on-event-u-yes"]
    assert not any(re.match(r"on-event-u-(no|none)$", e["event_id"]) for e in stored)

"""Identity verification end to end through the gateway and the sandbox (SQLite and PostgreSQL): every kind
through every provider that offers it, failures, expiry, missing consent, fallback, retention and the
subject's rights; and no name, ID number, image or audio in logs, API output or the database in clear."""

from __future__ import annotations

import base64
import io
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select, update

from minigate.logging import configure_logging
from minigate.store.tables import ConsentRecord, DeletionRecord, IdentityVerification
from tests.conftest import Gateway

NAME, ID = "张三", "11010519491231002X"
OTHER_ID = "440524188001010014"
CONSENT = {"granted": True, "text_version": "2026-11-v1"}
PHOTO = base64.b64encode(b"\xff\xd8\xff face of zhang san " * 20).decode()
OTHER_PHOTO = base64.b64encode(b"\xff\xd8\xff someone else entirely " * 20).decode()
VOICE = base64.b64encode(b"RIFF voice of zhang san saying the digits " * 40).decode()
OTHER_VOICE = base64.b64encode(b"RIFF a different speaker altogether here " * 40).decode()


async def register(gw: Gateway, simulator: str, name: str = NAME, id_number: str = ID,
                   photo: str | None = PHOTO) -> None:
    body: dict[str, Any] = {"name": name, "id_number": id_number}
    if photo:
        body["photo"] = photo
    r = await gw.http.post(f"/sandbox/{simulator}/_sandbox/persons", json=body)
    assert r.status_code == 200, r.text


async def verify(gw: Gateway, **body: Any) -> Any:
    return await gw.http.post("/v1/identity/verifications", headers=gw.auth, json={"consent": CONSENT, **body})


async def settle_face(gw: Gateway, verification: dict[str, Any], outcome: str = "pass") -> dict[str, Any]:
    token = verification["client_params"]["token"]
    r = await gw.http.post("/sandbox/tencentcloud/_sandbox/faceid/complete",
                           json={"biz_token": token, "outcome": outcome})
    assert r.status_code == 200, r.text
    r = await gw.http.post(f"/v1/identity/verifications/{verification['id']}/refresh", headers=gw.auth)
    assert r.status_code == 200, r.text
    return dict(r.json())


# --------------------------------------------------------------------------- name + ID

@pytest.mark.parametrize(("provider", "simulator"), [("tencent-faceid", "tencentcloud"), ("baidu", "baidu")])
async def test_id_card_checks_through_each_provider(gateway: Gateway, provider: str, simulator: str) -> None:
    await register(gateway, simulator)
    r = await verify(gateway, kind="id_card", name=NAME, id_number=ID, provider=provider)
    assert r.status_code == 200, r.text
    passed = r.json()
    assert passed["status"] == "passed" and passed["reason"] == "match" and passed["provider"] == provider
    assert passed["person"] == {"name": "张*", "id_number": "110***********002X"}
    assert passed["provider_reference"]
    mismatch = (await verify(gateway, kind="id_card", name="李四", id_number=ID, provider=provider)).json()
    assert mismatch["status"] == "failed" and mismatch["reason"] == "mismatch"
    unknown = (await verify(gateway, kind="id_card", name=NAME, id_number=OTHER_ID, provider=provider)).json()
    assert unknown["status"] == "failed" and unknown["reason"] == "no_record"


async def test_bad_input_and_missing_consent_are_refused_before_any_provider(gateway: Gateway) -> None:
    for body, code in [({"id_number": "110105194912310021"}, "invalid_id_number"),
                       ({"id_number": "99010519491231002X"}, "invalid_id_number"),
                       ({"name": "Z3!"}, "invalid_name")]:
        r = await verify(gateway, kind="id_card", **({"name": NAME, "id_number": ID} | body))
        assert r.status_code == 400 and r.json()["error"]["code"] == code, r.text
    r = await gateway.http.post("/v1/identity/verifications", headers=gateway.auth,
                                json={"kind": "id_card", "name": NAME, "id_number": ID,
                                      "consent": {"granted": False, "text_version": "v1"}})
    assert r.status_code == 403 and r.json()["error"]["code"] == "consent_required"
    r = await gateway.http.post("/v1/identity/verifications", headers=gateway.auth,
                                json={"kind": "id_card", "name": NAME, "id_number": ID})
    assert r.status_code == 400
    assert await gateway.count(IdentityVerification) == 0 and await gateway.count(ConsentRecord) == 0


async def test_a_provider_that_times_out_falls_back_to_the_next(gateway: Gateway) -> None:
    await register(gateway, "baidu")
    await gateway.http.post("/sandbox/tencentcloud/_sandbox/faults", json={"next_call": "http_500", "count": 3})
    r = await verify(gateway, kind="id_card", name=NAME, id_number=ID)
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "passed" and r.json()["provider"] == "baidu"


# --------------------------------------------------------------------------- face

async def test_face_session_through_tencent_passes_fails_and_expires(gateway: Gateway) -> None:
    await register(gateway, "tencentcloud")
    await gateway.add_webhook(["identity.verified", "identity.failed"])
    r = await verify(gateway, kind="face", name=NAME, id_number=ID, provider="tencent-faceid")
    assert r.status_code == 200, r.text
    started = r.json()
    assert started["status"] == "pending" and started["client_params"]["token"]
    assert (await gateway.http.post(f"/v1/identity/verifications/{started['id']}/refresh",
                                    headers=gateway.auth)).json()["status"] == "pending"   # not finished yet
    done = await settle_face(gateway, started, "pass")
    assert done["status"] == "passed" and done["liveness"] is True and done["score"] >= 70
    assert "client_params" not in done
    failed = await settle_face(gateway, (await verify(gateway, kind="face", name=NAME, id_number=ID,
                                                      provider="tencent-faceid")).json(), "liveness_failed")
    assert failed["status"] == "failed" and failed["reason"] == "liveness_failed"
    stale = (await verify(gateway, kind="face", name=NAME, id_number=ID, provider="tencent-faceid")).json()
    async with gateway.rt.db.transaction() as session:
        await session.execute(update(IdentityVerification).where(IdentityVerification.id == stale["id"]).values(
            expires_at=gateway.rt.now() - timedelta(seconds=1), next_check_at=gateway.rt.now()))
    await gateway.run_worker()
    r = await gateway.http.get(f"/v1/identity/verifications/{stale['id']}", headers=gateway.auth)
    assert r.json()["status"] == "expired"
    await gateway.run_worker()
    assert [e["type"] for e in gateway.merchant.events] == ["identity.verified", "identity.failed",
                                                             "identity.failed"]


async def test_uploaded_face_through_baidu(gateway: Gateway) -> None:
    await register(gateway, "baidu")
    same = (await verify(gateway, kind="face", name=NAME, id_number=ID, image=PHOTO, provider="baidu")).json()
    assert same["status"] == "passed" and same["score"] >= 80, same
    other = (await verify(gateway, kind="face", name=NAME, id_number=ID, image=OTHER_PHOTO, provider="baidu")).json()
    assert other["status"] == "failed" and other["reason"] in ("low_similarity", "mismatch")
    await gateway.http.post("/sandbox/baidu/_sandbox/next", json={"outcome": "liveness_failed"})
    spoof = (await verify(gateway, kind="face", name=NAME, id_number=ID, image=PHOTO, provider="baidu")).json()
    assert spoof["status"] == "failed" and spoof["reason"] == "liveness_failed"
    r = await verify(gateway, kind="face", name=NAME, id_number=ID, image="not base64!", provider="baidu")
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_media"


# --------------------------------------------------------------------------- voiceprint

async def test_voiceprint_enrol_and_verify_through_unisound(gateway: Gateway) -> None:
    enrol = (await verify(gateway, kind="voiceprint", subject="user-42", action="enrol", audio=VOICE)).json()
    assert enrol["status"] == "passed" and enrol["provider"] == "unisound", enrol
    same = (await verify(gateway, kind="voiceprint", subject="user-42", audio=VOICE)).json()
    assert same["status"] == "passed" and same["reason"] == "match"
    other = (await verify(gateway, kind="voiceprint", subject="user-42", audio=OTHER_VOICE)).json()
    assert other["status"] == "failed" and other["reason"] == "mismatch"
    nobody = (await verify(gateway, kind="voiceprint", subject="user-43", audio=VOICE)).json()
    assert nobody["status"] == "failed" and nobody["reason"] == "not_enrolled"
    assert same["person"] == {"subject": "us***"}


# --------------------------------------------------------------------------- data handling

async def test_no_personal_data_in_logs_output_or_database(gateway: Gateway) -> None:
    stream = io.StringIO()
    configure_logging("DEBUG", json=True, stream=stream)
    outputs: list[str] = []
    try:
        await register(gateway, "baidu")
        await register(gateway, "tencentcloud")
        for body in ({"kind": "id_card", "name": NAME, "id_number": ID},
                     {"kind": "id_card", "name": "李四", "id_number": ID, "provider": "baidu"},
                     {"kind": "face", "name": NAME, "id_number": ID, "image": PHOTO, "provider": "baidu"},
                     {"kind": "face", "name": NAME, "id_number": ID, "provider": "tencent-faceid"},
                     {"kind": "voiceprint", "subject": "user-7", "action": "enrol", "audio": VOICE}):
            r = await verify(gateway, **body)
            outputs.append(r.text)
        outputs.append((await gateway.http.get("/v1/identity/verifications", headers=gateway.auth)).text)
        outputs.append((await gateway.http.get("/v1/events", headers=gateway.auth)).text)
    finally:
        configure_logging("INFO")
    logs = stream.getvalue()
    assert logs.strip(), "the scan needs log lines to scan"
    async with gateway.rt.db.read() as session:
        rows = [vars(r) for r in (await session.execute(select(IdentityVerification))).scalars()]
        consents = [vars(r) for r in (await session.execute(select(ConsentRecord))).scalars()]
    dump = repr(rows) + repr(consents)
    for secret in (NAME, "李四", ID, "19491231002", PHOTO[:40], VOICE[:40], "user-7"):
        assert secret not in logs, f"{secret!r} in the logs"
        assert secret not in dump, f"{secret!r} in the database in clear"
        for text in outputs:
            assert secret not in text, f"{secret!r} in an API answer"


async def test_retention_purge_and_the_subjects_rights(gateway: Gateway) -> None:
    await register(gateway, "tencentcloud")
    first = (await verify(gateway, kind="id_card", name=NAME, id_number=ID)).json()
    r = await gateway.http.post("/v1/identity/subjects/export", headers=gateway.auth, json={"id_number": ID})
    exported = r.json()
    assert r.headers["cache-control"] == "no-store"
    assert exported["verifications"][0]["person"] == {"name": NAME, "id_number": ID}   # the person's own copy
    assert [c["purpose"] for c in exported["consents"]] == ["identity_id"]
    async with gateway.rt.db.transaction() as session:     # 31 days pass
        await session.execute(update(IdentityVerification).values(
            created_at=gateway.rt.now() - timedelta(days=31)))
    from minigate.services.identity import purge_expired

    assert (await purge_expired(gateway.rt))["personal_data"] == 1
    r = await gateway.http.get(f"/v1/identity/verifications/{first['id']}", headers=gateway.auth)
    assert r.json()["personal_data_purged"] is True and r.json()["status"] == "passed"
    exported = (await gateway.http.post("/v1/identity/subjects/export", headers=gateway.auth,
                                        json={"id_number": ID})).json()
    assert exported["verifications"][0]["person"] == {"name": "张*", "id_number": "110***********002X"}
    r = await gateway.http.post("/v1/identity/subjects/erase", headers=gateway.auth, json={"id_number": ID})
    assert r.json()["deleted_verifications"] == 1
    assert await gateway.count(IdentityVerification) == 0
    async with gateway.rt.db.read() as session:
        records = [(d.reason, d.data_class, d.count) for d in (await session.execute(
            select(DeletionRecord).order_by(DeletionRecord.id))).scalars()]
    assert records == [("retention_purge", "identity.personal_data", 1),
                       ("subject_erasure", "identity.verifications", 1)]

"""The audit trail (B-15, C-11, C-14) on SQLite and PostgreSQL: every security-relevant action leaves exactly one
entry with no secret or clear personal data; the HMAC chain detects an edited, removed, swapped or inserted
entry and a chain recomputed without the key; concurrent appends never fork it; purges keep six months and a
verifiable chain; the CLI verifies and exports; the API lists the calling app's entries."""

from __future__ import annotations

import asyncio
import hashlib
import json
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import delete, select, update
from typer.testing import CliRunner

from minigate.errors import InvalidRequest
from minigate.logging import configure_logging
from minigate.services import audit, sms
from minigate.services.apps import AppContext, set_credentials
from minigate.store.tables import ApiKey, AuditEntry, AuditHead, DeletionRecord
from tests.api.test_identity import ID, NAME, register
from tests.api.test_identity import verify as identity_verify
from tests.conftest import Gateway


async def entries(gw: Gateway, action: str | None = None) -> list[AuditEntry]:
    query = select(AuditEntry).order_by(AuditEntry.seq)
    if action:
        query = query.where(AuditEntry.action == action)
    async with gw.rt.db.read() as session:
        return list((await session.execute(query)).scalars())


async def only(gw: Gateway, action: str) -> AuditEntry:
    found = await entries(gw, action)
    assert len(found) == 1, [(e.seq, e.action) for e in await entries(gw)]
    return found[0]


async def dump(gw: Gateway) -> str:
    """Everything the trail holds, as text."""
    return json.dumps([audit.entry_view(e) for e in await entries(gw)], ensure_ascii=False)


async def key_id(gw: Gateway) -> str:
    async with gw.rt.db.read() as session:
        return str((await session.execute(select(ApiKey.id).where(ApiKey.app_id == gw.app_id,
                                                                  ApiKey.mode == "test"))).scalar_one())


async def assert_intact(gw: Gateway) -> audit.VerifyReport:
    report = await audit.verify(gw.rt)
    assert report.ok, report.messages
    return report


async def add(gw: Gateway, n: int) -> None:
    for i in range(n):
        await audit.record_now(gw.rt, action="test.action", app_id=gw.app_id, mode="test", target=f"t{i}",
                               details={"i": i, "note": "plain"})


# --------------------------------------------------------------------------- each wired action, once

async def test_app_creation_and_credential_changes_are_recorded_without_secrets(gateway: Gateway) -> None:
    created = await only(gateway, "app.created")
    assert (created.seq, created.target, created.actor) == (1, gateway.app_id, "cli")
    assert created.details == {"app_name": "Test shop"}
    creds = gateway.rt.sandbox.credentials("wechatpay") | {"base_url": "http://sandbox/wechatpay"}
    await set_credentials(gateway.rt, app_id=gateway.app_id, mode="test", provider="wechatpay", config=creds)
    changed = await only(gateway, "credentials.set")
    assert (changed.app_id, changed.mode, changed.target) == (gateway.app_id, "test", "wechatpay")
    assert changed.details == {"providers": ["wechat", "wechatpay"]}
    text = await dump(gateway)
    for value in creds.values():
        if isinstance(value, str) and len(value) >= 8 and not value.startswith("http"):
            assert value not in text
    assert "PRIVATE KEY" not in text and gateway.key not in text
    await assert_intact(gateway)


async def test_api_key_failures_are_counted_without_the_key(gateway: Gateway) -> None:
    wrong = "mg_test_" + "x" * 43
    assert (await gateway.http.get("/v1/orders", headers={"Authorization": f"Bearer {wrong}"})).status_code == 401
    failed = await only(gateway, "api_key.auth_failed")
    assert failed.details == {"reason": "unknown_api_key"} and failed.app_id is None and failed.target is None
    assert (await gateway.http.get("/v1/orders", headers={"Authorization": "Bearer nonsense"})).status_code == 401
    assert (await gateway.http.get("/v1/orders")).status_code == 401           # no key at all: not an attempt
    reasons = [e.details["reason"] for e in await entries(gateway, "api_key.auth_failed")]
    assert reasons == ["unknown_api_key", "malformed_api_key"]
    # a revoked key: its id and app are known, the key itself is not written
    async with gateway.rt.db.transaction() as session:
        await session.execute(update(ApiKey).where(ApiKey.app_id == gateway.app_id, ApiKey.mode == "test")
                              .values(revoked_at=gateway.rt.now()))
    assert (await gateway.http.get("/v1/orders", headers=gateway.auth)).status_code == 401
    revoked = (await entries(gateway, "api_key.auth_failed"))[-1]
    assert (revoked.details, revoked.app_id, revoked.target) == (
        {"reason": "revoked_api_key"}, gateway.app_id, await key_id(gateway))
    text = await dump(gateway)
    assert wrong not in text and gateway.key not in text and "nonsense" not in text
    await assert_intact(gateway)


async def test_a_refund_is_recorded_with_the_api_key_as_actor(gateway: Gateway) -> None:
    order = await gateway.create_order(amount=500)
    await gateway.pay(order)
    r = await gateway.http.post("/v1/refunds", headers=gateway.auth, json={"order": order["id"], "amount": 200,
                                                                           "reason": "broken"})
    assert r.status_code == 200, r.text
    entry = await only(gateway, "refund.created")
    assert (entry.target, entry.app_id, entry.mode, entry.actor) == (r.json()["id"], gateway.app_id, "test",
                                                                     await key_id(gateway))
    assert entry.details == {"order": order["id"], "amount": 200, "source": "api"}
    await gateway.settle()
    assert len(await entries(gateway, "refund.created")) == 1
    await assert_intact(gateway)


async def test_a_manual_redelivery_is_recorded(gateway: Gateway) -> None:
    endpoint = await gateway.add_webhook()
    order = await gateway.create_order()
    await gateway.pay(order)
    await gateway.run_worker()
    event_id = (await gateway.http.get("/v1/webhook_deliveries", headers=gateway.auth)).json()["data"][0]["event"]
    r = await gateway.http.post(f"/v1/events/{event_id}/redeliver", headers=gateway.auth)
    assert r.status_code == 200 and r.json()["queued"] == 1
    entry = await only(gateway, "webhook.redelivered")
    assert (entry.target, entry.actor, entry.details) == (event_id, await key_id(gateway),
                                                          {"endpoints": [endpoint["id"]]})
    assert endpoint["secret"] not in await dump(gateway)
    await assert_intact(gateway)


async def test_identity_export_and_erasure_are_recorded_without_personal_data(gateway: Gateway) -> None:
    await register(gateway, "tencentcloud")
    assert (await identity_verify(gateway, kind="id_card", name=NAME, id_number=ID)).status_code == 200
    r = await gateway.http.post("/v1/identity/subjects/export", headers=gateway.auth, json={"id_number": ID})
    assert r.status_code == 200, r.text
    exported = await only(gateway, "identity.exported")
    assert exported.details == {"verifications": 1, "consents": 1} and exported.actor == await key_id(gateway)
    r = await gateway.http.post("/v1/identity/subjects/erase", headers=gateway.auth, json={"id_number": ID})
    assert r.status_code == 200, r.text
    erased = await only(gateway, "identity.erased")
    assert erased.details == {"verifications": 1, "person_keys_shredded": 1}   # the crypto-shredding too
    assert erased.target == exported.target and len(erased.target or "") == 64      # the keyed subject hash
    text = await dump(gateway)
    assert ID not in text and NAME not in text and ID[-4:] + '"' not in text
    await assert_intact(gateway)


async def test_consent_changes_are_recorded_without_the_number(gateway: Gateway) -> None:
    phone = "13800138012"
    r = await gateway.http.post("/v1/consents", headers=gateway.auth,
                                json={"phone": phone, "action": "grant", "text_version": "2026-11"})
    assert r.status_code == 200, r.text
    granted = await only(gateway, "consent.changed")
    assert granted.details == {"purpose": "marketing_sms", "change": "grant", "source": "api",
                               "text_version": "2026-11"}
    assert granted.actor == await key_id(gateway)
    r = await gateway.http.post("/v1/consents", headers=gateway.auth, json={"phone": phone, "action": "withdraw"})
    assert r.status_code == 200, r.text
    changes = await entries(gateway, "consent.changed")
    assert [c.details["change"] for c in changes] == ["grant", "withdraw"]
    assert phone not in await dump(gateway) and phone[-8:] not in await dump(gateway)
    await assert_intact(gateway)


async def test_operator_sms_is_recorded_and_api_sms_is_not(gateway: Gateway) -> None:
    phone = "13800138013"
    params = {"order": "A1", "carrier": "SF", "tracking": "SF123"}
    r = await gateway.http.post("/v1/sms/messages", headers=gateway.auth,
                                json={"phone": phone, "template": "order_shipped", "params": params})
    assert r.status_code == 200, r.text
    assert await entries(gateway, "sms.sent_by_operator") == []
    message = await sms.send_message(gateway.rt, AppContext(gateway.app_id, "test"), phone_raw=phone,
                                     template_name="order_shipped", params=params, source="cli")
    entry = await only(gateway, "sms.sent_by_operator")
    assert (entry.actor, entry.target, entry.details) == ("cli", message.id,
                                                          {"template": "order_shipped", "kind": "notice"})
    assert phone not in await dump(gateway)
    await assert_intact(gateway)


async def test_an_entry_rolls_back_with_its_action_and_leaves_no_gap(gateway: Gateway) -> None:
    with pytest.raises(RuntimeError):
        async with gateway.rt.db.transaction() as session:
            await audit.record(session, gateway.rt, action="test.rolled_back")
            raise RuntimeError("the action failed")
    await add(gateway, 1)
    assert [e.seq for e in await entries(gateway)] == [1, 2]
    assert await entries(gateway, "test.rolled_back") == []
    await assert_intact(gateway)


def test_details_never_keep_sensitive_keys_or_clear_numbers() -> None:
    cleaned = audit._clean({"secret": "s3cr3t", "api_key": "mg_test_abc", "note": "call 13800138000",
                            "id_number": ID, "count": 2})
    assert cleaned["secret"] == cleaned["api_key"] == cleaned["id_number"] == "[redacted]"
    assert "13800138000" not in cleaned["note"] and cleaned["count"] == 2


# --------------------------------------------------------------------------- tamper evidence

EDITS: dict[str, Any] = {
    "at": lambda e: {"at": e.at + timedelta(microseconds=1)},
    "app_id": lambda e: {"app_id": "app_someone_else"},
    "mode": lambda e: {"mode": "live"},
    "actor": lambda e: {"actor": "cli"},
    "action": lambda e: {"action": "test.harmless"},
    "target": lambda e: {"target": "t-other"},
    "details": lambda e: {"details": {"i": 99, "note": "plain"}},
    "prev_mac": lambda e: {"prev_mac": "f" * 64},
    "mac": lambda e: {"mac": "e" * 64},
}


@pytest.mark.parametrize("field", list(EDITS))
async def test_editing_any_field_of_an_entry_is_detected_at_that_entry(gateway: Gateway, field: str) -> None:
    await add(gateway, 5)
    assert (await assert_intact(gateway)).checked == 6
    victim = (await entries(gateway))[3]                      # seq 4
    async with gateway.rt.db.transaction() as session:
        await session.execute(update(AuditEntry).where(AuditEntry.seq == 4).values(**EDITS[field](victim)))
    report = await audit.verify(gateway.rt)
    assert not report.ok and report.first_bad_seq == 4, report.messages


async def test_a_removed_entry_is_detected(gateway: Gateway) -> None:
    await add(gateway, 5)
    async with gateway.rt.db.transaction() as session:
        await session.execute(delete(AuditEntry).where(AuditEntry.seq == 3))
    report = await audit.verify(gateway.rt)
    assert not report.ok and report.first_bad_seq == 3 and "missing" in (report.first_problem or "")


async def test_a_removed_tail_is_detected(gateway: Gateway) -> None:
    await add(gateway, 5)
    async with gateway.rt.db.transaction() as session:
        await session.execute(delete(AuditEntry).where(AuditEntry.seq >= 5))
    report = await audit.verify(gateway.rt)
    assert not report.ok and report.first_bad_seq == 5


async def test_two_swapped_entries_are_detected(gateway: Gateway) -> None:
    await add(gateway, 5)
    rows = {e.seq: audit.entry_view(e) for e in await entries(gateway)}
    fields = ("app_id", "mode", "actor", "action", "target", "details", "prev_mac", "mac")
    async with gateway.rt.db.transaction() as session:
        for seq in (3, 5):                  # first park the macs elsewhere (they are unique)
            await session.execute(update(AuditEntry).where(AuditEntry.seq == seq).values(mac=f"{seq}" * 64))
        for seq, other in ((3, 5), (5, 3)):
            values = {f: rows[other][f] for f in fields}
            values["at"] = datetime.fromisoformat(rows[other]["at"])
            await session.execute(update(AuditEntry).where(AuditEntry.seq == seq).values(**values))
    report = await audit.verify(gateway.rt)
    assert not report.ok and report.first_bad_seq == 3, report.messages


async def test_an_inserted_entry_is_detected(gateway: Gateway) -> None:
    await add(gateway, 3)
    last = (await entries(gateway))[-1]
    async with gateway.rt.db.transaction() as session:
        session.add(AuditEntry(seq=last.seq + 1, at=gateway.rt.now(), app_id=None, mode=None, actor="system",
                               action="test.inserted", target=None, details={}, prev_mac=last.mac, mac="a" * 64))
    report = await audit.verify(gateway.rt)
    assert not report.ok and report.first_bad_seq == last.seq + 1


async def test_a_chain_recomputed_with_plain_sha256_is_detected(gateway: Gateway) -> None:
    """Someone with the database but not the master key edits entry 3 and rebuilds every later mac (and the
    head) with SHA-256: the chain links, but no mac is an HMAC under the chain key."""
    await add(gateway, 5)
    rows = await entries(gateway)
    async with gateway.rt.db.transaction() as session:
        prev = rows[1].mac
        for row in rows[2:]:
            details = {"i": 0, "note": "forged"} if row.seq == 3 else row.details
            body = audit.canonical(seq=row.seq, at=row.at, app_id=row.app_id, mode=row.mode, actor=row.actor,
                                   action=row.action, target=row.target, details=details)
            mac = hashlib.sha256(prev.encode() + body).hexdigest()
            await session.execute(update(AuditEntry).where(AuditEntry.seq == row.seq).values(
                details=details, prev_mac=prev, mac=mac))
            prev = mac
        await session.execute(update(AuditHead).values(mac=prev))
    report = await audit.verify(gateway.rt)
    assert not report.ok and report.first_bad_seq == 3
    assert report.problems == 4                               # entries 3, 4, 5, 6: every recomputed mac


# --------------------------------------------------------------------------- concurrency

async def test_fifty_concurrent_appends_keep_one_gap_free_chain(gateway: Gateway) -> None:
    async def one(i: int) -> None:
        await audit.record_now(gateway.rt, action="test.concurrent", target=f"c{i}", details={"i": i})

    await asyncio.gather(*(one(i) for i in range(50)))
    rows = await entries(gateway)
    assert [e.seq for e in rows] == list(range(1, 52))
    assert sorted(e.details["i"] for e in rows if e.action == "test.concurrent") == list(range(50))
    assert len({e.prev_mac for e in rows}) == 51                # no two entries share a parent: no fork
    report = await assert_intact(gateway)
    assert report.checked == report.head_seq == 51


async def test_verify_while_entries_are_appended_reports_no_false_alarm(gateway: Gateway) -> None:
    async def one(i: int) -> None:
        await audit.record_now(gateway.rt, action="test.concurrent", details={"i": i})

    results = await asyncio.gather(*(one(i) for i in range(30)), *(audit.verify(gateway.rt) for _ in range(5)))
    assert all(r.ok for r in results if isinstance(r, audit.VerifyReport)), [
        r.messages for r in results if isinstance(r, audit.VerifyReport)]
    assert (await assert_intact(gateway)).checked == 31


# --------------------------------------------------------------------------- retention

async def test_purge_keeps_six_months_and_a_verifiable_chain(gateway: Gateway) -> None:
    with pytest.raises(InvalidRequest) as refused:
        await audit.purge(gateway.rt, timedelta(days=182))
    assert refused.value.code == "retention_too_short"
    await add(gateway, 3)                                     # seq 1..4, now
    real_now = gateway.rt.now
    later = real_now() + timedelta(days=200)
    gateway.rt.now = lambda: later                            # 200 days pass
    try:
        await add(gateway, 2)                                 # seq 5, 6
        assert (await audit.purge(gateway.rt, timedelta(days=365))).deleted == 0
        done = await audit.purge(gateway.rt, timedelta(days=183))
        assert (done.deleted, done.through_seq) == (4, 4)
        rows = await entries(gateway)
        assert [e.seq for e in rows] == [5, 6, 7] and rows[-1].action == "audit.purged"
        assert rows[-1].details["through_seq"] == 4 and rows[-1].actor == "cli"
        report = await assert_intact(gateway)
        assert (report.purged_seq, report.checked) == (4, 3)
        async with gateway.rt.db.read() as session:
            certificate = (await session.execute(select(DeletionRecord).where(
                DeletionRecord.data_class == "audit.entries"))).scalar_one()
        assert certificate.count == 4
        # the checkpoint cannot be moved forward to hide a removal: no audit.purged entry confirms it
        async with gateway.rt.db.transaction() as session:
            await session.execute(update(AuditHead).values(purged_seq=5, purged_mac=rows[0].mac))
            await session.execute(delete(AuditEntry).where(AuditEntry.seq == 5))
        report = await audit.verify(gateway.rt)
        assert not report.ok and report.first_bad_seq == 6
        with pytest.raises(InvalidRequest) as broken:
            await audit.purge(gateway.rt, timedelta(days=183))
        assert broken.value.code == "audit_chain_broken"
    finally:
        gateway.rt.now = real_now


async def test_the_chain_key_is_sealed_and_survives_a_new_runtime(gateway: Gateway) -> None:
    await add(gateway, 2)
    async with gateway.rt.db.read() as session:
        head = (await session.execute(select(AuditHead))).scalar_one()
    assert head.key_sealed and head.key_sealed.startswith("mg1.")
    from minigate.services.runtime import Runtime

    other = Runtime(gateway.rt.settings)
    try:
        await other.start()
        assert (await audit.verify(other)).ok
    finally:
        await other.aclose()


# --------------------------------------------------------------------------- API

async def test_api_lists_the_apps_entries_newest_first_with_pages(gateway: Gateway) -> None:
    await add(gateway, 4)
    other_app, other_key = await gateway.new_app("Other")
    await audit.record_now(gateway.rt, action="test.other", app_id=other_app, mode="test")
    await gateway.http.get("/v1/orders", headers={"Authorization": "Bearer mg_test_" + "y" * 43})
    r = await gateway.http.get("/v1/audit_events", headers=gateway.auth, params={"limit": 3})
    assert r.status_code == 200, r.text
    page = r.json()
    assert [e["target"] for e in page["data"]] == ["t3", "t2", "t1"] and page["has_more"] is True
    assert page["data"][0]["object"] == "audit_event" and page["data"][0]["action"] == "test.action"
    r = await gateway.http.get("/v1/audit_events", headers=gateway.auth,
                               params={"limit": 3, "starting_after": page["data"][-1]["seq"]})
    rest = r.json()["data"]                   # app-wide entries (no mode) are shown to both keys
    assert [e["action"] for e in rest] == ["test.action", "app.created"] and r.json()["has_more"] is False
    theirs = (await gateway.http.get("/v1/audit_events", headers={"Authorization": f"Bearer {other_key}"})).json()
    assert [e["action"] for e in theirs["data"]] == ["test.other", "app.created"]
    assert all(e["target"] != "t0" for e in theirs["data"])
    assert (await gateway.http.get("/v1/audit_events")).status_code == 401


# --------------------------------------------------------------------------- CLI

def test_cli_verify_and_export(tmp_path: Path, sandbox_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from minigate.cli import app as cli

    db = tmp_path / "cli.db"
    monkeypatch.setenv("MINIGATE_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("MINIGATE_SANDBOX_DIR", str(sandbox_dir))
    monkeypatch.setenv("MINIGATE_DATABASE_URL", f"sqlite:///{db}")
    monkeypatch.setenv("MINIGATE_MASTER_KEY", "cli-test-master-key-0123456789abcdef0123")
    runner = CliRunner()
    try:
        _cli_checks(runner, cli, db)
    finally:
        configure_logging("INFO")      # the commands pointed the logs at the runner's (now closed) stderr


def _cli_checks(runner: CliRunner, cli: Any, db: Path) -> None:
    for name in ("Shop one", "Shop two"):
        created = runner.invoke(cli, ["apps", "create", name])
        assert created.exit_code == 0, created.output
    ok = runner.invoke(cli, ["audit", "verify"])
    assert ok.exit_code == 0, ok.output
    assert json.loads(ok.stdout)["checked"] == 2
    exported = runner.invoke(cli, ["audit", "export"])
    assert exported.exit_code == 0, exported.output
    lines = [json.loads(line) for line in exported.stdout.splitlines()]
    assert [(e["seq"], e["action"]) for e in lines] == [(1, "app.created"), (2, "app.created")]
    assert lines[1]["prev_mac"] == lines[0]["mac"]
    future = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    assert runner.invoke(cli, ["audit", "export", "--since", future]).stdout == ""
    assert runner.invoke(cli, ["audit", "export", "--until", "2000-01-01"]).stdout == ""
    assert runner.invoke(cli, ["audit", "export", "--since", "yesterday"]).exit_code == 2
    assert runner.invoke(cli, ["audit", "purge", "--older-than-days", "30"]).exit_code == 2
    with sqlite3.connect(db) as conn:                          # someone edits the database directly
        conn.execute("UPDATE audit_entries SET details = ? WHERE seq = 2", ('{"app_name":"Shop three"}',))
    broken = runner.invoke(cli, ["audit", "verify"])
    assert broken.exit_code == 1
    assert json.loads(broken.stdout)["first_bad_seq"] == 2 and "#2" in broken.output

"""Analytics through the gateway (SQLite and PostgreSQL ledgers, the DuckDB store): collection with a
publishable key, durability and de-duplication, refusals, the personal-data rule, clock correction, limits,
the payment funnel joined to the ledger, server events, export, erasure and retention."""

from __future__ import annotations

import gzip
import json
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select, update

from minigate.services import analytics
from minigate.store.tables import AnalyticsForwardCursor, AnalyticsOutbox, DeletionRecord
from tests.conftest import Gateway


def now_ms() -> int:
    return int(time.time() * 1000)


def event(name: str = "view_product", *, distinct: str = "dev-1", user: str | None = None, ts: int | None = None,
          **props: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"id": uuid.uuid4().hex, "type": "page_view" if name == "$pageview" else "event",
                            "name": name, "ts": ts or now_ms(), "distinct_id": distinct, "session_id": "s1",
                            "properties": props}
    if name == "$pageview":
        body["page"] = props.pop("page", "pages/index/index")
    if user:
        body["user_id"] = user
    return body


class Client:
    def __init__(self, gw: Gateway, key: str) -> None:
        self.gw, self.key = gw, key

    async def send(self, events: list[dict[str, Any]], *, sent_at: int | None = None, platform: str = "wechat",
                   gzip_it: bool = False, key: str | None = None) -> Any:
        body = json.dumps({"sent_at": sent_at or now_ms(), "context": {"platform": platform}, "events": events})
        headers = {"Authorization": f"Bearer {key or self.key}", "Content-Type": "application/json"}
        data = body.encode()
        if gzip_it:
            data = gzip.compress(data)
            headers["Content-Encoding"] = "gzip"
        return await self.gw.http.post("/v1/analytics/collect", content=data, headers=headers)


async def publishable(gw: Gateway) -> Client:
    r = await gw.http.post("/v1/analytics/publishable_keys", headers=gw.auth)
    assert r.status_code == 200, r.text
    assert r.json()["key"].startswith("mg_pk_test_")
    return Client(gw, r.json()["key"])


async def top(gw: Gateway) -> dict[str, int]:
    await gw.rt.analytics.flush()
    r = await gw.http.get("/v1/analytics/top_events", headers=gw.auth)
    assert r.status_code == 200, r.text
    return {row["name"]: row["events"] for row in r.json()["data"]}


async def test_collected_events_are_stored_once_and_counted(gateway: Gateway) -> None:
    client = await publishable(gateway)
    batch = [event("view_product", sku="A1"), event("add_to_cart", sku="A1"), event("$pageview", page="pages/a/a")]
    r = await client.send(batch)
    assert r.status_code == 200, r.text
    assert r.json() == {"accepted": 3, "rejected": []}
    # the SDK retries the same batch (its answer was lost): the same ids are not counted twice
    assert (await client.send(batch, gzip_it=True)).json()["accepted"] == 3
    assert await top(gateway) == {"view_product": 1, "add_to_cart": 1, "$pageview": 1}
    r = await gateway.http.get("/v1/analytics/top_pages", headers=gateway.auth)
    assert r.json()["data"] == [{"page": "pages/a/a", "views": 1, "persons": 1}]


async def test_acknowledged_means_durable_before_any_load(gateway: Gateway) -> None:
    client = await publishable(gateway)
    assert (await client.send([event("view_product")])).status_code == 200
    journal = gateway.rt.analytics.journal_dir
    lines = b"".join(p.read_bytes() for p in journal.iterdir())
    assert b'"view_product"' in lines            # on disk (fsynced) before the 200, not yet in DuckDB


async def test_keys_each_do_only_their_job(gateway: Gateway) -> None:
    client = await publishable(gateway)
    r = await client.send([event()], key=gateway.key)            # a secret key is not a publishable key
    assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_publishable_key"
    r = await gateway.http.get("/v1/orders", headers={"Authorization": f"Bearer {client.key}"})
    assert r.status_code == 401                                  # a publishable key reads nothing
    r = await client.send([event()], key="mg_pk_test_" + "x" * 32)
    assert r.status_code == 401
    key_id = (await gateway.http.get("/v1/analytics/publishable_keys", headers=gateway.auth)).json()["data"][0]["id"]
    assert (await gateway.http.delete(f"/v1/analytics/publishable_keys/{key_id}", headers=gateway.auth)
            ).status_code == 200
    assert (await client.send([event()])).status_code == 401
    assert await top(gateway) == {}


async def test_bad_batches_are_refused_whole_and_change_nothing(gateway: Gateway) -> None:
    client = await publishable(gateway)
    headers = {"Authorization": f"Bearer {client.key}", "Content-Type": "application/json"}
    cases = [
        (b"not json", {}, 400, "invalid_batch"),
        (b'{"events": []}', {}, 400, "invalid_batch"),
        (json.dumps({"events": [event()] * 501}).encode(), {}, 400, "invalid_batch"),
        (b"\x1f\x8b broken", {"Content-Encoding": "gzip"}, 400, "invalid_batch"),
        (b"{}", {"Content-Encoding": "br"}, 415, "unsupported_content_encoding"),
        (gzip.compress(b" " * (5 << 20)), {"Content-Encoding": "gzip"}, 413, "payload_too_large"),
    ]
    for body, extra, status, code in cases:
        r = await gateway.http.post("/v1/analytics/collect", content=body, headers={**headers, **extra})
        assert r.status_code == status, (code, r.text)
        assert r.json()["error"]["code"] == code
    assert await top(gateway) == {}


async def test_each_bad_event_is_named_and_the_others_kept(gateway: Gateway) -> None:
    client = await publishable(gateway)
    good = event("add_to_cart")
    bad_name = event("1bad name")
    no_id = event("view_product")
    no_id["id"] = "x"
    nested = event("view_product")
    nested["properties"] = {"cart": {"items": 3}}
    old = event("view_product", ts=now_ms() - 40 * 86_400_000)
    r = await client.send([good, bad_name, no_id, nested, old])
    assert r.status_code == 200
    body = r.json()
    assert body["accepted"] == 1
    assert [(x["index"], x["code"]) for x in body["rejected"]] == [
        (1, "invalid_event_name"), (2, "invalid_event"), (3, "invalid_properties"), (4, "event_too_old")]
    assert await top(gateway) == {"add_to_cart": 1}


async def test_personal_data_is_refused_or_dropped_by_the_apps_rule(gateway: Gateway) -> None:
    client = await publishable(gateway)
    leaky = [event("signup", phone_number="x"), event("signup", note="call me on 13812345678"),
             event("signup", note="id 11010519491231002X"), event("signup", 姓名="张三"),
             event("signup", user="13912345678")]
    r = await client.send(leaky + [event("signup", plan="gold")])
    assert [x["code"] for x in r.json()["rejected"]] == ["pii_in_properties"] * 4 + ["pii_in_user_id"]
    assert r.json()["accepted"] == 1
    # an ID-like number with a wrong check digit is not an ID number
    assert (await client.send([event("signup", ref="110105194912310021")])).json()["accepted"] == 1

    r = await gateway.http.put("/v1/analytics/settings", headers=gateway.auth,
                               json={"personal_data": "drop", "personal_keys": ["wechat_nick"]})
    assert r.status_code == 200, r.text
    analytics.settings_section._cache.clear()
    r = await client.send([event("signup", phone="13812345678", plan="gold", wechat_nick="Zhang",
                                 distinct="dev-9", user="13912345678")])
    assert r.json() == {"accepted": 1, "rejected": [], "dropped_fields": 3}
    await gateway.rt.analytics.flush()
    exported = (await gateway.http.get("/v1/analytics/persons/dev-9/events", headers=gateway.auth)).json()
    [stored] = exported["events"]
    assert stored["user_id"] is None
    assert stored["properties"] == {"plan": "gold"}
    assert "13812345678" not in json.dumps(exported) and "13912345678" not in json.dumps(exported)


async def test_client_clock_is_corrected_by_the_send_time(gateway: Gateway) -> None:
    client = await publishable(gateway)
    skew = 3 * 3600 * 1000                       # the phone is three hours behind
    now = now_ms()
    r = await client.send([event("view_product", distinct="dev-skew", ts=now - skew - 5000)], sent_at=now - skew)
    assert r.status_code == 200
    await gateway.rt.analytics.flush()
    [stored] = (await gateway.http.get("/v1/analytics/persons/dev-skew/events", headers=gateway.auth)
                ).json()["events"]
    assert abs(stored["ts"] - (now - 5000) / 1000) < 5      # ~5 s before the server received it


async def test_collection_is_rate_limited_per_app(gateway: Gateway) -> None:
    r = await gateway.http.put("/v1/analytics/settings", headers=gateway.auth, json={"requests_per_second": 2})
    assert r.status_code == 200
    client = await publishable(gateway)
    statuses = [(await client.send([event()])).status_code for _ in range(4)]
    assert statuses[:2] == [200, 200] and 429 in statuses[2:]
    r = await client.send([event()])
    if r.status_code == 429:
        assert int(r.headers["Retry-After"]) >= 1 and r.json()["error"]["code"] == "rate_limited"


async def test_settings_are_validated(gateway: Gateway) -> None:
    for bad in ({"personal_data": "keep"}, {"forward": [{"provider": "nowhere"}]}, {"sources": ["nowhere"]},
                {"retention_days": 0}, {"unknown": 1}):
        r = await gateway.http.put("/v1/analytics/settings", headers=gateway.auth, json=bad)
        assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_analytics_settings", bad


async def test_payment_funnel_counts_only_what_the_ledger_verified(gateway: Gateway) -> None:
    client = await publishable(gateway)
    paid = await gateway.create_order(amount=990, metadata={"analytics_distinct_id": "dev-paid"})
    unpaid = await gateway.create_order(amount=500)
    # person 1: views, requests payment, the phone says success, and WeChat Pay confirms
    # person 2: views, requests payment, the phone says success — but no payment ever reaches the ledger
    # person 3: only views
    await client.send([
        event("view_product", distinct="dev-paid"),
        event("$payment_request", distinct="dev-paid", order_id=paid["id"]),
        event("$payment_result", distinct="dev-paid", order_id=paid["id"], status="success"),
        event("view_product", distinct="dev-liar"),
        event("$payment_request", distinct="dev-liar", order_id=unpaid["id"]),
        event("$payment_result", distinct="dev-liar", order_id=unpaid["id"], status="success"),
        event("view_product", distinct="dev-browse"),
    ])
    await gateway.pay(paid)
    assert (await gateway.order(paid["id"]))["status"] == "paid"
    await gateway.run_worker()             # moves the $payment_verified server event into the journal
    await gateway.rt.analytics.flush()
    r = await gateway.http.get("/v1/analytics/payment_funnel", headers=gateway.auth)
    assert r.status_code == 200, r.text
    funnel = r.json()
    steps = {s["step"]: s["persons"] for s in funnel["steps"]}
    assert steps == {"viewed": 3, "ordered": 2, "payment_requested": 2, "client_reported_success": 2,
                     "verified_paid": 1}
    assert funnel["diagnostics"]["client_success_not_verified"] == 1
    assert funnel["diagnostics"]["paid_amount"] == 990
    assert (await top(gateway))["$payment_verified"] == 1
    async with gateway.rt.db.read() as session:
        assert (await session.execute(select(AnalyticsOutbox))).scalars().all() == []


async def test_a_persons_events_are_exported_and_erased(gateway: Gateway) -> None:
    client = await publishable(gateway)
    await client.send([event("view_product", distinct="dev-x"), event("login", distinct="dev-x", user="u-42"),
                       event("view_product", distinct="dev-y")])
    await gateway.rt.analytics.flush()
    exported = (await gateway.http.get("/v1/analytics/persons/u-42/events", headers=gateway.auth)).json()
    assert sorted(e["name"] for e in exported["events"]) == ["login", "view_product"]
    r = await gateway.http.delete("/v1/analytics/persons/u-42", headers=gateway.auth)
    assert r.status_code == 200 and r.json()["deleted"] == 2
    assert (await gateway.http.get("/v1/analytics/persons/u-42/events", headers=gateway.auth)).json()["events"] == []
    assert await top(gateway) == {"view_product": 1}
    async with gateway.rt.db.read() as session:
        [record] = (await session.execute(select(DeletionRecord).where(
            DeletionRecord.data_class == "analytics_events"))).scalars().all()
    assert record.reason == "subject_erasure" and record.count == 2 and "u-42" not in json.dumps(record.details)


async def test_retention_purges_old_events_with_a_record(gateway: Gateway) -> None:
    client = await publishable(gateway)
    r = await gateway.http.put("/v1/analytics/settings", headers=gateway.auth, json={"retention_days": 2})
    assert r.status_code == 200
    analytics.settings_section._cache.clear()
    await client.send([event("old", ts=now_ms() - 5 * 86_400_000), event("new")])
    await gateway.rt.analytics.flush()
    assert await analytics.purge_expired(gateway.rt) == 1
    assert await top(gateway) == {"new": 1}
    async with gateway.rt.db.read() as session:
        [record] = (await session.execute(select(DeletionRecord).where(
            DeletionRecord.reason == "retention_purge", DeletionRecord.data_class == "analytics_events"))
        ).scalars().all()
    assert record.count == 1 and record.details == {"retention_days": 2}


@pytest.mark.parametrize("interval", ["day", "week"])
async def test_active_users_through_the_api(gateway: Gateway, interval: str) -> None:
    client = await publishable(gateway)
    await client.send([event("a", distinct="d1"), event("a", distinct="d2"), event("b", distinct="d2", user="u1")])
    await gateway.rt.analytics.flush()
    today = (datetime.now(UTC) + timedelta(hours=8)).date()
    r = await gateway.http.get("/v1/analytics/active_users", headers=gateway.auth,
                               params={"from": today.isoformat(), "to": today.isoformat(), "interval": interval})
    assert r.status_code == 200, r.text
    assert [row["active_users"] for row in r.json()["data"]] == [2]
    r = await gateway.http.get("/v1/analytics/active_users", headers=gateway.auth,
                               params={"where": "nope", "from": today.isoformat()})
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_filter"


async def forwarders_due(gw: Gateway) -> None:
    """Skip the forwarders' idle poll (2 s) and back-off waits."""
    async with gw.rt.db.transaction() as session:
        await session.execute(update(AnalyticsForwardCursor).values(next_attempt_at=gw.rt.now()))


async def test_events_are_forwarded_pseudonymously_and_failures_do_not_lose_them(gateway: Gateway) -> None:
    client = await publishable(gateway)
    r = await gateway.http.put("/v1/analytics/settings", headers=gateway.auth,
                               json={"forward": [{"provider": "growingio", "events": ["*"]}]})
    assert r.status_code == 200, r.text
    analytics.settings_section._cache.clear()
    await gateway.run_worker()                       # the cursor starts at the current end of the store
    account = gateway.rt.sandbox.credentials("growingio")["account_id"]
    sim_events = f"/sandbox/growingio/_sandbox/events?account_id={account}"

    await client.send([event("view_product", distinct="dev-f", user="u-secret-77", sku="A1")])
    await gateway.rt.analytics.flush()
    await forwarders_due(gateway)
    await gateway.run_worker()
    [got] = (await gateway.http.get(sim_events)).json()["events"]
    assert got["name"] == "view_product" and got["logged_in"] is True
    assert got["user_key"] != "u-secret-77" and "u-secret-77" not in json.dumps(got)
    assert len(got["user_key"]) == 32

    # the destination fails: collection goes on, the cursor waits, nothing is lost
    r = await gateway.http.post("/sandbox/growingio/_sandbox/faults", json={"next_call": "http_500", "count": 1})
    assert r.status_code == 200, r.text
    assert (await client.send([event("add_to_cart", distinct="dev-f")])).json()["accepted"] == 1
    await gateway.rt.analytics.flush()
    await forwarders_due(gateway)
    await gateway.run_worker()
    status = (await gateway.http.get("/v1/analytics/forwarding", headers=gateway.auth)).json()["data"]
    assert [(s["provider"], s["status"], s["forwarded"]) for s in status] == [("growingio", "failing", 1)]
    assert status[0]["last_error"].startswith("outcome_unknown")
    await forwarders_due(gateway)                                 # skip the back-off wait
    await gateway.run_worker()
    names = [e["name"] for e in (await gateway.http.get(sim_events)).json()["events"]]
    assert names == ["view_product", "add_to_cart"]
    status = (await gateway.http.get("/v1/analytics/forwarding", headers=gateway.auth)).json()["data"]
    assert (status[0]["status"], status[0]["forwarded"]) == ("ok", 2)

"""Object-level authorisation across apps (B-12, OWASP API1/API3): a second app tries every resource of the
first by id — orders, refunds, events, webhook endpoints and deliveries, payment exceptions, reconciliation
runs, SMS messages and codes, consents, identity verifications and subjects, settings. Every read and every
mutation answers 404 (or a list without the first app's objects) and nothing of the first app changes.

The routes come from the app's OpenAPI description: a route with no probe here and not in ALLOWED fails the
suite, so a new route cannot ship without its cross-app case.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import date
from typing import Any

import httpx
from sqlalchemy import inspect, select

from minigate.services.reconcile import reconcile
from minigate.store import tables
from tests.conftest import Gateway
from tests.security.conftest import record

SUITE = "cross-app probes"

#: routes that hold no per-app object, with the reason
ALLOWED: dict[tuple[str, str], str] = {
    ("GET", "/healthz"): "liveness, no data",
    ("GET", "/readyz"): "readiness, no data",
    ("GET", "/metrics"): "process metrics, labelled by provider and outcome, never by app or object",
    ("POST", "/v1/wechat/login"): "stateless exchange of a wx.login() code with WeChat; stores nothing",
    ("POST", "/v1/alipay/login"): "stateless exchange of a my.getAuthCode() code with Alipay; stores nothing",
}

#: A's lists, read at the end of its set-up
LISTS = ("/v1/orders", "/v1/refunds", "/v1/events", "/v1/webhook_endpoints", "/v1/webhook_deliveries",
         "/v1/payment_exceptions", "/v1/reconciliation_runs", "/v1/sms/messages", "/v1/identity/verifications")
#: the ids of A's objects, as opposed to its numbers (merchant_order_no, openid, …) that B may reuse for its own
OBJECTS = ("endpoint", "order", "refund", "pending_order", "event", "exception", "run", "message", "verification")
PHONE = "13800138077"
NAME, ID_NUMBER = "张三", "11010519491231002X"
CONSENT = {"granted": True, "text_version": "2026-11-v1"}


@dataclass
class Victim:
    """App A's objects, by id."""

    ids: dict[str, str] = field(default_factory=dict)
    code: str = ""
    audit: set[str] = field(default_factory=set)
    #: the id of every object A's own lists show
    listed: set[str] = field(default_factory=set)


def item_key(item: dict[str, Any]) -> str:
    """An object's id; a webhook delivery (no id of its own) is its event and endpoint."""
    return str(item["id"]) if "id" in item else f"{item['event']}->{item['endpoint']}"


async def ok(r: Any) -> dict[str, Any]:
    assert r.status_code == 200, r.text
    return dict(r.json())


async def build_victim(a: Gateway) -> Victim:
    v = Victim()
    endpoint = await a.add_webhook()
    v.ids["endpoint"] = endpoint["id"]
    v.ids["idem_key"] = "shared-looking-key-0001"
    paid = await ok(await a.http.post("/v1/orders", headers=a.auth | {"Idempotency-Key": v.ids["idem_key"]}, json={
        "channel": "wechat_mini", "amount": 1000, "description": "Victim item", "merchant_order_no": "VICTIM-0001",
        "payer": {"openid": "oVictimPayer000000000001"}}))
    await a.pay(paid)
    v.ids["order"] = paid["id"]
    v.ids["merchant_order_no"] = "VICTIM-0001"
    v.ids["openid"] = "oVictimPayer000000000001"
    refund = await ok(await a.http.post("/v1/refunds", headers=a.auth, json={"order": paid["id"], "amount": 100}))
    v.ids["refund"] = refund["id"]
    await a.settle()
    pending = await a.create_order(amount=700)
    v.ids["pending_order"] = pending["id"]
    # a signed callback with another amount: a payment exception
    mismatch = await a.create_order(amount=900)
    body, headers = a.sim.build_notification(mismatch["out_trade_no"], amount={
        "total": 1, "payer_total": 1, "currency": "CNY", "payer_currency": "CNY"})
    await a.http.post(f"/notify/wechatpay/test/{a.app_id}", content=body, headers=headers)
    await a.run_worker()
    await a.run_worker()
    events = (await ok(await a.http.get("/v1/events", headers=a.auth)))["data"]
    v.ids["event"] = events[0]["id"]
    deliveries = (await ok(await a.http.get("/v1/webhook_deliveries", headers=a.auth)))["data"]
    assert deliveries
    exceptions = (await ok(await a.http.get("/v1/payment_exceptions", headers=a.auth)))["data"]
    v.ids["exception"] = exceptions[0]["id"]
    from minigate.services.reconcile import BEIJING

    day: date = a.rt.now().astimezone(BEIJING).date()
    await reconcile(a.rt, app_id=a.app_id, mode="test", provider="wechatpay", bill_date=day)
    runs = (await ok(await a.http.get("/v1/reconciliation_runs", headers=a.auth)))["data"]
    v.ids["run"] = runs[0]["id"]
    # SMS: settings, a consent, a marketing message, a verification code
    await ok(await a.http.put("/v1/sms/settings", headers=a.auth, json={
        "providers": [{"provider": "aliyun-sms"}, {"provider": "tencentcloud", "weight": 0}]}))
    await ok(await a.http.post("/v1/consents", headers=a.auth,
                               json={"phone": PHONE, "action": "grant", "text_version": "2026-11"}))
    message = await ok(await a.http.post("/v1/sms/messages", headers=a.auth, json={
        "phone": PHONE, "template": "marketing_promo", "params": {"promo": "双十一全场八折"}}))
    v.ids["message"] = message["id"]
    await ok(await a.http.post("/v1/verification_codes", headers=a.auth, json={"phone": PHONE, "purpose": "login"}))
    await a.settle()
    inbox = (await a.http.get("/sandbox/_sandbox/messages", params={"phone": PHONE})).json()["messages"]
    v.code = next(m for m in (re.search(r"验证码为(\d{6})", i["text"]) for i in inbox) if m).group(1)
    # identity: settings and a verification
    settings = await ok(await a.http.get("/v1/identity/settings", headers=a.auth))
    await ok(await a.http.put("/v1/identity/settings", headers=a.auth, json={
        "providers": settings["providers"], "retention_days": 7}))
    photo = base64.b64encode(b"\xff\xd8\xff victim face " * 20).decode()
    await ok(await a.http.post("/sandbox/tencentcloud/_sandbox/persons",
                               json={"name": NAME, "id_number": ID_NUMBER, "photo": photo}))
    verification = await ok(await a.http.post("/v1/identity/verifications", headers=a.auth, json={
        "kind": "id_card", "name": NAME, "id_number": ID_NUMBER, "provider": "tencent-faceid", "consent": CONSENT}))
    v.ids["verification"] = verification["id"]
    # analytics: a publishable key, a person's events (one of them names A's paid order), settings
    key = await ok(await a.http.post("/v1/analytics/publishable_keys", headers=a.auth))
    v.ids["publishable_key"], v.ids["publishable_key_secret"] = key["id"], key["key"]
    now_ms = int(a.rt.now().timestamp() * 1000)
    batch = {"sent_at": now_ms, "events": [
        {"id": f"victim-evt-{i:04d}", "name": name, "type": kind, "ts": now_ms, "distinct_id": "victim-device",
         "user_id": "victim-user", "page": "pages/victim/index", "properties": {"order_id": paid["id"]}}
        for i, (name, kind) in enumerate([("view_product", "event"), ("$pageview", "page_view"),
                                          ("$payment_request", "event"), ("victim_only_event", "event")])]}
    r = await a.http.post("/v1/analytics/collect", json=batch, headers={"Authorization": f"Bearer {key['key']}"})
    assert (await ok(r))["accepted"] == 4
    await ok(await a.http.put("/v1/analytics/settings", headers=a.auth, json={"retention_days": 99}))
    await a.rt.analytics.flush()
    v.audit = {e["id"] for e in (await ok(await a.http.get("/v1/audit_events", headers=a.auth,
                                                            params={"limit": 100})))["data"]}
    assert v.audit
    for path in LISTS:
        r = await ok(await a.http.get(path, headers=a.auth, params={"limit": 100}))
        v.listed |= {item_key(item) for item in r["data"]}
    assert {v.ids[k] for k in OBJECTS} <= v.listed | {v.ids["pending_order"], v.ids["message"]}
    return v


async def fingerprint(gw: Gateway, app_id: str) -> dict[str, list[str]]:
    """Every row that belongs to app A (directly or through its orders, runs and endpoints)."""
    out: dict[str, list[str]] = {}
    async with gw.rt.db.read() as session:
        order_ids = set((await session.execute(select(tables.Order.id).where(tables.Order.app_id == app_id)))
                        .scalars())
        run_ids = set((await session.execute(select(tables.ReconciliationRun.id)
                                             .where(tables.ReconciliationRun.app_id == app_id))).scalars())
        endpoint_ids = set((await session.execute(select(tables.WebhookEndpoint.id)
                                                  .where(tables.WebhookEndpoint.app_id == app_id))).scalars())
        for mapper in tables.Base.registry.mappers:
            cls = mapper.class_
            cols = [c.key for c in inspect(cls).column_attrs]
            query = select(cls)
            if cls is tables.App:
                query = query.where(tables.App.id == app_id)
            elif cls is tables.WebhookDelivery:
                query = query.where((cls.app_id == app_id) | cls.endpoint_id.in_(endpoint_ids))
            elif "app_id" in cols:
                query = query.where(cls.app_id == app_id)
            elif cls is tables.OrderEvent:
                query = query.where(cls.order_id.in_(order_ids))
            elif cls is tables.ReconciliationItem:
                query = query.where(cls.run_id.in_(run_ids))
            else:   # key material and the audit chain's head: not an app's object
                continue
            rows = (await session.execute(query)).scalars().all()
            out[cls.__tablename__] = sorted(repr({c: getattr(row, c) for c in cols}) for row in rows)
    return out


Probe = Callable[[Gateway, Victim], Awaitable[None]]


def missing(r: Any) -> None:
    assert r.status_code == 404, (r.request.method, r.request.url, r.status_code, r.text)
    assert r.json()["error"]["code"] == "resource_missing", r.text


def without(r: Any, v: Victim) -> None:
    """A list answer that shows none of A's objects (B's own may be there)."""
    assert r.status_code == 200, r.text
    shown = {item_key(item) for item in r.json()["data"]}
    assert shown & v.listed == set(), (r.request.url, shown & v.listed)
    for key in OBJECTS:
        assert v.ids[key] not in r.text, (r.request.url, key)


def get(path: str) -> Probe:
    async def probe(b: Gateway, v: Victim) -> None:
        missing(await b.http.get(path.format(**v.ids), headers=b.auth))
    return probe


def post(path: str, body: Any = None) -> Probe:
    async def probe(b: Gateway, v: Victim) -> None:
        missing(await b.http.post(path.format(**v.ids), headers=b.auth, json=body))
    return probe


def listing(path: str, *param_sets: dict[str, str]) -> Probe:
    async def probe(b: Gateway, v: Victim) -> None:
        for params in ({}, *param_sets):
            r = await b.http.get(path, headers=b.auth, params={k: x.format(**v.ids) for k, x in params.items()})
            if r.status_code == 404 and params:     # a filter naming A's object: no such object for B
                missing(r)
            else:
                without(r, v)
    return probe


async def create_order_same_numbers(b: Gateway, v: Victim) -> None:
    """A's merchant_order_no and Idempotency-Key mean nothing to B: a new order of B's, no 409 (which would
    reveal A's order number), never A's stored answer."""
    r = await b.http.post("/v1/orders", headers=b.auth | {"Idempotency-Key": v.ids["idem_key"]}, json={
        "channel": "wechat_mini", "amount": 1000, "description": "Victim item",
        "merchant_order_no": v.ids["merchant_order_no"], "payer": {"openid": v.ids["openid"]}})
    assert r.status_code == 200, r.text
    assert r.json()["id"] != v.ids["order"]


async def refund_victim_order(b: Gateway, v: Victim) -> None:
    for order in (v.ids["order"], v.ids["pending_order"]):
        missing(await b.http.post("/v1/refunds", headers=b.auth, json={"order": order, "amount": 1}))
        missing(await b.http.post("/v1/refunds", headers=b.auth, json={"order": order}))


async def create_endpoint(b: Gateway, v: Victim) -> None:
    r = await b.http.post("/v1/webhook_endpoints", headers=b.auth,
                          json={"url": "http://merchant.example/b-hooks", "enabled_events": ["*"]})
    assert r.status_code == 200 and r.json()["id"] != v.ids["endpoint"], r.text


async def redeliver_to_victim_endpoint(b: Gateway, v: Victim) -> None:
    """A's event cannot be redelivered by B; B's own event cannot be sent to A's endpoint."""
    missing(await b.http.post(f"/v1/events/{v.ids['event']}/redeliver", headers=b.auth, json={}))
    own = (await b.http.get("/v1/events", headers=b.auth)).json()["data"]
    assert own, "B needs an event of its own"
    r = await b.http.post(f"/v1/events/{own[0]['id']}/redeliver", headers=b.auth,
                          json={"endpoints": [v.ids["endpoint"]]})
    assert r.status_code in (200, 404), r.text
    if r.status_code == 200:
        assert r.json()["queued"] == 0, r.text
    else:
        assert r.json()["error"]["code"] == "resource_missing", r.text


async def send_message_to_victim_phone(b: Gateway, v: Victim) -> None:
    """A's consent for the number is A's: B's marketing message needs B's own."""
    r = await b.http.post("/v1/sms/messages", headers=b.auth, json={
        "phone": PHONE, "template": "marketing_promo", "params": {"promo": "抢先看"}})
    assert r.status_code == 403 and r.json()["error"]["code"] == "consent_required", r.text


async def send_code_to_victim_phone(b: Gateway, v: Victim) -> None:
    r = await b.http.post("/v1/verification_codes", headers=b.auth, json={"phone": PHONE, "purpose": "login"})
    assert r.status_code in (200, 429), r.text     # B's own code, or the number's platform-wide limit


async def check_victim_code(b: Gateway, v: Victim) -> None:
    r = await b.http.post("/v1/verification_codes/check", headers=b.auth,
                          json={"phone": PHONE, "purpose": "login", "code": v.code})
    assert r.status_code in (200, 400, 404, 429), r.text
    if r.status_code == 200:
        assert r.json()["verified"] is False, r.text


def settings(path: str, body: Callable[[dict[str, Any]], dict[str, Any]]) -> Probe:
    async def probe(b: Gateway, v: Victim) -> None:
        mine = await ok(await b.http.get(path, headers=b.auth))
        r = await b.http.put(path, headers=b.auth, json=body(mine))
        assert r.status_code == 200, r.text
    return probe


async def consent_change(b: Gateway, v: Victim) -> None:
    await ok(await b.http.post("/v1/consents", headers=b.auth, json={"phone": PHONE, "action": "withdraw"}))


async def consent_read(b: Gateway, v: Victim) -> None:
    r = await ok(await b.http.get("/v1/consents", headers=b.auth, params={"phone": PHONE}))
    assert r["granted"] is False and [h for h in r["history"] if h.get("action") == "grant"] == [], r


async def verify_victim_person(b: Gateway, v: Victim) -> None:
    r = await b.http.post("/v1/identity/verifications", headers=b.auth, json={
        "kind": "id_card", "name": NAME, "id_number": ID_NUMBER, "provider": "tencent-faceid", "consent": CONSENT})
    assert r.status_code == 200 and r.json()["id"] != v.ids["verification"], r.text


async def export_victim_subject(b: Gateway, v: Victim) -> None:
    r = await ok(await b.http.post("/v1/identity/subjects/export", headers=b.auth, json={"id_number": ID_NUMBER}))
    text = json.dumps(r, ensure_ascii=False)
    assert v.ids["verification"] not in text, r
    assert all(not x for k, x in r.items() if isinstance(x, list)), r


async def erase_victim_subject(b: Gateway, v: Victim) -> None:
    r = await b.http.post("/v1/identity/subjects/erase", headers=b.auth, json={"id_number": ID_NUMBER})
    assert r.status_code == 200, r.text


VICTIM_PERSON = {"phone": PHONE, "id_number": ID_NUMBER, "user_id": "victim-user", "openid": "oVictimPayer000000000001"}


async def export_victim_everywhere(b: Gateway, v: Victim) -> None:
    """B names A's person by every identifier: B's own (empty) holdings come back, nothing of A's."""
    r = await ok(await b.http.post("/v1/privacy/subjects/export", headers=b.auth, json=VICTIM_PERSON))
    text = json.dumps(r, ensure_ascii=False)
    for key in ("order", "message", "verification"):
        assert v.ids[key] not in text, (key, r)
    assert r["analytics"]["events"] == [], r
    assert {o["id"] for o in r["kept"]["orders"]["data"]} & {v.ids["order"], v.ids["pending_order"]} == set(), r
    assert r["identity"]["verifications"] == [] or all(  # B's own check of the same person, never A's
        item["id"] != v.ids["verification"] for item in r["identity"]["verifications"]), r


async def erase_victim_everywhere(b: Gateway, v: Victim) -> None:
    r = await ok(await b.http.post("/v1/privacy/subjects/erase", headers=b.auth, json=VICTIM_PERSON))
    assert {o["id"] for o in r["kept"]["orders"]["data"]} & {v.ids["order"], v.ids["pending_order"]} == set(), r
    assert r["erased"]["analytics_events"] == 0 and r["erased"].get("identity_verifications", 0) <= 1, r


async def list_endpoints(b: Gateway, v: Victim) -> None:
    r = await b.http.get("/v1/webhook_endpoints", headers=b.auth)
    without(r, v)


async def delete_endpoint(b: Gateway, v: Victim) -> None:
    r = await b.http.delete(f"/v1/webhook_endpoints/{v.ids['endpoint']}", headers=b.auth)
    missing(r)


async def read_settings(b: Gateway, v: Victim) -> None:
    """Read after B's PUT (probes run in order): B sees its own settings, never A's."""
    sms = await ok(await b.http.get("/v1/sms/settings", headers=b.auth))
    assert [p["provider"] for p in sms["providers"]][0] == "tencentcloud", sms
    ident = await ok(await b.http.get("/v1/identity/settings", headers=b.auth))
    assert ident["retention_days"] == 30, ident


async def read_audit(b: Gateway, v: Victim) -> None:
    """B's trail holds B's own entries (its key use, its refused attempts), none of A's."""
    for params in ({"limit": "100"}, {"limit": "100", "starting_after": str(max(int(i[4:]) for i in v.audit) + 1)},
                   {"limit": "100", "action": "refund.created"}):
        r = await ok(await b.http.get("/v1/audit_events", headers=b.auth, params=params))
        assert {e["id"] for e in r["data"]} & v.audit == set(), r


async def collect_as_b(b: Gateway, v: Victim) -> None:
    """B's secret key, A's key id or a made-up key cannot write; B's own publishable key writes into B's app."""
    body = {"events": [{"id": "intruder-evt-0001", "name": "view_product", "ts": 1, "distinct_id": "victim-device"}]}
    for key in (b.key, v.ids["publishable_key"], "mg_pk_test_" + "A" * 32):
        r = await b.http.post("/v1/analytics/collect", json=body, headers={"Authorization": f"Bearer {key}"})
        assert r.status_code == 401, r.text
    own = await ok(await b.http.post("/v1/analytics/publishable_keys", headers=b.auth))
    body["events"][0]["ts"] = int(b.rt.now().timestamp() * 1000)
    r = await b.http.post("/v1/analytics/collect", json=body, headers={"Authorization": f"Bearer {own['key']}"})
    assert (await ok(r))["accepted"] == 1
    await b.rt.analytics.flush()


def analytics_read(path: str, params: dict[str, str] | None = None) -> Probe:
    async def probe(b: Gateway, v: Victim) -> None:
        r = await ok(await b.http.get(path, headers=b.auth, params=params or {}))
        text = json.dumps(r)
        for secret in ("victim_only_event", "pages/victim/index", v.ids["order"], v.ids["publishable_key"]):
            assert secret not in text, (path, r)
    return probe


async def active_users_of_b(b: Gateway, v: Victim) -> None:
    await analytics_read("/v1/analytics/active_users")(b, v)
    r = await ok(await b.http.get("/v1/analytics/active_users", headers=b.auth))
    assert sum(row["active_users"] for row in r["data"]) == 1, r        # B's one device, not A's person


async def payment_funnel_of_b(b: Gateway, v: Victim) -> None:
    await analytics_read("/v1/analytics/payment_funnel")(b, v)
    r = await ok(await b.http.get("/v1/analytics/payment_funnel", headers=b.auth))
    assert {s["step"]: s["persons"] for s in r["steps"]}["payment_requested"] == 0, r


async def funnel_of_b(b: Gateway, v: Victim) -> None:
    """The step names are B's own words; the counts must be B's: its one view, none of A's events."""
    r = await ok(await b.http.get("/v1/analytics/funnel", headers=b.auth,
                                  params={"steps": "view_product,victim_only_event"}))
    assert [s["persons"] for s in r["data"]] == [1, 0], r


async def revoke_victim_key(b: Gateway, v: Victim) -> None:
    missing(await b.http.delete(f"/v1/analytics/publishable_keys/{v.ids['publishable_key']}", headers=b.auth))


async def export_victim_person(b: Gateway, v: Victim) -> None:
    for person in ("victim-user", "victim-device"):
        r = await ok(await b.http.get(f"/v1/analytics/persons/{person}/events", headers=b.auth))
        assert all(e["event_id"].startswith("intruder") for e in r["events"]), r


async def erase_victim_person(b: Gateway, v: Victim) -> None:
    r = await ok(await b.http.delete("/v1/analytics/persons/victim-user", headers=b.auth))
    assert r["deleted"] == 0, r


async def pull_for_b(b: Gateway, v: Victim) -> None:
    r = await b.http.post("/v1/analytics/pulls", headers=b.auth, json={"source": "nowhere", "date": "2026-01-01"})
    assert r.status_code == 400, r.text


async def analytics_settings_of_b(b: Gateway, v: Victim) -> None:
    await ok(await b.http.put("/v1/analytics/settings", headers=b.auth, json={"retention_days": 5}))
    r = await ok(await b.http.get("/v1/analytics/settings", headers=b.auth))
    assert r["retention_days"] == 5, r


async def victim_key_ids(b: Gateway) -> set[str]:
    """Every API key that is not B's (A's and any other app's), straight from the database."""
    async with b.rt.db.read() as session:
        ids = set((await session.execute(select(tables.ApiKey.id).where(tables.ApiKey.app_id != b.app_id))).scalars())
    assert ids
    return ids


async def create_key_as_b(b: Gateway, v: Victim) -> None:
    r = await ok(await b.http.post("/v1/api_keys", headers=b.auth, json={"name": "b", "scopes": ["orders:read"]}))
    assert r["id"] not in await victim_key_ids(b)
    # B's new key sees B's orders, never A's
    missing(await b.http.get(f"/v1/orders/{v.ids['order']}", headers={"Authorization": f"Bearer {r['key']}"}))


async def list_keys_of_b(b: Gateway, v: Victim) -> None:
    r = await ok(await b.http.get("/v1/api_keys", headers=b.auth))
    assert {k["id"] for k in r["data"]} & await victim_key_ids(b) == set(), r


def victim_key(method: str, suffix: str = "") -> Probe:
    async def probe(b: Gateway, v: Victim) -> None:
        for key_id in sorted(await victim_key_ids(b)):
            missing(await b.http.request(method, f"/v1/api_keys/{key_id}{suffix}", headers=b.auth,
                                         json={"expire_previous_in": 0} if suffix else None))
    return probe


PROBES: dict[tuple[str, str], Probe] = {
    ("POST", "/v1/api_keys"): create_key_as_b,
    ("GET", "/v1/api_keys"): list_keys_of_b,
    ("POST", "/v1/api_keys/{key_id}/roll"): victim_key("POST", "/roll"),
    ("DELETE", "/v1/api_keys/{key_id}"): victim_key("DELETE"),
    ("POST", "/v1/analytics/collect"): collect_as_b,
    ("GET", "/v1/analytics/active_users"): active_users_of_b,
    ("GET", "/v1/analytics/retention"): analytics_read("/v1/analytics/retention"),
    ("GET", "/v1/analytics/funnel"): funnel_of_b,
    ("GET", "/v1/analytics/payment_funnel"): payment_funnel_of_b,
    ("GET", "/v1/analytics/top_events"): analytics_read("/v1/analytics/top_events"),
    ("GET", "/v1/analytics/top_pages"): analytics_read("/v1/analytics/top_pages"),
    ("GET", "/v1/analytics/external_metrics"): analytics_read("/v1/analytics/external_metrics",
                                                              {"source": "wechat-datacube", "metric": "daily_visit"}),
    ("POST", "/v1/analytics/pulls"): pull_for_b,
    ("GET", "/v1/analytics/pulls"): analytics_read("/v1/analytics/pulls"),
    ("GET", "/v1/analytics/forwarding"): analytics_read("/v1/analytics/forwarding"),
    ("GET", "/v1/analytics/settings"): analytics_settings_of_b,
    ("PUT", "/v1/analytics/settings"): analytics_settings_of_b,
    ("POST", "/v1/analytics/publishable_keys"): analytics_read("/v1/analytics/publishable_keys"),
    ("GET", "/v1/analytics/publishable_keys"): analytics_read("/v1/analytics/publishable_keys"),
    ("DELETE", "/v1/analytics/publishable_keys/{key_id}"): revoke_victim_key,
    ("GET", "/v1/analytics/persons/{person}/events"): export_victim_person,
    ("DELETE", "/v1/analytics/persons/{person}"): erase_victim_person,
    ("GET", "/v1/audit_events"): read_audit,
    ("POST", "/v1/orders"): create_order_same_numbers,
    ("GET", "/v1/orders"): listing("/v1/orders", {"merchant_order_no": "{merchant_order_no}"},
                                   {"payer_openid": "{openid}"}, {"starting_after": "{order}"}),
    ("GET", "/v1/orders/{order_id}"): get("/v1/orders/{order}"),
    ("POST", "/v1/orders/{order_id}/close"): post("/v1/orders/{pending_order}/close"),
    ("POST", "/v1/refunds"): refund_victim_order,
    ("GET", "/v1/refunds"): listing("/v1/refunds", {"order": "{order}"}),
    ("GET", "/v1/refunds/{refund_id}"): get("/v1/refunds/{refund}"),
    ("GET", "/v1/events"): listing("/v1/events", {"type": "order.paid"}),
    ("GET", "/v1/events/{event_id}"): get("/v1/events/{event}"),
    ("POST", "/v1/events/{event_id}/redeliver"): redeliver_to_victim_endpoint,
    ("POST", "/v1/webhook_endpoints"): create_endpoint,
    ("GET", "/v1/webhook_endpoints"): list_endpoints,
    ("GET", "/v1/webhook_endpoints/{endpoint_id}"): get("/v1/webhook_endpoints/{endpoint}"),
    ("DELETE", "/v1/webhook_endpoints/{endpoint_id}"): delete_endpoint,
    ("POST", "/v1/webhook_endpoints/{endpoint_id}/rotate_secret"): post(
        "/v1/webhook_endpoints/{endpoint}/rotate_secret", {"expire_previous_in": 0}),
    ("GET", "/v1/webhook_deliveries"): listing("/v1/webhook_deliveries", {"event": "{event}"}),
    ("GET", "/v1/payment_exceptions"): listing("/v1/payment_exceptions", {"status": "open"}),
    ("GET", "/v1/payment_exceptions/{exception_id}"): get("/v1/payment_exceptions/{exception}"),
    ("POST", "/v1/payment_exceptions/{exception_id}/resolve"): post(
        "/v1/payment_exceptions/{exception}/resolve", {"action": "accept"}),
    ("GET", "/v1/reconciliation_runs"): listing("/v1/reconciliation_runs", {"provider": "wechatpay"}),
    ("GET", "/v1/reconciliation_runs/{run_id}"): get("/v1/reconciliation_runs/{run}"),
    ("POST", "/v1/sms/messages"): send_message_to_victim_phone,
    ("GET", "/v1/sms/messages"): listing("/v1/sms/messages", {"phone": PHONE}),
    ("GET", "/v1/sms/messages/{message_id}"): get("/v1/sms/messages/{message}"),
    ("POST", "/v1/verification_codes"): send_code_to_victim_phone,
    ("POST", "/v1/verification_codes/check"): check_victim_code,
    ("GET", "/v1/sms/settings"): read_settings,
    ("PUT", "/v1/sms/settings"): settings("/v1/sms/settings", lambda s: {
        "providers": [{"provider": "tencentcloud"}, {"provider": "aliyun-sms", "weight": 0}]}),
    ("POST", "/v1/consents"): consent_change,
    ("GET", "/v1/consents"): consent_read,
    ("POST", "/v1/identity/verifications"): verify_victim_person,
    ("GET", "/v1/identity/verifications"): listing("/v1/identity/verifications", {"kind": "id_card"}),
    ("GET", "/v1/identity/verifications/{verification_id}"): get("/v1/identity/verifications/{verification}"),
    ("POST", "/v1/identity/verifications/{verification_id}/refresh"): post(
        "/v1/identity/verifications/{verification}/refresh"),
    ("GET", "/v1/identity/settings"): read_settings,
    ("PUT", "/v1/identity/settings"): settings("/v1/identity/settings", lambda s: {
        "providers": s["providers"], "retention_days": 30}),
    ("POST", "/v1/identity/subjects/export"): export_victim_subject,
    ("POST", "/v1/identity/subjects/erase"): erase_victim_subject,
    ("POST", "/v1/privacy/subjects/export"): export_victim_everywhere,
    ("POST", "/v1/privacy/subjects/erase"): erase_victim_everywhere,
}


def api_routes(gw: Gateway) -> set[tuple[str, str]]:
    spec = gw.app.openapi()
    return {(method.upper(), path) for path, ops in spec["paths"].items() for method in ops
            if method in ("get", "post", "put", "patch", "delete")}


async def test_every_route_has_a_cross_app_probe_or_a_reason(gateway: Gateway) -> None:
    routes = api_routes(gateway)
    untested = sorted(routes - set(PROBES) - set(ALLOWED))
    assert untested == [], f"routes without a cross-app probe (add one to PROBES, or a reason to ALLOWED): {untested}"
    stale = sorted((set(PROBES) | set(ALLOWED)) - routes)
    assert stale == [], f"probes for routes that no longer exist: {stale}"


async def test_a_second_app_can_reach_nothing_of_the_first(gateway: Gateway) -> None:
    a = gateway
    victim = await build_victim(a)
    sent = 0

    async def count(_request: httpx.Request) -> None:
        nonlocal sent
        sent += 1
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=a.app, raise_app_exceptions=False),
                               base_url="http://gateway", event_hooks={"request": [count]})
    b = Gateway(a.app, a.rt, client, a.merchant)
    b.app_id, b.key = await a.new_app("Intruder shop")
    # B gets an event of its own (for the redelivery probe)
    own = await b.create_order(amount=300)
    await b.pay(own)
    await a.run_worker()
    before = await fingerprint(a, a.app_id)
    sms_before = await ok(await a.http.get("/v1/sms/settings", headers=a.auth))
    ident_before = await ok(await a.http.get("/v1/identity/settings", headers=a.auth))

    tried = 0
    for route in sorted(PROBES, key=lambda r: (r[0] == "GET", r)):   # mutations first, then reads
        await PROBES[route](b, victim)
        tried += 1
    await a.settle()
    await a.run_worker()
    record(SUITE + " (routes)", tried)
    record(SUITE + " (requests)", sent)
    await client.aclose()

    after = await fingerprint(a, a.app_id)
    changed = {t: (before[t], after[t]) for t in before if before[t] != after[t]}
    assert changed == {}, f"app B changed app A's rows: {changed}"
    assert await ok(await a.http.get("/v1/sms/settings", headers=a.auth)) == sms_before
    assert await ok(await a.http.get("/v1/identity/settings", headers=a.auth)) == ident_before
    assert (await ok(await a.http.get("/v1/analytics/settings", headers=a.auth)))["retention_days"] == 99
    exported = await ok(await a.http.get("/v1/analytics/persons/victim-user/events", headers=a.auth))
    assert len(exported["events"]) == 4                # A's person survived B's erasure attempt
    keys = (await ok(await a.http.get("/v1/analytics/publishable_keys", headers=a.auth)))["data"]
    assert [k["revoked"] for k in keys] == [None]
    # A's own view is intact: its objects are there and its code still works (B's attempt used no try)
    assert (await ok(await a.http.get(f"/v1/orders/{victim.ids['order']}", headers=a.auth)))["status"] in (
        "paid", "partially_refunded")
    r = await ok(await a.http.get("/v1/consents", headers=a.auth, params={"phone": PHONE}))
    assert r["granted"] is True
    r = await ok(await a.http.post("/v1/verification_codes/check", headers=a.auth,
                                   json={"phone": PHONE, "purpose": "login", "code": victim.code}))
    assert r["verified"] is True, r

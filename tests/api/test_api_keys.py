"""API access (B-12, B-15; OWASP API2, API4, API5) on SQLite and PostgreSQL: restricted keys reach only the
routes of their scopes (fail closed for a route nobody classified), a key never makes a key more powerful than
itself, a rolled key keeps working for its overlap and not after, revocation and expiry are immediate, lists show
no secret, repeated authentication failures lock the client address out (every request, even with a good key,
until the window has passed) and leave an audit entry, and each key has its own request rate."""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import httpx
from sqlalchemy import select, text

from minigate.api.scopes import ROUTE_SCOPES, UNCLASSIFIED, required_scope
from minigate.logging import configure_logging
from minigate.services.apps import grants
from minigate.store.tables import ApiKey, AuditEntry, Order, Refund
from tests.conftest import Gateway


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def new_key(gw: Gateway, scopes: list[str], *, as_key: str | None = None, name: str = "worker",
                  **extra: Any) -> dict[str, Any]:
    r = await gw.http.post("/v1/api_keys", headers=bearer(as_key or gw.key),
                           json={"name": name, "scopes": scopes, **extra})
    assert r.status_code == 200, r.text
    return dict(r.json())


def refused(r: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert r.status_code == status, r.text
    error = dict(r.json()["error"])
    assert error["code"] == code, r.text
    return error


async def entries(gw: Gateway, action: str) -> list[AuditEntry]:
    async with gw.rt.db.read() as session:
        return list((await session.execute(select(AuditEntry).where(AuditEntry.action == action)
                                           .order_by(AuditEntry.seq))).scalars())


def shift_clock(gw: Gateway, seconds: float) -> None:
    real: Callable[[], datetime] = gw.rt.now
    gw.rt.now = lambda: real() + timedelta(seconds=seconds)  # type: ignore[method-assign]


def with_settings(gw: Gateway, **changes: Any) -> None:
    gw.rt.settings = gw.rt.settings.model_copy(update=changes)


# -- scopes --------------------------------------------------------------------------------------------------
async def test_a_read_only_key_reads_orders_and_cannot_create_one(gateway: Gateway) -> None:
    order = await gateway.create_order(amount=300)
    reader = (await new_key(gateway, ["orders:read"]))["key"]
    assert reader.startswith("mg_test_")
    r = await gateway.http.get(f"/v1/orders/{order['id']}", headers=bearer(reader))
    assert r.status_code == 200 and r.json()["id"] == order["id"], r.text
    r = await gateway.http.get("/v1/orders", headers=bearer(reader))
    assert [o["id"] for o in r.json()["data"]] == [order["id"]], r.text
    before = await gateway.count(Order)
    r = await gateway.http.post("/v1/orders", headers=bearer(reader), json={
        "channel": "wechat_mini", "amount": 100, "description": "x", "merchant_order_no": "RO-1",
        "payer": {"openid": "oTestOpenid0000000000000001"}})
    assert refused(r, 403, "insufficient_scope")["scope"] == "orders:write"
    r = await gateway.http.post(f"/v1/orders/{order['id']}/close", headers=bearer(reader))
    refused(r, 403, "insufficient_scope")
    assert await gateway.count(Order) == before
    assert (await gateway.order(order["id"]))["status"] == "pending"
    # other resources are out of reach, reading included
    refused(await gateway.http.get("/v1/sms/settings", headers=bearer(reader)), 403, "insufficient_scope")
    refused(await gateway.http.get("/v1/audit_events", headers=bearer(reader)), 403, "insufficient_scope")


async def test_write_implies_read_and_an_sms_key_cannot_refund(gateway: Gateway) -> None:
    order = await gateway.create_order(amount=500)
    await gateway.pay(order)
    sms_key = (await new_key(gateway, ["sms:write"]))["key"]
    assert (await gateway.http.get("/v1/sms/settings", headers=bearer(sms_key))).status_code == 200
    r = await gateway.http.post("/v1/refunds", headers=bearer(sms_key), json={"order": order["id"], "amount": 100})
    assert refused(r, 403, "insufficient_scope")["scope"] == "orders:write"
    assert await gateway.count(Refund) == 0
    refused(await gateway.http.get(f"/v1/orders/{order['id']}", headers=bearer(sms_key)), 403, "insufficient_scope")
    writer = (await new_key(gateway, ["orders:write"]))["key"]
    assert (await gateway.http.get(f"/v1/orders/{order['id']}", headers=bearer(writer))).status_code == 200
    r = await gateway.http.post("/v1/refunds", headers=bearer(writer), json={"order": order["id"], "amount": 100})
    assert r.status_code == 200, r.text


async def test_a_key_cannot_give_or_take_a_scope_it_does_not_hold(gateway: Gateway) -> None:
    manager = (await new_key(gateway, ["keys:write", "orders:read"]))
    before = await gateway.count(ApiKey)
    for scopes, scope in ((["orders:write"], "orders:write"), (["*"], "*"), (["orders:read", "sms:read"], "sms:read")):
        r = await gateway.http.post("/v1/api_keys", headers=bearer(manager["key"]),
                                    json={"name": "more", "scopes": scopes})
        assert refused(r, 403, "insufficient_scope")["scope"] == scope
    # nor roll (and so obtain) or revoke a more powerful key
    keys = (await gateway.http.get("/v1/api_keys", headers=gateway.auth)).json()["data"]
    full = next(k for k in keys if k["scopes"] == ["*"])
    refused(await gateway.http.post(f"/v1/api_keys/{full['id']}/roll", headers=bearer(manager["key"]), json={}),
            403, "insufficient_scope")
    refused(await gateway.http.delete(f"/v1/api_keys/{full['id']}", headers=bearer(manager["key"])),
            403, "insufficient_scope")
    assert await gateway.count(ApiKey) == before
    assert (await gateway.http.get("/v1/orders", headers=gateway.auth)).status_code == 200
    # what it holds (or less) it may give
    lesser = await new_key(gateway, ["orders:read", "keys:read"], as_key=manager["key"])
    assert lesser["scopes"] == ["keys:read", "orders:read"]
    # a key without keys:* cannot manage keys at all
    refused(await gateway.http.post("/v1/api_keys", headers=bearer(lesser["key"]),
                                    json={"name": "x", "scopes": ["orders:read"]}), 403, "insufficient_scope")
    reader = await new_key(gateway, ["orders:read"])
    assert refused(await gateway.http.get("/v1/api_keys", headers=bearer(reader["key"])),
                   403, "insufficient_scope")["scope"] == "keys:read"


async def test_scopes_and_parameters_are_validated(gateway: Gateway) -> None:
    for body in ({"name": "x", "scopes": ["orders:delete"]}, {"name": "x", "scopes": ["payments:read"]},
                 {"name": "x", "scopes": []}, {"name": "", "scopes": ["orders:read"]},
                 {"name": "x", "scopes": ["orders:read"], "expires_in": 0}):
        r = await gateway.http.post("/v1/api_keys", headers=gateway.auth, json=body)
        assert r.status_code == 400, (body, r.text)
    key = await new_key(gateway, ["orders:read"])
    for seconds in (-1, 7 * 86400 + 1):
        r = await gateway.http.post(f"/v1/api_keys/{key['id']}/roll", headers=gateway.auth,
                                    json={"expire_previous_in": seconds})
        assert r.status_code == 400, r.text


def test_scope_rules() -> None:
    assert grants(["orders:write"], "orders:read") and grants(["orders:write"], "orders:write")
    assert not grants(["orders:read"], "orders:write")
    assert not grants(["orders:write"], "sms:read")
    assert grants(["*"], "*") and not grants(["orders:write", "keys:write"], "*")
    assert required_scope("GET", "/v1/something_new") == UNCLASSIFIED == "*"
    assert required_scope("get", "/v1/orders/{order_id}") == "orders:read"
    assert required_scope("GET", "/v1/orders/ord_123") == "*"       # templates, never concrete paths


async def test_every_v1_route_has_a_scope(gateway: Gateway) -> None:
    spec = gateway.app.openapi()
    routes = {(method.upper(), path) for path, ops in spec["paths"].items() for method in ops
              if path.startswith("/v1/") and method in ("get", "post", "put", "patch", "delete")}
    routes.discard(("POST", "/v1/analytics/collect"))               # publishable keys, not secret keys
    assert sorted(routes - set(ROUTE_SCOPES)) == []
    assert sorted(set(ROUTE_SCOPES) - routes) == []


async def test_a_route_missing_from_the_table_is_closed_to_restricted_keys(gateway: Gateway) -> None:
    from minigate.api import scopes

    key = (await new_key(gateway, ["orders:write"]))["key"]
    scopes.ROUTE_SCOPES.pop(("GET", "/v1/orders"))
    try:
        refused(await gateway.http.get("/v1/orders", headers=bearer(key)), 403, "insufficient_scope")
        assert (await gateway.http.get("/v1/orders", headers=gateway.auth)).status_code == 200
    finally:
        scopes.ROUTE_SCOPES[("GET", "/v1/orders")] = "orders:read"
    assert (await gateway.http.get("/v1/orders", headers=bearer(key))).status_code == 200


async def test_keys_made_before_scopes_get_every_scope(gateway: Gateway) -> None:
    """The migration's server default: a row written without scopes (as every key before 0007) holds ``*``."""
    async with gateway.rt.db.transaction() as session:
        await session.execute(text(
            "INSERT INTO api_keys (id, app_id, mode, digest, hint, created_at) "
            "VALUES ('key_legacy', :app, 'test', :digest, 'mg_test_…old', :now)"),
            {"app": gateway.app_id, "digest": "0" * 64, "now": gateway.rt.now()})
    async with gateway.rt.db.read() as session:
        row = await session.get(ApiKey, "key_legacy")
    assert row is not None and row.scopes == ["*"] and row.expires_at is None


# -- create, list, roll, revoke, expiry ------------------------------------------------------------------------
async def test_the_list_shows_no_secret(gateway: Gateway) -> None:
    made = await new_key(gateway, ["orders:read", "sms:write"], name="till")
    assert made["key"].startswith("mg_test_") and made["hint"] == f"{made['key'][:8]}…{made['key'][-4:]}"
    r = await gateway.http.get("/v1/api_keys", headers=gateway.auth)
    assert r.status_code == 200, r.text
    listed = {k["id"]: k for k in r.json()["data"]}
    assert set(listed[made["id"]]) == {"id", "object", "livemode", "name", "hint", "scopes", "created", "expires",
                                       "revoked"}
    assert listed[made["id"]]["name"] == "till" and listed[made["id"]]["scopes"] == ["orders:read", "sms:write"]
    assert len(listed) == 2                                        # the app's first test key and this one
    for secret in (made["key"], gateway.key):
        assert secret not in r.text
        assert hashlib.sha256(secret.encode()).hexdigest() not in r.text


async def test_a_rolled_key_works_during_the_overlap_and_not_after(gateway: Gateway) -> None:
    old = await new_key(gateway, ["orders:read"], name="pos")
    r = await gateway.http.post(f"/v1/api_keys/{old['id']}/roll", headers=gateway.auth,
                                json={"expire_previous_in": 3600})
    assert r.status_code == 200, r.text
    new = r.json()
    assert new["id"] != old["id"] and new["key"] != old["key"]
    assert (new["name"], new["scopes"]) == ("pos", ["orders:read"])
    assert new["previous"]["expires"] is not None and "key" not in new["previous"]
    for key in (old["key"], new["key"]):
        assert (await gateway.http.get("/v1/orders", headers=bearer(key))).status_code == 200
    shift_clock(gateway, 3601)
    refused(await gateway.http.get("/v1/orders", headers=bearer(old["key"])), 401, "invalid_api_key")
    assert (await gateway.http.get("/v1/orders", headers=bearer(new["key"]))).status_code == 200
    assert [e.details["reason"] for e in await entries(gateway, "api_key.auth_failed")] == ["expired_api_key"]
    # an expired key cannot be rolled again
    refused(await gateway.http.post(f"/v1/api_keys/{old['id']}/roll", headers=gateway.auth, json={}),
            400, "api_key_inactive")


async def test_a_roll_with_no_overlap_ends_the_previous_key_at_once(gateway: Gateway) -> None:
    old = await new_key(gateway, ["orders:read"])
    r = await gateway.http.post(f"/v1/api_keys/{old['id']}/roll", headers=gateway.auth,
                                json={"expire_previous_in": 0})
    assert r.status_code == 200, r.text
    refused(await gateway.http.get("/v1/orders", headers=bearer(old["key"])), 401, "invalid_api_key")
    assert (await gateway.http.get("/v1/orders", headers=bearer(r.json()["key"]))).status_code == 200


async def test_the_default_overlap_is_a_day(gateway: Gateway) -> None:
    old = await new_key(gateway, ["orders:read"])
    r = await gateway.http.post(f"/v1/api_keys/{old['id']}/roll", headers=gateway.auth)
    assert r.status_code == 200, r.text
    assert abs(r.json()["previous"]["expires"] - (gateway.rt.now().timestamp() + 86400)) < 60
    shift_clock(gateway, 86400 - 60)
    assert (await gateway.http.get("/v1/orders", headers=bearer(old["key"]))).status_code == 200


async def test_revocation_is_immediate(gateway: Gateway) -> None:
    key = await new_key(gateway, ["orders:read", "keys:write"])
    assert (await gateway.http.get("/v1/orders", headers=bearer(key["key"]))).status_code == 200
    r = await gateway.http.delete(f"/v1/api_keys/{key['id']}", headers=gateway.auth)
    assert r.status_code == 200 and r.json()["revoked"] is not None, r.text
    refused(await gateway.http.get("/v1/orders", headers=bearer(key["key"])), 401, "invalid_api_key")
    # a key may revoke itself: its next request is refused
    own = await new_key(gateway, ["keys:write"])
    r = await gateway.http.delete(f"/v1/api_keys/{own['id']}", headers=bearer(own["key"]))
    assert r.status_code == 200, r.text
    refused(await gateway.http.get("/v1/api_keys", headers=bearer(own["key"])), 401, "invalid_api_key")
    assert (await gateway.http.get("/v1/orders", headers=gateway.auth)).status_code == 200


async def test_an_expiring_key_is_refused_once_expired(gateway: Gateway) -> None:
    key = await new_key(gateway, ["orders:read"], expires_in=60)
    assert key["expires"] == key["created"] + 60
    assert (await gateway.http.get("/v1/orders", headers=bearer(key["key"]))).status_code == 200
    shift_clock(gateway, 61)
    refused(await gateway.http.get("/v1/orders", headers=bearer(key["key"])), 401, "invalid_api_key")


async def test_another_apps_keys_are_out_of_reach(gateway: Gateway) -> None:
    _, other = await gateway.new_app("Other shop")
    theirs = await new_key(gateway, ["orders:read"], as_key=other)
    for r in (await gateway.http.post(f"/v1/api_keys/{theirs['id']}/roll", headers=gateway.auth, json={}),
              await gateway.http.delete(f"/v1/api_keys/{theirs['id']}", headers=gateway.auth)):
        refused(r, 404, "resource_missing")
    listed = (await gateway.http.get("/v1/api_keys", headers=gateway.auth)).json()["data"]
    assert theirs["id"] not in {k["id"] for k in listed}
    assert (await gateway.http.get("/v1/orders", headers=bearer(theirs["key"]))).status_code == 200


async def test_key_changes_are_audited_with_the_calling_key_as_actor(gateway: Gateway) -> None:
    made = await new_key(gateway, ["orders:read"])
    rolled = (await gateway.http.post(f"/v1/api_keys/{made['id']}/roll", headers=gateway.auth, json={})).json()
    assert (await gateway.http.delete(f"/v1/api_keys/{rolled['id']}", headers=gateway.auth)).status_code == 200
    async with gateway.rt.db.read() as session:
        caller = (await session.execute(select(ApiKey.id).where(ApiKey.app_id == gateway.app_id,
                                                                ApiKey.name == "default",
                                                                ApiKey.mode == "test"))).scalar_one()
    created, = await entries(gateway, "api_key.created")
    assert (created.target, created.actor, created.app_id) == (made["id"], caller, gateway.app_id)
    assert created.details["scopes"] == ["orders:read"]
    roll, = await entries(gateway, "api_key.rolled")
    assert (roll.target, roll.details["new_key"], roll.actor) == (made["id"], rolled["id"], caller)
    revoke, = await entries(gateway, "api_key.revoked")
    assert (revoke.target, revoke.actor) == (rolled["id"], caller)
    for entry in (created, roll, revoke):
        assert made["key"] not in str(entry.details) and rolled["key"] not in str(entry.details)


# -- lock-out and rate -----------------------------------------------------------------------------------------
async def test_repeated_failures_lock_the_address_out(gateway: Gateway) -> None:
    guess = "mg_test_" + "A" * 43
    for _ in range(19):
        refused(await gateway.http.get("/v1/orders", headers=bearer(guess)), 401, "invalid_api_key")
    assert (await gateway.http.get("/v1/orders", headers=gateway.auth)).status_code == 200      # 19: not yet
    stream = io.StringIO()
    configure_logging("INFO", json=True, stream=stream)
    try:
        refused(await gateway.http.get("/v1/orders", headers={"Authorization": "Bearer sk_wrong"}), 401,
                "invalid_api_key")                                                          # the 20th failure
        r = await gateway.http.get("/v1/orders", headers=gateway.auth)      # the 21st: even a good key
        refused(await gateway.http.get("/v1/orders", headers=bearer(guess)), 429, "too_many_authentication_failures")
    finally:
        configure_logging("INFO")
    refused(r, 429, "too_many_authentication_failures")
    assert int(r.headers["Retry-After"]) >= 300 and r.json()["error"]["retry_after"] >= 300
    warnings = [line for line in map(json.loads, stream.getvalue().splitlines()) if "locked out" in line["event"]]
    assert len(warnings) == 1 and warnings[0]["level"] == "warning", stream.getvalue()
    assert warnings[0]["client_ip"] == "127.0.0.1"
    for secret in (guess, "sk_wrong", gateway.key):
        assert secret not in stream.getvalue()
    lockout, = await entries(gateway, "auth.lockout")                       # one entry per lock-out
    assert lockout.details == {"client_ip": "127.0.0.1", "failures": 20, "window_seconds": 300}
    assert lockout.actor == "anonymous"
    assert len(await entries(gateway, "api_key.auth_failed")) == 20         # a locked-out guess reads nothing
    # another address is not affected
    transport = httpx.ASGITransport(app=gateway.app, client=("1.2.3.4", 123))
    async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as other:
        assert (await other.get("/v1/orders", headers=gateway.auth)).status_code == 200


async def test_a_missing_key_is_not_counted_as_a_guess(gateway: Gateway) -> None:
    for _ in range(25):
        refused(await gateway.http.get("/v1/orders"), 401, "missing_api_key")
    assert (await gateway.http.get("/v1/orders", headers=gateway.auth)).status_code == 200


async def test_a_lock_out_ends_when_its_window_has_passed(gateway: Gateway) -> None:
    with_settings(gateway, auth_failures_per_ip=3, auth_failure_window_seconds=1)
    for _ in range(3):
        refused(await gateway.http.get("/v1/orders", headers=bearer("mg_test_nope")), 401, "invalid_api_key")
    r = await gateway.http.get("/v1/orders", headers=gateway.auth)
    refused(r, 429, "too_many_authentication_failures")
    assert int(r.headers["Retry-After"]) >= 1
    await asyncio.sleep(2.2)
    assert (await gateway.http.get("/v1/orders", headers=gateway.auth)).status_code == 200


async def test_each_key_has_its_own_rate(gateway: Gateway) -> None:
    with_settings(gateway, api_requests_per_second_per_key=2)
    started = time.monotonic()
    answers = await asyncio.gather(*(gateway.http.get("/v1/orders", headers=gateway.auth) for _ in range(12)))
    statuses = [r.status_code for r in answers]
    assert set(statuses) <= {200, 429}, statuses
    if time.monotonic() - started < 1:                  # all within one second: only 2 may pass
        assert statuses.count(200) == 2, statuses
    assert 429 in statuses, statuses
    limited = next(r for r in answers if r.status_code == 429)
    assert refused(limited, 429, "rate_limited")["limit"] == "api_requests_per_second_per_key"
    assert int(limited.headers["Retry-After"]) >= 1
    with_settings(gateway, api_requests_per_second_per_key=100)
    other = await new_key(gateway, ["orders:read"])
    with_settings(gateway, api_requests_per_second_per_key=2)
    assert (await gateway.http.get("/v1/orders", headers=bearer(other["key"]))).status_code == 200
    # 0 turns the limit off
    with_settings(gateway, api_requests_per_second_per_key=0)
    answers = await asyncio.gather(*(gateway.http.get("/v1/orders", headers=gateway.auth) for _ in range(12)))
    assert [r.status_code for r in answers] == [200] * 12


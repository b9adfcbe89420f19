"""The Youshu safe-report simulator on the wire: credentials, the documented request signed as Youshu's code
sample signs it, the auth checks in order with their codes (and nothing recorded), the timestamp window on the
sandbox clock, nonce replay, the body shape, the normalised listing, and the faults."""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from minigate.providers.youshu import signing
from minigate.simulators import Sandbox
from minigate.simulators.sandbox import REGISTRY
from minigate.simulators.youshu import YoushuSimulator, create_credentials


class Source:
    """Signs safe-report calls with the sandbox credentials (or with whatever a test gets wrong)."""

    def __init__(self, sandbox: Sandbox, http: httpx.AsyncClient) -> None:
        self.sandbox, self.http = sandbox, http
        self.creds = sandbox.credentials("youshu")

    @property
    def sim(self) -> YoushuSimulator:
        return self.sandbox.simulator("youshu")  # type: ignore[no-any-return]

    def query(self, *, app_id: str | None = None, secret: str | None = None, timestamp: int | None = None,
              nonce: str | None = None, override: dict[str, str | None] | None = None) -> dict[str, str]:
        query = dict(signing.signed_query(app_id=app_id or self.creds["app_id"],
                                          app_secret=secret or self.creds["app_secret"],
                                          timestamp=timestamp if timestamp is not None else int(self.sim.clock.now()),
                                          nonce=nonce))
        for key, value in (override or {}).items():
            if value is None:
                query.pop(key, None)
            else:
                query[key] = value
        return query

    async def post(self, body: Any = None, *, content: bytes | None = None, **query: Any) -> dict[str, Any]:
        data = content if content is not None else json.dumps(body, ensure_ascii=False).encode()
        response = await self.http.post("/youshu/api/v1/safe-report", params=self.query(**query), content=data,
                                        headers={"Content-Type": "application/json"})
        assert response.status_code == 200, response.text
        answer: dict[str, Any] = response.json()
        assert set(answer) == {"code", "msg"}
        return answer

    async def events(self) -> list[dict[str, Any]]:
        response = await self.http.get("/youshu/_sandbox/events", params={"app_id": self.creds["app_id"]})
        return list(response.json()["events"])


def item(**fields: Any) -> dict[str, Any]:
    base = {"type": "add_to_cart", "from": "sr-sdk-wxapp", "tracking_id": "ev_1",
            "props": {"time": 1_764_000_000_000, "wx_user": {"local_id": "dk_1"}, "sku": "A1"}}
    return {k: v for k, v in (base | fields).items() if v is not None}


@pytest.fixture
async def s(tmp_path: Path) -> AsyncIterator[Source]:
    sandbox = Sandbox(tmp_path, time_scale=0.0)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=sandbox.app), base_url="http://sandbox") as http:
        yield Source(sandbox, http)
    await sandbox.aclose()


# ------------------------------------------------------------------ credentials
def test_registered_and_credentials_are_the_design_fields(tmp_path: Path) -> None:
    assert REGISTRY["youshu"] == "minigate.simulators.youshu:YoushuSimulator"
    creds = Sandbox(tmp_path).credentials("youshu")
    assert set(creds) == {"app_id", "app_secret"}
    assert re.fullmatch(r"bi[0-9a-f]{16}", creds["app_id"]) and re.fullmatch(r"[0-9a-f]{32}", creds["app_secret"])
    assert Sandbox(tmp_path).credentials("youshu") == creds          # kept in the state dir
    assert create_credentials() != create_credentials()


# ------------------------------------------------------------------ success
async def test_the_documented_request_is_accepted(s: Source) -> None:
    """Youshu's code sample: ``str`` = app_id=…&nonce=…&sign=sha256&timestamp=…, HMAC-SHA256 with app_secret, the
    URL ``?${str}&signature=…`` (its key order), a short hex nonce; here with one behaviour object as the body."""
    ts, nonce = int(s.sim.clock.now()), "407313d23c3f7"
    text = f"app_id={s.creds['app_id']}&nonce={nonce}&sign=sha256&timestamp={ts}"
    sig = hmac.new(s.creds["app_secret"].encode(), text.encode(), hashlib.sha256).hexdigest()
    response = await s.http.post(f"/youshu/api/v1/safe-report?{text}&signature={sig}",
                                 json=item(tracking_id=None, props={"time": 1, "wx_user": {"open_id": "o-1"}}))
    assert response.json() == {"code": 0, "msg": "success"}
    (event,) = await s.events()
    assert {k: v for k, v in event.items() if k not in ("received_at", "wire")} == {
        "name": "add_to_cart", "user_key": "o-1", "logged_in": False, "ts_ms": 1, "page": None, "event_id": None,
        "attributes": {}, "from": "sr-sdk-wxapp"}


async def test_a_batch_is_recorded_in_order_normalised_then_cleared(s: Source) -> None:
    page = item(type="browse_wxapp_page", tracking_id="ev_2",
                props={"time": 1_764_000_000_001, "page": "pages/index", "chan": {"chan_wxapp_scene": 1037},
                       "wx_user": {"user_id": "uk_9", "local_id": "dk_9"}, "is_newly_open": True})
    assert await s.post([item(), page]) == {"code": 0, "msg": "success"}
    events = await s.events()
    assert [(e["name"], e["user_key"], e["logged_in"], e["ts_ms"], e["page"], e["event_id"], e["attributes"])
            for e in events] == [
        ("add_to_cart", "dk_1", False, 1_764_000_000_000, None, "ev_1", {"sku": "A1"}),
        ("browse_wxapp_page", "uk_9", True, 1_764_000_000_001, "pages/index", "ev_2", {"is_newly_open": True})]
    assert events[1]["wire"] == page
    cleared = await s.http.delete("/youshu/_sandbox/events", params={"app_id": s.creds["app_id"]})
    assert cleared.json() == {"app_id": s.creds["app_id"], "deleted": 2}
    assert await s.events() == []


# ------------------------------------------------------------------ the auth checks, in order
@pytest.mark.parametrize("name", ["app_id", "nonce", "timestamp", "sign", "signature"])
async def test_every_query_parameter_is_required(s: Source, name: str) -> None:
    assert await s.post([item()], override={name: None}) == {"code": 40001, "msg": f"missing parameter: {name}"}
    assert await s.post([item()], override={name: ""}) == {"code": 40001, "msg": f"missing parameter: {name}"}
    assert await s.events() == []


@pytest.mark.parametrize(("query", "answer"), [
    ({"app_id": "bi0000000000000000"}, {"code": 40002, "msg": "unknown app_id"}),
    ({"secret": "0" * 32}, {"code": 40003, "msg": "signature mismatch"}),
    ({"override": {"sign": "md5"}}, {"code": 40007, "msg": "unsupported sign method: only sha256 is supported"}),
    ({"nonce": "n" * 33}, {"code": 40005, "msg": "invalid nonce: nonce longer than 32 characters"}),
    ({"timestamp": 1542951251}, {"code": 40004, "msg": "timestamp expired"}),
    ({"override": {"signature": "0" * 64}}, {"code": 40003, "msg": "signature mismatch"}),
])
async def test_auth_refusals(s: Source, query: dict[str, Any], answer: dict[str, Any]) -> None:
    assert await s.post([item()], **query) == answer
    assert await s.events() == []


async def test_unknown_app_id_is_checked_before_the_signature_and_the_window(s: Source) -> None:
    answer = await s.post([item()], app_id="bi1111111111111111", timestamp=1, override={"signature": "x"})
    assert answer["code"] == 40002


async def test_the_signature_is_case_insensitive_hex(s: Source) -> None:
    query = s.query()
    query["signature"] = query["signature"].upper()
    response = await s.http.post("/youshu/api/v1/safe-report", params=query, json=[item()])
    assert response.json()["code"] == 0


async def test_the_timestamp_window_follows_the_sandbox_clock(s: Source) -> None:
    now = int(s.sim.clock.now())
    assert (await s.post([item()], timestamp=now - 290))["code"] == 0
    assert (await s.post([item()], timestamp=now + 290))["code"] == 0
    assert (await s.post([item()], timestamp=now - 320))["code"] == 40004
    assert (await s.post([item()], timestamp=now + 320))["code"] == 40004
    s.sandbox.clock.advance(400)
    assert (await s.post([item()], timestamp=now))["code"] == 40004
    s.sim.timestamp_window_seconds = 600
    assert (await s.post([item()], timestamp=now))["code"] == 0
    s.sim.faults.add({"clock_skew_seconds": -1100})
    assert (await s.post([item()], timestamp=now))["code"] == 40004
    assert len(await s.events()) == 3


async def test_a_nonce_is_used_once_and_forged_requests_do_not_burn_it(s: Source) -> None:
    nonce = signing.new_nonce()
    assert (await s.post([item()], nonce=nonce, secret="f" * 32))["code"] == 40003
    assert (await s.post([item()], nonce=nonce))["code"] == 0
    assert await s.post([item()], nonce=nonce) == {"code": 40006, "msg": "nonce already used"}
    assert len(await s.events()) == 1


# ------------------------------------------------------------------ the body
@pytest.mark.parametrize(("body", "msg"), [
    (b"not json", "invalid body: body is not JSON"),
    (b"\xff", "invalid body: body is not JSON"),
    (b"[]", "invalid body: body must be a JSON object or a non-empty array"),
    (b'"text"', "invalid body: body must be a JSON object or a non-empty array"),
    (b'[1]', "invalid body: items[0] is not an object"),
])
async def test_the_body_must_be_behaviour_items(s: Source, body: bytes, msg: str) -> None:
    assert await s.post(content=body) == {"code": 40008, "msg": msg}


@pytest.mark.parametrize(("fields", "msg"), [
    ({"type": None}, "items[1].type must be a non-empty string"),
    ({"type": ""}, "items[1].type must be a non-empty string"),
    ({"from": None}, "items[1].from must be a non-empty string"),
    ({"from": 7}, "items[1].from must be a non-empty string"),
    ({"tracking_id": 7}, "items[1].tracking_id must be a string"),
    ({"props": None}, "items[1].props must be an object"),
    ({"props": {"wx_user": {"local_id": "d"}}}, "items[1].props.time must be epoch milliseconds"),
    ({"props": {"time": "1764000000000", "wx_user": {"local_id": "d"}}}, "items[1].props.time must be epoch"),
    ({"props": {"time": 1}}, "items[1].props.wx_user must be an object"),
    ({"props": {"time": 1, "wx_user": {"app_id": "wx1"}}}, "items[1].props.wx_user needs user_id, open_id"),
    ({"props": {"time": 1, "wx_user": {"local_id": ""}}}, "items[1].props.wx_user needs user_id, open_id"),
    ({"props": {"time": 1, "wx_user": {"local_id": "d"}, "page": 5}}, "items[1].props.page must be a string"),
])
async def test_a_bad_item_refuses_the_whole_batch(s: Source, fields: dict[str, Any], msg: str) -> None:
    answer = await s.post([item(), item(**fields)])          # None: the field is left out
    assert answer["code"] == 40008 and answer["msg"].startswith(f"invalid body: {msg}")
    assert await s.events() == []


async def test_size_limits(s: Source) -> None:
    s.sim.max_items = 2
    assert (await s.post([item()] * 3)) == {"code": 40009, "msg": "body too large: at most 2 items per request"}
    assert (await s.post([item()] * 2))["code"] == 0
    s.sim.max_body_bytes = 50
    assert (await s.post([item()]))["code"] == 40009
    assert len(await s.events()) == 2


async def test_the_event_listing_needs_a_known_app_id(s: Source) -> None:
    assert (await s.http.get("/youshu/_sandbox/events")).json() == {"code": 40001, "msg": "missing parameter: app_id"}
    unknown = await s.http.get("/youshu/_sandbox/events", params={"app_id": "bi0000000000000000"})
    assert unknown.json()["code"] == 40002


# ------------------------------------------------------------------ faults
@pytest.mark.parametrize(("kind", "status"), [("http_500", 500), ("http_429", 429), ("timeout", 504),
                                              ("bad_signature", 500)])
async def test_faults_answer_without_recording(s: Source, kind: str, status: int) -> None:
    assert (await s.http.post("/youshu/_sandbox/faults", json={"next_call": kind, "seconds": 0})).status_code == 200
    response = await s.http.post("/youshu/api/v1/safe-report", params=s.query(), json=[item()])
    assert response.status_code == status
    assert await s.events() == []
    assert (await s.post([item()]))["code"] == 0
    assert len(await s.events()) == 1


async def test_a_fault_comes_after_the_auth_checks(s: Source) -> None:
    s.sim.faults.add({"next_call": "http_500"})
    assert (await s.post([item()], secret="0" * 32))["code"] == 40003
    response = await s.http.post("/youshu/api/v1/safe-report", params=s.query(), json=[item()])
    assert response.status_code == 500


async def test_charged_then_timeout_records_and_loses_the_answer(s: Source) -> None:
    s.sim.faults.add({"next_call": "charged_then_timeout", "seconds": 0})
    response = await s.http.post("/youshu/api/v1/safe-report", params=s.query(), json=[item()])
    assert response.status_code == 504
    assert [e["event_id"] for e in await s.events()] == ["ev_1"]

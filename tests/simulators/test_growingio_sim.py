"""The GrowingIO collect simulator on the wire: credentials, the official PHP SDK's request accepted, every
refusal in order with its status and JSON body (and nothing recorded), the normalised event listing, the sandbox
clock, and the faults."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from minigate.simulators import Sandbox
from minigate.simulators.growingio import GrowingIOSimulator, create_credentials
from minigate.simulators.sandbox import REGISTRY


class Project:
    """Posts to the simulated collector with the sandbox credentials (or with whatever a test breaks)."""

    def __init__(self, sandbox: Sandbox, http: httpx.AsyncClient) -> None:
        self.sandbox, self.http = sandbox, http
        self.creds = sandbox.credentials("growingio")

    @property
    def sim(self) -> GrowingIOSimulator:
        return self.sandbox.simulator("growingio")  # type: ignore[no-any-return]

    def event(self, **fields: Any) -> dict[str, Any]:
        base = {"eventType": "CUSTOM", "eventName": "add_to_cart", "deviceId": "dk_1", "timestamp": 1_764_000_000_000,
                "dataSourceId": self.creds["data_source_id"], "attributes": {"sku": "A1", "mg_event_id": "ev_1"}}
        return {k: v for k, v in (base | fields).items() if v is not None}

    async def post(self, body: Any = None, *, content: bytes | None = None, account_id: str | None = None,
                   stm: str | None = "1764000000123", content_type: str = "application/json") -> httpx.Response:
        data = content if content is not None else json.dumps(body, ensure_ascii=False).encode()
        params = {"stm": stm} if stm is not None else {}
        return await self.http.post(f"/growingio/v3/projects/{account_id or self.creds['account_id']}/collect",
                                    params=params, content=data, headers={"Content-Type": content_type})

    async def events(self) -> list[dict[str, Any]]:
        response = await self.http.get("/growingio/_sandbox/events", params={"account_id": self.creds["account_id"]})
        assert response.status_code == 200
        return list(response.json()["events"])


@pytest.fixture
async def p(tmp_path: Path) -> AsyncIterator[Project]:
    sandbox = Sandbox(tmp_path, time_scale=0.0)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=sandbox.app), base_url="http://sandbox") as http:
        yield Project(sandbox, http)
    await sandbox.aclose()


# ------------------------------------------------------------------ credentials
def test_registered_and_credentials_are_the_design_fields(tmp_path: Path) -> None:
    assert REGISTRY["growingio"] == "minigate.simulators.growingio:GrowingIOSimulator"
    creds = Sandbox(tmp_path).credentials("growingio")
    assert set(creds) == {"account_id", "data_source_id"}
    assert re.fullmatch(r"[0-9a-f]{32}", creds["account_id"]) and re.fullmatch(r"[0-9a-f]{16}",
                                                                                creds["data_source_id"])
    assert Sandbox(tmp_path).credentials("growingio") == creds          # kept in the state dir
    assert create_credentials() != create_credentials()


# ------------------------------------------------------------------ success
async def test_the_php_sdks_request_is_accepted_and_listed(p: Project) -> None:
    # growingio-php-sdk: json_encode of CustomEvent (timestamp, eventName, userId, attributes, eventType,
    # dataSourceId, resourceItem), Content-Type application/json, ?stm=<ms>
    php = {"timestamp": 1764000000456, "eventName": "order_paid", "userId": "u-1001",
           "attributes": {"amount": "12.34"}, "eventType": "CUSTOM", "dataSourceId": p.creds["data_source_id"],
           "resourceItem": {"id": "A1", "key": "sku"}}
    response = await p.post([php])
    assert response.status_code == 200 and response.json() == {}
    events = await p.events()
    assert len(events) == 1
    assert {k: v for k, v in events[0].items() if k not in ("received_at", "wire")} == {
        "name": "order_paid", "user_key": "u-1001", "logged_in": True, "ts_ms": 1764000000456, "page": None,
        "event_id": None, "attributes": {"amount": "12.34"}}
    assert events[0]["wire"] == php


async def test_a_batch_is_recorded_in_order_normalised_then_cleared(p: Project) -> None:
    batch = [p.event(), p.event(eventName="mg_pageview", deviceId=None, userId="uk_9", timestamp=1_764_000_000_001,
                                attributes={"page": "/pages/index", "mg_event_id": "ev_2", "from_share": "true"})]
    assert (await p.post(batch, content_type="application/json; charset=utf-8")).status_code == 200
    events = await p.events()
    assert [(e["name"], e["user_key"], e["logged_in"], e["ts_ms"], e["page"], e["event_id"], e["attributes"])
            for e in events] == [
        ("add_to_cart", "dk_1", False, 1_764_000_000_000, None, "ev_1", {"sku": "A1"}),
        ("mg_pageview", "uk_9", True, 1_764_000_000_001, "/pages/index", "ev_2", {"from_share": "true"})]
    cleared = await p.http.delete("/growingio/_sandbox/events", params={"account_id": p.creds["account_id"]})
    assert cleared.json() == {"account_id": p.creds["account_id"], "deleted": 2}
    assert await p.events() == []


async def test_received_at_is_the_sandbox_clock(p: Project) -> None:
    p.sandbox.clock.advance(3600)
    await p.post([p.event()])
    (event,) = await p.events()
    assert abs(event["received_at"] - p.sandbox.clock.now()) < 5


# ------------------------------------------------------------------ refusals
async def test_an_unknown_project_is_404(p: Project) -> None:
    response = await p.post([p.event()], account_id="f" * 32)
    assert response.status_code == 404
    assert response.json() == {"code": 404, "error": "project_not_found", "message": f"project {'f' * 32} does not exist"}
    assert await p.events() == []


@pytest.mark.parametrize(("kwargs", "status", "error", "message"), [
    ({"stm": None}, 400, "invalid_request", "stm must be the send time in epoch milliseconds"),
    ({"stm": "12.5"}, 400, "invalid_request", "stm must be the send time in epoch milliseconds"),
    ({"content_type": "text/plain"}, 400, "invalid_request", "content type text/plain is not application/json"),
    ({"content_type": "application/protobuf"}, 400, "invalid_request",
     "content type application/protobuf is not application/json"),
    ({"content": b"not json"}, 400, "invalid_json", "body is not JSON"),
    ({"content": b"\xff\xfe"}, 400, "invalid_json", "body is not JSON"),
    ({"content": b"{}"}, 400, "invalid_request", "body must be a non-empty JSON array of events"),
    ({"content": b"[]"}, 400, "invalid_request", "body must be a non-empty JSON array of events"),
])
async def test_request_refusals(p: Project, kwargs: dict[str, Any], status: int, error: str, message: str) -> None:
    body = kwargs.pop("content", None)
    response = await p.post([p.event()], content=body, **kwargs)
    assert response.status_code == status
    assert response.json() == {"code": status, "error": error, "message": message}
    assert await p.events() == []


async def test_size_limits(p: Project) -> None:
    p.sim.max_events = 2
    too_many = await p.post([p.event()] * 3)
    assert too_many.status_code == 400 and too_many.json()["error"] == "too_many_events"
    assert (await p.post([p.event()] * 2)).status_code == 200
    p.sim.max_body_bytes = 100
    big = await p.post([p.event()])
    assert big.status_code == 413 and big.json()["error"] == "payload_too_large"
    assert len(await p.events()) == 2


@pytest.mark.parametrize(("fields", "message"), [
    ({"eventType": "PAGE"}, "events[1].eventType must be CUSTOM"),
    ({"eventType": None}, "events[1].eventType must be CUSTOM"),
    ({"eventName": "1st_visit"}, "events[1].eventName must be letters, digits and _, not starting with a digit, "
                                 "at most 100 characters"),
    ({"eventName": "add-to-cart"}, "events[1].eventName must be letters"),
    ({"eventName": "x" * 101}, "events[1].eventName must be letters"),
    ({"eventName": 5}, "events[1].eventName must be letters"),
    ({"deviceId": None}, "events[1] needs userId or deviceId"),
    ({"deviceId": ""}, "events[1] needs userId or deviceId"),
    ({"userId": 42}, "events[1].userId must be a string of at most 1000 characters"),
    ({"deviceId": "d" * 1001}, "events[1].deviceId must be a string of at most 1000 characters"),
    ({"timestamp": "1764000000000"}, "events[1].timestamp must be epoch milliseconds"),
    ({"timestamp": True}, "events[1].timestamp must be epoch milliseconds"),
    ({"timestamp": 0}, "events[1].timestamp must be epoch milliseconds"),
    ({"dataSourceId": "0000000000000000"}, "events[1].dataSourceId is not a data source of this project"),
    ({"dataSourceId": None}, "events[1].dataSourceId is not a data source of this project"),
    ({"attributes": ["sku"]}, "events[1].attributes must be an object"),
    ({"attributes": {"$sku": "A1"}}, "events[1].attributes key '$sku' must be letters"),
    ({"attributes": {"qty": 2}}, "events[1].attributes.qty must be a string"),
    ({"attributes": {"note": "x" * 1001}}, "events[1].attributes.note is longer than 1000 characters"),
    ({"resourceItem": {"id": 1, "key": "sku"}}, "events[1].resourceItem must be"),
])
async def test_a_bad_event_refuses_the_whole_batch(p: Project, fields: dict[str, Any], message: str) -> None:
    response = await p.post([p.event(), p.event(**fields)])
    assert response.status_code == 400
    body = response.json()
    assert body["code"] == 400 and body["error"] == "invalid_event" and body["message"].startswith(message)
    assert await p.events() == []


async def test_a_non_object_event_is_refused(p: Project) -> None:
    response = await p.post([p.event(), "add_to_cart"])
    assert response.status_code == 400 and response.json()["message"] == "events[1] is not an object"


async def test_the_event_listing_needs_a_known_account(p: Project) -> None:
    missing = await p.http.get("/growingio/_sandbox/events")
    assert missing.status_code == 400 and missing.json()["message"] == "account_id is required"
    unknown = await p.http.delete("/growingio/_sandbox/events", params={"account_id": "0" * 32})
    assert unknown.status_code == 404 and unknown.json()["error"] == "project_not_found"


# ------------------------------------------------------------------ faults
@pytest.mark.parametrize(("kind", "status"), [("http_500", 500), ("http_429", 429), ("timeout", 504),
                                              ("bad_signature", 500)])
async def test_faults_answer_without_recording(p: Project, kind: str, status: int) -> None:
    added = await p.http.post("/growingio/_sandbox/faults", json={"next_call": kind, "seconds": 0})
    assert added.status_code == 200
    assert (await p.post([p.event()])).status_code == status
    assert await p.events() == []
    assert (await p.post([p.event()])).status_code == 200          # only the next call
    assert len(await p.events()) == 1


async def test_charged_then_timeout_records_and_loses_the_answer(p: Project) -> None:
    p.sim.faults.add({"next_call": "charged_then_timeout", "seconds": 0})
    response = await p.post([p.event()])
    assert response.status_code == 504
    assert [e["event_id"] for e in await p.events()] == ["ev_1"]


async def test_a_fault_waits_for_its_path_and_the_project_check_comes_first(p: Project) -> None:
    p.sim.faults.add({"next_call": "http_500", "path": "/v3/projects/"})
    assert (await p.post([p.event()], account_id="e" * 32)).status_code == 404
    assert (await p.post([p.event()])).status_code == 500

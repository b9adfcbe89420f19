"""The analytics forwarding contract: every forwarder in ``registry.analytics_forwarder_specs()``, against its
simulator through the in-process sandbox, behaves the same way.

A batch arrives whole and in order, with the same event ids, names (as the forwarder's ``wire_name`` says),
user keys, login flags, timestamps, pages and properties; an empty batch sends nothing; a batch over
``max_batch`` is refused before sending; wrong credentials are ``auth_failed`` and nothing is recorded; a 429 is
``rate_limited``; a 500 or a timeout is an unknown outcome and the re-sent batch lands once; a lost answer after
the provider stored the batch is an unknown outcome and the re-send delivers at least once, with the same event
ids; no secret travels except where the protocol needs it; configurations hide their secrets. A new forwarder
passes this file before it is registered.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import BaseModel, SecretStr

from minigate.domain.results import StandardCode
from minigate.errors import OutcomeUnknown
from minigate.providers import registry
from minigate.providers.bases.analytics import AnalyticsForwarder, ForwardEvent
from minigate.simulators.sandbox import Sandbox

#: each forwarder's secret configuration fields (a field turning plain text would fail the secrecy cases)
SECRET_FIELDS: dict[str, set[str]] = {"growingio": set(), "youshu": {"app_secret"}}
#: the credential a wrong value of which must be refused, and such a value (same shape as the real one)
WRONG: dict[str, tuple[str, Callable[[str], str]]] = {
    "growingio": ("account_id", lambda value: "f" * len(value) if value != "f" * len(value) else "e" * len(value)),
    "youshu": ("app_secret", lambda value: "0" * len(value) if value != "0" * len(value) else "1" * len(value)),
}
#: the query field the simulator's ``/_sandbox/events`` listing takes, from the configuration
LISTING: dict[str, str] = {"growingio": "account_id", "youshu": "app_id"}


class Recording(httpx.AsyncBaseTransport):
    """The sandbox's ASGI transport, keeping every request the forwarder sends."""

    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self.inner = inner
        self.requests: list[httpx.Request] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return await self.inner.handle_async_request(request)


@dataclass
class Harness:
    name: str
    sandbox: Sandbox
    forwarder: AnalyticsForwarder
    config: dict[str, Any]
    transport: Recording
    client: httpx.AsyncClient                 # what the forwarders send through (recorded)
    control: httpx.AsyncClient                # the sandbox's control routes (not recorded)

    @property
    def sim(self) -> Any:
        return self.sandbox.simulator(self.name)

    def build(self, **overrides: Any) -> AnalyticsForwarder:
        spec = registry.analytics_forwarder_specs()[self.name]
        forwarder: AnalyticsForwarder = spec.build(self.config | overrides, self.client)
        return forwarder

    async def recorded(self) -> list[dict[str, Any]]:
        key = LISTING[self.name]
        response = await self.control.get(f"/{self.name}/_sandbox/events", params={key: self.config[key]})
        assert response.status_code == 200, response.text
        return list(response.json()["events"])

    def fault(self, kind: str) -> None:
        assert self.sim.faults.add({"next_call": kind, "seconds": 0}) is None


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def expected(h: Harness, event: ForwardEvent) -> dict[str, Any]:
    wire_name = getattr(h.forwarder, "wire_name")  # noqa: B009 - every forwarder names its events on the wire
    return {"name": wire_name(event), "user_key": event.user_key, "logged_in": event.logged_in, "ts_ms": event.ts_ms,
            "page": (event.page or "").lstrip("/") or None, "event_id": event.event_id,
            "attributes": {k: _text(v) for k, v in event.properties.items()}}


def seen(record: dict[str, Any]) -> dict[str, Any]:
    return {"name": record["name"], "user_key": record["user_key"], "logged_in": record["logged_in"],
            "ts_ms": record["ts_ms"], "page": (record["page"] or "").lstrip("/") or None,
            "event_id": record["event_id"], "attributes": {k: _text(v) for k, v in record["attributes"].items()}}


def batch() -> list[ForwardEvent]:
    tag = secrets.token_hex(4)
    return [
        ForwardEvent(event_id=f"ev_{tag}_1", name="$pageview", kind="page_view", user_key=f"dk_{tag}",
                     logged_in=False, ts_ms=1_764_000_000_000, page="/pages/goods/detail", platform="wechat",
                     properties={"sku": "A1", "qty": 2, "price": 12.5, "from_share": True}),
        ForwardEvent(event_id=f"ev_{tag}_2", name="add_to_cart", kind="event", user_key=f"uk_{tag}", logged_in=True,
                     ts_ms=1_764_000_000_500, page="pages/goods/detail", platform="wechat",
                     properties={"sku": "A1", "qty": 1}),
        ForwardEvent(event_id=f"ev_{tag}_3", name="$payment_verified", kind="server", user_key=f"uk_{tag}",
                     logged_in=True, ts_ms=1_764_000_001_000, platform="server",
                     properties={"order_id": "ord_1", "amount_fen": 1234}),
    ]


@pytest.fixture(params=sorted(registry.analytics_forwarder_specs()))
async def h(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Harness]:
    name = str(request.param)
    sandbox = Sandbox(tmp_path, time_scale=0.0001)
    transport = Recording(httpx.ASGITransport(app=sandbox.app))
    client = httpx.AsyncClient(transport=transport, base_url="http://sandbox")
    control = httpx.AsyncClient(transport=httpx.ASGITransport(app=sandbox.app), base_url="http://sandbox")
    spec = registry.analytics_forwarder_specs()[name]
    config = spec.sandbox(registry.SandboxContext(credentials=sandbox.credentials, base_url="http://sandbox",
                                                  browser_url="http://sandbox"))
    yield Harness(name, sandbox, spec.build(config, client), config, transport, client, control)
    await sandbox.aclose()
    await client.aclose()
    await control.aclose()


def test_every_forwarder_is_covered() -> None:
    assert set(registry.analytics_forwarder_specs()) == set(SECRET_FIELDS) == set(WRONG) == set(LISTING)


async def test_a_batch_arrives_whole_and_in_order(h: Harness) -> None:
    events = batch()
    result = await h.forwarder.forward(events)
    assert result.ok and result.value == len(events), result
    assert [seen(r) for r in await h.recorded()] == [expected(h, e) for e in events]
    assert len(h.transport.requests) == 1


async def test_an_empty_batch_sends_nothing(h: Harness) -> None:
    result = await h.forwarder.forward([])
    assert result.ok and result.value == 0
    assert h.transport.requests == [] and await h.recorded() == []


async def test_a_batch_over_max_batch_is_refused_before_sending(h: Harness) -> None:
    events = batch() * (h.forwarder.max_batch // 3 + 1)
    assert len(events) > h.forwarder.max_batch
    with pytest.raises(ValueError):
        await h.forwarder.forward(events)
    assert h.transport.requests == []
    full = await h.forwarder.forward(events[:h.forwarder.max_batch])
    assert full.ok and full.value == h.forwarder.max_batch


async def test_wrong_credentials_are_auth_failed_and_nothing_is_recorded(h: Harness) -> None:
    """GrowingIO has no secret: a wrong account id answers 404 (no such project), the closest to a refused key."""
    field, wrong = WRONG[h.name]
    bad = h.build(**{field: wrong(str(h.config[field]))})
    result = await bad.forward(batch())
    assert not result.ok and result.code is StandardCode.AUTH_FAILED, result
    assert result.provider_code and result.message
    assert await h.recorded() == []


async def test_a_429_is_rate_limited_and_the_resend_lands(h: Harness) -> None:
    events = batch()
    h.fault("http_429")
    result = await h.forwarder.forward(events)
    assert not result.ok and result.code is StandardCode.RATE_LIMITED, result
    assert await h.recorded() == []
    assert (await h.forwarder.forward(events)).ok
    assert [r["event_id"] for r in await h.recorded()] == [e.event_id for e in events]


@pytest.mark.parametrize("kind", ["http_500", "timeout"])
async def test_a_500_or_a_timeout_is_unknown_and_the_resend_lands_once(h: Harness, kind: str) -> None:
    events = batch()
    h.fault(kind)
    with pytest.raises(OutcomeUnknown):
        await h.forwarder.forward(events)
    assert await h.recorded() == []
    result = await h.forwarder.forward(events)
    assert result.ok and result.value == len(events)
    assert [seen(r) for r in await h.recorded()] == [expected(h, e) for e in events]


async def test_a_lost_answer_is_unknown_and_the_resend_delivers_at_least_once(h: Harness) -> None:
    events = batch()
    h.fault("charged_then_timeout")
    with pytest.raises(OutcomeUnknown):
        await h.forwarder.forward(events)
    assert (await h.forwarder.forward(events)).ok
    ids = [r["event_id"] for r in await h.recorded()]
    # every event arrived, and every copy carries its event id, so the destination's data can be deduplicated
    assert ids[:len(events)] == [e.event_id for e in events]
    assert len(ids) >= len(events) and set(ids) == {e.event_id for e in events}


async def test_no_secret_travels(h: Harness) -> None:
    await h.forwarder.forward(batch())
    (request,) = h.transport.requests
    config = h.forwarder.config
    assert isinstance(config, BaseModel)
    secret_values = [getattr(config, f).get_secret_value() for f in SECRET_FIELDS[h.name]]
    on_the_wire = str(request.url) + request.content.decode() + json.dumps(dict(request.headers))
    for value in secret_values:
        assert value and value not in on_the_wire
    if h.name == "youshu":     # the protocol's only credential on the wire is the signature
        assert set(request.url.params) == {"app_id", "nonce", "timestamp", "sign", "signature"}


def test_configurations_hide_their_secrets(h: Harness) -> None:
    config = h.forwarder.config
    assert isinstance(config, BaseModel)
    secret = {name for name, field in type(config).model_fields.items() if field.annotation is SecretStr}
    assert secret == SECRET_FIELDS[h.name]
    for name in secret:
        value = getattr(config, name).get_secret_value()
        assert value and value not in repr(config) and value not in str(config)
        assert value not in repr(h.forwarder) and value not in json.dumps(config.model_dump(mode="json"))

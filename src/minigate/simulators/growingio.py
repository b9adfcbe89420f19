"""GrowingIO collect API simulator, an ASGI app (service-protocols.md §3.2).

``POST /v3/projects/{account_id}/collect?stm=<epoch ms>`` with a JSON array of events, as GrowingIO's PHP server
SDK sends it. GrowingIO has no signature, key, timestamp window or nonce, so the simulator checks, in this order:

1. the project exists (the account id of ``minigate sandbox credentials growingio``) -> **404**;
2. the next-call fault, if any;
3. ``stm`` is an integer -> 400;
4. ``Content-Type`` is ``application/json`` -> 400 (the Go SDK's ``application/protobuf`` is not decoded here);
5. the body is at most :attr:`~GrowingIOSimulator.max_body_bytes` -> **413**; it is a JSON array of 1 to
   :attr:`~GrowingIOSimulator.max_events` objects -> 400;
6. every event: ``eventType`` ``CUSTOM``; ``eventName`` a GrowingIO key (letters, digits, ``_``, not starting with
   a digit, at most 100 characters); ``userId`` or ``deviceId`` a non-empty string; ``timestamp`` a positive
   integer (ms); ``dataSourceId`` the project's data source; ``attributes`` (optional) an object of GrowingIO keys
   to strings of at most 1000 characters; ``resourceItem`` (optional) ``{"id", "key"}`` strings -> 400.

A refusal refuses the whole batch (nothing is recorded) and answers ``{"code": <status>, "error": <kind>,
"message": <which event and field>}``. Success answers **200** ``{}`` (the SDKs ignore the body) and records every
event. Not confirmed, and so attributes: the statuses and error bodies (GrowingIO's SDKs never read them), the
batch limit (500, the Go SDK's batch size) and the body limit (2 MiB), and that the collector refuses a batch
whose events break the key rule rather than dropping those events.

Control routes: ``GET /_sandbox/events?account_id=`` lists the accepted events, oldest first, normalised as
``{"name", "user_key", "logged_in", "ts_ms", "page", "event_id", "attributes", "received_at", "wire"}`` (``page``
and ``event_id`` are read from the ``page`` and ``mg_event_id`` attributes minigate sends and are removed from
``attributes``; ``wire`` is the event as received); ``DELETE`` with the same query clears them.
``/_sandbox/faults``: ``timeout`` (waits ``seconds``, then 504), ``http_500``, ``http_429``, ``bad_signature``
(GrowingIO signs nothing: a 500), ``charged_then_timeout`` (the events are recorded, then 504).
"""

from __future__ import annotations

import asyncio
import hmac
import json
import secrets
from collections.abc import Mapping
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from minigate.providers.growingio.config import (
    DEFAULT_EVENT_ID_ATTRIBUTE,
    DEFAULT_PAGE_ATTRIBUTE,
    KEY_PATTERN,
    MAX_VALUE_LENGTH,
)
from minigate.simulators._core import Clock, CredentialStore, Deliverer, Faults, fault_routes, json_response

__all__ = ["MAX_BODY_BYTES", "MAX_EVENTS", "GrowingIOSimulator", "create_credentials"]

CREDENTIAL_FIELDS = ("account_id", "data_source_id")
COLLECT = "/v3/projects/{account_id}/collect"
#: the Go server SDK's default batch size
MAX_EVENTS = 500
MAX_BODY_BYTES = 2 * 1024 * 1024
#: the longest ``userId``/``deviceId`` taken (not published)
MAX_ID_LENGTH = 1000


def create_credentials() -> dict[str, Any]:
    """A project: a 32-character account id (项目 ID) and a 16-character data source id."""
    return {"account_id": secrets.token_hex(16), "data_source_id": secrets.token_hex(8)}


class _Refusal(Exception):
    def __init__(self, status: int, error: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.error = error
        self.message = message


def _refuse(refusal: _Refusal) -> Response:
    return json_response({"code": refusal.status, "error": refusal.error, "message": refusal.message},
                         refusal.status)


def _invalid(message: str) -> _Refusal:
    return _Refusal(400, "invalid_event", message)


class GrowingIOSimulator:
    """One simulated GrowingIO project (account id + data source id). ``app`` is the ASGI app."""

    name = "growingio"

    def __init__(self, store: CredentialStore, *, clock: Clock, faults: Faults | None = None,
                 deliverer: Deliverer | None = None) -> None:
        self.account: dict[str, Any] = store.load_or_create(self.name, create_credentials)
        self.clock = clock
        self.faults = faults or Faults()
        self.max_events = MAX_EVENTS
        self.max_body_bytes = MAX_BODY_BYTES
        #: the attributes the normalised view reads ``page`` and ``event_id`` from
        self.page_attribute = DEFAULT_PAGE_ATTRIBUTE
        self.event_id_attribute = DEFAULT_EVENT_ID_ATTRIBUTE
        self.events: list[dict[str, Any]] = []
        self.app = Starlette(routes=[
            *fault_routes(self.faults),
            Route("/_sandbox/events", self.events_endpoint, methods=["GET", "DELETE"]),
            Route(COLLECT, self.collect, methods=["POST"]),
        ])

    def now(self) -> float:
        """The simulator's clock: the shared clock plus the ``clock_skew_seconds`` fault."""
        return self.clock.now() + self.faults.clock_skew_seconds

    def credentials(self) -> dict[str, Any]:
        return {k: self.account[k] for k in CREDENTIAL_FIELDS}

    def _project(self, account_id: str) -> bool:
        return hmac.compare_digest(account_id.encode(), str(self.account["account_id"]).encode())

    # ------------------------------------------------------------------ the collector
    async def collect(self, request: Request) -> Response:
        account_id = request.path_params["account_id"]
        if not self._project(account_id):
            return _refuse(_Refusal(404, "project_not_found", f"project {account_id[:64]} does not exist"))
        fault = self.faults.take_call(COLLECT.format(account_id=account_id))
        if fault is not None and fault.kind != "charged_then_timeout":
            if fault.kind == "timeout":
                await asyncio.sleep(fault.seconds)
            status = {"timeout": 504, "http_429": 429}.get(fault.kind, 500)
            return Response(b"<html><body>upstream error</body></html>", status, media_type="text/html")
        try:
            events = self._batch(request, await request.body())
        except _Refusal as refusal:
            return _refuse(refusal)
        self.events.extend(events)
        if fault is not None:                       # charged_then_timeout: recorded, then the answer is lost
            await asyncio.sleep(fault.seconds)
            return Response(b"<html><body>Gateway Timeout</body></html>", 504, media_type="text/html")
        return json_response({})

    def _batch(self, request: Request, body: bytes) -> list[dict[str, Any]]:
        stm = request.query_params.get("stm", "")
        if not stm.isdigit():
            raise _Refusal(400, "invalid_request", "stm must be the send time in epoch milliseconds")
        content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if content_type != "application/json":
            raise _Refusal(400, "invalid_request", f"content type {content_type or 'none'} is not application/json")
        if len(body) > self.max_body_bytes:
            raise _Refusal(413, "payload_too_large", f"body larger than {self.max_body_bytes} bytes")
        try:
            items = json.loads(body)
        except (UnicodeDecodeError, ValueError):
            raise _Refusal(400, "invalid_json", "body is not JSON") from None
        if not isinstance(items, list) or not items:
            raise _Refusal(400, "invalid_request", "body must be a non-empty JSON array of events")
        if len(items) > self.max_events:
            raise _Refusal(400, "too_many_events", f"at most {self.max_events} events per request")
        now = self.now()
        return [self._event(index, item, now) for index, item in enumerate(items)]

    def _event(self, index: int, item: Any, now: float) -> dict[str, Any]:
        where = f"events[{index}]"
        if not isinstance(item, dict):
            raise _invalid(f"{where} is not an object")
        if item.get("eventType") != "CUSTOM":
            raise _invalid(f"{where}.eventType must be CUSTOM")
        name = item.get("eventName")
        if not isinstance(name, str) or not KEY_PATTERN.match(name):
            raise _invalid(f"{where}.eventName must be letters, digits and _, not starting with a digit, "
                           "at most 100 characters")
        user_id, device_id = item.get("userId"), item.get("deviceId")
        for field, value in (("userId", user_id), ("deviceId", device_id)):
            if value is not None and (not isinstance(value, str) or len(value) > MAX_ID_LENGTH):
                raise _invalid(f"{where}.{field} must be a string of at most {MAX_ID_LENGTH} characters")
        if not user_id and not device_id:
            raise _invalid(f"{where} needs userId or deviceId")
        ts = item.get("timestamp")
        if isinstance(ts, bool) or not isinstance(ts, int) or ts <= 0:
            raise _invalid(f"{where}.timestamp must be epoch milliseconds")
        source = item.get("dataSourceId")
        if not isinstance(source, str) or not hmac.compare_digest(source.encode(),
                                                                  str(self.account["data_source_id"]).encode()):
            raise _invalid(f"{where}.dataSourceId is not a data source of this project")
        attributes = self._attributes(where, item.get("attributes"))
        resource = item.get("resourceItem")
        if resource is not None and not (isinstance(resource, dict) and isinstance(resource.get("id"), str)
                                         and isinstance(resource.get("key"), str)):
            raise _invalid(f"{where}.resourceItem must be {{\"id\": string, \"key\": string}}")
        page = attributes.pop(self.page_attribute, None)
        event_id = attributes.pop(self.event_id_attribute, None)
        return {"name": name, "user_key": user_id or device_id, "logged_in": bool(user_id), "ts_ms": ts,
                "page": page, "event_id": event_id, "attributes": attributes, "received_at": now, "wire": item}

    @staticmethod
    def _attributes(where: str, raw: Any) -> dict[str, str]:
        if raw is None:
            return {}
        if not isinstance(raw, dict):
            raise _invalid(f"{where}.attributes must be an object")
        for key, value in raw.items():
            if not KEY_PATTERN.match(key):
                raise _invalid(f"{where}.attributes key {key[:100]!r} must be letters, digits and _, not starting "
                               "with a digit, at most 100 characters")
            if not isinstance(value, str):
                raise _invalid(f"{where}.attributes.{key} must be a string")
            if len(value) > MAX_VALUE_LENGTH:
                raise _invalid(f"{where}.attributes.{key} is longer than {MAX_VALUE_LENGTH} characters")
        return dict(raw)

    # ------------------------------------------------------------------ control routes
    def recorded(self, account_id: str | None = None) -> list[dict[str, Any]]:
        """The accepted events (of ``account_id``, when given), oldest first."""
        if account_id is not None and not self._project(account_id):
            return []
        return list(self.events)

    async def events_endpoint(self, request: Request) -> Response:
        params: Mapping[str, str] = request.query_params
        account_id = params.get("account_id")
        if not account_id:
            return json_response({"code": 400, "error": "invalid_request", "message": "account_id is required"},
                                 400)
        if not self._project(account_id):
            return _refuse(_Refusal(404, "project_not_found", f"project {account_id[:64]} does not exist"))
        if request.method == "DELETE":
            count = len(self.events)
            self.events.clear()
            return json_response({"account_id": account_id, "deleted": count})
        return json_response({"account_id": account_id, "events": self.events})

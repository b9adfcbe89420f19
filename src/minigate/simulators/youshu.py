"""Youshu (腾讯有数) safe-report simulator, an ASGI app (service-protocols.md §3.3).

``POST /api/v1/safe-report?app_id=&nonce=&timestamp=&sign=sha256&signature=`` with a JSON object or array of
``{"type", "from", "props", "tracking_id"}`` items. Check order (service-protocols.md §4):

1. every query parameter present and non-empty -> ``40001``;
2. ``app_id`` is the data source's (``minigate sandbox credentials youshu``) -> ``40002``;
3. ``sign`` is ``sha256`` -> ``40007``; ``nonce`` at most 32 characters -> ``40005``;
4. ``timestamp`` (Unix seconds) within :attr:`~YoushuSimulator.timestamp_window_seconds` (±300) of the
   simulator's clock -> ``40004``;
5. the nonce not used by an accepted request in the last two windows -> ``40006``;
6. ``signature`` = hex(HMAC-SHA256(app_secret, conStr)), compared in constant time -> ``40003`` (only now is the
   nonce remembered, so forged requests cannot burn nonces);
7. the next-call fault, if any;
8. the body: at most :attr:`~YoushuSimulator.max_body_bytes` -> ``40009``; JSON, an object or a non-empty array
   of at most :attr:`~YoushuSimulator.max_items` items -> ``40008``/``40009``; every item an object with non-empty
   string ``type`` and ``from``, an object ``props`` whose ``time`` is epoch milliseconds and whose ``wx_user``
   names the user (``user_id``, ``open_id``, ``union_id`` or ``local_id``), and a string ``tracking_id`` if
   present -> ``40008``.

Every answer is HTTP 200 ``{"code": <int>, "msg": <text>}`` (Youshu: "code 非0表示客户端错误"); success is
``{"code": 0, "msg": "success"}`` and records every item. A refusal records nothing. The code numbers are the
sandbox's own (:mod:`minigate.providers.youshu.codes`): Youshu does not publish its codes, its timestamp window,
nonce replay rule or limits, nor which ``props`` it requires of server-side data (its behaviour pages mark
``time``, ``wx_user.open_id`` and ``chan.chan_wxapp_scene`` required; the sandbox asks only for ``time`` and some
user id). All are attributes.

Control routes: ``GET /_sandbox/events?app_id=`` lists the accepted items, oldest first, normalised as
``{"name" (the type), "user_key", "logged_in" (a wx_user.user_id was given), "ts_ms", "page", "event_id"
(tracking_id), "attributes" (props without time, page, wx_user and chan), "from", "received_at", "wire"}``;
``DELETE`` with the same query clears them. ``/_sandbox/faults``: ``timeout`` (waits ``seconds``, then 504),
``http_500``, ``http_429``, ``bad_signature`` (Youshu signs no answers: a 500), ``charged_then_timeout`` (recorded,
then 504); ``clock_skew_seconds`` moves the simulator's clock for the timestamp check.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import secrets
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from minigate.providers.youshu import signing
from minigate.providers.youshu.codes import MESSAGES, SUCCESS_CODE
from minigate.providers.youshu.provider import PATH
from minigate.simulators._core import Clock, CredentialStore, Deliverer, Faults, fault_routes, json_response

__all__ = ["MAX_BODY_BYTES", "MAX_ITEMS", "TIMESTAMP_WINDOW_SECONDS", "YoushuSimulator", "create_credentials"]

CREDENTIAL_FIELDS = ("app_id", "app_secret")
QUERY_FIELDS = ("app_id", "nonce", "timestamp", "sign", "signature")
TIMESTAMP_WINDOW_SECONDS = 300
MAX_ITEMS = 500
MAX_BODY_BYTES = 1024 * 1024
#: wx_user fields that name the user, in the order the normalised view picks one
USER_FIELDS = ("user_id", "open_id", "union_id", "local_id")
#: props keys that are not the event's own properties
_CONTEXT_PROPS = frozenset({"time", "page", "wx_user", "chan"})


def create_credentials() -> dict[str, Any]:
    """A data source: an app_id shaped like Youshu's (``bi`` + 16 hex) and a 32-hex app_secret."""
    return {"app_id": "bi" + secrets.token_hex(8), "app_secret": secrets.token_hex(16)}


class _Refusal(Exception):
    def __init__(self, code: int, detail: str | None = None) -> None:
        super().__init__(code)
        self.code = code
        self.detail = detail


def _answer(code: int, detail: str | None = None) -> Response:
    msg = MESSAGES.get(code, "error")
    return json_response({"code": code, "msg": f"{msg}: {detail}" if detail else msg})


class YoushuSimulator:
    """One simulated Youshu data source (app_id + app_secret). ``app`` is the ASGI app."""

    name = "youshu"

    def __init__(self, store: CredentialStore, *, clock: Clock, faults: Faults | None = None,
                 deliverer: Deliverer | None = None) -> None:
        self.account: dict[str, Any] = store.load_or_create(self.name, create_credentials)
        self.clock = clock
        self.faults = faults or Faults()
        self.timestamp_window_seconds: float = TIMESTAMP_WINDOW_SECONDS
        self.max_items = MAX_ITEMS
        self.max_body_bytes = MAX_BODY_BYTES
        self.events: list[dict[str, Any]] = []
        self._nonces: dict[str, float] = {}
        self.app = Starlette(routes=[
            *fault_routes(self.faults),
            Route("/_sandbox/events", self.events_endpoint, methods=["GET", "DELETE"]),
            Route(PATH, self.safe_report, methods=["POST"]),
        ])

    def now(self) -> float:
        """The simulator's clock: the shared clock plus the ``clock_skew_seconds`` fault."""
        return self.clock.now() + self.faults.clock_skew_seconds

    def credentials(self) -> dict[str, Any]:
        return {k: self.account[k] for k in CREDENTIAL_FIELDS}

    def _known(self, app_id: str) -> bool:
        return hmac.compare_digest(app_id.encode(), str(self.account["app_id"]).encode())

    # ------------------------------------------------------------------ safe-report
    async def safe_report(self, request: Request) -> Response:
        try:
            self._authenticate(request)
        except _Refusal as refusal:
            return _answer(refusal.code, refusal.detail)
        fault = self.faults.take_call(PATH)
        if fault is not None and fault.kind != "charged_then_timeout":
            if fault.kind == "timeout":
                await asyncio.sleep(fault.seconds)
            status = {"timeout": 504, "http_429": 429}.get(fault.kind, 500)
            return Response(b"<html><body>upstream error</body></html>", status, media_type="text/html")
        try:
            events = self._items(await request.body())
        except _Refusal as refusal:
            return _answer(refusal.code, refusal.detail)
        self.events.extend(events)
        if fault is not None:                       # charged_then_timeout: recorded, then the answer is lost
            await asyncio.sleep(fault.seconds)
            return Response(b"<html><body>Gateway Timeout</body></html>", 504, media_type="text/html")
        return _answer(SUCCESS_CODE)

    def _authenticate(self, request: Request) -> None:
        query = request.query_params
        missing = next((name for name in QUERY_FIELDS if not query.get(name)), None)
        if missing is not None:
            raise _Refusal(40001, missing)
        app_id, nonce, raw_ts = query["app_id"], query["nonce"], query["timestamp"]
        if not self._known(app_id):
            raise _Refusal(40002)
        if query["sign"] != signing.SIGN_METHOD:
            raise _Refusal(40007, "only sha256 is supported")
        if len(nonce) > signing.MAX_NONCE_LENGTH:
            raise _Refusal(40005, f"nonce longer than {signing.MAX_NONCE_LENGTH} characters")
        now = self.now()
        if not raw_ts.isdigit() or abs(now - int(raw_ts)) > self.timestamp_window_seconds:
            raise _Refusal(40004)
        ttl = 2 * self.timestamp_window_seconds
        seen = self._nonces.get(nonce)
        if seen is not None and seen > now - ttl:
            raise _Refusal(40006)
        if not signing.verify(query["signature"], app_secret=str(self.account["app_secret"]), app_id=app_id,
                              nonce=nonce, timestamp=raw_ts):
            raise _Refusal(40003)
        if len(self._nonces) > 10_000:
            self._nonces = {k: t for k, t in self._nonces.items() if t > now - ttl}
        self._nonces[nonce] = now

    def _items(self, body: bytes) -> list[dict[str, Any]]:
        if len(body) > self.max_body_bytes:
            raise _Refusal(40009, f"body larger than {self.max_body_bytes} bytes")
        try:
            data = json.loads(body)
        except (UnicodeDecodeError, ValueError):
            raise _Refusal(40008, "body is not JSON") from None
        items = [data] if isinstance(data, dict) else data
        if not isinstance(items, list) or not items:
            raise _Refusal(40008, "body must be a JSON object or a non-empty array")
        if len(items) > self.max_items:
            raise _Refusal(40009, f"at most {self.max_items} items per request")
        now = self.now()
        return [self._item(index, item, now) for index, item in enumerate(items)]

    @staticmethod
    def _item(index: int, item: Any, now: float) -> dict[str, Any]:
        where = f"items[{index}]"
        if not isinstance(item, dict):
            raise _Refusal(40008, f"{where} is not an object")
        for field in ("type", "from"):
            if not isinstance(item.get(field), str) or not item[field]:
                raise _Refusal(40008, f"{where}.{field} must be a non-empty string")
        tracking_id = item.get("tracking_id")
        if tracking_id is not None and not isinstance(tracking_id, str):
            raise _Refusal(40008, f"{where}.tracking_id must be a string")
        props = item.get("props")
        if not isinstance(props, dict):
            raise _Refusal(40008, f"{where}.props must be an object")
        ts = props.get("time")
        if isinstance(ts, bool) or not isinstance(ts, int) or ts <= 0:
            raise _Refusal(40008, f"{where}.props.time must be epoch milliseconds")
        wx_user = props.get("wx_user")
        if not isinstance(wx_user, dict):
            raise _Refusal(40008, f"{where}.props.wx_user must be an object")
        user_key = next((wx_user[f] for f in USER_FIELDS if isinstance(wx_user.get(f), str) and wx_user[f]), None)
        if user_key is None:
            raise _Refusal(40008, f"{where}.props.wx_user needs user_id, open_id, union_id or local_id")
        page = props.get("page")
        if page is not None and not isinstance(page, str):
            raise _Refusal(40008, f"{where}.props.page must be a string")
        return {"name": item["type"], "user_key": user_key, "logged_in": bool(wx_user.get("user_id")),
                "ts_ms": ts, "page": page, "event_id": tracking_id,
                "attributes": {k: v for k, v in props.items() if k not in _CONTEXT_PROPS},
                "from": item["from"], "received_at": now, "wire": item}

    # ------------------------------------------------------------------ control routes
    def recorded(self, app_id: str | None = None) -> list[dict[str, Any]]:
        """The accepted items (of ``app_id``, when given), oldest first."""
        if app_id is not None and not self._known(app_id):
            return []
        return list(self.events)

    async def events_endpoint(self, request: Request) -> Response:
        app_id = request.query_params.get("app_id")
        if not app_id:
            return _answer(40001, "app_id")
        if not self._known(app_id):
            return _answer(40002)
        if request.method == "DELETE":
            count = len(self.events)
            self.events.clear()
            return json_response({"app_id": app_id, "deleted": count})
        return json_response({"app_id": app_id, "events": self.events})

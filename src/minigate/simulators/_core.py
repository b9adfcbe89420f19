"""Shared machinery of every sandbox simulator.

- :class:`CredentialStore`: credentials on disk (one JSON file per provider, 0600, created race-free);
- :class:`Clock`: the simulators' notion of "now" (advance it in tests);
- :class:`Faults`: the knobs behind ``/_sandbox/faults`` (next-call faults, notification faults, clock skew);
- :class:`Deliverer`: asynchronous notification delivery on a provider's retry schedule, with a delivery log;
- key/certificate generation and JSON helpers.

Simulator state (orders, refunds, codes) lives in memory; only credentials are persisted.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import tempfile
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from ipaddress import ip_address
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

__all__ = [
    "CALL_FAULTS",
    "NOTIFY_FAULTS",
    "BEIJING",
    "Clock",
    "CredentialStore",
    "Deliverer",
    "DeliveryRecord",
    "Faults",
    "Outgoing",
    "default_state_dir",
    "fault_routes",
    "generate_rsa_private_key_pem",
    "is_local_notify_url",
    "json_bytes",
    "json_response",
    "public_key_pem",
    "read_json_object",
    "rfc3339",
    "self_signed_certificate_pem",
]

BEIJING = dt.timezone(dt.timedelta(hours=8))
#: Next-call faults. ``bad_signature``: the operation runs, but the response signature does not verify.
CALL_FAULTS = ("timeout", "http_500", "http_429", "charged_then_timeout", "bad_signature")
#: Notification faults, each applied to the next ``count`` notifications.
NOTIFY_FAULTS = ("drop", "duplicate", "tamper", "signtest_probe", "delay", "reorder")
#: Host names that reach an in-process receiver (httpx ASGITransport / the gateway's own transport).
IN_PROCESS_HOSTS = frozenset({"testserver", "gateway", "localhost"})


def default_state_dir() -> Path:
    """``$MINIGATE_SANDBOX_DIR`` or ``./.minigate/sandbox``."""
    return Path(os.environ.get("MINIGATE_SANDBOX_DIR") or Path.cwd() / ".minigate" / "sandbox")


# --------------------------------------------------------------------------- JSON

def json_bytes(obj: Any) -> bytes:
    """Compact UTF-8 JSON (no spaces, non-ASCII kept) — the shape providers put on the wire."""
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode()


def json_response(obj: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> Response:
    return Response(json_bytes(obj), status_code=status, headers=dict(headers or {}),
                    media_type="application/json")


async def read_json_object(request: Request) -> dict[str, Any] | None:
    """The request body as a JSON object, or None when it is not one."""
    try:
        data = json.loads(await request.body())
    except (ValueError, UnicodeDecodeError):
        return None
    return data if isinstance(data, dict) else None


def rfc3339(epoch: float) -> str:
    """``2018-06-08T10:34:56+08:00`` (Beijing time, as the Chinese providers answer)."""
    return dt.datetime.fromtimestamp(int(epoch), BEIJING).isoformat()


async def day_values_control(request: Request, *, clear: Callable[[], None],
                             show: Callable[[dt.date], Mapping[str, Any]],
                             record: Callable[[dict[str, Any]], str | None]) -> Response:
    """The control route of a simulator that reports numbers per day (datacube, Umeng+): ``DELETE`` forgets what
    tests set, ``GET ?date=`` shows a day's numbers, ``POST {"date", <sections>}`` sets some — ``record`` checks
    and keeps them, answering what is wrong (HTTP 400) or None."""
    if request.method == "DELETE":
        clear()
        return json_response({"days": []})
    if request.method == "GET":
        try:
            day = dt.date.fromisoformat(request.query_params.get("date", ""))
        except ValueError:
            return json_response({"code": "PARAM_ERROR", "message": "date=yyyy-mm-dd is required"}, 400)
        return json_response({"date": day.isoformat(), **show(day)})
    spec = await read_json_object(request)
    problem = "body must be a JSON object" if spec is None else record(spec)
    if problem is not None or spec is None:
        return json_response({"code": "PARAM_ERROR", "message": problem}, 400)
    day = dt.date.fromisoformat(spec["date"])
    return json_response({"date": day.isoformat(), **show(day)})


def is_local_notify_url(url: str) -> bool:
    """http:// is accepted only for loopback hosts and the in-process names ``testserver``/``gateway``."""
    parts = urlsplit(url)
    if parts.scheme == "https":
        return bool(parts.hostname)
    if parts.scheme != "http" or not parts.hostname:
        return False
    if parts.hostname in IN_PROCESS_HOSTS:
        return True
    try:
        return ip_address(parts.hostname).is_loopback
    except ValueError:
        return False


# --------------------------------------------------------------------------- keys

def generate_rsa_private_key_pem(bits: int = 2048) -> str:
    key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()).decode()


def public_key_pem(private_key_pem: str) -> str:
    key = serialization.load_pem_private_key(private_key_pem.encode(), password=None)
    return key.public_key().public_bytes(serialization.Encoding.PEM,
                                         serialization.PublicFormat.SubjectPublicKeyInfo).decode()


def self_signed_certificate_pem(private_key_pem: str, *, common_name: str, organization: str,
                                serial: int | None = None, days: int = 3650) -> str:
    key = serialization.load_pem_private_key(private_key_pem.encode(), password=None)
    assert isinstance(key, rsa.RSAPrivateKey)
    name = x509.Name([x509.NameAttribute(NameOID.COUNTRY_NAME, "CN"),
                      x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization),
                      x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(serial or x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1)).not_valid_after(now + dt.timedelta(days=days))
            .sign(key, hashes.SHA256()))
    return cert.public_bytes(serialization.Encoding.PEM).decode()


# --------------------------------------------------------------------------- credentials

class CredentialStore:
    """One JSON file per provider under ``state_dir``, mode 0600 (it holds private keys).

    Creation is safe when two processes start at once: each writes a complete temp file, then
    links it into place (first writer wins; ``os.replace`` where hard links are unavailable),
    and everyone re-reads the file that won.
    """

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = Path(state_dir)

    def path(self, name: str) -> Path:
        return self.state_dir / f"{name}.json"

    def load_or_create(self, name: str, factory: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        path = self.path(name)
        if path.exists():
            return self._read(path)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        data = factory()
        fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=self.state_dir)
        try:
            os.fchmod(fd, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                json.dump(data, fh, ensure_ascii=False, indent=2)
                fh.flush()
                os.fsync(fh.fileno())
            try:
                os.link(tmp, path)
            except FileExistsError:
                pass
            except OSError:  # no hard links on this filesystem
                os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        return self._read(path)

    @staticmethod
    def _read(path: Path) -> dict[str, Any]:
        data = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(data, dict):
            raise ValueError(f"{path} does not hold a JSON object")
        return data


# --------------------------------------------------------------------------- clock

class Clock:
    """Wall clock plus an offset; ``advance`` moves every simulator's "now" forward (tests)."""

    def __init__(self, now: Callable[[], float] = time.time) -> None:
        self._now = now
        self.offset = 0.0

    def now(self) -> float:
        return self._now() + self.offset

    def advance(self, seconds: float) -> None:
        self.offset += seconds


# --------------------------------------------------------------------------- faults

@dataclass
class CallFault:
    kind: str
    path: str = ""
    count: int = 1
    seconds: float = 30.0  # how long "timeout" kinds hold the request (real seconds, not scaled)


@dataclass
class NotifyFault:
    kind: str
    count: int = 1
    #: "delay": extra wait before the first attempt; "reorder": the longest wait for the next notification to
    #: be delivered first (both scaled by time_scale)
    seconds: float = 60.0


class Faults:
    """The fault knobs behind ``POST/GET/DELETE /_sandbox/faults`` (same JSON for every simulator).

    ``{"next_call": kind, "path": prefix?, "count": n?, "seconds": s?}``,
    ``{"notify": kind, "count": n?, "seconds": s?}``, ``{"clock_skew_seconds": n}``.
    """

    def __init__(self) -> None:
        self.calls: list[CallFault] = []
        self.notifications: list[NotifyFault] = []
        self.clock_skew_seconds = 0.0

    def add(self, spec: Mapping[str, Any]) -> str | None:
        """Register faults from a JSON object; returns an error message when the spec is invalid."""
        count = spec.get("count", 1)
        seconds = spec.get("seconds")
        if not isinstance(count, int) or isinstance(count, bool) or count < 1:
            return "count must be a positive integer"
        if seconds is not None and (not isinstance(seconds, int | float) or seconds < 0):
            return "seconds must be a non-negative number"
        known = {"next_call", "notify", "clock_skew_seconds", "path", "count", "seconds"}
        if not spec or set(spec) - known:
            return f"unknown fault fields: {sorted(set(spec) - known) or 'none given'}"
        if not {"next_call", "notify", "clock_skew_seconds"} & set(spec):
            return "name a fault: next_call, notify or clock_skew_seconds"
        if "next_call" in spec:
            if spec["next_call"] not in CALL_FAULTS:
                return f"next_call must be one of {', '.join(CALL_FAULTS)}"
            path = spec.get("path", "")
            if not isinstance(path, str):
                return "path must be a string"
            fault = CallFault(spec["next_call"], path, count)
            if seconds is not None:
                fault.seconds = float(seconds)
            self.calls.append(fault)
        if "notify" in spec:
            if spec["notify"] not in NOTIFY_FAULTS:
                return f"notify must be one of {', '.join(NOTIFY_FAULTS)}"
            nfault = NotifyFault(spec["notify"], count)
            if seconds is not None:
                nfault.seconds = float(seconds)
            self.notifications.append(nfault)
        if "clock_skew_seconds" in spec:
            skew = spec["clock_skew_seconds"]
            if not isinstance(skew, int | float) or isinstance(skew, bool):
                return "clock_skew_seconds must be a number"
            self.clock_skew_seconds = float(skew)
        return None

    def take_call(self, path: str) -> CallFault | None:
        for fault in self.calls:
            if path.startswith(fault.path):
                fault.count -= 1
                if fault.count <= 0:
                    self.calls.remove(fault)
                return fault
        return None

    def take_notify(self) -> NotifyFault | None:
        if not self.notifications:
            return None
        fault = self.notifications[0]
        fault.count -= 1
        if fault.count <= 0:
            self.notifications.pop(0)
        return fault

    def snapshot(self) -> dict[str, Any]:
        return {"next_call": [asdict(f) for f in self.calls],
                "notify": [asdict(f) for f in self.notifications],
                "clock_skew_seconds": self.clock_skew_seconds}

    def clear(self) -> None:
        self.calls.clear()
        self.notifications.clear()
        self.clock_skew_seconds = 0.0


def fault_routes(faults: Faults) -> list[Route]:
    """``GET`` (show), ``POST`` (add) and ``DELETE`` (clear) ``/_sandbox/faults`` for any simulator."""

    async def faults_endpoint(request: Request) -> Response:
        if request.method == "POST":
            spec = await read_json_object(request)
            problem = "body must be a JSON object" if spec is None else faults.add(spec)
            if problem is not None:
                return json_response({"code": "PARAM_ERROR", "message": problem}, 400)
        elif request.method == "DELETE":
            faults.clear()
        return json_response(faults.snapshot())

    return [Route("/_sandbox/faults", faults_endpoint, methods=["GET", "POST", "DELETE"])]


# --------------------------------------------------------------------------- notification delivery

@dataclass(frozen=True)
class Outgoing:
    """One HTTP request the deliverer sends: the body and the (freshly signed) headers."""

    body: bytes
    headers: dict[str, str]


@dataclass
class DeliveryRecord:
    id: str
    url: str
    event_type: str
    created_at: float
    state: str = "pending"  # pending | delivered | failed | dropped | cancelled
    attempts: list[dict[str, Any]] = field(default_factory=list)
    fault: str | None = None

    @property
    def last_status(self) -> int | None:
        for attempt in reversed(self.attempts):
            if attempt.get("status") is not None:
                return int(attempt["status"])
        return None

    def as_json(self) -> dict[str, Any]:
        return {"id": self.id, "url": self.url, "event_type": self.event_type, "state": self.state,
                "fault": self.fault, "attempts": len(self.attempts), "last_status": self.last_status,
                "log": self.attempts}


#: Builds one attempt: ``variant`` is "genuine", "tamper" or "signtest_probe".
Builder = Callable[[str], Outgoing]


class Deliverer:
    """Sends notifications on the running event loop, one task each, retrying on ``schedule``.

    A receiver acknowledges with one of ``ok_statuses``; anything else (or a transport error)
    schedules the next attempt after ``schedule[i] * time_scale`` seconds. ``client`` may be
    replaced at any time (the gateway passes one whose transport reaches itself).
    """

    def __init__(self, *, schedule: Sequence[float], time_scale: float = 1.0,
                 client: httpx.AsyncClient | None = None, ok_statuses: Sequence[int] = (200, 204),
                 attempt_timeout: float = 5.0, clock: Clock | None = None) -> None:
        self.schedule = tuple(schedule)
        self.time_scale = time_scale
        self.client = client
        self.ok_statuses = tuple(ok_statuses)
        self.attempt_timeout = attempt_timeout
        self.clock = clock or Clock()
        #: the provider's rule for "the receiver acknowledged": (status, body) -> bool. WeChat: 200/204;
        #: Alipay: 200 with the body ``success``; JD: 200 with ``ok``/``success``. Simulators set it.
        self.acknowledged: Callable[[int, bytes], bool] = lambda status, _body: status in self.ok_statuses
        self.log: list[DeliveryRecord] = []
        self._tasks: set[asyncio.Task[None]] = set()
        #: tasks inside an HTTP attempt right now (``aclose`` lets them finish it)
        self._attempting: set[asyncio.Task[Any]] = set()
        #: notifications held back by a "reorder" fault until the next one has been delivered
        self._held: list[asyncio.Event] = []
        self._own_client: httpx.AsyncClient | None = None

    def submit(self, *, event_id: str, url: str, event_type: str, build: Builder,
               fault: NotifyFault | None = None) -> DeliveryRecord:
        record = DeliveryRecord(event_id, url, event_type, self.clock.now(),
                                fault=fault.kind if fault else None)
        self.log.append(record)
        if fault is not None and fault.kind == "drop":
            record.state = "dropped"
            return record
        task = asyncio.get_running_loop().create_task(self._run(record, build, fault))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return record

    def later(self, delay: float, action: Callable[[], Awaitable[None]]) -> None:
        """Run ``action`` after ``delay * time_scale`` seconds, as a task cancelled by :meth:`aclose`."""

        async def run() -> None:
            await asyncio.sleep(delay * self.time_scale)
            await action()

        task = asyncio.get_running_loop().create_task(run())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, record: DeliveryRecord, build: Builder, fault: NotifyFault | None) -> None:
        kind = fault.kind if fault else None
        held: list[asyncio.Event] = []
        if kind == "delay" and fault is not None:
            await asyncio.sleep(fault.seconds * self.time_scale)
        if kind == "reorder" and fault is not None:   # arrive after the notification that follows this one
            released = asyncio.Event()
            self._held.append(released)
            try:
                await asyncio.wait_for(released.wait(), timeout=fault.seconds * self.time_scale)
            except TimeoutError:
                pass
        else:
            held, self._held = self._held, []
        delays = (0.0, *self.schedule)
        for index, delay in enumerate(delays):
            if index:
                await asyncio.sleep(delay * self.time_scale)
            variant = kind if index == 0 and kind in ("tamper", "signtest_probe") else "genuine"
            if await self._attempt(record, build(variant), variant):
                record.state = "delivered"
                if kind != "reorder":
                    for event in held:
                        event.set()
                if kind == "duplicate":
                    await self._attempt(record, build("genuine"), "duplicate")
                return
        record.state = "failed"

    async def _attempt(self, record: DeliveryRecord, out: Outgoing, variant: str) -> bool:
        entry: dict[str, Any] = {"at": self.clock.now(), "variant": variant, "status": None}
        record.attempts.append(entry)
        task = asyncio.current_task()
        if task is not None:
            self._attempting.add(task)
        try:
            response = await self._client().post(record.url, content=out.body, headers=out.headers,
                                                 timeout=self.attempt_timeout)
        except httpx.HTTPError as exc:
            entry["error"] = type(exc).__name__
            return False
        finally:
            if task is not None:
                self._attempting.discard(task)
        entry["status"] = response.status_code
        entry["body"] = response.content[:64].decode("utf-8", "replace")
        return variant == "genuine" and self.acknowledged(response.status_code, response.content)

    def _client(self) -> httpx.AsyncClient:
        if self.client is not None:
            return self.client
        if self._own_client is None:
            from minigate.transport import outbound_client

            self._own_client = outbound_client(follow_redirects=False)
        return self._own_client

    async def wait_idle(self) -> None:
        """Wait until no delivery is in flight (tests; wrap in ``asyncio.timeout``)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def aclose(self) -> None:
        """Stop: waiting deliveries are cancelled; one in the middle of an HTTP attempt may finish that attempt
        first (cancelling it mid-request could cut the receiver off inside its own database transaction)."""
        in_flight = [t for t in self._tasks if t in self._attempting]
        for task in list(self._tasks):
            if task not in self._attempting:
                task.cancel()
        if in_flight:
            await asyncio.wait(in_flight, timeout=self.attempt_timeout + 1)
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for record in self.log:
            if record.state == "pending":
                record.state = "cancelled"
        if self._own_client is not None:
            await self._own_client.aclose()
            self._own_client = None

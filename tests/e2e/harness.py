"""Harness for the crash and scale-out tests on real processes (A-16, F1–F3, F7, F14; invariants 1–7).

What runs, all on 127.0.0.1:

* ``minigate sandbox serve`` — one external WeChat Pay simulator every gateway shares (same state dir);
* ``minigate serve`` gateways (subprocesses, ``MINIGATE_SANDBOX_URL`` pointing at that sandbox);
* a merchant webhook :class:`Receiver` and a notification :class:`FanOutProxy` (Starlette under uvicorn, each
  in a thread of the test process);
* a bounded, seeded load generator (:func:`run_load`): clients create orders with an ``Idempotency-Key``, pay
  through the sandbox, close or refund some, and retry in-flight requests with the same key after connection
  errors, as a real client would.

After the faults heal, :func:`settle` waits until nothing is in flight and :func:`check_everything` reconciles
local state with the provider's (per-order queries and the trade bill) and checks invariants 1–7.

Time is accelerated for the test, never the rules: the sandbox retries notifications on WeChat's schedule
scaled by ``TIME_SCALE``; a crashed request's idempotency lock may be taken over after ``LOCK_SECONDS``
(90 s in production); a crashed worker's webhook lease expires after 3 × ``WEBHOOK_TIMEOUT`` seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import re
import socket
import subprocess
import sys
import threading
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import uvicorn
from sqlalchemy import select
from sqlalchemy.ext.asyncio import create_async_engine
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from minigate import webhook_signature
from minigate.domain.orders import can_transition, refund_can_transition
from minigate.store.tables import Event, InboundNotification, Order, OrderEvent, Refund, WebhookDelivery

TIME_SCALE = 0.002          # WeChat's notification schedule 15 s, 15 s, 30 s, 3 min … → 30 ms, 30 ms, 60 ms, 0.36 s …
LOCK_SECONDS = 3            # idempotency lock takeover (production: 90 s)
WEBHOOK_TIMEOUT = 2         # per webhook attempt; the worker's lease is 3× this (a killed worker's claim waits 6 s)
PAID_FAMILY = ("paid", "partially_refunded", "refunded")
#: how long (real seconds) the sandbox keeps a refund PROCESSING before REFUND.SUCCESS; 0 (the sandbox's default)
#: settles it at once, so the notification races the API's own answer — the hardest case for the gateway
REFUND_DELAY = float(os.environ.get("MINIGATE_E2E_REFUND_DELAY", "0"))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "minigate.cli", *args]


def base_env() -> dict[str, str]:
    """The caller's environment without any MINIGATE_* setting (no stray config file or URL leaks in)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MINIGATE_")}
    env["PYTHONUNBUFFERED"] = "1"
    return env


# -- processes ---------------------------------------------------------------------------------------


@dataclass
class GatewayProc:
    name: str
    port: int
    env: dict[str, str]
    proc: subprocess.Popen[bytes] | None = None
    starts: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


class Processes:
    """Every process a test starts; :meth:`kill_all` (a fixture finalizer) leaves none behind."""

    def __init__(self, logs: Path) -> None:
        self.logs = logs
        self.logs.mkdir(parents=True, exist_ok=True)
        self.started: list[subprocess.Popen[bytes]] = []
        self.sandbox_url = ""
        self.sandbox_dir = logs / "sandbox-state"
        self.credentials: dict[str, Any] = {}

    def log_path(self, name: str) -> Path:
        return self.logs / f"{name}.log"

    async def spawn(self, name: str, args: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        with self.log_path(name).open("ab") as out:
            proc: subprocess.Popen[bytes] = await asyncio.to_thread(
                subprocess.Popen, args, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        self.started.append(proc)
        return proc

    async def start_sandbox(self) -> str:
        """An external sandbox; its credentials are made first so no gateway races to create other ones."""
        env = base_env()
        made = await asyncio.to_thread(subprocess.run, cli("sandbox", "credentials", "wechatpay", "--state-dir",
                                                           str(self.sandbox_dir)),
                                       env=env, capture_output=True, text=True, timeout=60, check=True)
        self.credentials = json.loads(made.stdout)
        port = free_port()
        proc = await self.spawn("sandbox", cli("sandbox", "serve", "--port", str(port), "--state-dir",
                                               str(self.sandbox_dir), "--time-scale", str(TIME_SCALE)), env)
        self.sandbox_url = f"http://127.0.0.1:{port}"
        await wait_ready(f"{self.sandbox_url}/_sandbox", proc, self.log_path("sandbox"))
        if REFUND_DELAY:    # real seconds a refund stays PROCESSING (the setting is scaled by the time scale)
            async with httpx.AsyncClient(timeout=10) as http:
                r = await http.post(f"{self.sandbox_url}/wechatpay/_sandbox/settings",
                                    json={"refund_delay_seconds": REFUND_DELAY / TIME_SCALE})
                assert r.status_code == 200, r.text
        return self.sandbox_url

    def gateway(self, name: str, *, database_url: str, public_url: str | None = None,
                port: int | None = None, webhook_timeout: float = WEBHOOK_TIMEOUT) -> GatewayProc:
        port = port or free_port()
        env = base_env() | {
            "MINIGATE_DATA_DIR": str(self.logs / f"{name}-data"),
            "MINIGATE_DATABASE_URL": database_url,
            "MINIGATE_PORT": str(port),
            "MINIGATE_PUBLIC_URL": public_url or f"http://127.0.0.1:{port}",
            "MINIGATE_SANDBOX_URL": self.sandbox_url,
            "MINIGATE_SANDBOX_DIR": str(self.sandbox_dir),
            "MINIGATE_SANDBOX_TIME_SCALE": str(TIME_SCALE),
            "MINIGATE_WORKER_POLL_SECONDS": "0.05",
            "MINIGATE_WEBHOOK_TIMEOUT_SECONDS": str(webhook_timeout),
            "MINIGATE_IDEMPOTENCY_LOCK_SECONDS": str(LOCK_SECONDS),
            "MINIGATE_LOG_LEVEL": "INFO",
            "MINIGATE_API_REQUESTS_PER_SECOND_PER_KEY": "0",     # load and crash runs, not the rate limit
        }
        return GatewayProc(name=name, port=port, env=env)

    async def start_gateway(self, gw: GatewayProc) -> None:
        gw.proc = await self.spawn(gw.name, cli("serve"), gw.env)
        gw.starts += 1
        await wait_ready(f"{gw.url}/readyz", gw.proc, self.log_path(gw.name))

    async def kill9(self, gw: GatewayProc) -> None:
        assert gw.proc is not None
        gw.proc.send_signal(9)      # SIGKILL: no shutdown hook, no flush, no goodbye
        await asyncio.to_thread(gw.proc.wait, 20)

    def test_key(self, gw: GatewayProc) -> str:
        match = re.search(r"test key: (mg_test_\S+)", self.log_path(gw.name).read_text(errors="replace"))
        assert match, self.log_path(gw.name).read_text(errors="replace")
        return match.group(1)

    def kill_all(self) -> None:
        for proc in self.started:
            if proc.poll() is None:
                proc.kill()
        for proc in self.started:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=20)


async def wait_ready(url: str, proc: subprocess.Popen[bytes], log: Path, within: float = 45) -> None:
    deadline = time.monotonic() + within
    async with httpx.AsyncClient(timeout=2) as http:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise AssertionError(f"process exited with {proc.returncode}:\n{tail(log)}")
            try:
                if (await http.get(url)).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.05)
    raise AssertionError(f"{url} not ready after {within} s:\n{tail(log)}")


def tail(log: Path, size: int = 6000) -> str:
    return log.read_text(errors="replace")[-size:]


def log_errors(log: Path) -> int:
    """Error-level lines and tracebacks in a gateway's log (JSON lines from structlog, plus uvicorn's)."""
    return sum('"level": "error"' in line or line.startswith("Traceback")
               for line in log.read_text(errors="replace").splitlines())


class ThreadedServer:
    """A Starlette app under uvicorn in a thread of the test process (its own event loop)."""

    def __init__(self, app: Any, port: int | None = None) -> None:
        self.port = port or free_port()
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning",
                                                    access_log=False, lifespan="on"))
        self.thread = threading.Thread(target=self.server.run, name=f"uvicorn-{self.port}", daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise AssertionError(f"server on port {self.port} did not start")
            time.sleep(0.01)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=20)


# -- the merchant's webhook receiver -----------------------------------------------------------------


class Receiver:
    """Verifies ``Minigate-Signature``, processes each event id once, and counts deliveries and their overlap.

    ``hold`` keeps each delivery open a little, so two concurrent deliveries of one event would overlap and be
    seen (``max_overlap`` > 1).
    """

    def __init__(self, *, hold: float = 0.02) -> None:
        self.secrets: list[str] = []
        self.hold = hold
        self.lock = threading.Lock()
        self.deliveries: Counter[str] = Counter()       # verified deliveries per event id
        self.in_flight: Counter[str] = Counter()
        self.max_overlap: Counter[str] = Counter()
        self.processed: dict[str, dict[str, Any]] = {}  # event id -> the event, processed once
        self.bad_signatures = 0
        self.app = Starlette(routes=[Route("/hooks", self._hook, methods=["POST"])])

    async def _hook(self, request: Request) -> Response:
        body = await request.body()
        try:
            webhook_signature.verify(body, request.headers.get(webhook_signature.HEADER, ""), self.secrets)
        except webhook_signature.SignatureVerificationError:
            with self.lock:
                self.bad_signatures += 1
            return Response(status_code=400)
        event = json.loads(body)
        event_id = event["id"]
        if request.headers.get("Minigate-Event-Id") != event_id:
            with self.lock:
                self.bad_signatures += 1
            return Response(status_code=400)
        with self.lock:
            self.deliveries[event_id] += 1
            self.in_flight[event_id] += 1
            self.max_overlap[event_id] = max(self.max_overlap[event_id], self.in_flight[event_id])
        try:
            await asyncio.sleep(self.hold)
            with self.lock:
                self.processed.setdefault(event_id, event)   # fulfilment happens once per event id
        finally:
            with self.lock:
                self.in_flight[event_id] -= 1
        return Response(status_code=204)


# -- the notification fan-out proxy --------------------------------------------------------------------


_FORWARD_HEADERS = ("content-type", "wechatpay-timestamp", "wechatpay-nonce", "wechatpay-serial",
                    "wechatpay-signature", "wechatpay-signature-type", "request-id", "user-agent")


class FanOutProxy:
    """The gateways' public address: every provider callback is forwarded to **all** gateways at once; the
    sandbox gets the first acknowledgement (the others keep running and are recorded)."""

    def __init__(self, targets: list[str]) -> None:
        self.targets = targets
        self.lock = threading.Lock()
        #: (event id, gateway index, HTTP status or None, error name or None)
        self.records: list[tuple[str, int, int | None, str | None]] = []
        self.received: Counter[str] = Counter()          # requests from the sandbox per event id
        self._tasks: set[asyncio.Task[Any]] = set()
        self._client: httpx.AsyncClient | None = None
        self.app = Starlette(routes=[Route("/notify/{rest:path}", self._notify, methods=["POST"])],
                             lifespan=self._lifespan)

    @contextlib.asynccontextmanager
    async def _lifespan(self, _app: Any) -> Any:
        self._client = httpx.AsyncClient(timeout=4.5, limits=httpx.Limits(max_connections=200))
        try:
            yield
        finally:
            if self._tasks:
                await asyncio.wait(self._tasks, timeout=10)
            await self._client.aclose()

    async def _forward(self, index: int, path: str, body: bytes, headers: dict[str, str],
                       event_id: str) -> tuple[int | None, bytes, str]:
        assert self._client is not None
        try:
            response = await self._client.post(self.targets[index] + path, content=body, headers=headers)
        except httpx.HTTPError as exc:
            with self.lock:
                self.records.append((event_id, index, None, type(exc).__name__))
            return None, b"", ""
        with self.lock:
            self.records.append((event_id, index, response.status_code, None))
        return response.status_code, response.content, response.headers.get("content-type", "")

    async def _notify(self, request: Request) -> Response:
        body = await request.body()
        try:
            event_id = str(json.loads(body).get("id"))
        except ValueError:
            event_id = "?"
        with self.lock:
            self.received[event_id] += 1
        headers = {k: v for k, v in request.headers.items() if k.lower() in _FORWARD_HEADERS}
        tasks = [asyncio.create_task(self._forward(i, request.url.path, body, headers, event_id))
                 for i in range(len(self.targets))]
        self._tasks.update(tasks)
        for task in tasks:
            task.add_done_callback(self._tasks.discard)
        last: tuple[int | None, bytes, str] = (None, b"", "")
        for next_done in asyncio.as_completed(tasks):
            status, content, ctype = await next_done
            last = (status, content, ctype)
            if status is not None and 200 <= status < 300:
                break
        status, content, ctype = last
        if status is None:
            return Response(status_code=502)
        return Response(content=content, status_code=status, media_type=ctype or None)


# -- the load ----------------------------------------------------------------------------------------


@dataclass
class Plan:
    index: int
    merchant_order_no: str
    amount: int
    action: str                      # "pay" or "close"
    refunds: list[int | None]        # amounts in fen; None = whatever is still refundable
    gateway: int                     # where this order's client sends its create (refunds go to the next one)

    def expected_status(self) -> str:
        if self.action == "close":
            return "closed"
        if not self.refunds:
            return "paid"
        return "refunded" if self.refunds[-1] is None else "partially_refunded"


@dataclass
class Outcome:
    plan: Plan
    order_id: str | None = None
    out_trade_no: str | None = None
    acked: bool = False
    closed: bool = False
    pay_answer: int | None = None
    paid_seen: bool = False
    refund_ids: list[str] = field(default_factory=list)
    #: Idempotency-Key -> (the request, the id the first 200 answered)
    keys: dict[str, tuple[str, dict[str, Any], str]] = field(default_factory=dict)


@dataclass
class Stats:
    requests: int = 0
    transport_errors: int = 0
    key_in_use: int = 0
    server_errors: Counter[int] = field(default_factory=Counter)
    retried_requests: int = 0
    done: int = 0
    kills: int = 0
    kill_times: list[float] = field(default_factory=list)
    downtime: float = 0.0
    latency: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))

    def latencies(self) -> str:
        parts = []
        for name, values in sorted(self.latency.items()):
            ordered = sorted(values)
            parts.append(f"{name} p50 {ordered[len(ordered) // 2] * 1000:.0f} ms, "
                         f"p95 {ordered[int(len(ordered) * 0.95)] * 1000:.0f} ms")
        return "; ".join(parts)


def make_plans(rng: random.Random, count: int, *, prefix: str, gateways: int = 1) -> list[Plan]:
    plans = []
    for i in range(count):
        amount = rng.randint(100, 50_000)
        action = "close" if rng.random() < 0.1 else "pay"
        refunds: list[int | None] = []
        if action == "pay":
            r = rng.random()
            if r < 0.3:
                refunds = [rng.randint(1, amount - 1)]                     # partial
            elif r < 0.5:
                refunds = [None]                                          # full
            elif r < 0.65:
                first = rng.randint(1, amount // 2)
                refunds = [first, rng.randint(1, amount - first - 1)]     # two partials
            elif r < 0.75:
                refunds = [rng.randint(1, amount - 1), None]              # partial, then the rest
        plans.append(Plan(index=i, merchant_order_no=f"{prefix}{i:04d}", amount=amount, action=action,
                          refunds=refunds, gateway=i % gateways))
    return plans


class LoadGiveUp(Exception):
    pass


class Client:
    """A merchant backend: retries an in-flight request with the same Idempotency-Key after a connection error,
    a 5xx or ``409 idempotency_key_in_use`` — exactly what a real client does."""

    def __init__(self, http: httpx.AsyncClient, bases: list[str], key: str, stats: Stats, deadline: float,
                 rng: random.Random) -> None:
        self.http = http
        self.bases = bases
        self.auth = {"Authorization": f"Bearer {key}"}
        self.stats = stats
        self.deadline = deadline
        self.rng = rng

    async def call(self, gateway: int, method: str, path: str, *, body: dict[str, Any] | None = None,
                   idem: str | None = None) -> httpx.Response:
        headers = self.auth | ({"Idempotency-Key": idem} if idem else {})
        tries = 0
        while True:
            if time.monotonic() > self.deadline:
                raise LoadGiveUp(f"{method} {path} ({idem}) did not succeed before the deadline")
            tries += 1
            if tries == 2:
                self.stats.retried_requests += 1
            self.stats.requests += 1
            sent = time.monotonic()
            try:
                response = await self.http.request(method, self.bases[gateway] + path, json=body, headers=headers)
            except httpx.TransportError:
                self.stats.transport_errors += 1
                await asyncio.sleep(min(0.05 * tries, 0.5) * self.rng.uniform(0.5, 1.5))
                continue
            if response.status_code == 409 and _code(response) == "idempotency_key_in_use":
                self.stats.key_in_use += 1
                await asyncio.sleep(0.2)
                continue
            if response.status_code >= 500:
                self.stats.server_errors[response.status_code] += 1
                await asyncio.sleep(min(0.05 * tries, 0.5) * self.rng.uniform(0.5, 1.5))
                continue
            name = f"{method} {re.sub(r'/(ord|re)_[0-9a-z]+', '/{id}', path)}"
            self.stats.latency[name].append(time.monotonic() - sent)
            return response

    async def pay(self, sandbox: str, out_trade_no: str) -> int:
        while True:
            if time.monotonic() > self.deadline:
                raise LoadGiveUp(f"paying {out_trade_no}")
            try:
                r = await self.http.post(f"{sandbox}/wechatpay/_sandbox/pay", json={"out_trade_no": out_trade_no})
            except httpx.TransportError:
                await asyncio.sleep(0.1)
                continue
            assert r.status_code == 200 or (r.status_code == 409 and "SUCCESS" in r.text), r.text
            return r.status_code


def _code(response: httpx.Response) -> str | None:
    try:
        return str(response.json()["error"]["code"])
    except (ValueError, KeyError, TypeError):
        return None


async def run_order(client: Client, sandbox: str, plan: Plan, out: Outcome, *, prefix: str,
                    gateways: int) -> None:
    gw = plan.gateway
    body = {"channel": "wechat_mini", "amount": plan.amount, "description": f"Crash-test item {plan.index}",
            "merchant_order_no": plan.merchant_order_no, "payer": {"openid": f"oLoadPayer{plan.index:018d}"},
            "metadata": {"plan": str(plan.index)}}
    key = f"{prefix}-{plan.index:04d}-create"
    r = await client.call(gw, "POST", "/v1/orders", body=body, idem=key)
    assert r.status_code == 200, (plan, r.status_code, r.text)
    order = r.json()
    assert order["status"] == "pending" and order["merchant_order_no"] == plan.merchant_order_no, order
    out.order_id, out.out_trade_no, out.acked = order["id"], order["out_trade_no"], True
    out.keys[key] = ("/v1/orders", body, order["id"])
    if plan.action == "close":
        key = f"{prefix}-{plan.index:04d}-close"
        r = await client.call(gw, "POST", f"/v1/orders/{out.order_id}/close", idem=key)
        assert r.status_code == 200 and r.json()["status"] == "closed", (plan, r.status_code, r.text)
        out.closed = True
        out.keys[key] = (f"/v1/orders/{out.order_id}/close", {}, out.order_id)
        return
    out.pay_answer = await client.pay(sandbox, out.out_trade_no)
    while True:     # the payer's mini-program polls its backend, which asks minigate
        r = await client.call(gw, "GET", f"/v1/orders/{out.order_id}")
        assert r.status_code == 200, r.text
        if r.json()["status"] in PAID_FAMILY:
            out.paid_seen = True
            break
        await asyncio.sleep(0.1)
    refund_gw = (gw + 1) % gateways
    for j, amount in enumerate(plan.refunds):
        body = {"order": out.order_id, "reason": f"return {j}"} | ({"amount": amount} if amount else {})
        key = f"{prefix}-{plan.index:04d}-refund-{j}"
        r = await client.call(refund_gw, "POST", "/v1/refunds", body=body, idem=key)
        assert r.status_code == 200, (plan, r.status_code, r.text)
        refund = r.json()
        assert refund["order"] == out.order_id and refund["status"] in ("processing", "succeeded"), refund
        out.refund_ids.append(refund["id"])
        out.keys[key] = ("/v1/refunds", body, refund["id"])


async def run_load(*, bases: list[str], key: str, sandbox: str, plans: list[Plan], clients: int, stats: Stats,
                   seed: int, prefix: str, budget: float) -> list[Outcome]:
    outcomes = [Outcome(plan=p) for p in plans]
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(len(plans)):
        queue.put_nowait(i)
    deadline = time.monotonic() + budget
    limits = httpx.Limits(max_connections=clients * 2, max_keepalive_connections=clients * 2)
    async with httpx.AsyncClient(timeout=httpx.Timeout(20, connect=2), limits=limits) as http:
        async def worker(n: int) -> None:
            client = Client(http, bases, key, stats, deadline, random.Random(seed * 1000 + n))
            while True:
                try:
                    i = queue.get_nowait()
                except asyncio.QueueEmpty:
                    return
                await run_order(client, sandbox, plans[i], outcomes[i], prefix=prefix, gateways=len(bases))
                stats.done += 1

        async with asyncio.TaskGroup() as group:     # one client failing stops the others
            for n in range(clients):
                group.create_task(worker(n))
    return outcomes


# -- healing and checking ----------------------------------------------------------------------------


@dataclass
class DbView:
    """Plain snapshots of the rows (attribute names as on the models)."""

    orders: list[Any]
    refunds: list[Any]
    order_events: list[Any]
    events: list[Any]
    deliveries: list[Any]
    inbound: list[Any]


async def read_db(database_url: str) -> DbView:
    engine = create_async_engine(database_url)
    try:
        async with engine.connect() as conn:
            views = [await _rows(conn, model) for model in (Order, Refund, OrderEvent, Event, WebhookDelivery)]
            inbound = list((await conn.execute(select(
                InboundNotification.id, InboundNotification.dedupe_key, InboundNotification.outcome,
                InboundNotification.error_code, InboundNotification.order_id,
                InboundNotification.received_at))).all())
    finally:
        await engine.dispose()
    orders, refunds, order_events, events, deliveries = views
    return DbView(orders, refunds, order_events, events, deliveries, inbound)


async def _rows(conn: Any, model: Any) -> list[SimpleNamespace]:
    props = [(prop.key, prop.columns[0]) for prop in model.__mapper__.column_attrs]
    result = await conn.execute(select(*(column for _, column in props)).order_by(model.__table__.c.id))
    return [SimpleNamespace(**{key: value for (key, _), value in zip(props, row, strict=True)})
            for row in result.all()]


async def sandbox_notifications(http: httpx.AsyncClient, sandbox: str) -> list[dict[str, Any]]:
    r = await http.get(f"{sandbox}/wechatpay/_sandbox/notifications")
    assert r.status_code == 200, r.text
    return list(r.json()["data"])


async def settle(database_url: str, sandbox: str, receiver: Receiver, *, within: float = 60) -> Settled:
    """Wait (bounded) until nothing is in flight anywhere: no order being created, no refund unsettled, no
    webhook pending, no sandbox notification pending, every event processed by the receiver.

    Stops early when the ledger is already corrupt (a negative reservation or more refunded than paid): waiting
    longer cannot repair that, and the checks that follow say what is wrong.
    """
    started = time.monotonic()
    stable = 0
    why = ""
    async with httpx.AsyncClient(timeout=10) as http:
        while time.monotonic() - started < within:
            db = await read_db(database_url)
            notes = await sandbox_notifications(http, sandbox)
            with receiver.lock:
                processed = set(receiver.processed)
            busy = {
                "orders creating": sum(o.status == "creating" for o in db.orders),
                "orders pending": sum(o.status == "pending" for o in db.orders),
                "refunds unsettled": sum(r.status in ("pending", "processing") for r in db.refunds),
                "refund reservations": sum(o.amount_refund_pending for o in db.orders),
                "webhooks pending": sum(d.status == "pending" for d in db.deliveries),
                "notifications pending": sum(n["state"] == "pending" for n in notes),
                "events unprocessed": len({e.id for e in db.events} - processed),
            }
            why = ", ".join(f"{k}={v}" for k, v in busy.items() if v)
            stable = stable + 1 if not why else 0
            if stable >= 3:
                return Settled(time.monotonic() - started, True, "", "")
            if any(o.amount_refund_pending < 0 or o.amount_refunded > o.amount for o in db.orders):
                return Settled(time.monotonic() - started, False, f"ledger corrupt: {why}", diagnose(db))
            await asyncio.sleep(0.3)
    return Settled(time.monotonic() - started, False, f"not settled within {within} s: {why}", diagnose(db))


@dataclass
class Settled:
    seconds: float
    ok: bool
    why: str
    diagnosis: str


def diagnose(db: DbView) -> str:
    """The timelines of every order that is not at rest: what happened, from which source, in which order."""
    odd = {o.id for o in db.orders if o.status in ("creating", "pending") or o.amount_refund_pending != 0
           or o.amount_refunded > o.amount}
    odd |= {r.order_id for r in db.refunds if r.status in ("pending", "processing")}
    lines = []
    for o in db.orders:
        if o.id not in odd:
            continue
        lines.append(f"order {o.id} {o.status} amount {o.amount} refunded {o.amount_refunded} "
                     f"reserved {o.amount_refund_pending} out_trade_no {o.out_trade_no}")
        for r in db.refunds:
            if r.order_id == o.id:
                lines.append(f"    refund {r.id} {r.status} {r.amount} {r.out_refund_no}")
        for e in db.order_events:
            if e.order_id == o.id:
                lines.append(f"    {e.created_at:%H:%M:%S.%f} {e.type:<24} [{e.source}] {e.from_status}->"
                             f"{e.to_status} refund={e.refund_id} {e.data}")
    return "\n".join(lines[:200])


def _bill_dates(now: datetime) -> list[date]:
    beijing = (now + timedelta(hours=8)).date()
    return sorted({beijing, (now + timedelta(hours=8) - timedelta(minutes=10)).date()})


async def provider_bill(sandbox: str, credentials: dict[str, Any]) -> list[Any]:
    """The provider's own record: the trade bill, fetched and verified by minigate's WeChat Pay client."""
    from minigate.errors import ProviderError
    from minigate.providers import registry

    spec = registry.payment_spec("wechatpay")
    assert spec is not None
    ctx = registry.SandboxContext(credentials=lambda _name: credentials, base_url=sandbox, browser_url=sandbox)
    rows: list[Any] = []
    async with httpx.AsyncClient(timeout=10) as http:
        provider = spec.build(spec.sandbox_config(ctx), http)
        for day in _bill_dates(datetime.now(UTC)):
            try:
                rows += await provider.download_bill(day)
            except ProviderError as exc:
                if exc.provider_code != "NO_STATEMENT_EXIST":
                    raise
    return rows


@dataclass
class Checked:
    report: dict[str, Any]
    violations: list[str]
    checks: int


async def run_reconciliation(database_url: str, sandbox: str, sandbox_dir: Path) -> list[Any]:
    """minigate's reconciliation of every Beijing day the run touched, report only (no repair), in-process
    against the same database and sandbox (what ``minigate reconcile --date D --no-repair`` does)."""
    from minigate.config import load_settings
    from minigate.services.reconcile import reconcile_all
    from minigate.services.runtime import Runtime

    settings = load_settings(data_dir=sandbox_dir.parent / "reconcile-data", database_url=database_url,
                             sandbox_url=sandbox, sandbox_dir=sandbox_dir, run_worker=False,
                             sandbox_time_scale=TIME_SCALE, log_level="WARNING")
    rt = Runtime(settings)
    try:
        await rt.start()
        runs: list[Any] = []
        for day in _bill_dates(datetime.now(UTC)):
            runs += await reconcile_all(rt, bill_date=day, repair=False, provider="wechatpay")
        return runs
    finally:
        await rt.aclose()


async def check_everything(*, database_url: str, sandbox: str, sandbox_dir: Path, credentials: dict[str, Any],
                           bases: list[str], key: str, outcomes: list[Outcome], receiver: Receiver,
                           scale_out: bool = False) -> Checked:
    db = await read_db(database_url)
    violations: list[str] = []
    details: list[str] = []
    checks = 0

    def check(ok: bool, message: str) -> None:
        nonlocal checks
        checks += 1
        if not ok:
            violations.append(message)

    orders_by_no: dict[str, list[Any]] = defaultdict(list)
    for o in db.orders:
        orders_by_no[o.merchant_order_no].append(o)
    orders = {o.id: o for o in db.orders}
    refunds_by_order: dict[str, list[Any]] = defaultdict(list)
    for r in db.refunds:
        refunds_by_order[r.order_id].append(r)
    timeline: dict[str, list[Any]] = defaultdict(list)
    for e in db.order_events:
        timeline[e.order_id].append(e)
    events_by_object: dict[str, list[Any]] = defaultdict(list)
    for ev in db.events:
        events_by_object[ev.object_id].append(ev)

    # 0. nothing lost, nothing doubled: every acknowledged order and refund exists exactly once
    acked = [o for o in outcomes if o.acked]
    check(len(acked) == len(outcomes), f"{len(outcomes) - len(acked)} planned orders never acknowledged")
    for out in outcomes:
        found = orders_by_no.get(out.plan.merchant_order_no, [])
        check(len(found) == 1, f"order {out.plan.merchant_order_no}: {len(found)} local rows")
        if found:
            check(found[0].id == out.order_id and found[0].out_trade_no == out.out_trade_no,
                  f"order {out.plan.merchant_order_no}: local {found[0].id} != acknowledged {out.order_id}")
            local_refunds = {r.id for r in refunds_by_order[found[0].id]}
            check(local_refunds == set(out.refund_ids),
                  f"order {found[0].id}: local refunds {sorted(local_refunds)} != acknowledged {out.refund_ids}")
    check(len(db.orders) == len(outcomes), f"{len(db.orders)} local orders for {len(outcomes)} planned")
    check(len(db.refunds) == sum(len(o.refund_ids) for o in outcomes),
          f"{len(db.refunds)} local refunds for {sum(len(o.refund_ids) for o in outcomes)} acknowledged")
    # replaying every mutating request with its key answers the first result again, without doing anything twice
    replays = 0
    async with httpx.AsyncClient(timeout=20) as http:
        for n, out in enumerate(outcomes):
            for idem, (path, body, resource) in out.keys.items():
                base = bases[n % len(bases)]
                r = await http.post(base + path, json=body or None,
                                    headers={"Authorization": f"Bearer {key}", "Idempotency-Key": idem})
                replays += 1
                check(r.status_code == 200 and r.json().get("id") == resource,
                      f"replay of {idem}: {r.status_code} {r.text[:200]}")
    after = await read_db(database_url)
    check(len(after.orders) == len(db.orders) and len(after.refunds) == len(db.refunds),
          "replays created an order or a refund")

    # provider view: every order queried, plus the trade bill
    provider: dict[str, dict[str, Any]] = {}
    async with httpx.AsyncClient(timeout=20) as http:
        for o in db.orders:
            r = await http.get(f"{sandbox}/wechatpay/_sandbox/orders/{o.out_trade_no}")
            if r.status_code == 200:
                provider[o.out_trade_no] = r.json()
            else:
                check(r.status_code == 404 and o.status == "closed",
                      f"order {o.id} ({o.status}) unknown at the provider: {r.status_code}")
        notes = await sandbox_notifications(http, sandbox)
    bill = await provider_bill(sandbox, credentials)
    bill_paid = {row.out_trade_no: row for row in bill if row.trade_state == "SUCCESS"}
    bill_refunds = {row.out_refund_no: row for row in bill if row.trade_state == "REFUND"}
    local_by_otn = {o.out_trade_no: o for o in db.orders}

    status_map = {"NOTPAY": ("pending",), "CLOSED": ("closed",), "SUCCESS": ("paid",),
                  "REFUND": ("partially_refunded", "refunded")}
    total_paid_provider = total_refunded_provider = total_held_local = 0
    for o in db.orders:
        # 1. at most one paid transition and one fulfilment event per order
        paid_moves = [e for e in timeline[o.id] if e.to_status == "paid"]
        paid_events = [e for e in events_by_object[o.id] if e.type in ("order.paid", "order.paid_after_close")]
        check(len(paid_moves) <= 1, f"order {o.id}: {len(paid_moves)} paid transitions")
        check(len(paid_events) <= 1, f"order {o.id}: {len(paid_events)} order.paid events")
        if o.status in PAID_FAMILY:
            check(len(paid_moves) == 1 and len(paid_events) == 1,
                  f"order {o.id} is {o.status} with {len(paid_moves)} paid moves, {len(paid_events)} paid events")
        # states only forward: the timeline is a chain of legal moves ending in the current status
        moves = [e for e in timeline[o.id] if e.type.startswith("order.") and e.to_status is not None]
        current = None
        for e in moves:
            if e.type == "order.created":
                check(current is None and e.to_status == "creating", f"order {o.id}: created twice")
                current = "creating"
                continue
            check(e.from_status == current and can_transition(current or "", e.to_status or ""),
                  f"order {o.id}: illegal move {e.from_status}->{e.to_status} while {current}")
            current = e.to_status
        check(current == o.status, f"order {o.id}: timeline ends in {current}, row says {o.status}")
        # 2, 3, 6. provider equals local
        seen = provider.get(o.out_trade_no)
        trade = (seen or {}).get("transaction", {})
        prov_refunds = {r["out_refund_no"]: r for r in (seen or {}).get("refunds", [])}
        if seen is not None:
            state = trade.get("trade_state")
            check(o.status in status_map.get(state, ()), f"order {o.id}: local {o.status}, provider {state}")
        if o.status in PAID_FAMILY:
            check(trade.get("amount", {}).get("total") == o.amount,
                  f"order {o.id}: provider total {trade.get('amount')} != local {o.amount}")
            check(trade.get("transaction_id") == o.provider_trade_id,
                  f"order {o.id}: provider transaction {trade.get('transaction_id')} != {o.provider_trade_id}")
            row = bill_paid.get(o.out_trade_no)
            check(row is not None and row.amount == o.amount, f"order {o.id}: bill says {row}")
            total_paid_provider += trade.get("amount", {}).get("total", 0)
            total_held_local += o.amount - o.amount_refunded
        else:
            check(o.out_trade_no not in bill_paid, f"order {o.id} is {o.status} but the provider was paid")
        succeeded = [r for r in refunds_by_order[o.id] if r.status == "succeeded"]
        check(sum(r.amount for r in succeeded) == o.amount_refunded <= o.amount,
              f"order {o.id}: refunds {sum(r.amount for r in succeeded)}, amount_refunded {o.amount_refunded}, "
              f"paid {o.amount}")
        check(len(refunds_by_order[o.id]) <= 50, f"order {o.id}: {len(refunds_by_order[o.id])} refunds")
        check(o.amount_refund_pending == 0, f"order {o.id}: {o.amount_refund_pending} fen still reserved")
        check(set(prov_refunds) == {r.out_refund_no for r in refunds_by_order[o.id]},
              f"order {o.id}: provider refunds {sorted(prov_refunds)} != local")
        for r in refunds_by_order[o.id]:
            p = prov_refunds.get(r.out_refund_no, {})
            check(r.status == "succeeded" and p.get("status") == "SUCCESS"
                  and p.get("amount", {}).get("refund") == r.amount,
                  f"refund {r.id}: local {r.status}/{r.amount}, provider {p.get('status')}/{p.get('amount')}")
            check(r.out_refund_no in bill_refunds and bill_refunds[r.out_refund_no].refund_amount == r.amount,
                  f"refund {r.id} not in the provider's bill")
            refund_moves = [e for e in timeline[o.id]
                            if e.refund_id == r.id and e.type.startswith("refund.") and e.to_status is not None]
            state = "pending"
            for e in refund_moves:
                check(e.from_status == state and refund_can_transition(state, e.to_status or ""),
                      f"refund {r.id}: illegal move {e.from_status}->{e.to_status} while {state}")
                state = e.to_status or state
            check(state == r.status, f"refund {r.id}: timeline ends in {state}, row says {r.status}")
            if any(v.startswith(f"refund {r.id}:") for v in violations):
                details.append(f"refund {r.id} timeline: " + ", ".join(
                    f"{e.type} [{e.source}] {e.from_status}->{e.to_status} at {e.created_at:%H:%M:%S.%f}"
                    for e in refund_moves))
            total_refunded_provider += p.get("amount", {}).get("refund", 0)
        # 5. every order ended where its client took it
        plan = next((out.plan for out in outcomes if out.order_id == o.id), None)
        check(plan is not None and o.status == plan.expected_status(),
              f"order {o.id}: {o.status}, planned {plan.expected_status() if plan else None}")
    check(set(bill_paid) <= set(local_by_otn), f"provider-only payments: {set(bill_paid) - set(local_by_otn)}")
    check(set(bill_refunds) == {r.out_refund_no for r in db.refunds if r.status == "succeeded"},
          "provider bill refunds != local succeeded refunds")
    # 4. conservation (Jepsen's bank): what the provider holds for us is what the ledger says we hold
    check(total_paid_provider - total_refunded_provider == total_held_local,
          f"money: provider {total_paid_provider} - {total_refunded_provider} != local {total_held_local}")
    check(sum(r.amount for r in bill_paid.values()) - sum(r.refund_amount for r in bill_refunds.values())
          == total_held_local, "money: bill totals differ from the ledger")

    # 7. every event refers to committed state, is delivered at least once and processed once
    refunds = {r.id: r for r in db.refunds}
    for ev in db.events:
        if ev.type.startswith("order."):
            target = orders.get(ev.object_id)
            check(target is not None, f"event {ev.id} about a missing order")
            if ev.type == "order.paid" and target is not None:
                check(target.status in PAID_FAMILY, f"event {ev.id} order.paid for a {target.status} order")
            if ev.type == "order.closed" and target is not None:
                check(target.status == "closed", f"event {ev.id} order.closed for a {target.status} order")
        elif ev.type.startswith("refund."):
            target_refund = refunds.get(ev.object_id)
            check(target_refund is not None and ev.type == f"refund.{target_refund.status}",
                  f"event {ev.id} {ev.type} for refund {target_refund and target_refund.status}")
    event_ids = {ev.id for ev in db.events}
    with receiver.lock:
        processed = dict(receiver.processed)
        deliveries = Counter(receiver.deliveries)
        overlap = Counter(receiver.max_overlap)
        bad = receiver.bad_signatures
    check(set(processed) == event_ids, f"receiver processed {len(processed)} events, gateway has {len(event_ids)}")
    check(all(deliveries[e] >= 1 for e in event_ids), "an event never reached the receiver")
    check(bad == 0, f"{bad} webhook deliveries failed signature verification")
    per_event_rows = Counter(d.event_id for d in db.deliveries)
    check(all(d.status == "delivered" for d in db.deliveries), "a webhook delivery is not delivered")
    check(set(per_event_rows) == event_ids and all(v == 1 for v in per_event_rows.values()),
          "delivery rows per event are not exactly one (one endpoint)")
    check(all(overlap[e] <= 1 for e in event_ids),
          f"events delivered concurrently twice: {[e for e in event_ids if overlap[e] > 1]}")
    redelivered = sum(deliveries[e] - 1 for e in event_ids if deliveries[e] > 1)
    if scale_out:   # no crash here: a SKIP LOCKED claim is never delivered twice
        check(all(deliveries[e] == per_event_rows[e] for e in event_ids),
              f"events delivered more than once per delivery row: "
              f"{[(e, deliveries[e]) for e in event_ids if deliveries[e] != per_event_rows[e]]}")
    for ev in db.events:    # the receiver got the committed event, byte for byte in its data
        got = processed.get(ev.id)
        check(got is not None and got["type"] == ev.type and got["data"] == ev.data,
              f"event {ev.id}: received {got and got['type']} differs from the stored one")

    # notifications: what the sandbox sent, what the gateways kept, what was dropped as a duplicate
    accepted = [n for n in db.inbound if n.outcome != "rejected"]
    rejected = [n for n in db.inbound if n.outcome == "rejected"]
    accepted_ids = Counter(str(n.dedupe_key).rsplit(":", 1)[-1] for n in accepted)
    check(all(v == 1 for v in accepted_ids.values()), "a provider event was accepted twice")
    check(not rejected, f"rejected notifications: {Counter(n.error_code for n in rejected)}")
    check(all(n["state"] == "delivered" for n in notes), "a sandbox notification was not delivered")
    check({n["id"] for n in notes} == set(accepted_ids),
          f"sandbox events {len(notes)} != accepted {len(accepted_ids)}")
    attempts = [a for n in notes for a in n["log"]]
    status = Counter("acked" if a.get("status") in (200, 204) else (a.get("error") or str(a.get("status")))
                     for a in attempts)
    report: dict[str, Any] = {
        "orders created": len(db.orders),
        "orders paid": sum(o.status in PAID_FAMILY for o in db.orders),
        "orders closed": sum(o.status == "closed" for o in db.orders),
        "orders refunded (full / partial)": f"{sum(o.status == 'refunded' for o in db.orders)} / "
                                            f"{sum(o.status == 'partially_refunded' for o in db.orders)}",
        "refunds succeeded": sum(r.status == "succeeded" for r in db.refunds),
        "money (paid / refunded / held, fen)": f"{total_paid_provider} / {total_refunded_provider} / "
                                                f"{total_held_local}",
        "provider events (pay + refund)": f"{len(notes)} ({Counter(n['event_type'] for n in notes)['TRANSACTION.SUCCESS']}"
                                          f" + {Counter(n['event_type'] for n in notes)['REFUND.SUCCESS']})",
        "sandbox attempts": f"{len(attempts)} ({', '.join(f'{k} {v}' for k, v in sorted(status.items()))}); "
                            f"'duplicate' resends {sum(a.get('variant') == 'duplicate' for a in attempts)}",
        "notifications accepted / rejected": f"{len(accepted)} / {len(rejected)}",
        "webhook events / deliveries (redelivered)": f"{len(event_ids)} / {sum(deliveries.values())} ({redelivered})",
        "idempotent replays checked": replays,
    }
    # 6. and minigate's own reconciliation (A-11, what `minigate reconcile --no-repair` runs) agrees: every
    # out_trade_no on the provider's bill or paid here is `matched`, nothing to repair, nothing reported
    runs = await run_reconciliation(database_url, sandbox, sandbox_dir)
    categories: Counter[str] = Counter()
    for run in runs:
        check(run.status == "complete", f"reconciliation {run.bill_date}: {run.status} ({run.reason})")
        for item in run.items:
            categories[item.category] += 1
            check(item.category == "matched" and item.action is None,
                  f"reconciliation {run.bill_date}: {item.out_trade_no} {item.category} ({item.action})")
    check(categories["matched"] == sum(o.status in PAID_FAMILY for o in db.orders),
          f"reconciliation matched {categories['matched']} of "
          f"{sum(o.status in PAID_FAMILY for o in db.orders)} paid orders")
    report["reconciliation (minigate reconcile)"] = (
        f"{len(runs)} run(s) {', '.join(r.bill_date for r in runs)}: "
        + ", ".join(f"{k} {v}" for k, v in sorted(categories.items())))
    report["_details"] = details
    report["_attempts"] = attempts
    report["_accepted"] = accepted
    report["_notes"] = notes
    return Checked(report=report, violations=violations, checks=checks)


def duplicates_from_sandbox_log(notes: list[dict[str, Any]], accepted: list[Any]) -> tuple[int, int, int]:
    """(received, acked, dropped) for one gateway fed directly by the sandbox.

    ``received``: attempts the gateway answered or that died inside it (not refused connections). An attempt
    acknowledged (2xx) is a duplicate dropped unless it is the one that committed the event's row; the
    committing attempt is the last one started before the row's ``received_at``.
    """
    row_at = {str(n.dedupe_key).rsplit(":", 1)[-1]: n.received_at.timestamp() for n in accepted}
    received = acked = dropped = 0
    for note in notes:
        log = note["log"]
        at = row_at.get(note["id"])
        committing = max((i for i, a in enumerate(log) if at is not None and a["at"] <= at + 0.001), default=None)
        for i, attempt in enumerate(log):
            if attempt.get("error") != "ConnectError":
                received += 1
            if attempt.get("status") in (200, 204):
                acked += 1
                if i != committing:
                    dropped += 1
    return received, acked, dropped


def print_report(title: str, report: dict[str, Any], violations: list[str], checks: int, extra: dict[str, Any]
                 ) -> str:
    lines = [f"== {title} " + "=" * max(0, 96 - len(title))]
    for k, v in list(extra.items()) + [(k, v) for k, v in report.items() if not k.startswith("_")]:
        lines.append(f"  {k:<44} {v}")
    lines.append(f"  {'invariant checks':<44} {checks}")
    lines.append(f"  {'violations':<44} {len(violations)}")
    for v in violations[:40]:
        lines.append(f"    ✘ {v}")
    for d in report.get("_details", [])[:80]:
        lines.append(f"      · {d}")
    lines.append("=" * 100)
    return "\n".join(lines)

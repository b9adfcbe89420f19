"""Deterministic simulation of the payment gateway (requirement A-15, VOPR-style).

A seeded ``random.Random(seed)`` chooses every step: create orders on the three channels, let payers pay, inject
faults into the simulators (lost, duplicated, tampered, delayed notifications; timeouts, 5xx, 429, charged-then-
timeout and unverifiable answers on provider calls; a merchant webhook endpoint that fails), refund (partially,
fully, two at once), close (sometimes racing a payment), forge notifications, retry earlier requests with their
``Idempotency-Key``, run worker passes and move a virtual clock. Everything goes through the gateway's public HTTP
API and the sandbox's control routes, exactly as a client, a payer or a provider would.

After **every** step the "no money lost" invariants of §A.4 that must hold at every instant are checked against the
database and the simulators' state; at the end the faults are healed, the worker runs until quiescent and the
eventual invariants (every order terminal, local state equals the provider's) are checked through the provider
clients. The step choices never depend on what the gateway answered (targets are picked among the orders *asked
for*, by index), so a seed always produces the same sequence of steps.

Entry points: :func:`run_seed` (one seed on a gateway), :func:`fresh_gateway` (a gateway outside pytest, for
``python -m tests.simulation``).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import random
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import select
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from minigate import webhook_signature
from minigate.domain.orders import ORDER_TRANSITIONS, REFUND_TRANSITIONS
from minigate.domain.results import RefundState, StandardCode, TradeState
from minigate.errors import ApiError
from minigate.services.orders import CLOSED_FOLLOWUP
from minigate.store.tables import Event, InboundNotification, Order, OrderEvent, Refund, WebhookDelivery
from tests.contract.drivers import DRIVERS, Driver

__all__ = ["Report", "Simulation", "fresh_gateway", "run_seed"]

PAID_FAMILY = frozenset({"paid", "partially_refunded", "refunded"})
TERMINAL = PAID_FAMILY | {"closed"}
PROVIDERS = tuple(d.provider for d in DRIVERS)

#: step kind -> weight
STEP_WEIGHTS: dict[str, int] = {
    "create": 18, "pay": 16, "fault": 14, "refund": 12, "close": 7, "forge": 5, "retry": 8, "worker": 10,
    "advance": 10,
}
CALL_FAULTS = ("timeout", "http_500", "http_429", "charged_then_timeout", "bad_signature")
NOTIFY_FAULTS = ("drop", "duplicate", "tamper", "delay")
#: path prefixes a next-call fault may be aimed at ("" = the next call, whatever it is)
FAULT_PATHS: dict[str, tuple[str, ...]] = {
    "wechatpay": ("", "", "/v3/pay/transactions/jsapi", "/v3/pay/transactions/out-trade-no",
                  "/v3/refund/domestic/refunds"),
    "alipay": ("", "", "alipay.trade.create", "alipay.trade.query", "alipay.trade.close", "alipay.trade.refund",
               "alipay.trade.fastpay.refund.query"),
    "jdpay": ("", "", "/service/query", "/service/refund"),
}
ADVANCE_SECONDS = (5, 20, 61, 61, 300, 601, 601, 1800, 3600, 7300)
EXPIRES_IN = (300, 900, 3600, 7200, 7200)
MERCHANT_HOST = "sim-merchant.example"


# --------------------------------------------------------------------------- report

@dataclass
class Report:
    seed: int
    steps: int = 0
    step_kinds: Counter[str] = field(default_factory=Counter)
    faults: Counter[str] = field(default_factory=Counter)
    responses: Counter[str] = field(default_factory=Counter)
    orders: Counter[str] = field(default_factory=Counter)
    refunds: Counter[str] = field(default_factory=Counter)
    notifications: Counter[str] = field(default_factory=Counter)
    webhooks: Counter[str] = field(default_factory=Counter)
    checks: Counter[str] = field(default_factory=Counter)
    violations: list[str] = field(default_factory=list)
    step_digest: str = ""
    virtual_seconds: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {"seed": self.seed, "steps": self.steps, "step_kinds": dict(sorted(self.step_kinds.items())),
                "faults": dict(sorted(self.faults.items())), "responses": dict(sorted(self.responses.items())),
                "orders": dict(sorted(self.orders.items())), "refunds": dict(sorted(self.refunds.items())),
                "notifications": dict(sorted(self.notifications.items())),
                "webhooks": dict(sorted(self.webhooks.items())), "checks": dict(sorted(self.checks.items())),
                "violations": list(self.violations), "step_digest": self.step_digest,
                "virtual_seconds": self.virtual_seconds}

    def deterministic(self) -> dict[str, Any]:
        """What a seed must reproduce exactly. Left out: which of two racing requests won (the answers' codes and
        the notification outcome of a payment also settled by a racing close), decided by real DB timing."""
        data = self.as_dict()
        del data["responses"]
        data["notifications"] = {k: v for k, v in data["notifications"].items() if not k.startswith("outcome ")}
        return data

    def summary(self) -> str:
        o, n = self.orders, self.notifications
        return (f"seed {self.seed}: {self.steps} steps, orders created {o['created']} paid {o['paid']} "
                f"refunded {o['refunded']}+{o['partially_refunded']} partial closed {o['closed']}; "
                f"faults {sum(self.faults.values())}; notifications {n['received']} "
                f"(duplicates {n['duplicates_acked']}, rejected {n['rejected']}); "
                f"invariant checks {sum(self.checks.values())}; violations {len(self.violations)}")

    def render(self) -> str:
        def line(name: str, counter: Counter[str]) -> str:
            return f"  {name:<14}" + ", ".join(f"{k} {v}" for k, v in sorted(counter.items()))
        lines = [f"simulation seed {self.seed}: {self.steps} steps, {self.virtual_seconds} s of virtual time "
                 f"(steps {self.step_digest[:12]})",
                 line("steps", self.step_kinds),
                 line("orders", self.orders),
                 line("refunds", self.refunds),
                 line("faults", self.faults),
                 line("notifications", self.notifications),
                 line("webhooks", self.webhooks),
                 line("checks", self.checks) + f"  (total {sum(self.checks.values())})",
                 f"  violations    {len(self.violations)}"]
        lines += [f"    - {v}" for v in self.violations[:20]]
        if len(self.violations) > 20:
            lines.append(f"    … {len(self.violations) - 20} more")
        return "\n".join(lines)


# --------------------------------------------------------------------------- harness state

@dataclass
class Intent:
    """An order the merchant asked for (whatever the gateway answered)."""

    index: int
    driver: Driver
    amount: int
    merchant_order_no: str
    id: str | None = None
    out_trade_no: str | None = None
    pay_params: dict[str, Any] | None = None


@dataclass
class Sent:
    """A mutating request that carried an Idempotency-Key (a candidate for a retry)."""

    kind: str
    method: str
    path: str
    body: dict[str, Any] | None
    key: str


@dataclass
class ProviderTrade:
    total: int
    paid: bool
    state: str
    refunds: dict[str, tuple[int, str]]   # out_refund_no -> (amount, SUCCESS|PROCESSING|FAILED)


class MerchantEndpoint:
    """The merchant's webhook receiver on the virtual clock: verifies signatures, records ids, can fail."""

    def __init__(self, now: Callable[[], float]) -> None:
        self.now = now
        self.secrets: list[str] = []
        self.received: Counter[str] = Counter()
        self.types: dict[str, str] = {}
        self.objects: dict[str, str] = {}
        self.rejected = 0
        self.fail_next = 0
        self.app = Starlette(routes=[Route("/hooks", self._hook, methods=["POST"])])

    async def _hook(self, request: Request) -> Response:
        body = await request.body()
        if self.fail_next > 0:
            self.fail_next -= 1
            return Response(status_code=500)
        try:
            webhook_signature.verify(body, request.headers.get("Minigate-Signature", ""), self.secrets,
                                     now=self.now())
        except webhook_signature.SignatureVerificationError:
            self.rejected += 1
            return Response(status_code=400)
        event = json.loads(body)
        self.received[event["id"]] += 1
        self.types[event["id"]] = event["type"]
        self.objects[event["id"]] = event["data"]["object"]["id"]
        return Response(status_code=204)


def _reachable(src: str, dst: str, table: dict[str, frozenset[str]]) -> bool:
    seen, todo = {src}, [src]
    while todo:
        for nxt in table.get(todo.pop(), frozenset()):
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return dst in seen


# --------------------------------------------------------------------------- the simulation

class Simulation:
    def __init__(self, gw: Any, seed: int, *, steps: int = 150) -> None:
        self.gw = gw
        self.seed = seed
        self.n_steps = steps
        self.rng = random.Random(seed)
        self.report = Report(seed)
        self.intents: list[Intent] = []
        self.sent: list[Sent] = []
        self.log: list[str] = []
        self.step = -1
        self.phase = "run"
        self.offset = 0.0
        self.base = gw.rt.now()
        self.prev_order: dict[str, str] = {}
        self.prev_refund: dict[str, str] = {}
        self.merchant = MerchantEndpoint(lambda: self.now().timestamp())
        self._requests = 0

    # ------------------------------------------------------------------ plumbing
    def now(self) -> datetime:
        return self.base + timedelta(seconds=self.offset)

    def violation(self, invariant: str, message: str) -> None:
        where = f"step {self.step}" if self.phase == "run" else self.phase
        self.report.violations.append(f"[{invariant}] {where}: {message}")

    def check(self, invariant: str, ok: bool, message: Callable[[], str]) -> None:
        self.report.checks[invariant] += 1
        if not ok:
            self.violation(invariant, message())

    def _key(self) -> str:
        self._requests += 1
        return f"sim-{self.seed}-{self._requests:05d}-{uuid.UUID(int=self.rng.getrandbits(128)).hex[:12]}"

    def _pick(self, recent: bool = False) -> Intent | None:
        if not self.intents:
            return None
        if recent:
            back = min(int(self.rng.expovariate(0.25)), len(self.intents) - 1)
            return self.intents[-1 - back]
        return self.intents[self.rng.randrange(len(self.intents))]

    async def api(self, kind: str, method: str, path: str, body: dict[str, Any] | None = None,
                  key: str | None = None) -> httpx.Response:
        headers = dict(self.gw.auth)
        if key is not None:
            headers["Idempotency-Key"] = key
        r = await self.gw.http.request(method, path, json=body, headers=headers)
        code = ""
        if r.status_code >= 400:
            try:
                code = str(r.json()["error"]["code"])
            except (ValueError, KeyError, TypeError):
                code = "?"
        self.report.responses[f"{kind} {r.status_code}{' ' + code if code else ''}"] += 1
        if r.status_code >= 500 and not (r.status_code == 503 and code == "provider_unavailable"):
            self.violation("api", f"{method} {path} answered {r.status_code}: {r.text[:300]}")
        return r

    async def sandbox(self, provider: str, method: str, path: str, **kwargs: Any) -> httpx.Response:
        return await self.gw.http.request(method, f"/sandbox/{provider}{path}", **kwargs)

    async def settle(self) -> None:
        """Let the simulators deliver everything in flight (retries run on a scaled-down schedule)."""
        await asyncio.wait_for(self.gw.rt.sandbox.wait_idle(), timeout=120)

    async def resolve(self, intent: Intent) -> bool:
        """The order's id, found the way a merchant would after a lost answer: by merchant_order_no."""
        if intent.id is None:
            r = await self.gw.http.get(f"/v1/orders?merchant_order_no={intent.merchant_order_no}",
                                       headers=self.gw.auth)
            data = r.json().get("data", []) if r.status_code == 200 else []
            if not data:
                return False
            intent.id, intent.out_trade_no = data[0]["id"], data[0]["out_trade_no"]
        return True

    async def pay_params(self, intent: Intent) -> dict[str, Any] | None:
        if intent.pay_params is None and intent.id is not None:
            r = await self.gw.http.get(f"/v1/orders/{intent.id}", headers=self.gw.auth)
            if r.status_code == 200 and r.json().get("pay_params"):
                intent.pay_params = r.json()["pay_params"]
        return intent.pay_params

    # ------------------------------------------------------------------ run
    async def run(self) -> Report:
        gw = self.gw
        gw.rt.now = self.now
        transport = getattr(gw.rt.webhook_client, "_transport", None)
        if hasattr(transport, "route"):
            transport.route(MERCHANT_HOST, self.merchant.app)
            r = await gw.http.post("/v1/webhook_endpoints", headers=gw.auth,
                                   json={"url": f"http://{MERCHANT_HOST}/hooks", "enabled_events": ["*"]})
            assert r.status_code == 200, r.text
            self.merchant.secrets.append(r.json()["secret"])
        for provider in PROVIDERS:
            await self.sandbox(provider, "DELETE", "/_sandbox/faults")
        self.log_start = {p: len(gw.rt.sandbox.simulator(p).deliverer.log) for p in PROVIDERS}
        steps = {"create": self.step_create, "pay": self.step_pay, "fault": self.step_fault,
                 "refund": self.step_refund, "close": self.step_close, "forge": self.step_forge,
                 "retry": self.step_retry, "worker": self.step_worker, "advance": self.step_advance}
        kinds, weights = list(STEP_WEIGHTS), list(STEP_WEIGHTS.values())
        for step in range(self.n_steps):
            self.step = step
            kind = self.rng.choices(kinds, weights)[0]
            self.report.step_kinds[kind] += 1
            try:
                await steps[kind]()
            except Exception as exc:  # noqa: BLE001 - an exception escaping the gateway is a finding
                self.violation("crash", f"{kind}: {type(exc).__name__}: {exc}")
            await self.settle()
            await self.check_invariants()
        self.report.steps = self.n_steps
        self.phase = "heal"
        await self.heal()
        self.report.step_digest = hashlib.sha256("\n".join(self.log).encode()).hexdigest()
        self.report.virtual_seconds = int(self.offset)
        return self.report

    # ------------------------------------------------------------------ steps
    async def step_create(self) -> None:
        rng = self.rng
        driver = rng.choice(DRIVERS)
        amount = rng.randint(1, 100_000)
        expires_in = rng.choice(EXPIRES_IN)
        intent = Intent(len(self.intents), driver, amount, f"S{self.seed}x{len(self.intents):04d}")
        self.intents.append(intent)
        key = self._key()
        body = {"channel": driver.channel, "amount": amount, "description": "Simulated item",
                "merchant_order_no": intent.merchant_order_no, "payer": {"openid": "oSimulationPayer000001"},
                "expires_in": expires_in}
        self.log.append(f"create {intent.index} {driver.channel} {amount} {expires_in}")
        self.sent.append(Sent("create", "POST", "/v1/orders", body, key))
        r = await self.api("create", "POST", "/v1/orders", body, key)
        if r.status_code == 200:
            data = r.json()
            intent.id, intent.out_trade_no = data["id"], data["out_trade_no"]
            intent.pay_params = data.get("pay_params")

    async def step_pay(self, intent: Intent | None = None) -> None:
        if intent is None:
            intent = self._pick(recent=True)
            self.log.append(f"pay {intent.index if intent else None}")
        if intent is None or not await self.resolve(intent):
            self.report.responses["pay skipped (no order)"] += 1
            return
        provider = intent.driver.provider
        if intent.driver.provider == "jdpay":   # the payer's <web-view> opens JD's H5 cashier first
            params = await self.pay_params(intent)
            if params is None:
                self.report.responses["pay skipped (no cashier)"] += 1
                return
            form = await self.gw.http.post(httpx.URL(params["cashier_url"]).path, data=params["fields"])
            self.report.responses[f"cashier {form.status_code}"] += 1
        r = await self.sandbox(provider, "POST", "/_sandbox/pay", json={"out_trade_no": intent.out_trade_no})
        self.report.responses[f"pay {r.status_code}"] += 1

    async def step_fault(self) -> None:
        rng = self.rng
        provider = rng.choice(PROVIDERS)
        kinds = CALL_FAULTS + NOTIFY_FAULTS + (("signtest_probe",) if provider == "wechatpay" else ()) \
            + ("merchant_500",)
        kind = rng.choice(kinds)
        count = rng.choice((1, 1, 1, 2, 3))
        if kind == "merchant_500":
            self.log.append(f"fault merchant_500 {count}")
            self.merchant.fail_next += count
            self.report.faults[kind] += count
            return
        if kind in CALL_FAULTS:
            path = rng.choice(FAULT_PATHS[provider])
            spec: dict[str, Any] = {"next_call": kind, "path": path, "count": count, "seconds": 0}
        else:
            spec = {"notify": kind, "count": count}
            if kind == "delay":
                spec["seconds"] = rng.choice((5, 60, 600))
        self.log.append(f"fault {provider} {json.dumps(spec, sort_keys=True)}")
        r = await self.sandbox(provider, "POST", "/_sandbox/faults", json=spec)
        assert r.status_code == 200, r.text
        self.report.faults[kind] += count

    async def step_refund(self) -> None:
        rng = self.rng
        intent = self._pick()
        mode = rng.choice(("full", "partial", "partial", "partial", "concurrent"))
        fraction = rng.uniform(0.05, 0.7)
        both_full = rng.random() < 0.4
        keys = [self._key() if rng.random() < 0.75 else None for _ in range(2)]
        self.log.append(f"refund {intent.index if intent else None} {mode} {fraction:.4f} {both_full} "
                        f"{[k is not None for k in keys]}")
        if intent is None or not await self.resolve(intent):
            self.report.responses["refund skipped (no order)"] += 1
            return
        body: dict[str, Any] = {"order": intent.id}
        if mode == "partial" or (mode == "concurrent" and not both_full):
            body["amount"] = max(1, int(intent.amount * fraction))
        if mode != "concurrent":
            if keys[0]:
                self.sent.append(Sent("refund", "POST", "/v1/refunds", body, keys[0]))
            await self.api("refund", "POST", "/v1/refunds", body, keys[0])
            return
        for key in keys:
            if key:
                self.sent.append(Sent("refund", "POST", "/v1/refunds", body, key))
        results = await asyncio.gather(*(self.api("refund_concurrent", "POST", "/v1/refunds", body, k)
                                         for k in keys), return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                self.violation("crash", f"concurrent refund: {type(result).__name__}: {result}")

    async def step_close(self) -> None:
        rng = self.rng
        intent = self._pick(recent=True)
        race = rng.random() < 0.35
        key = self._key() if rng.random() < 0.75 else None
        self.log.append(f"close {intent.index if intent else None} {race} {key is not None}")
        if intent is None or not await self.resolve(intent):
            self.report.responses["close skipped (no order)"] += 1
            return
        path = f"/v1/orders/{intent.id}/close"
        if key:
            self.sent.append(Sent("close", "POST", path, None, key))
        if not race:
            await self.api("close", "POST", path, None, key)
            return
        results = await asyncio.gather(self.api("close_racing_pay", "POST", path, None, key),
                                       self.step_pay(intent), return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                self.violation("crash", f"close racing pay: {type(result).__name__}: {result}")

    async def step_forge(self) -> None:
        intent = self._pick()
        variant = self.rng.choice(("wrong_amount", "wrong_merchant", "tampered"))
        self.log.append(f"forge {intent.index if intent else None} {variant}")
        if intent is None or not await self.resolve(intent):
            self.report.notifications["forged skipped"] += 1
            return
        driver = intent.driver
        if variant == "wrong_amount" and intent.amount == 1:
            variant = "wrong_merchant"    # the driver's "wrong" amount is 1 fen
        try:
            if variant == "tampered":
                body, headers = driver.forge(self.gw, {"out_trade_no": intent.out_trade_no})
                body = driver.tamper(body)
            else:
                overrides = driver.wrong_amount if variant == "wrong_amount" else driver.wrong_merchant
                body, headers = driver.forge(self.gw, {"out_trade_no": intent.out_trade_no}, **overrides)
        except (KeyError, AssertionError):   # the provider has no such trade yet (JD: cashier never opened)
            self.report.notifications["forged skipped"] += 1
            return
        r = await self.gw.http.post(f"/notify/{driver.provider}/test/{self.gw.app_id}", content=body,
                                    headers=headers)
        self.report.notifications[f"forged {variant}"] += 1
        self.check("5_forged_refused", r.status_code >= 400,
                   lambda: f"forged {variant} notification for order {intent.index} ({driver.provider}) "
                           f"was acknowledged: {r.status_code} {r.text[:200]}")

    async def step_retry(self) -> None:
        if not self.sent:
            self.log.append("retry None")
            return
        req = self.sent[self.rng.randrange(len(self.sent))]
        self.log.append(f"retry {req.kind} {req.key}")
        await self.api(f"retry_{req.kind}", req.method, req.path, req.body, req.key)

    async def step_worker(self) -> None:
        passes = self.rng.choice((1, 1, 2))
        self.log.append(f"worker {passes}")
        for _ in range(passes):
            await self.gw.app.state.worker.run_once()
            await self.settle()

    async def step_advance(self) -> None:
        seconds = self.rng.choice(ADVANCE_SECONDS)
        then_worker = self.rng.random() < 0.5
        self.log.append(f"advance {seconds} {then_worker}")
        self.offset += seconds
        if then_worker:
            await self.gw.app.state.worker.run_once()

    # ------------------------------------------------------------------ provider state (observation only)
    def provider_trade(self, provider: str, out_trade_no: str | None) -> ProviderTrade | None:
        if out_trade_no is None:
            return None
        sim = self.gw.rt.sandbox.simulator(provider)
        if provider == "wechatpay":
            o = sim.orders.get(out_trade_no)
            if o is None:
                return None
            return ProviderTrade(o.total, o.transaction_id is not None, o.trade_state,
                                 {r.out_refund_no: (r.refund, "SUCCESS" if r.status == "SUCCESS" else
                                                    "FAILED" if r.status in ("CLOSED", "ABNORMAL") else "PROCESSING")
                                  for r in o.refunds})
        if provider == "alipay":
            t = sim.trades.get(out_trade_no)
            if t is None:
                return None
            return ProviderTrade(t.total, t.paid_at is not None, t.status,
                                 {r.out_request_no: (r.amount, "SUCCESS") for r in t.refunds})
        t = sim.trades.get(out_trade_no)
        if t is None:
            return None
        return ProviderTrade(t.amount, t.paid_at is not None, t.status,
                             {r.trade_num: (r.amount, {"0": "PROCESSING", "1": "SUCCESS"}.get(r.status, "FAILED"))
                              for r in t.refunds})

    # ------------------------------------------------------------------ invariants (every step)
    async def load(self) -> tuple[list[Order], list[Refund], list[OrderEvent], list[Event]]:
        app_id = self.gw.app_id
        async with self.gw.rt.db.transaction() as s:
            orders = list((await s.execute(select(Order).where(Order.app_id == app_id)
                                           .order_by(Order.created_at, Order.id))).scalars())
            refunds = list((await s.execute(select(Refund).where(Refund.app_id == app_id)
                                            .order_by(Refund.created_at, Refund.id))).scalars())
            oevents = list((await s.execute(select(OrderEvent).join(Order, Order.id == OrderEvent.order_id)
                                            .where(Order.app_id == app_id).order_by(OrderEvent.id))).scalars())
            events = list((await s.execute(select(Event).where(Event.app_id == app_id)
                                           .order_by(Event.created_at, Event.id))).scalars())
        return orders, refunds, oevents, events

    async def check_invariants(self) -> None:
        orders, refunds, oevents, events = await self.load()
        by_id = {o.id: o for o in orders}
        refunds_of: dict[str, list[Refund]] = {}
        for rf in refunds:
            refunds_of.setdefault(rf.order_id, []).append(rf)
        refund_by_id = {rf.id: rf for rf in refunds}
        oev_of: dict[str, list[OrderEvent]] = {}
        for ev in oevents:
            oev_of.setdefault(ev.order_id, []).append(ev)
        ev_of: dict[str, list[Event]] = {}
        for e in events:
            ev_of.setdefault(e.object_id, []).append(e)
        amounts = {i.merchant_order_no: i.amount for i in self.intents}

        for o in orders:
            mine = oev_of.get(o.id, [])
            fulfil = [e for e in ev_of.get(o.id, []) if e.type in ("order.paid", "order.paid_after_close")]
            paid_moves = [e for e in mine if e.to_status == "paid" and e.type == "order.paid"]
            paid = o.status in PAID_FAMILY
            # (1) at most one PAID transition and one fulfilment event; a paid order has exactly one of each
            self.check("1_paid_once", len(paid_moves) == (1 if paid else 0) and len(fulfil) == (1 if paid else 0),
                       lambda o=o, p=paid_moves, f=fulfil: f"order {o.id} ({o.provider}, {o.status}): "
                       f"{len(p)} paid transitions, {len(f)} fulfilment events {[e.type for e in f]}")
            # (2) the provider's total equals the local amount, and the provider really took the money
            self.check("2_amount", o.amount == amounts.get(o.merchant_order_no, o.amount),
                       lambda o=o: f"order {o.id} amount {o.amount} differs from the request")
            trade = self.provider_trade(o.provider, o.out_trade_no)
            if paid:
                self.check("2_provider_paid", trade is not None and trade.paid and trade.total == o.amount,
                           lambda o=o, t=trade: f"order {o.id} ({o.provider}) is {o.status} locally, amount "
                           f"{o.amount}; provider: {t}")
            # (3) refunds never exceed what was paid
            mine_r = refunds_of.get(o.id, [])
            succeeded = sum(r.amount for r in mine_r if r.status == "succeeded")
            live = sum(r.amount for r in mine_r if r.status in ("pending", "processing"))
            self.check("3_refund_sum", succeeded <= o.amount and succeeded + live <= o.amount
                       and len(mine_r) <= 50 and (paid or not mine_r),
                       lambda o=o, s=succeeded, lv=live, n=len(mine_r): f"order {o.id} ({o.status}) amount "
                       f"{o.amount}: succeeded {s}, in flight {lv}, {n} refunds")
            self.check("3_refund_ledger", o.amount_refunded == succeeded and o.amount_refund_pending == live,
                       lambda o=o, s=succeeded, lv=live: f"order {o.id}: amount_refunded {o.amount_refunded} vs "
                       f"succeeded refunds {s}; amount_refund_pending {o.amount_refund_pending} vs in flight {lv}")
            expected_status = o.status
            if paid:
                expected_status = "paid" if succeeded == 0 else (
                    "refunded" if succeeded >= o.amount else "partially_refunded")
            self.check("3_refund_status", o.status == expected_status,
                       lambda o=o, s=succeeded: f"order {o.id} is {o.status} with {s} of {o.amount} refunded")
            if trade is not None:
                local = {r.out_refund_no: r for r in mine_r}
                provider_sum = sum(a for a, st in trade.refunds.values() if st != "FAILED")
                self.check("3_provider_refunds", provider_sum <= trade.total and all(
                    no in local and local[no].amount == a and (st == "FAILED" or local[no].status != "failed")
                    for no, (a, st) in trade.refunds.items()),
                    lambda o=o, t=trade, loc=local: f"order {o.id}: provider refunds {t.refunds} vs local "
                    f"{ {k: (v.amount, v.status) for k, v in loc.items()} }")
            # (4) statuses only move forward
            before = self.prev_order.get(o.id)
            self.check("4_forward", before is None or before == o.status
                       or _reachable(before, o.status, ORDER_TRANSITIONS),
                       lambda o=o, b=before: f"order {o.id} moved {b} -> {o.status}")
            self.prev_order[o.id] = o.status
            # (7) the order's event trail is the committed history of its status
            trail = [e for e in mine if e.type.startswith("order.") and e.to_status is not None]
            ok = bool(trail) and trail[0].type == "order.created" and trail[0].to_status == "creating"
            for a, b in zip(trail, trail[1:], strict=False):
                ok = ok and b.from_status == a.to_status and b.type == f"order.{b.to_status}" \
                    and b.to_status in ORDER_TRANSITIONS.get(a.to_status or "", frozenset())
            self.check("7_order_trail", ok and trail[-1].to_status == o.status,
                       lambda o=o, t=trail: f"order {o.id} ({o.status}) trail "
                       f"{[(e.type, e.from_status, e.to_status) for e in t]}")
            for e in ev_of.get(o.id, []):
                types = {x.type for x in ev_of.get(o.id, [])}
                consistent = {"order.paid": paid and any(m.from_status != "closed" for m in paid_moves),
                              "order.paid_after_close": paid and any(m.from_status == "closed" for m in paid_moves),
                              "order.closed": o.status == "closed" or (paid and "order.paid_after_close" in types),
                              }.get(e.type, False)
                self.check("7_event_state", consistent,
                           lambda o=o, e=e: f"event {e.type} for order {o.id} which is {o.status}")
            closed_events = [e for e in ev_of.get(o.id, []) if e.type == "order.closed"]
            self.check("7_event_state", len(closed_events) <= 1,
                       lambda o=o, c=closed_events: f"order {o.id}: {len(c)} order.closed events")

        for rf in refunds:
            before = self.prev_refund.get(rf.id)
            self.check("4_forward", before is None or before == rf.status
                       or _reachable(before, rf.status, REFUND_TRANSITIONS),
                       lambda rf=rf, b=before: f"refund {rf.id} moved {b} -> {rf.status}")
            self.prev_refund[rf.id] = rf.status
            trail = [e for e in oev_of.get(rf.order_id, []) if e.refund_id == rf.id and e.to_status is not None]
            state, ok = "pending", True
            for e in trail:
                ok = ok and e.from_status == state and e.type == f"refund.{e.to_status}" \
                    and e.to_status in REFUND_TRANSITIONS.get(state, frozenset())
                state = e.to_status or state
            self.check("7_refund_trail", ok and state == rf.status,
                       lambda rf=rf, t=trail: f"refund {rf.id} ({rf.status}) trail "
                       f"{[(e.type, e.from_status, e.to_status) for e in t]}")
            outcome = [e for e in ev_of.get(rf.id, [])]
            want = {"succeeded": ["refund.succeeded"], "failed": ["refund.failed"]}.get(rf.status, [])
            self.check("7_event_state", [e.type for e in outcome] == want,
                       lambda rf=rf, ev=outcome: f"refund {rf.id} ({rf.status}) has events {[e.type for e in ev]}")
        for e in events:
            self.check("7_event_object", e.object_id in by_id or e.object_id in refund_by_id,
                       lambda e=e: f"event {e.id} {e.type} refers to a missing object {e.object_id}")

    # ------------------------------------------------------------------ heal, then the eventual invariants
    async def snapshot(self) -> tuple[Any, ...]:
        orders, refunds, _, events = await self.load()
        async with self.gw.rt.db.transaction() as s:
            deliveries = list((await s.execute(select(WebhookDelivery.status).where(
                WebhookDelivery.app_id == self.gw.app_id))).scalars())
        return (tuple((o.id, o.status) for o in orders), tuple((r.id, r.status) for r in refunds), len(events),
                tuple(sorted(deliveries)))

    async def quiesce(self, step_seconds: float, rounds: int = 60) -> bool:
        last = None
        for _ in range(rounds):
            self.offset += step_seconds
            await self.gw.app.state.worker.run_once()
            await self.settle()
            snap = await self.snapshot()
            settled = all(s not in ("creating",) for _, s in snap[0]) \
                and all(s in ("succeeded", "failed") for _, s in snap[1]) and "pending" not in snap[3]
            if snap == last and settled:
                return True
            last = snap
        return False

    async def heal(self) -> None:
        for provider in PROVIDERS:
            await self.sandbox(provider, "DELETE", "/_sandbox/faults")
        self.merchant.fail_next = 0
        await self.settle()
        await self.check_invariants()
        # the worker's checks come at most 10 minutes apart: step past that until nothing changes
        if not await self.quiesce(700):
            self.violation("5_quiescent", "the worker did not settle every order, refund and webhook")
        await self.check_invariants()
        await self.eventual(final=False)
        # then let every order expire (plus grace): all of them must be terminal
        self.phase = "expiry"
        orders, *_ = await self.load()
        latest = max((o.expires_at for o in orders), default=self.now())
        if latest.tzinfo is None:
            latest = latest.replace(tzinfo=UTC)
        # past every expiry and the closed orders' last follow-up query (a day after expiry), plus grace
        gap = (latest + CLOSED_FOLLOWUP[1] - self.now()).total_seconds() + 600
        if gap > 0:
            self.offset += gap
        if not await self.quiesce(700):
            self.violation("5_quiescent", "the worker did not settle every order after expiry")
        await self.check_invariants()
        await self.eventual(final=True)
        await self.tally()

    async def eventual(self, *, final: bool) -> None:
        orders, refunds, _, events = await self.load()
        now = self.now()
        refunds_of: dict[str, list[Refund]] = {}
        for rf in refunds:
            refunds_of.setdefault(rf.order_id, []).append(rf)
        for o in orders:
            expires = o.expires_at if o.expires_at.tzinfo else o.expires_at.replace(tzinfo=UTC)
            # (5) terminal, or still pending before its expiry
            self.check("5_terminal", o.status in TERMINAL or (
                not final and o.status == "pending" and now < expires + timedelta(seconds=600)),
                lambda o=o, e=expires: f"order {o.id} ({o.provider}) is {o.status} at +{self.offset:.0f}s, "
                f"expires {e.isoformat()}")
            # (6) local state equals the provider's, asked through the provider client
            provider = await self.gw.rt.payment_provider(o.app_id, "test", o.provider)
            try:
                q = await provider.query_order(o.out_trade_no)
            except ApiError as exc:
                self.violation("6_provider_agrees", f"order {o.id}: query failed after healing: {exc}")
                continue
            state = q.value.state if q.ok and q.value is not None else None
            total = q.value.amount_total if q.ok and q.value is not None else None
            closes = o.provider != "jdpay"
            if o.status in PAID_FAMILY:
                ok = state in (TradeState.PAID, TradeState.REFUNDED) or (
                    state is TradeState.CLOSED and o.status == "refunded")   # Alipay: TRADE_CLOSED after full refund
                ok = ok and total == o.amount
            elif o.status == "closed":
                ok = state in (None, TradeState.CLOSED) or (not closes and state is TradeState.PENDING)
                ok = ok and (state is not None or q.code is StandardCode.NOT_FOUND)
                # JD has no close: a payer may still pay an open cashier after our close; if that callback is
                # lost, the follow-up query a day after expiry finds it (the sandbox's JD clock runs in real
                # time, so its trades outlive our virtual expiry). Before that window ends it is not yet owed.
                followup_due = expires + CLOSED_FOLLOWUP[1]
                if not closes and state is TradeState.PAID and not final and now < followup_due:
                    ok = True
            elif o.status == "pending":
                ok = state is TradeState.PENDING or (state is None and q.code is StandardCode.NOT_FOUND)
            else:
                ok = False
            self.check("6_provider_agrees", ok, lambda o=o, q=q: f"order {o.id} ({o.provider}) is {o.status} "
                       f"amount {o.amount} locally; provider: {q.code} {q.value.state if q.value else None} "
                       f"{q.value.amount_total if q.value else None}")
            trade = self.provider_trade(o.provider, o.out_trade_no)
            refunded = sum(r.amount for r in refunds_of.get(o.id, []) if r.status == "succeeded")
            at_provider = sum(a for a, st in (trade.refunds.values() if trade else ()) if st == "SUCCESS")
            self.check("6_provider_agrees", refunded == at_provider,
                       lambda o=o, a=refunded, b=at_provider: f"order {o.id}: refunded {a} locally, {b} at the "
                       "provider")
            for rf in refunds_of.get(o.id, []):
                try:
                    qr = await provider.query_refund(rf.out_refund_no, out_trade_no=o.out_trade_no)
                except ApiError as exc:
                    self.violation("6_provider_agrees", f"refund {rf.id}: query failed after healing: {exc}")
                    continue
                rstate = qr.value.state if qr.ok and qr.value is not None else None
                if rf.status == "succeeded":
                    ok = rstate is RefundState.SUCCEEDED and qr.value is not None and qr.value.amount in (
                        None, rf.amount)
                elif rf.status == "failed":
                    ok = rstate is RefundState.FAILED or (rstate is None and qr.code is StandardCode.NOT_FOUND)
                else:
                    ok = False
                self.check("6_provider_agrees", ok, lambda rf=rf, qr=qr, o=o: f"refund {rf.id} ({o.provider}) is "
                           f"{rf.status} locally; provider: {qr.code} {qr.value.state if qr.value else None}")
        if final:
            # (7) every outbox event reached the merchant at least once, and no event the merchant saw is unknown
            ids = {e.id for e in events}
            async with self.gw.rt.db.transaction() as s:
                statuses = list((await s.execute(select(WebhookDelivery.event_id, WebhookDelivery.status).where(
                    WebhookDelivery.app_id == self.gw.app_id))).all())
            delivered = {eid for eid, st in statuses if st == "delivered"}
            if self.merchant.secrets:
                self.check("7_delivered", ids <= delivered and ids <= set(self.merchant.received)
                           and set(self.merchant.received) <= ids,
                           lambda: f"{len(ids - delivered)} events undelivered, "
                           f"{len(set(self.merchant.received) - ids)} unknown events received")

    async def tally(self) -> None:
        orders, refunds, _, events = await self.load()
        rep = self.report
        rep.orders["requested"] = len(self.intents)
        rep.orders["created"] = len(orders)
        for o in orders:
            rep.orders[f"now_{o.status}"] += 1
        rep.orders["paid"] = sum(1 for o in orders if o.status in PAID_FAMILY)
        rep.orders["refunded"] = sum(1 for o in orders if o.status == "refunded")
        rep.orders["partially_refunded"] = sum(1 for o in orders if o.status == "partially_refunded")
        rep.orders["closed"] = sum(1 for o in orders if o.status == "closed" or any(
            e.type == "order.closed" and e.object_id == o.id for e in events))
        rep.orders["paid_after_close"] = sum(1 for e in events if e.type == "order.paid_after_close")
        for rf in refunds:
            rep.refunds[rf.status] += 1
        rep.refunds["created"] = len(refunds)
        async with self.gw.rt.db.transaction() as s:
            rows = list((await s.execute(select(InboundNotification.outcome, InboundNotification.error_code).where(
                InboundNotification.app_id == self.gw.app_id))).all())
        attempts = 0
        for provider in PROVIDERS:
            log = self.gw.rt.sandbox.simulator(provider).deliverer.log[self.log_start[provider]:]
            for record in log:
                if self.gw.app_id in record.url:
                    attempts += len(record.attempts)
                    rep.notifications["sandbox_dropped"] += record.state == "dropped"
        forged = sum(v for k, v in rep.notifications.items() if k.startswith("forged ") and k != "forged skipped")
        rep.notifications["received"] = attempts + forged
        rep.notifications["rejected"] = sum(1 for outcome, _ in rows if outcome == "rejected")
        rep.notifications["processed"] = sum(1 for outcome, _ in rows if outcome != "rejected")
        rep.notifications["duplicates_acked"] = rep.notifications["received"] - len(rows)
        for outcome, code in rows:
            rep.notifications[f"outcome {code or outcome}"] += 1
        rep.webhooks["events"] = len(events)
        rep.webhooks["merchant_received"] = sum(self.merchant.received.values())
        rep.webhooks["merchant_unique"] = len(self.merchant.received)


async def run_seed(gw: Any, seed: int, *, steps: int = 150) -> Report:
    """Run one seed against a fresh gateway (its own database and sandbox)."""
    return await Simulation(gw, seed, steps=steps).run()


# --------------------------------------------------------------------------- a gateway outside pytest

@contextlib.asynccontextmanager
async def fresh_gateway(database_url: str, data_dir: Path, sandbox_dir: Path) -> AsyncIterator[Any]:
    """The ``gateway`` fixture's wiring, for ``python -m tests.simulation``."""
    from tests.conftest import open_gateway

    async with open_gateway(database_url, data_dir, sandbox_dir) as gw:
        yield gw


def utc_now() -> datetime:
    return datetime.now(UTC)

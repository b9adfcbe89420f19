"""The scenarios: checkout (a), notification storm (b), idempotent replay (c). Each returns a JSON-able dict."""

from __future__ import annotations

import asyncio
import os
import random
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import httpx

from bench.common import latency_summary, self_cpu
from bench.harness import Sandbox, Target

JSON = dict[str, Any]


@dataclass
class Call:
    method: str
    url: str
    json: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    tag: str = ""


@dataclass
class Done:
    call: Call
    started: float
    ended: float
    status: int | None
    body: Any
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300

    @property
    def seconds(self) -> float:
        return self.ended - self.started


async def _one(client: httpx.AsyncClient, call: Call) -> Done:
    started = time.monotonic()
    try:
        response = await client.request(call.method, call.url, json=call.json, headers=call.headers)
    except httpx.HTTPError as exc:
        return Done(call, started, time.monotonic(), None, None, f"{type(exc).__name__}: {exc}"[:200])
    ended = time.monotonic()
    try:
        body = response.json()
    except ValueError:
        body = response.text[:200]
    return Done(call, started, ended, response.status_code, body,
                None if response.is_success else f"HTTP {response.status_code}: {str(body)[:200]}")


async def closed_loop(client: httpx.AsyncClient, calls: list[Call], concurrency: int) -> list[Done]:
    """``concurrency`` clients, each sending its next request as soon as the previous one is answered."""
    results: list[Done | None] = [None] * len(calls)
    it = iter(range(len(calls)))

    async def worker() -> None:
        for i in it:
            results[i] = await _one(client, calls[i])

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return [r for r in results if r is not None]


async def open_loop(client: httpx.AsyncClient, calls: list[Call], rate: float) -> list[Done]:
    """Request i is sent at t0 + i / rate whatever the answers (the payers do not wait for each other)."""
    t0 = time.monotonic()

    async def at(i: int, call: Call) -> Done:
        delay = t0 + i / rate - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        return await _one(client, call)

    return list(await asyncio.gather(*(at(i, c) for i, c in enumerate(calls))))


def _errors(done: list[Done]) -> JSON:
    bad = [d for d in done if not d.ok]
    return {"count": len(bad), "kinds": dict(Counter((d.error or "")[:60] for d in bad).most_common(5))}


class Meter:
    """CPU seconds of the system under test, the simulator and this driver between start and stop."""

    def __init__(self, target: Target, sandbox: Sandbox, extra: dict[str, Any] | None = None) -> None:
        self.procs = {"system": target.proc, "sandbox": sandbox.proc, **(extra or {})}

    def __enter__(self) -> Meter:
        self.t0 = time.monotonic()
        self.load0 = os.getloadavg()[0]
        self.cpu0 = {k: p.cpu() for k, p in self.procs.items()} | {"driver": self_cpu()}
        return self

    def stop(self) -> JSON:
        wall = time.monotonic() - self.t0
        cpu = {k: p.cpu() - self.cpu0[k] for k, p in self.procs.items()}
        cpu["driver"] = self_cpu() - self.cpu0["driver"]
        return {"wall_s": round(wall, 3), "cpu_s": {k: round(v, 3) for k, v in cpu.items()},
                "loadavg_1m": [round(self.load0, 2), round(os.getloadavg()[0], 2)],
                "cores_busy": {k: round(v / wall, 2) for k, v in cpu.items()}}

    def __exit__(self, *exc: object) -> None:
        pass


def client_for(concurrency: int) -> httpx.AsyncClient:
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    return httpx.AsyncClient(limits=limits, timeout=httpx.Timeout(60.0))


# --------------------------------------------------------------------------- (a) checkout

async def checkout(target: Target, sandbox: Sandbox, *, orders: int, concurrency: int,
                   tag: str) -> tuple[JSON, list[Done]]:
    calls = []
    for i in range(orders):
        body = target.order_body(tag, i)
        calls.append(Call("POST", target.url + target.order_path, body,
                          target.headers | {"Idempotency-Key": f"{tag}-{i}"}, tag=f"{tag}-{i}"))
    async with client_for(concurrency) as client:
        # warm-up (not measured): first-use costs (key loading, caches, connections)
        warm = [Call("POST", target.url + target.order_path, target.order_body(tag + "w", i),
                     target.headers | {"Idempotency-Key": f"{tag}w-{i}"}) for i in range(min(20, orders))]
        await closed_loop(client, warm, min(4, concurrency))
        with Meter(target, sandbox) as meter:
            done = await closed_loop(client, calls, concurrency)
            usage = meter.stop()
    ok = [d for d in done if d.ok]
    wall = usage["wall_s"]
    result = {
        "orders": orders, "concurrency": concurrency, **usage,
        "throughput_per_s": round(len(ok) / wall, 1),
        "latency": latency_summary([d.seconds for d in ok]),
        "errors": _errors(done),
        "system_cpu_ms_per_order": round(usage["cpu_s"]["system"] * 1000 / max(len(ok), 1), 3),
        "pay_params_ok": sum(1 for d in ok if _pay_sign(d.body)),
    }
    return result, done


def _pay_sign(body: Any) -> bool:
    params = body.get("pay_params") if isinstance(body, dict) else None
    return isinstance(params, dict) and bool(params.get("paySign")) and params.get("signType") == "RSA"


# --------------------------------------------------------------------------- (b) notification storm

async def _wait_for(target: Target, sandbox: Sandbox, receiver_url: str | None, expected: int, since: float,
                    wait_s: float) -> tuple[list[list[Any]], list[list[Any]], bool]:
    deadline = time.monotonic() + wait_s
    async with httpx.AsyncClient(timeout=30) as client:
        while True:
            log = (await client.get(f"{sandbox.url}/_bench/notify_log",
                                    params={"url_prefix": target.notify_prefix})).json()
            log = [row for row in log if row[1] >= since]
            acked = sum(1 for row in log if row[2] in (200, 204))
            hooks: list[list[Any]] = []
            if receiver_url is not None:
                hooks = [a for a in (await client.get(f"{receiver_url}/_stats")).json()["arrivals"] if a[0] >= since]
            if acked >= expected and (receiver_url is None or len(hooks) >= expected):
                return log, hooks, True
            if time.monotonic() > deadline:
                return log, hooks, False
            await asyncio.sleep(0.05)


async def notify(target: Target, sandbox: Sandbox, receiver_url: str | None, out_trade_nos: list[str], *,
                 rate: float | None, pay_concurrency: int = 32, wait_s: float = 180) -> JSON:
    """The simulator pays every order and fires its signed, encrypted notification; wait for completion.

    ``rate`` None: a storm (payers as fast as the driver goes, ``pay_concurrency`` at a time); otherwise the
    payments are paced at ``rate`` per second (open loop).
    """
    n = len(out_trade_nos)
    calls = [Call("POST", f"{sandbox.url}/wechatpay/_sandbox/pay", {"out_trade_no": o}, tag=o) for o in out_trade_nos]
    extra: dict[str, Any] = {}
    hooks_url = receiver_url if target.webhooks else None
    async with client_for(pay_concurrency if rate is None else 256) as client:
        since = time.monotonic()
        with Meter(target, sandbox, extra) as meter:
            if rate is None:
                paid = await closed_loop(client, calls, pay_concurrency)
            else:
                paid = await open_loop(client, calls, rate)
            pay_done = time.monotonic()
            expected = sum(1 for d in paid if d.ok)
            log, hooks, complete = await _wait_for(target, sandbox, hooks_url, expected, since, wait_s)
            usage = meter.stop()
    acked = [row for row in log if row[2] in (200, 204)]
    last_ack = max((row[1] for row in acked), default=since)
    first_pay = min((d.started for d in paid), default=since)
    paid_s = last_ack - first_pay
    result: JSON = {
        "mode": "storm" if rate is None else f"paced {rate:g}/s", "notifications": n,
        "offered_rate_per_s": rate, "pay_calls_s": round(pay_done - first_pay, 3),
        "pay_errors": _errors(paid), "complete": complete,
        "all_paid_s": round(paid_s, 3),
        "throughput_per_s": round(len(acked) / paid_s, 1) if paid_s > 0 else None,
        "latency": latency_summary([row[1] - row[0] for row in acked]),
        "notify_attempts": len(log), "errors": {"count": len(log) - len(acked),
                                                "kinds": dict(Counter(str(row[2]) for row in log
                                                                      if row[2] not in (200, 204)))},
        **{k: v for k, v in usage.items()},
        "system_cpu_ms_per_notification": round(usage["cpu_s"]["system"] * 1000 / max(len(acked), 1), 3),
    }
    if hooks_url is not None:
        paid_at = {d.call.tag: d.ended for d in paid if d.ok}
        last_hook = max((a[0] for a in hooks), default=since)
        result["webhooks_delivered"] = len(hooks)
        result["all_webhooks_s"] = round(last_hook - first_pay, 3)
        result["webhook_throughput_per_s"] = round(len(hooks) / (last_hook - first_pay), 1) if hooks else None
        result["pay_to_webhook"] = latency_summary([a[0] - paid_at[a[1]] for a in hooks if a[1] in paid_at])
    return result


# --------------------------------------------------------------------------- (c) idempotent replay

async def replay(target: Target, sandbox: Sandbox, created: list[Done], *, requests: int, concurrency: int,
                 hit_ratio: float, tag: str, seed: int = 7) -> JSON:
    rng = random.Random(seed)
    pool = [d for d in created if d.ok]
    calls: list[Call] = []
    for i in range(requests):
        if rng.random() < hit_ratio and pool:
            original = rng.choice(pool)
            calls.append(Call("POST", original.call.url, original.call.json, original.call.headers, tag="hit"))
            calls[-1].original = original  # type: ignore[attr-defined]
        else:
            calls.append(Call("POST", target.url + target.order_path, target.order_body(tag, i),
                              target.headers | {"Idempotency-Key": f"{tag}-{i}"}, tag="miss"))
    async with client_for(concurrency) as client:
        with Meter(target, sandbox) as meter:
            done = await closed_loop(client, calls, concurrency)
            usage = meter.stop()
    hits = [d for d in done if d.call.tag == "hit"]
    misses = [d for d in done if d.call.tag == "miss"]
    mismatched = sum(1 for d in hits if d.ok and d.body.get("out_trade_no")
                     != d.call.original.body.get("out_trade_no"))  # type: ignore[attr-defined]
    ok = [d for d in done if d.ok]
    return {
        "requests": requests, "hit_ratio": hit_ratio, "concurrency": concurrency, **usage,
        "throughput_per_s": round(len(ok) / usage["wall_s"], 1),
        "latency_hits": latency_summary([d.seconds for d in hits if d.ok]),
        "latency_misses": latency_summary([d.seconds for d in misses if d.ok]),
        "errors": _errors(done), "replay_mismatches": mismatched,
        "system_cpu_ms_per_request": round(usage["cpu_s"]["system"] * 1000 / max(len(ok), 1), 3),
    }

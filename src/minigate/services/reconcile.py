"""Reconciliation (A-11): a provider's trade bill of one Beijing day, matched against the ledger.

Each ``out_trade_no`` seen on the bill or paid/refunded locally that day is classified ``matched``,
``provider_only`` (paid there, not here: repaired by querying the provider through the normal path),
``local_only`` (paid here, absent from the bill: reported only), ``amount_mismatch`` (reported only) or
``status_mismatch`` (refunds disagree; a refund the bill shows but we have not settled is repaired by querying it).
What stays reported for a local order lands in the exceptions queue (``payment_exceptions``, except refund
disagreements). One run per (app, mode, provider, day): a re-run replaces that run's items in one transaction.
See docs/reconciliation.md.
"""

from __future__ import annotations

import io
import time
import weakref
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from minigate.domain.results import BillRow
from minigate.errors import ApiError, OperationNotSupported, ProviderError
from minigate.logging import get_logger
from minigate.money import fen_to_yuan
from minigate.providers import registry
from minigate.providers.bases.payment import PaymentProvider
from minigate.services import orders as order_service
from minigate.services import refunds as refund_service
from minigate.services.exceptions import open_exception
from minigate.services.ids import new_id
from minigate.services.runtime import Runtime
from minigate.store.tables import App, AppCredential, Order, ReconciliationItem, ReconciliationRun, Refund

__all__ = ["BEIJING", "Item", "Report", "beijing_yesterday", "reconcile", "reconcile_all", "reconcile_due",
           "render_table", "report_from_rows", "targets"]

log = get_logger("minigate.reconcile")

BEIJING = timezone(timedelta(hours=8), "Asia/Shanghai")
PAID = ("paid", "partially_refunded", "refunded")
SOURCE = "reconcile"
#: provider answers that mean "no transactions that day" (an empty bill), not "no bill yet"
EMPTY_BILL_CODES = frozenset({"NO_STATEMENT_EXIST"})
#: WeChat Pay publishes the previous day's bill after ~10:00 Beijing time
PUBLISH_HOUR = 10
RETRY_AFTER = timedelta(hours=1)          # a failed (or crashed "running") scheduled run is tried again after this
#: findings left "reported" that are queued for a person (A-11: every unresolved difference has an owner);
#: refund disagreements included. Reconciliation never resolves them.
EXCEPTION_KINDS = frozenset({"provider_only", "local_only", "amount_mismatch", "status_mismatch"})
_CHUNK = 500
_last_due: weakref.WeakKeyDictionary[Runtime, float] = weakref.WeakKeyDictionary()


@dataclass(slots=True)
class Item:
    out_trade_no: str
    category: str                      # matched | provider_only | local_only | amount_mismatch | status_mismatch
    action: str | None = None          # None (matched) | repaired | reported
    order_id: str | None = None
    local_amount: int | None = None
    provider_amount: int | None = None
    data: dict[str, Any] = field(default_factory=dict)

    def view(self) -> dict[str, Any]:
        return {"out_trade_no": self.out_trade_no, "order": self.order_id, "category": self.category,
                "action": self.action, "local_amount": self.local_amount, "provider_amount": self.provider_amount,
                "detail": self.data}


@dataclass(slots=True)
class Report:
    id: str
    app_id: str
    mode: str
    provider: str
    bill_date: str
    status: str                        # complete | unsupported | failed | running (claimed by the scheduler)
    created_at: datetime
    summary: dict[str, Any]
    items: list[Item] = field(default_factory=list)

    @property
    def reason(self) -> str | None:
        return self.summary.get("reason")

    @property
    def needs_attention(self) -> bool:
        return any(item.action == "reported" for item in self.items)

    def as_json(self, *, items: bool = True) -> dict[str, Any]:
        view: dict[str, Any] = {
            "id": self.id, "object": "reconciliation_run", "app": self.app_id, "livemode": self.mode == "live",
            "provider": self.provider, "bill_date": self.bill_date, "status": self.status, "reason": self.reason,
            "created": int(self.created_at.timestamp()), "ran_at": self.summary.get("ran_at"),
            "summary": {k: v for k, v in self.summary.items() if k not in ("reason", "ran_at")}}
        if items:
            view["items"] = [item.view() for item in self.items]
        return view


def beijing_yesterday(now: datetime) -> date:
    return now.astimezone(BEIJING).date() - timedelta(days=1)


def _window(day: date) -> tuple[datetime, datetime]:
    start = datetime(day.year, day.month, day.day, tzinfo=BEIJING)
    return start, start + timedelta(days=1)


# -- one run ------------------------------------------------------------------------------------------
async def reconcile(rt: Runtime, *, app_id: str, mode: str, provider: str, bill_date: date,
                    repair: bool = True) -> Report:
    """Download the bill, match it against the ledger, repair what is safe, store and return the run."""
    key = (app_id, mode, provider, bill_date)
    note: str | None = None
    try:
        client = await rt.payment_provider(app_id, mode, provider)
        rows = await client.download_bill(bill_date)
    except OperationNotSupported as exc:
        return await _store(rt, key, "unsupported", [], {"reason": str(exc)})
    except ProviderError as exc:
        if exc.provider_code not in EMPTY_BILL_CODES:
            log.warning("bill download failed", app_id=app_id, provider=provider, bill_date=str(bill_date),
                        provider_code=exc.provider_code)
            return await _store(rt, key, "failed", [], {"reason": f"{type(exc).__name__}: {exc}"})
        rows, note = [], f"the provider has no bill for the day ({exc.provider_code}): no transactions"
    except ApiError as exc:                # e.g. no live credentials for this provider
        return await _store(rt, key, "failed", [], {"reason": exc.message})
    ledger = await _Ledger.load(rt, app_id, mode, provider, bill_date, rows)
    items = [item for no in ledger.numbers() if (item := ledger.classify(no)) is not None]
    if repair:
        items = [await _repair(rt, client, ledger, item) if item.action == "reported" else item for item in items]
    extra = {"reason": note, "repair": repair, "bill_rows": len(rows), "ledger_orders": ledger.own_count(),
             "foreign_rows": ledger.foreign, "unpaid_created": ledger.unpaid_created}
    return await _store(rt, key, "complete", items, extra)


class _Ledger:
    """The bill and the local rows it is matched against, for one (app, mode, provider, day)."""

    def __init__(self, app_id: str, mode: str, day: date, rows: list[BillRow]) -> None:
        self.app_id, self.mode, self.window = app_id, mode, _window(day)
        self.payments: dict[str, BillRow] = {}
        self.bill_refunds: dict[str, list[BillRow]] = {}
        for row in rows:
            if row.trade_state == "REFUND" or row.refund_amount or row.out_refund_no:
                self.bill_refunds.setdefault(row.out_trade_no, []).append(row)
            else:
                self.payments[row.out_trade_no] = row
        self.orders: dict[str, Order] = {}
        self.refunds: dict[str, list[Refund]] = {}
        self.foreign = 0
        self.unpaid_created = 0

    @classmethod
    async def load(cls, rt: Runtime, app_id: str, mode: str, provider: str, day: date,
                   rows: list[BillRow]) -> _Ledger:
        self = cls(app_id, mode, day, rows)
        start, end = self.window
        on_bill = sorted(set(self.payments) | set(self.bill_refunds))
        own = (Order.app_id == app_id, Order.mode == mode, Order.provider == provider)
        async with rt.db.transaction() as session:
            for i in range(0, len(on_bill), _CHUNK):
                self._add((await session.execute(select(Order).where(
                    Order.provider == provider, Order.out_trade_no.in_(on_bill[i:i + _CHUNK])))).scalars())
            self._add((await session.execute(select(Order).where(
                *own, Order.paid_at >= start, Order.paid_at < end))).scalars())
            refunded = select(Refund.order_id).where(
                Refund.app_id == app_id, Refund.mode == mode, Refund.provider == provider,
                Refund.status == "succeeded", Refund.succeeded_at >= start, Refund.succeeded_at < end)
            self._add((await session.execute(select(Order).where(Order.id.in_(refunded)))).scalars())
            self.unpaid_created = (await session.execute(select(func.count()).select_from(Order).where(
                *own, Order.status.in_(("creating", "pending")), Order.created_at >= start,
                Order.created_at < end))).scalar_one()
            await self.reload_refunds(session, list(self.orders.values()))
        return self

    def _add(self, orders: Any) -> None:
        for order in orders:
            self.orders[order.out_trade_no] = order

    async def reload_refunds(self, session: AsyncSession, orders: list[Order]) -> None:
        ids = [o.id for o in orders]
        for i in range(0, len(ids), _CHUNK):
            found = (await session.execute(select(Refund).where(Refund.order_id.in_(ids[i:i + _CHUNK])))).scalars()
            by_order: dict[str, list[Refund]] = {}
            for refund in found:
                by_order.setdefault(refund.order_id, []).append(refund)
            for order in orders[i:i + _CHUNK]:
                self.refunds[order.out_trade_no] = by_order.get(order.id, [])

    def numbers(self) -> list[str]:
        return sorted(set(self.payments) | set(self.bill_refunds) | set(self.orders))

    def own_count(self) -> int:
        return sum(1 for o in self.orders.values() if (o.app_id, o.mode) == (self.app_id, self.mode))

    def _in_day(self, moment: datetime | None) -> bool:
        return moment is not None and self.window[0] <= moment < self.window[1]

    def classify(self, no: str) -> Item | None:
        order, payment, refund_rows = self.orders.get(no), self.payments.get(no), self.bill_refunds.get(no, [])
        seen = payment or (refund_rows[0] if refund_rows else None)
        provider_amount = seen.amount if seen is not None else None
        if order is None:
            return Item(no, "provider_only", "reported", provider_amount=provider_amount,
                        data={"reason": "unknown_to_ledger",
                              "provider_trade_id": seen.provider_trade_id if seen else None})
        if (order.app_id, order.mode) != (self.app_id, self.mode):
            self.foreign += 1              # another app on the same merchant account (e.g. the shared sandbox)
            return None
        item = Item(no, "matched", None, order.id, order.amount, provider_amount, {"local_status": order.status})
        paid = order.status in PAID
        if seen is not None and seen.amount != order.amount:
            item.category, item.action = "amount_mismatch", "reported"
        elif seen is not None and not paid:
            item.category, item.action = "provider_only", "reported"
        elif payment is None and paid and self._in_day(order.paid_at):
            item.category, item.action = "local_only", "reported"
        elif problems := self._refund_problems(no, refund_rows):
            item.category, item.action = "status_mismatch", "reported"
            item.data["refunds"] = problems
        return item

    def _refund_problems(self, no: str, rows: list[BillRow]) -> list[dict[str, Any]]:
        local = {r.out_refund_no: r for r in self.refunds.get(no, [])}
        problems: list[dict[str, Any]] = []
        for row in rows:
            refund = local.get(row.out_refund_no or "")
            base = {"out_refund_no": row.out_refund_no, "provider_amount": row.refund_amount}
            if refund is None:
                problems.append(base | {"problem": "unknown_to_ledger"})
            elif refund.amount != row.refund_amount:
                problems.append(base | {"problem": "amount_differs", "refund": refund.id,
                                        "local_amount": refund.amount})
            elif refund.status != "succeeded":
                problems.append(base | {"problem": "not_succeeded_locally", "refund": refund.id,
                                        "local_status": refund.status})
        on_bill = {row.out_refund_no for row in rows}
        for refund in local.values():
            if refund.status == "succeeded" and self._in_day(refund.succeeded_at) \
                    and refund.out_refund_no not in on_bill:
                problems.append({"out_refund_no": refund.out_refund_no, "problem": "not_on_bill",
                                 "refund": refund.id, "local_amount": refund.amount})
        return problems


async def _repair(rt: Runtime, client: PaymentProvider, ledger: _Ledger, item: Item) -> Item:
    """Ask the provider through the normal paths (query → apply), then classify again."""
    if item.order_id is None or item.category not in ("provider_only", "status_mismatch"):
        return item
    attempts: list[dict[str, Any]] = []
    current = item
    try:
        if current.category == "provider_only":
            outcome = await order_service.apply_query_result(
                rt, item.order_id, await client.query_order(item.out_trade_no), source=SOURCE)
            attempts.append({"query_order": outcome})
            current = await _reclassify(rt, ledger, item)
        if current.category == "status_mismatch":
            for problem in current.data.get("refunds", []):
                if problem["problem"] != "not_succeeded_locally":
                    continue
                result = await client.query_refund(problem["out_refund_no"], out_trade_no=item.out_trade_no)
                if result.ok:
                    refund = await refund_service.apply_refund_result(rt, problem["refund"], result, source=SOURCE)
                    attempts.append({"query_refund": problem["out_refund_no"], "status": refund.status})
                else:
                    attempts.append({"query_refund": problem["out_refund_no"], "code": result.code.value})
            current = await _reclassify(rt, ledger, current) if attempts else current
    except ProviderError as exc:
        attempts.append({"error": type(exc).__name__, "provider_code": exc.provider_code})
    if current.category == "matched":
        return Item(item.out_trade_no, item.category, "repaired", item.order_id, current.local_amount,
                    item.provider_amount, item.data | {"repair": attempts, "now": current.data})
    current.data["repair"] = attempts
    return current


async def _reclassify(rt: Runtime, ledger: _Ledger, item: Item) -> Item:
    async with rt.db.transaction() as session:
        order = await session.get(Order, item.order_id, populate_existing=True)
        assert order is not None
        ledger.orders[item.out_trade_no] = order
        await ledger.reload_refunds(session, [order])
    again = ledger.classify(item.out_trade_no)
    assert again is not None
    return again


async def _store(rt: Runtime, key: tuple[str, str, str, date], status: str, items: list[Item],
                 extra: dict[str, Any]) -> Report:
    """Replace the day's run (same id) and its items, and queue exceptions — one transaction."""
    app_id, mode, provider, day = key
    now = rt.now()
    counts: dict[str, int] = {}
    for item in items:
        counts[item.category] = counts.get(item.category, 0) + 1
    async with rt.db.transaction() as session:
        run = await _day_run(session, key)
        if run is None:
            run = ReconciliationRun(id=new_id("rcn"), app_id=app_id, mode=mode, provider=provider,
                                    bill_date=day.isoformat(), created_at=now)
            session.add(run)
        else:
            await session.execute(delete(ReconciliationItem).where(ReconciliationItem.run_id == run.id))
        run.status = status
        run.summary = {**extra, "ran_at": int(now.timestamp()), "runs": int((run.summary or {}).get("runs", 0)) + 1,
                       "counts": counts, "repaired": sum(1 for i in items if i.action == "repaired"),
                       "reported": sum(1 for i in items if i.action == "reported")}
        await session.flush()
        session.add_all(ReconciliationItem(run_id=run.id, order_id=i.order_id, out_trade_no=i.out_trade_no,
                                           category=i.category, action=i.action, local_amount=i.local_amount,
                                           provider_amount=i.provider_amount, data=i.data) for i in items)
        for item in items:
            # provider_only is queued only when a repair was tried and failed (not on --no-repair dry runs)
            if item.action == "reported" and item.order_id and item.category in EXCEPTION_KINDS \
                    and (item.category != "provider_only" or "repair" in item.data):
                await _raise_exception(rt, session, run, item)
    if counts.get("matched", 0) != len(items):
        log.warning("reconciliation found differences", app_id=app_id, mode=mode, provider=provider,
                    bill_date=run.bill_date, counts=counts)
    return Report(run.id, app_id, mode, provider, run.bill_date, status, run.created_at, run.summary, items)


async def _day_run(session: AsyncSession, key: tuple[str, str, str, date]) -> ReconciliationRun | None:
    """The day's run, with the app row locked so concurrent runs of one app queue (no-op lock on SQLite)."""
    app_id, mode, provider, day = key
    # FOR NO KEY UPDATE: queues other runs of the app without blocking inserts that reference the app row
    await session.execute(select(App.id).where(App.id == app_id).with_for_update(key_share=True))
    return (await session.execute(select(ReconciliationRun).where(
        ReconciliationRun.app_id == app_id, ReconciliationRun.mode == mode, ReconciliationRun.provider == provider,
        ReconciliationRun.bill_date == day.isoformat()).order_by(ReconciliationRun.created_at)
        .limit(1))).scalar_one_or_none()


async def _raise_exception(rt: Runtime, session: AsyncSession, run: ReconciliationRun, item: Item) -> None:
    """Queue the finding once per (order, kind) through the exceptions queue (never resolved here)."""
    assert item.order_id is not None
    order = await order_service.lock_order(session, item.order_id)
    await open_exception(rt, session, order, item.category, {
        "source": "reconciliation", "run": run.id, "bill_date": run.bill_date, "provider": run.provider,
        "out_trade_no": item.out_trade_no, "local_amount": item.local_amount,
        "provider_amount": item.provider_amount})


# -- every app, and the daily schedule ------------------------------------------------------------------
async def targets(rt: Runtime, *, app_id: str | None = None, provider: str | None = None) -> list[tuple[str, str, str]]:
    """(app, mode, provider) to reconcile: stored payment credentials, plus test-mode providers in use (sandbox)."""
    payment = set(registry.payment_specs())
    async with rt.db.transaction() as session:
        rows = list(await session.execute(select(AppCredential.app_id, AppCredential.mode,
                                                 AppCredential.provider).distinct()))
        rows += list(await session.execute(select(Order.app_id, Order.mode, Order.provider)
                                           .where(Order.mode == "test").distinct()))
    found = {(str(a), str(m), str(p)) for a, m, p in rows}
    return sorted(t for t in found if t[2] in payment and app_id in (None, t[0]) and provider in (None, t[2]))


async def reconcile_all(rt: Runtime, *, bill_date: date, repair: bool = True, app_id: str | None = None,
                        provider: str | None = None) -> list[Report]:
    return [await reconcile(rt, app_id=a, mode=m, provider=p, bill_date=bill_date, repair=repair)
            for a, m, p in await targets(rt, app_id=app_id, provider=provider)]


async def reconcile_due(rt: Runtime, *, interval_seconds: float = 300.0) -> int:
    """For the worker, once per pass: yesterday's (Beijing) run per target after 10:00 if none exists yet.

    Checks the database at most every ``interval_seconds`` per runtime; returns how many runs it made."""
    clock = time.monotonic()
    last = _last_due.get(rt)
    if last is not None and clock - last < interval_seconds:
        return 0
    _last_due[rt] = clock
    now = rt.now()
    if now.astimezone(BEIJING).hour < PUBLISH_HOUR:
        return 0
    day, done = beijing_yesterday(now), 0
    for app_id, mode, provider in await targets(rt):
        if not await _claim(rt, (app_id, mode, provider, day)):
            continue
        try:
            await reconcile(rt, app_id=app_id, mode=mode, provider=provider, bill_date=day)
        except Exception:  # one broken target must not stop the others; logged with its traceback
            log.exception("scheduled reconciliation failed", app_id=app_id, provider=provider, bill_date=str(day))
        done += 1
    return done


async def _claim(rt: Runtime, key: tuple[str, str, str, date]) -> bool:
    """Mark the day's run ``running`` unless it is done, running, or failed less than an hour ago."""
    now = rt.now()
    async with rt.db.transaction() as session:
        run = await _day_run(session, key)
        if run is not None:
            ran_at = datetime.fromtimestamp(int((run.summary or {}).get("ran_at", 0)), tz=BEIJING)
            if run.status in ("complete", "unsupported") or now - ran_at < RETRY_AFTER:
                return False
            run.status, run.summary = "running", {**(run.summary or {}), "ran_at": int(now.timestamp())}
            return True
        session.add(ReconciliationRun(id=new_id("rcn"), app_id=key[0], mode=key[1], provider=key[2],
                                      bill_date=key[3].isoformat(), status="running",
                                      summary={"ran_at": int(now.timestamp()), "runs": 0}, created_at=now))
    return True


# -- rendering -------------------------------------------------------------------------------------------
def report_from_rows(run: ReconciliationRun, items: list[ReconciliationItem]) -> Report:
    """A stored run (and its items, if loaded) as a :class:`Report`."""
    return Report(run.id, run.app_id, run.mode, run.provider, run.bill_date, run.status, run.created_at,
                  dict(run.summary or {}), [Item(i.out_trade_no, i.category, i.action, i.order_id, i.local_amount,
                                                 i.provider_amount, dict(i.data or {})) for i in items])


def _yuan(fen: int | None) -> str:
    return "" if fen is None else ("-" if fen < 0 else "") + fen_to_yuan(abs(fen))


def render_table(report: Report) -> str:
    """The run as a human-readable table (matched orders are counted, not listed)."""
    from rich.console import Console
    from rich.table import Table

    buffer = io.StringIO()
    console = Console(file=buffer, width=132, color_system=None, force_terminal=False, highlight=False)
    console.print(f"{report.provider} · {report.app_id} ({report.mode}) · {report.bill_date} · {report.status}")
    if report.reason:
        console.print(f"  {report.reason}")
    summary = report.summary
    if report.status == "complete":
        counts = ", ".join(f"{k} {v}" for k, v in sorted(summary.get("counts", {}).items())) or "nothing to match"
        console.print(f"  bill rows {summary.get('bill_rows', 0)} · {counts} · repaired {summary.get('repaired', 0)}"
                      f" · reported {summary.get('reported', 0)}")
    shown = [item for item in report.items if item.category != "matched"]
    if shown:
        table = Table("out_trade_no", "order", "category", "action", "local ¥", "provider ¥", "detail")
        for item in shown:
            now = item.data.get("now", {}).get("local_status")
            detail = item.data.get("reason") or "; ".join(
                f"{p['out_refund_no']}: {p['problem']}" for p in item.data.get("refunds", [])) or \
                f"local status {item.data.get('local_status', '-')}" + (f" → {now}" if now else "")
            table.add_row(item.out_trade_no, item.order_id or "-", item.category, item.action or "",
                          _yuan(item.local_amount), _yuan(item.provider_amount), detail)
        console.print(table)
    return buffer.getvalue()

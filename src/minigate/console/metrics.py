"""The dashboard's numbers: aggregates over the ledger tables for one app and mode, read in one transaction.

Every statement filters on the app, the mode and a time column that an index leads with (``ix_orders_app_created``,
``ix_sms_messages_app_created``, ``ix_identity_verifications_app_created``; webhook backlogs through
``ix_webhook_deliveries_due``), and only counts and sums leave the database. Refunds are the exception: their
table has no (app, mode, created) index yet, so their range is a scan of ``refunds`` until one is added.

Days are cut at midnight of a fixed UTC offset (:data:`TIMEZONES`: UTC, or China Standard Time, which has no
daylight saving): the range is bound as UTC instants (so it uses the index) and a row's day is its whole seconds
since the first midnight, floor-divided by 86,400 — the same integer arithmetic on SQLite and PostgreSQL.

What counts where:

* orders count on the day they were **created**; an order is *paid* when the ledger holds a ``paid_at`` (paid,
  partially or fully refunded since); the success rate of a day is paid ÷ created;
* *pending* (waiting for the payer) and *unknown outcome* (``creating``: the provider's answer to the creation
  never arrived; the worker resolves it by query) are what stands open **now**, whatever the range;
* refunds count on the day they were created, by status; the amount refunded is that of succeeded refunds;
* webhook *backlog* is every delivery waiting now (``retrying`` the ones that already failed at least once);
  *dead* deliveries are those abandoned among the ones created in the range;
* SMS delivery rate per provider = delivered ÷ handed to that provider (sent, delivered, failed or unknown);
  messages refused before any provider are listed under no provider;
* identity pass rate = passed ÷ decided (passed + failed); pending and expired checks are listed beside it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from sqlalchemy import ColumnElement, Integer, and_, case, cast, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from minigate.console.web import query_date
from minigate.errors import InvalidRequest
from minigate.services.apps import AppContext
from minigate.services.runtime import Runtime
from minigate.store.tables import IdentityVerification, Order, Refund, SmsMessage, WebhookDelivery, WebhookEndpoint

__all__ = ["DEFAULT_DAYS", "MAX_DAYS", "TIMEZONES", "DayRange", "Snapshot", "day_range", "snapshot"]

#: the time zones a day can be cut in: name -> minutes east of UTC (fixed; neither observes daylight saving)
TIMEZONES: dict[str, int] = {"UTC": 0, "Asia/Shanghai": 480}
DEFAULT_DAYS = 14
MAX_DAYS = 92
#: order statuses that mean the ledger verified a payment
PAID_STATUSES = ("paid", "partially_refunded", "refunded")
#: SMS statuses of a message some provider accepted or was asked to take
HANDED_OVER = ("sent", "delivered", "failed", "unknown")


@dataclass(frozen=True)
class DayRange:
    """Inclusive local days ``start..end`` cut at midnight of ``tz``."""

    start: date
    end: date
    tz: str

    @property
    def days(self) -> list[date]:
        return [self.start + timedelta(days=i) for i in range((self.end - self.start).days + 1)]

    def boundaries(self) -> list[datetime]:
        """The UTC instant each local day starts, and the end of the last one (``len(days) + 1`` values)."""
        offset = timedelta(minutes=TIMEZONES[self.tz])
        return [datetime.combine(self.start + timedelta(days=i), time(), UTC) - offset
                for i in range(len(self.days) + 1)]


def day_range(now: datetime, start: str | None, end: str | None, tz: str | None) -> DayRange:
    """The range a person asked for (``YYYY-MM-DD`` strings from a query), or today and the 13 days before it.
    Bad input is refused with the same codes as the analytics API."""
    zone = tz or "UTC"
    if zone not in TIMEZONES:
        raise InvalidRequest(f"tz must be one of {', '.join(TIMEZONES)}", param="tz", code="parameter_invalid")
    today = (now.astimezone(UTC) + timedelta(minutes=TIMEZONES[zone])).date()
    last = query_date("to", end) or today
    first = query_date("from", start) or last - timedelta(days=DEFAULT_DAYS - 1)
    if last < first:
        raise InvalidRequest("to must not be before from", param="to", code="invalid_range")
    if (last - first).days >= MAX_DAYS:
        raise InvalidRequest(f"ranges are limited to {MAX_DAYS} days", param="to", code="invalid_range")
    return DayRange(first, last, zone)


@dataclass
class Snapshot:
    """Everything the dashboard shows, as plain numbers (amounts in fen)."""

    range: DayRange
    #: channel -> per day (count of orders created, count paid, amount paid)
    created: dict[str, list[int]] = field(default_factory=dict)
    paid: dict[str, list[int]] = field(default_factory=dict)
    paid_amount: dict[str, list[int]] = field(default_factory=dict)
    #: open now: status -> count (``pending``, ``creating``)
    open_orders: dict[str, int] = field(default_factory=dict)
    #: refund status -> (count, amount)
    refunds: dict[str, tuple[int, int]] = field(default_factory=dict)
    #: per day: refunds created, amount of the succeeded ones
    refunds_daily: list[tuple[int, int]] = field(default_factory=list)
    webhooks: dict[str, int] = field(default_factory=dict)
    #: provider ('' when none was reached) -> status -> count
    sms: dict[str, dict[str, int]] = field(default_factory=dict)
    #: kind -> status -> count
    identity: dict[str, dict[str, int]] = field(default_factory=dict)

    # ---- derived
    @property
    def channels(self) -> list[str]:
        return sorted(self.created)

    def daily_created(self) -> list[int]:
        return [sum(v[i] for v in self.created.values()) for i in range(len(self.range.days))]

    def daily_paid(self) -> list[int]:
        return [sum(v[i] for v in self.paid.values()) for i in range(len(self.range.days))]

    def success_rate_daily(self) -> list[float | None]:
        return [_percent(p, c) for p, c in zip(self.daily_paid(), self.daily_created(), strict=True)]

    @property
    def total_created(self) -> int:
        return sum(self.daily_created())

    @property
    def total_paid(self) -> int:
        return sum(self.daily_paid())

    @property
    def total_paid_amount(self) -> int:
        return sum(sum(v) for v in self.paid_amount.values())

    @property
    def success_rate(self) -> float | None:
        return _percent(self.total_paid, self.total_created)

    def sms_rates(self) -> dict[str, float | None]:
        return {p: _percent(s.get("delivered", 0), sum(s.get(x, 0) for x in HANDED_OVER))
                for p, s in sorted(self.sms.items()) if p}

    @property
    def sms_rate(self) -> float | None:
        handed = sum(s.get(x, 0) for p, s in self.sms.items() if p for x in HANDED_OVER)
        return _percent(sum(s.get("delivered", 0) for p, s in self.sms.items() if p), handed)

    def identity_totals(self) -> dict[str, int]:
        totals: dict[str, int] = {}
        for statuses in self.identity.values():
            for status, n in statuses.items():
                totals[status] = totals.get(status, 0) + n
        return totals

    @property
    def identity_rate(self) -> float | None:
        t = self.identity_totals()
        return _percent(t.get("passed", 0), t.get("passed", 0) + t.get("failed", 0))


def _percent(part: int, whole: int) -> float | None:
    return round(100.0 * part / whole, 1) if whole else None


def _day_of(column: Any, bounds: list[datetime], dialect: str) -> ColumnElement[Any]:
    """The index of the local day ``column`` falls in (rows are already limited to ``bounds[0]..bounds[-1]``):
    whole seconds since the first midnight, floor-divided by a day. Each backend's own epoch function (a portable
    ``CASE`` with a branch per day costs a third more on SQLite at 92 days)."""
    start = int(bounds[0].timestamp())
    if dialect == "postgresql":
        return cast(func.floor((func.extract("epoch", column) - start) / 86400), Integer)
    if dialect == "sqlite":
        return (cast(func.strftime("%s", column), Integer) - start) // 86400
    return case(*[(column < b, i) for i, b in enumerate(bounds[1:])], else_=None)


async def snapshot(rt: Runtime, ctx: AppContext, rng: DayRange) -> Snapshot:
    """The dashboard's numbers for ``ctx``'s app and mode, all read in one transaction that sees one moment: on
    PostgreSQL the transaction is REPEATABLE READ (read committed would let a payment landing between two
    statements count in one tile and not the next); SQLite's WAL reader keeps one snapshot already."""
    snap = Snapshot(rng)
    dialect = rt.db.engine.dialect.name
    async with rt.db.read() as session:
        if dialect == "postgresql":
            await session.connection(execution_options={"isolation_level": "REPEATABLE READ"})
        await _orders(session, ctx, rng, snap, dialect)
        await _refunds(session, ctx, rng, snap, dialect)
        await _webhooks(session, ctx, rng, snap)
        await _sms(session, ctx, rng, snap)
        await _identity(session, ctx, rng, snap)
    return snap


async def _orders(session: AsyncSession, ctx: AppContext, rng: DayRange, snap: Snapshot, dialect: str) -> None:
    bounds = rng.boundaries()
    n = len(rng.days)
    rows = (select(_day_of(Order.created_at, bounds, dialect).label("d"), Order.channel, Order.amount, Order.paid_at)
            .where(Order.app_id == ctx.app_id, Order.mode == ctx.mode,
                   Order.created_at >= bounds[0], Order.created_at < bounds[-1])
            .subquery())
    stmt = (select(rows.c.d, rows.c.channel, func.count(), func.count(rows.c.paid_at),
                   func.coalesce(func.sum(case((rows.c.paid_at.is_not(None), rows.c.amount), else_=0)), 0))
            .group_by(rows.c.d, rows.c.channel))
    for d, channel, created, paid, amount in (await session.execute(stmt)).all():
        for target, value in ((snap.created, created), (snap.paid, paid), (snap.paid_amount, amount)):
            target.setdefault(channel, [0] * n)[int(d)] += int(value)
    open_stmt = (select(Order.status, func.count())
                 .where(Order.app_id == ctx.app_id, Order.mode == ctx.mode, Order.status.in_(("pending", "creating")))
                 .group_by(Order.status))
    snap.open_orders = {"pending": 0, "creating": 0}
    snap.open_orders.update({s: int(c) for s, c in (await session.execute(open_stmt)).all()})


async def _refunds(session: AsyncSession, ctx: AppContext, rng: DayRange, snap: Snapshot, dialect: str) -> None:
    bounds = rng.boundaries()
    rows = (select(_day_of(Refund.created_at, bounds, dialect).label("d"), Refund.status, Refund.amount)
            .where(Refund.app_id == ctx.app_id, Refund.mode == ctx.mode,
                   Refund.created_at >= bounds[0], Refund.created_at < bounds[-1])
            .subquery())
    stmt = (select(rows.c.d, rows.c.status, func.count(), func.coalesce(func.sum(rows.c.amount), 0))
            .group_by(rows.c.d, rows.c.status))
    daily = [[0, 0] for _ in rng.days]
    for d, status, count, amount in (await session.execute(stmt)).all():
        c, a = snap.refunds.get(status, (0, 0))
        snap.refunds[status] = (c + int(count), a + int(amount))
        daily[int(d)][0] += int(count)
        if status == "succeeded":
            daily[int(d)][1] += int(amount)
    snap.refunds_daily = [(c, a) for c, a in daily]


async def _webhooks(session: AsyncSession, ctx: AppContext, rng: DayRange, snap: Snapshot) -> None:
    bounds = rng.boundaries()
    mine = and_(WebhookDelivery.app_id == ctx.app_id, WebhookEndpoint.mode == ctx.mode)
    through = WebhookEndpoint.id == WebhookDelivery.endpoint_id
    backlog, retrying = (await session.execute(
        select(func.count(), func.coalesce(func.sum(case((WebhookDelivery.attempts > 0, 1), else_=0)), 0))
        .select_from(WebhookDelivery).join(WebhookEndpoint, through)
        .where(mine, WebhookDelivery.status == "pending"))).one()
    dead = (await session.execute(
        select(func.count()).select_from(WebhookDelivery).join(WebhookEndpoint, through)
        .where(mine, WebhookDelivery.status == "dead", WebhookDelivery.created_at >= bounds[0],
               WebhookDelivery.created_at < bounds[-1]))).scalar_one()
    snap.webhooks = {"backlog": int(backlog), "retrying": int(retrying), "dead": int(dead)}


async def _sms(session: AsyncSession, ctx: AppContext, rng: DayRange, snap: Snapshot) -> None:
    bounds = rng.boundaries()
    stmt = (select(SmsMessage.provider, SmsMessage.status, func.count())
            .where(SmsMessage.app_id == ctx.app_id, SmsMessage.mode == ctx.mode,
                   SmsMessage.created_at >= bounds[0], SmsMessage.created_at < bounds[-1])
            .group_by(SmsMessage.provider, SmsMessage.status))
    for provider, status, count in (await session.execute(stmt)).all():
        snap.sms.setdefault(provider or "", {})[status] = int(count)


async def _identity(session: AsyncSession, ctx: AppContext, rng: DayRange, snap: Snapshot) -> None:
    bounds = rng.boundaries()
    stmt = (select(IdentityVerification.kind, IdentityVerification.status, func.count())
            .where(IdentityVerification.app_id == ctx.app_id, IdentityVerification.mode == ctx.mode,
                   IdentityVerification.created_at >= bounds[0], IdentityVerification.created_at < bounds[-1])
            .group_by(IdentityVerification.kind, IdentityVerification.status))
    for kind, status, count in (await session.execute(stmt)).all():
        snap.identity.setdefault(kind, {})[status] = int(count)

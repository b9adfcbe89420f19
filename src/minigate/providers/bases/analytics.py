"""The analytics capability: forwarding minigate's events to a third party, and pulling a third party's numbers.

Two kinds of provider, each pure build/parse code plus one send over the injected ``httpx.AsyncClient``:

- an :class:`AnalyticsForwarder` (GrowingIO collect API, Tencent Youshu safe-report) receives batches of
  :class:`ForwardEvent` — already pseudonymised by the service: ``user_key`` is a keyed hash, never the app's
  own user id, and no property holds personal data — and answers a :class:`ProviderResult` whose value is the
  number of events the provider took. A lost answer raises ``OutcomeUnknown`` (the batch is sent again:
  forwarding is at-least-once and every event carries its id); a refusal is a ``decline`` with the standard
  code (``auth_failed``, ``rate_limited``, ``invalid_request``...).
- an :class:`AnalyticsSource` (WeChat datacube, Umeng+ OpenAPI) answers :meth:`AnalyticsSource.pull` for one
  day with :class:`MetricRow` values, normalised so that every source lands in the same table.

A new provider subclasses one of these, sets ``name`` and its config model, and passes
``tests/contract/test_analytics_forward_contract.py`` (forwarders) or ``test_analytics_pull_contract.py``
(sources) against its simulator before it is registered.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from typing import Any, ClassVar

import httpx

from minigate.domain.results import ProviderResult

__all__ = ["AnalyticsForwarder", "AnalyticsSource", "ForwardEvent", "MetricRow", "PropertyValue"]

PropertyValue = str | int | float | bool


@dataclass(frozen=True, slots=True)
class ForwardEvent:
    """One event as a third party may see it."""

    event_id: str                      # minigate's id (the SDK's per-event id, or a server event's id)
    name: str                          # e.g. "$pageview", "add_to_cart", "$payment_verified"
    kind: str                          # "page_view" | "event" | "lifecycle" | "server"
    user_key: str                      # pseudonymous: HMAC of the user id (or of the device id) with the app's key
    logged_in: bool                    # True when user_key derives from a login user id, not a device id
    ts_ms: int                         # event time, epoch milliseconds, corrected for the client's clock
    page: str | None = None            # the mini-program page path, for page views
    platform: str | None = None        # "wechat" | "alipay" | "server"
    properties: Mapping[str, PropertyValue] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class MetricRow:
    """One number from a source, e.g. ("wechat-datacube", "daily_visit", 2026-11-25, "", "visit_uv", 1234).

    ``dimension`` groups breakdowns (``""`` for totals; ``"province"``, ``"retention_day"``, ``"page"``...) and
    ``key`` names the measure or the dimension's value."""

    source: str
    metric: str
    ref_date: date
    dimension: str
    key: str
    value: float


class AnalyticsForwarder(abc.ABC):
    """Base class of every forwarding destination."""

    #: registry name, e.g. ``"growingio"``
    name: ClassVar[str]
    #: the most events one ``forward`` call may carry
    max_batch: ClassVar[int] = 100
    config: Any

    def __init__(self, client: httpx.AsyncClient) -> None:
        self.client = client

    @abc.abstractmethod
    async def forward(self, events: Sequence[ForwardEvent]) -> ProviderResult[int]:
        """Send one batch (at most ``max_batch``). Raises ``OutcomeUnknown`` when the answer is lost."""


class AnalyticsSource(abc.ABC):
    """Base class of every source of third-party numbers."""

    name: ClassVar[str]
    #: the metric names :meth:`pull` can return
    metrics: ClassVar[tuple[str, ...]] = ()
    config: Any

    def __init__(self, client: httpx.AsyncClient) -> None:
        self.client = client

    @abc.abstractmethod
    async def pull(self, day: date) -> ProviderResult[list[MetricRow]]:
        """Every metric this source has for ``day`` (a day that is over, Beijing time)."""


def stable_rows(rows: Sequence[MetricRow]) -> list[dict[str, Any]]:
    """Rows as plain dicts in a stable order (for storage and tests)."""
    return [{"source": r.source, "metric": r.metric, "ref_date": r.ref_date.isoformat(), "dimension": r.dimension,
             "key": r.key, "value": r.value}
            for r in sorted(rows, key=lambda r: (r.metric, r.ref_date, r.dimension, r.key))]

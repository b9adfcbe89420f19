"""Moving-window rate limits on the ``limits`` library: Redis when configured (shared by every process and
machine), process memory otherwise.

:meth:`Limiter.acquire` takes several windows at once, all or nothing as far as the store allows: it first
tests every window without counting (a refused attempt consumes nothing), then counts each; when a
concurrent caller took the last slot in between, the hit is refused and reported like any other refusal.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

from limits import (
    RateLimitItem,
    RateLimitItemPerDay,
    RateLimitItemPerHour,
    RateLimitItemPerMinute,
    RateLimitItemPerSecond,
)
from limits.aio.storage import MemoryStorage, RedisStorage, Storage
from limits.aio.strategies import MovingWindowRateLimiter

__all__ = ["Check", "Limiter", "Verdict", "per_day", "per_hour", "per_minute", "per_second"]


def per_second(n: int) -> RateLimitItem:
    return RateLimitItemPerSecond(n)


def per_minute(n: int) -> RateLimitItem:
    return RateLimitItemPerMinute(n)


def per_hour(n: int) -> RateLimitItem:
    return RateLimitItemPerHour(n)


def per_day(n: int) -> RateLimitItem:
    return RateLimitItemPerDay(n)


@dataclass(frozen=True, slots=True)
class Check:
    """One window: ``name`` is the machine-readable reason when it refuses (e.g. ``phone_per_minute``)."""

    name: str
    item: RateLimitItem
    key: str


@dataclass(frozen=True, slots=True)
class Verdict:
    allowed: bool
    refused_by: str | None = None
    retry_after: int | None = None            # seconds until the refusing window has room again
    remaining: dict[str, int] | None = None   # after this attempt, per window name


class Limiter:
    def __init__(self, redis_url: str | None = None) -> None:
        self.shared = redis_url is not None
        if redis_url:
            uri = redis_url.replace("redis://", "async+redis://", 1) if redis_url.startswith("redis://") \
                else redis_url
            self.storage: Storage = RedisStorage(uri, implementation="redispy", key_prefix="minigate")
        else:
            self.storage = MemoryStorage()
        self.strategy = MovingWindowRateLimiter(self.storage)

    async def acquire(self, checks: Sequence[Check]) -> Verdict:
        for check in checks:
            if not await self.strategy.test(check.item, check.key):
                return await self._refused(check)
        for check in checks:
            if not await self.strategy.hit(check.item, check.key):
                return await self._refused(check)
        remaining: dict[str, int] = {}
        for check in checks:
            stats = await self.strategy.get_window_stats(check.item, check.key)
            remaining[check.name] = stats.remaining
        return Verdict(True, remaining=remaining)

    async def test(self, checks: Sequence[Check]) -> Verdict:
        """Would these windows allow one more? Counts nothing."""
        for check in checks:
            if not await self.strategy.test(check.item, check.key):
                return await self._refused(check)
        return Verdict(True)

    async def _refused(self, check: Check) -> Verdict:
        stats = await self.strategy.get_window_stats(check.item, check.key)
        return Verdict(False, refused_by=check.name, retry_after=max(1, int(stats.reset_time - time.time()) + 1))

    async def reset(self) -> None:
        await self.storage.reset()

    async def aclose(self) -> None:
        """Close the Redis connections (``limits`` keeps the redis-py client on its storage bridge)."""
        client = getattr(getattr(self.storage, "bridge", None), "storage", None)
        if client is not None and hasattr(client, "aclose"):
            await client.aclose()
            pool = getattr(client, "connection_pool", None)
            if pool is not None:
                await pool.disconnect()

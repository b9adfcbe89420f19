"""Scheduled refresh of WeChat Pay platform certificates (B-3), and warnings before they expire.

WeChat rotates its platform certificates and asks merchants to download them again at least every 12 hours;
a notification signed with a serial minigate does not know also triggers a download (rate-limited, in
:mod:`minigate.providers.wechatpay.keys`). This job covers the quiet case: an app with few payments still has
the new certificate before the old one expires, and an operator hears about an expiry 30 days ahead — a
certificate nobody renews means every notification fails verification.

Apps with stored WeChat Pay credentials in ``certificate`` or ``mixed`` verification mode are refreshed; the
public-key mode has nothing to download.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from prometheus_client import Counter, Gauge
from sqlalchemy import select

from minigate.errors import ConfigurationError, MinigateError
from minigate.logging import get_logger
from minigate.services.runtime import Runtime
from minigate.store.tables import AppCredential

__all__ = ["WARN_WITHIN", "refresh_platform_certificates"]

log = get_logger("minigate.certificates")

#: warn this long before a platform certificate expires
WARN_WITHIN = timedelta(days=30)

REFRESHES = Counter("minigate_certificate_refreshes_total", "Scheduled platform-certificate downloads", ["outcome"])
DAYS_LEFT = Gauge("minigate_certificate_days_left", "Days until the first platform certificate in use expires",
                  multiprocess_mode="min")


async def refresh_platform_certificates(rt: Runtime) -> dict[str, Any]:
    """Download every app's WeChat Pay platform certificates now; returns counts (for the CLI and tests)."""
    async with rt.db.read() as session:
        rows = (await session.execute(select(AppCredential.app_id, AppCredential.mode).where(
            AppCredential.provider == "wechatpay"))).all()
    done = failed = 0
    expiring: list[dict[str, Any]] = []
    soonest: float | None = None
    for app_id, mode in rows:
        try:
            provider: Any = await rt.payment_provider(app_id, mode, "wechatpay")
            keys = provider.keys
            if not keys.downloads_certificates:
                continue
            new = await keys.refresh()
        except (MinigateError, ConfigurationError) as exc:
            failed += 1
            REFRESHES.labels("failed").inc()
            log.warning("platform certificate refresh failed", app=app_id, mode=mode,
                        error=type(exc).__name__, code=getattr(exc, "provider_code", None))
            continue
        done += 1
        REFRESHES.labels("ok").inc()
        if new:
            log.info("new platform certificates", app=app_id, mode=mode, serials=new)
        for serial, not_after in keys.expiring_soon(WARN_WITHIN):
            expiring.append({"app": app_id, "mode": mode, "serial": serial, "expires_at": not_after.isoformat()})
            log.warning("platform certificate expires soon", app=app_id, mode=mode, serial=serial,
                        expires_at=not_after.isoformat())
        left = keys.days_left()
        if left is not None:
            soonest = left if soonest is None else min(soonest, left)
    if soonest is not None:
        DAYS_LEFT.set(round(soonest, 2))
    return {"refreshed": done, "failed": failed, "expiring": expiring}

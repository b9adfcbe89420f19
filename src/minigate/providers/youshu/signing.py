"""The query signature of Youshu's safe-report API (service-protocols.md §3.3, vector Y1).

Every request carries ``app_id``, ``nonce`` (random, at most 32 characters), ``timestamp`` (Unix seconds),
``sign=sha256`` and::

    conStr    = "app_id=<app_id>&nonce=<nonce>&sign=sha256&timestamp=<timestamp>"   # this order, values raw
    signature = hex(HMAC-SHA256(app_secret, conStr))

Youshu's page says ``hex(sha256(conStr))`` in its prose, but its published value and its code sample are the
HMAC keyed with ``app_secret`` (plain SHA-256 does not reproduce the value). Pure functions, shared by the client
(:mod:`minigate.providers.youshu.provider`) and the simulator (:mod:`minigate.simulators.youshu`).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections.abc import Callable

__all__ = ["MAX_NONCE_LENGTH", "SIGN_METHOD", "con_str", "new_nonce", "signature", "signed_query", "verify"]

SIGN_METHOD = "sha256"
MAX_NONCE_LENGTH = 32


def con_str(*, app_id: str, nonce: str, timestamp: int | str, sign: str = SIGN_METHOD) -> str:
    """The signed text: keys in this fixed order, values not URL-encoded."""
    return f"app_id={app_id}&nonce={nonce}&sign={sign}&timestamp={timestamp}"


def signature(*, app_secret: str, app_id: str, nonce: str, timestamp: int | str) -> str:
    """Lower-case hex HMAC-SHA256 of :func:`con_str`, keyed with ``app_secret`` (UTF-8)."""
    text = con_str(app_id=app_id, nonce=nonce, timestamp=timestamp)
    return hmac.new(app_secret.encode(), text.encode(), hashlib.sha256).hexdigest()


def verify(received: str, *, app_secret: str, app_id: str, nonce: str, timestamp: int | str) -> bool:
    """Constant-time comparison; the received hex's letter case is not significant."""
    expected = signature(app_secret=app_secret, app_id=app_id, nonce=nonce, timestamp=timestamp)
    return hmac.compare_digest(expected.encode(), received.lower().encode())


def new_nonce() -> str:
    """32 random hex characters (the longest nonce Youshu takes)."""
    return secrets.token_hex(MAX_NONCE_LENGTH // 2)


def signed_query(*, app_id: str, app_secret: str, timestamp: int | None = None, nonce: str | None = None,
                 clock: Callable[[], float] = time.time) -> tuple[tuple[str, str], ...]:
    """The query of one request, in the order of Youshu's sample URL:
    ``app_id``, ``nonce``, ``timestamp``, ``sign``, ``signature``."""
    ts = int(clock()) if timestamp is None else int(timestamp)
    nonce = new_nonce() if nonce is None else nonce
    sig = signature(app_secret=app_secret, app_id=app_id, nonce=nonce, timestamp=ts)
    return (("app_id", app_id), ("nonce", nonce), ("timestamp", str(ts)), ("sign", SIGN_METHOD),
            ("signature", sig))

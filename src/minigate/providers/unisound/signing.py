"""The body signature of the Unisound voiceprint WebAPI (service-protocols.md §2.3).

Every request body carries ``appkey``, ``timestamp`` (Unix time in **milliseconds**), ``nonce`` (fresh for each
request; a UUID) and::

    sign = UPPER(hex(SHA256(appkey + timestamp + secret + nonce)))

Plain SHA-256 of the concatenated text, no HMAC. Pure functions, shared by the client
(:mod:`minigate.providers.unisound.provider`) and the simulator (:mod:`minigate.simulators.unisound`). The
cross-check value of §5 is a unit test.
"""

from __future__ import annotations

import hashlib
import hmac
import time
import uuid
from collections.abc import Callable
from typing import Any

__all__ = ["AUTH_FIELDS", "auth_fields", "new_nonce", "sign", "verify"]

#: the authentication fields every body carries
AUTH_FIELDS = ("appkey", "timestamp", "nonce", "sign")


def sign(*, appkey: str, timestamp: int | str, secret: str, nonce: str) -> str:
    """Upper-case hex SHA-256 of ``appkey + timestamp + secret + nonce`` (UTF-8)."""
    text = f"{appkey}{timestamp}{secret}{nonce}"
    return hashlib.sha256(text.encode()).hexdigest().upper()


def verify(signature: str, *, appkey: str, timestamp: int | str, secret: str, nonce: str) -> bool:
    """Constant-time comparison; the received signature's letter case is not significant."""
    expected = sign(appkey=appkey, timestamp=timestamp, secret=secret, nonce=nonce)
    return hmac.compare_digest(expected, signature.upper())


def new_nonce() -> str:
    """A fresh nonce: a random UUID without dashes (32 hex characters)."""
    return uuid.uuid4().hex


def auth_fields(*, appkey: str, secret: str, timestamp: int | None = None, nonce: str | None = None,
                clock: Callable[[], float] = time.time) -> dict[str, Any]:
    """``{"appkey", "timestamp", "nonce", "sign"}`` for one request (timestamp in ms from ``clock``)."""
    ts = int(clock() * 1000) if timestamp is None else int(timestamp)
    nonce = new_nonce() if nonce is None else nonce
    return {"appkey": appkey, "timestamp": ts, "nonce": nonce,
            "sign": sign(appkey=appkey, timestamp=ts, secret=secret, nonce=nonce)}

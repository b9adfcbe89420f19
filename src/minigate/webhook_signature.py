"""Signing and verifying minigate's outbound webhooks: ``Minigate-Signature: t=<unix>,v1=<hex>``.

``v1`` is the hex HMAC-SHA256, under the endpoint secret, of ``f"{t}.{raw body}"``. During secret rotation a
header carries one ``v1`` per valid secret. Receivers call :func:`verify` with the raw request body, the
header, and their secret(s). This module has no dependencies beyond the standard library: copy it freely.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Iterable

__all__ = ["HEADER", "SignatureVerificationError", "sign", "signature_header", "verify"]

HEADER = "Minigate-Signature"
DEFAULT_TOLERANCE = 300


class SignatureVerificationError(Exception):
    pass


def sign(secret: str, timestamp: int, body: bytes) -> str:
    return hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()


def signature_header(secrets: Iterable[str], timestamp: int, body: bytes) -> str:
    parts = [f"t={timestamp}"] + [f"v1={sign(s, timestamp, body)}" for s in secrets]
    return ",".join(parts)


def verify(body: bytes, header: str, secrets: str | Iterable[str], *, tolerance: int = DEFAULT_TOLERANCE,
           now: float | None = None) -> int:
    """Check ``header`` against ``body``; return the signed timestamp. Raises SignatureVerificationError."""
    keys = [secrets] if isinstance(secrets, str) else list(secrets)
    timestamp: int | None = None
    candidates: list[str] = []
    for item in header.split(","):
        name, _, value = item.strip().partition("=")
        if name == "t" and value.isdigit():
            timestamp = int(value)
        elif name == "v1" and value:
            candidates.append(value)
    if timestamp is None or not candidates:
        raise SignatureVerificationError("malformed Minigate-Signature header")
    current = time.time() if now is None else now
    if tolerance > 0 and abs(current - timestamp) > tolerance:
        raise SignatureVerificationError("timestamp outside the tolerance window")
    for key in keys:
        expected = sign(key, timestamp, body)
        if any(hmac.compare_digest(expected, c) for c in candidates):
            return timestamp
    raise SignatureVerificationError("no signature matches")

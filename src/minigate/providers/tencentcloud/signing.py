"""TC3-HMAC-SHA256, the request signature of every Tencent Cloud API 3.0 service (service-protocols.md §1.2.1).

Pure functions, shared by the client (:mod:`minigate.providers.tencentcloud.api`) and the simulator
(:mod:`minigate.simulators.tencentcloud`). Nothing here knows about SMS: the service name (``sms``,
``faceid``, ...) is an input. Vectors T1-T3 (§6) and the SendSms cross-check (§5) are unit tests.

::

    CanonicalRequest = METHOD \\n / \\n CanonicalQueryString \\n CanonicalHeaders \\n SignedHeaders
                       \\n hex(SHA256(payload))
    StringToSign     = TC3-HMAC-SHA256 \\n Timestamp \\n Date/service/tc3_request \\n hex(SHA256(CanonicalRequest))
    kSigning         = HMAC(HMAC(HMAC("TC3"+SecretKey, Date), service), "tc3_request")
    Authorization    = TC3-HMAC-SHA256 Credential=SecretId/Date/service/tc3_request, SignedHeaders=..., Signature=...

``Date`` is the UTC date of the timestamp. Canonical header lines are ``name:value`` with both lower-cased and
trimmed, sorted by name; any set of headers may be signed (the Python SDK signs ``content-type;host``, newer
documentation also ``x-tc-action``). ``X-TC-Content-SHA256: UNSIGNED-PAYLOAD`` replaces the payload by that text.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

__all__ = [
    "ALGORITHM",
    "DEFAULT_SIGNED_HEADERS",
    "Tc3Authorization",
    "Tc3Signature",
    "canonical_request",
    "credential_date",
    "parse_authorization",
    "sha256_hex",
    "tc3_authorization",
    "tc3_sign",
    "tc3_signature",
]

ALGORITHM = "TC3-HMAC-SHA256"
DEFAULT_SIGNED_HEADERS: tuple[str, ...] = ("content-type", "host")
UNSIGNED_PAYLOAD = "UNSIGNED-PAYLOAD"

_AUTHORIZATION = re.compile(
    r"^TC3-HMAC-SHA256\s+Credential=(?P<id>[^/,\s]+)/(?P<date>\d{4}-\d{2}-\d{2})/(?P<service>[a-z0-9-]+)/"
    r"(?P<term>[a-z0-9_]+)\s*,\s*SignedHeaders=(?P<headers>[a-z0-9;\-]+)\s*,\s*Signature=(?P<sig>[0-9a-fA-F]+)\s*$")


def sha256_hex(data: bytes | str) -> str:
    return hashlib.sha256(data.encode() if isinstance(data, str) else data).hexdigest()


def credential_date(timestamp: int) -> str:
    """``YYYY-MM-DD`` of ``timestamp`` in UTC (never local time: 00:00-08:00 Beijing is the day before)."""
    return dt.datetime.fromtimestamp(int(timestamp), dt.UTC).strftime("%Y-%m-%d")


def _header(headers: Mapping[str, str], name: str) -> str | None:
    for key, value in headers.items():
        if key.lower() == name:
            return value
    return None


def canonical_request(*, method: str, headers: Mapping[str, str], signed_headers: Sequence[str],
                      payload: bytes = b"", query: str = "", path: str = "/") -> str:
    """The canonical request text. ``headers`` are looked up case-insensitively; a signed header that is
    absent raises KeyError. For GET, pass the query string as ``query`` and an empty payload."""
    names = sorted(name.strip().lower() for name in signed_headers)
    lines = []
    for name in names:
        value = _header(headers, name)
        if value is None:
            raise KeyError(name)
        lines.append(f"{name}:{value.strip().lower()}\n")
    unsigned = (_header(headers, "x-tc-content-sha256") or "").strip() == UNSIGNED_PAYLOAD
    payload_hash = sha256_hex(UNSIGNED_PAYLOAD if unsigned else payload)
    return "\n".join([method.upper(), path or "/", query, "".join(lines), ";".join(names), payload_hash])


def tc3_signature(*, secret_key: str, service: str, timestamp: int, canonical: str) -> tuple[str, str]:
    """(string to sign, hex signature) for a canonical request."""
    date = credential_date(timestamp)
    string_to_sign = f"{ALGORITHM}\n{int(timestamp)}\n{date}/{service}/tc3_request\n{sha256_hex(canonical)}"

    def mac(key: bytes, msg: str) -> bytes:
        return hmac.new(key, msg.encode(), hashlib.sha256).digest()

    k_signing = mac(mac(mac(("TC3" + secret_key).encode(), date), service), "tc3_request")
    return string_to_sign, hmac.new(k_signing, string_to_sign.encode(), hashlib.sha256).hexdigest()


@dataclass(frozen=True, slots=True)
class Tc3Signature:
    """Every intermediate value of one signature (tests compare them with the published vectors)."""

    canonical_request: str
    string_to_sign: str
    signature: str
    authorization: str

    @property
    def canonical_hash(self) -> str:
        return sha256_hex(self.canonical_request)


def tc3_sign(*, secret_id: str, secret_key: str, service: str, timestamp: int, headers: Mapping[str, str],
             payload: bytes = b"", method: str = "POST", query: str = "", path: str = "/",
             signed_headers: Sequence[str] = DEFAULT_SIGNED_HEADERS) -> Tc3Signature:
    names = sorted(name.strip().lower() for name in signed_headers)
    canonical = canonical_request(method=method, headers=headers, signed_headers=names, payload=payload,
                                  query=query, path=path)
    string_to_sign, signature = tc3_signature(secret_key=secret_key, service=service, timestamp=timestamp,
                                              canonical=canonical)
    authorization = (f"{ALGORITHM} Credential={secret_id}/{credential_date(timestamp)}/{service}/tc3_request, "
                     f"SignedHeaders={';'.join(names)}, Signature={signature}")
    return Tc3Signature(canonical, string_to_sign, signature, authorization)


def tc3_authorization(*, secret_id: str, secret_key: str, service: str, timestamp: int,
                      headers: Mapping[str, str], payload: bytes = b"", method: str = "POST", query: str = "",
                      path: str = "/", signed_headers: Sequence[str] = DEFAULT_SIGNED_HEADERS) -> str:
    """The ``Authorization`` header value for one request."""
    return tc3_sign(secret_id=secret_id, secret_key=secret_key, service=service, timestamp=timestamp,
                    headers=headers, payload=payload, method=method, query=query, path=path,
                    signed_headers=signed_headers).authorization


@dataclass(frozen=True, slots=True)
class Tc3Authorization:
    """A parsed ``Authorization`` header."""

    secret_id: str
    date: str
    service: str
    terminator: str              # "tc3_request"
    signed_headers: tuple[str, ...]
    signature: str


def parse_authorization(value: str) -> Tc3Authorization | None:
    """Split a TC3 ``Authorization`` header; None when it is not one."""
    match = _AUTHORIZATION.match(value.strip())
    if match is None:
        return None
    headers = tuple(h for h in match.group("headers").split(";") if h)
    return Tc3Authorization(match.group("id"), match.group("date"), match.group("service"), match.group("term"),
                            headers, match.group("sig").lower())

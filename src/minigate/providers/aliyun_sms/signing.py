"""Alibaba Cloud request signatures (service-protocols.md §0, §1.1.2, §1.1.3): pure functions, no I/O.

Two schemes sign dysmsapi calls:

- **RPC "V2"** (HMAC-SHA1): every parameter but ``Signature`` (query *and* form body), sorted, RFC 3986-encoded
  into a canonical query string that is encoded a second time inside
  ``METHOD&%2F&pe(CQS)``; the key is ``AccessKeySecret + "&"``; Base64 result (:func:`rpc_signature`).
- **V3 ACS3-HMAC-SHA256**: a canonical request (method, ``/``, canonical query, canonical headers, signed header
  names, hex SHA-256 of the body), hashed into ``"ACS3-HMAC-SHA256\\n" + hex`` and signed with the plain
  secret; hex result in an ``Authorization`` header (:func:`acs3_authorization`).

The simulator verifies with the same functions: the canonicalisation helpers take the parameters and headers
exactly as they arrived, so what is checked is what the client signed.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

__all__ = [
    "ACS3_ALGORITHM",
    "EMPTY_SHA256",
    "Acs3Authorization",
    "acs3_authorization",
    "acs3_canonical_request",
    "acs3_signature",
    "acs3_string_to_sign",
    "canonical_headers",
    "canonical_query",
    "default_signed_headers",
    "flatten",
    "format_timestamp",
    "parse_acs3_authorization",
    "parse_timestamp",
    "percent_encode",
    "rpc_signature",
    "rpc_string_to_sign",
    "sha256_hex",
]

ACS3_ALGORITHM = "ACS3-HMAC-SHA256"
#: hex SHA-256 of the empty body (every SendSms / QuerySendDetails request: all parameters in the query)
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
_TIMESTAMP = re.compile(r"^(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(?:\.\d{1,6})?Z$")


def percent_encode(value: str) -> str:
    """RFC 3986: UTF-8, ``A-Za-z0-9-_.~`` literal, the rest ``%XY`` upper-case (space ``%20``, ``*`` ``%2A``)."""
    return quote(value, safe="~", encoding="utf-8")


def canonical_query(params: Mapping[str, str]) -> str:
    """``pe(k)=pe(v)`` joined by ``&``, sorted by name (byte order); an empty value gives ``k=``."""
    return "&".join(f"{percent_encode(k)}={percent_encode(v)}"
                    for k, v in sorted(params.items(), key=lambda kv: kv[0].encode()))


def format_timestamp(epoch: float) -> str:
    """``YYYY-MM-DDThh:mm:ssZ`` in UTC (``Timestamp`` and ``x-acs-date``)."""
    return dt.datetime.fromtimestamp(int(epoch), dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_timestamp(text: str) -> float:
    """The epoch of a ``YYYY-MM-DDThh:mm:ss[.ffffff]Z`` UTC timestamp; ValueError otherwise."""
    match = _TIMESTAMP.match(text or "")
    if not match:
        raise ValueError("not a YYYY-MM-DDThh:mm:ssZ timestamp")
    year, month, day, hour, minute, second = (int(p) for p in match.groups())
    return dt.datetime(year, month, day, hour, minute, second, tzinfo=dt.UTC).timestamp()


def flatten(params: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested lists/dicts as Alibaba flattens them: ``Key.1``, ``Key.1.Sub``; None dropped; bools lower-case."""
    out: dict[str, str] = {}

    def walk(key: str, value: Any) -> None:
        if value is None:
            return
        if isinstance(value, Mapping):
            for k, v in value.items():
                walk(f"{key}.{k}" if key else str(k), v)
        elif isinstance(value, list | tuple):
            for index, item in enumerate(value, start=1):
                walk(f"{key}.{index}", item)
        elif isinstance(value, bool):
            out[key] = "true" if value else "false"
        else:
            out[key] = str(value)

    walk(prefix, params)
    return out


# --------------------------------------------------------------------------- RPC V2 (HMAC-SHA1)

def rpc_string_to_sign(method: str, params: Mapping[str, str]) -> str:
    """``METHOD&%2F&pe(CQS)`` over every parameter except ``Signature`` (§1.1.2 steps 1–4)."""
    signed = {k: v for k, v in params.items() if k != "Signature"}
    return f"{method.upper()}&{percent_encode('/')}&{percent_encode(canonical_query(signed))}"


def rpc_signature(method: str, params: Mapping[str, str], access_key_secret: str) -> str:
    """Base64(HMAC-SHA1(secret + "&", StringToSign)) — the value of ``Signature`` before URL encoding."""
    digest = hmac.new((access_key_secret + "&").encode(), rpc_string_to_sign(method, params).encode(),
                      hashlib.sha1).digest()
    return base64.b64encode(digest).decode()


# --------------------------------------------------------------------------- V3 (ACS3-HMAC-SHA256)

def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def default_signed_headers(headers: Iterable[tuple[str, str]]) -> list[str]:
    """The headers a client signs by default (§1.1.3): ``host``, ``content-type`` and every ``x-acs-*``."""
    names = {name.lower() for name, _ in headers}
    return sorted(n for n in names if n in ("host", "content-type") or n.startswith("x-acs-"))


def _pairs(headers: Mapping[str, str] | Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    return list(headers.items()) if isinstance(headers, Mapping) else list(headers)


def canonical_headers(headers: Mapping[str, str] | Iterable[tuple[str, str]],
                      signed: Iterable[str]) -> tuple[str, str]:
    """(CanonicalHeaders, SignedHeaders): ``name:trimmed value\\n`` for each signed name, sorted by lower-case
    name; several values of one header are sorted and joined by ``,``. A signed name the request lacks is
    canonicalised with an empty value (so the signature fails rather than the header being skipped)."""
    wanted = sorted({name.lower() for name in signed})
    values: dict[str, list[str]] = {name: [] for name in wanted}
    for name, value in _pairs(headers):
        key = name.lower()
        if key in values:
            values[key].append(value.strip())
    text = "".join(f"{name}:{','.join(sorted(values[name]))}\n" for name in wanted)
    return text, ";".join(wanted)


def acs3_canonical_request(*, method: str, query: Mapping[str, str],
                           headers: Mapping[str, str] | Iterable[tuple[str, str]], signed_headers: Iterable[str],
                           payload_hash: str, pathname: str = "/") -> tuple[str, str]:
    """(CanonicalRequest, SignedHeaders). RPC-style APIs such as dysmsapi always use ``/`` as the path."""
    canon_headers, signed = canonical_headers(headers, signed_headers)
    request = "\n".join([method.upper(), pathname or "/", canonical_query(query), canon_headers, signed,
                         payload_hash])
    return request, signed


def acs3_string_to_sign(canonical_request: str) -> str:
    return f"{ACS3_ALGORITHM}\n{sha256_hex(canonical_request.encode())}"


def acs3_signature(access_key_secret: str, string_to_sign: str) -> str:
    """Hex HMAC-SHA256 keyed with the plain secret (no ``&`` suffix, unlike V2)."""
    return hmac.new(access_key_secret.encode(), string_to_sign.encode(), hashlib.sha256).hexdigest()


def acs3_authorization(*, method: str, query: Mapping[str, str],
                       headers: Mapping[str, str] | Iterable[tuple[str, str]], access_key_id: str,
                       access_key_secret: str, body: bytes = b"", payload_hash: str | None = None,
                       signed_headers: Iterable[str] | None = None, pathname: str = "/") -> str:
    """The ``Authorization`` header value for one request.

    ``headers`` are the request's headers (``host``, ``x-acs-action``, ``x-acs-version``, ``x-acs-date``,
    ``x-acs-signature-nonce``, ``x-acs-content-sha256`` ...); ``signed_headers`` defaults to
    :func:`default_signed_headers` (the official SDK signs every header it sends: pass ``list(headers)``).
    ``payload_hash`` defaults to the hex SHA-256 of ``body``.
    """
    pairs = _pairs(headers)
    names = list(signed_headers) if signed_headers is not None else default_signed_headers(pairs)
    canonical, signed = acs3_canonical_request(method=method, query=query, headers=pairs, signed_headers=names,
                                               payload_hash=payload_hash or sha256_hex(body), pathname=pathname)
    signature = acs3_signature(access_key_secret, acs3_string_to_sign(canonical))
    return f"{ACS3_ALGORITHM} Credential={access_key_id},SignedHeaders={signed},Signature={signature}"


@dataclass(frozen=True, slots=True)
class Acs3Authorization:
    algorithm: str
    access_key_id: str
    signed_headers: tuple[str, ...]
    signature: str


def parse_acs3_authorization(value: str) -> Acs3Authorization | None:
    """``ACS3-HMAC-SHA256 Credential=…,SignedHeaders=…,Signature=…``; None when it is not that shape."""
    algorithm, _, rest = value.strip().partition(" ")
    if not algorithm.startswith("ACS3-") or not rest:
        return None
    fields: dict[str, str] = {}
    for part in rest.split(","):
        key, sep, val = part.strip().partition("=")
        if not sep or key in fields:
            return None
        fields[key] = val
    if set(fields) != {"Credential", "SignedHeaders", "Signature"} or not all(fields.values()):
        return None
    return Acs3Authorization(algorithm, fields["Credential"], tuple(fields["SignedHeaders"].split(";")),
                             fields["Signature"])

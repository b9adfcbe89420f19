"""Validating a collected batch: shape, limits, clock correction and the personal-data rule (pure code).

A batch is ``{"sent_at": ms, "context": {...}, "events": [...]}`` (docs/analytics.md has the schema). The batch
as a whole is refused only when it is not one (``invalid_batch``); each event is otherwise judged alone and a
refused event is reported by its index with a code, so one bad event never costs the others.

**Clock.** Phones' clocks are wrong by minutes to years. Each event's time is moved by the batch's offset
(``received - sent_at``), the same correction PostHog and GrowingIO apply; an event that still lands in the
future is clamped to the receive time, and one older than ``max_age_days`` is refused (``event_too_old``).

**Personal data (C-7).** Analytics must not carry phone numbers, names or ID numbers. Property *keys* that name
such data (``phone``, ``mobile``, ``name``, ``id_card``, ``姓名``, ``手机号``...) and property *values* that look like
a mainland mobile number or a valid GB 11643 ID number are personal data; so is a ``user_id`` or ``distinct_id``
that is one. With the rule ``reject`` (default) such an event is refused (``pii_in_properties`` /
``pii_in_user_id``); with ``drop`` the offending properties are removed (an identifying ``user_id`` too) and the
event is kept, with the number of dropped fields in the answer.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from minigate.identity import check_character

__all__ = ["BatchError", "Limits", "Parsed", "decode_json", "find_personal_data", "normalise_key", "parse_batch"]

EVENT_NAME = re.compile(r"^[$A-Za-z][A-Za-z0-9_.:$-]{0,99}$")
EVENT_ID = re.compile(r"^[A-Za-z0-9_-]{8,64}$")
PROPERTY_KEY = re.compile(r"^[A-Za-z_$\u4e00-\u9fa5][A-Za-z0-9_.$\-\u4e00-\u9fa5]{0,99}$")
ID_VALUE = re.compile(r"^[A-Za-z0-9_.:@=+/-]{1,128}$")
KINDS = frozenset({"event", "page_view", "lifecycle"})
PLATFORMS = frozenset({"wechat", "alipay", "web", "server"})

#: property keys naming personal data, compared after lower-casing and removing ``_``, ``-``, ``.`` and spaces
PERSONAL_KEYS = frozenset({
    "phone", "phoneno", "phonenumber", "mobile", "mobileno", "mobilephone", "tel", "telephone", "cellphone",
    "realname", "fullname", "truename", "firstname", "lastname", "surname", "personname", "customername",
    "idcard", "idcardno", "idno", "idnumber", "identity", "identitycard", "identityno", "sfz", "sfzh", "certno",
    "email", "address", "homeaddress",
    "手机", "手机号", "手机号码", "电话", "电话号码", "联系电话", "姓名", "真实姓名",
    "身份证", "身份证号", "身份证号码", "住址", "地址", "邮箱",
})
#: a mainland mobile number standing alone (not inside a longer run of letters or digits: hex ids, SKUs)
_MOBILE = re.compile(r"(?<![0-9A-Za-z])(?:\+?86[\s-]?)?1[3-9]\d(?:[\s-]?\d{4}){2}(?![0-9A-Za-z])")
_ID18 = re.compile(r"(?<![0-9A-Za-z])([1-9]\d{16})([0-9Xx])(?![0-9A-Za-z])")
_KEY_NORMAL = re.compile(r"[\s_.\-]")


class BatchError(Exception):
    """The body is not a batch at all."""

    def __init__(self, message: str, *, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param


@dataclass(frozen=True, slots=True)
class Limits:
    max_events: int = 500
    max_properties: int = 50
    max_key_length: int = 100
    max_value_length: int = 1000
    max_age_days: int = 30
    max_future_seconds: int = 60
    personal_data: Literal["reject", "drop"] = "reject"
    #: more property keys an app declares personal (normalised like PERSONAL_KEYS)
    personal_keys: frozenset[str] = frozenset()


@dataclass(slots=True)
class Parsed:
    """What to journal, and what to tell the client."""

    records: list[dict[str, Any]] = field(default_factory=list)
    rejected: list[dict[str, Any]] = field(default_factory=list)
    dropped_fields: int = 0
    clock_offset_ms: int = 0


def _valid_id_number(digits17: str, check: str) -> bool:
    return check_character(digits17) == check.upper()


def _identifier_is_personal(value: str) -> bool:
    """An id (``distinct_id``, ``user_id``) that *is* a phone or ID number — not one that merely contains digits."""
    match = _ID18.fullmatch(value)
    return bool(_MOBILE.fullmatch(value)) or (match is not None and _valid_id_number(match.group(1), match.group(2)))


def find_personal_data(value: str) -> str | None:
    """``"phone"`` / ``"id_number"`` when ``value`` contains one, else None."""
    if _MOBILE.search(value):
        return "phone"
    for match in _ID18.finditer(value):
        if _valid_id_number(match.group(1), match.group(2)):
            return "id_number"
    return None


def normalise_key(key: str) -> str:
    return _KEY_NORMAL.sub("", key.lower())


def _personal_key(key: str, extra: frozenset[str]) -> bool:
    normal = normalise_key(key)
    return normal in PERSONAL_KEYS or normal in extra


def _reject(parsed: Parsed, index: int, event_id: Any, code: str, message: str) -> None:
    parsed.rejected.append({"index": index, "id": event_id if isinstance(event_id, str) else None,
                            "code": code, "message": message})


def parse_batch(body: Any, *, app_id: str, mode: str, received_ms: int, limits: Limits,
                raw: str | None = None) -> Parsed:
    """Validate a decoded JSON body; raises :class:`BatchError` when it is not a batch.

    ``raw`` is the body's text: when neither pattern occurs anywhere in it (the usual case), the per-value scans
    are skipped — one pass of each regular expression over the body instead of one per value."""
    if not isinstance(body, dict):
        raise BatchError("the body must be a JSON object with an events array")
    events = body.get("events")
    if not isinstance(events, list) or not events:
        raise BatchError("events must be a non-empty array", param="events")
    if len(events) > limits.max_events:
        raise BatchError(f"at most {limits.max_events} events per request", param="events")
    sent_at = body.get("sent_at")
    if sent_at is not None and (isinstance(sent_at, bool) or not isinstance(sent_at, int | float)):
        raise BatchError("sent_at must be epoch milliseconds", param="sent_at")
    context = body.get("context")
    if context is None:
        context = {}
    if not isinstance(context, dict):
        raise BatchError("context must be an object", param="context")
    platform = context.get("platform", "wechat")
    if platform not in PLATFORMS:
        raise BatchError(f"context.platform must be one of {', '.join(sorted(PLATFORMS))}", param="context.platform")
    parsed = Parsed(clock_offset_ms=int(received_ms - sent_at) if sent_at is not None else 0)
    oldest = received_ms - limits.max_age_days * 86_400_000
    scan_values = raw is None or find_personal_data(raw) is not None
    for index, event in enumerate(events):
        record = _parse_event(parsed, index, event, limits, scan_values)
        if record is None:
            continue
        ts = int(record.pop("_ts")) + parsed.clock_offset_ms
        if ts > received_ms + limits.max_future_seconds * 1000:
            ts = received_ms
        if ts < oldest:
            _reject(parsed, index, record["event_id"], "event_too_old",
                    f"events older than {limits.max_age_days} days are not accepted")
            continue
        record.update(app_id=app_id, mode=mode, ts=ts, received_at=received_ms, platform=platform)
        parsed.records.append(record)
    return parsed


def _parse_event(parsed: Parsed, index: int, event: Any, limits: Limits, scan_values: bool = True
                 ) -> dict[str, Any] | None:
    if not isinstance(event, dict):
        _reject(parsed, index, None, "invalid_event", "each event must be an object")
        return None
    event_id = event.get("id")
    if not isinstance(event_id, str) or not EVENT_ID.match(event_id):
        _reject(parsed, index, event_id, "invalid_event", "id must be 8-64 characters of [A-Za-z0-9_-]")
        return None
    kind = event.get("type", "event")
    name = event.get("name")
    if kind not in KINDS:
        _reject(parsed, index, event_id, "invalid_event", f"type must be one of {', '.join(sorted(KINDS))}")
        return None
    if kind == "page_view" and name is None:
        name = "$pageview"
    if not isinstance(name, str) or not EVENT_NAME.match(name):
        _reject(parsed, index, event_id, "invalid_event_name",
                "name must start with a letter or $ and use at most 100 of [A-Za-z0-9_.:$-]")
        return None
    ts = event.get("ts")
    if isinstance(ts, bool) or not isinstance(ts, int | float) or ts <= 0:
        _reject(parsed, index, event_id, "invalid_event", "ts must be epoch milliseconds")
        return None
    distinct_id = event.get("distinct_id")
    if not isinstance(distinct_id, str) or not ID_VALUE.match(distinct_id):
        _reject(parsed, index, event_id, "invalid_event", "distinct_id must be 1-128 URL-safe characters")
        return None
    user_id = event.get("user_id")
    if user_id is not None and (not isinstance(user_id, str) or not ID_VALUE.match(user_id)):
        _reject(parsed, index, event_id, "invalid_event", "user_id must be 1-128 URL-safe characters")
        return None
    session_id = event.get("session_id")
    if session_id is not None and (not isinstance(session_id, str) or len(session_id) > 64):
        _reject(parsed, index, event_id, "invalid_event", "session_id must be a string of at most 64 characters")
        return None
    page = event.get("page")
    if page is not None and (not isinstance(page, str) or len(page) > 512):
        _reject(parsed, index, event_id, "invalid_event", "page must be a string of at most 512 characters")
        return None
    properties = event.get("properties") or {}
    if not isinstance(properties, dict):
        _reject(parsed, index, event_id, "invalid_properties", "properties must be an object")
        return None
    if len(properties) > limits.max_properties:
        _reject(parsed, index, event_id, "invalid_properties", f"at most {limits.max_properties} properties")
        return None
    for key, value in properties.items():
        if len(key) > limits.max_key_length or not PROPERTY_KEY.match(key):
            _reject(parsed, index, event_id, "invalid_properties",
                    f"property keys must be at most {limits.max_key_length} of letters, digits, _.$-")
            return None
        if value is not None and not isinstance(value, str | int | float | bool):
            _reject(parsed, index, event_id, "invalid_properties",
                    f"property {key!r} must be a string, number or boolean")
            return None
        if isinstance(value, str) and len(value) > limits.max_value_length:
            _reject(parsed, index, event_id, "invalid_properties",
                    f"property {key!r} is longer than {limits.max_value_length} characters")
            return None
    # personal data (C-7)
    found = _personal_fields(properties, page, limits.personal_keys, scan_values)
    identifying_user = user_id is not None and _identifier_is_personal(user_id)
    if _identifier_is_personal(distinct_id):
        _reject(parsed, index, event_id, "pii_in_user_id", "distinct_id must not be a phone or ID number")
        return None
    if limits.personal_data == "reject":
        if identifying_user:
            _reject(parsed, index, event_id, "pii_in_user_id",
                    "user_id looks like a phone or ID number; bind a pseudonymous id instead")
            return None
        if found:
            _reject(parsed, index, event_id, "pii_in_properties",
                    f"personal data in {', '.join(sorted(found))}: analytics must not carry phone numbers, "
                    "names or ID numbers")
            return None
    else:
        if identifying_user:
            user_id = None
            parsed.dropped_fields += 1
        if found:
            if "page" in found:
                page = None
            properties = {k: v for k, v in properties.items() if f"properties.{k}" not in found}
            parsed.dropped_fields += len(found)
    order_id = properties.get("order_id")
    return {"event_id": event_id, "name": name, "kind": kind, "distinct_id": distinct_id, "user_id": user_id,
            "session_id": session_id, "page": page,
            "order_id": order_id if isinstance(order_id, str) and len(order_id) <= 64 else None,
            "properties": {k: v for k, v in properties.items() if v is not None}, "_ts": ts}


def _personal_fields(properties: Mapping[str, Any], page: str | None, extra: frozenset[str],
                     scan_values: bool = True) -> set[str]:
    found = {f"properties.{k}" for k, v in properties.items()
             if _personal_key(k, extra) or (scan_values and (
                 (isinstance(v, str) and find_personal_data(v))
                 or (isinstance(v, int) and not isinstance(v, bool) and find_personal_data(str(v)))))}
    if scan_values and page and find_personal_data(page):
        found.add("page")
    return found


def decode_json(data: bytes) -> Any:
    try:
        return json.loads(data)
    except (UnicodeDecodeError, ValueError) as exc:
        raise BatchError(f"the body is not JSON: {exc.__class__.__name__}") from None

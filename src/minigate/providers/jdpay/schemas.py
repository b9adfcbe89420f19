"""JD Pay V2.0 wire <-> minigate domain (pure functions; payment-protocols.md §3.4-§3.6).

XML is built by hand (the text that is signed is the text that is encrypted) and parsed with the stdlib
``xml.etree.ElementTree`` behind :func:`parse_xml`, which refuses any DTD (``<!DOCTYPE``/``<!ENTITY``): with
no DTD there can be neither entity expansion ("billion laughs") nor external entities, which is what
``defusedxml`` guarantees with ``forbid_dtd=True``.

Amounts are integer fen as decimal strings; times are ``yyyyMMddHHmmss`` in China Standard Time.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET  # noqa: S405 - parse_xml refuses every DTD before parsing
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timedelta, timezone
from typing import Any, TypeAlias
from xml.sax.saxutils import escape

from minigate.domain.results import RefundState, RefundStatus, TradeState, TradeStatus

__all__ = [
    "CST",
    "DECLARATION",
    "REFUND_STATES",
    "TRADE_STATES",
    "VERSION",
    "Envelope",
    "WireFormatError",
    "build_envelope",
    "build_xml",
    "format_time",
    "parse_envelope",
    "parse_time",
    "parse_xml",
    "refund_status",
    "trade_status",
    "xml_fields",
]

CST = timezone(timedelta(hours=8))
VERSION = "V2.0"
DECLARATION = '<?xml version="1.0" encoding="UTF-8"?>'
MAX_XML_CHARS = 256 * 1024

#: §3.4 payment status: 0 created, 1 processing, 2 success, 3 failed, 4 closed.
TRADE_STATES: Mapping[str, TradeState] = {
    "0": TradeState.PENDING, "1": TradeState.PENDING, "2": TradeState.PAID,
    "3": TradeState.FAILED, "4": TradeState.CLOSED,
}
#: §3.4 refund status: 0 processing, 1 success, 2 failed.
REFUND_STATES: Mapping[str, RefundState] = {
    "0": RefundState.PROCESSING, "1": RefundState.SUCCEEDED, "2": RefundState.FAILED,
}

_DTD = re.compile(r"<!\s*(DOCTYPE|ENTITY)", re.IGNORECASE)
_TIME = re.compile(r"\d{14}")

Value: TypeAlias = str | int | None | Sequence[tuple[str, "Value"]]


class WireFormatError(ValueError):
    """An answer or callback that is not shaped like JD's."""


# --------------------------------------------------------------------------- build

def _render(fields: Iterable[tuple[str, Value]], omit_empty: bool) -> str:
    out: list[str] = []
    for name, value in fields:
        if value is None or (omit_empty and value == ""):
            continue
        if isinstance(value, str | int):
            out.append(f"<{name}>{escape(str(value))}</{name}>")
        else:
            out.append(f"<{name}>{_render(value, omit_empty)}</{name}>")
    return "".join(out)


def build_xml(fields: Iterable[tuple[str, Value]], *, omit_empty: bool = True,
              declaration: str = DECLARATION) -> str:
    """``<?xml …?><jdpay>…</jdpay>`` with the fields in the given order (nested via sequences of pairs)."""
    return f"{declaration}<jdpay>{_render(fields, omit_empty)}</jdpay>"


def build_envelope(merchant: str, encrypted: str, *, result: tuple[str, str] | None = None) -> str:
    """The outer message: version, merchant, (result,) encrypt (§3.4 step 4)."""
    fields: list[tuple[str, Value]] = [("version", VERSION), ("merchant", merchant)]
    if result is not None:
        fields.append(("result", [("code", result[0]), ("desc", result[1])]))
    fields.append(("encrypt", encrypted))
    return build_xml(fields)


# --------------------------------------------------------------------------- parse

def parse_xml(text: str) -> ET.Element:
    """Parse JD XML; refuses DTDs (hence entities), oversize input and anything not rooted at ``<jdpay>``."""
    if len(text) > MAX_XML_CHARS:
        raise WireFormatError("XML too large")
    if _DTD.search(text):
        raise WireFormatError("XML with a DTD is refused")
    try:
        root = ET.fromstring(text)  # noqa: S314 - no DTD, so no entity declarations can exist
    except ET.ParseError as exc:
        raise WireFormatError("not well-formed XML") from exc
    if root.tag != "jdpay":
        raise WireFormatError("root element is not <jdpay>")
    return root


def _element(elem: ET.Element) -> Any:
    children = list(elem)
    if not children:
        return (elem.text or "").strip()
    if len({c.tag for c in children}) == 1 and len(children) > 1 or elem.tag in ("payList", "refList"):
        return [_element(c) for c in children]
    return {c.tag: _element(c) for c in children}


def xml_fields(root: ET.Element) -> dict[str, Any]:
    """Child elements as a dict: leaves are stripped text, ``payList``/``refList`` are lists of dicts."""
    return {child.tag: _element(child) for child in root}


class Envelope:
    """The outer message of an answer or a notification."""

    def __init__(self, fields: Mapping[str, Any]) -> None:
        result = fields.get("result")
        self.merchant = _text(fields.get("merchant"))
        self.version = _text(fields.get("version"))
        self.code = _text(result.get("code")) if isinstance(result, dict) else None
        self.desc = _text(result.get("desc")) if isinstance(result, dict) else None
        self.encrypt = _text(fields.get("encrypt"))


def parse_envelope(text: str) -> Envelope:
    return Envelope(xml_fields(parse_xml(text)))


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


# --------------------------------------------------------------------------- time

def format_time(moment: datetime | float) -> str:
    when = moment if isinstance(moment, datetime) else datetime.fromtimestamp(moment, CST)
    return when.astimezone(CST).strftime("%Y%m%d%H%M%S")


def parse_time(value: str) -> datetime:
    if not _TIME.fullmatch(value):
        raise WireFormatError("time is not yyyyMMddHHmmss")
    try:
        return datetime.strptime(value, "%Y%m%d%H%M%S").replace(tzinfo=CST)
    except ValueError as exc:
        raise WireFormatError("time is not yyyyMMddHHmmss") from exc


# --------------------------------------------------------------------------- domain

def _amount(data: Mapping[str, Any]) -> int | None:
    value = data.get("amount")
    if value in (None, ""):
        return None
    if not isinstance(value, str) or not value.isdigit():
        raise WireFormatError("amount is not a fen integer")
    return int(value)


def _paid_at(data: Mapping[str, Any]) -> datetime | None:
    pays = data.get("payList")
    candidates = [p.get("tradeTime") for p in pays if isinstance(p, dict)] if isinstance(pays, list) else []
    candidates.append(data.get("tradeTime"))
    for value in candidates:
        if isinstance(value, str) and value:
            return parse_time(value)
    return None


def trade_status(data: Mapping[str, Any], *, out_trade_no: str | None = None) -> TradeStatus:
    """A decrypted, verified query answer or payment notification (tradeType 0) as a :class:`TradeStatus`."""
    status, trade_num = data.get("status"), data.get("tradeNum") or out_trade_no
    if not isinstance(trade_num, str) or not trade_num:
        raise WireFormatError("missing tradeNum")
    if not isinstance(status, str) or status not in TRADE_STATES:
        raise WireFormatError("unknown payment status")
    state = TRADE_STATES[status]
    currency = data.get("currency")
    return TradeStatus(
        out_trade_no=trade_num, state=state, amount_total=_amount(data),
        currency=currency if isinstance(currency, str) and currency else "CNY",
        provider_trade_id=None,  # V2.0 answers carry no JD-side trade id for H5 trades
        paid_at=_paid_at(data) if state is TradeState.PAID else None,
        merchant_id=_text(data.get("merchant")), raw=dict(data))


def refund_status(data: Mapping[str, Any], *, out_refund_no: str | None = None) -> RefundStatus:
    """A refund answer / refund query (tradeType 1) / refund notification as a :class:`RefundStatus`."""
    status, trade_num = data.get("status"), data.get("tradeNum") or out_refund_no
    if not isinstance(trade_num, str) or not trade_num:
        raise WireFormatError("missing tradeNum")
    if not isinstance(status, str) or status not in REFUND_STATES:
        raise WireFormatError("unknown refund status")
    state = REFUND_STATES[status]
    trade_time = data.get("tradeTime")
    succeeded = parse_time(trade_time) if state is RefundState.SUCCEEDED and isinstance(trade_time, str) \
        and trade_time else None
    return RefundStatus(out_refund_no=trade_num, state=state, amount=_amount(data),
                        out_trade_no=_text(data.get("oTradeNum")) or None, provider_refund_id=None,
                        succeeded_at=succeeded, merchant_id=_text(data.get("merchant")), raw=dict(data))

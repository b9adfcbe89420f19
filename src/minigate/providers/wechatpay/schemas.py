"""WeChat Pay v3 wire <-> minigate domain (pure functions; payment-protocols.md §1.4-§1.8).

JSON bodies are serialised once, compactly (``separators=(",", ":")``, ``ensure_ascii=False``), and the same
bytes are both signed and sent. Times are RFC 3339 with the ``+08:00`` offset WeChat uses.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime, timedelta, timezone
from typing import Any

from minigate.domain.results import RefundState, RefundStatus, TradeState, TradeStatus
from minigate.providers.bases.payment import CreateOrderRequest, RefundRequest

__all__ = [
    "CST",
    "REFUND_STATES",
    "TRADE_STATES",
    "WireFormatError",
    "close_body",
    "dumps",
    "format_time",
    "jsapi_body",
    "parse_time",
    "refund_body",
    "refund_status",
    "trade_status",
]

#: China Standard Time, the offset WeChat writes and expects.
CST = timezone(timedelta(hours=8))

TRADE_STATES: Mapping[str, TradeState] = {
    "SUCCESS": TradeState.PAID,
    "REFUND": TradeState.REFUNDED,
    "NOTPAY": TradeState.PENDING,
    "USERPAYING": TradeState.PENDING,
    "CLOSED": TradeState.CLOSED,
    "REVOKED": TradeState.CLOSED,
    "PAYERROR": TradeState.FAILED,
}

REFUND_STATES: Mapping[str, RefundState] = {
    "SUCCESS": RefundState.SUCCEEDED,
    "PROCESSING": RefundState.PROCESSING,
    "CLOSED": RefundState.FAILED,
    "ABNORMAL": RefundState.FAILED,
}


class WireFormatError(ValueError):
    """A (verified) WeChat object that does not have the shape we rely on."""


def dumps(obj: Mapping[str, Any]) -> bytes:
    """The one JSON serialisation used for request bodies: compact, UTF-8, non-ASCII kept as is."""
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def format_time(moment: datetime) -> str:
    """``2018-06-08T10:34:56+08:00``. Naive datetimes are refused (their zone would be a guess)."""
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError("timezone-aware datetime required")
    return moment.astimezone(CST).replace(microsecond=0).isoformat()


def parse_time(text: str) -> datetime:
    try:
        moment = datetime.fromisoformat(text)
    except (TypeError, ValueError) as exc:
        raise WireFormatError("not an RFC 3339 time") from exc
    if moment.tzinfo is None:
        raise WireFormatError("time without offset")
    return moment


def jsapi_body(req: CreateOrderRequest, *, appid: str, mchid: str) -> bytes:
    body: dict[str, Any] = {"appid": appid, "mchid": mchid, "description": req.description,
                            "out_trade_no": req.out_trade_no}
    if req.expires_at is not None:
        body["time_expire"] = format_time(req.expires_at)
    if req.attach is not None:
        body["attach"] = req.attach
    body["notify_url"] = req.notify_url
    body["amount"] = {"total": req.amount, "currency": req.currency}
    body["payer"] = {"openid": req.payer_id}
    return dumps(body)


def close_body(mchid: str) -> bytes:
    return dumps({"mchid": mchid})


def refund_body(req: RefundRequest) -> bytes:
    body: dict[str, Any] = {"out_trade_no": req.out_trade_no, "out_refund_no": req.out_refund_no}
    if req.reason is not None:
        body["reason"] = req.reason
    if req.notify_url is not None:
        body["notify_url"] = req.notify_url
    body["amount"] = {"refund": req.amount, "total": req.total, "currency": req.currency}
    return dumps(body)


def _str(data: Mapping[str, Any], key: str, *, required: bool = False) -> str | None:
    value = data.get(key)
    if value is None or value == "":
        if required:
            raise WireFormatError(f"missing {key}")
        return None
    if not isinstance(value, str):
        raise WireFormatError(f"{key} is not a string")
    return value


def _int(data: Mapping[str, Any], key: str) -> int | None:
    value = data.get(key)
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool):
        raise WireFormatError(f"{key} is not an integer")
    return value


def _obj(data: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = data.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise WireFormatError(f"{key} is not an object")
    return value


def trade_status(data: Mapping[str, Any]) -> TradeStatus:
    """A Transaction object (query answer or decrypted ``TRANSACTION.*`` resource) -> :class:`TradeStatus`."""
    wire_state = _str(data, "trade_state", required=True)
    state = TRADE_STATES.get(wire_state or "")
    if state is None:
        raise WireFormatError("unknown trade_state")
    amount = _obj(data, "amount")
    success_time = _str(data, "success_time")
    return TradeStatus(
        out_trade_no=_str(data, "out_trade_no", required=True) or "",
        state=state,
        amount_total=_int(amount, "total"),   # never payer_total: coupons do not change the order total
        currency=_str(amount, "currency") or "CNY",
        provider_trade_id=_str(data, "transaction_id"),
        paid_at=parse_time(success_time) if success_time else None,
        payer_id=_str(_obj(data, "payer"), "openid"),
        merchant_id=_str(data, "mchid"),
        app_id=_str(data, "appid"),
        raw=dict(data),
    )


def refund_status(data: Mapping[str, Any]) -> RefundStatus:
    """A Refund object (``status``) or a decrypted ``REFUND.*`` resource (``refund_status``)."""
    wire_state = _str(data, "status") or _str(data, "refund_status")
    state = REFUND_STATES.get(wire_state or "")
    if state is None:
        raise WireFormatError("unknown refund status")
    success_time = _str(data, "success_time")
    return RefundStatus(
        out_refund_no=_str(data, "out_refund_no", required=True) or "",
        state=state,
        amount=_int(_obj(data, "amount"), "refund"),
        out_trade_no=_str(data, "out_trade_no"),
        provider_refund_id=_str(data, "refund_id"),
        succeeded_at=parse_time(success_time) if success_time else None,
        merchant_id=_str(data, "mchid"),
        raw=dict(data),
    )

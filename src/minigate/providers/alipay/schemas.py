"""Alipay wire <-> minigate domain (pure functions; payment-protocols.md §2.4-§2.6).

``biz_content`` is serialised once, compactly (``separators=(",", ":")``, ``ensure_ascii=False``); the same
string is signed and sent. Amounts are yuan strings only here (:func:`~minigate.money.fen_to_yuan`).

``trade_status`` mapping: WAIT_BUYER_PAY -> PENDING, TRADE_SUCCESS / TRADE_FINISHED -> PAID, TRADE_CLOSED ->
CLOSED -- **except** a TRADE_CLOSED that shows a payment (``gmt_payment``/``send_pay_date`` or a positive
``refund_fee``): Alipay closes a trade once it is fully refunded (§2.5), and calling that CLOSED would tell
the ledger that money never moved; it is REFUNDED (paid, then refunded), which the services treat as paid.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from minigate.domain.results import RefundState, RefundStatus, TradeState, TradeStatus
from minigate.money import fen_to_yuan, yuan_to_fen
from minigate.providers.alipay import signing
from minigate.providers.alipay.config import AlipayConfig
from minigate.providers.bases.payment import CreateOrderRequest, RefundRequest

__all__ = [
    "PRODUCT_CODE",
    "TRADE_STATES",
    "WireFormatError",
    "compact_json",
    "create_biz",
    "refund_biz",
    "refund_query_result",
    "refund_result",
    "trade_status",
]

PRODUCT_CODE = "JSAPI_PAY"

TRADE_STATES: Mapping[str, TradeState] = {
    "WAIT_BUYER_PAY": TradeState.PENDING,
    "TRADE_SUCCESS": TradeState.PAID,
    "TRADE_FINISHED": TradeState.PAID,
    "TRADE_CLOSED": TradeState.CLOSED,
}


class WireFormatError(ValueError):
    """A (verified) Alipay object that does not have the shape we rely on."""


def compact_json(obj: Mapping[str, Any]) -> str:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


def create_biz(req: CreateOrderRequest, config: AlipayConfig) -> dict[str, Any]:
    """``alipay.trade.create`` biz_content (§2.4). ``attach`` travels as ``passback_params``."""
    if req.currency != "CNY":
        raise ValueError("Alipay JSAPI_PAY trades are in CNY")
    biz: dict[str, Any] = {"out_trade_no": req.out_trade_no, "total_amount": fen_to_yuan(req.amount),
                           "subject": req.description, "product_code": PRODUCT_CODE,
                           config.buyer_id_field: req.payer_id}
    if config.op_app_id:
        biz["op_app_id"] = config.op_app_id
    if req.expires_at is not None:
        biz["time_expire"] = signing.format_timestamp(req.expires_at)
    if req.attach:
        biz["passback_params"] = req.attach
    return biz


def refund_biz(req: RefundRequest) -> dict[str, Any]:
    """``alipay.trade.refund`` (§2.6): ``out_request_no`` = our out_refund_no, the idempotency key."""
    biz: dict[str, Any] = {"out_trade_no": req.out_trade_no, "refund_amount": fen_to_yuan(req.amount),
                           "out_request_no": req.out_refund_no}
    if req.reason:
        biz["refund_reason"] = req.reason
    return biz


def _str(data: Mapping[str, Any], key: str, *, required: bool = False) -> str | None:
    value = data.get(key)
    if value is None or value == "":
        if required:
            raise WireFormatError(f"missing {key}")
        return None
    if not isinstance(value, str):
        raise WireFormatError(f"{key} is not a string")
    return value


def _fen(data: Mapping[str, Any], key: str, *, required: bool = False) -> int | None:
    text = _str(data, key, required=required)
    if text is None:
        return None
    try:
        return yuan_to_fen(text)
    except ValueError as exc:
        raise WireFormatError(f"{key} is not a yuan amount") from exc


def _time(data: Mapping[str, Any], *keys: str) -> Any:
    for key in keys:
        text = _str(data, key)
        if text is not None:
            try:
                return signing.parse_timestamp(text)
            except ValueError as exc:
                raise WireFormatError(f"{key} is not yyyy-MM-dd HH:mm:ss") from exc
    return None


def trade_status(data: Mapping[str, Any], *, merchant_id: str | None = None,
                 app_id: str | None = None) -> TradeStatus:
    """A query answer or a notification -> :class:`TradeStatus` (see the module docstring for TRADE_CLOSED).

    ``merchant_id``/``app_id`` are defaults for answers that do not carry ``seller_id``/``app_id`` (queries).
    """
    wire = _str(data, "trade_status", required=True) or ""
    state = TRADE_STATES.get(wire)
    if state is None:
        raise WireFormatError("unknown trade_status")
    paid_at = _time(data, "gmt_payment", "send_pay_date")
    if state is TradeState.CLOSED and (paid_at is not None or (_fen(data, "refund_fee") or 0) > 0):
        state = TradeState.REFUNDED
    payer = _str(data, "buyer_open_id") or _str(data, "buyer_user_id") or _str(data, "buyer_id")
    return TradeStatus(
        out_trade_no=_str(data, "out_trade_no", required=True) or "",
        state=state,
        amount_total=_fen(data, "total_amount", required=True),
        provider_trade_id=_str(data, "trade_no"),
        paid_at=paid_at,
        payer_id=payer,
        merchant_id=_str(data, "seller_id") or merchant_id,
        app_id=_str(data, "app_id") or app_id,
        raw=dict(data),
    )


def refund_result(data: Mapping[str, Any], req: RefundRequest) -> RefundStatus:
    """``alipay.trade.refund`` success: synchronous, so SUCCEEDED whether ``fund_change`` is Y or N.

    ``fund_change=N`` means "no money moved by *this* call" -- a repeated ``out_request_no`` (§2.6).
    ``refund_fee`` is cumulative over the trade, so ``amount`` is the requested amount of this refund.
    """
    if _str(data, "fund_change") not in ("Y", "N"):
        raise WireFormatError("fund_change is not Y/N")
    out_trade_no = _str(data, "out_trade_no")
    if out_trade_no is not None and out_trade_no != req.out_trade_no:
        raise WireFormatError("refund answer is for another out_trade_no")
    _fen(data, "refund_fee", required=True)
    return RefundStatus(out_refund_no=req.out_refund_no, state=RefundState.SUCCEEDED, amount=req.amount,
                        out_trade_no=req.out_trade_no, provider_refund_id=_str(data, "trade_no"),
                        succeeded_at=_time(data, "gmt_refund_pay"), raw=dict(data))


def refund_query_result(data: Mapping[str, Any], *, out_refund_no: str,
                        out_trade_no: str) -> RefundStatus | None:
    """``alipay.trade.fastpay.refund.query``: None when there is no such refund (no ``refund_status``)."""
    status = _str(data, "refund_status")
    if status is None:
        return None
    if status != "REFUND_SUCCESS":
        raise WireFormatError("unknown refund_status")
    if _str(data, "out_trade_no") not in (None, out_trade_no):
        raise WireFormatError("refund belongs to another out_trade_no")
    if _str(data, "out_request_no") not in (None, out_refund_no):
        raise WireFormatError("answer is for another out_request_no")
    return RefundStatus(out_refund_no=out_refund_no, state=RefundState.SUCCEEDED,
                        amount=_fen(data, "refund_amount"), out_trade_no=out_trade_no,
                        provider_refund_id=_str(data, "trade_no"), succeeded_at=_time(data, "gmt_refund_pay"),
                        raw=dict(data))

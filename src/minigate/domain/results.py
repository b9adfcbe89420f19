"""What providers hand back to the services: typed results with a small closed vocabulary of codes."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Generic, TypeVar

__all__ = [
    "Checkout",
    "ProviderResult",
    "RefundState",
    "RefundStatus",
    "StandardCode",
    "TradeState",
    "TradeStatus",
    "Notification",
    "NotificationKind",
    "BillRow",
]

T = TypeVar("T")


class StandardCode(enum.StrEnum):
    """The closed set every provider's error codes map onto."""

    OK = "ok"
    INVALID_REQUEST = "invalid_request"          # the provider rejected our parameters
    AUTH_FAILED = "auth_failed"                  # signature / credentials refused
    NOT_FOUND = "not_found"                      # the trade or refund does not exist there
    ALREADY_PAID = "already_paid"                # cannot create/close: the payer already paid
    ORDER_CLOSED = "order_closed"                # the trade is closed
    PARAMS_MISMATCH = "params_mismatch"          # same merchant id re-used with other parameters
    REFUND_NOT_ALLOWED = "refund_not_allowed"    # amount too large, too late, trade not refundable
    INSUFFICIENT_BALANCE = "insufficient_balance"  # merchant balance cannot cover the refund
    RATE_LIMITED = "rate_limited"
    INVALID_PHONE = "invalid_phone"              # SMS: the number is malformed, unreachable or blacklisted
    TEMPLATE_REJECTED = "template_rejected"      # SMS: template/signature not approved or params do not fit
    CONTENT_REJECTED = "content_rejected"        # SMS: sensitive words, URLs where forbidden
    DECLINED = "declined"                        # any other business refusal


class TradeState(enum.StrEnum):
    PENDING = "pending"      # created, not paid (WeChat NOTPAY / USERPAYING)
    PAID = "paid"            # SUCCESS (refunds do not change this on the trade level)
    REFUNDED = "refunded"    # WeChat REFUND: paid, and at least one refund
    CLOSED = "closed"        # closed or revoked without payment
    FAILED = "failed"        # PAYERROR


class RefundState(enum.StrEnum):
    PROCESSING = "processing"
    SUCCEEDED = "succeeded"
    FAILED = "failed"        # CLOSED / ABNORMAL on the provider side


@dataclass(frozen=True, slots=True)
class ProviderResult(Generic[T]):
    ok: bool
    value: T | None = None
    code: StandardCode = StandardCode.OK
    provider_code: str | None = None
    message: str | None = None
    request_id: str | None = None

    @classmethod
    def success(cls, value: T, *, request_id: str | None = None) -> ProviderResult[T]:
        return cls(ok=True, value=value, request_id=request_id)

    @classmethod
    def decline(cls, code: StandardCode, *, provider_code: str | None, message: str | None,
                request_id: str | None = None) -> ProviderResult[T]:
        return cls(ok=False, code=code, provider_code=provider_code, message=message, request_id=request_id)


@dataclass(frozen=True, slots=True)
class Checkout:
    """What the mini-program needs to open the cashier, plus the provider's own id for the order."""

    client_params: dict[str, Any]
    provider_order_ref: str | None = None   # WeChat prepay_id, Alipay trade_no, ...


@dataclass(frozen=True, slots=True)
class TradeStatus:
    out_trade_no: str
    state: TradeState
    amount_total: int | None = None          # fen; the order total, not what the payer paid after coupons
    currency: str = "CNY"
    provider_trade_id: str | None = None     # WeChat transaction_id
    paid_at: datetime | None = None
    payer_id: str | None = None
    merchant_id: str | None = None           # mchid / seller_id, for cross-checks
    app_id: str | None = None                # appid / app_id, for cross-checks
    raw: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class RefundStatus:
    out_refund_no: str
    state: RefundState
    amount: int | None = None
    out_trade_no: str | None = None
    provider_refund_id: str | None = None
    succeeded_at: datetime | None = None
    merchant_id: str | None = None
    raw: dict[str, Any] = field(default_factory=dict)


class NotificationKind(enum.StrEnum):
    PAYMENT = "payment"
    REFUND = "refund"


@dataclass(frozen=True, slots=True)
class Notification:
    """A verified, decrypted provider callback."""

    kind: NotificationKind
    event_id: str                            # provider's event id, stable across retries
    trade: TradeStatus | None = None
    refund: RefundStatus | None = None


@dataclass(frozen=True, slots=True)
class BillRow:
    """One line of a provider's trade bill, normalised."""

    trade_time: str
    out_trade_no: str
    provider_trade_id: str
    trade_state: str
    amount: int                              # order amount, fen
    refund_amount: int = 0
    out_refund_no: str | None = None
    provider_refund_id: str | None = None
    fee: int = 0

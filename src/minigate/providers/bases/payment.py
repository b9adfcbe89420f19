"""The payment capability: what every payment provider (WeChat Pay, Alipay, JD Pay, ...) implements.

A provider is pure build/parse code plus ``send`` over an injected :class:`httpx.AsyncClient`.
Business refusals come back as ``ProviderResult(ok=False, code=StandardCode.X)``; transport trouble raises
:class:`~minigate.errors.OutcomeUnknown` (query before retrying); forged or invalid callbacks raise
:class:`~minigate.errors.NotificationRejected`.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any, ClassVar

import httpx

from minigate.domain.results import (
    BillRow,
    Checkout,
    Notification,
    ProviderResult,
    RefundStatus,
    TradeStatus,
)

__all__ = ["CreateOrderRequest", "NotificationReply", "PaymentProvider", "RefundRequest"]


@dataclass(frozen=True, slots=True)
class CreateOrderRequest:
    out_trade_no: str
    amount: int                       # fen
    description: str
    notify_url: str
    payer_id: str                     # WeChat openid, Alipay buyer_open_id / buyer_id
    currency: str = "CNY"
    expires_at: datetime | None = None
    attach: str | None = None
    client_ip: str | None = None
    #: where a browser cashier sends the payer back (JD's callbackUrl); informational, never trusted
    return_url: str | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class RefundRequest:
    out_trade_no: str
    out_refund_no: str
    amount: int                       # this refund, fen
    total: int                        # the order total, fen
    notify_url: str | None = None
    reason: str | None = None
    currency: str = "CNY"


@dataclass(frozen=True, slots=True)
class NotificationReply:
    """What to answer the provider's callback with."""

    status_code: int
    body: bytes = b""
    content_type: str = "application/json"


class PaymentProvider(abc.ABC):
    """Base class of every payment provider client."""

    #: registry name, e.g. ``"wechatpay"``
    name: ClassVar[str]
    #: minigate channels it serves, e.g. ``{"wechat_mini"}``
    channels: ClassVar[frozenset[str]]
    currencies: ClassVar[frozenset[str]] = frozenset({"CNY"})

    def __init__(self, client: httpx.AsyncClient) -> None:
        self.client = client

    @abc.abstractmethod
    async def create_order(self, req: CreateOrderRequest) -> ProviderResult[Checkout]: ...

    @abc.abstractmethod
    async def query_order(self, out_trade_no: str) -> ProviderResult[TradeStatus]: ...

    @abc.abstractmethod
    async def close_order(self, out_trade_no: str) -> ProviderResult[None]: ...

    @abc.abstractmethod
    async def refund(self, req: RefundRequest) -> ProviderResult[RefundStatus]: ...

    @abc.abstractmethod
    async def query_refund(self, out_refund_no: str, *, out_trade_no: str) -> ProviderResult[RefundStatus]: ...

    @abc.abstractmethod
    async def parse_notification(self, headers: Mapping[str, str], body: bytes) -> Notification:
        """Verify, decrypt and parse a callback. Raises NotificationRejected if it must not be trusted."""

    @abc.abstractmethod
    def ack(self) -> NotificationReply:
        """The reply that stops the provider's retries."""

    @abc.abstractmethod
    def nack(self, code: str, message: str) -> NotificationReply:
        """The reply that makes the provider send the callback again."""

    @abc.abstractmethod
    async def download_bill(self, bill_date: date) -> list[BillRow]: ...

"""Request bodies of the public API. Strict types: a string where an integer belongs is refused."""

from __future__ import annotations

from typing import Annotated

from fastapi import Query
from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Payer(_Body):
    openid: StrictStr = Field(description="the payer's openid under the mini-program (from /v1/wechat/login)")


class OrderCreate(_Body):
    channel: StrictStr = Field(examples=["wechat_mini"])
    amount: StrictInt = Field(description="integer fen: 100 = ¥1.00", examples=[100])
    currency: StrictStr = "CNY"
    description: StrictStr = Field(examples=["Latte, large"])
    merchant_order_no: StrictStr = Field(description="your own order number, unique per app",
                                         examples=["A20261126001"])
    payer: Payer
    expires_in: StrictInt = Field(default=7200, description="seconds the payer has to pay (60 s … 7 days)")
    metadata: dict[StrictStr, StrictStr] | None = None
    contact_phone: StrictStr | None = Field(
        default=None, description="the buyer's mobile number, for order SMS the app opted in to (stored encrypted)")


class RefundCreate(_Body):
    order: StrictStr = Field(description="id of the order to refund")
    amount: StrictInt | None = Field(default=None, description="fen; omitted = everything still refundable")
    reason: StrictStr | None = None
    metadata: dict[StrictStr, StrictStr] | None = None


class WebhookEndpointCreate(_Body):
    url: StrictStr
    enabled_events: list[StrictStr] = Field(default_factory=lambda: ["*"])


class AlipayLogin(_Body):
    code: StrictStr = Field(description="the auth code from my.getAuthCode() on the device", min_length=1,
                            max_length=128)


class WeChatLogin(_Body):
    code: StrictStr = Field(description="the code from wx.login() on the device", min_length=1, max_length=128)


#: a Unix time in seconds as a query filter: bounded to what a datetime holds (else a 400, not a 500)
UnixTime = Annotated[int | None, Query(ge=0, le=253402300799, description="Unix time, seconds")]

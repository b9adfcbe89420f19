"""Per-channel drivers for the payment contract suite: the few things that differ between providers.

A new payment provider plugs into the suite by adding one driver here: how the payer opens the cashier, and
which notification fields carry the amount and the merchant identity. Everything else is the public API.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import httpx

from tests.conftest import Gateway


@dataclass(frozen=True)
class Driver:
    channel: str
    provider: str
    #: overrides that make a genuinely signed notification carry another amount / another merchant
    wrong_amount: dict[str, Any]
    wrong_merchant: dict[str, Any]
    #: False where the provider has no close (JD Pay H5 trades lapse at expiry): a payment after our close is
    #: then taken, recorded and raised as order.paid_after_close for the merchant to refund or ship
    closes_at_provider: bool = True
    extra: dict[str, Any] = field(default_factory=dict)

    def sim(self, gw: Gateway) -> Any:
        return gw.rt.sandbox.simulator(self.provider)

    async def open_cashier(self, gw: Gateway, order: dict[str, Any]) -> None:
        """What the mini-program does with the order before the payer can pay (most channels: nothing)."""

    async def pay(self, gw: Gateway, order: dict[str, Any]) -> Any:
        await self.open_cashier(gw, order)
        r = await gw.http.post(f"/sandbox/{self.provider}/_sandbox/pay", json={"out_trade_no": order["out_trade_no"]})
        await gw.rt.sandbox.wait_idle()
        return r

    def forge(self, gw: Gateway, order: dict[str, Any], **overrides: Any) -> tuple[bytes, dict[str, str]]:
        body, headers = self.sim(gw).build_notification(order["out_trade_no"], **overrides)
        return bytes(body), dict(headers)

    def tamper(self, body: bytes) -> bytes:
        """Alter a signed notification after signing, keeping it well-formed."""
        raise NotImplementedError


class WeChatDriver(Driver):
    def tamper(self, body: bytes) -> bytes:
        return body.replace(b'"summary":"', b'"summary":"X', 1)


class AlipayDriver(Driver):
    def tamper(self, body: bytes) -> bytes:
        # one more parameter after signing: the signed content no longer matches
        return body + b"&passback_params=changed"


class JDDriver(Driver):
    async def open_cashier(self, gw: Gateway, order: dict[str, Any]) -> None:
        """The mini-program's <web-view> opens JD's H5 cashier: an auto-submitted form."""
        params = order["pay_params"]
        url = httpx.URL(params["cashier_url"])
        r = await gw.http.post(url.path, data=params["fields"])
        assert r.status_code == 200, r.text

    def tamper(self, body: bytes) -> bytes:
        # flip one hex digit of the encrypted payload (still well-formed hex/Base64 framing is JD's problem)
        import base64
        import re

        match = re.search(rb"<encrypt>([^<]+)</encrypt>", body)
        assert match
        hex_text = bytearray(base64.b64decode(match.group(1)))
        hex_text[40] = ord("0") if hex_text[40] != ord("0") else ord("1")
        return body.replace(match.group(1), base64.b64encode(bytes(hex_text)))


DRIVERS: list[Driver] = [
    WeChatDriver(channel="wechat_mini", provider="wechatpay",
                 wrong_amount={"amount": {"total": 1, "payer_total": 1, "currency": "CNY", "payer_currency": "CNY"}},
                 wrong_merchant={"mchid": "1900000000"}),
    AlipayDriver(channel="alipay_mini", provider="alipay", wrong_amount={"total_amount": "0.01"},
                 wrong_merchant={"seller_id": "2088000000000000"}),
    JDDriver(channel="jdpay_h5", provider="jdpay", wrong_amount={"amount": "1"},
             wrong_merchant={"merchant": "22294531"}, closes_at_provider=False),
]

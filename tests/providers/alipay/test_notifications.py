"""Alipay asynchronous notifications (§2.5): verification, every rejection code, partial refunds, replies."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote, urlencode

import httpx
import pytest

from minigate.domain.results import NotificationKind, TradeState
from minigate.errors import NotificationRejected
from minigate.providers.alipay import signing
from minigate.providers.alipay.config import AlipayConfig
from minigate.providers.alipay.provider import AlipayProvider
from tests.providers.alipay.test_provider import ALIPAY_KEY, MERCHANT

PROVIDER = AlipayProvider(AlipayConfig.model_validate(MERCHANT), httpx.AsyncClient())
FIELDS = {
    "notify_time": "2024-05-13 17:55:00", "notify_type": "trade_status_sync",
    "notify_id": "2024051300222175500068450559358070", "app_id": MERCHANT["app_id"],
    "auth_app_id": MERCHANT["app_id"], "charset": "utf-8", "version": "1.0", "sign_type": "RSA2",
    "trade_no": "2024051322001468450512505578", "out_trade_no": "ORDER1", "buyer_open_id": "074a1Cc",
    "seller_id": MERCHANT["seller_id"], "trade_status": "TRADE_SUCCESS", "total_amount": "88.88",
    "receipt_amount": "88.88", "buyer_pay_amount": "88.88", "subject": "测试 订单&=", "gmt_create":
    "2024-05-13 17:49:20", "gmt_payment": "2024-05-13 17:50:00",
    "fund_bill_list": '[{"amount":"88.88","fundChannel":"ALIPAYACCOUNT"}]',
}


def form(fields: dict[str, str], *, sign: bool = True, charset: str = "utf-8", **extra: str) -> bytes:
    data = dict(fields)
    if sign:
        data["sign"] = signing.rsa2_sign(ALIPAY_KEY, signing.notification_content(data), charset)
    data |= extra
    return urlencode(data, encoding=charset, quote_via=quote).encode("ascii")


async def parse(body: bytes) -> Any:
    return await PROVIDER.parse_notification({"content-type": "application/x-www-form-urlencoded"}, body)


async def test_payment_notification() -> None:
    note = await parse(form(FIELDS))
    assert (note.kind, note.event_id) == (NotificationKind.PAYMENT, FIELDS["notify_id"])
    assert note.trade is not None
    assert (note.trade.state, note.trade.amount_total, note.trade.out_trade_no) == (TradeState.PAID, 8888, "ORDER1")
    assert (note.trade.merchant_id, note.trade.app_id) == (MERCHANT["seller_id"], MERCHANT["app_id"])
    assert note.trade.raw["subject"] == "测试 订单&="


async def test_gbk_notification_uses_its_charset_field() -> None:
    note = await parse(form(FIELDS | {"charset": "gbk"}, charset="gbk"))
    assert note.trade is not None and note.trade.raw["subject"] == "测试 订单&="


async def test_partial_refund_notify_parses_as_payment_and_full_refund_as_refunded() -> None:
    refund = {"refund_fee": "10.00", "gmt_refund": "2024-05-13 18:00:00", "out_biz_no": "R1"}
    partial = await parse(form(FIELDS | refund | {"notify_id": "N2"}))
    assert partial.kind is NotificationKind.PAYMENT and partial.event_id == "N2"
    assert partial.trade is not None and partial.trade.state is TradeState.PAID
    assert partial.trade.raw["out_biz_no"] == "R1"
    closed = await parse(form(FIELDS | refund | {"trade_status": "TRADE_CLOSED", "refund_fee": "88.88"}))
    assert closed.trade is not None and closed.trade.state is TradeState.REFUNDED
    unpaid = {k: v for k, v in FIELDS.items() if k != "gmt_payment"} | {"trade_status": "TRADE_CLOSED"}
    assert (await parse(form(unpaid))).trade.state is TradeState.CLOSED
    finished = await parse(form(FIELDS | {"trade_status": "TRADE_FINISHED"}))
    assert finished.trade is not None and finished.trade.state is TradeState.PAID


async def test_event_id_is_stable_across_retries() -> None:
    first, again = await parse(form(FIELDS)), await parse(form(FIELDS | {"notify_time": "2024-05-13 17:59:00"}))
    assert first.event_id == again.event_id


@pytest.mark.parametrize(("body", "code"), [
    (form(FIELDS, sign=False), "missing_signature"),
    (form(FIELDS, sign=False) + b"&sign=", "missing_signature"),
    (form(FIELDS, sign=False) + b"&sign=QUJD", "invalid_signature"),
    (form(FIELDS) + b"&total_amount_x=1", "invalid_signature"),
    (form(FIELDS).replace(b"total_amount=88.88", b"total_amount=0.01"), "invalid_signature"),
    (form(FIELDS, sign_type="RSA"), "invalid_signature"),
    (form(FIELDS | {"app_id": "2021000000000000"}), "app_mismatch"),
    (form(FIELDS | {"seller_id": "2088000000000000"}), "merchant_mismatch"),
    (form(FIELDS | {"trade_status": "TRADE_PENDING_SOMETHING"}), "unsupported_event"),
    (form(FIELDS | {"notify_type": "fund_sync"}), "unsupported_event"),
    (form(FIELDS | {"total_amount": "8.888"}), "malformed_body"),
    (form({k: v for k, v in FIELDS.items() if k != "notify_id"}), "malformed_body"),
    (form(FIELDS) + b"&notify_id=again", "malformed_body"),
    (b"\xff\xfe not a form", "malformed_body"),
    (b"charset=nope&sign=x", "malformed_body"),
    (b"", "missing_signature"),
])
async def test_rejections(body: bytes, code: str) -> None:
    with pytest.raises(NotificationRejected) as info:
        await parse(body)
    assert info.value.code == code and info.value.http_status == 400
    assert PROVIDER.nack(code, info.value.message).body != b"success"


def test_ack_and_nack() -> None:
    ack = PROVIDER.ack()
    assert (ack.status_code, ack.body, ack.content_type) == (200, b"success", "text/plain")
    nack = PROVIDER.nack("amount_mismatch", "x")
    assert nack.status_code == 500 and nack.body == b"fail"
    assert PROVIDER.nack("invalid_signature", "x").status_code == 400


async def test_wait_buyer_pay_parses_as_a_pending_view_so_its_amount_is_checked_too() -> None:
    notification = await parse(form(FIELDS | {"trade_status": "WAIT_BUYER_PAY"}))
    assert notification.trade is not None and notification.trade.state is TradeState.PENDING
    assert notification.trade.amount_total == 8888

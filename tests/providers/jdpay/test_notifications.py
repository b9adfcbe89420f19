"""parse_notification: payment and refund notifications, one test per rejection code, ack/nack."""

from __future__ import annotations

import pytest

from minigate.domain.results import NotificationKind, RefundState, TradeState
from minigate.errors import NotificationRejected
from minigate.providers.jdpay import crypto, schemas
from tests.providers.jdpay import (
    DES,
    JD_KEY,
    MERCHANT,
    OTHER_DES,
    OTHER_KEY,
    envelope,
    jd_signed,
    make_provider,
    notification,
    payment_fields,
)

HEADERS = {"content-type": "application/xml"}


def refund_fields(status: str = "1") -> list[tuple[str, schemas.Value]]:
    return [("version", "V2.0"), ("merchant", MERCHANT), ("result", [("code", "000000"), ("desc", "success")]),
            ("tradeNum", "R1"), ("tradeType", "1"), ("oTradeNum", "ORDER20240513001"), ("amount", "500"),
            ("currency", "CNY"), ("tradeTime", "20240513180000"), ("note", ""), ("status", status)]


async def test_payment_notification() -> None:
    note = await make_provider().parse_notification(HEADERS, notification(payment_fields()))
    assert note.kind is NotificationKind.PAYMENT and note.event_id == "0:ORDER20240513001:2"
    assert note.trade is not None and note.trade.state is TradeState.PAID and note.trade.amount_total == 100
    assert note.trade.out_trade_no == "ORDER20240513001" and note.refund is None


async def test_event_id_is_stable_across_retries() -> None:
    provider = make_provider()
    first = await provider.parse_notification(HEADERS, notification(payment_fields()))
    again = await provider.parse_notification(HEADERS, notification(payment_fields()))
    assert first.event_id == again.event_id


async def test_jd_declaration_with_space_and_sign_in_the_middle_verify() -> None:
    fields = payment_fields()
    text = schemas.build_xml(fields, declaration='<?xml version="1.0" encoding="UTF-8" ?>')
    sign = crypto.rsa_sign(JD_KEY, crypto.xml_s1(text))
    at = text.index("</tradeType>") + len("</tradeType>")
    inner = text[:at] + f"<sign>{sign}</sign>" + text[at:]
    note = await make_provider().parse_notification(HEADERS, envelope(inner))
    assert note.kind is NotificationKind.PAYMENT


@pytest.mark.parametrize(("status", "state"), [("1", RefundState.SUCCEEDED), ("2", RefundState.FAILED)])
async def test_refund_notification(status: str, state: RefundState) -> None:
    note = await make_provider().parse_notification(HEADERS, notification(refund_fields(status)))
    assert note.kind is NotificationKind.REFUND and note.event_id == f"1:R1:{status}"
    assert note.refund is not None and note.refund.state is state and note.refund.amount == 500
    assert note.refund.out_trade_no == "ORDER20240513001" and note.trade is None


def _signed_text(text: str) -> str:
    return crypto.insert_sign(text, crypto.rsa_sign(JD_KEY, crypto.xml_s1(text)))


def _cases() -> dict[str, tuple[bytes, str]]:
    signed = jd_signed(payment_fields())
    return {
        "not-xml": (b"tradeNum=1&status=2", "malformed_body"),
        "not-utf8": (b"\xff\xfe<jdpay/>", "malformed_body"),
        "doctype": (b'<?xml version="1.0"?><!DOCTYPE jdpay [<!ENTITY a "x">]><jdpay>&a;</jdpay>', "malformed_body"),
        "no-encrypt": (schemas.build_xml([("version", "V2.0"), ("merchant", MERCHANT)]).encode(), "malformed_body"),
        "other-des-key": (notification(payment_fields(), des=OTHER_DES), "decrypt_failed"),
        "not-base64": (schemas.build_envelope(MERCHANT, "%%%").encode(), "decrypt_failed"),
        "other-jd-key": (notification(payment_fields(), key=OTHER_KEY), "invalid_signature"),
        "tampered": (envelope(signed.replace("<amount>100<", "<amount>1<")), "invalid_signature"),
        "no-sign": (envelope(schemas.build_xml(payment_fields())), "invalid_signature"),
        "signed-malformed": (envelope(_signed_text('<?xml version="1.0"?><jdpay><a><b></jdpay>')),
                             "malformed_body"),
        "bad-amount": (notification(payment_fields(amount="1.00")), "malformed_body"),
        "inner-merchant": (notification(payment_fields(merchant="999")), "merchant_mismatch"),
        "outer-merchant": (notification(payment_fields(), merchant="999"), "merchant_mismatch"),
        "unknown-status": (notification(payment_fields(status="7")), "unsupported_event"),
        "unknown-type": (notification(payment_fields(tradeType="9")), "unsupported_event"),
    }


@pytest.mark.parametrize("name", list(_cases()))
async def test_rejections(name: str) -> None:
    body, code = _cases()[name]
    with pytest.raises(NotificationRejected) as info:
        await make_provider().parse_notification(HEADERS, body)
    assert info.value.code == code and info.value.http_status == 400
    assert "PRIVATE" not in info.value.message and DES.hex() not in info.value.message


def test_ack_and_nack() -> None:
    provider = make_provider()
    ack = provider.ack()
    assert (ack.status_code, ack.body, ack.content_type) == (200, b"ok", "text/plain")
    assert make_provider(notify_ack_body="success").ack().body == b"success"
    nack = provider.nack("invalid_signature", "whatever")
    assert (nack.status_code, nack.body, nack.content_type) == (400, b"fail", "text/plain")


async def test_non_final_views_parse_so_their_fields_are_checked_too() -> None:
    unpaid = await make_provider().parse_notification(HEADERS, notification(payment_fields(status="0")))
    assert unpaid.trade is not None and unpaid.trade.state is TradeState.PENDING and unpaid.trade.amount_total
    processing = await make_provider().parse_notification(HEADERS, notification(refund_fields("0")))
    assert processing.refund is not None and processing.refund.state is RefundState.PROCESSING

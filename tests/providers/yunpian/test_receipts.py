"""Yunpian wire encodings and pushes: the tpl_value encoding (§1.3), status reports (form ``sms_status=``, once
or twice URL-encoded), reply pushes with ``_sign`` (Yunpian's published example), and the acknowledgement."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any
from urllib.parse import quote_plus, urlencode

import pytest

from minigate.errors import NotificationRejected
from minigate.providers.bases.sms import DeliveryState
from minigate.providers.yunpian.config import YunpianConfig
from minigate.providers.yunpian.provider import BEIJING, YunpianProvider, form_body, reply_sign, tpl_value, wire_mobile

APIKEY = "0123456789abcdef0123456789abcdef"
#: Yunpian's status-push example (domestic page), as JSON
DOC_REPORT = ('[{"error_detail":"接收成功","sid":9527,"uid":null,"user_receive_time":"2014-03-17 22:55:21",'
              '"error_msg":"","mobile":"15205201314","report_status":"SUCCESS"}]')
#: Yunpian's reply-push example and the _sign it publishes for apikey "0000"
DOC_REPLY: dict[str, Any] = {"id": "2a70c6bb4f2845da816ea1bfe5732747", "mobile": "15205201314",
                             "reply_time": "2014-03-17 22:55:21", "text": "收到了，谢谢！", "extend": "01",
                             "base_extend": "8888"}
DOC_REPLY_SIGN = "393d079e0a00912335adfe46f4a2e10f"


def provider(**extra: Any) -> YunpianProvider:
    config = YunpianConfig(apikey=APIKEY, base_url="https://sms.example", **extra)
    return YunpianProvider(config, client=None)  # type: ignore[arg-type]  # parsing needs no client


# ------------------------------------------------------------------ encodings
def test_tpl_value_vector_with_chinese_values() -> None:
    """urlencode("#code#")+"="+urlencode("1234")+"&"+urlencode("#name#")+"="+urlencode("张三") (§1.3)."""
    inner = tpl_value((("code", "1234"), ("name", "张三")))
    assert inner == "%23code%23=1234&%23name%23=%E5%BC%A0%E4%B8%89"
    # ... and form-encoded again as the field value
    assert form_body([("tpl_value", inner)]) == (
        b"tpl_value=%2523code%2523%3D1234%26%2523name%2523%3D%25E5%25BC%25A0%25E4%25B8%2589")


def test_tpl_value_matches_yunpian_doc_sample_and_escapes_separators() -> None:
    assert tpl_value((("company", "云片网"),)) == "%23company%23=%E4%BA%91%E7%89%87%E7%BD%91"
    # a value holding the separators cannot split into extra variables
    assert tpl_value((("promo", "满100减20 & 包邮=好"),)) == (
        "%23promo%23=%E6%BB%A1100%E5%87%8F20+%26+%E5%8C%85%E9%82%AE%3D%E5%A5%BD")
    assert tpl_value(()) == ""


def test_mobile_format() -> None:
    assert wire_mobile("+8613800138000") == "13800138000"
    assert wire_mobile("+447700900123") == "+447700900123"
    assert form_body([("mobile", wire_mobile("+93701234567"))]) == b"mobile=%2B93701234567"


# ------------------------------------------------------------------ status reports
def test_doc_report_parses() -> None:
    [receipt] = provider().parse_receipts({}, form_body([("sms_status", DOC_REPORT)]))
    assert receipt.provider_message_id == "9527"
    assert receipt.state is DeliveryState.DELIVERED
    assert receipt.phone == "+8615205201314"        # Yunpian strips +86; E.164 again here
    assert receipt.message_id is None
    assert receipt.error_code is None
    assert receipt.description == "接收成功"
    assert receipt.reported_at == dt.datetime(2014, 3, 17, 22, 55, 21, tzinfo=BEIJING)


def test_report_with_uid_failure_and_international_number() -> None:
    items = [{"error_detail": "用户状态异常", "sid": 3310228982123, "uid": "msg_abc", "user_receive_time":
              "2024-05-13 17:49:21", "error_msg": "DB:0103", "mobile": "+447700900123", "report_status": "FAIL"},
             {"sid": "42", "uid": "msg_def", "mobile": "13800138000", "report_status": "SUCCESS"}]
    first, second = provider().parse_receipts({}, form_body([("sms_status", json.dumps(items))]))
    assert (first.provider_message_id, first.state, first.message_id, first.error_code, first.phone) == (
        "3310228982123", DeliveryState.FAILED, "msg_abc", "DB:0103", "+447700900123")
    assert (second.provider_message_id, second.state, second.message_id, second.reported_at) == (
        "42", DeliveryState.DELIVERED, "msg_def", None)
    assert first.dedupe_key != second.dedupe_key


def test_report_encoded_twice_is_accepted() -> None:
    """"部分语言由于解码方式差异需要解码两次": the same reports whether the JSON was URL-encoded once or twice."""
    once = provider().parse_receipts({}, form_body([("sms_status", DOC_REPORT)]))
    twice = provider().parse_receipts({}, ("sms_status=" + quote_plus(quote_plus(DOC_REPORT))).encode())
    assert once == twice


@pytest.mark.parametrize("body", [
    b"",
    b"sms_reply=%5B%5D",                                          # another push
    b"sms_status=not-json",
    b"sms_status=%5B%5D",                                         # empty list
    b"sms_status=%5B1%5D",                                        # not objects
    form_body([("sms_status", '[{"sid":1,"report_status":"DELIVRD"}]')]),
    form_body([("sms_status", '[{"report_status":"SUCCESS"}]')]),
    form_body([("sms_status", DOC_REPORT), ("sms_status", DOC_REPORT)]),
    b"sms_status=%ff%fe",                                         # not UTF-8
    b'[{"sid":1,"report_status":"SUCCESS"}]',                     # JSON body, not a form
])
def test_bodies_that_are_not_reports_are_rejected(body: bytes) -> None:
    with pytest.raises(NotificationRejected) as caught:
        provider().parse_receipts({}, body)
    assert caught.value.code == "invalid_receipt"


def test_ack_is_plain_success() -> None:
    reply = provider().receipt_ack()
    assert (reply.status_code, reply.body, reply.content_type) == (200, b"SUCCESS", "text/plain")
    assert provider().receipt_nack().body != b"SUCCESS"


# ------------------------------------------------------------------ replies
def test_reply_sign_reproduces_yunpian_published_example() -> None:
    assert reply_sign(DOC_REPLY, "0000") == DOC_REPLY_SIGN
    assert reply_sign(DOC_REPLY | {"_sign": "ignored"}, "0000") == DOC_REPLY_SIGN
    assert reply_sign(DOC_REPLY, "0001") != DOC_REPLY_SIGN


def test_reply_parses_and_sign_is_checked_only_when_configured() -> None:
    signed = DOC_REPLY | {"_sign": reply_sign(DOC_REPLY, APIKEY)}
    body = urlencode({"sms_reply": json.dumps(signed, ensure_ascii=False)}).encode()
    [reply] = provider(reply_sign_check=True).parse_replies({}, body)
    assert (reply.phone, reply.text, reply.reply_id) == ("+8615205201314", "收到了，谢谢！", DOC_REPLY["id"])
    assert reply.received_at == dt.datetime(2014, 3, 17, 22, 55, 21, tzinfo=BEIJING)

    forged = urlencode({"sms_reply": json.dumps(signed | {"text": "TD"}, ensure_ascii=False)}).encode()
    with pytest.raises(NotificationRejected) as caught:
        provider(reply_sign_check=True).parse_replies({}, forged)
    assert caught.value.code == "invalid_signature"
    unsigned = urlencode({"sms_reply": json.dumps(DOC_REPLY, ensure_ascii=False)}).encode()
    with pytest.raises(NotificationRejected):
        provider(reply_sign_check=True).parse_replies({}, unsigned)
    # off (the default): the same bodies parse
    assert provider().parse_replies({}, forged)[0].text == "TD"
    assert provider().parse_replies({}, unsigned)[0].text == "收到了，谢谢！"


def test_reply_without_mobile_is_rejected() -> None:
    body = urlencode({"sms_reply": json.dumps({"id": "1", "text": "TD"})}).encode()
    with pytest.raises(NotificationRejected):
        provider().parse_replies({}, body)

"""SmsReport (delivery receipts) and SmsUp (replies) pushes: the documented shapes, tolerated variants, refusals,
and the acknowledgement body; plus a reply pushed by the simulator."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from minigate.errors import NotificationRejected
from minigate.providers.aliyun_sms.config import AliyunSmsConfig
from minigate.providers.aliyun_sms.provider import REPLY_FIELD_ALIASES, AliyunSmsProvider
from minigate.providers.bases.sms import DeliveryState
from minigate.simulators import Sandbox

BEIJING = dt.timezone(dt.timedelta(hours=8))
HEADERS = {"content-type": "application/json"}


@pytest.fixture
def sms() -> AliyunSmsProvider:
    cfg = AliyunSmsConfig.model_validate({"access_key_id": "a", "access_key_secret": "b", "sign_name": "迷你网关"})
    return AliyunSmsProvider(cfg, httpx.AsyncClient())


def body(items: Any) -> bytes:
    return json.dumps(items, ensure_ascii=False).encode()


def test_documented_report(sms: AliyunSmsProvider) -> None:
    documented = [{"phone_number": "1381111****", "send_time": "2017-01-01 00:00:00",
                   "report_time": "2017-01-01 00:00:00", "success": True, "err_code": "DELIVERED",
                   "err_msg": "用户接收成功", "sms_size": "1", "biz_id": "12345********", "out_id": "67890**"}]
    [receipt] = sms.parse_receipts(HEADERS, body(documented))
    assert receipt.provider_message_id == "12345********" and receipt.message_id == "67890**"
    assert receipt.state is DeliveryState.DELIVERED and receipt.phone is None        # masked in the doc example
    assert receipt.error_code == "DELIVERED" and receipt.description == "用户接收成功"
    assert receipt.reported_at == dt.datetime(2017, 1, 1, tzinfo=BEIJING)


def test_batch_with_failures_and_string_booleans(sms: AliyunSmsProvider) -> None:
    items = [{"phone_number": "13800138000", "success": "false", "err_code": "MK:0001", "err_msg": "失败",
              "biz_id": "900619746936498440^0", "out_id": "msg_a", "report_time": "bad"},
             {"phone_number": "8613800138001", "success": "TRUE", "biz_id": 42, "out_id": ""}]
    failed, delivered = sms.parse_receipts(HEADERS, body(items))
    assert failed.state is DeliveryState.FAILED and failed.error_code == "MK:0001"
    assert failed.phone == "+8613800138000" and failed.message_id == "msg_a" and failed.reported_at is None
    assert delivered.state is DeliveryState.DELIVERED and delivered.provider_message_id == "42"
    assert delivered.phone == "+8613800138001" and delivered.message_id is None
    assert failed.dedupe_key != delivered.dedupe_key
    assert sms.parse_receipts(HEADERS, b"[]") == []


@pytest.mark.parametrize("raw", [b"", b"not json", b'{"biz_id":"1","success":true}', b"[1]",
                                 b'[{"success":true}]', b'[{"biz_id":"1"}]', b'[{"biz_id":"1","success":"yes"}]',
                                 body([{"biz_id": "1", "success": True}] * 1001)])
def test_not_a_report(sms: AliyunSmsProvider, raw: bytes) -> None:
    with pytest.raises(NotificationRejected) as info:
        sms.parse_receipts(HEADERS, raw)
    assert info.value.code == "invalid_receipt"


def test_ack_and_nack(sms: AliyunSmsProvider) -> None:
    ack = sms.receipt_ack()
    assert ack.status_code == 200 and ack.content_type == "application/json"
    assert ack.body == '{"code":0,"msg":"接收成功"}'.encode()
    assert sms.receipt_nack().status_code == 500


def test_documented_reply(sms: AliyunSmsProvider) -> None:
    items = [{"phone_number": "13800138000", "send_time": "2024-01-01 08:00:01", "content": "TD",
              "sign_name": "迷你网关", "dest_code": "1", "sequence_id": 1234567}]
    [reply] = sms.parse_replies(HEADERS, body(items))
    assert reply.phone == "+8613800138000" and reply.text == "TD" and reply.sign_name == "迷你网关"
    assert reply.reply_id == "1234567" and reply.received_at == dt.datetime(2024, 1, 1, 8, 0, 1, tzinfo=BEIJING)


def test_reply_field_names_are_tolerant(sms: AliyunSmsProvider) -> None:
    """The SmsUp field names are from one secondary source: camel-case and other aliases are read too."""
    assert REPLY_FIELD_ALIASES["phone"][0] == "phone_number" and REPLY_FIELD_ALIASES["text"][0] == "content"
    items = [{"phoneNumber": "+8613800138000", "Content": "退订", "sendTime": "2024-01-01 08:00:01",
              "SequenceId": "9", "signName": "迷你网关"},
             {"mobile": "13800138001", "text": "TD"}]
    first, second = sms.parse_replies(HEADERS, body(items))
    assert (first.phone, first.text, first.reply_id, first.sign_name) == ("+8613800138000", "退订", "9", "迷你网关")
    assert first.received_at is not None
    assert (second.phone, second.text, second.reply_id, second.received_at) == ("+8613800138001", "TD", None, None)


@pytest.mark.parametrize("raw", [b"{}", b'[{"content":"TD"}]', b'[{"phone_number":"13800138000"}]',
                                 b'[{"phone_number":"123","content":"TD"}]', b"x"])
def test_not_a_reply(sms: AliyunSmsProvider, raw: bytes) -> None:
    with pytest.raises(NotificationRejected) as info:
        sms.parse_replies(HEADERS, raw)
    assert info.value.code == "invalid_reply"


def test_an_empty_reply_batch(sms: AliyunSmsProvider) -> None:
    assert sms.parse_replies(HEADERS, b"[]") == []


async def test_reply_pushed_by_the_simulator_parses(tmp_path: Path, sms: AliyunSmsProvider) -> None:
    pushed: list[bytes] = []

    def hook(request: httpx.Request) -> httpx.Response:
        pushed.append(request.content)
        return httpx.Response(200, json={"code": 0, "msg": "接收成功"})

    box = Sandbox(tmp_path, time_scale=0.0, notify_client=httpx.AsyncClient(transport=httpx.MockTransport(hook)))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=box.app), base_url="http://sandbox") as client:
        r = await client.post("/aliyun-sms/_sandbox/reply", json={"phone": "13800138000", "text": "TD"})
        assert r.status_code == 409                             # no reply URL registered yet
        await client.post("/aliyun-sms/_sandbox/callbacks", json={"reply_url": "http://testserver/up"})
        r = await client.post("/aliyun-sms/_sandbox/reply", json={"phone": "13800138000", "text": "TD"})
        assert r.status_code == 200
        await box.wait_idle()
    [reply] = sms.parse_replies(HEADERS, pushed[0])
    assert reply.phone == "+8613800138000" and reply.text == "TD" and reply.sign_name == "迷你网关"
    assert reply.reply_id is not None and reply.received_at is not None
    await box.aclose()

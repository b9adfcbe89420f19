"""Tencent SMS pushes: delivery receipts (JSON array, §1.2.2), upstream replies (doc "SMS Reply"), the ack, and
a receipt and a reply pushed by the simulator read back by the provider."""

from __future__ import annotations

import asyncio
import datetime as dt
from pathlib import Path

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from minigate.errors import NotificationRejected
from minigate.providers import registry
from minigate.providers.bases.sms import DeliveryState, SmsRequest
from minigate.providers.registry import SandboxContext
from minigate.providers.tencentcloud.config import TencentSmsConfig
from minigate.providers.tencentcloud.sms import TencentSmsProvider
from minigate.simulators import Sandbox

BEIJING = dt.timezone(dt.timedelta(hours=8))
DOC_RECEIPT = ('[{"user_receive_time":"2015-10-17 08:03:04","nationcode":"86","mobile":"13800138000",'
               '"report_status":"SUCCESS","errmsg":"DELIVRD","description":"用户短信送达成功","sid":"xxxxxxx"},'
               '{"user_receive_time":"2015-10-17 08:03:05","nationcode":"86","mobile":"13900139000",'
               '"report_status":"FAIL","errmsg":"MK:0001","description":"用户短信未送达","sid":"yyyyyyy"}]').encode()
DOC_REPLY = ('{"extend":"","mobile":"13800138000","nationcode":"86","sign":"腾讯云","text":"TD",'
             '"time":1457336869}').encode()


@pytest.fixture
def provider() -> TencentSmsProvider:
    config = TencentSmsConfig(secret_id="AKIDEXAMPLE", secret_key="SECRETEXAMPLE", sms_sdk_app_id="1400006666")
    return TencentSmsProvider(config, httpx.AsyncClient())


def test_receipts_from_the_documented_body(provider: TencentSmsProvider) -> None:
    ok, failed = provider.parse_receipts({}, DOC_RECEIPT)
    assert (ok.provider_message_id, ok.state, ok.phone, ok.error_code, ok.description) == (
        "xxxxxxx", DeliveryState.DELIVERED, "+8613800138000", "DELIVRD", "用户短信送达成功")
    assert ok.reported_at == dt.datetime(2015, 10, 17, 8, 3, 4, tzinfo=BEIJING) and ok.message_id is None
    assert (failed.provider_message_id, failed.state, failed.error_code) == ("yyyyyyy", DeliveryState.FAILED,
                                                                             "MK:0001")
    assert ok.dedupe_key != failed.dedupe_key
    assert provider.parse_receipts({}, b"[]") == []
    [single] = provider.parse_receipts({}, DOC_RECEIPT[1:DOC_RECEIPT.index(b"},") + 1])   # one bare object
    assert single.provider_message_id == "xxxxxxx"


@pytest.mark.parametrize("body", [b"", b"not json", b'"x"', b"[1]", b'[{"sid":"a"}]',
                                  b'[{"sid":"a","report_status":"MAYBE"}]', b'[{"report_status":"SUCCESS"}]',
                                  b'{"result":0}'])
def test_bodies_that_are_not_receipts(provider: TencentSmsProvider, body: bytes) -> None:
    with pytest.raises(NotificationRejected) as info:
        provider.parse_receipts({}, body)
    assert info.value.code == "invalid_receipt"


def test_replies(provider: TencentSmsProvider) -> None:
    [reply] = provider.parse_replies({}, DOC_REPLY)
    assert (reply.phone, reply.text, reply.sign_name) == ("+8613800138000", "TD", "腾讯云")
    assert reply.received_at == dt.datetime.fromtimestamp(1457336869, dt.UTC)
    tolerant = provider.parse_replies({}, '[{"mobile":"13800138000","text":"退订","time":"2016-03-07 15:47:49"}]'
                                      .encode())
    assert (tolerant[0].phone, tolerant[0].sign_name) == ("+8613800138000", None)
    assert tolerant[0].received_at == dt.datetime(2016, 3, 7, 15, 47, 49, tzinfo=BEIJING)
    for bad in (b"x", b'{"text":"TD"}', b'{"mobile":"13800138000"}', b"[3]"):
        with pytest.raises(NotificationRejected) as info:
            provider.parse_replies({}, bad)
        assert info.value.code == "invalid_reply"


def test_ack_and_nack(provider: TencentSmsProvider) -> None:
    ack = provider.receipt_ack()
    assert (ack.status_code, ack.body, ack.content_type) == (200, b'{"result":0,"errmsg":"OK"}', "application/json")
    assert provider.receipt_nack().status_code == 500


async def test_simulator_pushes_what_the_provider_reads(tmp_path: Path) -> None:
    captured: dict[str, list[bytes]] = {"/receipts": [], "/replies": []}
    sandbox = Sandbox(tmp_path, time_scale=0.0)
    provider_ref: list[TencentSmsProvider] = []

    async def receive(request: Request) -> Response:
        body = await request.body()
        captured[request.url.path].append(body)
        ack = provider_ref[0].receipt_ack()
        return Response(ack.body, ack.status_code, media_type=ack.content_type)

    receiver = Starlette(routes=[Route("/receipts", receive, methods=["POST"]),
                                 Route("/replies", receive, methods=["POST"])])
    sandbox.notify_client = httpx.AsyncClient(transport=httpx.ASGITransport(app=receiver), base_url="http://testserver")
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=sandbox.app), base_url="http://sandbox") as http:
        spec = registry.sms_spec("tencentcloud")
        assert spec is not None
        config = spec.sandbox(SandboxContext(credentials=sandbox.credentials, base_url="http://sandbox",
                                             browser_url="http://sandbox"))
        provider = spec.build(config, http)
        assert isinstance(provider, TencentSmsProvider)
        provider_ref.append(provider)
        await http.post("/tencentcloud/_sandbox/callbacks", json={"receipt_url": "http://testserver/receipts",
                                                                  "reply_url": "http://testserver/replies"})
        template = provider.config.template("order_paid")
        assert template is not None and template.params == ("order", "amount")
        sent = await provider.send(SmsRequest(message_id="msg_r", phone="+8613800138000",
                                              sign_name=provider.config.sign_name, template_id=template.id,
                                              params=(("order", "A1"), ("amount", "9.90"))))
        assert sent.ok and sent.value is not None
        await http.post("/tencentcloud/_sandbox/reply", json={"phone": "+8613800138000", "text": "TD"})
        await asyncio.wait_for(sandbox.wait_idle(), 10)
        [receipt] = provider.parse_receipts({}, captured["/receipts"][0])
        assert (receipt.provider_message_id, receipt.state, receipt.phone) == (
            sent.value.provider_message_id, DeliveryState.DELIVERED, "+8613800138000")
        [reply] = provider.parse_replies({}, captured["/replies"][0])
        assert (reply.phone, reply.text, reply.sign_name) == ("+8613800138000", "TD", provider.config.sign_name)
        log = (await http.get("/tencentcloud/_sandbox/messages")).json()["messages"]
        assert log[0]["status"] == "delivered"
    assert all(r.state == "delivered" for r in sandbox.deliverers["tencentcloud"].log)
    await sandbox.aclose()

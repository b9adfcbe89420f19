"""YunpianProvider: the exact request it sends (and that it is the official Python SDK's request shape), answer
and error mapping over ``httpx.MockTransport``, then end to end against the ``yunpian`` simulator in a Sandbox."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import httpx
import pytest
import requests

from minigate.domain.results import StandardCode
from minigate.errors import OutcomeUnknown, ProviderUnavailable
from minigate.providers import registry
from minigate.providers.bases.sms import DeliveryState, SmsProvider, SmsRequest
from minigate.providers.yunpian.codes import CODES, MESSAGES
from minigate.providers.yunpian.config import YunpianConfig
from minigate.providers.yunpian.provider import YunpianProvider
from minigate.simulators.sandbox import Sandbox
from tests.providers import sandboxed

APIKEY = "0123456789abcdef0123456789abcdef"
BASE = "https://sms.yunpian.com"
NOW = 1715593760.0                     # 2024-05-13 17:49:20 Beijing
SENT = dt.datetime(2024, 5, 13, 9, 49, 20, tzinfo=dt.UTC)
OK = {"code": 0, "msg": "发送成功", "count": 1, "fee": 0.05, "unit": "RMB", "mobile": "13800138000",
      "sid": 3310228982123}


def request(**extra: Any) -> SmsRequest:
    base: dict[str, Any] = {"message_id": "msg_7f3k", "phone": "+8613800138000", "sign_name": "小程序沙箱",
                            "template_id": "5000001", "params": (("code", "493021"), ("minutes", "5")),
                            "text": "【小程序沙箱】您的验证码为493021，5分钟内有效，请勿泄露于他人。", "sent_at": SENT}
    return SmsRequest(**(base | extra))


@dataclass
class Fake:
    """Records each request; answers from ``answers`` in turn (a dict is JSON with its status, a callable any)."""

    answers: list[Any]
    seen: list[httpx.Request] = field(default_factory=list)

    def __call__(self, req: httpx.Request) -> httpx.Response:
        self.seen.append(req)
        answer = self.answers.pop(0)
        if callable(answer):
            return answer(req)  # type: ignore[no-any-return]
        status, body = answer if isinstance(answer, tuple) else (200, answer)
        return httpx.Response(status, content=json.dumps(body, ensure_ascii=False).encode(),
                              headers={"Content-Type": "application/json;charset=utf-8"})

    def form(self, index: int = -1) -> dict[str, str]:
        return dict(parse_qsl(self.seen[index].content.decode(), keep_blank_values=True))


def provider(fake: Fake, **extra: Any) -> YunpianProvider:
    config = YunpianConfig(apikey=APIKEY, sign_name="小程序沙箱", templates={"verification_code": "5000001"},
                           **({"base_url": BASE} | extra))
    return YunpianProvider(config, httpx.AsyncClient(transport=httpx.MockTransport(fake)), clock=lambda: NOW)


def error(code: int, detail: str = "") -> tuple[int, dict[str, Any]]:
    return 400, {"http_status_code": 400, "code": code, "msg": MESSAGES.get(code, "?"), "detail": detail}


# ------------------------------------------------------------------ the request
async def test_send_request_is_exact() -> None:
    fake = Fake([OK])
    result = await provider(fake).send(request())
    assert result.ok and result.value is not None
    assert (result.value.provider_message_id, result.value.segments, result.value.fee) == ("3310228982123", 1, "0.05")
    sent = fake.seen[0]
    assert (sent.method, str(sent.url)) == ("POST", "https://sms.yunpian.com/v2/sms/tpl_single_send.json")
    assert sent.headers["content-type"] == "application/x-www-form-urlencoded;charset=utf-8"
    assert sent.headers["accept"] == "application/json;charset=utf-8"
    assert sent.content == (b"apikey=0123456789abcdef0123456789abcdef&mobile=13800138000&tpl_id=5000001"
                            b"&tpl_value=%2523code%2523%3D493021%26%2523minutes%2523%3D5&uid=msg_7f3k")


async def test_send_request_has_the_official_python_sdk_shape() -> None:
    """yunpian-python-sdk (``SmsApi.tpl_single_send``) posts ``requests.post(uri, param)`` with the caller's fields,
    ``apikey`` appended by ``verify_param``, to ``{host}/v2/sms/tpl_single_send.json`` with a form content type.
    Prepared here with requests exactly as the SDK would, it carries the same fields as ours, byte for byte."""
    fake = Fake([OK])
    await provider(fake).send(request())
    ours = fake.seen[0]
    sdk_param = {"mobile": "13800138000", "tpl_id": "5000001",
                 "tpl_value": "%23code%23=493021&%23minutes%23=5", "uid": "msg_7f3k", "apikey": APIKEY}
    sdk = requests.Request("POST", "https://sms.yunpian.com/v2/sms/tpl_single_send.json", data=sdk_param,
                           headers={"Api-Lang": "python",
                                    "Content-Type": "application/x-www-form-urlencoded;charset=utf-8"}).prepare()
    assert sdk.url == str(ours.url)
    assert sdk.headers["Content-Type"] == ours.headers["content-type"]
    assert isinstance(sdk.body, str)
    assert sorted(sdk.body.split("&")) == sorted(ours.content.decode().split("&"))


async def test_international_number_and_callback_url_and_text_mode() -> None:
    fake = Fake([OK, OK])
    await provider(fake, callback_url="https://gw.example/sms/yunpian/receipts").send(
        request(phone="+447700900123"))
    assert fake.form(0)["mobile"] == "+447700900123"
    assert b"mobile=%2B447700900123" in fake.seen[0].content
    assert fake.form(0)["callback_url"] == "https://gw.example/sms/yunpian/receipts"
    await provider(fake, send_method="single_send").send(request())
    assert str(fake.seen[1].url).endswith("/v2/sms/single_send.json")
    assert fake.form(1) == {"apikey": APIKEY, "mobile": "13800138000", "text": request().text, "uid": "msg_7f3k"}


async def test_nothing_is_sent_without_what_the_method_needs() -> None:
    fake = Fake([])
    result = await provider(fake, send_method="single_send").send(request(text=""))
    assert not result.ok and result.code is StandardCode.INVALID_REQUEST
    result = await provider(fake).send(request(phone="12345"))
    assert not result.ok and result.code is StandardCode.INVALID_PHONE
    assert fake.seen == []


# ------------------------------------------------------------------ answers
@pytest.mark.parametrize(("answer", "code", "provider_code"), [
    (error(-1, "请检查apikey是否正确"), StandardCode.AUTH_FAILED, "-1"),
    (error(1, "参数 mobile 必须传入"), StandardCode.INVALID_REQUEST, "1"),
    (error(2, "参数 mobile 格式不正确，mobile手机号格式不正确"), StandardCode.INVALID_PHONE, "2"),
    (error(2, "参数 tpl_value 格式不正确"), StandardCode.TEMPLATE_REJECTED, "2"),
    (error(2, "参数 start_time 格式不正确"), StandardCode.INVALID_REQUEST, "2"),
    (error(3), StandardCode.INSUFFICIENT_BALANCE, "3"),
    (error(4), StandardCode.CONTENT_REJECTED, "4"),
    (error(5), StandardCode.TEMPLATE_REJECTED, "5"),
    (error(8), StandardCode.RATE_LIMITED, "8"),
    (error(10), StandardCode.INVALID_PHONE, "10"),
    (error(15), StandardCode.TEMPLATE_REJECTED, "15"),
    (error(17), StandardCode.RATE_LIMITED, "17"),
    (error(22), StandardCode.RATE_LIMITED, "22"),
    (error(-5), StandardCode.RATE_LIMITED, "-5"),
    (error(99), StandardCode.DECLINED, "99"),
    ((200, {"code": 13, "msg": "您的营销短信已暂停发送"}), StandardCode.DECLINED, "13"),
])
async def test_refusals_are_declines(answer: Any, code: StandardCode, provider_code: str) -> None:
    result = await provider(Fake([answer])).send(request())
    assert not result.ok
    assert (result.code, result.provider_code) == (code, provider_code)


def test_every_listed_code_is_mapped() -> None:
    listed = {1, 2, 3, 4, 5, 7, 8, 9, 10, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 25, 28, -1, -2, -3, -4, -5}
    assert set(CODES) == listed
    assert set(MESSAGES) == listed | {0, -50, -51, -53}


async def test_numbers_in_details_are_masked() -> None:
    result = await provider(Fake([error(2, "手机号 13800138000 格式不正确")])).send(request())
    assert result.message is not None and "13800138000" not in result.message and "138****8000" in result.message


@pytest.mark.parametrize("answer", [
    error(-50), error(-51), error(-53),
    (500, {"code": -50}), (502, {}), (429, {}), (404, {}),
    (400, {"msg": "no code"}),
    lambda req: httpx.Response(200, content=b"<html>busy</html>"),
    (200, {"code": 0, "msg": "发送成功"}),                  # no sid
    (200, [1, 2]),
])
async def test_unknown_outcomes_raise(answer: Any) -> None:
    with pytest.raises(ProviderUnavailable):
        await provider(Fake([answer])).send(request())


async def test_transport_errors_are_unknown_outcomes() -> None:
    def broken(req: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=req)

    with pytest.raises(OutcomeUnknown):
        await provider(Fake([broken])).send(request())


# ------------------------------------------------------------------ find
def record(uid: str | None, sid: int = 1, **extra: Any) -> dict[str, Any]:
    return {"sid": sid, "mobile": "13800138000", "send_time": "2024-05-13 17:49:20", "text": "【x】y",
            "send_status": "SUCCESS", "report_status": "UNKNOWN", "fee": 1, "user_receive_time": None,
            "error_msg": "", "uid": uid} | extra


async def test_find_request_window_and_match_by_uid() -> None:
    fake = Fake([[record(None, 1), record("msg_other", 2),
                  record("msg_7f3k", 3310228982123, report_status="FAIL", error_msg="DB:0103")]])
    result = await provider(fake).find(request())
    assert result.ok and result.value is not None
    assert (result.value.found, result.value.provider_message_id, result.value.state, result.value.error_code) == (
        True, "3310228982123", DeliveryState.FAILED, "DB:0103")
    assert str(fake.seen[0].url) == "https://sms.yunpian.com/v2/sms/get_record.json"
    assert fake.form() == {"apikey": APIKEY, "mobile": "13800138000", "start_time": "2024-05-13 17:48:20",
                           "end_time": "2024-05-13 18:04:20", "page_num": "1", "page_size": "100"}


async def test_find_pages_then_reports_not_found() -> None:
    page = [record(f"msg_{i}", i) for i in range(100)]
    fake = Fake([page, [record("msg_7f3k", 777, report_status="SUCCESS")]])
    result = await provider(fake).find(request())
    assert result.value is not None and result.value.state is DeliveryState.DELIVERED
    assert [f["page_num"] for f in (fake.form(0), fake.form(1))] == ["1", "2"]

    fake = Fake([[record(None)]])
    result = await provider(fake).find(request(phone="+447700900123"))
    assert result.ok and result.value is not None and not result.value.found
    assert fake.form()["type"] == "global" and fake.form()["mobile"] == "+447700900123"
    assert not YunpianProvider.lookup_is_authoritative


async def test_find_refusals() -> None:
    result = await provider(Fake([error(-1)])).find(request())
    assert not result.ok and result.code is StandardCode.AUTH_FAILED
    with pytest.raises(ProviderUnavailable):
        await provider(Fake([(200, {"unexpected": True})])).find(request())


# ------------------------------------------------------------------ against the simulator
@dataclass
class Env:
    sandbox: Sandbox
    http: httpx.AsyncClient
    config: dict[str, Any]
    pushes: list[httpx.Request]

    def provider(self, **extra: Any) -> SmsProvider:
        spec = registry.sms_spec("yunpian")
        assert spec is not None
        return spec.build(self.config | extra, self.http)

    def request(self, message_id: str = "msg_1", *, template: str = "verification_code",
                params: tuple[tuple[str, str], ...] = (("code", "493021"), ("minutes", "5")),
                phone: str = "+8613800138000", text: str = "") -> SmsRequest:
        return SmsRequest(message_id=message_id, phone=phone, sign_name=self.config["sign_name"],
                          template_id=self.config["templates"][template], params=params, text=text,
                          sent_at=dt.datetime.fromtimestamp(self.sandbox.clock.now(), dt.UTC))

    async def inbox(self, phone: str = "+8613800138000") -> list[dict[str, Any]]:
        answer = await self.http.get("/yunpian/_sandbox/messages", params={"phone": phone})
        return list(answer.json()["messages"])

    async def fault(self, spec: dict[str, Any]) -> None:
        assert (await self.http.post("/yunpian/_sandbox/faults", json=spec)).status_code == 200

    async def settle(self) -> None:
        await asyncio.wait_for(self.sandbox.wait_idle(), 10)


@pytest.fixture
async def env(tmp_path: Path) -> AsyncIterator[Env]:
    pushes: list[httpx.Request] = []

    def receiver(req: httpx.Request) -> httpx.Response:
        pushes.append(req)
        return httpx.Response(200, content=b"SUCCESS")

    notify = httpx.AsyncClient(transport=httpx.MockTransport(receiver))
    async with sandboxed(tmp_path, registry.sms_spec("yunpian"), notify_client=notify) as (sandbox, http, config):
        yield Env(sandbox, http, config, pushes)


async def test_send_reaches_the_phone_and_find_sees_it(env: Env) -> None:
    yunpian = env.provider()
    result = await yunpian.send(env.request())
    assert result.ok and result.value is not None
    assert result.value.provider_message_id.isdigit() and int(result.value.provider_message_id) > 2**31
    assert (result.value.segments, result.value.fee) == (1, "0.05")
    [message] = await env.inbox()
    assert message["text"] == "【小程序沙箱】您的验证码为493021，5分钟内有效，请勿泄露于他人。"
    assert (message["id"], message["out_id"]) == (result.value.provider_message_id, "msg_1")

    await env.settle()
    found = await yunpian.find(env.request())
    assert found.ok and found.value is not None
    assert (found.value.found, found.value.provider_message_id, found.value.state) == (
        True, result.value.provider_message_id, DeliveryState.DELIVERED)
    missing = await yunpian.find(env.request("msg_never_sent"))
    assert missing.ok and missing.value is not None and not missing.value.found


async def test_separators_and_spaces_in_values_survive_the_double_encoding(env: Env) -> None:
    promo = "满100减20 & 包邮=好+快"
    result = await env.provider().send(env.request(template="marketing_promo", params=(("promo", promo),)))
    assert result.ok
    assert (await env.inbox())[0]["text"] == f"【小程序沙箱】{promo}，回TD退订"


async def test_text_mode_and_international_numbers(env: Env) -> None:
    text = "【小程序沙箱】您的订单A1已支付成功，金额25.00元，感谢您的惠顾。"
    result = await env.provider(send_method="single_send").send(env.request(text=text))
    assert result.ok and (await env.inbox())[0]["params"] == {"order": "A1", "amount": "25.00"}
    wrong_sign = await env.provider(send_method="single_send").send(env.request(text="【别家】" + text[7:]))
    assert (wrong_sign.code, wrong_sign.provider_code) == (StandardCode.TEMPLATE_REJECTED, "15")
    no_template = await env.provider(send_method="single_send").send(env.request(text="【小程序沙箱】你好"))
    assert (no_template.code, no_template.provider_code) == (StandardCode.TEMPLATE_REJECTED, "5")

    abroad = env.request("msg_uk", phone="+447700900123")
    assert (await env.provider().send(abroad)).ok
    found = await env.provider().find(abroad)
    assert found.value is not None and found.value.found


async def test_declines_from_the_simulator(env: Env) -> None:
    yunpian = env.provider()
    unknown = await yunpian.send(dataclasses.replace(env.request(), template_id="9999999"))
    assert (unknown.code, unknown.provider_code) == (StandardCode.TEMPLATE_REJECTED, "5")
    missing_param = await yunpian.send(env.request(params=(("code", "1"),)))
    assert (missing_param.code, missing_param.provider_code) == (StandardCode.TEMPLATE_REJECTED, "5")
    empty_value = await yunpian.send(env.request(params=(("code", ""), ("minutes", "5"))))
    assert (empty_value.code, empty_value.provider_code) == (StandardCode.TEMPLATE_REJECTED, "2")

    assert (await yunpian.send(env.request())).ok
    again = await yunpian.send(env.request("msg_2"))
    assert (again.code, again.provider_code) == (StandardCode.RATE_LIMITED, "8")

    bad_key = await env.provider(apikey="f" * 32).send(env.request("msg_3"))
    assert (bad_key.code, bad_key.provider_code) == (StandardCode.AUTH_FAILED, "-1")
    assert len(await env.inbox()) == 1


@pytest.mark.parametrize("kind", ["timeout", "http_500", "http_429", "bad_signature"])
async def test_failing_calls_are_unknown_outcomes_and_send_nothing(env: Env, kind: str) -> None:
    await env.fault({"next_call": kind, "seconds": 0})
    with pytest.raises(OutcomeUnknown):
        await env.provider().send(env.request())
    assert await env.inbox() == []


async def test_charged_then_timeout_is_settled_by_find(env: Env) -> None:
    await env.fault({"next_call": "charged_then_timeout", "path": "/v2/sms/tpl_single_send", "seconds": 0})
    with pytest.raises(OutcomeUnknown):
        await env.provider().send(env.request())
    [message] = await env.inbox()
    found = await env.provider().find(env.request())
    assert found.value is not None and found.value.found
    assert found.value.provider_message_id == message["id"]


async def test_receipts_and_replies_from_the_simulator_parse(env: Env) -> None:
    assert (await env.http.post("/yunpian/_sandbox/callbacks", json={
        "receipt_url": "https://gw.example/receipts", "reply_url": "https://gw.example/replies"})).status_code == 200
    await env.http.post("/yunpian/_sandbox/phones", json={"phone": "+8613900139000", "state": "unreachable"})
    yunpian = env.provider(reply_sign_check=True)
    ok = await yunpian.send(env.request("msg_ok"))
    failed = await yunpian.send(env.request("msg_bad", phone="+8613900139000"))
    await env.settle()
    receipts = {r.message_id: r for push in env.pushes for r in yunpian.parse_receipts(dict(push.headers),
                                                                                         push.content)}
    assert ok.value is not None and failed.value is not None
    assert (receipts["msg_ok"].provider_message_id, receipts["msg_ok"].state, receipts["msg_ok"].phone) == (
        ok.value.provider_message_id, DeliveryState.DELIVERED, "+8613800138000")
    assert (receipts["msg_bad"].state, receipts["msg_bad"].error_code) == (DeliveryState.FAILED, "DB:0103")
    assert yunpian.receipt_ack().body == b"SUCCESS"
    assert all(r.state == "delivered" and len(r.attempts) == 1 for r in env.sandbox.deliverers["yunpian"].log)

    env.pushes.clear()
    assert (await env.http.post("/yunpian/_sandbox/reply", json={"phone": "+8613800138000", "text": "TD"})
            ).status_code == 200
    await env.settle()
    [reply] = yunpian.parse_replies(dict(env.pushes[0].headers), env.pushes[0].content)
    assert (reply.phone, reply.text) == ("+8613800138000", "TD")


async def test_configured_callback_url_wins_over_the_console_url(env: Env) -> None:
    await env.http.post("/yunpian/_sandbox/callbacks", json={"receipt_url": "https://gw.example/console"})
    await env.provider(callback_url="https://gw.example/per-message").send(env.request())
    await env.settle()
    assert [str(p.url) for p in env.pushes] == ["https://gw.example/per-message"]

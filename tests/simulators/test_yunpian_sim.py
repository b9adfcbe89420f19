"""The Yunpian simulator on the wire: credentials, every refusal with its exact body, per-number limits, the
sandbox phone, batch sends, get_record and pull_status, status/reply pushes with their acknowledgement rule,
per-message callback URLs, faults, and the official Python SDK's request shape."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode

import httpx
import pytest
import requests

from minigate.providers.yunpian.provider import reply_sign
from minigate.simulators import Sandbox
from minigate.simulators._sms import beijing_time
from minigate.simulators.yunpian import RETRY_SCHEDULE, WINDOWS, YunpianSimulator, acknowledged

PHONE = "13800138000"
CODE_TEXT = "您的验证码为{code}，5分钟内有效，请勿泄露于他人。"


@dataclass
class Receiver:
    """The gateway's push URLs: records every push, answers ``bodies`` in turn, then ``SUCCESS``."""

    bodies: list[bytes] = field(default_factory=list)
    pushes: list[httpx.Request] = field(default_factory=list)

    def __call__(self, req: httpx.Request) -> httpx.Response:
        self.pushes.append(req)
        return httpx.Response(200, content=self.bodies.pop(0) if self.bodies else b"SUCCESS")

    def payloads(self, name: str = "sms_status") -> list[Any]:
        return [json.loads(dict(parse_qsl(p.content.decode()))[name]) for p in self.pushes]


@dataclass
class Account:
    sandbox: Sandbox
    http: httpx.AsyncClient
    receiver: Receiver
    creds: dict[str, Any]

    @property
    def sim(self) -> YunpianSimulator:
        return self.sandbox.simulator("yunpian")  # type: ignore[no-any-return]

    @property
    def tpl(self) -> str:
        return str(self.creds["templates"]["verification_code"])

    async def call(self, method: str, **fields: str) -> httpx.Response:
        return await self.http.post(f"/yunpian/v2/sms/{method}.json", data={"apikey": self.creds["apikey"]} | fields)

    async def tpl_send(self, mobile: str = PHONE, code: str = "493021", **extra: str) -> httpx.Response:
        return await self.call("tpl_single_send", mobile=mobile, tpl_id=self.tpl,
                               tpl_value=urlencode({"#code#": code, "#minutes#": "5"}), **extra)

    async def inbox(self, phone: str = PHONE) -> list[dict[str, Any]]:
        return list((await self.http.get("/yunpian/_sandbox/messages", params={"phone": phone})).json()["messages"])

    async def settle(self) -> None:
        await asyncio.wait_for(self.sandbox.wait_idle(), 10)


@pytest.fixture
async def acct(tmp_path: Path) -> AsyncIterator[Account]:
    receiver = Receiver()
    sandbox = Sandbox(tmp_path, time_scale=0.0)
    sandbox.notify_client = httpx.AsyncClient(transport=httpx.MockTransport(receiver))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=sandbox.app), base_url="http://sandbox") as http:
        yield Account(sandbox, http, receiver, sandbox.credentials("yunpian"))
    await sandbox.aclose()


def assert_error(answer: httpx.Response, code: int, *, detail_has: str = "") -> None:
    assert answer.status_code == 400
    body = answer.json()
    assert list(body) == ["http_status_code", "code", "msg", "detail"]
    assert (body["http_status_code"], body["code"]) == (400, code)
    assert body["msg"] and detail_has in body["detail"]


# ------------------------------------------------------------------ credentials
def test_credentials_are_persisted_and_shaped(tmp_path: Path) -> None:
    creds = Sandbox(tmp_path).credentials("yunpian")
    assert set(creds) == {"apikey", "sign_name", "templates"}
    assert len(creds["apikey"]) == 32 and int(creds["apikey"], 16) >= 0
    assert all(tpl_id.isdigit() for tpl_id in creds["templates"].values())
    assert "verification_code" in creds["templates"]
    assert Sandbox(tmp_path).credentials("yunpian") == creds
    assert RETRY_SCHEDULE == (300.0, 300.0, 300.0)


# ------------------------------------------------------------------ success
async def test_tpl_single_send_succeeds_and_reaches_the_phone(acct: Account) -> None:
    answer = await acct.tpl_send(uid="msg_1")
    assert answer.status_code == 200
    body = answer.json()
    assert list(body) == ["code", "msg", "count", "fee", "unit", "mobile", "sid"]
    assert {k: body[k] for k in ("code", "msg", "count", "fee", "unit", "mobile")} == {
        "code": 0, "msg": "发送成功", "count": 1, "fee": 0.05, "unit": "RMB", "mobile": PHONE}
    assert isinstance(body["sid"], int) and body["sid"] > 2**31
    [message] = await acct.inbox()
    assert message["text"] == "【小程序沙箱】" + CODE_TEXT.format(code="493021")
    assert (message["id"], message["out_id"], message["template"]) == (str(body["sid"]), "msg_1",
                                                                      "verification_code")
    merged = await acct.http.get("/_sandbox/messages", params={"phone": "+86" + PHONE})
    assert [m["id"] for m in merged.json()["messages"]] == [str(body["sid"])]


async def test_single_send_matches_the_text_to_a_template(acct: Account) -> None:
    text = "【小程序沙箱】您的订单A1已发货，顺丰速运运单号SF123。"
    answer = await acct.call("single_send", mobile=PHONE, text=text)
    assert answer.status_code == 200 and answer.json()["code"] == 0
    [message] = await acct.inbox()
    assert (message["text"], message["params"]) == (text, {"order": "A1", "carrier": "顺丰速运", "tracking": "SF123"})


async def test_international_number_with_plus(acct: Account) -> None:
    answer = await acct.tpl_send(mobile="+447700900123")
    assert answer.json()["mobile"] == "+447700900123"
    assert len(await acct.inbox("+447700900123")) == 1


async def test_official_python_sdk_request_is_accepted(acct: Account) -> None:
    """yunpian-python-sdk: ``requests.post(uri, param)`` with ``Api-Lang: python``, apikey appended last; its own
    tests pass ``tpl_value`` without the inner encoding (``'#company#=云片网'``), which Yunpian accepts too."""
    for tpl_value in ("#code#=111111&#minutes#=5", urlencode({"#code#": "222222", "#minutes#": "5"})):
        param = {"mobile": PHONE, "tpl_id": acct.tpl, "tpl_value": tpl_value, "apikey": acct.creds["apikey"]}
        prepared = requests.Request("POST", "http://sandbox/yunpian/v2/sms/tpl_single_send.json", data=param,
                                    headers={"Api-Lang": "python", "Content-Type":
                                             "application/x-www-form-urlencoded;charset=utf-8"}).prepare()
        assert isinstance(prepared.body, str)
        answer = await acct.http.post(prepared.url or "", content=prepared.body.encode(),
                                      headers=dict(prepared.headers))
        assert answer.status_code == 200, answer.text
    assert [m["params"]["code"] for m in await acct.inbox()] == ["222222", "111111"]


# ------------------------------------------------------------------ refusals
@pytest.mark.parametrize(("method", "fields", "missing"), [
    ("tpl_single_send", {"mobile": PHONE, "tpl_value": ""}, "tpl_id"),
    ("tpl_single_send", {"mobile": PHONE, "tpl_id": "5000001"}, "tpl_value"),
    ("single_send", {"mobile": PHONE}, "text"),
    ("single_send", {"text": "x", "mobile": ""}, "mobile"),
    ("batch_send", {"text": "x"}, "mobile"),
    ("get_record", {"start_time": "2024-01-01 00:00:00"}, "end_time"),
])
async def test_missing_parameters_are_code_1(acct: Account, method: str, fields: dict[str, str],
                                             missing: str) -> None:
    assert_error(await acct.call(method, **fields), 1, detail_has=missing)


async def test_missing_or_unknown_apikey(acct: Account) -> None:
    answer = await acct.http.post("/yunpian/v2/sms/tpl_single_send.json",
                                  data={"mobile": PHONE, "tpl_id": acct.tpl, "tpl_value": "#code#=1&#minutes#=5"})
    assert_error(answer, 1, detail_has="apikey")
    answer = await acct.http.post("/yunpian/v2/sms/tpl_single_send.json", data={
        "apikey": "0" * 32, "mobile": PHONE, "tpl_id": acct.tpl, "tpl_value": "#code#=1&#minutes#=5"})
    assert_error(answer, -1)
    assert answer.json()["msg"] == "非法的apikey"
    assert_error(await acct.http.post("/yunpian/v2/sms/get_record.json", data={
        "apikey": acct.creds["apikey"][:-1], "start_time": "2024-01-01 00:00:00",
        "end_time": "2024-01-02 00:00:00"}), -1)
    assert await acct.inbox() == []


@pytest.mark.parametrize("mobile", ["1380013800", "23800138000", "+86abc", "138 0013 8000x", "13800138000,13900139000"])
async def test_bad_numbers_are_code_2(acct: Account, mobile: str) -> None:
    assert_error(await acct.tpl_send(mobile=mobile), 2, detail_has="mobile")


async def test_sign_and_template_refusals(acct: Account) -> None:
    body = CODE_TEXT.format(code="1")
    assert_error(await acct.call("single_send", mobile=PHONE, text=body), 16)
    assert_error(await acct.call("single_send", mobile=PHONE, text="【1】" + body), 16)
    assert_error(await acct.call("single_send", mobile=PHONE, text="【别家商城】" + body), 15)
    assert_error(await acct.call("single_send", mobile=PHONE, text="【小程序沙箱】您好"), 5)
    assert_error(await acct.call("tpl_single_send", mobile=PHONE, tpl_id="abc", tpl_value="#code#=1"), 2, detail_has="tpl_id")
    assert_error(await acct.call("tpl_single_send", mobile=PHONE, tpl_id="9999999", tpl_value="#code#=1"), 5)
    for tpl_value, code in [("#code#=1", 5), ("#code#=1&#minutes#=5&#extra#=x", 5), ("#code#=&#minutes#=5", 2),
                            ("code=1&minutes=5", 2), ("#code#=1&#code#=2&#minutes#=5", 2), ("", 5)]:
        assert_error(await acct.call("tpl_single_send", mobile=PHONE, tpl_id=acct.tpl, tpl_value=tpl_value), code)
    assert_error(await acct.tpl_send(callback_url="ftp://x"), 2, detail_has="callback_url")
    assert_error(await acct.tpl_send(callback_url="http://203.0.113.9/r"), 2, detail_has="callback_url")
    assert await acct.inbox() == []


async def test_malformed_forms_are_code_2(acct: Account) -> None:
    url = "/yunpian/v2/sms/tpl_single_send.json"
    assert_error(await acct.http.post(url, content=b"apikey=%ff%fe"), 2)
    assert_error(await acct.http.post(url, content=f"apikey={acct.creds['apikey']}&apikey=x".encode()), 2)


# ------------------------------------------------------------------ limits
async def test_same_content_limits_8_and_9(acct: Account) -> None:
    assert (await acct.tpl_send()).status_code == 200
    assert_error(await acct.tpl_send(), 8)
    assert (await acct.tpl_send(code="000001")).status_code == 200    # other text: fine
    for _ in range(2):
        acct.sim.clock.advance(31)
        assert (await acct.tpl_send()).status_code == 200
    acct.sim.clock.advance(31)
    assert_error(await acct.tpl_send(), 9)                              # 4th identical text within 5 minutes
    acct.sim.clock.advance(300)
    assert (await acct.tpl_send()).status_code == 200
    assert [w.code for w in WINDOWS] == ["8", "9", "22", "17"]


async def test_hour_and_day_limits_22_and_17(acct: Account) -> None:
    for i in range(5):
        assert (await acct.tpl_send(code=f"00000{i}")).status_code == 200
    assert_error(await acct.tpl_send(code="000009"), 22)
    assert (await acct.tpl_send(mobile="13900139000")).status_code == 200   # per number
    acct.sim.clock.advance(3601)
    for i in range(5):
        assert (await acct.tpl_send(code=f"10000{i}")).status_code == 200
    acct.sim.clock.advance(3601)
    assert_error(await acct.tpl_send(code="200000"), 17)               # 11th in 24 hours, 1st this hour
    assert len(await acct.inbox()) == 10


# ------------------------------------------------------------------ batch
async def test_batch_sends_report_per_number(acct: Account) -> None:
    answer = await acct.call("tpl_batch_send", mobile=f"{PHONE},12345,13900139000", tpl_id=acct.tpl,
                             tpl_value="#code#=1&#minutes#=5")
    assert answer.status_code == 200
    body = answer.json()
    assert (body["total_count"], body["total_fee"], body["unit"]) == (2, "0.1000", "RMB")
    assert [(item["code"], item["mobile"]) for item in body["data"]] == [(0, PHONE), (2, "12345"),
                                                                        (0, "13900139000")]
    text = "【小程序沙箱】您的订单A2尚未支付，将在15分钟后自动关闭。"
    answer = await acct.call("batch_send", mobile=f"{PHONE},{PHONE}", text=text)
    assert [item["code"] for item in answer.json()["data"]] == [0, 8]
    assert_error(await acct.call("batch_send", mobile=",".join([PHONE] * 1001), text=text), 2)
    assert_error(await acct.call("batch_send", mobile=PHONE, text="【小程序沙箱】x"), 5)


# ------------------------------------------------------------------ queries
async def test_get_record_filters_and_pages(acct: Account) -> None:
    sids = [(await acct.tpl_send(code=f"00000{i}", uid=f"msg_{i}")).json()["sid"] for i in range(3)]
    await acct.tpl_send(mobile="13900139000")
    await acct.tpl_send(mobile="+447700900123")
    await acct.settle()
    now = acct.sim.clock.now()
    window = {"start_time": beijing_time(now - 60), "end_time": beijing_time(now + 60)}
    answer = await acct.call("get_record", mobile=PHONE, **window)
    records = answer.json()
    assert answer.status_code == 200 and [r["sid"] for r in records] == sids[::-1]
    assert set(records[0]) == {"sid", "mobile", "send_time", "text", "send_status", "report_status", "fee",
                               "user_receive_time", "error_msg", "uid"}
    assert (records[0]["uid"], records[0]["report_status"], records[0]["mobile"]) == ("msg_2", "SUCCESS", PHONE)
    page = (await acct.call("get_record", mobile=PHONE, page_num="2", page_size="2", **window)).json()
    assert [r["sid"] for r in page] == [sids[0]]
    assert len((await acct.call("get_record", **window)).json()) == 4                  # domestic by default
    assert len((await acct.call("get_record", type="global", **window)).json()) == 1
    assert len((await acct.call("get_record", type="all", **window)).json()) == 5
    earlier = {"start_time": beijing_time(now - 7200), "end_time": beijing_time(now - 3600)}
    assert (await acct.call("get_record", **earlier)).json() == []
    assert_error(await acct.call("get_record", start_time="2024/01/01", end_time="x"), 2)
    assert_error(await acct.call("get_record", page_size="101", **window), 2)
    assert_error(await acct.call("get_record", type="cn", **window), 2)


async def test_pull_status_returns_each_report_once(acct: Account) -> None:
    await acct.tpl_send(uid="msg_1")
    await acct.settle()
    first = (await acct.call("pull_status")).json()
    assert [(s["uid"], s["report_status"]) for s in first] == [("msg_1", "SUCCESS")]
    assert (await acct.call("pull_status")).json() == []


# ------------------------------------------------------------------ pushes
async def test_status_is_pushed_as_a_form_and_retried_until_success(acct: Account) -> None:
    await acct.http.post("/yunpian/_sandbox/callbacks", json={"receipt_url": "https://gw.example/receipts"})
    await acct.http.post("/yunpian/_sandbox/phones", json={"phone": "13900139000", "state": "unreachable"})
    acct.receiver.bodies = [b"fail", b"SUCCESS"]
    sid = (await acct.tpl_send(uid="msg_1")).json()["sid"]
    await acct.settle()
    push = acct.receiver.pushes[0]
    assert push.headers["content-type"] == "application/x-www-form-urlencoded;charset=utf-8"
    assert push.content.startswith(b"sms_status=%5B%7B")
    assert acct.receiver.payloads() == [[{
        "error_detail": "接收成功", "sid": sid, "uid": "msg_1",
        "user_receive_time": acct.receiver.payloads()[0][0]["user_receive_time"], "error_msg": "",
        "mobile": PHONE, "report_status": "SUCCESS"}]] * 2
    [record] = acct.sandbox.deliverers["yunpian"].log
    assert (record.state, len(record.attempts)) == ("delivered", 2)

    acct.receiver.pushes.clear()
    acct.receiver.bodies = [b"0"]
    await acct.tpl_send(mobile="13900139000")
    await acct.settle()
    [[failed]] = acct.receiver.payloads()
    assert (failed["report_status"], failed["error_msg"], failed["mobile"]) == ("FAIL", "DB:0103", "13900139000")
    assert len(acct.receiver.pushes) == 1                     # "0" acknowledges too


async def test_unacknowledged_pushes_stop_after_three_retries(acct: Account) -> None:
    await acct.http.post("/yunpian/_sandbox/callbacks", json={"receipt_url": "https://gw.example/receipts"})
    acct.receiver.bodies = [b"OK", b"", b"success", b"FAIL"]
    await acct.tpl_send()
    await acct.settle()
    [record] = acct.sandbox.deliverers["yunpian"].log
    assert (record.state, len(record.attempts)) == ("failed", 4)
    assert acknowledged(200, b"SUCCESS\n") and acknowledged(200, b"0") and not acknowledged(500, b"SUCCESS")


async def test_callback_url_per_message_wins(acct: Account) -> None:
    await acct.http.post("/yunpian/_sandbox/callbacks", json={"receipt_url": "https://gw.example/console"})
    await acct.tpl_send(callback_url="http://localhost:8000/per-message")
    await acct.tpl_send(mobile="13900139000")
    await acct.settle()
    assert sorted(str(p.url) for p in acct.receiver.pushes) == ["http://localhost:8000/per-message",
                                                                "https://gw.example/console"]


async def test_no_push_without_a_url_but_the_phone_has_it(acct: Account) -> None:
    await acct.tpl_send()
    await acct.settle()
    assert acct.receiver.pushes == []
    assert (await acct.inbox())[0]["status"] == "delivered"


async def test_tampered_push_names_an_unknown_sid(acct: Account) -> None:
    await acct.http.post("/yunpian/_sandbox/callbacks", json={"receipt_url": "https://gw.example/receipts"})
    await acct.http.post("/yunpian/_sandbox/faults", json={"notify": "tamper"})
    sid = (await acct.tpl_send()).json()["sid"]
    await acct.settle()
    tampered, genuine = acct.receiver.payloads()
    assert tampered[0]["sid"] != sid and genuine[0]["sid"] == sid


async def test_replies_are_pushed_with_a_valid_sign(acct: Account) -> None:
    assert (await acct.http.post("/yunpian/_sandbox/reply", json={"phone": PHONE, "text": "TD"})).status_code == 409
    await acct.http.post("/yunpian/_sandbox/callbacks", json={"reply_url": "https://gw.example/replies"})
    assert (await acct.http.post("/yunpian/_sandbox/reply", json={"phone": PHONE, "text": "TD"})).status_code == 200
    await acct.http.post("/yunpian/_sandbox/faults", json={"notify": "tamper"})
    await acct.http.post("/yunpian/_sandbox/reply", json={"phone": PHONE, "text": "退订"})
    await acct.settle()
    replies = acct.receiver.payloads("sms_reply")
    assert set(replies[0]) == {"id", "mobile", "text", "reply_time", "extend", "base_extend", "_sign"}
    assert (replies[0]["mobile"], replies[0]["text"]) == (PHONE, "TD")
    checks = [reply["_sign"] == reply_sign(reply, acct.creds["apikey"]) for reply in replies]
    assert checks == [True, False, True]                      # the tampered one, then its genuine retry


# ------------------------------------------------------------------ faults, replay, clock
@pytest.mark.parametrize(("kind", "status"), [("timeout", 504), ("http_500", 500), ("http_429", 429),
                                              ("bad_signature", 500)])
async def test_call_faults_send_nothing(acct: Account, kind: str, status: int) -> None:
    await acct.http.post("/yunpian/_sandbox/faults", json={"next_call": kind, "seconds": 0})
    assert (await acct.tpl_send()).status_code == status
    assert await acct.inbox() == []
    assert (await acct.tpl_send()).status_code == 200          # one call only


async def test_charged_then_timeout_delivers_and_answers_504(acct: Account) -> None:
    await acct.http.post("/yunpian/_sandbox/faults", json={"next_call": "charged_then_timeout", "seconds": 0,
                                                           "path": "/v2/sms/tpl_single_send"})
    assert (await acct.call("single_send", mobile="13900139000",
                            text="【小程序沙箱】" + CODE_TEXT.format(code="1"))).status_code == 200   # other path
    assert (await acct.tpl_send(uid="msg_1")).status_code == 504
    assert [m["out_id"] for m in await acct.inbox()] == ["msg_1"]


async def test_no_replay_protection_and_no_clock_window(acct: Account) -> None:
    """Yunpian requests carry no timestamp or nonce: the same request later is simply a new message."""
    await acct.http.post("/yunpian/_sandbox/faults", json={"clock_skew_seconds": 86400})
    first = await acct.tpl_send(uid="msg_1")
    acct.sim.clock.advance(31)
    second = await acct.tpl_send(uid="msg_1")
    assert first.status_code == second.status_code == 200
    assert first.json()["sid"] != second.json()["sid"]

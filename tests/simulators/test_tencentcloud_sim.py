"""The Tencent Cloud simulator on the wire: TC3 gateway checks in order, SendSms rules and per-number limits,
the two status pulls, the sandbox phone, receipts and replies pushed to registered URLs, faults."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from minigate.providers.tencentcloud import signing
from minigate.simulators import Sandbox
from minigate.simulators._sms import DEFAULT_TEMPLATES
from minigate.simulators.sandbox import REGISTRY
from minigate.simulators.tencentcloud import (
    RETRY_SCHEDULE,
    ApiAction,
    Call,
    TencentCloudSimulator,
    acknowledged,
    segments,
)

PHONE = "+8613800138000"


@dataclass
class Receiver:
    """The merchant's receipt and reply URLs: records bodies, answers ``answers`` in turn, then Tencent's ack."""

    answers: list[tuple[int, bytes]] = field(default_factory=list)
    receipts: list[Any] = field(default_factory=list)
    replies: list[Any] = field(default_factory=list)

    def app(self) -> Starlette:
        async def receive(request: Request) -> Response:
            body = json.loads(await request.body())
            (self.receipts if request.url.path == "/receipts" else self.replies).append(body)
            status, answer = self.answers.pop(0) if self.answers else (200, b'{"result":0,"errmsg":"OK"}')
            return Response(answer, status, media_type="application/json")

        return Starlette(routes=[Route("/receipts", receive, methods=["POST"]),
                                 Route("/replies", receive, methods=["POST"])])


class Merchant:
    """Signs API 3.0 calls with the sandbox key pair (any header set, any tampering)."""

    def __init__(self, sandbox: Sandbox, http: httpx.AsyncClient) -> None:
        self.sandbox, self.http = sandbox, http
        self.creds = sandbox.credentials("tencentcloud")

    @property
    def sim(self) -> TencentCloudSimulator:
        return self.sandbox.simulator("tencentcloud")  # type: ignore[no-any-return]

    def template(self, name: str) -> str:
        return str(self.creds["templates"][name])

    async def raw(self, action: str, payload: dict[str, Any] | None = None, *, secret_id: str | None = None,
                  secret_key: str | None = None, timestamp: int | None = None, service: str = "sms",
                  scope_service: str | None = None, version: str | None = "2021-01-11",
                  region: str | None = "ap-guangzhou", signed: Sequence[str] = ("content-type", "host"),
                  content_type: str = "application/json", method: str = "POST", host: str = "sandbox",
                  extra: dict[str, str] | None = None, body: bytes | None = None,
                  authorization: str | None = None) -> httpx.Response:
        ts = int(self.sim.clock.now()) if timestamp is None else timestamp
        headers = {"Content-Type": content_type, "Host": host, "X-TC-Action": action, "X-TC-Timestamp": str(ts)}
        if version is not None:
            headers["X-TC-Version"] = version
        if region is not None:
            headers["X-TC-Region"] = region
        headers |= extra or {}
        query = ""
        if method == "GET":
            flat: list[tuple[str, str]] = []
            for k, v in (payload or {}).items():
                flat += [(f"{k}.{i}", str(x)) for i, x in enumerate(v)] if isinstance(v, list) else [(k, str(v))]
            query = urlencode(flat)
            content = b""
        else:
            content = json.dumps(payload or {}).encode() if body is None else body
        headers["Authorization"] = authorization or signing.tc3_authorization(
            secret_id=secret_id or self.creds["secret_id"], secret_key=secret_key or self.creds["secret_key"],
            service=scope_service or service, timestamp=ts, headers=headers, payload=content, method=method,
            query=query, signed_headers=signed)
        url = "/tencentcloud/" + (f"?{query}" if query else "")
        return await self.http.request(method, url, content=content if method == "POST" else None, headers=headers)

    async def call(self, action: str, payload: dict[str, Any] | None = None, **kw: Any) -> dict[str, Any]:
        r = await self.raw(action, payload, **kw)
        assert r.status_code == 200 and r.headers["content-type"] == "application/json", r.text
        body = r.json()["Response"]
        assert isinstance(body["RequestId"], str) and len(body["RequestId"]) == 36
        return dict(body)

    async def error(self, action: str, payload: dict[str, Any] | None = None, **kw: Any) -> str:
        return str((await self.call(action, payload, **kw))["Error"]["Code"])

    def sms(self, *numbers: str, template: str = "verification_code", params: Sequence[str] = ("123456", "5"),
            **extra: Any) -> dict[str, Any]:
        return {"PhoneNumberSet": list(numbers or [PHONE]), "SmsSdkAppId": self.creds["sms_sdk_app_id"],
                "SignName": self.creds["sign_name"], "TemplateId": self.template(template),
                "TemplateParamSet": list(params)} | extra

    async def inbox(self, phone: str = PHONE) -> list[dict[str, Any]]:
        r = await self.http.get("/tencentcloud/_sandbox/messages", params={"phone": phone})
        return list(r.json()["messages"])


@pytest.fixture
async def env(tmp_path: Path) -> AsyncIterator[tuple[Merchant, Receiver]]:
    sandbox = Sandbox(tmp_path, time_scale=0.0)
    receiver = Receiver()
    sandbox.notify_client = httpx.AsyncClient(transport=httpx.ASGITransport(app=receiver.app()),
                                              base_url="http://testserver")
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=sandbox.app), base_url="http://sandbox") as http:
        yield Merchant(sandbox, http), receiver
    await sandbox.aclose()


async def idle(m: Merchant) -> None:
    await asyncio.wait_for(m.sandbox.wait_idle(), 10)


# ------------------------------------------------------------------ credentials
async def test_registered_and_credentials_are_the_design_fields(env: Any) -> None:
    m, _ = env
    assert REGISTRY["tencentcloud"] == "minigate.simulators.tencentcloud:TencentCloudSimulator"
    # the DESIGN fields, plus the FaceID rule id the same account uses for identity checks
    assert set(m.creds) == {"secret_id", "secret_key", "sms_sdk_app_id", "sign_name", "templates", "faceid_rule_id"}
    assert m.creds["secret_id"].startswith("AKID") and len(m.creds["secret_key"]) == 32
    assert m.creds["sms_sdk_app_id"].startswith("1400") and len(m.creds["sms_sdk_app_id"]) == 10
    assert set(m.creds["templates"]) == set(DEFAULT_TEMPLATES)
    assert all(t.isdigit() for t in m.creds["templates"].values())
    assert Sandbox(m.sandbox.state_dir).credentials("tencentcloud") == m.creds
    assert RETRY_SCHEDULE == (5.0, 30.0, 120.0)


# ------------------------------------------------------------------ SendSms
async def test_send_puts_the_message_on_the_phone_with_positional_params(env: Any) -> None:
    m, _ = env
    answer = await m.call("SendSms", m.sms(params=["654321", "10"], SessionContext="msg_1"))
    [status] = answer["SendStatusSet"]
    assert (status["Code"], status["Message"], status["PhoneNumber"]) == ("Ok", "send success", PHONE)
    assert (status["Fee"], status["IsoCode"], status["SessionContext"]) == (1, "CN", "msg_1")
    assert status["SerialNo"].split(":")[0].isdigit() and len(status["SerialNo"].split(":")[1]) == 28
    assert set(status) == {"SerialNo", "PhoneNumber", "Fee", "SessionContext", "Code", "Message", "IsoCode"}
    [message] = await m.inbox()
    assert message["text"] == f"【{m.creds['sign_name']}】您的验证码为654321，10分钟内有效，请勿泄露于他人。"
    assert (message["id"], message["out_id"], message["params"]) == (status["SerialNo"], "msg_1",
                                                                     {"code": "654321", "minutes": "10"})


@pytest.mark.parametrize("number", ["13800138000", "8613800138000", "008613800138000", "+86 138-0013-8000"])
async def test_mainland_number_forms(env: Any, number: str) -> None:
    m, _ = env
    [status] = (await m.call("SendSms", m.sms(number)))["SendStatusSet"]
    assert (status["Code"], status["PhoneNumber"]) == ("Ok", PHONE)


async def test_request_level_refusals(env: Any) -> None:
    m, _ = env
    assert await m.error("SendSms", m.sms(SmsSdkAppId="1400000000")) == "UnauthorizedOperation.SmsSdkAppIdVerifyFail"
    assert await m.error("SendSms", m.sms(SignName="别的签名")) == "FailedOperation.SignatureIncorrectOrUnapproved"
    no_sign = {k: v for k, v in m.sms().items() if k != "SignName"}
    assert await m.error("SendSms", no_sign) == "FailedOperation.SignatureIncorrectOrUnapproved"
    assert await m.error("SendSms", m.sms(TemplateId="999")) == "FailedOperation.TemplateIncorrectOrUnapproved"
    assert await m.error("SendSms", m.sms(params=["123456"])) == "FailedOperation.TemplateParamSetNotMatchApprovedTemplate"
    assert await m.error("SendSms", m.sms(params=["1", "2", "3"])) == "FailedOperation.TemplateParamSetNotMatchApprovedTemplate"
    assert await m.error("SendSms", m.sms(params=["12ab56", "5"])) == "InvalidParameterValue.TemplateParameterFormatError"
    assert await m.error("SendSms", m.sms(params=["1234567", "5"])) == "InvalidParameterValue.TemplateParameterFormatError"
    url = m.sms(template="marketing_promo", params=["点击 https://x.example 领券"])
    assert await m.error("SendSms", url) == "InvalidParameterValue.ProhibitedUseUrlInTemplateParameter"
    assert await m.error("SendSms", m.sms(params=[123456, "5"])) == "InvalidParameter"
    assert await m.error("SendSms", m.sms(PhoneNumberSet=[])) == "MissingParameter.EmptyPhoneNumberSet"
    over = m.sms(PhoneNumberSet=[f"+86138{i:08d}" for i in range(201)])
    assert await m.error("SendSms", over) == "LimitExceeded.PhoneNumberCountLimit"
    mixed = m.sms(PHONE, "+14155550100")
    assert await m.error("SendSms", mixed) == "UnsupportedOperation.ContainDomesticAndInternationalPhoneNumber"
    assert await m.error("SendSms", m.sms("+14155550100")) == "UnsupportedOperation.ChineseMainlandTemplateToGlobalPhone"
    for name in ("PhoneNumberSet", "SmsSdkAppId", "TemplateId"):
        answer = await m.call("SendSms", {k: v for k, v in m.sms().items() if k != name})
        assert answer["Error"] == {"Code": "MissingParameter",
                                   "Message": f"The request is missing a required parameter `{name}`."}
    assert await m.error("SendSms", m.sms(Unexpected="x")) == "UnknownParameter"
    assert await m.error("SendSms", m.sms(SessionContext="x" * 513)) == "InvalidParameter"
    assert await m.inbox() == []


async def test_per_number_entries_and_limits(env: Any) -> None:
    m, _ = env
    answer = await m.call("SendSms", m.sms(PHONE, "12345", "+8613900139000", PHONE))
    codes = [(s["PhoneNumber"], s["Code"], s["Fee"], s["SerialNo"] == "") for s in answer["SendStatusSet"]]
    assert codes == [(PHONE, "Ok", 1, False), ("12345", "InvalidParameterValue.IncorrectPhoneNumber", 0, True),
                     ("+8613900139000", "Ok", 1, False),
                     (PHONE, "LimitExceeded.PhoneNumberThirtySecondLimit", 0, True)]
    clock = m.sim.clock
    for _ in range(4):                               # 5 in the hour: the 30 s window is the only one until then
        clock.advance(31)
        assert (await m.call("SendSms", m.sms()))["SendStatusSet"][0]["Code"] == "Ok"
    clock.advance(31)
    [status] = (await m.call("SendSms", m.sms()))["SendStatusSet"]
    assert status["Code"] == "LimitExceeded.PhoneNumberOneHourLimit" and status["Message"]
    for _ in range(5):
        clock.advance(3601)
        assert (await m.call("SendSms", m.sms()))["SendStatusSet"][0]["Code"] == "Ok"
    clock.advance(3601)
    [status] = (await m.call("SendSms", m.sms()))["SendStatusSet"]
    assert status["Code"] == "LimitExceeded.PhoneNumberDailyLimit"
    assert len(await m.inbox()) == 10


async def test_long_text_is_billed_in_parts(env: Any) -> None:
    m, _ = env
    promo = "春季大促" * 32
    [status] = (await m.call("SendSms", m.sms(template="marketing_promo", params=[promo])))["SendStatusSet"]
    text = (await m.inbox())[0]["text"]
    assert len(text) > 134 and status["Fee"] == segments(text) == 3
    assert segments("x" * 70) == 1 and segments("x" * 71) == 2


# ------------------------------------------------------------------ the gateway
async def test_gateway_checks_in_order(env: Any) -> None:
    m, _ = env
    send = m.sms()
    assert await m.error("SendSms", send, secret_id="AKIDnotthere") == "AuthFailure.SecretIdNotFound"
    assert await m.error("SendSms", send, secret_key="wrong") == "AuthFailure.SignatureFailure"
    now = int(m.sim.clock.now())
    assert await m.error("SendSms", send, timestamp=now - 301) == "AuthFailure.SignatureExpire"
    assert await m.error("SendSms", send, timestamp=now + 301) == "AuthFailure.SignatureExpire"
    # the window is checked before the signature: an unknown key id comes first, a bad key after the window
    assert await m.error("SendSms", send, timestamp=now - 301, secret_key="wrong") == "AuthFailure.SignatureExpire"
    assert await m.error("SendSms", send, timestamp=now - 301, secret_id="AKIDx") == "AuthFailure.SecretIdNotFound"
    assert (await m.call("SendSms", send, timestamp=now - 290))["SendStatusSet"][0]["Code"] == "Ok"
    assert await m.error("SendSms", send, scope_service="cvm") == "AuthFailure.SignatureFailure"
    assert await m.error("SendSms", send, signed=("content-type",)) == "AuthFailure.SignatureFailure"
    assert await m.error("SendSms", send, extra={"X-TC-Token": "t"}) == "AuthFailure.TokenFailure"
    assert await m.error("SendSms", send, authorization="Bearer x") == "AuthFailure.InvalidAuthorization"
    assert await m.error("SendSms", send, authorization=" ") == "MissingParameter"
    assert await m.error("SendSms", send, body=b"{not json") == "InvalidParameter"
    assert await m.error("SendSms", send, content_type="text/plain") == "InvalidParameter"
    assert await m.error("NoSuchThing", send) == "InvalidAction"
    assert await m.error("", send) == "MissingParameter"
    assert await m.error("SendSms", send, version="2019-07-11") == "NoSuchVersion"
    assert await m.error("SendSms", send, version=None) == "MissingParameter"
    assert await m.error("SendSms", send, region=None) == "MissingParameter"
    assert await m.error("SendSms", send, region="ap-shanghai") == "UnsupportedRegion"
    # the real host names the service; a mismatching scope is a signature failure
    assert await m.error("SendSms", send, host="cvm.tencentcloudapi.com") == "InvalidAction"
    assert (await m.call("SendSms", send, host="sms.tencentcloudapi.com", timestamp=now - 200))["SendStatusSet"]


async def test_signature_covers_the_body_and_any_signed_headers(env: Any) -> None:
    m, _ = env
    payload = m.sms()
    good = signing.tc3_authorization(secret_id=m.creds["secret_id"], secret_key=m.creds["secret_key"], service="sms",
                                     timestamp=int(m.sim.clock.now()),
                                     headers={"content-type": "application/json", "host": "sandbox"},
                                     payload=json.dumps(payload).encode())
    tampered = json.dumps(payload | {"TemplateParamSet": ["000000", "5"]}).encode()
    assert await m.error("SendSms", payload, body=tampered, authorization=good) == "AuthFailure.SignatureFailure"
    # x-tc-action signed (newer docs): the action header is part of the signature
    signed = ("content-type", "host", "x-tc-action", "x-tc-region")
    assert (await m.call("SendSms", payload, signed=signed))["SendStatusSet"][0]["Code"] == "Ok"
    absent = signing.tc3_authorization(   # signs a header the request does not carry
        secret_id=m.creds["secret_id"], secret_key=m.creds["secret_key"], service="sms",
        timestamp=int(m.sim.clock.now()), headers={"content-type": "application/json", "host": "sandbox",
                                                   "x-tc-nothing": "1"},
        payload=json.dumps(payload).encode(), signed_headers=("content-type", "host", "x-tc-nothing"))
    assert await m.error("SendSms", payload, authorization=absent) == "AuthFailure.SignatureFailure"
    charset = await m.call("SendSms", m.sms("+8613900139000"), content_type="application/json; charset=utf-8")
    assert charset["SendStatusSet"][0]["Code"] == "Ok"
    unsigned = await m.call("SendSms", m.sms("+8613700137000"), extra={"X-TC-Content-SHA256": "UNSIGNED-PAYLOAD"})
    assert unsigned["SendStatusSet"][0]["Code"] == "Ok"


async def test_get_requests_are_signed_over_the_query(env: Any) -> None:
    m, _ = env
    answer = await m.call("SendSms", m.sms(), method="GET", content_type="application/x-www-form-urlencoded")
    assert answer["SendStatusSet"][0]["Code"] == "Ok"
    pulled = await m.call("PullSmsSendStatus", {"Limit": 10, "SmsSdkAppId": m.creds["sms_sdk_app_id"]},
                          method="GET", content_type="application/x-www-form-urlencoded")
    assert pulled["PullSmsSendStatusSet"] == []


async def test_the_action_table_takes_other_services(env: Any) -> None:
    m, _ = env

    async def hello(call: Call) -> dict[str, Any]:
        return {"Echo": call.params.get("Name"), "Service": call.service}

    m.sim.gateway.register(ApiAction("faceid", "Hello", "2018-03-01", hello))
    answer = await m.call("Hello", {"Name": "x"}, service="faceid", version="2018-03-01", region=None)
    assert (answer["Echo"], answer["Service"]) == ("x", "faceid")
    assert await m.error("Hello", {}, service="sms", version="2018-03-01") == "AuthFailure.SignatureFailure"
    assert await m.error("SendSms", m.sms(), service="faceid") == "AuthFailure.SignatureFailure"


# ------------------------------------------------------------------ pulls, receipts, replies
async def test_receipts_are_pushed_and_pulled(env: Any) -> None:
    m, receiver = env
    r = await m.http.post("/tencentcloud/_sandbox/callbacks", json={"receipt_url": "http://testserver/receipts"})
    assert r.json()["receipt_url"] == "http://testserver/receipts"
    await m.http.post("/tencentcloud/_sandbox/phones", json={"phone": "+8613900139000", "state": "unreachable"})
    sent = await m.call("SendSms", m.sms(PHONE, "+8613900139000", SessionContext="msg_9"))
    serials = [s["SerialNo"] for s in sent["SendStatusSet"]]
    await idle(m)
    pushed = sorted((item for batch in receiver.receipts for item in batch), key=lambda i: i["mobile"])
    assert [(i["sid"], i["mobile"], i["nationcode"], i["report_status"], i["errmsg"]) for i in pushed] == [
        (serials[0], "13800138000", "86", "SUCCESS", "DELIVRD"), (serials[1], "13900139000", "86", "FAIL", "UNDELIV")]
    assert all(len(i["user_receive_time"]) == 19 and i["description"] for i in pushed)

    app = m.creds["sms_sdk_app_id"]
    first = (await m.call("PullSmsSendStatus", {"Limit": 1, "SmsSdkAppId": app}))["PullSmsSendStatusSet"]
    rest = (await m.call("PullSmsSendStatus", {"Limit": 100, "SmsSdkAppId": app}))["PullSmsSendStatusSet"]
    assert [row["SerialNo"] for row in first + rest] == serials
    assert (await m.call("PullSmsSendStatus", {"Limit": 100, "SmsSdkAppId": app}))["PullSmsSendStatusSet"] == []
    assert first[0] | {"UserReceiveTime": 0} == {
        "UserReceiveTime": 0, "CountryCode": "86", "SubscriberNumber": "13800138000", "PhoneNumber": PHONE,
        "SerialNo": serials[0], "ReportStatus": "SUCCESS", "Description": "用户短信送达成功",
        "SessionContext": "msg_9"}
    assert await m.error("PullSmsSendStatus", {"Limit": 101, "SmsSdkAppId": app}) == \
        "InvalidParameterValue.LimitVerifyFail"
    assert await m.error("PullSmsSendStatus", {"Limit": 1, "SmsSdkAppId": "1400000001"}) == \
        "UnauthorizedOperation.SmsSdkAppIdVerifyFail"

    now = int(m.sim.clock.now())
    query = {"BeginTime": now - 60, "Offset": 0, "Limit": 100, "PhoneNumber": "+8613900139000", "SmsSdkAppId": app}
    [row] = (await m.call("PullSmsSendStatusByPhoneNumber", query))["PullSmsSendStatusSet"]   # not consumed
    assert (row["SerialNo"], row["ReportStatus"], row["SessionContext"]) == (serials[1], "FAIL", "msg_9")
    assert (await m.call("PullSmsSendStatusByPhoneNumber", query | {"BeginTime": now + 5}))["PullSmsSendStatusSet"] == []
    assert await m.error("PullSmsSendStatusByPhoneNumber", query | {"Offset": 1}) == \
        "InvalidParameterValue.OffsetVerifyFail"
    assert await m.error("PullSmsSendStatusByPhoneNumber", query | {"BeginTime": now - 8 * 86400}) == \
        "InvalidParameterValue.BeginTimeVerifyFail"
    assert await m.error("PullSmsSendStatusByPhoneNumber", query | {"EndTime": now - 120}) == \
        "InvalidParameterValue.EndTimeVerifyFail"
    assert await m.error("PullSmsSendStatusByPhoneNumber", query | {"PhoneNumber": "123"}) == \
        "InvalidParameterValue.IncorrectPhoneNumber"
    assert await m.error("PullSmsSendStatusByPhoneNumber", {k: v for k, v in query.items() if k != "BeginTime"}) == \
        "MissingParameter"


async def test_receipts_are_retried_until_result_0(env: Any) -> None:
    m, receiver = env
    m.sandbox.time_scale = 0.001
    receiver.answers = [(200, b'{"result":1,"errmsg":"busy"}'), (500, b"oops")]
    await m.http.post("/tencentcloud/_sandbox/callbacks", json={"receipt_url": "http://testserver/receipts"})
    await m.call("SendSms", m.sms())
    await idle(m)
    assert len(receiver.receipts) == 3 and len({b[0]["sid"] for b in receiver.receipts}) == 1
    assert acknowledged(200, b'{"result":0,"errmsg":"OK"}') and not acknowledged(200, b'{"result":false}')
    assert not acknowledged(200, b"success") and not acknowledged(500, b'{"result":0}')


async def test_tampered_receipt_and_replies(env: Any) -> None:
    m, receiver = env
    await m.http.post("/tencentcloud/_sandbox/callbacks",
                      json={"receipt_url": "http://testserver/receipts", "reply_url": "http://testserver/replies"})
    await m.http.post("/tencentcloud/_sandbox/faults", json={"notify": "tamper"})
    [status] = (await m.call("SendSms", m.sms()))["SendStatusSet"]
    await idle(m)
    assert [b[0]["sid"] for b in receiver.receipts] == [receiver.receipts[0][0]["sid"], status["SerialNo"]]
    assert receiver.receipts[0][0]["sid"] != status["SerialNo"]            # the tampered first attempt
    r = await m.http.post("/tencentcloud/_sandbox/reply", json={"phone": PHONE, "text": "TD"})
    assert r.status_code == 200
    await idle(m)
    [reply] = receiver.replies
    assert reply | {"time": 0} == {"extend": "", "mobile": "13800138000", "nationcode": "86",
                                   "sign": m.creds["sign_name"], "text": "TD", "time": 0}
    assert isinstance(reply["time"], int)


# ------------------------------------------------------------------ faults
async def test_call_faults(env: Any) -> None:
    m, _ = env
    for kind, status in (("http_500", 500), ("http_429", 429), ("bad_signature", 500)):
        await m.http.post("/tencentcloud/_sandbox/faults", json={"next_call": kind, "path": "SendSms"})
        assert (await m.raw("SendSms", m.sms())).status_code == status
    assert await m.inbox() == []
    await m.http.post("/tencentcloud/_sandbox/faults", json={"next_call": "timeout", "seconds": 0})
    assert (await m.raw("SendSms", m.sms())).status_code == 504
    await m.http.post("/tencentcloud/_sandbox/faults", json={"next_call": "charged_then_timeout", "seconds": 0})
    assert (await m.raw("SendSms", m.sms(SessionContext="msg_c"))).status_code == 504
    [message] = await m.inbox()
    assert message["out_id"] == "msg_c"
    await m.http.post("/tencentcloud/_sandbox/faults", json={"next_call": "http_500", "path": "PullSms"})
    assert (await m.raw("SendSms", m.sms("+8613900139000"))).status_code == 200     # other action: untouched
    assert (await m.raw("PullSmsSendStatus", {"Limit": 1, "SmsSdkAppId": m.creds["sms_sdk_app_id"]})).status_code == 500


async def test_clock_skew_fault_moves_the_window(env: Any) -> None:
    m, _ = env
    await m.http.post("/tencentcloud/_sandbox/faults", json={"clock_skew_seconds": 400})
    assert await m.error("SendSms", m.sms()) == "AuthFailure.SignatureExpire"
    assert (await m.call("SendSms", m.sms(), timestamp=int(m.sim.clock.now()) + 400))["SendStatusSet"]

"""The Alibaba Cloud SMS simulator on the wire: both signature styles (V3 headers, RPC ``Signature``) on GET and
POST with query and form parameters, every gateway refusal in the gateway's order, the business codes, the
per-number windows, QuerySendDetails, JSON and XML answers, the sandbox phone, report pushes and faults."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import secrets
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator
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

from minigate.providers.aliyun_sms import signing
from minigate.simulators import Sandbox
from minigate.simulators.aliyun_sms import RETRY_SCHEDULE, WINDOWS, AliyunSmsSimulator, acknowledged
from minigate.simulators.sandbox import REGISTRY

PHONE = "13800138000"


@dataclass
class Receiver:
    """The account's report/reply URL: records bodies, answers ``replies`` in turn, then ``{"code":0}``."""

    replies: list[tuple[int, bytes]] = field(default_factory=list)
    received: list[tuple[str, Any]] = field(default_factory=list)

    def app(self) -> Starlette:
        async def hook(request: Request) -> Response:
            self.received.append((request.url.path, json.loads(await request.body())))
            status, body = self.replies.pop(0) if self.replies else (200, b'{"code":0,"msg":"\xe6\x88\x90\xe5\x8a\x9f"}')
            return Response(body, status, media_type="application/json")

        return Starlette(routes=[Route("/report", hook, methods=["POST"]), Route("/up", hook, methods=["POST"])])

    def of(self, path: str) -> list[Any]:
        return [body for p, body in self.received if p == path]


class Account:
    """Signs dysmsapi calls with the sandbox AccessKey, either way Alibaba accepts."""

    def __init__(self, sandbox: Sandbox, http: httpx.AsyncClient) -> None:
        self.sandbox, self.http = sandbox, http
        self.creds: dict[str, Any] = sandbox.credentials("aliyun-sms")
        self.sim: AliyunSmsSimulator = sandbox.simulator("aliyun-sms")

    def template(self, name: str = "verification_code") -> str:
        return str(self.creds["templates"][name])

    def send_params(self, phone: str = PHONE, **extra: str) -> dict[str, str]:
        return {"PhoneNumbers": phone, "SignName": self.creds["sign_name"], "TemplateCode": self.template(),
                "TemplateParam": '{"code":"123456","minutes":"5"}', "OutId": "msg_1"} | extra

    def _timestamp(self, skew: float) -> str:
        return signing.format_timestamp(self.sandbox.clock.now() + skew)

    async def v3(self, action: str, query: dict[str, str], *, form: dict[str, str] | None = None,
                 method: str = "POST", secret: str | None = None, key_id: str | None = None, skew: float = 0,
                 nonce: str | None = None, drop: str | None = None, base: str = "http://sandbox",
                 version: str = "2017-05-25", signed: list[str] | None = None,
                 authorization: str | None = None, accept: str = "application/json") -> httpx.Response:
        body = urlencode(form).encode() if form else b""
        headers = {"x-acs-action": action, "x-acs-version": version, "x-acs-date": self._timestamp(skew),
                   "x-acs-signature-nonce": nonce or secrets.token_hex(16),
                   "x-acs-content-sha256": signing.sha256_hex(body), "accept": accept}
        if form:
            headers["content-type"] = "application/x-www-form-urlencoded"
        if drop:
            headers.pop(drop)
        url = f"{base}/aliyun-sms/" + ("?" + signing.canonical_query(query) if query else "")
        request = httpx.Request(method, url, headers=headers, content=body or None)
        pairs = [("host", request.headers["host"]), *headers.items()]
        request.headers["Authorization"] = authorization or signing.acs3_authorization(
            method=method, query=query, headers=pairs, body=body, access_key_id=key_id or self.creds["access_key_id"],
            access_key_secret=secret or self.creds["access_key_secret"], signed_headers=signed)
        return await self.http.send(request)

    async def rpc(self, action: str, params: dict[str, str], *, method: str = "POST", in_body: bool = False,
                  fmt: str | None = "JSON", secret: str | None = None, key_id: str | None = None, skew: float = 0,
                  nonce: str | None = None, drop: str | None = None) -> httpx.Response:
        common = {"Action": action, "Version": "2017-05-25", "AccessKeyId": key_id or self.creds["access_key_id"],
                  "SignatureMethod": "HMAC-SHA1", "SignatureVersion": "1.0",
                  "SignatureNonce": nonce or secrets.token_hex(16), "Timestamp": self._timestamp(skew),
                  "RegionId": "cn-hangzhou"}
        if fmt is not None:
            common["Format"] = fmt
        everything = common | params
        everything["Signature"] = signing.rpc_signature(method, everything,
                                                        secret or self.creds["access_key_secret"])
        if drop:
            everything.pop(drop)
        if in_body:                                   # common parameters in the query, the rest as a form
            query = {k: v for k, v in everything.items() if k not in params}
            return await self.http.request(method, "/aliyun-sms/?" + signing.canonical_query(query),
                                           content=urlencode(params).encode(),
                                           headers={"content-type": "application/x-www-form-urlencoded"})
        return await self.http.request(method, "/aliyun-sms/?" + signing.canonical_query(everything))

    async def send(self, phone: str = PHONE, **extra: str) -> dict[str, Any]:
        r = await self.v3("SendSms", self.send_params(phone, **extra))
        assert r.status_code == 200, r.text
        return dict(r.json())

    async def inbox(self, phone: str = PHONE) -> list[dict[str, Any]]:
        r = await self.http.get("/aliyun-sms/_sandbox/messages", params={"phone": phone})
        return list(r.json()["messages"])


@pytest.fixture
async def env(tmp_path: Path) -> AsyncIterator[tuple[Account, Receiver]]:
    sandbox = Sandbox(tmp_path, time_scale=0.0)
    receiver = Receiver()
    sandbox.notify_client = httpx.AsyncClient(transport=httpx.ASGITransport(app=receiver.app()),
                                              base_url="http://testserver")
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=sandbox.app), base_url="http://sandbox") as http:
        yield Account(sandbox, http), receiver
    await sandbox.aclose()
    await sandbox.notify_client.aclose()


def gateway_error(r: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert r.status_code == status, r.text
    body = dict(r.json())
    assert set(body) == {"RequestId", "HostId", "Code", "Message", "Recommend"}
    assert body["Code"] == code and body["HostId"] == "dysmsapi.aliyuncs.com"
    assert body["Recommend"].endswith(f"Keyword={code}&source=PopGw")
    return body


def business_error(r: httpx.Response, code: str, message: str | None = None) -> None:
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["Code"] == code and "BizId" not in body and body["RequestId"]
    if message is not None:
        assert body["Message"] == message


# ------------------------------------------------------------------ registration, credentials, success
async def test_credentials_are_the_design_fields(env: Any) -> None:
    a, _ = env
    assert REGISTRY["aliyun-sms"] == "minigate.simulators.aliyun_sms:AliyunSmsSimulator"
    assert set(a.creds) == {"access_key_id", "access_key_secret", "sign_name", "templates"}
    assert a.creds["access_key_id"].startswith("LTAI") and len(a.creds["access_key_secret"]) == 30
    assert set(a.creds["templates"]) == {"verification_code", "order_paid", "order_shipped", "refund_succeeded",
                                         "payment_reminder", "marketing_promo"}
    assert all(code.startswith("SMS_") and code[4:].isdigit() for code in a.creds["templates"].values())
    assert len(set(a.creds["templates"].values())) == 6
    assert Sandbox(a.sandbox.state_dir).credentials("aliyun-sms") == a.creds    # kept in the state dir
    assert RETRY_SCHEDULE == (5.0, 30.0, 120.0)


async def test_v3_send_puts_the_message_on_the_phone(env: Any) -> None:
    a, _ = env
    body = await a.send()
    assert body["Code"] == "OK" and body["Message"] == "OK" and body["BizId"].endswith("^0")
    assert len(body["RequestId"]) == 36
    [message] = await a.inbox("+86" + PHONE)
    assert message["text"] == "【迷你网关】您的验证码为123456，5分钟内有效，请勿泄露于他人。"
    assert message["id"] == body["BizId"] and message["out_id"] == "msg_1" and message["status"] == "accepted"


@pytest.mark.parametrize("method", ["GET", "POST"])
@pytest.mark.parametrize("in_body", [False, True])
async def test_rpc_send_on_get_and_post_with_query_or_form(env: Any, method: str, in_body: bool) -> None:
    a, _ = env
    if method == "GET" and in_body:
        in_body = False
    r = await a.rpc("SendSms", a.send_params(), method=method, in_body=in_body)
    assert r.status_code == 200, r.text
    assert r.json()["Code"] == "OK"
    assert len(await a.inbox()) == 1


async def test_v3_get_and_form_body_params(env: Any) -> None:
    a, _ = env
    r = await a.v3("SendSms", a.send_params(), method="GET")
    assert r.json()["Code"] == "OK"
    params = a.send_params("13900139000")
    form = {k: params.pop(k) for k in ("PhoneNumbers", "TemplateParam")}
    r = await a.v3("SendSms", params, form=form)
    assert r.json()["Code"] == "OK", r.text
    assert len(await a.inbox("13900139000")) == 1


async def test_host_with_port_verifies_as_signed(env: Any) -> None:
    a, _ = env
    r = await a.v3("SendSms", a.send_params(), base="http://sandbox:8080")
    assert r.json()["Code"] == "OK", r.text


async def test_sdk_style_signing_of_every_header(env: Any) -> None:
    """The official SDK signs all its headers (accept, user-agent too)."""
    a, _ = env
    r = await a.v3("SendSms", a.send_params(), signed=["host", "accept", "x-acs-action", "x-acs-content-sha256",
                                                     "x-acs-date", "x-acs-signature-nonce", "x-acs-version"])
    assert r.json()["Code"] == "OK", r.text


async def test_mainland_prefixes_and_multiple_numbers(env: Any) -> None:
    a, _ = env
    body = await a.send("+8613800138001,008613800138002,8613800138003")
    assert body["Code"] == "OK"
    for n in ("13800138001", "13800138002", "13800138003"):
        [message] = await a.inbox(n)
        assert message["id"] == body["BizId"]


# ------------------------------------------------------------------ answer formats
async def test_rpc_without_format_answers_xml(env: Any) -> None:
    a, _ = env
    r = await a.rpc("SendSms", a.send_params(), fmt=None)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/xml")
    root = ET.fromstring(r.content)
    assert root.tag == "SendSmsResponse" and root.findtext("Code") == "OK" and root.findtext("BizId")
    r = await a.rpc("SendSms", a.send_params(), fmt="XML", secret="wrong")
    root = ET.fromstring(r.content)
    assert r.status_code == 400 and root.tag == "Error" and root.findtext("Code") == "SignatureDoesNotMatch"
    assert root.findtext("HostId") == "dysmsapi.aliyuncs.com"
    r = await a.rpc("SendSms", a.send_params(), fmt="json")             # the SDK sends lower-case json
    assert r.json()["Code"] == "isv.BUSINESS_LIMIT_CONTROL"


async def test_query_send_details_xml_lists_records(env: Any) -> None:
    a, _ = env
    await a.send()
    day = dt.datetime.fromtimestamp(a.sandbox.clock.now(), dt.timezone(dt.timedelta(hours=8))).strftime("%Y%m%d")
    r = await a.rpc("QuerySendDetails", {"PhoneNumber": PHONE, "SendDate": day, "PageSize": "10",
                                         "CurrentPage": "1"}, fmt="XML")
    root = ET.fromstring(r.content)
    assert root.tag == "QuerySendDetailsResponse" and root.findtext("TotalCount") == "1"
    assert root.findtext("SmsSendDetailDTOs/SmsSendDetailDTO/OutId") == "msg_1"


# ------------------------------------------------------------------ gateway refusals
async def test_missing_business_parameters(env: Any) -> None:
    a, _ = env
    for name in ("PhoneNumbers", "SignName", "TemplateCode"):
        params = a.send_params()
        params.pop(name)
        body = gateway_error(await a.v3("SendSms", params), 400, f"Missing{name}")
        assert body["Message"] == f"{name} is mandatory for this action."
    body = gateway_error(await a.rpc("QuerySendDetails", {"PhoneNumber": PHONE}), 400, "MissingSendDate")


async def test_missing_common_parameters_and_headers(env: Any) -> None:
    a, _ = env
    for name in ("Timestamp", "SignatureNonce", "AccessKeyId", "Signature"):
        gateway_error(await a.rpc("SendSms", a.send_params(), drop=name), 400, f"Missing{name}")
    for header in ("x-acs-date", "x-acs-signature-nonce", "x-acs-version"):
        body = gateway_error(await a.v3("SendSms", a.send_params(), drop=header), 400, "MissingParameter")
        assert header in body["Message"]


async def test_unknown_action_and_version(env: Any) -> None:
    a, _ = env
    gateway_error(await a.v3("SendSmsX", a.send_params()), 404, "InvalidAction.NotFound")
    gateway_error(await a.v3("SendSms", a.send_params(), version="2019-01-01"), 400, "InvalidVersion")


async def test_unknown_access_key(env: Any) -> None:
    a, _ = env
    body = gateway_error(await a.v3("SendSms", a.send_params(), key_id="LTAIunknown"), 404,
                         "InvalidAccessKeyId.NotFound")
    assert body["Message"] == "Specified access key is not found."
    gateway_error(await a.rpc("SendSms", a.send_params(), key_id="LTAIunknown"), 404, "InvalidAccessKeyId.NotFound")
    assert await a.inbox() == []


async def test_time_window_is_fifteen_minutes_both_ways(env: Any) -> None:
    a, _ = env
    for skew in (-901, 901):
        body = gateway_error(await a.v3("SendSms", a.send_params(), skew=skew), 400, "InvalidTimeStamp.Expired")
        assert body["Message"] == "Specified time stamp or date value is expired."
        gateway_error(await a.rpc("SendSms", a.send_params(), skew=skew), 400, "InvalidTimeStamp.Expired")
    r = await a.v3("SendSms", a.send_params(), skew=-880)
    assert r.json()["Code"] == "OK"


async def test_clock_skew_fault_moves_the_simulator_clock(env: Any) -> None:
    a, _ = env
    r = await a.http.post("/aliyun-sms/_sandbox/faults", json={"clock_skew_seconds": 1200})
    assert r.status_code == 200
    gateway_error(await a.v3("SendSms", a.send_params()), 400, "InvalidTimeStamp.Expired")
    assert (await a.v3("SendSms", a.send_params(), skew=1200)).json()["Code"] == "OK"


async def test_nonce_replay_refused(env: Any) -> None:
    a, _ = env
    assert (await a.v3("SendSms", a.send_params(), nonce="n-1")).json()["Code"] == "OK"
    body = gateway_error(await a.v3("QuerySendDetails", {"PhoneNumber": PHONE, "SendDate": "20240101",
                                                         "PageSize": "1", "CurrentPage": "1"}, nonce="n-1"),
                         400, "SignatureNonceUsed")
    assert body["Message"] == "Specified signature nonce was used already."
    gateway_error(await a.rpc("SendSms", a.send_params(), nonce="n-1"), 400, "SignatureNonceUsed")


async def test_bad_signature_both_styles(env: Any) -> None:
    a, _ = env
    body = gateway_error(await a.v3("SendSms", a.send_params(), secret="wrong"), 400, "SignatureDoesNotMatch")
    assert body["Message"].startswith("Specified signature is not matched with our calculation. "
                                      "server string to sign is:ACS3-HMAC-SHA256\n")
    body = gateway_error(await a.rpc("SendSms", a.send_params(), secret="wrong"), 400, "SignatureDoesNotMatch")
    assert "server string to sign is:POST&%2F&AccessKeyId%3D" in body["Message"]
    assert await a.inbox() == []


async def test_tampered_query_and_unsigned_headers_refused(env: Any) -> None:
    a, _ = env
    params = a.send_params()
    good = await a.v3("SendSms", params)
    assert good.json()["Code"] == "OK"
    auth = good.request.headers["Authorization"]
    # the same Authorization over other parameters (and a fresh nonce): the canonical request differs
    forged = await a.v3("SendSms", a.send_params("13900139000"), authorization=auth)
    gateway_error(forged, 400, "SignatureDoesNotMatch")
    gateway_error(await a.v3("SendSms", params, signed=["host", "x-acs-action"]), 400, "IncompleteSignature")
    gateway_error(await a.v3("SendSms", params, authorization="HMAC whatever"), 400, "IncompleteSignature")


async def test_body_hash_is_checked(env: Any) -> None:
    a, _ = env
    params = a.send_params()
    form = {"TemplateParam": params.pop("TemplateParam")}
    request_body = urlencode(form).encode()
    headers = {"x-acs-action": "SendSms", "x-acs-version": "2017-05-25",
               "x-acs-date": signing.format_timestamp(a.sandbox.clock.now()), "x-acs-signature-nonce": "nb",
               "x-acs-content-sha256": signing.EMPTY_SHA256, "content-type": "application/x-www-form-urlencoded"}
    request = httpx.Request("POST", "http://sandbox/aliyun-sms/?" + signing.canonical_query(params),
                            headers=headers, content=request_body)
    request.headers["Authorization"] = signing.acs3_authorization(
        method="POST", query=params, headers=[("host", "sandbox"), *headers.items()],
        access_key_id=a.creds["access_key_id"], access_key_secret=a.creds["access_key_secret"],
        payload_hash=signing.EMPTY_SHA256)
    gateway_error(await a.http.send(request), 400, "SignatureDoesNotMatch")


# ------------------------------------------------------------------ business refusals
async def test_sign_template_and_params(env: Any) -> None:
    a, _ = env
    business_error(await a.v3("SendSms", a.send_params(SignName="别的签名")), "isv.SMS_SIGNATURE_ILLEGAL")
    business_error(await a.v3("SendSms", a.send_params(TemplateCode="SMS_1")), "isv.SMS_TEMPLATE_ILLEGAL")
    business_error(await a.v3("SendSms", a.send_params(TemplateParam='{"code":123456,"minutes":"5"}')),
                   "isv.INVALID_JSON_PARAM", "JSON参数不合法，只接受字符串值")
    business_error(await a.v3("SendSms", a.send_params(TemplateParam="{code:1}")), "isv.INVALID_JSON_PARAM")
    business_error(await a.v3("SendSms", a.send_params(TemplateParam='["1"]')), "isv.INVALID_JSON_PARAM")
    business_error(await a.v3("SendSms", a.send_params(TemplateParam='{"code":"1"}')),
                   "isv.TEMPLATE_MISSING_PARAMETERS")
    params = a.send_params()
    params.pop("TemplateParam")
    business_error(await a.v3("SendSms", params), "isv.TEMPLATE_MISSING_PARAMETERS")
    business_error(await a.v3("SendSms", a.send_params(TemplateParam='{"code":"1","minutes":"5","x":"y"}')),
                   "isv.INVALID_PARAMETERS")
    assert a.sim.desk.messages == []


async def test_numbers(env: Any) -> None:
    a, _ = env
    for bad in ("1380013800", "12800138000", "abc", "13800138000,", "+86-x"):
        business_error(await a.v3("SendSms", a.send_params(bad)), "isv.MOBILE_NUMBER_ILLEGAL", "非法手机号")
    many = ",".join(f"1380000{i:04d}" for i in range(1001))
    business_error(await a.v3("SendSms", a.send_params(many)), "isv.MOBILE_COUNT_OVER_LIMIT")
    assert a.sim.desk.messages == []
    assert (await a.send("85261234567"))["Code"] == "OK"          # international: <cc><number>
    assert len(await a.inbox("+85261234567")) == 1


async def test_business_limit_control_windows(env: Any) -> None:
    a, _ = env
    assert [(w.seconds, w.limit) for w in WINDOWS] == [(60, 1), (3600, 5), (86400, 10)]
    assert (await a.send())["Code"] == "OK"
    business_error(await a.v3("SendSms", a.send_params()), "isv.BUSINESS_LIMIT_CONTROL", "触发分钟级流控Permits:1")
    assert (await a.send("13900139000"))["Code"] == "OK"            # per number
    for _ in range(4):
        a.sandbox.clock.advance(61)
        assert (await a.send())["Code"] == "OK"
    a.sandbox.clock.advance(61)
    business_error(await a.v3("SendSms", a.send_params()), "isv.BUSINESS_LIMIT_CONTROL", "触发小时级流控Permits:5")
    for _ in range(5):
        a.sandbox.clock.advance(3601)
        assert (await a.send())["Code"] == "OK"
    a.sandbox.clock.advance(3601)
    business_error(await a.v3("SendSms", a.send_params()), "isv.BUSINESS_LIMIT_CONTROL", "触发天级流控Permits:10")
    a.sandbox.clock.advance(86400)
    assert (await a.send())["Code"] == "OK"
    assert len(await a.inbox()) == 11


# ------------------------------------------------------------------ SendBatchSms
async def test_send_batch_sms(env: Any) -> None:
    a, _ = env
    sign = a.creds["sign_name"]
    form = {"PhoneNumberJson": json.dumps(["13800138001", "13800138002"]),
            "SignNameJson": json.dumps([sign, sign], ensure_ascii=False),
            "TemplateParamJson": json.dumps([{"order": "A1", "amount": "9.90"}, {"order": "A2", "amount": "1.00"}])}
    r = await a.v3("SendBatchSms", {"TemplateCode": a.template("order_paid"), "OutId": "batch"}, form=form)
    body = r.json()
    assert body["Code"] == "OK", body
    [first] = await a.inbox("13800138001")
    assert first["text"] == "【迷你网关】您的订单A1已支付成功，金额9.90元，感谢您的惠顾。" and first["id"] == body["BizId"]
    r = await a.rpc("SendBatchSms", {"TemplateCode": a.template("order_paid")} | form | {
        "PhoneNumberJson": json.dumps(["13800138003"])}, in_body=True)
    business_error(r, "isv.INVALID_PARAMETERS")
    r = await a.rpc("SendBatchSms", {"TemplateCode": a.template("order_paid")} | form | {
        "SignNameJson": json.dumps(["别的", "别的"], ensure_ascii=False)}, in_body=True)
    business_error(r, "isv.SMS_SIGNATURE_ILLEGAL")
    r = await a.rpc("SendBatchSms", {"TemplateCode": a.template("order_paid")} | form | {"PhoneNumberJson": "[1"},
                    in_body=True)
    business_error(r, "isv.INVALID_JSON_PARAM")
    many = {"PhoneNumberJson": json.dumps([f"1390000{i:04d}" for i in range(101)]),
            "SignNameJson": json.dumps([sign] * 101, ensure_ascii=False)}
    r = await a.rpc("SendBatchSms", {"TemplateCode": a.template("marketing_promo")} | many, in_body=True)
    business_error(r, "isv.MOBILE_COUNT_OVER_LIMIT")


# ------------------------------------------------------------------ QuerySendDetails
async def test_query_send_details_pages_and_states(env: Any) -> None:
    a, _ = env
    day = dt.datetime.fromtimestamp(a.sandbox.clock.now(), dt.timezone(dt.timedelta(hours=8))).strftime("%Y%m%d")
    sent = []
    for i in range(3):
        sent.append((await a.send(OutId=f"m{i}"))["BizId"])
        a.sandbox.clock.advance(61)
    await asyncio.wait_for(a.sandbox.wait_idle(), 10)

    async def query(**extra: str) -> dict[str, Any]:
        params = {"PhoneNumber": PHONE, "SendDate": day, "PageSize": "2", "CurrentPage": "1"} | extra
        r = await a.rpc("QuerySendDetails", params)
        assert r.status_code == 200, r.text
        return dict(r.json())

    first, second = await query(), await query(CurrentPage="2")
    assert first["Code"] == "OK" and first["TotalCount"] == "3"
    rows = first["SmsSendDetailDTOs"]["SmsSendDetailDTO"] + second["SmsSendDetailDTOs"]["SmsSendDetailDTO"]
    assert [r["OutId"] for r in rows] == ["m2", "m1", "m0"]           # newest first
    row = rows[0]
    assert row["PhoneNum"] == PHONE and row["SendStatus"] == 3 and row["ErrCode"] == "DELIVERED"
    assert row["Content"].startswith("【迷你网关】") and row["TemplateCode"] == a.template()
    assert len(row["SendDate"]) == 19 and len(row["ReceiveDate"]) == 19
    only = await query(BizId=sent[1])
    assert [r["OutId"] for r in only["SmsSendDetailDTOs"]["SmsSendDetailDTO"]] == ["m1"]
    assert (await query(PhoneNumber="13900139000"))["TotalCount"] == "0"
    for bad in ({"PageSize": "51"}, {"CurrentPage": "0"}, {"SendDate": "20200101"}, {"SendDate": "2024-01-01"}):
        assert (await query(**bad))["Code"] == "isv.INVALID_PARAMETERS"
    assert (await query(PhoneNumber="123"))["Code"] == "isv.MOBILE_NUMBER_ILLEGAL"


async def test_failed_delivery_shows_in_query(env: Any) -> None:
    a, _ = env
    r = await a.http.post("/aliyun-sms/_sandbox/phones", json={"phone": PHONE, "state": "unreachable"})
    assert r.status_code == 200
    await a.send()
    await asyncio.wait_for(a.sandbox.wait_idle(), 10)
    day = dt.datetime.fromtimestamp(a.sandbox.clock.now(), dt.timezone(dt.timedelta(hours=8))).strftime("%Y%m%d")
    r = await a.v3("QuerySendDetails", {"PhoneNumber": PHONE, "SendDate": day, "PageSize": "10",
                                        "CurrentPage": "1"})
    [row] = r.json()["SmsSendDetailDTOs"]["SmsSendDetailDTO"]
    assert row["SendStatus"] == 2 and row["ErrCode"] == "UNDELIV"


# ------------------------------------------------------------------ pushes
async def test_reports_pushed_to_registered_url_until_acknowledged(env: Any) -> None:
    a, receiver = env
    r = await a.http.post("/aliyun-sms/_sandbox/callbacks", json={"receipt_url": "http://testserver/report"})
    assert r.status_code == 200
    receiver.replies = [(200, b'{"code":1,"msg":"busy"}'), (500, b"")]
    body = await a.send(OutId="msg_r")
    await asyncio.wait_for(a.sandbox.wait_idle(), 10)
    pushes = receiver.of("/report")
    assert len(pushes) == 3                                            # code 1, HTTP 500, then acknowledged
    [item] = pushes[-1]
    assert item["biz_id"] == body["BizId"] and item["out_id"] == "msg_r" and item["success"] is True
    assert item["phone_number"] == PHONE and item["err_code"] == "DELIVERED" and item["sms_size"] == "1"
    assert set(item) == {"phone_number", "send_time", "report_time", "success", "err_code", "err_msg", "sms_size",
                         "biz_id", "out_id"}
    [record] = a.sim.desk.deliverer.log
    assert record.state == "delivered" and len(record.attempts) == 3


async def test_tampered_report_and_replies(env: Any) -> None:
    a, receiver = env
    await a.http.post("/aliyun-sms/_sandbox/callbacks", json={"receipt_url": "http://testserver/report",
                                                              "reply_url": "http://testserver/up"})
    await a.http.post("/aliyun-sms/_sandbox/faults", json={"notify": "tamper"})
    body = await a.send()
    await asyncio.wait_for(a.sandbox.wait_idle(), 10)
    first, second = receiver.of("/report")
    assert first[0]["biz_id"] != body["BizId"] and second[0]["biz_id"] == body["BizId"]
    r = await a.http.post("/aliyun-sms/_sandbox/reply", json={"phone": PHONE, "text": "TD"})
    assert r.status_code == 200
    await asyncio.wait_for(a.sandbox.wait_idle(), 10)
    [[reply]] = receiver.of("/up")
    assert reply["phone_number"] == PHONE and reply["content"] == "TD" and reply["sign_name"] == "迷你网关"
    assert set(reply) == {"phone_number", "send_time", "content", "sign_name", "dest_code", "sequence_id"}


def test_acknowledgement_rule() -> None:
    assert acknowledged(200, b'{"code":0,"msg":"\xe6\x8e\xa5\xe6\x94\xb6\xe6\x88\x90\xe5\x8a\x9f"}')
    assert acknowledged(200, b'{"code":"0"}')
    assert not acknowledged(200, b'{"code":1}') and not acknowledged(500, b'{"code":0}')
    assert not acknowledged(200, b"success") and not acknowledged(200, b"[0]")


# ------------------------------------------------------------------ faults
async def test_call_faults(env: Any) -> None:
    a, _ = env
    faults = "/aliyun-sms/_sandbox/faults"
    await a.http.post(faults, json={"next_call": "http_500", "path": "SendSms"})
    gateway_error(await a.v3("SendSms", a.send_params()), 500, "InternalError")
    await a.http.post(faults, json={"next_call": "bad_signature"})
    gateway_error(await a.v3("SendSms", a.send_params()), 500, "InternalError")
    await a.http.post(faults, json={"next_call": "http_429"})
    gateway_error(await a.v3("SendSms", a.send_params()), 429, "Throttling.User")
    await a.http.post(faults, json={"next_call": "timeout", "seconds": 0.01})
    gateway_error(await a.v3("SendSms", a.send_params()), 504, "ServiceTimeout")
    assert await a.inbox() == []
    await a.http.post(faults, json={"next_call": "charged_then_timeout", "seconds": 0.01})
    gateway_error(await a.v3("SendSms", a.send_params()), 504, "ServiceTimeout")
    assert len(await a.inbox()) == 1                                     # it reached the phone all the same
    # a fault for another action does not fire
    await a.http.post(faults, json={"next_call": "http_500", "path": "QuerySendDetails"})
    a.sandbox.clock.advance(61)
    assert (await a.send())["Code"] == "OK"
    # faults come after authentication: a forged call does not consume them
    gateway_error(await a.v3("QuerySendDetails", {"PhoneNumber": PHONE, "SendDate": "20240101", "PageSize": "1",
                                                  "CurrentPage": "1"}, secret="wrong"), 400, "SignatureDoesNotMatch")
    assert (await a.http.get(faults)).json()["next_call"][0]["path"] == "QuerySendDetails"

"""AliyunSmsProvider: the wire request it builds (V3 and RPC), how it reads every kind of answer, and end to end
against the sandbox simulator over ``httpx.ASGITransport``."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import httpx
import pytest
from pydantic import ValidationError

from minigate.domain.results import StandardCode
from minigate.errors import OutcomeUnknown, ProviderTimeout, ProviderUnavailable
from minigate.providers import registry
from minigate.providers.aliyun_sms import signing
from minigate.providers.aliyun_sms.codes import BUSINESS_CODES, DEFAULT_CODE_TABLE, GATEWAY_CODES
from minigate.providers.aliyun_sms.config import LIVE_BASE_URL, AliyunSmsConfig
from minigate.providers.aliyun_sms.provider import AliyunSmsProvider, wire_phone
from minigate.providers.bases.sms import DeliveryState, SmsRequest
from minigate.simulators import Sandbox
from tests.providers import sandboxed

NOW = 1704067200.0                          # 2024-01-01 08:00:00 Beijing
BEIJING = dt.timezone(dt.timedelta(hours=8))
BASE = "https://dysmsapi.example"
SECRET = "s3cr3t-of-thirty-characters-xx"


def config(**extra: Any) -> AliyunSmsConfig:
    fields = {"access_key_id": "LTAItest", "access_key_secret": SECRET, "sign_name": "迷你网关",
              "templates": {"verification_code": "SMS_154950909"}, "base_url": BASE}
    return AliyunSmsConfig.model_validate(fields | extra)


def request(message_id: str = "msg_abc", phone: str = "+8613800138000", **extra: Any) -> SmsRequest:
    fields: dict[str, Any] = {"message_id": message_id, "phone": phone, "sign_name": "迷你网关",
                              "template_id": "SMS_154950909", "params": (("code", "123456"), ("minutes", "5"))}
    return SmsRequest(**(fields | extra))


Handler = Callable[[httpx.Request], httpx.Response]


def provider(handler: Handler, **cfg: Any) -> AliyunSmsProvider:
    client = httpx.AsyncClient(transport=httpx.MockTransport(handler))
    return AliyunSmsProvider(config(**cfg), client, clock=lambda: NOW, nonce=lambda: "fixed-nonce")


def answer(obj: Any, status: int = 200) -> Handler:
    def handle(_: httpx.Request) -> httpx.Response:
        return httpx.Response(status, json=obj)
    return handle


def query_of(req: httpx.Request) -> dict[str, str]:
    return dict(parse_qsl(urlsplit(str(req.url)).query, keep_blank_values=True))


# ------------------------------------------------------------------ the wire request
async def test_v3_send_request_is_signed_as_alibaba_expects() -> None:
    seen: list[httpx.Request] = []

    def handle(req: httpx.Request) -> httpx.Response:
        seen.append(req)
        return httpx.Response(200, json={"Code": "OK", "Message": "OK", "BizId": "900619746936498440^0",
                                         "RequestId": "F655A8D5-B967-440B-8683-DAD6FF8DE990"})

    result = await provider(handle).send(request())
    assert result.ok and result.value is not None
    assert result.value.provider_message_id == "900619746936498440^0"
    assert (result.request_id or "").startswith("F655")
    [req] = seen
    assert req.method == "POST" and req.url.path == "/" and req.content == b""
    query = query_of(req)
    assert query == {"PhoneNumbers": "13800138000", "SignName": "迷你网关", "TemplateCode": "SMS_154950909",
                     "OutId": "msg_abc", "TemplateParam": '{"code":"123456","minutes":"5"}'}
    assert req.headers["x-acs-action"] == "SendSms" and req.headers["x-acs-version"] == "2017-05-25"
    assert req.headers["x-acs-date"] == "2024-01-01T00:00:00Z"
    assert req.headers["x-acs-signature-nonce"] == "fixed-nonce"
    assert req.headers["x-acs-content-sha256"] == signing.EMPTY_SHA256
    assert req.headers["accept"] == "application/json" and "content-type" not in req.headers
    expected = signing.acs3_authorization(
        method="POST", query=query, headers=[(k, v) for k, v in req.headers.items() if k != "authorization"],
        access_key_id="LTAItest", access_key_secret=SECRET)
    assert req.headers["authorization"] == expected
    assert "SignedHeaders=host;x-acs-action;x-acs-content-sha256;x-acs-date;x-acs-signature-nonce;x-acs-version," \
        in expected


async def test_rpc_send_request_and_security_token() -> None:
    seen: list[httpx.Request] = []

    def handle(req: httpx.Request) -> httpx.Response:
        seen.append(req)
        return httpx.Response(200, json={"Code": "OK", "Message": "OK", "BizId": "1^0", "RequestId": "r"})

    await provider(handle, signature_version="rpc", security_token="sts-token").send(request(params=()))
    [req] = seen
    query = query_of(req)
    assert "TemplateParam" not in query and "authorization" not in req.headers
    assert query["Action"] == "SendSms" and query["Format"] == "JSON" and query["Version"] == "2017-05-25"
    assert query["SignatureMethod"] == "HMAC-SHA1" and query["SignatureVersion"] == "1.0"
    assert query["Timestamp"] == "2024-01-01T00:00:00Z" and query["RegionId"] == "cn-hangzhou"
    assert query["SecurityToken"] == "sts-token" and query["AccessKeyId"] == "LTAItest"
    assert query["Signature"] == signing.rpc_signature("POST", query, SECRET)
    assert "%2B" in str(req.url) or "+" not in query["Signature"]       # Signature percent-encoded on the wire

    seen.clear()
    await provider(handle, security_token="sts-token").send(request())
    assert seen[0].headers["x-acs-security-token"] == "sts-token"
    assert seen[0].headers["x-acs-accesskey-id"] == "LTAItest"
    assert "x-acs-security-token" in seen[0].headers["authorization"]


def test_wire_phone_forms() -> None:
    assert wire_phone("+8613800138000") == "13800138000"
    assert wire_phone("+85261234567") == "85261234567"


# ------------------------------------------------------------------ answers
@pytest.mark.parametrize(("code", "expected"), [
    ("isv.BUSINESS_LIMIT_CONTROL", StandardCode.RATE_LIMITED),
    ("isv.MOBILE_NUMBER_ILLEGAL", StandardCode.INVALID_PHONE),
    ("isv.SMS_TEMPLATE_ILLEGAL", StandardCode.TEMPLATE_REJECTED),
    ("isv.SMS_SIGNATURE_ILLEGAL", StandardCode.TEMPLATE_REJECTED),
    ("isv.TEMPLATE_MISSING_PARAMETERS", StandardCode.TEMPLATE_REJECTED),
    ("isv.INVALID_JSON_PARAM", StandardCode.TEMPLATE_REJECTED),
    ("isv.PARAM_NOT_SUPPORT_URL", StandardCode.CONTENT_REJECTED),
    ("isv.BLACK_KEY_CONTROL_LIMIT", StandardCode.CONTENT_REJECTED),
    ("isv.AMOUNT_NOT_ENOUGH", StandardCode.INSUFFICIENT_BALANCE),
    ("isp.RAM_PERMISSION_DENY", StandardCode.AUTH_FAILED),
    ("isv.MOBILE_COUNT_OVER_LIMIT", StandardCode.INVALID_REQUEST),
    ("isv.SOMETHING_NEW", StandardCode.DECLINED),
])
async def test_business_codes_are_declines(code: str, expected: StandardCode) -> None:
    result = await provider(answer({"Code": code, "Message": "m", "RequestId": "r"})).send(request())
    assert not result.ok and result.code is expected and result.provider_code == code
    assert result.message == "m" and result.request_id == "r"


def test_every_reference_code_is_mapped() -> None:
    listed = ["isv.BUSINESS_LIMIT_CONTROL", "isv.MOBILE_NUMBER_ILLEGAL", "isv.MOBILE_COUNT_OVER_LIMIT",
              "isv.TEMPLATE_MISSING_PARAMETERS", "isv.INVALID_JSON_PARAM", "isv.SMS_SIGNATURE_ILLEGAL",
              "isv.SMS_TEMPLATE_ILLEGAL", "isv.AMOUNT_NOT_ENOUGH", "isv.OUT_OF_SERVICE", "isv.PRODUCT_UN_SUBSCRIPT",
              "isv.ACCOUNT_NOT_EXISTS", "isv.ACCOUNT_ABNORMAL", "isv.BLACK_KEY_CONTROL_LIMIT",
              "isv.PARAM_LENGTH_LIMIT", "isv.PARAM_NOT_SUPPORT_URL", "isv.INVALID_PARAMETERS",
              "isp.RAM_PERMISSION_DENY"]
    assert set(listed) <= set(BUSINESS_CODES)
    assert {"SignatureDoesNotMatch", "InvalidAccessKeyId.NotFound", "InvalidTimeStamp.Expired",
            "SignatureNonceUsed", "MissingParameter", "IncompleteSignature"} <= set(GATEWAY_CODES)
    assert DEFAULT_CODE_TABLE.classify("MissingPhoneNumbers", http_status=400) is StandardCode.INVALID_REQUEST


async def test_gateway_refusals_are_declines_without_the_echoed_request() -> None:
    body = {"RequestId": "r", "HostId": "dysmsapi.aliyuncs.com", "Code": "SignatureDoesNotMatch",
            "Message": "Specified signature is not matched with our calculation. server string to sign is:POST&%2F&"
                       "PhoneNumbers%3D13800138000", "Recommend": "https://error-center.aliyun.com/..."}
    result = await provider(answer(body, 400)).send(request())
    assert not result.ok and result.code is StandardCode.AUTH_FAILED
    assert result.message == "Specified signature is not matched with our calculation."
    result = await provider(answer(body | {"Code": "MissingSignName"}, 400)).send(request())
    assert result.code is StandardCode.INVALID_REQUEST


@pytest.mark.parametrize("handler", [
    answer({"Code": "isp.SYSTEM_ERROR", "Message": "busy", "RequestId": "r"}),
    answer({"Code": "InternalError", "Message": "x", "RequestId": "r"}, 500),
    answer({"Code": "Throttling", "Message": "x"}, 429),
    answer({"Code": "ServiceUnavailable"}, 503),
    answer({"Code": "OK", "Message": "OK", "RequestId": "r"}),                # OK without BizId
    answer(["not", "an", "object"]),
    answer({"unexpected": True}, 400),
    lambda _req: httpx.Response(200, content=b"<html>proxy</html>"),
    lambda _req: httpx.Response(302, headers={"location": "/"}, json={"Code": "x"}),
])
async def test_unknown_outcomes_raise(handler: Handler) -> None:
    with pytest.raises(ProviderUnavailable):
        await provider(handler).send(request())


async def test_transport_timeout_raises_outcome_unknown() -> None:
    def handle(req: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("slow", request=req)

    with pytest.raises(ProviderTimeout):
        await provider(handle).send(request())


async def test_bad_phone_is_declined_locally() -> None:
    def handle(_: httpx.Request) -> httpx.Response:
        raise AssertionError("must not be sent")

    result = await provider(handle).send(request(phone="+86123"))
    assert result.code is StandardCode.INVALID_PHONE


# ------------------------------------------------------------------ find
def details(*rows: dict[str, Any], total: int | None = None) -> dict[str, Any]:
    return {"Code": "OK", "Message": "OK", "RequestId": "r", "TotalCount": str(total if total is not None else
                                                                                  len(rows)),
            "SmsSendDetailDTOs": {"SmsSendDetailDTO": list(rows)}}


def row(out_id: str, status: int = 1, err: str = "") -> dict[str, Any]:
    return {"PhoneNum": "13800138000", "SendStatus": status, "ErrCode": err, "TemplateCode": "SMS_154950909",
            "Content": "x", "SendDate": "2024-01-01 08:00:00", "ReceiveDate": "", "OutId": out_id}


async def test_find_pages_through_the_day_and_matches_out_id() -> None:
    seen: list[dict[str, str]] = []

    def handle(req: httpx.Request) -> httpx.Response:
        q = query_of(req)
        seen.append(q)
        assert req.headers["x-acs-action"] == "QuerySendDetails"
        if q["CurrentPage"] == "1":
            return httpx.Response(200, json=details(*[row(f"other{i}") for i in range(50)], total=51))
        return httpx.Response(200, json=details(row("msg_abc", 2, "MK:0001"), total=51))

    sent = dt.datetime(2024, 1, 1, 8, 0, tzinfo=BEIJING)
    result = await provider(handle).find(request(sent_at=sent))
    assert result.ok and result.value is not None and result.value.found
    assert result.value.state is DeliveryState.FAILED and result.value.error_code == "MK:0001"
    assert [(q["PhoneNumber"], q["SendDate"], q["PageSize"], q["CurrentPage"]) for q in seen] == [
        ("13800138000", "20240101", "50", "1"), ("13800138000", "20240101", "50", "2")]


async def test_find_checks_the_next_beijing_day_and_reports_not_found() -> None:
    seen: list[str] = []

    def handle(req: httpx.Request) -> httpx.Response:
        seen.append(query_of(req)["SendDate"])
        return httpx.Response(200, json=details(row("someone-else", 3, "DELIVERED")))

    late = dt.datetime(2023, 12, 31, 15, 59, tzinfo=dt.UTC)           # 23:59 Beijing, the day before NOW
    result = await provider(handle).find(request(sent_at=late))
    assert result.ok and result.value is not None and not result.value.found
    assert seen == ["20231231", "20240101"]
    seen.clear()
    delivered = await provider(answer(details(row("msg_abc", 3, "DELIVERED")))).find(request())
    assert delivered.value is not None and delivered.value.state is DeliveryState.DELIVERED
    assert delivered.value.error_code is None


async def test_find_declines_and_raises_like_send() -> None:
    result = await provider(answer({"Code": "isv.INVALID_PARAMETERS", "Message": "参数异常"})).find(request())
    assert not result.ok and result.code is StandardCode.INVALID_REQUEST
    with pytest.raises(ProviderUnavailable):
        await provider(answer({"Code": "OK", "SmsSendDetailDTOs": {"SmsSendDetailDTO": "x"}})).find(request())
    assert AliyunSmsProvider.lookup_is_authoritative and AliyunSmsProvider.lookup_settle_seconds == 60.0


# ------------------------------------------------------------------ configuration
def test_config() -> None:
    cfg = AliyunSmsConfig.model_validate({"access_key_id": "a", "access_key_secret": "hush-hush",
                                          "sign_name": "【迷你网关】"})
    assert cfg.base_url == LIVE_BASE_URL and cfg.signature_version == "v3" and cfg.sign_name == "迷你网关"
    assert "hush-hush" not in repr(cfg)
    with pytest.raises(ValidationError):
        AliyunSmsConfig.model_validate({"access_key_id": "a", "access_key_secret": "b", "unknown": 1})
    with pytest.raises(ValidationError):
        AliyunSmsConfig.model_validate({"access_key_id": "a", "access_key_secret": "b", "signature_version": "v4"})
    assert config(templates={"x": "123"}, base_url="http://x").problems() == [
        "template x: Alibaba template codes look like SMS_123456789", "base_url must be https:// in live mode"]


# ------------------------------------------------------------------ against the simulator
@pytest.fixture
async def sandbox(tmp_path: Path) -> AsyncIterator[tuple[Sandbox, httpx.AsyncClient, dict[str, Any]]]:
    async with sandboxed(tmp_path, registry.sms_spec("aliyun-sms")) as env:
        yield env


def sim_request(cfg: dict[str, Any], message_id: str, phone: str = "+8613800138000", **extra: Any) -> SmsRequest:
    fields: dict[str, Any] = {"message_id": message_id, "phone": phone, "sign_name": cfg["sign_name"],
                              "template_id": cfg["templates"]["verification_code"],
                              "params": (("code", "246810"), ("minutes", "5")),
                              "sent_at": dt.datetime.now(dt.UTC)}
    return SmsRequest(**(fields | extra))


async def inbox(client: httpx.AsyncClient, phone: str) -> list[dict[str, Any]]:
    return list((await client.get("/aliyun-sms/_sandbox/messages", params={"phone": phone})).json()["messages"])


@pytest.mark.parametrize("version", ["v3", "rpc"])
async def test_send_and_find_against_the_simulator(sandbox: Any, version: str) -> None:
    box, client, cfg = sandbox
    spec = registry.sms_spec("aliyun-sms")
    assert spec is not None
    sms = spec.build(cfg | {"signature_version": version}, client)
    req = sim_request(cfg, "msg_one")
    sent = await sms.send(req)
    assert sent.ok and sent.value is not None
    [message] = await inbox(client, "+8613800138000")
    assert message["id"] == sent.value.provider_message_id and message["out_id"] == "msg_one"
    assert message["text"] == "【迷你网关】您的验证码为246810，5分钟内有效，请勿泄露于他人。"
    await box.wait_idle()
    found = await sms.find(req)
    assert found.ok and found.value is not None and found.value.found
    assert found.value.state is DeliveryState.DELIVERED
    missing = await sms.find(sim_request(cfg, "msg_never"))
    assert missing.ok and missing.value is not None and not missing.value.found
    again = await sms.send(sim_request(cfg, "msg_two"))
    assert not again.ok and again.code is StandardCode.RATE_LIMITED
    assert again.provider_code == "isv.BUSINESS_LIMIT_CONTROL" and again.message == "触发分钟级流控Permits:1"


async def test_declines_from_the_simulator(sandbox: Any) -> None:
    _, client, cfg = sandbox
    spec = registry.sms_spec("aliyun-sms")
    assert spec is not None
    sms = spec.build(cfg, client)
    cases = [
        (sim_request(cfg, "m1", sign_name="别的签名"), StandardCode.TEMPLATE_REJECTED, "isv.SMS_SIGNATURE_ILLEGAL"),
        (sim_request(cfg, "m2", template_id="SMS_1"), StandardCode.TEMPLATE_REJECTED, "isv.SMS_TEMPLATE_ILLEGAL"),
        (sim_request(cfg, "m3", params=(("code", "1"),)), StandardCode.TEMPLATE_REJECTED,
         "isv.TEMPLATE_MISSING_PARAMETERS"),
    ]
    for req, code, provider_code in cases:
        result = await sms.send(req)
        assert not result.ok and result.code is code and result.provider_code == provider_code
    for bad in ({"access_key_secret": "wrong"}, {"access_key_id": "LTAIunknown"}):
        result = await spec.build(cfg | bad, client).send(sim_request(cfg, "m4"))
        assert not result.ok and result.code is StandardCode.AUTH_FAILED
        assert result.provider_code in ("SignatureDoesNotMatch", "InvalidAccessKeyId.NotFound")
        assert "server string to sign" not in (result.message or "")
    await client.post("/aliyun-sms/_sandbox/faults", json={"clock_skew_seconds": 3600})
    result = await sms.send(sim_request(cfg, "m5"))
    assert result.code is StandardCode.AUTH_FAILED and result.provider_code == "InvalidTimeStamp.Expired"
    assert await inbox(client, "+8613800138000") == []


async def test_faults_give_unknown_outcomes_and_find_settles_them(sandbox: Any) -> None:
    _, client, cfg = sandbox
    spec = registry.sms_spec("aliyun-sms")
    assert spec is not None
    sms = spec.build(cfg, client)
    faults = "/aliyun-sms/_sandbox/faults"
    await client.post(faults, json={"next_call": "timeout", "seconds": 0.01})
    with pytest.raises(OutcomeUnknown):
        await sms.send(sim_request(cfg, "m_timeout"))
    lost = await sms.find(sim_request(cfg, "m_timeout"))
    assert lost.value is not None and not lost.value.found             # never accepted: safe to send again
    await client.post(faults, json={"next_call": "http_500"})
    with pytest.raises(ProviderUnavailable):
        await sms.send(sim_request(cfg, "m_500"))
    await client.post(faults, json={"next_call": "charged_then_timeout", "seconds": 0.01})
    req = sim_request(cfg, "m_charged")
    with pytest.raises(OutcomeUnknown):
        await sms.send(req)
    found = await sms.find(req)
    assert found.ok and found.value is not None and found.value.found   # it went out: do not send again
    assert len(await inbox(client, "+8613800138000")) == 1


async def test_receipt_from_the_simulator_parses(sandbox: Any) -> None:
    box, client, cfg = sandbox
    spec = registry.sms_spec("aliyun-sms")
    assert spec is not None
    sms = spec.build(cfg, client)
    pushed: list[bytes] = []

    async def receiver(scope: Any, receive: Any, send: Any) -> None:
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        pushed.append(body)
        ack = sms.receipt_ack()
        await send({"type": "http.response.start", "status": ack.status_code,
                    "headers": [(b"content-type", ack.content_type.encode())]})
        await send({"type": "http.response.body", "body": ack.body})

    box.notify_client = httpx.AsyncClient(transport=httpx.ASGITransport(app=receiver), base_url="http://testserver")
    await client.post("/aliyun-sms/_sandbox/callbacks", json={"receipt_url": "http://testserver/sms/aliyun"})
    sent = await sms.send(sim_request(cfg, "msg_receipt"))
    assert sent.value is not None
    await box.wait_idle()
    assert len(pushed) == 1                                             # acknowledged at the first attempt
    [receipt] = sms.parse_receipts({"content-type": "application/json"}, pushed[0])
    assert receipt.provider_message_id == sent.value.provider_message_id and receipt.message_id == "msg_receipt"
    assert receipt.state is DeliveryState.DELIVERED and receipt.phone == "+8613800138000"
    assert receipt.error_code == "DELIVERED" and receipt.reported_at is not None
    assert json.loads(sms.receipt_ack().body) == {"code": 0, "msg": "接收成功"}
    await box.notify_client.aclose()

"""TencentSmsProvider: the wire request it builds (over httpx.MockTransport), how it reads answers and codes, and
send/find/declines/unknown outcomes against the simulator through the registry and the Sandbox."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import ValidationError

from minigate.domain.results import StandardCode
from minigate.errors import OperationNotSupported, OutcomeUnknown, ProviderTimeout, ProviderUnavailable
from minigate.providers import registry
from minigate.providers.bases.sms import DeliveryState, SmsRequest
from minigate.providers.tencentcloud import signing
from minigate.providers.tencentcloud.codes import DEFAULT_ERROR_MAPPER, ErrorMapper
from minigate.providers.tencentcloud.config import LIVE_BASE_URL, TencentSmsConfig
from minigate.providers.tencentcloud.sms import TencentSmsProvider
from minigate.simulators import Sandbox
from tests.providers import sandboxed

NOW = 1700000000
PHONE = "+8613800138000"
CONFIG = {"secret_id": "AKIDEXAMPLE", "secret_key": "SECRETEXAMPLE", "sms_sdk_app_id": "1400006666",
          "sign_name": "腾讯云", "templates": {"verification_code": "1234"}}


def request(**extra: Any) -> SmsRequest:
    base: dict[str, Any] = {"message_id": "msg_1", "phone": PHONE, "sign_name": "腾讯云", "template_id": "1234",
                            "params": (("code", "123456"), ("minutes", "5"))}
    return SmsRequest(**(base | extra))


def answer(body: dict[str, Any], status: int = 200) -> httpx.Response:
    return httpx.Response(status, json={"Response": body | {"RequestId": "req-1"}})


def ok_status(**extra: Any) -> dict[str, Any]:
    return {"SerialNo": "5000:1045710669157053657849499619", "PhoneNumber": PHONE, "Fee": 1,
            "SessionContext": "msg_1", "Code": "Ok", "Message": "send success", "IsoCode": "CN"} | extra


def mock(handler: Callable[[httpx.Request], httpx.Response], **config: Any) -> TencentSmsProvider:
    client = httpx.AsyncClient(transport=httpx.MockTransport(handler))
    return TencentSmsProvider(TencentSmsConfig(**(CONFIG | config)), client, clock=lambda: NOW)


# ------------------------------------------------------------------ the request on the wire
async def test_send_builds_the_signed_sendsms_request() -> None:
    seen: list[httpx.Request] = []

    def handler(req: httpx.Request) -> httpx.Response:
        seen.append(req)
        return answer({"SendStatusSet": [ok_status()]})

    result = await mock(handler).send(request())
    assert result.ok and result.value is not None and result.request_id == "req-1"
    assert (result.value.provider_message_id, result.value.segments) == ("5000:1045710669157053657849499619", 1)
    [req] = seen
    assert (req.method, str(req.url)) == ("POST", LIVE_BASE_URL + "/")
    h = req.headers
    assert (h["host"], h["x-tc-action"], h["x-tc-version"], h["x-tc-region"], h["x-tc-timestamp"]) == (
        "sms.tencentcloudapi.com", "SendSms", "2021-01-11", "ap-guangzhou", str(NOW))
    assert h["content-type"] == "application/json; charset=utf-8" and "x-tc-token" not in h
    assert json.loads(req.content) == {"PhoneNumberSet": [PHONE], "SmsSdkAppId": "1400006666", "TemplateId": "1234",
                                       "SessionContext": "msg_1", "SignName": "腾讯云",
                                       "TemplateParamSet": ["123456", "5"]}
    assert "腾讯云".encode() in req.content                       # UTF-8, not \\u escapes
    auth = signing.parse_authorization(h["authorization"])
    assert auth is not None and auth.signed_headers == ("content-type", "host", "x-tc-action")
    assert (auth.secret_id, auth.date, auth.service) == ("AKIDEXAMPLE", "2023-11-14", "sms")
    expected = signing.tc3_sign(secret_id="AKIDEXAMPLE", secret_key="SECRETEXAMPLE", service="sms", timestamp=NOW,
                                headers=dict(h), payload=req.content, signed_headers=auth.signed_headers)
    assert h["authorization"] == expected.authorization


async def test_optional_headers_and_no_params() -> None:
    seen: list[httpx.Request] = []

    def handler(req: httpx.Request) -> httpx.Response:
        seen.append(req)
        return answer({"SendStatusSet": [ok_status()]})

    provider = mock(handler, token="tmp-token", language="en-US", region="ap-beijing",
                    base_url="http://127.0.0.1:9/tencentcloud")
    assert (await provider.send(request(params=(), sign_name=""))).ok
    h = seen[0].headers
    assert (h["x-tc-token"], h["x-tc-language"], h["x-tc-region"], h["host"]) == (
        "tmp-token", "en-US", "ap-beijing", "127.0.0.1:9")
    assert str(seen[0].url) == "http://127.0.0.1:9/tencentcloud/"
    body = json.loads(seen[0].content)
    assert "TemplateParamSet" not in body and body["SignName"] == "腾讯云"     # the configured sign name


# ------------------------------------------------------------------ answers and codes
@pytest.mark.parametrize(("code", "standard"), [
    ("InvalidParameterValue.IncorrectPhoneNumber", StandardCode.INVALID_PHONE),
    ("FailedOperation.PhoneNumberInBlacklist", StandardCode.INVALID_PHONE),
    ("LimitExceeded.PhoneNumberThirtySecondLimit", StandardCode.RATE_LIMITED),
    ("LimitExceeded.PhoneNumberDailyLimit", StandardCode.RATE_LIMITED),
    ("LimitExceeded.SomethingNew", StandardCode.RATE_LIMITED),
    ("FailedOperation.TemplateIncorrectOrUnapproved", StandardCode.TEMPLATE_REJECTED),
    ("FailedOperation.SignatureIncorrectOrUnapproved", StandardCode.TEMPLATE_REJECTED),
    ("FailedOperation.TemplateParamSetNotMatchApprovedTemplate", StandardCode.TEMPLATE_REJECTED),
    ("FailedOperation.ContainSensitiveWord", StandardCode.CONTENT_REJECTED),
    ("InvalidParameterValue.ProhibitedUseUrlInTemplateParameter", StandardCode.CONTENT_REJECTED),
    ("FailedOperation.InsufficientBalanceInSmsPackage", StandardCode.INSUFFICIENT_BALANCE),
    ("UnauthorizedOperation.ServiceSuspendDueToArrears", StandardCode.INSUFFICIENT_BALANCE),
    ("AuthFailure.SignatureFailure", StandardCode.AUTH_FAILED),
    ("AuthFailure.Whatever", StandardCode.AUTH_FAILED),
    ("UnauthorizedOperation.SmsSdkAppIdVerifyFail", StandardCode.AUTH_FAILED),
    ("MissingParameter.EmptyPhoneNumberSet", StandardCode.INVALID_REQUEST),
    ("InvalidParameter", StandardCode.INVALID_REQUEST),
    ("UnsupportedOperation.ContainDomesticAndInternationalPhoneNumber", StandardCode.INVALID_REQUEST),
    ("FailedOperation.MarketingSendTimeConstraint", StandardCode.DECLINED),
    ("FailedOperation.SomethingNew", StandardCode.DECLINED),
])
async def test_codes_map_both_as_request_errors_and_per_number_entries(code: str, standard: StandardCode) -> None:
    whole = mock(lambda _: answer({"Error": {"Code": code, "Message": "m"}}))
    result = await whole.send(request())
    assert (result.ok, result.code, result.provider_code, result.message, result.request_id) == (
        False, standard, code, "m", "req-1")
    entry = mock(lambda _: answer({"SendStatusSet": [ok_status(Code=code, Message="m2", SerialNo="", Fee=0)]}))
    result = await entry.send(request())
    assert (result.ok, result.code, result.provider_code, result.message) == (False, standard, code, "m2")


@pytest.mark.parametrize("response", [
    httpx.Response(500, text="oops"), httpx.Response(429, text="slow down"), httpx.Response(504, text=""),
    httpx.Response(200, text="<html>"), httpx.Response(200, json={"NoResponse": 1}),
    httpx.Response(200, json={"Response": {"RequestId": "r"}}),
    httpx.Response(200, json={"Response": {"SendStatusSet": [], "RequestId": "r"}}),
    httpx.Response(200, json={"Response": {"SendStatusSet": [{"Code": "Ok"}], "RequestId": "r"}}),
    httpx.Response(200, json={"Response": {"Error": {"Message": "no code"}, "RequestId": "r"}}),
    answer({"Error": {"Code": "InternalError", "Message": "m"}}),
    answer({"Error": {"Code": "InternalError.Timeout", "Message": "m"}}),
    answer({"SendStatusSet": [ok_status(Code="InternalError.SendAndRecvFail")]}),
])
async def test_answers_that_leave_the_outcome_unknown(response: httpx.Response) -> None:
    with pytest.raises(ProviderUnavailable):
        await mock(lambda _: response).send(request())


async def test_transport_errors_are_unknown_outcomes() -> None:
    def timeout(req: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("slow", request=req)

    with pytest.raises(ProviderTimeout):
        await mock(timeout).send(request())


def test_error_mapper_is_data() -> None:
    assert DEFAULT_ERROR_MAPPER.is_unknown_outcome("InternalError.Whatever")
    assert not DEFAULT_ERROR_MAPPER.is_unknown_outcome("InternalError.SigVerificationFail")
    assert DEFAULT_ERROR_MAPPER.classify("InternalError.SigVerificationFail") == StandardCode.AUTH_FAILED
    mine = ErrorMapper(codes={"FailedOperation.OtherError": StandardCode.RATE_LIMITED})
    assert mine.classify("FailedOperation.OtherError") == StandardCode.RATE_LIMITED


async def test_find_payload_and_matching() -> None:
    seen: list[dict[str, Any]] = []
    rows = [{"UserReceiveTime": NOW - 5, "CountryCode": "86", "SubscriberNumber": "13800138000", "PhoneNumber": PHONE,
             "SerialNo": "1:other", "ReportStatus": "SUCCESS", "Description": "ok", "SessionContext": "msg_0"},
            {"UserReceiveTime": NOW - 3, "CountryCode": "86", "SubscriberNumber": "13800138000", "PhoneNumber": PHONE,
             "SerialNo": "1:mine", "ReportStatus": "FAIL", "Description": "用户短信未送达", "SessionContext": "msg_1"}]

    def handler(req: httpx.Request) -> httpx.Response:
        assert req.headers["x-tc-action"] == "PullSmsSendStatusByPhoneNumber"
        seen.append(json.loads(req.content))
        return answer({"PullSmsSendStatusSet": rows})

    provider = mock(handler)
    sent_at = dt.datetime.fromtimestamp(NOW - 100, dt.UTC)
    result = await provider.find(request(sent_at=sent_at))
    assert result.ok and result.value is not None
    assert (result.value.found, result.value.provider_message_id, result.value.state, result.value.error_code) == (
        True, "1:mine", DeliveryState.FAILED, "用户短信未送达")
    assert seen[0] == {"BeginTime": NOW - 400, "Offset": 0, "Limit": 100, "PhoneNumber": PHONE,
                       "SmsSdkAppId": "1400006666", "EndTime": NOW}
    await provider.find(request(sent_at=None))
    assert seen[1]["BeginTime"] == NOW - 7 * 86400                      # at most 7 days back
    missing = await provider.find(request(message_id="msg_x"))
    assert missing.ok and missing.value is not None and not missing.value.found
    assert not TencentSmsProvider.lookup_is_authoritative and TencentSmsProvider.lookup_settle_seconds == 60.0
    with pytest.raises(OperationNotSupported):
        await mock(handler, pull_session_context=False).find(request())
    refused = await mock(lambda _: answer({"Error": {"Code": "AuthFailure.SecretIdNotFound", "Message": "m"}})).find(
        request())
    assert (refused.ok, refused.code) == (False, StandardCode.AUTH_FAILED)


def test_config_rules() -> None:
    config = TencentSmsConfig(**CONFIG)
    assert (config.base_url, config.region) == (LIVE_BASE_URL, "ap-guangzhou")
    assert "SECRETEXAMPLE" not in repr(config) and "SECRETEXAMPLE" not in str(config.model_dump())
    with pytest.raises(ValidationError):
        TencentSmsConfig(**(CONFIG | {"surprise": 1}))
    with pytest.raises(ValidationError):
        TencentSmsConfig(**(CONFIG | {"sms_sdk_app_id": "app"}))
    with pytest.raises(ValidationError):
        TencentSmsConfig(**(CONFIG | {"sign_name": "1"}))
    assert TencentSmsConfig(**(CONFIG | {"sign_name": "【腾讯云】"})).sign_name == "腾讯云"
    assert PHONE not in repr(request()) and "123456" not in repr(request())
    assert TencentSmsConfig(**(CONFIG | {"secret_id": "AKID" + "a" * 32, "secret_key": "k" * 32})).problems() == []
    assert len(TencentSmsConfig(**(CONFIG | {"secret_id": "x", "sign_name": "", "base_url": "http://x"})).problems()) == 4


# ------------------------------------------------------------------ against the simulator
@pytest.fixture
async def env(tmp_path: Path) -> AsyncIterator[tuple[Sandbox, httpx.AsyncClient, dict[str, Any]]]:
    async with sandboxed(tmp_path, registry.sms_spec("tencentcloud")) as env:
        yield env


def build(env: tuple[Sandbox, httpx.AsyncClient, dict[str, Any]], **override: Any) -> TencentSmsProvider:
    _, http, config = env
    spec = registry.sms_spec("tencentcloud")
    assert spec is not None
    provider = spec.build(config | override, http)
    assert isinstance(provider, TencentSmsProvider)
    return provider


def sandbox_request(provider: TencentSmsProvider, template: str = "verification_code", **extra: Any) -> SmsRequest:
    mapping = provider.config.template(template)
    assert mapping is not None and mapping.params is not None
    values = {"code": "246810", "minutes": "5", "order": "A1", "amount": "9.90", "promo": "新品上架"}
    base: dict[str, Any] = {"message_id": "msg_sandbox", "phone": PHONE, "sign_name": provider.config.sign_name,
                            "template_id": mapping.id, "params": tuple((n, values[n]) for n in mapping.params),
                            "sent_at": dt.datetime.now(dt.UTC)}
    return SmsRequest(**(base | extra))


async def inbox(http: httpx.AsyncClient, phone: str = PHONE) -> list[dict[str, Any]]:
    return list((await http.get("/_sandbox/messages", params={"phone": phone})).json()["messages"])


async def test_sandbox_config_and_send_then_find(env: Any) -> None:
    sandbox, http, config = env
    creds = sandbox.credentials("tencentcloud")
    assert config["templates"]["verification_code"] == {"id": creds["templates"]["verification_code"],
                                                         "params": ["code", "minutes"]}
    assert config["base_url"] == "http://sandbox/tencentcloud"
    provider = build(env)
    req = sandbox_request(provider)
    result = await provider.send(req)
    assert result.ok and result.value is not None and result.value.segments == 1
    [message] = await inbox(http)
    assert message["text"] == f"【{creds['sign_name']}】您的验证码为246810，5分钟内有效，请勿泄露于他人。"
    assert (message["id"], message["out_id"]) == (result.value.provider_message_id, "msg_sandbox")
    await asyncio.wait_for(sandbox.wait_idle(), 10)                      # the receipt is in
    found = await provider.find(req)
    assert found.ok and found.value is not None
    assert (found.value.found, found.value.provider_message_id, found.value.state) == (
        True, result.value.provider_message_id, DeliveryState.DELIVERED)
    other = await provider.find(sandbox_request(provider, message_id="msg_other"))
    assert other.value is not None and not other.value.found


async def test_find_misses_a_message_without_receipt(env: Any) -> None:
    sandbox, http, _ = env
    sandbox.time_scale = 1000.0                                           # the receipt will not come in this test
    provider = build(env)
    req = sandbox_request(provider)
    assert (await provider.send(req)).ok
    found = await provider.find(req)
    assert found.value is not None and not found.value.found              # accepted, yet "not found"
    assert len(await inbox(http)) == 1


async def test_declines_against_the_simulator(env: Any) -> None:
    _, http, config = env
    provider = build(env)
    cases = [
        (sandbox_request(provider, sign_name="别家签名"), StandardCode.TEMPLATE_REJECTED,
         "FailedOperation.SignatureIncorrectOrUnapproved"),
        (sandbox_request(provider, template_id="1"), StandardCode.TEMPLATE_REJECTED,
         "FailedOperation.TemplateIncorrectOrUnapproved"),
        (sandbox_request(provider, params=(("code", "246810"),)), StandardCode.TEMPLATE_REJECTED,
         "FailedOperation.TemplateParamSetNotMatchApprovedTemplate"),
        (sandbox_request(provider, phone="+861234"), StandardCode.INVALID_PHONE,
         "InvalidParameterValue.IncorrectPhoneNumber"),
        (sandbox_request(provider, "marketing_promo", params=(("promo", "www.example.com"),)),
         StandardCode.CONTENT_REJECTED, "InvalidParameterValue.ProhibitedUseUrlInTemplateParameter"),
    ]
    for req, standard, code in cases:
        result = await provider.send(req)
        assert (result.ok, result.code, result.provider_code) == (False, standard, code), code
    assert (await provider.send(sandbox_request(provider))).ok
    limited = await provider.send(sandbox_request(provider))
    assert (limited.code, limited.provider_code) == (StandardCode.RATE_LIMITED,
                                                     "LimitExceeded.PhoneNumberThirtySecondLimit")
    bad_key = await build(env, secret_key="not-the-key").send(sandbox_request(provider, phone="+8613900139000"))
    assert (bad_key.code, bad_key.provider_code) == (StandardCode.AUTH_FAILED, "AuthFailure.SignatureFailure")
    bad_app = await build(env, sms_sdk_app_id="1400000000").send(sandbox_request(provider, phone="+8613900139000"))
    assert (bad_app.code, bad_app.provider_code) == (StandardCode.AUTH_FAILED,
                                                     "UnauthorizedOperation.SmsSdkAppIdVerifyFail")
    bad_region = await build(env, region="ap-shanghai").send(sandbox_request(provider, phone="+8613900139000"))
    assert (bad_region.code, bad_region.provider_code) == (StandardCode.INVALID_REQUEST, "UnsupportedRegion")
    assert len(await inbox(http)) == 1 and await inbox(http, "+8613900139000") == []


async def test_timeout_and_charged_then_timeout(env: Any) -> None:
    sandbox, http, _ = env
    provider = build(env)
    await http.post("/tencentcloud/_sandbox/faults", json={"next_call": "timeout", "seconds": 0})
    with pytest.raises(OutcomeUnknown):
        await provider.send(sandbox_request(provider))
    assert await inbox(http) == []
    await http.post("/tencentcloud/_sandbox/faults", json={"next_call": "charged_then_timeout", "seconds": 0})
    req = sandbox_request(provider, message_id="msg_charged")
    with pytest.raises(OutcomeUnknown):
        await provider.send(req)
    [message] = await inbox(http)                                          # it went out all the same
    await asyncio.wait_for(sandbox.wait_idle(), 10)
    found = await provider.find(req)
    assert found.value is not None and found.value.found and found.value.provider_message_id == message["id"]
    await http.post("/tencentcloud/_sandbox/faults", json={"next_call": "http_500", "path": "PullSms"})
    with pytest.raises(ProviderUnavailable):
        await provider.find(req)

"""TencentFaceIdProvider: the signed requests it builds (over httpx.MockTransport), how it reads IdCardVerification
results, DetectAuth tokens and GetDetectInfoEnhanced texts into verdicts, codes and unknown outcomes; then name + ID
checks and whole face sessions against the simulator through the registry."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import ValidationError

from minigate.domain.results import StandardCode
from minigate.errors import OperationNotSupported, ProviderTimeout, ProviderUnavailable
from minigate.providers import registry
from minigate.providers.bases.identity import FaceImage, Outcome, PersonId
from minigate.providers.tencentcloud import signing
from minigate.providers.tencentcloud.codes import DEFAULT_ERROR_MAPPER, FACEID_ERROR_MAPPER, SMS_CODES
from minigate.providers.tencentcloud.faceid import (
    LIVE_BASE_URL,
    TencentFaceIdConfig,
    TencentFaceIdProvider,
)
from minigate.simulators import Sandbox
from tests.providers import sandboxed

NOW = 1700000000
NAME, ID = "张三", "11010519491231002X"
PERSON = PersonId(NAME, "11010519491231002x")
CONFIG: dict[str, Any] = {"secret_id": "AKIDEXAMPLE", "secret_key": "SECRETEXAMPLE", "rule_id": "1"}
TOKEN = "CE661F1A-0F1E-45BD-BE13-34C05CEA7681"


def answer(body: dict[str, Any], status: int = 200) -> httpx.Response:
    return httpx.Response(status, json={"Response": body | {"RequestId": "req-1"}})


def mock(handler: Callable[[httpx.Request], httpx.Response], **config: Any) -> TencentFaceIdProvider:
    client = httpx.AsyncClient(transport=httpx.MockTransport(handler))
    return TencentFaceIdProvider(TencentFaceIdConfig(**(CONFIG | config)), client, clock=lambda: NOW)


def recording(body: dict[str, Any]) -> tuple[list[httpx.Request], TencentFaceIdProvider]:
    seen: list[httpx.Request] = []

    def handler(req: httpx.Request) -> httpx.Response:
        seen.append(req)
        return answer(body)

    return seen, mock(handler)


def text(**fields: Any) -> dict[str, Any]:
    """A GetDetectInfoEnhanced Text as the SDK example shows it (pass), with ``fields`` replaced."""
    return {"ErrCode": 0, "ErrMsg": "成功", "IdCard": ID, "Name": NAME, "LiveStatus": 0, "LiveMsg": "成功",
            "Comparestatus": 0, "Comparemsg": "成功", "Sim": "76.52", "Extra": "ver_1", "LivenessMode": 3} | fields


# ------------------------------------------------------------------ the requests on the wire
async def test_check_id_builds_the_signed_request() -> None:
    seen, provider = recording({"Result": "0", "Description": "姓名和身份证号一致"})
    result = await provider.check_id(PERSON)
    assert result.ok and result.value is not None and result.request_id == "req-1"
    assert (result.value.outcome, result.value.reason, result.value.provider_code, result.value.provider_ref) == (
        Outcome.PASSED, "match", "0", "req-1")
    [req] = seen
    assert (req.method, str(req.url)) == ("POST", LIVE_BASE_URL + "/")
    h = req.headers
    assert (h["host"], h["x-tc-action"], h["x-tc-version"], h["x-tc-timestamp"]) == (
        "faceid.tencentcloudapi.com", "IdCardVerification", "2018-03-01", str(NOW))
    assert "x-tc-region" not in h and "x-tc-token" not in h
    assert json.loads(req.content) == {"IdCard": ID, "Name": NAME}          # upper-case X
    assert NAME.encode() in req.content
    auth = signing.parse_authorization(h["authorization"])
    assert auth is not None and (auth.service, auth.date, auth.secret_id) == ("faceid", "2023-11-14", "AKIDEXAMPLE")
    expected = signing.tc3_sign(secret_id="AKIDEXAMPLE", secret_key="SECRETEXAMPLE", service="faceid",
                                timestamp=NOW, headers=dict(h), payload=req.content,
                                signed_headers=auth.signed_headers)
    assert h["authorization"] == expected.authorization


async def test_start_face_builds_detect_auth_and_a_session() -> None:
    seen, provider = recording({"Url": "https://h5.example/verify", "BizToken": TOKEN})
    result = await provider.start_face(PERSON, reference="ver_1")
    assert result.ok and result.value is not None
    assert (result.value.provider_ref, result.value.client_params, result.value.expires_in) == (
        TOKEN, {"token": TOKEN}, 7200)
    assert seen[0].headers["x-tc-action"] == "DetectAuth"
    assert json.loads(seen[0].content) == {"RuleId": "1", "IdCard": ID, "Name": NAME, "Extra": "ver_1"}
    h5 = await provider.start_face(PERSON, reference="ver_2", redirect_url="https://shop.example/back")
    assert h5.value is not None and h5.value.client_params == {"token": TOKEN, "url": "https://h5.example/verify"}
    assert json.loads(seen[1].content)["RedirectUrl"] == "https://shop.example/back"
    with pytest.raises(ProviderUnavailable):
        await mock(lambda _: answer({"Url": "u"})).start_face(PERSON, reference="ver_3")


async def test_face_result_asks_for_text_only() -> None:
    seen, provider = recording({"Text": text(), "IdCardData": None, "BestFrame": None, "VideoData": None})
    result = await provider.face_result(TOKEN)
    assert result.ok and result.value is not None
    assert seen[0].headers["x-tc-action"] == "GetDetectInfoEnhanced"
    assert json.loads(seen[0].content) == {"BizToken": TOKEN, "RuleId": "1", "InfoType": "1"}   # never images/video
    verdict = result.value
    assert (verdict.outcome, verdict.reason, verdict.score, verdict.liveness, verdict.provider_ref,
            verdict.provider_code) == (Outcome.PASSED, "match", 76.52, True, TOKEN, "0")
    assert verdict.details == {"sim_threshold": 70.0, "live_status": 0, "compare_status": 0, "liveness_mode": 3,
                               "message": "成功"}
    assert NAME not in repr(verdict) and ID not in repr(verdict)


async def test_optional_headers() -> None:
    seen: list[httpx.Request] = []

    def handler(req: httpx.Request) -> httpx.Response:
        seen.append(req)
        return answer({"Result": "0", "Description": ""})

    provider = mock(handler, token="tmp-token", language="en-US", region="ap-guangzhou",
                    base_url="http://127.0.0.1:9/tc")
    assert (await provider.check_id(PERSON)).ok
    h = seen[0].headers
    assert (h["x-tc-token"], h["x-tc-language"], h["x-tc-region"], h["host"]) == (
        "tmp-token", "en-US", "ap-guangzhou", "127.0.0.1:9")


# ------------------------------------------------------------------ reading answers
@pytest.mark.parametrize(("result", "outcome", "reason"), [
    ("0", Outcome.PASSED, "match"), ("-1", Outcome.FAILED, "mismatch"), ("-2", Outcome.FAILED, "invalid_id"),
    ("-3", Outcome.FAILED, "invalid_name"), ("-4", Outcome.FAILED, "authority_unavailable"),
    ("-5", Outcome.FAILED, "no_record"), ("-6", Outcome.FAILED, "authority_unavailable"),
])
async def test_id_results_are_verdicts(result: str, outcome: Outcome, reason: str) -> None:
    verdict = (await mock(lambda _: answer({"Result": result, "Description": "d"})).check_id(PERSON)).value
    assert verdict is not None and (verdict.outcome, verdict.reason, verdict.provider_code) == (
        outcome, reason, result)


async def test_id_daily_limit_is_a_decline_and_unknown_results_are_unavailable() -> None:
    limited = await mock(lambda _: answer({"Result": "-7", "Description": "认证次数超过当日限制"})).check_id(PERSON)
    assert (limited.ok, limited.code, limited.provider_code, limited.message) == (
        False, StandardCode.RATE_LIMITED, "-7", "认证次数超过当日限制")
    bodies: list[dict[str, Any]] = [{"Result": "-9"}, {"Result": 0}, {}]
    for body in bodies:
        with pytest.raises(ProviderUnavailable) as info:
            await mock(lambda _, b=body: answer(b)).check_id(PERSON)    # type: ignore[misc]
        assert NAME not in str(info.value) and ID not in str(info.value)


@pytest.mark.parametrize(("fields", "outcome", "reason", "liveness"), [
    ({"ErrCode": None, "LiveStatus": None, "Comparestatus": None, "Sim": None}, Outcome.PENDING, "pending", None),
    ({"ErrCode": 17, "ErrMsg": "本次流程未完成", "LiveStatus": None, "Comparestatus": None, "Sim": None},
     Outcome.PENDING, "pending", None),
    ({"ErrCode": 15}, Outcome.EXPIRED, "expired", True),
    ({"ErrCode": 1002, "LiveStatus": 1002, "Comparestatus": None, "Sim": None}, Outcome.FAILED, "liveness_failed",
     False),
    ({"ErrCode": 2006, "Comparestatus": 2006, "Sim": None}, Outcome.FAILED, "mismatch", True),
    ({"ErrCode": 2015, "Comparestatus": 2015, "Sim": "12.00"}, Outcome.FAILED, "mismatch", True),
    ({"ErrCode": 2016, "Comparestatus": 2016, "Sim": "45.10"}, Outcome.FAILED, "low_similarity", True),
    ({"ErrCode": 2005, "Comparestatus": 2005}, Outcome.FAILED, "no_record", True),
    ({"ErrCode": 2010, "Comparestatus": 2010}, Outcome.FAILED, "no_face", True),
    ({"ErrCode": 2017, "Comparestatus": 2017}, Outcome.FAILED, "authority_unavailable", True),
    ({"ErrCode": 2003}, Outcome.FAILED, "invalid_id", True),
    ({"ErrCode": 9999, "LiveStatus": 7}, Outcome.FAILED, "liveness_failed", False),       # unknown codes
    ({"ErrCode": 9999, "Comparestatus": 9, "Sim": "50"}, Outcome.FAILED, "low_similarity", True),
    ({"ErrCode": "9999", "Comparestatus": 9, "Sim": None}, Outcome.FAILED, "mismatch", True),
    ({"ErrCode": 9999}, Outcome.FAILED, "mismatch", True),
    ({"Sim": 88}, Outcome.PASSED, "match", True),
])
def test_texts_become_verdicts(fields: dict[str, Any], outcome: Outcome, reason: str, liveness: bool | None) -> None:
    provider = mock(lambda _: answer({}))
    verdict = provider.read_text(text(**fields), TOKEN)
    assert (verdict.outcome, verdict.reason, verdict.liveness) == (outcome, reason, liveness)


def test_threshold_and_code_table_are_configurable() -> None:
    strict = mock(lambda _: answer({}), sim_threshold=80)
    verdict = strict.read_text(text(), TOKEN)
    assert (verdict.outcome, verdict.reason, verdict.score, verdict.liveness) == (
        Outcome.FAILED, "low_similarity", 76.52, True)
    assert strict.read_text(text(Sim="80.00"), TOKEN).outcome is Outcome.PASSED
    custom = mock(lambda _: answer({}), err_code_reasons={2006: "no_record", 4242: "pending", 4343: "match"})
    assert custom.read_text(text(ErrCode=2006), TOKEN).reason == "no_record"
    assert custom.read_text(text(ErrCode=4242), TOKEN).outcome is Outcome.PENDING
    trusted_not = custom.read_text(text(ErrCode=4343), TOKEN)                   # a non-zero code never passes
    assert (trusted_not.outcome, trusted_not.reason) == (Outcome.FAILED, "mismatch")
    assert custom.read_text(text(ErrCode=1002, LiveStatus=1002), TOKEN).reason == "liveness_failed"   # defaults
    with pytest.raises(ValidationError):
        TencentFaceIdConfig(**(CONFIG | {"err_code_reasons": {1: "great"}}))


async def test_expired_token_is_a_verdict_and_other_refusals_declines() -> None:
    expired = await mock(lambda _: answer({"Error": {"Code": "InvalidParameterValue.BizTokenExpired",
                                                     "Message": "BizToken过期。"}})).face_result(TOKEN)
    assert expired.ok and expired.value is not None
    assert (expired.value.outcome, expired.value.reason, expired.value.provider_code) == (
        Outcome.EXPIRED, "expired", "InvalidParameterValue.BizTokenExpired")
    illegal = await mock(lambda _: answer({"Error": {"Code": "InvalidParameterValue.BizTokenIllegal",
                                                     "Message": "m"}})).face_result(TOKEN)
    assert (illegal.ok, illegal.code) == (False, StandardCode.NOT_FOUND)
    bodies: list[dict[str, Any]] = [{"Text": "no"}, {"Text": []}]
    for body in bodies:
        with pytest.raises(ProviderUnavailable):
            await mock(lambda _, b=body: answer(b)).face_result(TOKEN)   # type: ignore[misc]
    pending = await mock(lambda _: answer({"Text": None})).face_result(TOKEN)
    assert pending.value is not None and pending.value.outcome is Outcome.PENDING


@pytest.mark.parametrize(("code", "standard"), [
    ("AuthFailure.SignatureFailure", StandardCode.AUTH_FAILED),
    ("AuthFailure.SecretIdNotFound", StandardCode.AUTH_FAILED),
    ("InvalidParameterValue.RuleIdNotExist", StandardCode.AUTH_FAILED),
    ("InvalidParameterValue.RuleIdDisabled", StandardCode.AUTH_FAILED),
    ("UnauthorizedOperation.Nonactivated", StandardCode.AUTH_FAILED),
    ("UnauthorizedOperation.SomethingNew", StandardCode.AUTH_FAILED),
    ("UnauthorizedOperation.Arrears", StandardCode.INSUFFICIENT_BALANCE),
    ("RequestLimitExceeded", StandardCode.RATE_LIMITED),
    ("FailedOperation.RequestLimitExceeded", StandardCode.RATE_LIMITED),
    ("FailedOperation.IdentityAuthLimitExceeded", StandardCode.RATE_LIMITED),
    ("FailedOperation.IdFormatError", StandardCode.INVALID_REQUEST),
    ("FailedOperation.NameFormatError", StandardCode.INVALID_REQUEST),
    ("FailedOperation.ImageDecodeFailed", StandardCode.INVALID_REQUEST),
    ("MissingParameter", StandardCode.INVALID_REQUEST),
    ("InvalidParameterValue", StandardCode.INVALID_REQUEST),
    ("UnsupportedOperation", StandardCode.INVALID_REQUEST),
    ("FailedOperation.SomethingNew", StandardCode.DECLINED),
])
async def test_refusals_of_the_call_are_declines(code: str, standard: StandardCode) -> None:
    provider = mock(lambda _: answer({"Error": {"Code": code, "Message": "m"}}))
    for call in (provider.check_id(PERSON), provider.start_face(PERSON, reference="r"), provider.face_result(TOKEN)):
        result = await call
        assert (result.ok, result.code, result.provider_code, result.message, result.request_id) == (
            False, standard, code, "m", "req-1")


@pytest.mark.parametrize("response", [
    httpx.Response(500, text="oops"), httpx.Response(429, text="slow down"), httpx.Response(504, text=""),
    httpx.Response(200, text="<html>"), httpx.Response(200, json={"NoResponse": 1}),
    answer({"Error": {"Code": "InternalError", "Message": "m"}}),
    answer({"Error": {"Code": "InternalError.UnKnown", "Message": "m"}}),
    answer({"Error": {"Code": "FailedOperation.UnKnown", "Message": "m"}}),
    answer({"Error": {"Code": "FailedOperation.CompareSystemError", "Message": "m"}}),
])
async def test_answers_that_leave_the_outcome_unknown(response: httpx.Response) -> None:
    provider = mock(lambda _: response)
    for call in (provider.check_id(PERSON), provider.start_face(PERSON, reference="r"), provider.face_result(TOKEN)):
        with pytest.raises(ProviderUnavailable) as info:
            await call
        assert info.value.provider == "tencent-faceid"
        assert NAME not in str(info.value) and ID not in str(info.value) and TOKEN not in str(info.value)


async def test_transport_errors_and_operations_not_offered() -> None:
    def timeout(req: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("slow", request=req)

    with pytest.raises(ProviderTimeout):
        await mock(timeout).check_id(PERSON)
    provider = mock(lambda _: answer({}))
    assert (provider.name, provider.kinds, provider.face_mode) == (
        "tencent-faceid", frozenset({"id_card", "face"}), "session")
    with pytest.raises(OperationNotSupported):
        await provider.verify_face(PERSON, FaceImage("aGk="))
    with pytest.raises(OperationNotSupported):
        await provider.match_faces(FaceImage("aGk="), FaceImage("aGk="))


def test_code_tables() -> None:
    assert FACEID_ERROR_MAPPER.is_unknown_outcome("FailedOperation.DbError")
    assert FACEID_ERROR_MAPPER.classify("UnauthorizedOperation.X") == StandardCode.AUTH_FAILED
    assert DEFAULT_ERROR_MAPPER.classify("UnauthorizedOperation.X") == StandardCode.DECLINED    # SMS unchanged
    assert "FailedOperation.IdFormatError" not in SMS_CODES


def test_config_rules() -> None:
    config = TencentFaceIdConfig(**CONFIG)
    assert (config.base_url, config.region, config.sim_threshold, config.session_ttl_seconds) == (
        LIVE_BASE_URL, None, 70.0, 7200)
    assert "SECRETEXAMPLE" not in repr(config) and "SECRETEXAMPLE" not in str(config.model_dump())
    for bad in ({"surprise": 1}, {"rule_id": "rule 1"}, {"rule_id": ""}, {"sim_threshold": 101}):
        with pytest.raises(ValidationError):
            TencentFaceIdConfig(**(CONFIG | bad))
    assert TencentFaceIdConfig(**(CONFIG | {"secret_id": "AKID" + "a" * 32, "secret_key": "k" * 32})).problems() == []
    assert len(TencentFaceIdConfig(**(CONFIG | {"secret_id": "x", "base_url": "http://x", "sim_threshold": 60})).problems()) == 4
    assert NAME not in repr(PERSON) and ID not in repr(PERSON)


# ------------------------------------------------------------------ against the simulator
@pytest.fixture
async def env(tmp_path: Path) -> AsyncIterator[tuple[Sandbox, httpx.AsyncClient, dict[str, Any]]]:
    async with sandboxed(tmp_path, registry.identity_spec("tencent-faceid")) as env:
        yield env


def build(env: tuple[Sandbox, httpx.AsyncClient, dict[str, Any]], **override: Any) -> TencentFaceIdProvider:
    _, http, config = env
    spec = registry.identity_spec("tencent-faceid")
    assert spec is not None
    provider = spec.build(config | override, http)
    assert isinstance(provider, TencentFaceIdProvider)
    return provider


async def test_sandbox_config_and_id_checks(env: Any) -> None:
    sandbox, http, config = env
    creds = sandbox.credentials("tencentcloud")
    assert config == {"secret_id": creds["secret_id"], "secret_key": creds["secret_key"],
                      "rule_id": creds["faceid_rule_id"], "base_url": "http://sandbox/tencentcloud"}
    await http.post("/tencentcloud/_sandbox/persons", json={"name": NAME, "id_number": ID})
    provider = build(env)
    reasons = []
    for person in (PERSON, PersonId("李四", ID), PersonId(NAME, "440524188001010014")):
        result = await provider.check_id(person)
        assert result.ok and result.value is not None
        reasons.append(result.value.reason)
    assert reasons == ["match", "mismatch", "no_record"]
    bad_key = await build(env, secret_key="not-the-key").check_id(PERSON)
    assert (bad_key.code, bad_key.provider_code) == (StandardCode.AUTH_FAILED, "AuthFailure.SignatureFailure")


async def test_face_session_end_to_end(env: Any) -> None:
    sandbox, http, config = env
    await http.post("/tencentcloud/_sandbox/persons", json={"name": NAME, "id_number": ID})
    # the sandbox's clock will jump ahead: the provider signs with the same clock
    provider = TencentFaceIdProvider(TencentFaceIdConfig(**config), http, clock=sandbox.clock.now)

    async def session(outcome: str | None = None) -> tuple[str, Any]:
        started = await provider.start_face(PERSON, reference="ver_sandbox")
        assert started.ok and started.value is not None
        token = started.value.client_params["token"]
        assert started.value.provider_ref == token and started.value.expires_in == 7200
        pending = (await provider.face_result(token)).value
        assert pending is not None and (pending.outcome, pending.reason, pending.provider_code) == (
            Outcome.PENDING, "pending", "17")
        body = {"biz_token": token} | ({"outcome": outcome} if outcome else {})
        assert (await http.post("/tencentcloud/_sandbox/faceid/complete", json=body)).status_code == 200
        return token, (await provider.face_result(token)).value

    _, passed = await session()
    assert (passed.outcome, passed.reason, passed.liveness) == (Outcome.PASSED, "match", True)
    assert passed.score >= 90
    _, spoof = await session("liveness_failed")
    assert (spoof.outcome, spoof.reason, spoof.liveness, spoof.provider_code) == (
        Outcome.FAILED, "liveness_failed", False, "1002")
    _, other = await session("low_similarity")
    assert (other.reason, other.liveness) == ("low_similarity", True) and other.score <= 40
    stranger = await provider.start_face(PersonId("李四", ID), reference="ver_2")
    assert stranger.value is not None
    await http.post("/tencentcloud/_sandbox/faceid/complete", json={"biz_token": stranger.value.provider_ref})
    mismatch = (await provider.face_result(stranger.value.provider_ref)).value
    assert mismatch is not None and (mismatch.reason, mismatch.provider_code) == ("mismatch", "2006")
    late = await provider.start_face(PERSON, reference="ver_3")
    assert late.value is not None
    sandbox.clock.advance(7201)
    expired = (await provider.face_result(late.value.provider_ref)).value
    assert expired is not None and expired.outcome is Outcome.EXPIRED
    unknown = await provider.face_result("NOT-A-TOKEN")
    assert (unknown.ok, unknown.code) == (False, StandardCode.NOT_FOUND)


async def test_refusals_and_faults_against_the_simulator(env: Any) -> None:
    _, http, _ = env
    provider = build(env)
    wrong_rule = await build(env, rule_id="999").start_face(PERSON, reference="r")
    assert (wrong_rule.code, wrong_rule.provider_code) == (StandardCode.AUTH_FAILED,
                                                           "InvalidParameterValue.RuleIdNotExist")
    bad_id = await provider.start_face(PersonId(NAME, "110105194912310021"), reference="r")
    assert (bad_id.code, bad_id.provider_code) == (StandardCode.INVALID_REQUEST, "FailedOperation.IdFormatError")
    await http.post("/tencentcloud/_sandbox/faults", json={"next_call": "http_500", "path": "IdCard"})
    with pytest.raises(ProviderUnavailable):
        await provider.check_id(PERSON)
    await http.post("/tencentcloud/_sandbox/next", json={"outcome": "timeout"})
    with pytest.raises(ProviderUnavailable):
        await provider.check_id(PERSON)
    await http.post("/tencentcloud/_sandbox/faults", json={"next_call": "timeout", "seconds": 0})
    with pytest.raises(ProviderUnavailable):
        await provider.start_face(PERSON, reference="r")
    await http.post("/tencentcloud/_sandbox/next", json={"outcome": "authority_unavailable"})
    verdict = (await provider.check_id(PERSON)).value
    assert verdict is not None and (verdict.outcome, verdict.reason) == (Outcome.FAILED, "authority_unavailable")

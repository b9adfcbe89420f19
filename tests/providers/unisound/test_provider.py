"""UnisoundVoiceprintProvider: the signed request it builds (over httpx.MockTransport), how it reads envelopes and
codes, and enrol/verify against the simulator through the registry and the Sandbox."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import ValidationError

from minigate.domain.results import StandardCode
from minigate.errors import OperationNotSupported, OutcomeUnknown, ProviderUnavailable
from minigate.providers import registry
from minigate.providers.bases.identity import FaceImage, Outcome, PersonId, VoiceSample
from minigate.providers.unisound import signing
from minigate.providers.unisound.codes import DEFAULT_CODES, CodeTable, Meaning
from minigate.providers.unisound.config import LIVE_BASE_URL, UnisoundConfig
from minigate.providers.unisound.provider import NO_SPEECH_REASON, UnisoundVoiceprintProvider
from minigate.simulators import Sandbox
from tests.providers import sandboxed

NOW = 1585047674.022
CONFIG = {"appkey": "appkeyX", "secret": "secretY", "group_id": "shop-1"}
SUBJECT = "0f3c2a9b8e7d6c5b4a392817f6e5d4c3"
VOICE_A = VoiceSample(base64.b64encode(b"voice of A " * 50).decode())
VOICE_B = VoiceSample(base64.b64encode(b"voice of B " * 50).decode())
SILENT = VoiceSample(base64.b64encode(b"SILENCE").decode())


def envelope(code: int = 0, data: Any = None, msg: str = "success", status: int = 200) -> httpx.Response:
    return httpx.Response(status, json={"code": code, "msg": msg, "sid": "sid-1", "data": data})


def op(req: httpx.Request) -> str:
    return req.url.path.rsplit("/", 1)[-1]


def mock(handler: Callable[[httpx.Request], httpx.Response], *, codes: CodeTable | None = None,
         **config: Any) -> tuple[UnisoundVoiceprintProvider, list[httpx.Request]]:
    seen: list[httpx.Request] = []

    def record(req: httpx.Request) -> httpx.Response:
        seen.append(req)
        return handler(req)

    client = httpx.AsyncClient(transport=httpx.MockTransport(record))
    kwargs: dict[str, Any] = {"clock": lambda: NOW, "nonce": lambda: "b5e3df4e"}
    if codes is not None:
        kwargs["codes"] = codes
    return UnisoundVoiceprintProvider(UnisoundConfig(**(CONFIG | config)), client, **kwargs), seen


def scripted(answers: dict[str, list[httpx.Response]]) -> Callable[[httpx.Request], httpx.Response]:
    def handler(req: httpx.Request) -> httpx.Response:
        return answers[op(req)].pop(0)
    return handler


# ------------------------------------------------------------------ the request on the wire
async def test_enrol_builds_signed_requests() -> None:
    provider, seen = mock(scripted({"createGroup": [envelope(data={"groupId": "shop-1"})],
                                    "createFeature": [envelope(data={"featureId": SUBJECT})]}))
    result = await provider.enrol_voice(SUBJECT, VOICE_A)
    assert result.ok and result.value is not None
    assert (result.value.outcome, result.value.reason, result.value.details) == (
        Outcome.PASSED, "enrolled", {"action": "created"})
    assert (result.value.provider_ref, result.value.provider_code, result.request_id) == ("sid-1", "0", "sid-1")
    group, create = seen
    assert (group.method, str(group.url)) == ("POST", LIVE_BASE_URL + "/vpr/v1/createGroup")
    assert group.headers["content-type"] == "application/json; charset=utf-8"
    auth = {"appkey": "appkeyX", "timestamp": 1585047674022, "nonce": "b5e3df4e",
            "sign": "094089B796299058F7FE8FA73AC7D764FF113B3B4AE88ADEA2094150471A352F"}      # the §5 value
    assert json.loads(group.content) == auth | {"groupId": "shop-1", "groupInfo": "minigate voiceprints"}
    assert json.loads(create.content) == auth | {
        "groupId": "shop-1", "featureId": SUBJECT, "featureInfo": "minigate", "audioData": VOICE_A.base64,
        "audioSampleRate": 16000, "audioFormat": "pcm"}
    assert b"secretY" not in group.content + create.content


async def test_each_request_has_a_fresh_nonce_and_its_own_signature() -> None:
    provider = UnisoundVoiceprintProvider(UnisoundConfig(**CONFIG), httpx.AsyncClient(), clock=lambda: NOW)
    first, second = provider.build("confirmFeature", {}), provider.build("confirmFeature", {})
    a, b = json.loads(first.content), json.loads(second.content)
    assert a["nonce"] != b["nonce"] and a["timestamp"] == b["timestamp"] == 1585047674022
    for body in (a, b):
        assert signing.verify(body["sign"], appkey="appkeyX", timestamp=body["timestamp"], secret="secretY",
                              nonce=body["nonce"])
    assert str(first.url) == "https://ai-vpr.hivoice.cn/vpr/v1/confirmFeature"
    other = UnisoundVoiceprintProvider(UnisoundConfig(**CONFIG, base_url="http://sandbox/unisound/"),
                                       httpx.AsyncClient())
    assert str(other.build("createGroup", {}).url) == "http://sandbox/unisound/vpr/v1/createGroup"


async def test_verify_request_and_sample_format() -> None:
    provider, seen = mock(lambda _: envelope(data={"score": 91.5, "featureId": SUBJECT, "featureInfo": "x"}))
    result = await provider.verify_voice(SUBJECT, VoiceSample(VOICE_A.base64, 8000, "MP3"))
    assert result.ok and result.value is not None
    body = json.loads(seen[0].content)
    assert op(seen[0]) == "confirmFeature" and "featureInfo" not in body
    assert (body["groupId"], body["featureId"], body["audioSampleRate"], body["audioFormat"]) == (
        "shop-1", SUBJECT, 8000, "mp3")


# ------------------------------------------------------------------ verdicts
@pytest.mark.parametrize(("score", "outcome", "reason"), [
    (96.0, Outcome.PASSED, "match"), (80, Outcome.PASSED, "match"), (79.99, Outcome.FAILED, "mismatch"),
    (0, Outcome.FAILED, "mismatch"), ("85.5", Outcome.PASSED, "match")])
async def test_score_against_threshold(score: Any, outcome: Outcome, reason: str) -> None:
    provider, _ = mock(lambda _: envelope(data={"score": score}))
    result = await provider.verify_voice(SUBJECT, VOICE_A)
    assert result.ok and result.value is not None
    assert (result.value.outcome, result.value.reason, result.value.score) == (outcome, reason, float(score))
    assert result.value.details == {"raw_score": score if not isinstance(score, str) else float(score),
                                    "pass_threshold": 80.0}


async def test_threshold_and_scale_are_configurable() -> None:
    provider, _ = mock(lambda _: envelope(data={"score": 0.72}), pass_threshold=0.7, score_max=1)
    result = await provider.verify_voice(SUBJECT, VOICE_A)
    assert result.value is not None and (result.value.outcome, result.value.score) == (Outcome.PASSED, 72.0)


@pytest.mark.parametrize(("code", "reason"), [(20004, "not_enrolled"), (20002, "not_enrolled"),
                                              (20007, NO_SPEECH_REASON)])
async def test_verify_failures_that_are_verdicts(code: int, reason: str) -> None:
    provider, _ = mock(lambda _: envelope(code, msg="m"))
    result = await provider.verify_voice(SUBJECT, VOICE_A)
    assert result.ok and result.value is not None
    assert (result.value.outcome, result.value.reason, result.value.provider_code) == (
        Outcome.FAILED, reason, str(code))


@pytest.mark.parametrize(("code", "standard"), [
    (10001, StandardCode.AUTH_FAILED), (10002, StandardCode.AUTH_FAILED), (10003, StandardCode.AUTH_FAILED),
    (10004, StandardCode.AUTH_FAILED), (10005, StandardCode.INVALID_REQUEST), (10006, StandardCode.AUTH_FAILED),
    (10007, StandardCode.RATE_LIMITED), (10008, StandardCode.RATE_LIMITED),
    (10009, StandardCode.INSUFFICIENT_BALANCE), (20005, StandardCode.INVALID_REQUEST),
    (20006, StandardCode.INVALID_REQUEST), (99999, StandardCode.DECLINED), (-1, StandardCode.DECLINED)])
async def test_codes_become_declines(code: int, standard: StandardCode) -> None:
    provider, _ = mock(lambda _: envelope(code, msg="refused"))
    for result in (await provider.verify_voice(SUBJECT, VOICE_A), await provider.enrol_voice(SUBJECT, VOICE_A)):
        assert (result.ok, result.code, result.provider_code, result.message, result.request_id) == (
            False, standard, str(code), "refused", "sid-1")


async def test_every_default_code_has_a_meaning_handled() -> None:
    assert set(DEFAULT_CODES.values()) == set(Meaning) - {Meaning.DECLINED}


async def test_server_error_code_is_an_unknown_outcome() -> None:
    provider, _ = mock(lambda _: envelope(50001, msg="boom"))
    with pytest.raises(ProviderUnavailable) as info:
        await provider.verify_voice(SUBJECT, VOICE_A)
    assert info.value.provider_code == "50001" and info.value.request_id == "sid-1"


@pytest.mark.parametrize("response", [
    httpx.Response(500, text="oops"), httpx.Response(502, json={"code": 0}), httpx.Response(429, text="slow"),
    httpx.Response(200, text="<html>"), httpx.Response(200, json=[1]), httpx.Response(200, json={"msg": "x"}),
    httpx.Response(200, json={"code": "abc"}), httpx.Response(200, json={"code": True}),
    httpx.Response(403, json={"code": 0, "data": {"score": 99}}),
    httpx.Response(200, json={"code": 0, "data": None}), httpx.Response(200, json={"code": 0, "data": {"score": "x"}}),
    httpx.Response(200, json={"code": 0, "data": {"score": True}}),
])
async def test_unreadable_answers_are_unknown_outcomes(response: httpx.Response) -> None:
    provider, _ = mock(lambda _: response)
    with pytest.raises(ProviderUnavailable) as info:
        await provider.verify_voice(SUBJECT, VOICE_A)
    assert SUBJECT not in str(info.value) and "secretY" not in str(info.value)


async def test_error_envelope_on_a_4xx_status_and_code_as_text() -> None:
    provider, _ = mock(lambda _: httpx.Response(401, json={"code": "10002", "msg": "sign"}))
    result = await provider.verify_voice(SUBJECT, VOICE_A)
    assert (result.ok, result.code, result.provider_code, result.request_id) == (
        False, StandardCode.AUTH_FAILED, "10002", None)


async def test_transport_errors_are_unknown_outcomes() -> None:
    def fail(req: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("slow", request=req)

    provider, _ = mock(fail)
    with pytest.raises(OutcomeUnknown):
        await provider.enrol_voice(SUBJECT, VOICE_A)


# ------------------------------------------------------------------ the enrolment flow
async def test_group_is_created_once_per_client_and_exists_is_fine() -> None:
    provider, seen = mock(scripted({"createGroup": [envelope(20001, msg="声纹组已存在")],
                                    "createFeature": [envelope(data={}), envelope(data={})]}))
    assert (await provider.enrol_voice(SUBJECT, VOICE_A)).ok
    assert (await provider.enrol_voice("other", VOICE_A)).ok
    assert [op(r) for r in seen] == ["createGroup", "createFeature", "createFeature"]


async def test_existing_feature_is_updated() -> None:
    provider, seen = mock(scripted({"createGroup": [envelope()], "createFeature": [envelope(20003)],
                                    "updateFeatureById": [envelope(data={"result": True})]}))
    result = await provider.enrol_voice(SUBJECT, VOICE_B)
    assert result.value is not None and (result.value.reason, result.value.details) == (
        "enrolled", {"action": "updated"})
    update = json.loads(seen[-1].content)
    assert (op(seen[-1]), update["featureId"], update["audioData"]) == ("updateFeatureById", SUBJECT, VOICE_B.base64)


async def test_update_answering_result_false_is_a_decline() -> None:
    provider, _ = mock(scripted({"createGroup": [envelope()], "createFeature": [envelope(20003)],
                                 "updateFeatureById": [envelope(data={"result": False})]}))
    result = await provider.enrol_voice(SUBJECT, VOICE_B)
    assert (result.ok, result.code) == (False, StandardCode.DECLINED)


async def test_group_deleted_behind_our_back_is_recreated_once() -> None:
    provider, seen = mock(scripted({"createGroup": [envelope(), envelope()],
                                    "createFeature": [envelope(20002), envelope(data={})]}))
    assert (await provider.enrol_voice(SUBJECT, VOICE_A)).ok
    assert [op(r) for r in seen] == ["createGroup", "createFeature", "createGroup", "createFeature"]


async def test_group_creation_refused_is_a_decline() -> None:
    provider, seen = mock(scripted({"createGroup": [envelope(10006, msg="not enabled")]}))
    result = await provider.enrol_voice(SUBJECT, VOICE_A)
    assert (result.ok, result.code, result.provider_code) == (False, StandardCode.AUTH_FAILED, "10006")
    assert len(seen) == 1 and not provider.group_ready


async def test_enrol_no_speech_is_a_failed_verdict() -> None:
    provider, _ = mock(scripted({"createGroup": [envelope()], "createFeature": [envelope(20007)]}))
    result = await provider.enrol_voice(SUBJECT, SILENT)
    assert result.ok and result.value is not None
    assert (result.value.outcome, result.value.reason) == (Outcome.FAILED, NO_SPEECH_REASON)


# ------------------------------------------------------------------ the replaceable code table
async def test_unknown_codes_read_the_message_when_allowed() -> None:
    answers = {"createGroup": [envelope(777, msg="group already exists")], "createFeature": [envelope(778, msg="特征已存在")],
               "updateFeatureById": [envelope(data={"result": True})]}
    provider, _ = mock(scripted(answers))
    result = await provider.enrol_voice(SUBJECT, VOICE_A)
    assert result.value is not None and result.value.details == {"action": "updated"}
    provider, _ = mock(lambda _: envelope(779, msg="featureId does not exist"))
    verdict = (await provider.verify_voice(SUBJECT, VOICE_A)).value
    assert verdict is not None and verdict.reason == "not_enrolled"
    provider, _ = mock(lambda _: envelope(777, msg="group already exists"), match_messages=False)
    result = await provider.enrol_voice(SUBJECT, VOICE_A)
    assert (result.ok, result.code, result.provider_code) == (False, StandardCode.DECLINED, "777")


async def test_codes_from_config_and_from_code() -> None:
    provider, _ = mock(lambda _: envelope(4001, msg="x"), error_codes={"4001": "feature_not_found"})
    verdict = (await provider.verify_voice(SUBJECT, VOICE_A)).value
    assert verdict is not None and verdict.reason == "not_enrolled"
    provider, _ = mock(lambda _: envelope(10001), codes=CodeTable({10001: Meaning.QUOTA}))
    assert (await provider.verify_voice(SUBJECT, VOICE_A)).code == StandardCode.RATE_LIMITED
    with pytest.raises(ValidationError):
        UnisoundConfig(**CONFIG, error_codes={"1": "no_such_meaning"})


# ------------------------------------------------------------------ local refusals, unsupported operations
@pytest.mark.parametrize(("subject", "sample"), [
    ("", VOICE_A), ("has space", VOICE_A), ("x" * 65, VOICE_A), ("张三", VOICE_A), (SUBJECT, VoiceSample("")),
    (SUBJECT, VoiceSample("A" * (4 * 1024 * 1024 + 1))), (SUBJECT, VoiceSample(VOICE_A.base64, 44100)),
    (SUBJECT, VoiceSample(VOICE_A.base64, 16000, "wav"))])
async def test_local_refusals_send_nothing(subject: str, sample: VoiceSample) -> None:
    provider, seen = mock(lambda _: envelope())
    for result in (await provider.enrol_voice(subject, sample), await provider.verify_voice(subject, sample)):
        assert (result.ok, result.code, result.provider_code) == (False, StandardCode.INVALID_REQUEST, None)
        assert result.message is not None
        assert not subject or subject not in result.message
    assert seen == []


async def test_sample_without_rate_or_format_takes_the_configured_defaults() -> None:
    provider, seen = mock(lambda _: envelope(data={"score": 90}), audio_sample_rate=8000, audio_format="opus")
    assert (await provider.verify_voice(SUBJECT, VoiceSample(VOICE_A.base64, 0, ""))).ok
    body = json.loads(seen[0].content)
    assert (body["audioSampleRate"], body["audioFormat"]) == (8000, "opus")


async def test_only_voiceprints() -> None:
    provider, _ = mock(lambda _: envelope())
    assert provider.kinds == frozenset({"voiceprint"}) and provider.name == "unisound"
    person = PersonId("张三", "11010519491231002X")
    with pytest.raises(OperationNotSupported):
        await provider.check_id(person)
    with pytest.raises(OperationNotSupported):
        await provider.verify_face(person, FaceImage("aGk="))
    with pytest.raises(OperationNotSupported):
        await provider.start_face(person, reference="r")


def test_config() -> None:
    config = UnisoundConfig(**CONFIG)
    assert "secretY" not in repr(config) and "secretY" not in str(config.model_dump())
    assert (config.base_url, config.pass_threshold, config.audio_sample_rate, config.audio_format) == (
        LIVE_BASE_URL, 80.0, 16000, "pcm")
    assert config.problems() == []
    assert UnisoundConfig(**CONFIG, base_url="http://x", pass_threshold=2, score_max=1).problems() == [
        "base_url must be https:// in live mode", "pass_threshold is above score_max: nothing could pass"]
    for bad in ({"colour": "red"}, {"group_id": "a b"}, {"audio_format": "wav"}, {"audio_sample_rate": 44100},
                {"score_max": 0}):
        with pytest.raises(ValidationError):
            UnisoundConfig(**(CONFIG | bad))


# ------------------------------------------------------------------ against the simulator
@pytest.fixture
async def env(tmp_path: Path) -> AsyncIterator[tuple[Sandbox, httpx.AsyncClient, dict[str, Any]]]:
    async with sandboxed(tmp_path, registry.identity_spec("unisound")) as env:
        yield env


def build(http: httpx.AsyncClient, config: dict[str, Any]) -> UnisoundVoiceprintProvider:
    spec = registry.identity_spec("unisound")
    assert spec is not None
    provider = spec.build(config, http)
    assert isinstance(provider, UnisoundVoiceprintProvider)
    return provider


async def test_sandbox_enrol_and_verify(env: Any) -> None:
    sandbox, http, config = env
    assert config["base_url"] == "http://sandbox/unisound" and set(config) >= {"appkey", "secret", "group_id"}
    provider = build(http, config)
    enrolled = (await provider.enrol_voice(SUBJECT, VOICE_A)).value
    assert enrolled is not None and (enrolled.outcome, enrolled.details) == (Outcome.PASSED, {"action": "created"})
    match = (await provider.verify_voice(SUBJECT, VOICE_A)).value
    assert match is not None and (match.outcome, match.reason, match.score) == (Outcome.PASSED, "match", 96.0)
    assert match.provider_ref and len(match.provider_ref) == 32
    other = (await provider.verify_voice(SUBJECT, VOICE_B)).value
    assert other is not None and (other.outcome, other.reason) == (Outcome.FAILED, "mismatch")
    assert other.score is not None and other.score <= 40
    unknown = (await provider.verify_voice("nobody", VOICE_A)).value
    assert unknown is not None and (unknown.outcome, unknown.reason) == (Outcome.FAILED, "not_enrolled")
    silent = (await provider.verify_voice(SUBJECT, SILENT)).value
    assert silent is not None and (silent.outcome, silent.reason) == (Outcome.FAILED, NO_SPEECH_REASON)
    # re-enrolment replaces the voice, also from a fresh client (the group exists already)
    again = (await build(http, config).enrol_voice(SUBJECT, VOICE_B)).value
    assert again is not None and again.details == {"action": "updated"}
    assert (await provider.verify_voice(SUBJECT, VOICE_B)).value.reason == "match"  # type: ignore[union-attr]
    sim = sandbox.simulator("unisound")
    assert list(sim.groups) == ["minigate-sandbox"]
    assert list(sim.groups["minigate-sandbox"].features) == [SUBJECT]


async def test_sandbox_verify_before_any_group_is_not_enrolled(env: Any) -> None:
    _, http, config = env
    verdict = (await build(http, config).verify_voice(SUBJECT, VOICE_A)).value
    assert verdict is not None and (verdict.reason, verdict.provider_code) == ("not_enrolled", "20002")


async def test_sandbox_enrol_silence(env: Any) -> None:
    _, http, config = env
    verdict = (await build(http, config).enrol_voice(SUBJECT, SILENT)).value
    assert verdict is not None and (verdict.outcome, verdict.reason) == (Outcome.FAILED, NO_SPEECH_REASON)


async def test_sandbox_next_overrides(env: Any) -> None:
    _, http, config = env
    provider = build(http, config)
    await provider.enrol_voice(SUBJECT, VOICE_A)
    await http.post("/unisound/_sandbox/next", json={"outcome": "pass"})
    assert (await provider.verify_voice(SUBJECT, VOICE_B)).value.reason == "match"  # type: ignore[union-attr]
    await http.post("/unisound/_sandbox/next", json={"outcome": "mismatch"})
    assert (await provider.verify_voice(SUBJECT, VOICE_A)).value.reason == "mismatch"  # type: ignore[union-attr]
    await http.post("/unisound/_sandbox/next", json={"outcome": "no_face"})
    assert (await provider.verify_voice(SUBJECT, VOICE_A)).value.reason == NO_SPEECH_REASON  # type: ignore[union-attr]
    await http.post("/unisound/_sandbox/next", json={"outcome": "timeout", "seconds": 0})
    with pytest.raises(OutcomeUnknown):
        await provider.verify_voice(SUBJECT, VOICE_A)


async def test_sandbox_faults(env: Any) -> None:
    sandbox, http, config = env
    provider = build(http, config)
    for kind in ("timeout", "http_500", "http_429"):
        await http.post("/unisound/_sandbox/faults", json={"next_call": kind, "seconds": 0})
        with pytest.raises(OutcomeUnknown):
            await provider.enrol_voice(SUBJECT, VOICE_A)
    # charged_then_timeout: the feature was created but the answer lost; enrolling again is safe
    await http.post("/unisound/_sandbox/faults", json={"next_call": "charged_then_timeout", "seconds": 0,
                                                       "path": "/vpr/v1/createFeature"})
    with pytest.raises(OutcomeUnknown):
        await provider.enrol_voice(SUBJECT, VOICE_A)
    assert SUBJECT in sandbox.simulator("unisound").groups["minigate-sandbox"].features
    retried = (await provider.enrol_voice(SUBJECT, VOICE_A)).value
    assert retried is not None and (retried.outcome, retried.details) == (Outcome.PASSED, {"action": "updated"})


@pytest.mark.parametrize(("change", "code"), [({"secret": "wrong"}, "10002"), ({"appkey": "unknownkey"}, "10001")])
async def test_sandbox_bad_credentials_are_auth_declines(env: Any, change: dict[str, str], code: str) -> None:
    _, http, config = env
    provider = build(http, config | change)
    for result in (await provider.enrol_voice(SUBJECT, VOICE_A), await provider.verify_voice(SUBJECT, VOICE_A)):
        assert (result.ok, result.code, result.provider_code) == (False, StandardCode.AUTH_FAILED, code)


async def test_sandbox_clock_skew_is_an_auth_decline(env: Any) -> None:
    _, http, config = env
    await http.post("/unisound/_sandbox/faults", json={"clock_skew_seconds": -900})
    result = await build(http, config).verify_voice(SUBJECT, VOICE_A)
    assert (result.ok, result.code, result.provider_code) == (False, StandardCode.AUTH_FAILED, "10003")

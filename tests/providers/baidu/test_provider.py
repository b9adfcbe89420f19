"""BaiduFaceProvider: the requests it builds (over httpx.MockTransport), the token cache and its refresh on 110/111
(also under concurrency), every error_code mapping, unknown outcomes, and the verdicts against the simulator
through the registry and the Sandbox."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from pydantic import ValidationError

from minigate.domain.results import StandardCode
from minigate.errors import OperationNotSupported, OutcomeUnknown, ProviderTimeout, ProviderUnavailable
from minigate.providers import registry
from minigate.providers.baidu.codes import (
    DECLINE_CODES,
    DEFAULT_ERROR_MAPPER,
    TOKEN_CODES,
    UNKNOWN_OUTCOME_CODES,
    VERDICT_CODES,
    ErrorMapper,
)
from minigate.providers.baidu.config import LIVE_BASE_URL, BaiduFaceConfig
from minigate.providers.baidu.provider import BaiduFaceProvider
from minigate.providers.bases.identity import FaceImage, Outcome, PersonId, VoiceSample
from minigate.simulators import Sandbox
from tests.providers import sandboxed

API_KEY = "ApiKeyExample00000000000"
SECRET = "SecretKeyExample0000000000000000"
CONFIG: dict[str, Any] = {"api_key": API_KEY, "secret_key": SECRET}
PERSON = PersonId("张三", "11010519491231002X")
PHOTO = base64.b64encode(b"portrait of zhang san").decode()
OTHER = base64.b64encode(b"portrait of li si").decode()
NOFACE = base64.b64encode(b"NOFACE").decode()


class Clock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


def envelope(code: int = 0, result: Any = None, msg: str | None = None) -> httpx.Response:
    return httpx.Response(200, json={"error_code": code, "error_msg": msg or ("SUCCESS" if code == 0 else "no"),
                                     "log_id": 744193232085663500, "timestamp": 1573208566, "cached": 0,
                                     "result": result})


def token_answer(n: int = 1, expires_in: int = 2592000) -> httpx.Response:
    return httpx.Response(200, json={"refresh_token": "25.x", "expires_in": expires_in, "session_key": "s",
                                     "access_token": f"24.token{n}.2592000.1.1-123", "scope": "public brain_all_scope",
                                     "session_secret": "t"})


Handler = Callable[[httpx.Request], Awaitable[httpx.Response]]


class Fake:
    """A scripted Baidu: token fetches are numbered; face calls answer ``answers`` in turn (then a score of 95)."""

    def __init__(self, *answers: httpx.Response | Callable[[httpx.Request], httpx.Response],
                 token_delay: float = 0.0) -> None:
        self.answers = list(answers)
        self.token_delay = token_delay
        self.token_requests: list[httpx.Request] = []
        self.calls: list[httpx.Request] = []

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/oauth/2.0/token"):
            self.token_requests.append(request)
            await asyncio.sleep(self.token_delay)
            return token_answer(len(self.token_requests))
        self.calls.append(request)
        await asyncio.sleep(0)
        answer = self.answers.pop(0) if self.answers else envelope(result={"score": 95.0})
        return answer(request) if callable(answer) else answer

    def tokens_used(self) -> list[str]:
        return [parse_qs(urlsplit(str(r.url)).query)["access_token"][0] for r in self.calls]


def provider(fake: Callable[[httpx.Request], Any], clock: Clock | None = None, **config: Any) -> BaiduFaceProvider:
    client = httpx.AsyncClient(transport=httpx.MockTransport(fake))
    return BaiduFaceProvider(BaiduFaceConfig(**(CONFIG | config)), client, clock=clock or Clock())


# ------------------------------------------------------------------ the requests on the wire
async def test_token_and_verify_requests() -> None:
    fake = Fake()
    result = await provider(fake).verify_face(PERSON, FaceImage(PHOTO))
    assert result.ok and result.value is not None and result.request_id == "744193232085663500"
    [token] = fake.token_requests
    assert (token.method, token.url.scheme, token.url.host, token.url.path) == (
        "GET", "https", "aip.baidubce.com", "/oauth/2.0/token")
    assert dict(token.url.params) == {"grant_type": "client_credentials", "client_id": API_KEY,
                                      "client_secret": SECRET}
    [call] = fake.calls
    assert (call.method, str(call.url)) == ("POST", LIVE_BASE_URL + "/rest/2.0/face/v3/person/verify"
                                            "?access_token=24.token1.2592000.1.1-123")
    assert call.headers["content-type"] == "application/json"
    assert json.loads(call.content) == {"image": PHOTO, "image_type": "BASE64", "id_card_number": PERSON.id_number,
                                        "name": "张三", "quality_control": "LOW", "liveness_control": "NORMAL"}
    assert "张三".encode() in call.content                               # UTF-8, not \\u escapes


async def test_match_and_idmatch_requests() -> None:
    fake = Fake(envelope(result={"score": 90, "face_list": [{"face_token": "a"}, {"face_token": "b"}]}),
                envelope())
    p = provider(fake, base_url="http://127.0.0.1:9/baidu/", spoofing_control="HIGH", liveness_control="LOW",
                 quality_control="NORMAL")
    assert (await p.match_faces(FaceImage(PHOTO), FaceImage(OTHER, kind="IDCARD"))).ok
    assert (await p.check_id(PERSON)).ok
    assert str(fake.token_requests[0].url).startswith("http://127.0.0.1:9/baidu/oauth/2.0/token?")
    match, idmatch = fake.calls
    assert match.url.path == "/baidu/rest/2.0/face/v3/match"
    assert json.loads(match.content) == [
        {"image": PHOTO, "image_type": "BASE64", "face_type": "LIVE", "quality_control": "NORMAL",
         "liveness_control": "LOW"},
        {"image": OTHER, "image_type": "BASE64", "face_type": "IDCARD", "quality_control": "NORMAL",
         "liveness_control": "NONE"}]
    assert idmatch.url.path == "/baidu/rest/2.0/face/v3/person/idmatch"
    assert json.loads(idmatch.content) == {"id_card_number": PERSON.id_number, "name": "张三"}
    assert p.verify_payload(PERSON, FaceImage(PHOTO))["spoofing_control"] == "HIGH"


async def test_token_url_setting() -> None:
    fake = Fake()
    await provider(fake, token_url="https://auth.example/oauth/2.0/token").check_id(PERSON)
    assert fake.token_requests[0].url.host == "auth.example" and fake.calls[0].url.host == "aip.baidubce.com"


# ------------------------------------------------------------------ the token cache
async def test_token_is_cached_until_30_seconds_before_expiry() -> None:
    clock, fake = Clock(), Fake()
    p = provider(fake, clock)
    for _ in range(3):
        await p.check_id(PERSON)
    assert len(fake.token_requests) == 1 and p.token_fetches == 1
    clock.now += 2592000 - 31
    await p.check_id(PERSON)
    assert len(fake.token_requests) == 1
    clock.now += 1                                                    # 30 s before expiry: renewed
    await p.check_id(PERSON)
    assert len(fake.token_requests) == 2
    assert fake.tokens_used() == ["24.token1.2592000.1.1-123"] * 4 + ["24.token2.2592000.1.1-123"]


async def test_refresh_margin_is_a_setting() -> None:
    clock, fake = Clock(), Fake()
    p = provider(fake, clock, token_refresh_margin_seconds=0)
    await p.check_id(PERSON)
    clock.now += 2592000 - 1
    await p.check_id(PERSON)
    assert len(fake.token_requests) == 1


@pytest.mark.parametrize("code", sorted(TOKEN_CODES))
async def test_refresh_once_on_token_errors_and_retry(code: int) -> None:
    fake = Fake(envelope(code), envelope(result={"score": 88}))
    result = await provider(fake).verify_face(PERSON, FaceImage(PHOTO))
    assert result.ok and result.value is not None and result.value.outcome is Outcome.PASSED
    assert len(fake.token_requests) == 2
    assert [t.split(".")[1] for t in fake.tokens_used()] == ["token1", "token2"]
    assert fake.calls[0].content == fake.calls[1].content


@pytest.mark.parametrize("code", sorted(TOKEN_CODES))
async def test_a_second_token_error_is_declined(code: int) -> None:
    fake = Fake(envelope(code, msg="Access token invalid or no longer valid"), envelope(code))
    result = await provider(fake).check_id(PERSON)
    assert not result.ok and (result.code, result.provider_code) == (StandardCode.AUTH_FAILED, str(code))
    assert len(fake.calls) == 2 and len(fake.token_requests) == 2          # no loop


async def test_concurrent_calls_share_one_token_fetch() -> None:
    fake = Fake(token_delay=0.02)
    p = provider(fake)
    results = await asyncio.gather(*(p.check_id(PERSON) for _ in range(10)))
    assert all(r.ok for r in results)
    assert len(fake.token_requests) == 1 and len(fake.calls) == 10


async def test_concurrent_token_errors_refresh_once() -> None:
    first_round: list[str] = []

    def refuse_first_token(request: httpx.Request) -> httpx.Response:
        token = parse_qs(urlsplit(str(request.url)).query)["access_token"][0]
        if "token1" in token:
            first_round.append(token)
            return envelope(110)
        return envelope()

    fake = Fake(*[refuse_first_token] * 20, token_delay=0.01)
    p = provider(fake)
    results = await asyncio.gather(*(p.check_id(PERSON) for _ in range(10)))
    assert all(r.ok and r.value is not None and r.value.reason == "match" for r in results)
    assert len(first_round) == 10 and len(fake.token_requests) == 2 and p.token_fetches == 2


@pytest.mark.parametrize(("status", "body", "description"), [
    (401, {"error": "invalid_client", "error_description": "unknown client id"}, "unknown client id"),
    (401, {"error": "invalid_client", "error_description": "Client authentication failed"},
     "Client authentication failed"),
    (400, {"error": "unsupported_grant_type"}, "access token refused"),
])
async def test_token_refusals_are_auth_declines(status: int, body: dict[str, Any], description: str) -> None:
    fake = Fake()

    async def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/token"):
            return httpx.Response(status, json=body)
        return await fake(request)

    result = await provider(handler).verify_face(PERSON, FaceImage(PHOTO))
    assert not result.ok and (result.code, result.provider_code, result.message) == (
        StandardCode.AUTH_FAILED, body["error"], description)
    assert fake.calls == []


@pytest.mark.parametrize("response", [
    httpx.Response(500, json={"error": "server_error"}),
    httpx.Response(502, text="<html>bad gateway</html>"),
    httpx.Response(200, json={"expires_in": 10}),
    httpx.Response(200, json={"access_token": "24.x", "expires_in": "soon"}),
    httpx.Response(200, json={"access_token": "24.x", "expires_in": 0}),
    httpx.Response(200, json=["24.x"]),
    httpx.Response(200, text="not json"),
])
async def test_token_answers_that_are_not_tokens(response: httpx.Response) -> None:
    p = provider(lambda request: response)
    with pytest.raises(ProviderUnavailable) as info:
        await p.check_id(PERSON)
    assert SECRET not in str(info.value) and API_KEY not in str(info.value)


# ------------------------------------------------------------------ verdicts and codes
@pytest.mark.parametrize(("score", "threshold", "outcome", "reason"), [
    (80.0, 80.0, Outcome.PASSED, "match"),
    (79.99, 80.0, Outcome.FAILED, "low_similarity"),
    (85, 90.0, Outcome.FAILED, "low_similarity"),
    (60, 50.0, Outcome.PASSED, "match"),
])
async def test_score_against_the_threshold(score: float, threshold: float, outcome: Outcome, reason: str) -> None:
    for op in ("verify", "match"):
        p = provider(Fake(envelope(result={"score": score, "face_list": []})), pass_threshold=threshold)
        result = (await p.verify_face(PERSON, FaceImage(PHOTO)) if op == "verify"
                  else await p.match_faces(FaceImage(PHOTO), FaceImage(OTHER)))
        verdict = result.value
        assert verdict is not None and (verdict.outcome, verdict.reason, verdict.score) == (outcome, reason, score)
        assert verdict.provider_ref == "744193232085663500" and verdict.provider_code == "0"
        assert verdict.details["threshold"] == threshold and verdict.liveness is True


async def test_liveness_is_unknown_when_not_checked() -> None:
    p = provider(Fake(), liveness_control="NONE")
    verdict = (await p.verify_face(PERSON, FaceImage(PHOTO))).value
    assert verdict is not None and verdict.liveness is None
    both_id_photos = (await provider(Fake()).match_faces(FaceImage(PHOTO, "IDCARD"), FaceImage(OTHER, "CERT"))).value
    assert both_id_photos is not None and both_id_photos.liveness is None


@pytest.mark.parametrize("result", [None, {}, {"verify": True}, []])
async def test_idmatch_success_is_read_tolerantly(result: Any) -> None:
    verdict = (await provider(Fake(envelope(result=result))).check_id(PERSON)).value
    assert verdict is not None and (verdict.outcome, verdict.reason, verdict.score) == (Outcome.PASSED, "match", None)


@pytest.mark.parametrize(("code", "reason"), sorted(VERDICT_CODES.items()))
async def test_verdict_codes(code: int, reason: str) -> None:
    for call in ("check_id", "verify_face", "match_faces"):
        p = provider(Fake(envelope(code, msg="pic not has face")))
        result = await (p.check_id(PERSON) if call == "check_id" else p.verify_face(PERSON, FaceImage(PHOTO))
                        if call == "verify_face" else p.match_faces(FaceImage(PHOTO), FaceImage(OTHER)))
        verdict = result.value
        assert result.ok and verdict is not None
        assert (verdict.outcome, verdict.reason, verdict.provider_code) == (Outcome.FAILED, reason, str(code))
        assert verdict.liveness is (False if reason == "liveness_failed" else None)
        assert verdict.provider_ref == "744193232085663500" and verdict.score is None


def test_brief_verdict_mapping() -> None:
    expected = {222202: "no_face", 222203: "poor_image", 223113: "poor_image", 223114: "poor_image",
                222356: "poor_image", 222351: "mismatch", 222354: "no_record", 222355: "no_record",
                222360: "invalid_id"}
    assert {code: VERDICT_CODES[code] for code in expected} == expected
    vocabulary = {"match", "mismatch", "invalid_id", "invalid_name", "no_record", "liveness_failed",
                  "low_similarity", "no_face", "poor_image", "pending", "expired", "not_enrolled",
                  "authority_unavailable"}
    assert set(VERDICT_CODES.values()) <= vocabulary
    assert not set(VERDICT_CODES) & (set(DECLINE_CODES) | UNKNOWN_OUTCOME_CODES)


@pytest.mark.parametrize(("code", "standard"), sorted(DECLINE_CODES.items()))
async def test_decline_codes(code: int, standard: StandardCode) -> None:
    answers = [envelope(code, msg="Open api qps request limit reached")] * (2 if code in TOKEN_CODES else 1)
    result = await provider(Fake(*answers)).verify_face(PERSON, FaceImage(PHOTO))
    assert not result.ok and (result.code, result.provider_code) == (standard, str(code))
    assert result.message == "Open api qps request limit reached" and result.request_id == "744193232085663500"


def test_brief_decline_mapping() -> None:
    expected = {4: StandardCode.RATE_LIMITED, 17: StandardCode.RATE_LIMITED, 18: StandardCode.RATE_LIMITED,
                19: StandardCode.RATE_LIMITED, 6: StandardCode.AUTH_FAILED, 14: StandardCode.AUTH_FAILED,
                100: StandardCode.INVALID_REQUEST}
    assert {code: DECLINE_CODES[code] for code in expected} == expected
    assert TOKEN_CODES == {110, 111}


async def test_unlisted_codes_decline_as_declined() -> None:
    result = await provider(Fake(envelope(299999))).check_id(PERSON)
    assert not result.ok and (result.code, result.provider_code) == (StandardCode.DECLINED, "299999")


@pytest.mark.parametrize("code", sorted(UNKNOWN_OUTCOME_CODES))
async def test_unknown_outcome_codes(code: int) -> None:
    with pytest.raises(ProviderUnavailable) as info:
        await provider(Fake(envelope(code))).verify_face(PERSON, FaceImage(PHOTO))
    assert info.value.provider_code == str(code) and info.value.request_id == "744193232085663500"


def test_error_mapper_is_data() -> None:
    mapper = ErrorMapper(declines={4: StandardCode.DECLINED}, verdicts={999: "poor_image"})
    assert mapper.classify(4) is StandardCode.DECLINED and mapper.classify(6) is StandardCode.DECLINED
    assert mapper.verdict_reason(999) == "poor_image" and mapper.verdict_reason(222202) is None
    assert DEFAULT_ERROR_MAPPER.classify(18) is StandardCode.RATE_LIMITED


async def test_custom_mapper_is_used() -> None:
    client = httpx.AsyncClient(transport=httpx.MockTransport(Fake(envelope(18))))
    p = BaiduFaceProvider(BaiduFaceConfig(**CONFIG), client, errors=ErrorMapper(verdicts={18: "authority_unavailable"}))
    verdict = (await p.check_id(PERSON)).value
    assert verdict is not None and verdict.reason == "authority_unavailable"


async def test_error_codes_setting() -> None:
    overrides = {"222202": "poor_image", "18": "declined", "4": "unknown_outcome", "2": "authority_unavailable",
                 "299999": "invalid_request"}
    fake = Fake(envelope(222202), envelope(18), envelope(4), envelope(2), envelope(299999), envelope(17))
    p = provider(fake, error_codes=overrides)
    assert p.config.error_codes[222202] == "poor_image"
    first = (await p.check_id(PERSON)).value
    assert first is not None and first.reason == "poor_image"
    assert (await p.check_id(PERSON)).code is StandardCode.DECLINED
    with pytest.raises(ProviderUnavailable):
        await p.check_id(PERSON)
    moved = (await p.check_id(PERSON)).value
    assert moved is not None and moved.reason == "authority_unavailable"
    assert (await p.check_id(PERSON)).code is StandardCode.INVALID_REQUEST
    assert (await p.check_id(PERSON)).code is StandardCode.RATE_LIMITED                # the rest unchanged
    with pytest.raises(ValidationError):
        BaiduFaceConfig(**(CONFIG | {"error_codes": {"222202": "sunburn"}}))
    with pytest.raises(ValueError, match="sunburn"):
        DEFAULT_ERROR_MAPPER.merged({1: "sunburn"})


@pytest.mark.parametrize("response", [
    httpx.Response(500, text="<html>upstream error</html>"),
    httpx.Response(429, text="slow down"),
    httpx.Response(504, text="<html>Gateway Timeout</html>"),
    httpx.Response(200, text="<html>ok</html>"),
    httpx.Response(200, json=[1, 2]),
    httpx.Response(200, json={"error_msg": "?"}),
    httpx.Response(200, json={"error_code": True, "result": None}),
    httpx.Response(200, json={"error_code": 0, "result": {"face_list": []}}),       # success without a score
    httpx.Response(200, json={"error_code": 0, "result": {"score": "95"}}),
])
async def test_answers_that_leave_the_outcome_unknown(response: httpx.Response) -> None:
    with pytest.raises(ProviderUnavailable) as info:
        await provider(Fake(response)).verify_face(PERSON, FaceImage(PHOTO))
    assert "token" not in str(info.value) and PERSON.id_number not in str(info.value)


async def test_tolerated_envelopes() -> None:
    no_code = httpx.Response(200, json={"result": {"score": 91}})
    text_code = httpx.Response(200, json={"error_code": "222202", "error_msg": "pic not has face", "log_id": "x1"})
    first = (await provider(Fake(no_code)).verify_face(PERSON, FaceImage(PHOTO))).value
    second = (await provider(Fake(text_code)).verify_face(PERSON, FaceImage(PHOTO))).value
    assert first is not None and first.reason == "match" and first.provider_ref is None
    assert second is not None and (second.reason, second.provider_ref) == ("no_face", "x1")


async def test_transport_errors_are_unknown_outcomes() -> None:
    def timeout(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/token"):
            return token_answer()
        raise httpx.ReadTimeout("slow", request=request)

    with pytest.raises(ProviderTimeout):
        await provider(timeout).verify_face(PERSON, FaceImage(PHOTO))


async def test_unsupported_operations() -> None:
    p = provider(Fake())
    assert (p.name, p.kinds, p.face_mode) == ("baidu", frozenset({"id_card", "face"}), "upload")
    with pytest.raises(OperationNotSupported):
        await p.start_face(PERSON, reference="r")
    with pytest.raises(OperationNotSupported):
        await p.verify_voice("subject", VoiceSample("AAAA"))


def test_config_rules() -> None:
    config = BaiduFaceConfig(**CONFIG)
    assert SECRET not in repr(config) and config.resolved_token_url == LIVE_BASE_URL + "/oauth/2.0/token"
    assert (config.pass_threshold, config.liveness_control, config.quality_control) == (80.0, "NORMAL", "LOW")
    assert config.problems() == []
    for bad in ({"unknown": 1}, {"pass_threshold": 101}, {"liveness_control": "MAX"}, {"api_key": ""},
                {"request_timeout_seconds": 0}):
        with pytest.raises(ValidationError):
            BaiduFaceConfig(**(CONFIG | bad))
    assert len(BaiduFaceConfig(**(CONFIG | {"base_url": "http://x", "token_url": "http://y",
                                            "secret_key": ""})).problems()) == 3


# ------------------------------------------------------------------ against the simulator
@pytest.fixture
async def env(tmp_path: Path) -> AsyncIterator[tuple[Sandbox, httpx.AsyncClient, BaiduFaceProvider]]:
    spec = registry.identity_spec("baidu")
    assert spec is not None
    async with sandboxed(tmp_path, spec) as (sandbox, http, config):
        creds = sandbox.credentials("baidu")
        assert config == {"api_key": creds["api_key"], "secret_key": creds["secret_key"],
                          "app_id": creds["app_id"], "base_url": "http://sandbox/baidu"}
        p = spec.build(config, http)
        assert isinstance(p, BaiduFaceProvider)
        registered = await http.post("/baidu/_sandbox/persons", json={"name": PERSON.name,
                                                                      "id_number": PERSON.id_number, "photo": PHOTO})
        assert registered.status_code == 200
        yield sandbox, http, p


async def test_sandbox_verdicts(env: Any) -> None:
    _, http, p = env
    cases = [
        (p.check_id(PERSON), Outcome.PASSED, "match"),
        (p.check_id(PersonId("李四", PERSON.id_number)), Outcome.FAILED, "mismatch"),
        (p.check_id(PersonId("李四", "440524188001010014")), Outcome.FAILED, "no_record"),
        (p.check_id(PersonId("李四", "110105194912310021")), Outcome.FAILED, "invalid_id"),
        (p.verify_face(PERSON, FaceImage(PHOTO)), Outcome.PASSED, "match"),
        (p.verify_face(PERSON, FaceImage(OTHER)), Outcome.FAILED, "low_similarity"),
        (p.verify_face(PERSON, FaceImage(NOFACE)), Outcome.FAILED, "no_face"),
        (p.verify_face(PERSON, FaceImage("%%%")), Outcome.FAILED, "poor_image"),
        (p.verify_face(PersonId("张三", "440524188001010014"), FaceImage(PHOTO)), Outcome.FAILED, "no_record"),
        (p.match_faces(FaceImage(PHOTO), FaceImage(PHOTO, "IDCARD")), Outcome.PASSED, "match"),
        (p.match_faces(FaceImage(PHOTO), FaceImage(OTHER)), Outcome.FAILED, "low_similarity"),
    ]
    for call, outcome, reason in cases:
        result = await call
        assert result.ok and result.value is not None
        assert (result.value.outcome, result.value.reason) == (outcome, reason)
        assert result.value.provider_ref is not None and result.value.provider_ref.isdigit()
    await http.post("/baidu/_sandbox/next", json={"outcome": "liveness_failed"})
    verdict = (await p.verify_face(PERSON, FaceImage(PHOTO))).value
    assert verdict is not None and (verdict.reason, verdict.liveness, verdict.provider_code) == (
        "liveness_failed", False, "223120")
    assert p.token_fetches == 1


async def test_sandbox_refreshes_expired_and_revoked_tokens(env: Any) -> None:
    sandbox, http, p = env
    assert (await p.check_id(PERSON)).ok
    assert (await http.post("/baidu/_sandbox/tokens/expire")).json() == {"expired": 1}
    result = await p.verify_face(PERSON, FaceImage(PHOTO))                  # 111, new token, retried
    assert result.value is not None and result.value.reason == "match" and p.token_fetches == 2
    assert (await http.post("/baidu/_sandbox/tokens/expire", json={"revoke": True})).json() == {"revoked": 2}
    assert (await p.check_id(PERSON)).ok and p.token_fetches == 3            # 110, new token, retried
    sim = sandbox.simulator("baidu")
    sim.token_lifetime_seconds = 20                                          # shorter than the refresh margin
    await http.post("/baidu/_sandbox/tokens/expire")
    result = await p.check_id(PERSON)
    assert (result.code, result.provider_code) == (StandardCode.OK, None) and p.token_fetches == 4
    assert (await p.check_id(PERSON)).ok and p.token_fetches == 5            # renewed before every call


async def test_sandbox_concurrent_calls_fetch_one_token(env: Any) -> None:
    sandbox, _, p = env
    results = await asyncio.gather(*(p.verify_face(PERSON, FaceImage(PHOTO)) for _ in range(8)))
    assert all(r.value is not None and r.value.outcome is Outcome.PASSED for r in results)
    assert p.token_fetches == 1 and len(sandbox.simulator("baidu").tokens) == 1


async def test_sandbox_refusals_and_faults(env: Any) -> None:
    _, http, p = env
    bad = registry.identity_spec("baidu")
    assert bad is not None
    wrong = bad.build(p.config.model_dump() | {"secret_key": "x" * 32}, p.client)
    result = await wrong.check_id(PERSON)
    assert not result.ok and (result.code, result.provider_code, result.message) == (
        StandardCode.AUTH_FAILED, "invalid_client", "Client authentication failed")
    await http.post("/baidu/_sandbox/faults", json={"next_call": "http_500", "path": "/rest"})
    with pytest.raises(ProviderUnavailable):
        await p.check_id(PERSON)
    await http.post("/baidu/_sandbox/faults", json={"next_call": "timeout", "path": "/rest", "seconds": 0})
    with pytest.raises(OutcomeUnknown):
        await p.match_faces(FaceImage(PHOTO), FaceImage(PHOTO))
    await http.post("/baidu/_sandbox/faults", json={"next_call": "http_429", "path": "/oauth"})
    fresh = bad.build(p.config.model_dump() | {"secret_key": p.config.secret_key.get_secret_value()}, p.client)
    with pytest.raises(ProviderUnavailable):
        await fresh.check_id(PERSON)
    assert (await fresh.check_id(PERSON)).ok
    await http.post("/baidu/_sandbox/next", json={"outcome": "timeout"})
    with pytest.raises(ProviderUnavailable):
        await p.verify_face(PERSON, FaceImage(PHOTO))

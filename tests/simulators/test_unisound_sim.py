"""The Unisound voiceprint simulator on the wire: the auth checks in order with their exact codes, groups and
features, deterministic scores by audio content, "no speech", the /_sandbox/next overrides and the faults."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from minigate.providers.unisound import signing
from minigate.simulators import Sandbox
from minigate.simulators.sandbox import REGISTRY
from minigate.simulators.unisound import CODES, SAME_VOICE_SCORE, UnisoundSimulator, create_credentials

VOICE_A = base64.b64encode(b"voice of A " * 50).decode()
VOICE_B = base64.b64encode(b"voice of B " * 50).decode()
SILENT = base64.b64encode(b"SILENCE and then nothing").decode()


def code(name: str) -> int:
    return CODES[name][0]


class Merchant:
    """Signs voiceprint calls with the sandbox credentials (or with anything a test wants to get wrong)."""

    def __init__(self, sandbox: Sandbox, http: httpx.AsyncClient) -> None:
        self.sandbox, self.http = sandbox, http
        self.creds = sandbox.credentials("unisound")

    @property
    def sim(self) -> UnisoundSimulator:
        return self.sandbox.simulator("unisound")  # type: ignore[no-any-return]

    def auth(self, *, appkey: str | None = None, secret: str | None = None, timestamp: int | str | None = None,
             nonce: str | None = None) -> dict[str, Any]:
        ts = int(self.sim.clock.now() * 1000) if timestamp is None else timestamp
        nonce = nonce or signing.new_nonce()
        appkey = appkey or self.creds["appkey"]
        return {"appkey": appkey, "timestamp": ts, "nonce": nonce,
                "sign": signing.sign(appkey=appkey, timestamp=ts, secret=secret or self.creds["secret"], nonce=nonce)}

    async def raw(self, op: str, body: Any = None, *, content: bytes | None = None) -> httpx.Response:
        data = content if content is not None else json.dumps(body).encode()
        return await self.http.post(f"/unisound/vpr/v1/{op}", content=data,
                                    headers={"Content-Type": "application/json"})

    async def call(self, op: str, fields: dict[str, Any] | None = None, **auth: Any) -> dict[str, Any]:
        response = await self.raw(op, {**self.auth(**auth), **(fields or {})})
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        assert set(body) == {"code", "msg", "sid", "data"} and len(body["sid"]) == 32
        return body

    async def group(self, group_id: str = "g1") -> None:
        assert (await self.call("createGroup", {"groupId": group_id, "groupInfo": "test"}))["code"] == 0

    async def enrol(self, feature_id: str = "f1", audio: str = VOICE_A, group_id: str = "g1") -> dict[str, Any]:
        return await self.call("createFeature", feature(feature_id, audio, group_id))

    async def confirm(self, feature_id: str = "f1", audio: str = VOICE_A, group_id: str = "g1") -> dict[str, Any]:
        fields = feature(feature_id, audio, group_id)
        del fields["featureInfo"]
        return await self.call("confirmFeature", fields)


def feature(feature_id: str, audio: str, group_id: str = "g1", **extra: Any) -> dict[str, Any]:
    return {"groupId": group_id, "featureId": feature_id, "featureInfo": "info", "audioData": audio,
            "audioSampleRate": 16000, "audioFormat": "pcm"} | extra


@pytest.fixture
async def m(tmp_path: Path) -> AsyncIterator[Merchant]:
    sandbox = Sandbox(tmp_path, time_scale=0.0)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=sandbox.app), base_url="http://sandbox") as http:
        yield Merchant(sandbox, http)
    await sandbox.aclose()


# ------------------------------------------------------------------ credentials
def test_registered_and_credentials_are_the_design_fields(tmp_path: Path) -> None:
    assert REGISTRY["unisound"] == "minigate.simulators.unisound:UnisoundSimulator"
    creds = Sandbox(tmp_path).credentials("unisound")
    assert set(creds) == {"appkey", "secret"}
    assert len(creds["appkey"]) == 40 and len(creds["secret"]) == 32
    assert Sandbox(tmp_path).credentials("unisound") == creds          # kept in the state dir
    assert create_credentials() != create_credentials()


# ------------------------------------------------------------------ the auth checks, in order
@pytest.mark.parametrize(("content", "detail"), [
    (b"not json", "body is not JSON"), (b"[1, 2]", "body is not a JSON object"), (b"\xff", "body is not JSON")])
async def test_body_must_be_a_json_object(m: Merchant, content: bytes, detail: str) -> None:
    response = await m.raw("createGroup", content=content)
    assert response.status_code == 200
    assert (response.json()["code"], response.json()["msg"]) == (code("param_error"), f"参数错误: {detail}")
    assert response.json()["data"] is None


@pytest.mark.parametrize("missing", ["appkey", "timestamp", "nonce", "sign"])
async def test_each_auth_field_is_required(m: Merchant, missing: str) -> None:
    body = m.auth() | {"groupId": "g1"}
    del body[missing]
    answer = (await m.raw("createGroup", body)).json()
    assert (answer["code"], answer["msg"]) == (code("param_error"), f"参数错误: {missing} is required")
    body = m.auth() | {"groupId": "g1", missing: ""}
    assert (await m.raw("createGroup", body)).json()["code"] == code("param_error")


@pytest.mark.parametrize("timestamp", ["12ab", 1.5, True, -5])
async def test_timestamp_must_be_milliseconds(m: Merchant, timestamp: Any) -> None:
    body = m.auth() | {"timestamp": timestamp, "groupId": "g1"}
    answer = (await m.raw("createGroup", body)).json()
    assert answer["code"] == code("param_error") and "timestamp" in answer["msg"]


async def test_types_of_appkey_nonce_sign(m: Merchant) -> None:
    answer = (await m.raw("createGroup", m.auth() | {"nonce": 5, "groupId": "g1"})).json()
    assert answer["code"] == code("param_error")


async def test_unknown_appkey_comes_before_time_and_signature(m: Merchant) -> None:
    answer = await m.call("createGroup", {"groupId": "g1"}, appkey="someoneelse", timestamp=1)
    assert (answer["code"], answer["msg"]) == CODES["appkey_unknown"]


@pytest.mark.parametrize("offset", [-301, 301])
async def test_timestamp_window(m: Merchant, offset: int) -> None:
    now_ms = int(m.sim.clock.now() * 1000)
    answer = await m.call("createGroup", {"groupId": "g1"}, timestamp=now_ms + offset * 1000, secret="wrong")
    assert (answer["code"], answer["msg"]) == CODES["timestamp_expired"]        # before the signature
    inside = now_ms + (offset - 2 if offset > 0 else offset + 2) * 1000
    assert (await m.call("createGroup", {"groupId": "g1"}, timestamp=inside))["code"] == 0


async def test_clock_skew_fault_moves_the_window(m: Merchant) -> None:
    await m.http.post("/unisound/_sandbox/faults", json={"clock_skew_seconds": 600})
    assert (await m.call("createGroup", {"groupId": "g1"}))["code"] == code("timestamp_expired")
    assert (await m.call("createGroup", {"groupId": "g1"}, timestamp=int((m.sim.now()) * 1000)))["code"] == 0


async def test_timestamp_as_text_is_accepted(m: Merchant) -> None:
    ts = str(int(m.sim.clock.now() * 1000))
    assert (await m.call("createGroup", {"groupId": "g1"}, timestamp=ts))["code"] == 0


async def test_nonce_replay(m: Merchant) -> None:
    body = m.auth(nonce="n-1") | {"groupId": "g1"}
    assert (await m.raw("createGroup", body)).json()["code"] == 0
    replay = (await m.raw("createGroup", body | {"groupId": "g2"})).json()
    assert (replay["code"], replay["msg"]) == CODES["nonce_reused"]
    assert "g2" not in m.sim.groups
    m.sim.clock.advance(901)                         # remembered 15 minutes, then forgotten
    assert (await m.call("createGroup", {"groupId": "g2"}, nonce="n-1"))["code"] == 0


async def test_a_forged_request_does_not_use_up_the_nonce(m: Merchant) -> None:
    forged = await m.call("createGroup", {"groupId": "g1"}, nonce="n-2", secret="not-the-secret")
    assert (forged["code"], forged["msg"]) == CODES["sign_error"]
    assert (await m.call("createGroup", {"groupId": "g1"}, nonce="n-2"))["code"] == 0


async def test_signature(m: Merchant) -> None:
    assert (await m.call("createGroup", {"groupId": "g1"}, secret="wrong"))["code"] == code("sign_error")
    body = m.auth() | {"groupId": "g1"}
    tampered = body | {"sign": body["sign"][:-1] + ("0" if body["sign"][-1] != "0" else "1")}
    assert (await m.raw("createGroup", tampered)).json()["code"] == code("sign_error")
    lower = m.auth() | {"groupId": "g1"}
    lower["sign"] = lower["sign"].lower()
    assert (await m.raw("createGroup", lower)).json()["code"] == 0


async def test_unknown_operation_is_404(m: Merchant) -> None:
    assert (await m.raw("identifyEverything", m.auth())).status_code == 404
    assert (await m.http.get("/unisound/vpr/v1/createGroup")).status_code == 405


# ------------------------------------------------------------------ groups and features
async def test_groups(m: Merchant) -> None:
    created = await m.call("createGroup", {"groupId": "g1", "groupInfo": "shop"})
    assert (created["code"], created["msg"], created["data"]) == (0, "success", {"groupId": "g1", "groupInfo": "shop"})
    again = await m.call("createGroup", {"groupId": "g1"})
    assert (again["code"], again["msg"], again["data"]) == (*CODES["group_exists"], None)
    for bad in ({}, {"groupId": ""}, {"groupId": "a b"}, {"groupId": "x" * 65}, {"groupId": 7}):
        assert (await m.call("createGroup", bad))["code"] == code("param_error")
    assert (await m.call("createGroup", {"groupId": "g2", "groupInfo": 5}))["code"] == code("param_error")


async def test_features_create_update_list(m: Merchant) -> None:
    assert (await m.enrol())["code"] == code("group_not_found")
    await m.group()
    created = await m.enrol()
    assert (created["code"], created["data"]) == (0, {"featureId": "f1", "featureInfo": "info"})
    assert (await m.enrol())["code"] == code("feature_exists")
    assert (await m.call("updateFeatureById", feature("nobody", VOICE_B)))["code"] == code("feature_not_found")
    updated = await m.call("updateFeatureById", feature("f1", VOICE_B, featureInfo="new"))
    assert (updated["code"], updated["data"]) == (0, {"result": True})
    assert (await m.confirm(audio=VOICE_B))["data"]["score"] == SAME_VOICE_SCORE     # the new audio counts
    assert (await m.confirm(audio=VOICE_A))["data"]["score"] <= 40
    await m.enrol("f2")
    listed = await m.call("findFeatureListByGroupId", {"groupId": "g1"})
    assert listed["data"] == [{"featureId": "f1", "featureInfo": "new"}, {"featureId": "f2", "featureInfo": "info"}]
    assert (await m.call("findFeatureListByGroupId", {"groupId": "nope"}))["code"] == code("group_not_found")


@pytest.mark.parametrize(("extra", "name"), [
    ({"audioSampleRate": 44100}, "param_error"), ({"audioSampleRate": "16k"}, "param_error"),
    ({"audioSampleRate": True}, "param_error"), ({"audioSampleRate": None}, "param_error"),
    ({"audioFormat": "wav"}, "param_error"), ({"audioFormat": None}, "param_error"),
    ({"audioData": ""}, "param_error"), ({"audioData": 12}, "param_error"),
    ({"audioData": "not base64!"}, "audio_invalid"), ({"audioData": "===="}, "audio_invalid"),
    ({"audioData": "A" * (4 * 1024 * 1024 + 4)}, "audio_too_large"),
    ({"featureId": "has space"}, "param_error"), ({"featureInfo": ["x"]}, "param_error"),
])
async def test_audio_and_id_parameters(m: Merchant, extra: dict[str, Any], name: str) -> None:
    await m.group()
    answer = await m.call("createFeature", feature("f1", VOICE_A, **extra))
    assert answer["code"] == code(name) and answer["msg"].startswith(CODES[name][1])
    assert not m.sim.groups["g1"].features


async def test_sample_rate_as_text_and_8k(m: Merchant) -> None:
    await m.group()
    assert (await m.call("createFeature", feature("f1", VOICE_A, audioSampleRate="8000")))["code"] == 0


async def test_no_speech(m: Merchant) -> None:
    await m.group()
    silent = await m.enrol(audio=SILENT)
    assert (silent["code"], silent["msg"]) == CODES["no_speech"]
    assert not m.sim.groups["g1"].features
    await m.enrol()
    assert (await m.call("updateFeatureById", feature("f1", SILENT)))["code"] == code("no_speech")
    assert (await m.confirm(audio=SILENT))["code"] == code("no_speech")
    assert (await m.confirm())["data"]["score"] == SAME_VOICE_SCORE                # the update was refused


async def test_scores_are_deterministic_by_content(m: Merchant) -> None:
    await m.group()
    await m.enrol()
    same = await m.confirm()
    assert (same["code"], same["data"]) == (0, {"score": SAME_VOICE_SCORE, "featureId": "f1", "featureInfo": "info"})
    other = (await m.confirm(audio=VOICE_B))["data"]["score"]
    assert 5 <= other <= 40
    assert (await m.confirm(audio=VOICE_B))["data"]["score"] == other
    assert (await m.confirm("missing"))["code"] == code("feature_not_found")
    assert (await m.confirm(group_id="nogroup"))["code"] == code("group_not_found")


# ------------------------------------------------------------------ /_sandbox/next
async def test_next_overrides_the_next_verdicts(m: Merchant) -> None:
    await m.group()
    await m.enrol()
    response = await m.http.post("/unisound/_sandbox/next", json={"outcome": "pass", "count": 2})
    assert response.json() == {"next": [{"outcome": "pass", "count": 2, "seconds": 0.0}]}
    assert (await m.confirm(audio=VOICE_B))["data"]["score"] == 95.0
    assert (await m.confirm(audio=VOICE_B))["data"]["score"] == 95.0
    assert (await m.confirm(audio=VOICE_B))["data"]["score"] <= 40                 # used up
    for outcome in ("mismatch", "liveness_failed"):
        await m.http.post("/unisound/_sandbox/next", json={"outcome": outcome})
        assert (await m.confirm())["data"]["score"] == 20.0
    await m.http.post("/unisound/_sandbox/next", json={"outcome": "no_face"})
    assert (await m.confirm())["code"] == code("no_speech")
    await m.http.post("/unisound/_sandbox/next", json={"outcome": "timeout", "seconds": 0})
    timed_out = await m.raw("confirmFeature", m.auth() | feature("f1", VOICE_A))
    assert timed_out.status_code == 504
    assert (await m.confirm())["data"]["score"] == SAME_VOICE_SCORE


async def test_next_is_not_used_by_enrolment(m: Merchant) -> None:
    await m.group()
    await m.http.post("/unisound/_sandbox/next", json={"outcome": "no_face"})
    assert (await m.enrol())["code"] == 0
    assert (await m.http.get("/unisound/_sandbox/next")).json()["next"][0]["outcome"] == "no_face"
    assert (await m.http.delete("/unisound/_sandbox/next")).json() == {"next": []}
    assert (await m.confirm())["data"]["score"] == SAME_VOICE_SCORE


@pytest.mark.parametrize("spec", [
    {"outcome": "maybe"}, {}, {"outcome": "pass", "count": 0}, {"outcome": "pass", "count": True},
    {"outcome": "timeout", "seconds": -1}, {"outcome": "pass", "colour": "red"}, [1],
])
async def test_next_refuses_bad_specs(m: Merchant, spec: Any) -> None:
    response = await m.http.post("/unisound/_sandbox/next", json=spec)
    assert response.status_code == 400 and response.json()["code"] == "PARAM_ERROR"
    assert m.sim.overrides == []


# ------------------------------------------------------------------ faults
@pytest.mark.parametrize(("kind", "status"), [("http_500", 500), ("http_429", 429), ("timeout", 504),
                                              ("bad_signature", 500)])
async def test_next_call_faults(m: Merchant, kind: str, status: int) -> None:
    await m.http.post("/unisound/_sandbox/faults", json={"next_call": kind, "seconds": 0})
    assert (await m.call("createGroup", {"groupId": "g1"}, secret="wrong"))["code"] == code("sign_error")
    response = await m.raw("createGroup", m.auth() | {"groupId": "g1"})      # refused calls do not use it up
    assert response.status_code == status and "g1" not in m.sim.groups
    assert (await m.call("createGroup", {"groupId": "g1"}))["code"] == 0


async def test_fault_path_prefix(m: Merchant) -> None:
    await m.http.post("/unisound/_sandbox/faults", json={"next_call": "http_500", "path": "/vpr/v1/confirm"})
    await m.group()
    await m.enrol()
    assert (await m.raw("confirmFeature", m.auth() | feature("f1", VOICE_A))).status_code == 500
    assert (await m.confirm())["code"] == 0


async def test_charged_then_timeout_acts_then_loses_the_answer(m: Merchant) -> None:
    await m.group()
    await m.http.post("/unisound/_sandbox/faults", json={"next_call": "charged_then_timeout", "seconds": 0})
    response = await m.raw("createFeature", m.auth() | feature("f1", VOICE_A))
    assert response.status_code == 504
    assert "f1" in m.sim.groups["g1"].features
    assert (await m.enrol())["code"] == code("feature_exists")

"""FaceID in the Tencent Cloud simulator on the wire: IdCardVerification against the sandbox's records,
DetectAuth / GetDetectInfoEnhanced / GetDetectInfo sessions, the user finishing the flow, the override queue,
every refusal with its code, faults, and the credentials' RuleId."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from minigate.simulators import Sandbox
from minigate.simulators._tencent_faceid import SESSION_TTL_SECONDS, TEXT_FIELDS, rule_id_for
from tests.simulators.test_tencentcloud_sim import Merchant

NAME, ID = "张三", "11010519491231002X"
OTHER_ID = "440524188001010014"
PHOTO = b"\xff\xd8\xff face of zhang san"
OTHER = b"\xff\xd8\xff someone else"


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


class Face(Merchant):
    """A merchant calling FaceID (service faceid, version 2018-03-01, no region)."""

    async def fcall(self, action: str, payload: dict[str, Any] | None = None, **kw: Any) -> dict[str, Any]:
        return await self.call(action, payload, **({"service": "faceid", "version": "2018-03-01", "region": None}
                                                   | kw))

    async def ferror(self, action: str, payload: dict[str, Any] | None = None, **kw: Any) -> str:
        body = await self.fcall(action, payload, **kw)
        assert "Error" in body, body
        return str(body["Error"]["Code"])

    async def fraw(self, action: str, payload: dict[str, Any] | None = None) -> httpx.Response:
        return await self.raw(action, payload, service="faceid", version="2018-03-01", region=None)

    @property
    def rule(self) -> str:
        return str(self.creds["faceid_rule_id"])

    async def person(self, name: str = NAME, id_number: str = ID, photo: bytes | None = None) -> None:
        body: dict[str, Any] = {"name": name, "id_number": id_number}
        if photo is not None:
            body["photo"] = b64(photo)
        r = await self.http.post("/tencentcloud/_sandbox/persons", json=body)
        assert r.status_code == 200, r.text

    async def start(self, name: str = NAME, id_number: str = ID, **extra: Any) -> str:
        body = await self.fcall("DetectAuth", {"RuleId": self.rule, "IdCard": id_number, "Name": name,
                                               "Extra": "ver_1"} | extra)
        assert set(body) == {"Url", "BizToken", "RequestId"}, body
        return str(body["BizToken"])

    async def complete(self, token: str, **body: Any) -> httpx.Response:
        return await self.http.post("/tencentcloud/_sandbox/faceid/complete", json={"biz_token": token} | body)

    async def text(self, token: str, info_type: str = "1") -> dict[str, Any]:
        body = await self.fcall("GetDetectInfoEnhanced", {"BizToken": token, "RuleId": self.rule,
                                                          "InfoType": info_type})
        assert "Error" not in body, body
        return dict(body["Text"])

    async def check(self, name: str = NAME, id_number: str = ID) -> str:
        body = await self.fcall("IdCardVerification", {"IdCard": id_number, "Name": name})
        assert set(body) == {"Result", "Description", "RequestId"}, body
        return str(body["Result"])


@pytest.fixture
async def face(tmp_path: Path) -> AsyncIterator[Face]:
    sandbox = Sandbox(tmp_path, time_scale=0.0)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=sandbox.app), base_url="http://sandbox") as http:
        yield Face(sandbox, http)
    await sandbox.aclose()


# ------------------------------------------------------------------ credentials
async def test_the_account_has_a_faceid_rule(face: Face, tmp_path: Path) -> None:
    assert face.rule.isdigit() and 1 <= int(face.rule) <= 99
    assert Sandbox(tmp_path).credentials("tencentcloud")["faceid_rule_id"] == face.rule        # kept on disk
    older = tmp_path / "older"
    older.mkdir()
    creds = {k: v for k, v in face.creds.items() if k != "faceid_rule_id"}
    (older / "tencentcloud.json").write_text(json.dumps(creds))            # a state dir from before FaceID
    first, second = Sandbox(older).credentials("tencentcloud"), Sandbox(older).credentials("tencentcloud")
    assert first["faceid_rule_id"] == second["faceid_rule_id"] == rule_id_for(creds["secret_id"])


# ------------------------------------------------------------------ IdCardVerification
async def test_id_card_verification_follows_the_records(face: Face) -> None:
    await face.person()
    assert await face.check() == "0"
    assert await face.check(name="李四") == "-1"
    assert await face.check(id_number=OTHER_ID) == "-5"
    for bad in ("11010519491231002x", "110105194912310021", "110105491231002", "99010519491231002X", "abc"):
        assert await face.check(id_number=bad) == "-2", bad
    for bad in ("Z3!", "张三3", "张" * 33):
        assert await face.check(name=bad) == "-3", bad
    body = await face.fcall("IdCardVerification", {"IdCard": ID, "Name": NAME})
    assert body["Description"] == "姓名和身份证号一致"


async def test_id_card_verification_refusals_and_daily_limit(face: Face) -> None:
    assert await face.ferror("IdCardVerification", {"Name": NAME}) == "MissingParameter"
    assert await face.ferror("IdCardVerification", {"IdCard": ID}) == "MissingParameter"
    assert await face.ferror("IdCardVerification", {"IdCard": 1, "Name": NAME}) == "InvalidParameter"
    assert await face.ferror("IdCardVerification", {"IdCard": ID, "Name": NAME, "Phone": "1"}) == "UnknownParameter"
    assert await face.ferror("IdCardVerification", {"IdCard": ID, "Name": NAME,
                                                    "Encryption": {"Algorithm": "SM4-GCM"}}) == "UnsupportedOperation"
    assert await face.ferror("IdCardVerification", {"IdCard": ID, "Name": NAME},
                             secret_key="x" * 32) == "AuthFailure.SignatureFailure"
    assert await face.ferror("IdCardVerification", {"IdCard": ID, "Name": NAME},
                             version="2021-01-11") == "NoSuchVersion"
    face.sim.faceid.id_checks_per_day = 2
    assert [await face.check() for _ in range(3)] == ["-5", "-5", "-7"]
    assert await face.check(id_number=OTHER_ID) == "-5"                    # per ID number
    face.sim.clock.advance(86400)
    assert await face.check() == "-5"                                      # a new day


# ------------------------------------------------------------------ DetectAuth
async def test_detect_auth_refusals(face: Face) -> None:
    ok = {"RuleId": face.rule, "IdCard": ID, "Name": NAME}
    cases: list[tuple[dict[str, Any], str]] = [
        ({"IdCard": ID, "Name": NAME}, "MissingParameter"),
        (ok | {"RuleId": "999"}, "InvalidParameterValue.RuleIdNotExist"),
        ({"RuleId": face.rule, "Name": NAME}, "MissingParameter"),
        ({"RuleId": face.rule, "IdCard": ID}, "MissingParameter"),
        (ok | {"IdCard": ID.lower()}, "FailedOperation.IdFormatError"),
        (ok | {"IdCard": "110105194912310021"}, "FailedOperation.IdFormatError"),
        (ok | {"Name": "Z3!"}, "FailedOperation.NameFormatError"),
        (ok | {"Extra": "e" * 1025}, "InvalidParameterValue"),
        (ok | {"RedirectUrl": "https://x/" + "a" * 1020}, "InvalidParameterValue"),
        (ok | {"ImageBase64": "not base64!"}, "FailedOperation.ImageDecodeFailed"),
        (ok | {"ImageBase64": "A" * (3 * 1024 * 1024 + 4)}, "FailedOperation.ImageSizeTooLarge"),
        (ok | {"Encryption": {"Algorithm": "AES-256-CBC"}}, "UnsupportedOperation"),
        (ok | {"Surprise": 1}, "UnknownParameter"),
    ]
    for payload, code in cases:
        assert await face.ferror("DetectAuth", payload) == code, payload
    assert face.sim.faceid.sessions == {}


async def test_detect_auth_answers_a_token_and_a_status_url(face: Face) -> None:
    body = await face.fcall("DetectAuth", {"RuleId": face.rule, "IdCard": ID, "Name": NAME, "Extra": "ver_1",
                                           "TerminalType": "tinyappsdk", "RedirectUrl": "https://shop.example/back"})
    token = body["BizToken"]
    assert len(token) == 36 and token == token.upper()
    assert body["Url"] == f"http://sandbox/tencentcloud/_sandbox/faceid/sessions/{token}"
    status = (await face.http.get(body["Url"].removeprefix("http://sandbox"))).json()
    assert status["state"] == "pending" and status["expires_at"] - status["created_at"] == SESSION_TTL_SECONDS
    assert NAME not in json.dumps(status, ensure_ascii=False) and ID not in json.dumps(status)
    assert (await face.http.get("/tencentcloud/_sandbox/faceid/sessions/NOPE")).status_code == 404


# ------------------------------------------------------------------ results
async def test_unfinished_session_answers_errcode_17_then_the_verdict(face: Face) -> None:
    await face.person()
    token = await face.start()
    pending = await face.text(token)
    assert set(pending) == set(TEXT_FIELDS)
    assert (pending["ErrCode"], pending["ErrMsg"], pending["Extra"]) == (17, "本次流程未完成", "ver_1")
    assert all(pending[k] is None for k in ("LiveStatus", "Comparestatus", "Sim", "IdCard", "Name"))
    r = await face.complete(token)
    assert r.status_code == 200 and r.json() == {"biz_token": token, "outcome": "pass", "err_code": 0}
    text = await face.text(token)
    assert (text["ErrCode"], text["LiveStatus"], text["Comparestatus"], text["Extra"]) == (0, 0, 0, "ver_1")
    assert (text["IdCard"], text["Name"]) == (ID, NAME) and 90 <= float(text["Sim"]) < 100
    [detail] = text["LivenessDetail"]
    assert (detail["Errcode"], detail["Idcard"], detail["IsNeedCharge"]) == (0, ID, True)
    assert (await face.http.get(f"/tencentcloud/_sandbox/faceid/sessions/{token}")).json()["state"] == "completed"
    assert (await face.complete(token)).status_code == 409                 # 本次校验已完成


async def test_info_type_selects_parts_and_legacy_get_detect_info(face: Face) -> None:
    await face.person(photo=PHOTO)
    token = await face.start()
    assert (await face.complete(token, photo=b64(PHOTO))).json()["outcome"] == "pass"
    text_only = await face.fcall("GetDetectInfoEnhanced", {"BizToken": token, "RuleId": face.rule, "InfoType": "1"})
    assert (text_only["IdCardData"], text_only["BestFrame"], text_only["VideoData"]) == (None, None, None)
    frames = await face.fcall("GetDetectInfoEnhanced", {"BizToken": token, "RuleId": face.rule, "InfoType": "3"})
    assert frames["Text"] is None and frames["BestFrame"] == {"BestFrame": b64(PHOTO)}
    everything = await face.fcall("GetDetectInfoEnhanced", {"BizToken": token, "RuleId": face.rule})
    assert everything["Text"]["ErrCode"] == 0 and everything["VideoData"] == {"LivenessVideo": None}
    legacy = await face.fcall("GetDetectInfo", {"BizToken": token, "RuleId": face.rule, "InfoType": "1"})
    assert json.loads(legacy["DetectInfo"])["Text"]["ErrCode"] == 0


async def test_result_refusals_and_expiry(face: Face) -> None:
    token = await face.start()
    base = {"BizToken": token, "RuleId": face.rule}
    assert await face.ferror("GetDetectInfoEnhanced", {"RuleId": face.rule}) == "MissingParameter"
    assert await face.ferror("GetDetectInfoEnhanced", base | {"RuleId": "999"}) == \
        "InvalidParameterValue.RuleIdNotExist"
    assert await face.ferror("GetDetectInfoEnhanced", base | {"BizToken": "NOPE"}) == \
        "InvalidParameterValue.BizTokenIllegal"
    assert await face.ferror("GetDetectInfoEnhanced", base | {"InfoType": "19"}) == "InvalidParameter"
    assert await face.ferror("GetDetectInfoEnhanced", base | {"IsEncryptResponse": True}) == "UnsupportedOperation"
    assert await face.ferror("GetDetectInfo", base | {"BestFramesCount": 1}) == "UnknownParameter"
    done = await face.start()
    assert (await face.complete(done)).status_code == 200
    face.sim.clock.advance(SESSION_TTL_SECONDS + 1)
    assert await face.ferror("GetDetectInfoEnhanced", base) == "InvalidParameterValue.BizTokenExpired"
    assert (await face.complete(token)).status_code == 410
    assert (await face.http.get(f"/tencentcloud/_sandbox/faceid/sessions/{token}")).json()["state"] == "expired"
    assert (await face.text(done))["ErrCode"] == 2006                      # finished: readable for 3 days
    face.sim.clock.advance(3 * 86400)
    assert await face.ferror("GetDetectInfoEnhanced", {"BizToken": done, "RuleId": face.rule}) == \
        "InvalidParameterValue.BizTokenExpired"


# ------------------------------------------------------------------ the user's part
async def test_completion_follows_records_and_photos(face: Face) -> None:
    await face.person(photo=PHOTO)

    async def outcome(token: str, **body: Any) -> tuple[str, dict[str, Any]]:
        r = await face.complete(token, **body)
        assert r.status_code == 200, r.text
        return r.json()["outcome"], await face.text(token)

    label, text = await outcome(await face.start(), photo=b64(PHOTO))
    assert label == "pass" and text["ErrCode"] == 0 and float(text["Sim"]) >= 90
    label, text = await outcome(await face.start(), photo=b64(OTHER))
    assert (label, text["ErrCode"], text["Comparestatus"], text["LiveStatus"]) == ("low_similarity", 2016, 2016, 0)
    assert float(text["Sim"]) <= 40
    label, text = await outcome(await face.start(), photo=b64(b"NOFACE at all"))
    assert (label, text["ErrCode"]) == ("no_face", 2010)
    label, text = await outcome(await face.start(name="李四"))
    assert (label, text["ErrCode"], text["Sim"]) == ("mismatch", 2006, None)
    label, text = await outcome(await face.start(id_number=OTHER_ID))
    assert (label, text["ErrCode"]) == ("mismatch", 2006)
    label, _ = await outcome(await face.start(ImageBase64=b64(OTHER)), photo=b64(OTHER))   # the merchant's photo
    assert label == "pass"
    for explicit, code in (("pass", 0), ("liveness_failed", 1002), ("mismatch", 2015), ("low_similarity", 2016),
                           ("no_face", 2010), ("authority_unavailable", 2017)):
        label, text = await outcome(await face.start(id_number=OTHER_ID), outcome=explicit)
        assert (label, text["ErrCode"]) == (explicit, code)
    _, spoof = await outcome(await face.start(), outcome="liveness_failed")
    assert (spoof["LiveStatus"], spoof["Comparestatus"], spoof["Sim"]) == (1002, None, None)


async def test_completion_route_refusals_and_persons_route(face: Face) -> None:
    token = await face.start()
    for body, status in (({"biz_token": ""}, 400), ({"biz_token": token, "outcome": "timeout"}, 400),
                         ({"biz_token": token, "photo": "%%%"}, 400), ({"biz_token": "NOPE"}, 404)):
        assert (await face.http.post("/tencentcloud/_sandbox/faceid/complete", json=body)).status_code == status
    assert (await face.http.post("/tencentcloud/_sandbox/faceid/complete", content=b"[]")).status_code == 400
    for body in ({"name": "", "id_number": ID}, {"name": NAME, "id_number": "110105194912310021"},
                 {"name": NAME, "id_number": ID, "photo": "%%%"}, {"name": NAME}):
        assert (await face.http.post("/tencentcloud/_sandbox/persons", json=body)).status_code == 400
    assert (await face.http.post("/tencentcloud/_sandbox/persons", content=b"x")).status_code == 400
    await face.person(name="李四")                                           # the record can be replaced
    assert await face.check(name="李四") == "0" and await face.check() == "-1"


# ------------------------------------------------------------------ overrides and faults
async def test_next_overrides_are_consumed_in_order(face: Face) -> None:
    r = await face.http.post("/tencentcloud/_sandbox/next", json={"outcome": "pass", "count": 2})
    assert r.json()["next"] == [{"outcome": "pass", "count": 2, "seconds": None}]
    assert [await face.check(), await face.check(), await face.check()] == ["0", "0", "-5"]
    await face.http.post("/tencentcloud/_sandbox/next", json={"outcome": "authority_unavailable"})
    assert await face.check() == "-6"
    await face.http.post("/tencentcloud/_sandbox/next", json={"outcome": "liveness_failed"})
    await face.http.post("/tencentcloud/_sandbox/next", json={"outcome": "mismatch"})
    await face.person()
    assert await face.check() == "0"                 # the head (liveness_failed) is not an ID-check outcome
    token = await face.start()
    assert (await face.complete(token)).json()["outcome"] == "liveness_failed"
    assert await face.check() == "-1"                # now mismatch is at the head
    assert (await face.http.get("/tencentcloud/_sandbox/next")).json() == {"next": []}
    await face.http.post("/tencentcloud/_sandbox/next", json={"outcome": "no_face", "count": 3})
    assert (await face.http.delete("/tencentcloud/_sandbox/next")).json() == {"next": []}
    for body in ({"outcome": "maybe"}, {"outcome": "pass", "count": 0}, {"outcome": "pass", "count": True},
                 {"outcome": "timeout", "seconds": -1}):
        assert (await face.http.post("/tencentcloud/_sandbox/next", json=body)).status_code == 400
    assert (await face.http.post("/tencentcloud/_sandbox/next", content=b"x")).status_code == 400


async def test_next_timeout_and_call_faults(face: Face) -> None:
    await face.http.post("/tencentcloud/_sandbox/next", json={"outcome": "timeout"})
    r = await face.fraw("IdCardVerification", {"IdCard": ID, "Name": NAME})
    assert r.status_code == 504 and "Response" not in r.text
    await face.http.post("/tencentcloud/_sandbox/next", json={"outcome": "timeout", "seconds": 0})
    assert await face.check() == "-5"                                      # held 0 s, then answered
    token = await face.start()
    await face.http.post("/tencentcloud/_sandbox/next", json={"outcome": "timeout", "count": 2})
    assert (await face.fraw("GetDetectInfoEnhanced", {"BizToken": token, "RuleId": face.rule})).status_code == 504
    assert (await face.fraw("DetectAuth", {"RuleId": face.rule, "IdCard": ID, "Name": NAME})).status_code == 504
    await face.http.post("/tencentcloud/_sandbox/faults", json={"next_call": "http_500", "path": "IdCard"})
    assert (await face.fraw("DetectAuth", {"RuleId": face.rule, "IdCard": ID, "Name": NAME})).status_code == 200
    assert (await face.fraw("IdCardVerification", {"IdCard": ID, "Name": NAME})).status_code == 500
    await face.http.post("/tencentcloud/_sandbox/faults", json={"next_call": "http_429", "path": "GetDetectInfo"})
    assert (await face.fraw("GetDetectInfoEnhanced", {"BizToken": token, "RuleId": face.rule})).status_code == 429


async def test_sms_still_works_beside_faceid(face: Face) -> None:
    body = await face.call("SendSms", face.sms())
    assert body["SendStatusSet"][0]["Code"] == "Ok"
    assert await face.error("IdCardVerification", {"IdCard": ID, "Name": NAME}) == "NoSuchVersion"
    assert await face.error("IdCardVerification", {"IdCard": ID, "Name": NAME}, version="2018-03-01",
                            region=None) == "AuthFailure.SignatureFailure"      # signed for sms, not faceid

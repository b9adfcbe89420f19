"""The Baidu AI face simulator on the wire: the OAuth token endpoint and its refusals, token expiry and revocation,
the face APIs' check order and error codes, the deterministic outcomes and control routes, faults."""

from __future__ import annotations

import base64
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from minigate.simulators import Sandbox, credentials_for
from minigate.simulators.baidu import BaiduSimulator
from minigate.simulators.sandbox import REGISTRY

ID_NUMBER = "11010519491231002X"
OTHER_ID = "440524188001010014"           # valid, never registered
BAD_ID = "110105194912310021"             # wrong check character
NAME = "张三"
PHOTO = base64.b64encode(b"portrait of zhang san").decode()
OTHER = base64.b64encode(b"portrait of li si").decode()
NOFACE = base64.b64encode(b"NOFACE: a landscape").decode()

MATCH = "/baidu/rest/2.0/face/v3/match"
VERIFY = "/baidu/rest/2.0/face/v3/person/verify"
IDMATCH = "/baidu/rest/2.0/face/v3/person/idmatch"


class Client:
    def __init__(self, sandbox: Sandbox, http: httpx.AsyncClient) -> None:
        self.sandbox, self.http = sandbox, http
        self.creds = sandbox.credentials("baidu")

    @property
    def sim(self) -> BaiduSimulator:
        return self.sandbox.simulator("baidu")  # type: ignore[no-any-return]

    async def token_response(self, **params: str) -> httpx.Response:
        query = {"grant_type": "client_credentials", "client_id": self.creds["api_key"],
                 "client_secret": self.creds["secret_key"]} | params
        return await self.http.get("/baidu/oauth/2.0/token", params={k: v for k, v in query.items() if v != "-"})

    async def token(self) -> str:
        response = await self.token_response()
        assert response.status_code == 200
        return str(response.json()["access_token"])

    async def call(self, path: str, body: Any, *, token: str | None = None, raw: bytes | None = None) -> dict[str, Any]:
        token = token if token is not None else await self.token()
        params = {"access_token": token} if token else {}
        response = await self.http.post(path, params=params, json=body if raw is None else None,
                                        content=raw, headers={"Content-Type": "application/json"})
        assert response.status_code == 200
        data: dict[str, Any] = response.json()
        assert set(data) == {"error_code", "error_msg", "log_id", "timestamp", "cached", "result"}
        return data

    async def code(self, path: str, body: Any, **kwargs: Any) -> tuple[int, str]:
        data = await self.call(path, body, **kwargs)
        if data["error_code"]:
            assert data["result"] is None
        return data["error_code"], data["error_msg"]

    async def register(self, name: str = NAME, id_number: str = ID_NUMBER, photo: str | None = PHOTO) -> None:
        spec: dict[str, Any] = {"name": name, "id_number": id_number}
        if photo is not None:
            spec["photo"] = photo
        response = await self.http.post("/baidu/_sandbox/persons", json=spec)
        assert response.status_code == 200, response.text

    async def next(self, outcome: str, **extra: Any) -> None:
        response = await self.http.post("/baidu/_sandbox/next", json={"outcome": outcome} | extra)
        assert response.status_code == 200, response.text

    async def fault(self, kind: str, **extra: Any) -> None:
        response = await self.http.post("/baidu/_sandbox/faults", json={"next_call": kind} | extra)
        assert response.status_code == 200, response.text


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[Client]:
    sandbox = Sandbox(tmp_path)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=sandbox.app), base_url="http://sandbox") as http:
        c = Client(sandbox, http)
        await c.register()
        yield c


def verify_body(image: str = PHOTO, id_number: str = ID_NUMBER, name: str = NAME, **extra: Any) -> dict[str, Any]:
    return {"image": image, "image_type": "BASE64", "id_card_number": id_number, "name": name} | extra


def pair(first: str = PHOTO, second: str = PHOTO, **extra: Any) -> list[dict[str, Any]]:
    return [{"image": first, "image_type": "BASE64"} | extra, {"image": second, "image_type": "BASE64"}]


# ------------------------------------------------------------------ registry and credentials
def test_registered_and_credentials_kept(tmp_path: Path) -> None:
    assert REGISTRY["baidu"] == "minigate.simulators.baidu:BaiduSimulator"
    creds = credentials_for(tmp_path, "baidu")
    assert set(creds) == {"app_id", "api_key", "secret_key"}
    assert creds["app_id"].isdigit() and len(creds["api_key"]) == 24 and len(creds["secret_key"]) == 32
    assert credentials_for(tmp_path, "baidu") == creds


# ------------------------------------------------------------------ token endpoint
async def test_token_answer(client: Client) -> None:
    response = await client.token_response()
    body = response.json()
    assert set(body) == {"refresh_token", "expires_in", "session_key", "access_token", "scope", "session_secret"}
    assert body["expires_in"] == 2592000 and "brain_all_scope" in body["scope"].split()
    prefix, _hex, lifetime, expiry, tail = body["access_token"].split(".")
    assert (prefix, lifetime) == ("24", "2592000") and tail.endswith("-" + client.creds["app_id"])
    assert abs(int(expiry) - (time.time() + 2592000)) < 5
    assert body["refresh_token"].startswith("25.")
    assert (await client.code(IDMATCH, {"id_card_number": ID_NUMBER, "name": NAME},
                              token=body["access_token"]))[0] == 0


async def test_token_by_post_query_or_form(client: Client) -> None:
    params = {"grant_type": "client_credentials", "client_id": client.creds["api_key"],
              "client_secret": client.creds["secret_key"]}
    by_query = await client.http.post("/baidu/oauth/2.0/token", params=params)
    by_form = await client.http.post("/baidu/oauth/2.0/token", data=params)
    assert by_query.status_code == by_form.status_code == 200
    assert by_query.json()["access_token"] != by_form.json()["access_token"]
    assert len(client.sim.tokens) == 2


@pytest.mark.parametrize(("params", "status", "error", "description"), [
    ({"grant_type": "-"}, 400, "invalid_request", "Invalid Request"),
    ({"grant_type": "authorization_code"}, 400, "unsupported_grant_type",
     "The authorization grant type is not supported"),
    ({"client_id": "-"}, 401, "invalid_client", "unknown client id"),
    ({"client_id": "x" * 24}, 401, "invalid_client", "unknown client id"),
    ({"client_secret": "y" * 32}, 401, "invalid_client", "Client authentication failed"),
    ({"client_secret": "-"}, 401, "invalid_client", "Client authentication failed"),
])
async def test_token_refusals(client: Client, params: dict[str, str], status: int, error: str,
                              description: str) -> None:
    response = await client.token_response(**params)
    assert response.status_code == status
    assert response.json() == {"error": error, "error_description": description}
    assert client.sim.tokens == {}


# ------------------------------------------------------------------ access tokens on the face APIs
async def test_token_checks_on_calls(client: Client) -> None:
    body = {"id_card_number": ID_NUMBER, "name": NAME}
    assert await client.code(IDMATCH, body, token="") == (100, "Invalid parameter")
    assert await client.code(IDMATCH, body, token="24.abc") == (110, "Access token invalid or no longer valid")
    signed = await client.http.post(IDMATCH, json=body, headers={"authorization": "bce-auth-v1/ak/2024/1800/host/x"})
    assert (signed.json()["error_code"], signed.json()["error_msg"]) == (14, "IAM Certification failed")


async def test_tokens_expire_with_the_clock(client: Client) -> None:
    token = await client.token()
    body = {"id_card_number": ID_NUMBER, "name": NAME}
    client.sandbox.clock.advance(2592000 - 10)
    assert (await client.code(IDMATCH, body, token=token))[0] == 0
    client.sandbox.clock.advance(10)
    assert await client.code(IDMATCH, body, token=token) == (111, "Access token expired")
    assert (await client.code(IDMATCH, body))[0] == 0                              # a new token works


async def test_token_lifetime_is_an_attribute(client: Client) -> None:
    client.sim.token_lifetime_seconds = 60
    response = await client.token_response()
    assert response.json()["expires_in"] == 60 and ".60." in response.json()["access_token"]


async def test_clock_skew_fault_moves_expiry(client: Client) -> None:
    token = await client.token()
    assert (await client.http.post("/baidu/_sandbox/faults", json={"clock_skew_seconds": 2592001})).status_code == 200
    assert (await client.code(IDMATCH, {"id_card_number": ID_NUMBER, "name": NAME}, token=token))[0] == 111


async def test_expire_and_revoke_every_token(client: Client) -> None:
    first, second = await client.token(), await client.token()
    body = {"id_card_number": ID_NUMBER, "name": NAME}
    response = await client.http.post("/baidu/_sandbox/tokens/expire")
    assert response.json() == {"expired": 2}
    for token in (first, second):
        assert (await client.code(IDMATCH, body, token=token))[0] == 111
    fresh = await client.token()
    assert (await client.code(IDMATCH, body, token=fresh))[0] == 0
    response = await client.http.post("/baidu/_sandbox/tokens/expire", json={"revoke": True})
    assert response.json() == {"revoked": 3}
    for token in (first, fresh):
        assert (await client.code(IDMATCH, body, token=token))[0] == 110
    for bad in (b"[1]", b'{"revoke": 1}', b'{"other": true}', b"nope"):
        refused = await client.http.post("/baidu/_sandbox/tokens/expire", content=bad)
        assert refused.status_code == 400 and refused.json()["code"] == "PARAM_ERROR"


# ------------------------------------------------------------------ match
async def test_match_scores_by_content(client: Client) -> None:
    same = await client.call(MATCH, pair())
    assert same["error_code"] == 0 and same["error_msg"] == "SUCCESS" and same["cached"] == 0
    assert same["result"]["score"] >= 90 and isinstance(same["log_id"], int)
    tokens = [f["face_token"] for f in same["result"]["face_list"]]
    assert len(tokens) == 2 and tokens[0] == tokens[1] and len(tokens[0]) == 32
    other = await client.call(MATCH, pair(PHOTO, OTHER, face_type="IDCARD", liveness_control="HIGH",
                                          quality_control="NORMAL"))
    assert other["result"]["score"] <= 40
    by_token = await client.call(MATCH, [{"image": tokens[0], "image_type": "FACE_TOKEN"},
                                         {"image": PHOTO, "image_type": "BASE64"}])
    assert by_token["result"]["score"] >= 90


@pytest.mark.parametrize(("body", "expected"), [
    ({"image": PHOTO}, (222200, "request body should be json format")),
    ([{"image": PHOTO, "image_type": "BASE64"}], (222208, "the number of image is incorrect")),
    (pair() + pair()[:1], (222208, "the number of image is incorrect")),
    ([{"image": PHOTO, "image_type": "BASE64"}, "x"], (222208, "the number of image is incorrect")),
    ([{"image_type": "BASE64"}, {"image": PHOTO, "image_type": "BASE64"}], (222001, "param[image] is null")),
    ([{"image": PHOTO}, {"image": PHOTO, "image_type": "BASE64"}], (222001, "param[image_type] is null")),
    (pair(image_type="PNG"), (222015, "param[image_type] format error")),
    ([{"image": "http://x/y.jpg", "image_type": "URL"}, {"image": PHOTO, "image_type": "BASE64"}],
     (222204, "image_url_download_fail")),
    ([{"image": "0" * 32, "image_type": "FACE_TOKEN"}, {"image": PHOTO, "image_type": "BASE64"}],
     (222209, "face token not exist")),
    (pair("%%%"), (222203, "image check fail")),
    (pair("data:image/jpeg;base64," + PHOTO), (222203, "image check fail")),
    (pair(face_type="SKETCH"), (100, "Invalid parameter")),
    (pair(image=123), (100, "Invalid parameter")),
    (pair(quality_control="MAX"), (222019, "param[quality_control] format error")),
    (pair(liveness_control="MAX"), (222020, "param[liveness_control] format error")),
    (pair(NOFACE), (222202, "pic not has face")),
    (pair(PHOTO, NOFACE), (222202, "pic not has face")),
])
async def test_match_refusals(client: Client, body: Any, expected: tuple[int, str]) -> None:
    assert await client.code(MATCH, body) == expected


async def test_non_json_body(client: Client) -> None:
    for path in (MATCH, VERIFY, IDMATCH):
        assert await client.code(path, None, raw=b"image=abc") == (222200, "request body should be json format")


# ------------------------------------------------------------------ person/verify
async def test_verify_against_the_registered_photo(client: Client) -> None:
    same = await client.call(VERIFY, verify_body(liveness_control="NORMAL", quality_control="LOW",
                                                 spoofing_control="LOW"))
    assert same["error_code"] == 0 and set(same["result"]) == {"score"} and same["result"]["score"] >= 90
    assert (await client.call(VERIFY, verify_body(OTHER)))["result"]["score"] <= 40


@pytest.mark.parametrize(("body", "expected"), [
    ([verify_body()], (222200, "request body should be json format")),
    ({"image": PHOTO, "image_type": "BASE64", "name": NAME}, (222001, "param[id_card_number] is null")),
    ({"image": PHOTO, "image_type": "BASE64", "id_card_number": ID_NUMBER}, (222001, "param[name] is null")),
    (verify_body(name=""), (222001, "param[name] is null")),
    ({"image": "%%%", "image_type": "BASE64", "name": NAME}, (222001, "param[id_card_number] is null")),
    (verify_body(spoofing_control="MAX"), (100, "Invalid parameter")),
    (verify_body(id_number=BAD_ID), (222360, "name or id number illegal")),
    (verify_body(name="张三123"), (222360, "name or id number illegal")),
    (verify_body(NOFACE), (222202, "pic not has face")),
    (verify_body("@@"), (222203, "image check fail")),
    (verify_body(id_number=OTHER_ID), (222354, "id number not exist")),
    (verify_body(name="李四"), (222351, "id number and name not match or id number not exist")),
])
async def test_verify_refusals(client: Client, body: Any, expected: tuple[int, str]) -> None:
    assert await client.code(VERIFY, body) == expected


async def test_verify_without_an_authority_photo(client: Client) -> None:
    await client.register("李四", OTHER_ID, photo=None)
    assert await client.code(VERIFY, verify_body(id_number=OTHER_ID, name="李四")) == (
        222355, "police picture not exist")
    assert (await client.code(IDMATCH, {"id_card_number": OTHER_ID, "name": "李四"}))[0] == 0


# ------------------------------------------------------------------ person/idmatch
@pytest.mark.parametrize(("id_number", "name", "expected"), [
    (ID_NUMBER, NAME, (0, "SUCCESS")),
    (ID_NUMBER.lower(), f" {NAME} ", (0, "SUCCESS")),
    (ID_NUMBER, "李四", (222351, "id number and name not match or id number not exist")),
    (OTHER_ID, NAME, (222354, "id number not exist")),
    (BAD_ID, NAME, (222360, "name or id number illegal")),
    ("1101051949123", NAME, (222360, "name or id number illegal")),
    ("", NAME, (222001, "param[id_card_number] is null")),
])
async def test_idmatch(client: Client, id_number: str, name: str, expected: tuple[int, str]) -> None:
    data = await client.call(IDMATCH, {"id_card_number": id_number, "name": name})
    assert (data["error_code"], data["error_msg"]) == expected and data["result"] is None


# ------------------------------------------------------------------ control routes
async def test_persons_route(client: Client) -> None:
    for spec in ({"name": NAME}, {"name": NAME, "id_number": BAD_ID}, {"name": "x1", "id_number": OTHER_ID},
                 {"name": NAME, "id_number": OTHER_ID, "photo": "%%"}, {"name": NAME, "id_number": OTHER_ID,
                                                                       "photo": ""}):
        response = await client.http.post("/baidu/_sandbox/persons", json=spec)
        assert response.status_code == 400 and response.json()["code"] == "PARAM_ERROR"
    assert (await client.http.post("/baidu/_sandbox/persons", content=b"[]")).status_code == 400
    await client.register(NAME, ID_NUMBER, photo=OTHER)                         # re-registering replaces
    assert (await client.call(VERIFY, verify_body(OTHER)))["result"]["score"] >= 90
    assert (await client.http.delete("/baidu/_sandbox/persons")).json() == {"persons": 0}
    assert (await client.code(IDMATCH, {"id_card_number": ID_NUMBER, "name": NAME}))[0] == 222354


async def test_next_pass_and_mismatch(client: Client) -> None:
    await client.next("pass", count=3)
    assert (await client.call(MATCH, pair(PHOTO, OTHER)))["result"]["score"] >= 90
    assert (await client.call(VERIFY, verify_body(NOFACE, id_number=OTHER_ID)))["result"]["score"] >= 90
    assert (await client.code(IDMATCH, {"id_card_number": OTHER_ID, "name": NAME}))[0] == 0
    await client.next("mismatch", count=3)
    assert (await client.call(MATCH, pair()))["result"]["score"] <= 40
    assert (await client.call(VERIFY, verify_body()))["result"]["score"] <= 40
    assert (await client.code(IDMATCH, {"id_card_number": ID_NUMBER, "name": NAME}))[0] == 222351
    assert (await client.call(MATCH, pair()))["result"]["score"] >= 90                  # back to the rules


async def test_next_face_outcomes_wait_for_a_face_call(client: Client) -> None:
    await client.next("no_face")
    await client.next("liveness_failed", count=2)
    listed = (await client.http.get("/baidu/_sandbox/next")).json()["next"]
    assert [(n["outcome"], n["count"]) for n in listed] == [("no_face", 1), ("liveness_failed", 2)]
    assert (await client.code(IDMATCH, {"id_card_number": ID_NUMBER, "name": NAME}))[0] == 0  # left queued
    assert await client.code(VERIFY, verify_body()) == (222202, "pic not has face")
    assert await client.code(MATCH, pair()) == (223120, "liveness check fail")
    assert await client.code(VERIFY, verify_body()) == (223120, "liveness check fail")
    assert (await client.code(VERIFY, verify_body()))[0] == 0


async def test_next_does_not_hide_parameter_errors(client: Client) -> None:
    await client.next("pass")
    assert (await client.code(VERIFY, verify_body(image_type="PNG")))[0] == 222015
    assert (await client.http.get("/baidu/_sandbox/next")).json()["next"][0]["outcome"] == "pass"
    assert (await client.http.delete("/baidu/_sandbox/next")).json() == {"next": []}


async def test_next_timeout(client: Client) -> None:
    token = await client.token()
    await client.next("timeout")
    late = await client.http.post(MATCH, params={"access_token": token}, json=pair())
    assert late.status_code == 504
    await client.next("timeout", seconds=0.05)
    started = time.monotonic()
    answer = await client.call(MATCH, pair(), token=token)
    assert time.monotonic() - started >= 0.05 and answer["result"]["score"] >= 90


@pytest.mark.parametrize("spec", [
    {}, {"outcome": "maybe"}, {"outcome": "pass", "count": 0}, {"outcome": "pass", "count": True},
    {"outcome": "pass", "seconds": -1}, {"outcome": "pass", "extra": 1},
])
async def test_next_validation(client: Client, spec: dict[str, Any]) -> None:
    response = await client.http.post("/baidu/_sandbox/next", json=spec)
    assert response.status_code == 400 and response.json()["code"] == "PARAM_ERROR"


# ------------------------------------------------------------------ faults
@pytest.mark.parametrize(("kind", "status"), [("http_500", 500), ("http_429", 429), ("bad_signature", 500)])
async def test_call_faults(client: Client, kind: str, status: int) -> None:
    token = await client.token()
    await client.fault(kind, path="/rest/2.0/face/v3/match")
    assert (await client.code(IDMATCH, {"id_card_number": ID_NUMBER, "name": NAME}, token=token))[0] == 0
    response = await client.http.post(MATCH, params={"access_token": token}, json=pair())
    assert response.status_code == status
    assert (await client.call(MATCH, pair(), token=token))["error_code"] == 0


async def test_faults_after_token_checks(client: Client) -> None:
    await client.fault("http_500", path="/rest")
    assert (await client.code(MATCH, pair(), token="24.unknown"))[0] == 110               # not consumed
    token = await client.token()
    assert (await client.http.post(MATCH, params={"access_token": token}, json=pair())).status_code == 500


async def test_timeout_faults(client: Client) -> None:
    token = await client.token()
    await client.fault("timeout", path="/rest", seconds=0.01)
    assert (await client.http.post(MATCH, params={"access_token": token}, json=pair())).status_code == 504
    await client.fault("charged_then_timeout", path="/rest", seconds=0.01)
    answer = await client.http.post(MATCH, params={"access_token": token}, json=pair(OTHER, OTHER))
    assert answer.status_code == 504
    assert len(client.sim.face_tokens) == 1                                 # the comparison ran


async def test_token_endpoint_faults(client: Client) -> None:
    await client.fault("http_500", path="/oauth")
    assert (await client.token_response()).status_code == 500
    await client.fault("charged_then_timeout", path="/oauth", seconds=0.01)
    assert (await client.token_response()).status_code == 504
    assert len(client.sim.tokens) == 1                                      # issued, answer lost

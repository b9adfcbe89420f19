"""Interop: the official ``baidu-aip`` SDK (``aip.AipFace``) against ``minigate sandbox serve --only baidu``.

The server is a real subprocess on a free loopback port. The SDK's URLs are private class attributes, so they are
overridden on the instance under their mangled names: ``_AipBase__accessTokenUrl`` (``AipBase._auth`` fetches
the token with ``GET`` and the API Key/Secret Key as query parameters) and ``_AipFace__matchUrl``,
``_AipFace__personVerifyUrl``, ``_AipFace__facePersonIdmatchV3Url``. The SDK posts the JSON body with
``access_token``, ``aipSdk`` and ``aipVersion`` in the query string (``_request``/``_proccessRequest``); it uses
``access_token`` only because the token's ``scope`` names ``brain_all_scope`` (``_isPermission``), otherwise it
would sign with ``bce-auth-v1``. It renews the token by its own clock 30 s before ``expires_in`` runs out, and on
``error_code == 110`` fetches a new one and retries once -- but not on ``111``, which it hands to the caller.

``aip/__init__`` imports ``aip.nlp``, which imports ``chardet`` although baidu-aip does not declare it; AipFace never
uses it, so when it is absent an empty module stands in for it while ``aip`` is imported (and only then).
"""

from __future__ import annotations

import base64
import importlib.util
import sys
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import requests  # noqa: F401  (first: requests must settle on its own charset detector, not the stand-in)

if importlib.util.find_spec("chardet") is None:                    # see the module docstring
    sys.modules["chardet"] = types.ModuleType("chardet", "stand-in: aip.nlp imports it, AipFace does not use it")
    from aip import AipFace
    del sys.modules["chardet"]                                      # nothing else may pick the stand-in up
else:
    from aip import AipFace

from minigate.simulators import credentials_for
from tests.interop import sandbox_process

ID_NUMBER = "11010519491231002X"
NAME = "张三"
PHOTO = base64.b64encode(b"portrait of zhang san").decode()
OTHER = base64.b64encode(b"portrait of somebody else").decode()


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, dict[str, str]]]:
    state_dir: Path = tmp_path_factory.mktemp("interop-baidu")
    creds = credentials_for(state_dir, "baidu")
    with sandbox_process("baidu", state_dir) as base:
        registered = httpx.post(base + "/_sandbox/persons", json={"name": NAME, "id_number": ID_NUMBER,
                                                                  "photo": PHOTO})
        assert registered.status_code == 200
        yield base, creds


def sdk(base: str, creds: dict[str, str], *, secret_key: str | None = None, api_key: str | None = None) -> AipFace:
    client = AipFace(creds["app_id"], api_key or creds["api_key"], secret_key or creds["secret_key"])
    client._AipBase__accessTokenUrl = base + "/oauth/2.0/token"
    client._AipFace__matchUrl = base + "/rest/2.0/face/v3/match"
    client._AipFace__personVerifyUrl = base + "/rest/2.0/face/v3/person/verify"
    client._AipFace__facePersonIdmatchV3Url = base + "/rest/2.0/face/v3/person/idmatch"
    return client


def envelope_ok(answer: dict[str, Any]) -> None:
    assert answer["error_code"] == 0 and answer["error_msg"] == "SUCCESS", answer
    assert isinstance(answer["log_id"], int) and isinstance(answer["timestamp"], int) and answer["cached"] == 0


def test_sdk_gets_a_token_and_runs_match_and_person_verify(sandbox: tuple[str, dict[str, str]]) -> None:
    base, creds = sandbox
    client = sdk(base, creds)
    same = client.match([{"image": PHOTO, "image_type": "BASE64", "face_type": "LIVE", "liveness_control": "LOW"},
                         {"image": PHOTO, "image_type": "BASE64", "face_type": "IDCARD"}])
    envelope_ok(same)
    assert same["result"]["score"] >= 90 and len(same["result"]["face_list"]) == 2
    auth = client._authObj
    assert auth["expires_in"] == 2592000 and auth["access_token"].startswith("24.")
    assert auth["access_token"].endswith("-" + creds["app_id"]) and "brain_all_scope" in auth["scope"].split()
    assert client._isCloudUser is False                          # access_token in the URL, not bce-auth-v1

    other = client.match([{"image": PHOTO, "image_type": "BASE64"}, {"image": OTHER, "image_type": "BASE64"}])
    envelope_ok(other)
    assert other["result"]["score"] <= 40
    token = same["result"]["face_list"][0]["face_token"]         # a face token stands in for the image
    by_token = client.match([{"image": token, "image_type": "FACE_TOKEN"}, {"image": PHOTO, "image_type": "BASE64"}])
    assert by_token["result"]["score"] >= 90

    verified = client.personVerify(PHOTO, "BASE64", ID_NUMBER, NAME, {"liveness_control": "NORMAL",
                                                                      "quality_control": "LOW"})
    envelope_ok(verified)
    assert verified["result"]["score"] >= 90
    assert client.personVerify(OTHER, "BASE64", ID_NUMBER, NAME)["result"]["score"] <= 40
    assert client.facePersonIdmatchV3(ID_NUMBER, NAME)["error_code"] == 0
    assert auth is client._authObj                                # one token served every call


def test_sdk_sees_verdict_codes(sandbox: tuple[str, dict[str, str]]) -> None:
    base, creds = sandbox
    client = sdk(base, creds)
    noface = client.personVerify(base64.b64encode(b"NOFACE here").decode(), "BASE64", ID_NUMBER, NAME)
    assert (noface["error_code"], noface["error_msg"], noface["result"]) == (222202, "pic not has face", None)
    assert client.facePersonIdmatchV3(ID_NUMBER, "李四")["error_code"] == 222351
    assert client.facePersonIdmatchV3("440524188001010014", NAME)["error_code"] == 222354
    assert client.facePersonIdmatchV3("110105194912310021", NAME)["error_code"] == 222360
    assert client.personVerify("%%%", "BASE64", ID_NUMBER, NAME)["error_code"] == 222203
    assert httpx.post(base + "/_sandbox/next", json={"outcome": "liveness_failed"}).status_code == 200
    assert client.personVerify(PHOTO, "BASE64", ID_NUMBER, NAME)["error_code"] == 223120


def test_sdk_refreshes_a_revoked_token_on_110(sandbox: tuple[str, dict[str, str]]) -> None:
    base, creds = sandbox
    client = sdk(base, creds)
    envelope_ok(client.facePersonIdmatchV3(ID_NUMBER, NAME))
    first = client._authObj["access_token"]
    assert httpx.post(base + "/_sandbox/tokens/expire", json={"revoke": True}).json()["revoked"] >= 1
    answer = client.facePersonIdmatchV3(ID_NUMBER, NAME)          # 110, new token, retried by the SDK
    envelope_ok(answer)
    assert client._authObj["access_token"] != first


def test_sdk_hands_111_to_the_caller_and_renews_by_its_own_clock(sandbox: tuple[str, dict[str, str]]) -> None:
    base, creds = sandbox
    client = sdk(base, creds)
    envelope_ok(client.facePersonIdmatchV3(ID_NUMBER, NAME))
    first = client._authObj["access_token"]
    assert httpx.post(base + "/_sandbox/tokens/expire").json()["expired"] >= 1
    expired = client.facePersonIdmatchV3(ID_NUMBER, NAME)
    assert (expired["error_code"], expired["error_msg"]) == (111, "Access token expired")
    client._authObj["time"] -= 2592000                            # the SDK's clock says the token ran out
    envelope_ok(client.facePersonIdmatchV3(ID_NUMBER, NAME))
    assert client._authObj["access_token"] != first


@pytest.mark.parametrize(("kwargs", "description"), [
    ({"api_key": "x" * 24}, "unknown client id"),
    ({"secret_key": "y" * 32}, "Client authentication failed"),
])
def test_sdk_sees_refused_credentials(sandbox: tuple[str, dict[str, str]], kwargs: dict[str, str],
                                      description: str) -> None:
    base, creds = sandbox
    client = sdk(base, creds, **kwargs)
    answer = client.facePersonIdmatchV3(ID_NUMBER, NAME)
    assert client._authObj == {"error": "invalid_client", "error_description": description,
                               "time": client._authObj["time"]}
    # without a token scope the SDK falls back to bce-auth-v1 signing, which the sandbox application cannot pass
    assert client._isCloudUser is True
    assert (answer["error_code"], answer["error_msg"], answer["result"]) == (14, "IAM Certification failed", None)

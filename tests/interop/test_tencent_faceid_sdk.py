"""Interop: the official ``tencentcloud-sdk-python`` FaceidClient against ``minigate sandbox serve --only tencentcloud``.

The server is a real subprocess on a free loopback port; the SDK signs ``Host: 127.0.0.1:<port>`` with service
``faceid`` and the simulator verifies it as sent. Errors arrive as HTTP 200 ``Response.Error`` and the SDK raises
them as ``TencentCloudSDKException``; its nested models (``DetectInfoText``, ``DetectDetail``,
``DetectInfoIdCardData`` ...) warn on unknown fields, and pytest turns warnings into errors, so every answer must
have exactly the SDK's fields.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from tencentcloud.common import credential
from tencentcloud.common.exception.tencent_cloud_sdk_exception import TencentCloudSDKException
from tencentcloud.common.profile.client_profile import ClientProfile
from tencentcloud.common.profile.http_profile import HttpProfile
from tencentcloud.faceid.v20180301 import models
from tencentcloud.faceid.v20180301.faceid_client import FaceidClient

from minigate.simulators import credentials_for
from tests.interop import sandbox_process

NAME, ID = "张三", "11010519491231002X"
PHOTO = base64.b64encode(b"\xff\xd8\xff face of zhang san").decode()


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, dict[str, str]]]:
    state_dir = tmp_path_factory.mktemp("interop-faceid")
    creds = credentials_for(state_dir, "tencentcloud")
    with sandbox_process("tencentcloud", state_dir) as base:
        r = httpx.post(base + "/_sandbox/persons", json={"name": NAME, "id_number": ID, "photo": PHOTO})
        assert r.status_code == 200, r.text
        yield base, creds


def sdk(base: str, creds: dict[str, str], *, secret_id: str | None = None, secret_key: str | None = None,
        method: str = "POST") -> FaceidClient:
    cred = credential.Credential(secret_id or creds["secret_id"], secret_key or creds["secret_key"])
    http = HttpProfile(protocol="http", endpoint=base.removeprefix("http://"), reqMethod=method, reqTimeout=10)
    return FaceidClient(cred, "", ClientProfile(httpProfile=http))


def id_request(name: str = NAME, id_number: str = ID) -> models.IdCardVerificationRequest:
    req = models.IdCardVerificationRequest()
    req.IdCard, req.Name = id_number, name
    return req


def detect_auth(creds: dict[str, str], **extra: str) -> models.DetectAuthRequest:
    req = models.DetectAuthRequest()
    req.RuleId, req.IdCard, req.Name, req.Extra = creds["faceid_rule_id"], ID, NAME, "ver_sdk"
    for key, value in extra.items():
        setattr(req, key, value)
    return req


def result_request(creds: dict[str, str], token: str, info_type: str) -> models.GetDetectInfoEnhancedRequest:
    req = models.GetDetectInfoEnhancedRequest()
    req.BizToken, req.RuleId, req.InfoType = token, creds["faceid_rule_id"], info_type
    return req


@pytest.mark.parametrize("method", ["POST", "GET"])
def test_sdk_id_card_verification(sandbox: tuple[str, dict[str, str]], method: str) -> None:
    base, creds = sandbox
    client = sdk(base, creds, method=method)
    match = client.IdCardVerification(id_request())
    assert (match.Result, match.Description) == ("0", "姓名和身份证号一致") and len(match.RequestId) == 36
    assert client.IdCardVerification(id_request(name="李四")).Result == "-1"
    assert client.IdCardVerification(id_request(id_number="440524188001010014")).Result == "-5"
    assert client.IdCardVerification(id_request(id_number=ID.lower())).Result == "-2"


def test_sdk_face_session_from_detect_auth_to_the_verdict(sandbox: tuple[str, dict[str, str]]) -> None:
    base, creds = sandbox
    client = sdk(base, creds)
    started = client.DetectAuth(detect_auth(creds, TerminalType="tinyappsdk"))
    token = started.BizToken
    assert len(token) == 36 and started.Url.endswith(f"/_sandbox/faceid/sessions/{token}")
    pending = client.GetDetectInfoEnhanced(result_request(creds, token, "1")).Text
    assert (pending.ErrCode, pending.ErrMsg, pending.LiveStatus, pending.Sim) == (17, "本次流程未完成", None, None)

    done = httpx.post(base + "/_sandbox/faceid/complete", json={"biz_token": token, "photo": PHOTO})
    assert done.json() == {"biz_token": token, "outcome": "pass", "err_code": 0}

    answer = client.GetDetectInfoEnhanced(result_request(creds, token, "0"))        # every part the SDK knows
    text = answer.Text
    assert (text.ErrCode, text.LiveStatus, text.Comparestatus, text.Extra, text.IdCard, text.Name) == (
        0, 0, 0, "ver_sdk", ID, NAME)
    assert float(text.Sim) >= 90 and text.LivenessMode == 3
    [detail] = text.LivenessDetail
    assert (detail.Errcode, detail.Livestatus, detail.Sim, detail.IsNeedCharge) == (0, 0, text.Sim, True)
    assert answer.BestFrame.BestFrame == PHOTO and answer.IdCardData.OcrFront is None
    assert answer.VideoData.LivenessVideo is None
    text_only = client.GetDetectInfoEnhanced(result_request(creds, token, "1"))
    assert text_only.Text.ErrCode == 0 and text_only.BestFrame is None and text_only.VideoData is None

    legacy = models.GetDetectInfoRequest()
    legacy.BizToken, legacy.RuleId, legacy.InfoType = token, creds["faceid_rule_id"], "1"
    assert json.loads(client.GetDetectInfo(legacy).DetectInfo)["Text"]["ErrCode"] == 0


def test_sdk_face_session_that_fails_liveness(sandbox: tuple[str, dict[str, str]]) -> None:
    base, creds = sandbox
    client = sdk(base, creds)
    token = client.DetectAuth(detect_auth(creds)).BizToken
    assert httpx.post(base + "/_sandbox/faceid/complete",
                      json={"biz_token": token, "outcome": "liveness_failed"}).status_code == 200
    text = client.GetDetectInfoEnhanced(result_request(creds, token, "1")).Text
    assert (text.ErrCode, text.LiveStatus, text.Comparestatus, text.Sim) == (1002, 1002, None, None)


@pytest.mark.parametrize(("kwargs", "code"), [
    ({"secret_key": "x" * 32}, "AuthFailure.SignatureFailure"),
    ({"secret_id": "AKID" + "0" * 32}, "AuthFailure.SecretIdNotFound"),
])
def test_sdk_sees_refused_credentials(sandbox: tuple[str, dict[str, str]], kwargs: dict[str, str], code: str) -> None:
    base, creds = sandbox
    with pytest.raises(TencentCloudSDKException) as info:
        sdk(base, creds, **kwargs).IdCardVerification(id_request())
    assert info.value.get_code() == code and len(info.value.get_request_id()) == 36


def test_sdk_sees_business_refusals(sandbox: tuple[str, dict[str, str]]) -> None:
    base, creds = sandbox
    client = sdk(base, creds)
    cases: list[tuple[Callable[[], Any], str]] = [
        (lambda: client.DetectAuth(detect_auth(creds, RuleId="999")), "InvalidParameterValue.RuleIdNotExist"),
        (lambda: client.DetectAuth(detect_auth(creds, IdCard=ID.lower())), "FailedOperation.IdFormatError"),
        (lambda: client.DetectAuth(detect_auth(creds, ImageBase64="not base64!")),
         "FailedOperation.ImageDecodeFailed"),
        (lambda: client.GetDetectInfoEnhanced(result_request(creds, "NOT-A-TOKEN", "1")),
         "InvalidParameterValue.BizTokenIllegal"),
    ]
    for call, code in cases:
        with pytest.raises(TencentCloudSDKException) as info:
            call()
        assert info.value.get_code() == code

"""Interop: the official ``tencentcloud-sdk-python`` SmsClient against ``minigate sandbox serve --only tencentcloud``.

The server is a real subprocess on a free loopback port. The SDK takes its endpoint from
``HttpProfile(endpoint=...)`` (``AbstractClient._get_endpoint``) and builds ``http://`` URLs when the profile's
scheme is ``http`` (``ApiRequest._handle_host``); it signs ``Host: 127.0.0.1:<port>``, which the simulator
verifies as sent. Errors arrive as HTTP 200 ``Response.Error`` and the SDK raises them as
``TencentCloudSDKException`` with Tencent's code (``AbstractClient._check_error``); its models warn on unknown
answer fields, and pytest turns warnings into errors, so every answer must have exactly the SDK's fields.
"""

from __future__ import annotations

import json
import time
import types
from collections.abc import Iterator

import httpx
import pytest
from tencentcloud.common import abstract_client, credential
from tencentcloud.common.exception.tencent_cloud_sdk_exception import TencentCloudSDKException
from tencentcloud.common.http.request import RequestInternal
from tencentcloud.common.profile.client_profile import ClientProfile
from tencentcloud.common.profile.http_profile import HttpProfile
from tencentcloud.sms.v20210111 import models
from tencentcloud.sms.v20210111.sms_client import SmsClient

from minigate.providers.tencentcloud import signing
from minigate.simulators import credentials_for
from tests.interop import sandbox_process

PHONE = "+8613800138000"


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, dict[str, str]]]:
    state_dir = tmp_path_factory.mktemp("interop-tencentcloud")
    creds = credentials_for(state_dir, "tencentcloud")
    with sandbox_process("tencentcloud", state_dir) as base:
        yield base, creds


def sdk(base: str, creds: dict[str, str], *, secret_id: str | None = None, secret_key: str | None = None,
        method: str = "POST") -> SmsClient:
    cred = credential.Credential(secret_id or creds["secret_id"], secret_key or creds["secret_key"])
    http = HttpProfile(protocol="http", endpoint=base.removeprefix("http://"), reqMethod=method, reqTimeout=10)
    return SmsClient(cred, "ap-guangzhou", ClientProfile(httpProfile=http))


def send_request(creds: dict[str, str], *numbers: str, template: str = "verification_code",
                 params: tuple[str, ...] = ("135790", "5"), session: str = "msg_sdk") -> models.SendSmsRequest:
    req = models.SendSmsRequest()
    req.PhoneNumberSet = list(numbers or [PHONE])
    req.SmsSdkAppId = creds["sms_sdk_app_id"]
    req.SignName = creds["sign_name"]
    req.TemplateId = str(creds["templates"][template])          # type: ignore[index]
    req.TemplateParamSet = list(params)
    req.SessionContext = session
    return req


def test_sdk_sends_and_the_message_reaches_the_phone(sandbox: tuple[str, dict[str, str]]) -> None:
    base, creds = sandbox
    response = sdk(base, creds).SendSms(send_request(creds))
    [status] = response.SendStatusSet
    assert (status.Code, status.PhoneNumber, status.Fee, status.SessionContext, status.IsoCode) == (
        "Ok", PHONE, 1, "msg_sdk", "CN")
    assert len(response.RequestId) == 36
    [message] = httpx.get(base + "/_sandbox/messages", params={"phone": PHONE}).json()["messages"]
    assert message["id"] == status.SerialNo and message["out_id"] == "msg_sdk"
    assert message["text"] == f"【{creds['sign_name']}】您的验证码为135790，5分钟内有效，请勿泄露于他人。"

    again = sdk(base, creds).SendSms(send_request(creds))              # per-number limit inside a 200 answer
    assert again.SendStatusSet[0].Code == "LimitExceeded.PhoneNumberThirtySecondLimit"
    assert again.SendStatusSet[0].SerialNo == "" and again.SendStatusSet[0].Fee == 0

    query = models.PullSmsSendStatusByPhoneNumberRequest()
    query.BeginTime, query.Offset, query.Limit = int(time.time()) - 60, 0, 100
    query.PhoneNumber, query.SmsSdkAppId = PHONE, creds["sms_sdk_app_id"]
    deadline = time.monotonic() + 10
    while True:                                                          # the receipt comes after a scaled second
        rows = sdk(base, creds).PullSmsSendStatusByPhoneNumber(query).PullSmsSendStatusSet
        if rows or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    [row] = rows
    assert (row.SerialNo, row.ReportStatus, row.SessionContext, row.SubscriberNumber) == (
        status.SerialNo, "SUCCESS", "msg_sdk", "13800138000")


def test_sdk_get_requests(sandbox: tuple[str, dict[str, str]]) -> None:
    base, creds = sandbox
    client = sdk(base, creds, method="GET")
    [status] = client.SendSms(send_request(creds, "+8613700137000", template="order_paid",
                                           params=("A-1", "9.90"))).SendStatusSet
    assert status.Code == "Ok"
    pull = models.PullSmsSendStatusRequest()
    pull.Limit, pull.SmsSdkAppId = 100, creds["sms_sdk_app_id"]
    assert isinstance(client.PullSmsSendStatus(pull).PullSmsSendStatusSet, list)


@pytest.mark.parametrize(("kwargs", "code"), [
    ({"secret_key": "x" * 32}, "AuthFailure.SignatureFailure"),
    ({"secret_id": "AKID" + "0" * 32}, "AuthFailure.SecretIdNotFound"),
])
def test_sdk_sees_refused_credentials(sandbox: tuple[str, dict[str, str]], kwargs: dict[str, str], code: str) -> None:
    base, creds = sandbox
    with pytest.raises(TencentCloudSDKException) as info:
        sdk(base, creds, **kwargs).SendSms(send_request(creds, "+8613900139000"))
    assert info.value.get_code() == code and len(info.value.get_request_id()) == 36


def test_sdk_sees_business_refusals(sandbox: tuple[str, dict[str, str]]) -> None:
    base, creds = sandbox
    bad_template = send_request(creds, "+8613900139000")
    bad_template.TemplateId = "1"
    with pytest.raises(TencentCloudSDKException) as info:
        sdk(base, creds).SendSms(bad_template)
    assert info.value.get_code() == "FailedOperation.TemplateIncorrectOrUnapproved"
    with pytest.raises(TencentCloudSDKException) as info:
        sdk(base, creds).SendSms(send_request(creds, "+8613900139000", params=("135790",)))
    assert info.value.get_code() == "FailedOperation.TemplateParamSetNotMatchApprovedTemplate"
    assert httpx.get(base + "/_sandbox/messages", params={"phone": "+8613900139000"}).json()["messages"] == []


def test_our_signer_reproduces_the_sdk_authorization(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(abstract_client, "time", types.SimpleNamespace(time=lambda: 1700000000))
    http = HttpProfile(endpoint="sms.tencentcloudapi.com")
    client = SmsClient(credential.Credential("AKIDEXAMPLE", "SECRETEXAMPLE"), "ap-guangzhou",
                       ClientProfile(httpProfile=http))
    params = {"PhoneNumberSet": ["+8613800000000"], "SmsSdkAppId": "1400006666", "SignName": "腾讯云",
              "TemplateId": "1234", "TemplateParamSet": ["123456"]}
    req = RequestInternal("sms.tencentcloudapi.com", "POST", "/", header={})
    client._build_req_inter("SendSms", params, req)
    assert req.header["X-TC-Timestamp"] == "1700000000" and req.data == json.dumps(params)
    ours = signing.tc3_authorization(secret_id="AKIDEXAMPLE", secret_key="SECRETEXAMPLE", service="sms",
                                     timestamp=1700000000, headers=req.header, payload=req.data.encode())
    assert ours == req.header["Authorization"]
    assert ours.startswith("TC3-HMAC-SHA256 Credential=AKIDEXAMPLE/2023-11-14/sms/tc3_request, "
                           "SignedHeaders=content-type;host, Signature=")
    # the SDK's GET form: the query is the canonical query string, the payload is empty
    get = RequestInternal("sms.tencentcloudapi.com", "GET", "/", header={})
    client._build_req_inter("PullSmsSendStatus", {"Limit": 10, "SmsSdkAppId": "1400006666"}, get)
    ours_get = signing.tc3_authorization(secret_id="AKIDEXAMPLE", secret_key="SECRETEXAMPLE", service="sms",
                                         timestamp=1700000000, headers=get.header, method="GET", query=get.data)
    assert ours_get == get.header["Authorization"]

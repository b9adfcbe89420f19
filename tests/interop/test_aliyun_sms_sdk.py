"""Interop: the official ``alibabacloud-dysmsapi20170525`` client against ``minigate sandbox serve --only aliyun-sms``.

The server is a real subprocess on a free port. The client takes ``endpoint="127.0.0.1:<port>"`` and
``protocol="http"``; it then sends ``host: 127.0.0.1:<port>`` and signs that value, which is what the simulator
verifies (it reads each signed header as it arrived). By default the SDK signs V3 (ACS3-HMAC-SHA256 over *every*
header it sends: accept and user-agent included); with ``signature_algorithm="v2"`` it signs RPC V2 (HMAC-SHA1
``Signature`` in the query, ``Format=json`` in lower case). Gateway refusals reach the caller as the SDK's own
``ClientException`` (4xx) / ``ServerException`` (5xx) with the simulator's ``Code``.

The signer checks wrap ``DaraCore.do_action`` to capture the exact request the SDK sent, then recompute its
``Authorization`` / ``Signature`` with :mod:`minigate.providers.aliyun_sms.signing`; one more compares with the
SDK's ``Utils.get_authorization`` on fixed inputs.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from alibabacloud_dysmsapi20170525 import models
from alibabacloud_dysmsapi20170525.client import Client
from alibabacloud_tea_openapi import utils_models
from alibabacloud_tea_openapi.exceptions import ClientException, ServerException
from alibabacloud_tea_openapi.utils import Utils
from darabonba.core import DaraCore
from darabonba.request import DaraRequest

from minigate.providers.aliyun_sms import signing
from minigate.simulators import credentials_for
from tests.interop import sandbox_process

BEIJING = dt.timezone(dt.timedelta(hours=8))


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, dict[str, Any]]]:
    state_dir = tmp_path_factory.mktemp("interop-aliyun-sms")
    creds: dict[str, Any] = dict(credentials_for(state_dir, "aliyun-sms"))
    with sandbox_process("aliyun-sms", state_dir) as base:
        yield base, creds


def client(sandbox: tuple[str, dict[str, Any]], *, secret: str | None = None, key_id: str | None = None,
           algorithm: str | None = None) -> Client:
    base, creds = sandbox
    config = utils_models.Config(access_key_id=key_id or creds["access_key_id"],
                                 access_key_secret=secret or creds["access_key_secret"],
                                 endpoint=base.removeprefix("http://"), protocol="http")
    if algorithm is not None:
        config.signature_algorithm = algorithm
    return Client(config)


def send_request(creds: dict[str, Any], phone: str, out_id: str) -> models.SendSmsRequest:
    return models.SendSmsRequest(phone_numbers=phone, sign_name=creds["sign_name"],
                                 template_code=creds["templates"]["verification_code"],
                                 template_param=json.dumps({"code": "864209", "minutes": "5"}), out_id=out_id)


def phone_messages(base: str, phone: str) -> list[dict[str, Any]]:
    return list(httpx.get(f"{base}/_sandbox/messages", params={"phone": phone}).json()["messages"])


def today() -> str:
    return dt.datetime.now(BEIJING).strftime("%Y%m%d")


@pytest.fixture
def captured(monkeypatch: pytest.MonkeyPatch) -> list[DaraRequest]:
    """Every request the SDK sends, exactly as it sent it."""
    seen: list[DaraRequest] = []
    original = DaraCore.do_action

    def recording(request: DaraRequest, runtime_option: Any = None) -> Any:
        seen.append(request)
        return original(request, runtime_option)

    monkeypatch.setattr(DaraCore, "do_action", staticmethod(recording))
    return seen


@pytest.mark.parametrize(("algorithm", "phone"), [(None, "13800138101"), ("v2", "13800138102")])
def test_sdk_sends_and_queries(sandbox: tuple[str, dict[str, Any]], algorithm: str | None, phone: str) -> None:
    base, creds = sandbox
    sdk = client(sandbox, algorithm=algorithm)
    sent = sdk.send_sms(send_request(creds, phone, f"interop-{phone}"))
    assert sent.status_code == 200
    assert sent.body.code == "OK" and sent.body.message == "OK" and sent.body.biz_id.endswith("^0")
    [message] = phone_messages(base, phone)
    assert message["text"] == "【迷你网关】您的验证码为864209，5分钟内有效，请勿泄露于他人。"
    assert message["id"] == sent.body.biz_id and message["out_id"] == f"interop-{phone}"
    found = sdk.query_send_details(models.QuerySendDetailsRequest(phone_number=phone, send_date=today(),
                                                                  page_size=10, current_page=1))
    assert found.body.code == "OK" and found.body.total_count == "1"
    [row] = found.body.sms_send_detail_dtos.sms_send_detail_dto
    assert row.out_id == f"interop-{phone}" and row.phone_num == phone and row.send_status in (1, 3)
    assert row.template_code == creds["templates"]["verification_code"] and row.content == message["text"]
    again = sdk.send_sms(send_request(creds, phone, "interop-again"))
    assert again.body.code == "isv.BUSINESS_LIMIT_CONTROL" and again.body.message == "触发分钟级流控Permits:1"
    assert again.body.biz_id is None


def test_sdk_send_batch_sms_posts_a_form(sandbox: tuple[str, dict[str, Any]], captured: list[DaraRequest]) -> None:
    base, creds = sandbox
    phones = ["13800138201", "13800138202"]
    sent = client(sandbox).send_batch_sms(models.SendBatchSmsRequest(
        phone_number_json=json.dumps(phones), sign_name_json=json.dumps([creds["sign_name"]] * 2, ensure_ascii=False),
        template_code=creds["templates"]["order_shipped"],
        template_param_json=json.dumps([{"order": "A1", "carrier": "顺丰", "tracking": "SF1"},
                                        {"order": "A2", "carrier": "京东", "tracking": "JD2"}], ensure_ascii=False)))
    assert sent.body.code == "OK", sent.body.message
    assert captured[-1].headers["content-type"] == "application/x-www-form-urlencoded" and captured[-1].body
    assert phone_messages(base, phones[1])[0]["text"] == "【迷你网关】您的订单A2已发货，京东运单号JD2。"


def test_business_refusal_is_a_200_answer(sandbox: tuple[str, dict[str, Any]]) -> None:
    _, creds = sandbox
    request = send_request(creds, "13800138301", "x")
    request.template_code = "SMS_000000001"
    answer = client(sandbox).send_sms(request)
    assert answer.status_code == 200 and answer.body.code == "isv.SMS_TEMPLATE_ILLEGAL" and answer.body.request_id


@pytest.mark.parametrize("algorithm", [None, "v2"])
def test_wrong_secret_and_unknown_key_raise_the_sdk_exception(sandbox: tuple[str, dict[str, Any]],
                                                              algorithm: str | None) -> None:
    base, creds = sandbox
    with pytest.raises(ClientException) as info:
        client(sandbox, secret="not-the-secret", algorithm=algorithm).send_sms(
            send_request(creds, "13800138401", "bad"))
    assert info.value.code == "SignatureDoesNotMatch" and info.value.status_code == 400
    assert info.value.data["HostId"] == "dysmsapi.aliyuncs.com" and info.value.request_id
    with pytest.raises(ClientException) as info:
        client(sandbox, key_id="LTAInobody", algorithm=algorithm).send_sms(send_request(creds, "13800138401", "bad"))
    assert info.value.code == "InvalidAccessKeyId.NotFound" and info.value.status_code == 404
    assert phone_messages(base, "13800138401") == []


def test_server_fault_raises_server_exception(sandbox: tuple[str, dict[str, Any]]) -> None:
    base, creds = sandbox
    assert httpx.post(f"{base}/_sandbox/faults", json={"next_call": "http_500", "path": "SendSms"}).status_code == 200
    with pytest.raises(ServerException) as info:
        client(sandbox).send_sms(send_request(creds, "13800138501", "fault"))
    assert info.value.code == "InternalError" and info.value.status_code == 500


def test_our_signers_reproduce_what_the_sdk_sent(sandbox: tuple[str, dict[str, Any]],
                                                  captured: list[DaraRequest]) -> None:
    _, creds = sandbox
    secret = creds["access_key_secret"]
    client(sandbox).send_sms(send_request(creds, "13800138601", "sig-v3"))
    v3 = captured[-1]
    headers = {k: v for k, v in v3.headers.items() if k != "Authorization"}
    assert headers["host"].startswith("127.0.0.1:")
    ours = signing.acs3_authorization(method=v3.method, query=v3.query, headers=headers,
                                      access_key_id=creds["access_key_id"], access_key_secret=secret,
                                      payload_hash=headers["x-acs-content-sha256"], signed_headers=list(headers))
    assert ours == v3.headers["Authorization"]
    assert "accept;host;user-agent;x-acs-action" in ours            # the SDK signs every header it sends

    client(sandbox, algorithm="v2").send_sms(send_request(creds, "13800138602", "sig-rpc"))
    rpc = captured[-1]
    assert rpc.query["Format"] == "json" and rpc.query["SignatureMethod"] == "HMAC-SHA1"
    assert signing.rpc_signature(rpc.method, rpc.query, secret) == rpc.query["Signature"]


def test_acs3_signer_matches_sdk_utils_for_fixed_inputs() -> None:
    request = DaraRequest()
    request.method = "POST"
    request.pathname = "/"
    request.query = {"PhoneNumbers": "13800000000", "SignName": "阿里云短信测试", "TemplateCode": "SMS_154950909",
                     "TemplateParam": '{"code":"1234"}', "OutId": "a b*c~"}
    request.headers = {"host": "dysmsapi.aliyuncs.com", "x-acs-version": "2017-05-25", "x-acs-action": "SendSms",
                       "user-agent": "AlibabaCloud (Linux) Python/3.11", "x-acs-date": "2024-01-01T00:00:00Z",
                       "x-acs-signature-nonce": "0123456789abcdef", "accept": "application/json",
                       "x-acs-content-sha256": signing.EMPTY_SHA256}
    sdk = Utils.get_authorization(request, "ACS3-HMAC-SHA256", signing.EMPTY_SHA256, "testid", "testsecret")
    ours = signing.acs3_authorization(method="POST", query=request.query, headers=request.headers,
                                      access_key_id="testid", access_key_secret="testsecret",
                                      signed_headers=list(request.headers))
    assert ours == sdk
    # with only host/x-acs-* signed, ours is the §5 cross-check value, and the SDK agrees on the same header set
    minimal = {k: v for k, v in request.headers.items() if k == "host" or k.startswith("x-acs-")}
    request.headers = minimal
    request.query = {k: v for k, v in request.query.items() if k != "OutId"}
    sdk = Utils.get_authorization(request, "ACS3-HMAC-SHA256", signing.EMPTY_SHA256, "testid", "testsecret")
    assert sdk.endswith("Signature=c2be03712685e30d254fe24cf78e2f884ce47ba525eccddcfd887f2807ca6b93")
    assert signing.acs3_authorization(method="POST", query=request.query, headers=minimal, access_key_id="testid",
                                      access_key_secret="testsecret") == sdk
    assert Utils.get_rpcsignature({"Action": "SendSms", "Timestamp": "2024-01-01T00:00:00Z", "X": "a b*~"},
                                  "GET", "k") == signing.rpc_signature(
        "GET", {"Action": "SendSms", "Timestamp": "2024-01-01T00:00:00Z", "X": "a b*~"}, "k")

"""Alibaba signers against the published vectors (service-protocols.md §6 A1, A2, A3) and the computed ACS3 SendSms
cross-check (§5)."""

from __future__ import annotations

import pytest

from minigate.providers.aliyun_sms import signing

A1 = {"AccessKeyId": "testid", "Action": "DescribeRegions", "Format": "XML", "SignatureMethod": "HMAC-SHA1",
      "SignatureNonce": "3ee8c1b8-83d3-44af-a94f-4e0ad82fd6cf", "SignatureVersion": "1.0",
      "Timestamp": "2016-02-23T12:46:24Z", "Version": "2014-05-26"}
A2 = {"AccessKeyId": "testId", "Action": "SendSms", "Format": "XML", "OutId": "123", "PhoneNumbers": "15300000001",
      "RegionId": "cn-hangzhou", "SignName": "阿里云短信测试专用", "SignatureMethod": "HMAC-SHA1",
      "SignatureNonce": "45e25e9b-0a6f-4070-8c85-2956eda1b466", "SignatureVersion": "1.0",
      "TemplateCode": "SMS_71390007", "TemplateParam": '{"customer":"test"}', "Timestamp": "2017-07-12T02:42:19Z",
      "Version": "2017-05-25"}


def test_a1_rpc_describe_regions() -> None:
    assert signing.rpc_string_to_sign("GET", A1) == (
        "GET&%2F&AccessKeyId%3Dtestid%26Action%3DDescribeRegions%26Format%3DXML%26SignatureMethod%3DHMAC-SHA1"
        "%26SignatureNonce%3D3ee8c1b8-83d3-44af-a94f-4e0ad82fd6cf%26SignatureVersion%3D1.0"
        "%26Timestamp%3D2016-02-23T12%253A46%253A24Z%26Version%3D2014-05-26")
    assert signing.rpc_signature("GET", A1, "testsecret") == "OLeaidS1JvxuMvnyHOwuJ+uX5qY="
    # Signature itself is never signed; insertion order does not matter
    shuffled = dict(reversed(list(A1.items()))) | {"Signature": "anything"}
    assert signing.rpc_signature("get", shuffled, "testsecret") == "OLeaidS1JvxuMvnyHOwuJ+uX5qY="


def test_a2_rpc_send_sms() -> None:
    to_sign = signing.rpc_string_to_sign("GET", A2)
    assert "SignName%3D%25E9%2598%25BF" in to_sign
    assert "TemplateParam%3D%257B%2522customer%2522%253A%2522test%2522%257D" in to_sign
    signature = signing.rpc_signature("GET", A2, "testSecret")
    assert signature == "zJDF+Lrzhj/ThnlvIToysFRq6t4="
    assert signing.percent_encode(signature) == "zJDF%2BLrzhj%2FThnlvIToysFRq6t4%3D"
    assert signing.rpc_signature("POST", A2, "testSecret") != signature


def test_a3_acs3_run_instances() -> None:
    headers = {"host": "ecs.cn-shanghai.aliyuncs.com", "x-acs-action": "RunInstances",
               "x-acs-version": "2014-05-26", "x-acs-date": "2023-10-26T10:22:32Z",
               "x-acs-signature-nonce": "3156853299f313e23d1673dc12e1703d",
               "x-acs-content-sha256": signing.EMPTY_SHA256, "accept": "application/json"}
    query = {"ImageId": "win2019_1809_x64_dtc_zh-cn_40G_alibase_20230811.vhd", "RegionId": "cn-shanghai"}
    signed = signing.default_signed_headers(headers.items())
    assert ";".join(signed) == "host;x-acs-action;x-acs-content-sha256;x-acs-date;x-acs-signature-nonce;x-acs-version"
    canonical, _ = signing.acs3_canonical_request(method="POST", query=query, headers=headers, signed_headers=signed,
                                                  payload_hash=signing.EMPTY_SHA256)
    assert canonical.split("\n")[:3] == ["POST", "/", "ImageId=win2019_1809_x64_dtc_zh-cn_40G_alibase_20230811.vhd"
                                                      "&RegionId=cn-shanghai"]
    assert "\n\nhost;x-acs-action" in canonical                     # CanonHeaders end in \n: an empty line
    assert signing.sha256_hex(canonical.encode()) == "7ea06492da5221eba5297e897ce16e55f964061054b7695beedaac1145b1e259"
    auth = signing.acs3_authorization(method="POST", query=query, headers=headers, access_key_id="YourAccessKeyId",
                                      access_key_secret="YourAccessKeySecret")
    assert auth == ("ACS3-HMAC-SHA256 Credential=YourAccessKeyId,SignedHeaders=host;x-acs-action;"
                    "x-acs-content-sha256;x-acs-date;x-acs-signature-nonce;x-acs-version,"
                    "Signature=06563a9e1b43f5dfe96b81484da74bceab24a1d853912eee15083a6f0f3283c0")
    parsed = signing.parse_acs3_authorization(auth)
    assert parsed is not None and parsed.access_key_id == "YourAccessKeyId"
    assert parsed.signature == "06563a9e1b43f5dfe96b81484da74bceab24a1d853912eee15083a6f0f3283c0"
    assert parsed.signed_headers == tuple(signed)


def test_acs3_send_sms_cross_check() -> None:
    headers = [("host", "dysmsapi.aliyuncs.com"), ("x-acs-action", "SendSms"), ("x-acs-version", "2017-05-25"),
               ("x-acs-date", "2024-01-01T00:00:00Z"), ("x-acs-signature-nonce", "0123456789abcdef"),
               ("x-acs-content-sha256", signing.EMPTY_SHA256)]
    query = {"PhoneNumbers": "13800000000", "SignName": "阿里云短信测试", "TemplateCode": "SMS_154950909",
             "TemplateParam": '{"code":"1234"}'}
    canonical, signed = signing.acs3_canonical_request(
        method="POST", query=query, headers=headers, signed_headers=signing.default_signed_headers(headers),
        payload_hash=signing.EMPTY_SHA256)
    assert signing.sha256_hex(canonical.encode()) == "de5b0820c35f19f8125c5ebaaf0e747f110ef3e2d02e06941164608e2234545d"
    auth = signing.acs3_authorization(method="POST", query=query, headers=headers, access_key_id="testid",
                                      access_key_secret="testsecret", body=b"")
    assert auth.endswith(",Signature=c2be03712685e30d254fe24cf78e2f884ce47ba525eccddcfd887f2807ca6b93")
    assert signing.acs3_signature("testsecret", signing.acs3_string_to_sign(canonical)) == (
        "c2be03712685e30d254fe24cf78e2f884ce47ba525eccddcfd887f2807ca6b93")


def test_canonicalisation_details() -> None:
    assert signing.percent_encode("a b*c~d/e+é") == "a%20b%2Ac~d%2Fe%2B%C3%A9"
    assert signing.canonical_query({"b": "", "a": "1", "B": "x"}) == "B=x&a=1&b="
    text, names = signing.canonical_headers([("Host", " h "), ("X-Acs-Multi", "b"), ("x-acs-multi", "a")],
                                            ["x-acs-multi", "HOST"])
    assert text == "host:h\nx-acs-multi:a,b\n" and names == "host;x-acs-multi"
    assert signing.flatten({"A": [{"B": 1}, True], "C": None}) == {"A.1.B": "1", "A.2": "true"}


def test_timestamps() -> None:
    assert signing.format_timestamp(1704067200.9) == "2024-01-01T00:00:00Z"
    assert signing.parse_timestamp("2024-01-01T00:00:00Z") == 1704067200
    assert signing.parse_timestamp("2024-01-01T00:00:00.123Z") == 1704067200
    for bad in ("2024-01-01 00:00:00", "2024-01-01T00:00:00+08:00", "", "2024-13-01T00:00:00Z"):
        with pytest.raises(ValueError):
            signing.parse_timestamp(bad)


@pytest.mark.parametrize("value", ["", "Basic abc", "ACS3-HMAC-SHA256 Credential=a,SignedHeaders=host",
                                   "ACS3-HMAC-SHA256 Credential=a,SignedHeaders=host,Signature=",
                                   "ACS3-HMAC-SHA256 Credential=a,Credential=b,SignedHeaders=host,Signature=s"])
def test_malformed_authorization(value: str) -> None:
    assert signing.parse_acs3_authorization(value) is None

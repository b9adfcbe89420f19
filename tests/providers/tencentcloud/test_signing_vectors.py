"""TC3-HMAC-SHA256 against the published vectors T1-T3 (service-protocols.md §6) and the SendSms cross-check
(§5), plus the parts of the scheme the vectors do not reach (UTC date, GET, UNSIGNED-PAYLOAD, parsing)."""

from __future__ import annotations

import json

import pytest

from minigate.providers.tencentcloud import signing

CVM_BODY = b'{"Limit": 1, "Filters": [{"Values": ["\\u672a\\u547d\\u540d"], "Name": "instance-name"}]}'
CVM_HEADERS = {"Content-Type": "application/json; charset=utf-8", "Host": "cvm.tencentcloudapi.com",
               "X-TC-Action": "DescribeInstances", "X-TC-Version": "2017-03-12", "X-TC-Region": "ap-guangzhou",
               "X-TC-Timestamp": "1551113065"}
T2_ID, T2_KEY = "AKIDz8krbsJ5yKBZQpn74WFkmLPx3*******", "Gu5t9xGARNpq86cd98joQYCN3*******"


def cvm(secret_id: str, secret_key: str, signed: tuple[str, ...] = ("content-type", "host")) -> signing.Tc3Signature:
    return signing.tc3_sign(secret_id=secret_id, secret_key=secret_key, service="cvm", timestamp=1551113065,
                            headers=CVM_HEADERS, payload=CVM_BODY, signed_headers=signed)


def test_payload_hash() -> None:
    assert signing.sha256_hex(CVM_BODY) == "35e9c5b0e3ae67532d3c9f17ead6c90222632e5b1ff7f6e89887f1398934f064"


def test_t1() -> None:
    sig = cvm("AKIDz8krbsJ5yKBZQpn74WFkmLPx3EXAMPLE", "Gu5t9xGARNpq86cd98joQYCN3EXAMPLE")
    assert sig.canonical_request == (
        "POST\n/\n\ncontent-type:application/json; charset=utf-8\nhost:cvm.tencentcloudapi.com\n\n"
        "content-type;host\n35e9c5b0e3ae67532d3c9f17ead6c90222632e5b1ff7f6e89887f1398934f064")
    assert sig.canonical_hash == "5ffe6a04c0664d6b969fab9a13bdab201d63ee709638e2749d62a09ca18d7031"
    assert sig.string_to_sign == ("TC3-HMAC-SHA256\n1551113065\n2019-02-25/cvm/tc3_request\n"
                                  "5ffe6a04c0664d6b969fab9a13bdab201d63ee709638e2749d62a09ca18d7031")
    assert sig.signature == "72e494ea809ad7a8c8f7a4507b9bddcbaa8e581f516e8da2f66e2c5a96525168"
    assert sig.authorization == (
        "TC3-HMAC-SHA256 Credential=AKIDz8krbsJ5yKBZQpn74WFkmLPx3EXAMPLE/2019-02-25/cvm/tc3_request, "
        "SignedHeaders=content-type;host, Signature=72e494ea809ad7a8c8f7a4507b9bddcbaa8e581f516e8da2f66e2c5a96525168")


def test_t2() -> None:
    sig = cvm(T2_ID, T2_KEY)
    assert sig.canonical_hash == "5ffe6a04c0664d6b969fab9a13bdab201d63ee709638e2749d62a09ca18d7031"
    assert sig.signature == "2230eefd229f582d8b1b891af7107b91597240707d778ab3738f756258d7652c"


def test_t3_signs_x_tc_action_lower_cased_in_any_order() -> None:
    sig = cvm(T2_ID, T2_KEY, ("x-tc-action", "Host", "content-type"))
    assert "\nx-tc-action:describeinstances\n\ncontent-type;host;x-tc-action\n" in sig.canonical_request
    assert sig.canonical_hash == "7019a55be8395899b900fb5564e4200d984910f34794a27cb3fb7d10ff6a1e84"
    assert sig.signature == "be4f67d323c78ab9acb7395e43c0dbcf822a9cfac32fea2449a7bc7726b770a3"
    assert "SignedHeaders=content-type;host;x-tc-action," in sig.authorization


def test_sendsms_cross_check() -> None:
    body = json.dumps({"PhoneNumberSet": ["+8613800000000"], "SmsSdkAppId": "1400006666", "SignName": "腾讯云",
                       "TemplateId": "1234", "TemplateParamSet": ["123456"]},
                      ensure_ascii=False, separators=(",", ":")).encode()
    assert signing.sha256_hex(body) == "ebf0557b7a37e17c9ad01e0093b2b464e5485f81c32557b6091e446c6d717c2b"
    sig = signing.tc3_sign(secret_id="AKIDEXAMPLE", secret_key="SECRETEXAMPLE", service="sms", timestamp=1700000000,
                           headers={"content-type": "application/json; charset=utf-8",
                                    "host": "sms.tencentcloudapi.com"}, payload=body)
    assert sig.canonical_hash == "e2a5ce9d371497fae9f8f0a462f3bd3e50a4cf79f8efa0545ec82a682811a4c9"
    assert sig.signature == "b65519c2974fb3be770d9d48abe34b149ac0016914ec3163441e3881b5d55f1c"
    assert "Credential=AKIDEXAMPLE/2023-11-14/sms/tc3_request" in sig.authorization


def test_date_is_utc_not_beijing() -> None:
    # 2024-01-02 07:59:59 in Beijing is still 2024-01-01 in UTC
    assert signing.credential_date(1704153599) == "2024-01-01"
    assert signing.credential_date(1704153600) == "2024-01-02"


def test_get_and_unsigned_payload() -> None:
    headers = {"content-type": "application/x-www-form-urlencoded", "host": "sms.tencentcloudapi.com"}
    canonical = signing.canonical_request(method="get", headers=headers, signed_headers=("content-type", "host"),
                                          query="Limit=10&SmsSdkAppId=1400006666")
    assert canonical.startswith("GET\n/\nLimit=10&SmsSdkAppId=1400006666\n")
    assert canonical.endswith(signing.sha256_hex(b""))
    unsigned = signing.canonical_request(method="POST", headers=headers | {"X-TC-Content-SHA256": "UNSIGNED-PAYLOAD"},
                                         signed_headers=("content-type", "host"), payload=b"{}")
    assert unsigned.endswith(signing.sha256_hex("UNSIGNED-PAYLOAD"))
    with pytest.raises(KeyError):
        signing.canonical_request(method="POST", headers=headers, signed_headers=("x-tc-action",))


def test_parse_authorization() -> None:
    parsed = signing.parse_authorization(cvm(T2_ID, T2_KEY, ("content-type", "host", "x-tc-action")).authorization)
    assert parsed == signing.Tc3Authorization(
        T2_ID, "2019-02-25", "cvm", "tc3_request", ("content-type", "host", "x-tc-action"),
        "be4f67d323c78ab9acb7395e43c0dbcf822a9cfac32fea2449a7bc7726b770a3")
    assert signing.parse_authorization("TC3-HMAC-SHA256 Credential=a/2019-02-25/cvm/tc3_request,"
                                       "SignedHeaders=host,Signature=AB") is not None
    for bad in ("", "Bearer x", "TC3-HMAC-SHA256 Credential=a/2019-2-25/cvm/tc3_request, SignedHeaders=host, "
                "Signature=ab", "HMAC-SHA256 Credential=a/2019-02-25/cvm/tc3_request, SignedHeaders=h, Signature=ab"):
        assert signing.parse_authorization(bad) is None

"""minigate's Alipay cryptography against the published vectors (payment-protocols.md §4, ALI-1…ALI-5).

Keys and certificates: ``tests/keys/alipay_nodesdk_*`` are the alipay-sdk-nodejs-all test fixtures
(``test/fixtures/app-private-key.pem`` @c4402e77 -- stored, as there, with the Base64 on one line --
``appCertPublicKey_2021001161683774.crt``, ``alipayCertPublicKey_RSA2.crt``). The node SDK's
``alipayRootCert.crt`` (4 certificates incl. SM2 and ECDSA roots) could not be fetched, so the root-SN rule of
ALI-3 is checked on our own CA chain built with ``cryptography`` (RSA/SHA-256, ECDSA, RSA/SHA-512 roots; this cryptography build cannot sign SHA-1).
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from minigate.providers.alipay import signing
from tests.keys import read

ALI1_KEY = ("MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEAqObrdC7hrgAVM98tK0nv3hSQRGGKT4lBsQjHiGjeYZjOPIPHR5knm2jnnz/YGIX"
            "IofVHkA/tAlBAd5DrY7YpvI4tP5EONLtZKC2ghBMx7McI2wRD0xiqzxOQr1FuhZGJ8/AUokBzJrzY+aGX2xcOrxFYRlFilvVLTXg4LWjR1t"
            "dPkO6+i7wQZAIVMClPkwVRZEbaERRHlKqTzv2gGv5rDU8gRoe1LeaN+6BlbTqHWkQcNCUNrA8C6l17XAXGKDsm/9TFWwO8EPHHHCaQdjtV5/"
            "FdcWIt+L8SR1ss7EXTjYDFtxcKVv9rEoY1lX8T4mX+GbXfZHraG5NCF1+XioL5JwIDAQAB")
ALI1_SIGN = ("QfTb8tqE1BMhS5qAnXtvsF3/jBkEvu9q9en0pdbBUDDjvKycZhQb7h8GDs4FKfi049PynaNuatxSgLb/nLWZpXyyh0LEWdK2S6Ri7nPwrVg"
             "Os08zugLO20vOQz44y3ti2Ncm8/wZts1Fr2gZ7pShnVX3d1B50hbsXnObT1r/U8ONNQjWXd0HIul4TG+Q3fm3svmSvFEy0WnzuhcyHPX5Gm4E"
             "LNctL6Qd5YniGJFNcc7kopHYtI/XD9YCKCH6Ct02rzUs9i11C9CsadtZn+WhxF26Dqt9sGEFajkJ8cxUTLi8+VCpLHsgPE8P0y095uQcDdK0Y"
             "jCh4x7wVSov+lrmOQ==")
ALI1_FIELDS = {
    "app_id": "2019073166072302", "auth_app_id": "2019073166072302", "buyer_id": "2088102534368455",
    "buyer_logon_id": "xud***@126.com", "buyer_pay_amount": "0.10", "charset": "utf-8",
    "fund_bill_list": '[{"amount":"0.10","fundChannel":"ALIPAYACCOUNT"}]', "gmt_create": "2019-08-15 15:56:22",
    "gmt_payment": "2019-08-15 15:56:24", "invoice_amount": "0.10", "notify_id": "2019081500222155624068450559358070",
    "notify_time": "2019-08-15 15:56:25", "notify_type": "trade_status_sync",
    "out_trade_no": "20190815155618536-564-57", "point_amount": "0.00", "receipt_amount": "0.10",
    "seller_email": "z97-yuquerevenue@service.aliyun.com", "seller_id": "2088531891668739",
    "subject": "语雀空间 500人规模", "total_amount": "0.10", "trade_no": "2019081522001468450512505578",
    "trade_status": "TRADE_SUCCESS", "version": "1.0",
}
ALI1_STRING = (
    'app_id=2019073166072302&auth_app_id=2019073166072302&buyer_id=2088102534368455&buyer_logon_id=xud***@126.com'
    '&buyer_pay_amount=0.10&charset=utf-8&fund_bill_list=[{"amount":"0.10","fundChannel":"ALIPAYACCOUNT"}]'
    '&gmt_create=2019-08-15 15:56:22&gmt_payment=2019-08-15 15:56:24&invoice_amount=0.10'
    '&notify_id=2019081500222155624068450559358070&notify_time=2019-08-15 15:56:25&notify_type=trade_status_sync'
    '&out_trade_no=20190815155618536-564-57&point_amount=0.00&receipt_amount=0.10'
    '&seller_email=z97-yuquerevenue@service.aliyun.com&seller_id=2088531891668739&subject=语雀空间 500人规模'
    '&total_amount=0.10&trade_no=2019081522001468450512505578&trade_status=TRADE_SUCCESS&version=1.0')

ALI4_BIZ = ('{"out_trade_no":"ORDER20240513001","total_amount":"88.88","subject":"Test order","product_code":"JSAPI_PAY",'
            '"buyer_open_id":"074a1CcTG1LelxKe4xQC0zgNdId0nxi95b5lsNpazWYoCo5","op_app_id":"2021000122671080"}')
ALI4_PARAMS = {"app_id": "2021000122671080", "method": "alipay.trade.create", "format": "JSON", "charset": "utf-8",
               "sign_type": "RSA2", "timestamp": "2024-05-13 17:49:20", "version": "1.0",
               "notify_url": "https://merchant.example/notify/alipay", "app_auth_token": "", "biz_content": ALI4_BIZ}
ALI4_SIGN = ("Mg1ecPOjn4Y0ATq35hcJPiZb5XLkdlRBMZ7qvZGDUvJ4fB7aCVOSBYAGWhHrAAXqH67uWYgq1os005IRaJSl01nnl0I/9opLtYtAWWifk2"
             "17okoQM2zsZxsoNPPEvFTNmXzLlyOh6LHScU4E8YPW9ncDZy2p1c2Mn/RpKNZUbqjP4a0tK/pCu4rSRKnqFmzgl+uKbBVpPDwBdK2+e2ZV2Y"
             "TqSFKrjvixOpW8CH7U9hdbP5xlQkMFWgi2u9ybUVREcOOsgZH9lsgJFymK5650VlN/0sMu1urRfnCn+x6n2WWyyu+aB/tyPrgD230s2grJy91"
             "j/sB0FCbjFaf4udHkyQ==")


# ------------------------------------------------------------------ ALI-1
def test_ali1_real_notification_verifies_without_sign_type() -> None:
    key = signing.load_public_key(ALI1_KEY)
    form = ALI1_FIELDS | {"sign": ALI1_SIGN, "sign_type": "RSA2"}
    assert signing.notification_content(form) == ALI1_STRING
    assert signing.verify_notification(key, form)
    assert signing.rsa2_verify(key, ALI1_STRING, ALI1_SIGN)


def test_ali1_keeping_sign_type_fails_and_tampering_fails() -> None:
    key = signing.load_public_key(ALI1_KEY)
    with_type = signing.sign_content(ALI1_FIELDS | {"sign_type": "RSA2"})
    assert "sign_type=RSA2" in with_type
    assert not signing.rsa2_verify(key, with_type, ALI1_SIGN)
    assert not signing.verify_notification(key, ALI1_FIELDS | {"total_amount": "0.11", "sign": ALI1_SIGN})
    assert not signing.verify_notification(key, dict(ALI1_FIELDS))           # no sign at all
    assert not signing.verify_notification(key, ALI1_FIELDS | {"sign": "not base64!"})


def test_ali1_empty_values_are_dropped() -> None:
    key = signing.load_public_key(ALI1_KEY)
    assert signing.verify_notification(key, ALI1_FIELDS | {"sign": ALI1_SIGN, "passback_params": "", "body": ""})


# ------------------------------------------------------------------ ALI-2
ALI2_CONTENT = ('{"code":"10000","msg":"Success","image_id":"Zp1Nm6FDTZaEuSSniGd5awAAACMAAQED","image_url":"http:\\/\\/'
                'oalipay-dl-django.alicdn.com\\/rest\\/1.0\\/image?fileIds=Zp1Nm6FDTZaEuSSniGd5awAAACMAAQED&zoom=original"}')
ALI2_KEY = "alipay_offline_material_image_upload_response"


def test_ali2_extracts_the_raw_value_with_escapes() -> None:
    raw = '{"' + ALI2_KEY + '":' + ALI2_CONTENT + ',"sign":"abc"}'
    assert signing.extract_sign_content(raw, ALI2_KEY) == ALI2_CONTENT


@pytest.mark.parametrize("raw", [
    '{ "' + ALI2_KEY + '" :\n ' + ALI2_CONTENT + ' ,\n "sign":"abc"}',
    '{"sign":"abc","' + ALI2_KEY + '":' + ALI2_CONTENT + '}',
    '{\n\t"' + ALI2_KEY + '":\t' + ALI2_CONTENT + '}',
])
def test_ali2_whitespace_and_member_order(raw: str) -> None:
    assert signing.extract_sign_content(raw, ALI2_KEY) == ALI2_CONTENT


def test_ali2_nested_sign_braces_in_strings_and_aes_string() -> None:
    inner = '{"code":"10000","sign":"xxx","note":"a } and { and \\" quote","o":{"k":"v"}}'
    raw = '{"m_response":' + inner + ',"sign":"s"}'
    assert signing.extract_sign_content(raw, "m_response") == inner
    assert signing.extract_sign_content('{"m_response":"QUJD\\/","sign":"s"}', "m_response") == '"QUJD\\/"'
    assert signing.extract_sign_content('{"other":1}', "m_response") is None
    assert signing.extract_sign_content('{"m_response":{"code":"1"', "m_response") is None
    # a key name appearing as a value first is not mistaken for the member
    assert signing.extract_sign_content('{"x":"m_response","m_response":{"a":1}}', "m_response") == '{"a":1}'


# ------------------------------------------------------------------ ALI-3
def test_ali3_real_certificate_sns() -> None:
    app_cert = read("alipay_nodesdk_app_cert.crt")
    alipay_cert = read("alipay_nodesdk_alipay_cert.crt")
    cert = signing.load_certificate(app_cert)
    assert cert.issuer.rfc4514_string() == ("CN=Ant Financial Certification Authority Class 1 R1,"
                                            "OU=Certification Authority,O=Ant Financial,C=CN")
    assert cert.serial_number == 42701552708448241360226107228231049510
    assert signing.cert_sn(app_cert) == "866efef280dec9137a87d047ac446315"
    assert signing.cert_sn(alipay_cert) == "7513daaaa48aa3ba2e4018d84402479c"


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COUNTRY_NAME, "CN"),
                      x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Ant Financial"),
                      x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "Certification Authority"),
                      x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _root(key: object, cn: str, algorithm: hashes.HashAlgorithm, serial: int) -> x509.Certificate:
    now = dt.datetime.now(dt.UTC)
    public = key.public_key()  # type: ignore[attr-defined]
    return (x509.CertificateBuilder().subject_name(_name(cn)).issuer_name(_name(cn)).public_key(public)
            .serial_number(serial).not_valid_before(now).not_valid_after(now + dt.timedelta(days=30))
            .sign(key, algorithm))  # type: ignore[arg-type]


def test_ali3_root_sn_rules_on_our_own_chain() -> None:
    """RSA-family roots count (file order, ``_``-joined, issuer DN + decimal serial); ECDSA roots are skipped."""
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ec_key = ec.generate_private_key(ec.SECP384R1())
    first = _root(rsa_key, "Ant Financial Certification Authority R1", hashes.SHA256(), 0x1234)
    skipped = _root(ec_key, "Ant Financial Certification Authority E1", hashes.SHA384(), 0x5678)
    last = _root(rsa_key, "iTrusChina Class 2 Root CA - G3", hashes.SHA512(), 2**120 + 7)
    chain = "\n".join(c.public_bytes(serialization.Encoding.PEM).decode() for c in (first, skipped, last))
    assert skipped.signature_algorithm_oid.dotted_string == "1.2.840.10045.4.3.3"
    assert last.signature_algorithm_oid.dotted_string == "1.2.840.113549.1.1.13"

    def expected(cert: x509.Certificate) -> str:
        issuer = "CN=" + cert.issuer.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value  # type: ignore[operator]
        issuer += ",OU=Certification Authority,O=Ant Financial,C=CN"
        return hashlib.md5((issuer + str(cert.serial_number)).encode()).hexdigest()

    assert signing.root_cert_sn(chain) == f"{expected(first)}_{expected(last)}"
    assert signing.cert_sn(first) == expected(first)
    with pytest.raises(ValueError):
        signing.root_cert_sn(skipped.public_bytes(serialization.Encoding.PEM))


# ------------------------------------------------------------------ ALI-4
def test_ali4_request_signature() -> None:
    key = signing.load_private_key(read("alipay_nodesdk_app_private_key.pem"))
    content = signing.sign_content(ALI4_PARAMS)
    assert content == (f"app_id=2021000122671080&biz_content={ALI4_BIZ}&charset=utf-8&format=JSON"
                       "&method=alipay.trade.create&notify_url=https://merchant.example/notify/alipay"
                       "&sign_type=RSA2&timestamp=2024-05-13 17:49:20&version=1.0")
    assert signing.sign_params(key, ALI4_PARAMS) == ALI4_SIGN
    assert signing.rsa2_verify(key.public_key(), content, ALI4_SIGN)


def test_ali4_same_signature_from_every_key_encoding() -> None:
    key = signing.load_private_key(read("alipay_nodesdk_app_private_key.pem"))
    pkcs8_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()).decode()
    pkcs1_der = key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.TraditionalOpenSSL,
                                  serialization.NoEncryption())
    pkcs8_der = key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption())
    for text in (pkcs8_pem, base64.b64encode(pkcs1_der).decode(), base64.b64encode(pkcs8_der).decode()):
        assert signing.sign_params(signing.load_private_key(text), ALI4_PARAMS) == ALI4_SIGN
    spki = key.public_key().public_bytes(serialization.Encoding.DER,
                                         serialization.PublicFormat.SubjectPublicKeyInfo)
    assert signing.rsa2_verify(signing.load_public_key(base64.b64encode(spki).decode()),
                               signing.sign_content(ALI4_PARAMS), ALI4_SIGN)
    with pytest.raises(ValueError):
        signing.load_private_key("not a key at all")


def test_official_ordering_example() -> None:
    params = {"version": "1.0", "timestamp": "2014-07-24 03:07:50", "sign_type": "RSA2", "method":
              "alipay.mobile.public.menu.add", "charset": "GBK", "biz_content": "{}", "app_id": "2014072300007148",
              "sign": "ignored"}
    assert [pair.split("=")[0] for pair in signing.sign_content(params).split("&")] == [
        "app_id", "biz_content", "charset", "method", "sign_type", "timestamp", "version"]


# ------------------------------------------------------------------ ALI-5
def test_ali5_aes() -> None:
    key = "aYA0GP8JEW+D7/UFaskCWA=="
    cipher = "HJjZXDcVHUcOrByocVgEmgWgCAlX7sMpgUI1/nH+lIx28ED17doV4+alJneiKtSF"
    assert signing.aes_encrypt(key, '{"out_trade_no":"ORDER20240513001"}') == cipher
    assert signing.aes_decrypt(key, cipher) == '{"out_trade_no":"ORDER20240513001"}'
    with pytest.raises(ValueError):
        signing.aes_decrypt(base64.b64encode(b"0" * 16).decode(), cipher)
    with pytest.raises(ValueError):
        signing.aes_encrypt("c2hvcnQ=", "x")


def test_timestamps_are_beijing_time() -> None:
    moment = dt.datetime(2024, 5, 13, 9, 49, 20, tzinfo=dt.UTC)
    assert signing.format_timestamp(moment) == "2024-05-13 17:49:20"
    assert signing.format_timestamp(moment.timestamp()) == "2024-05-13 17:49:20"
    assert signing.parse_timestamp("2024-05-13 17:49:20") == moment
    with pytest.raises(ValueError):
        signing.format_timestamp(dt.datetime(2024, 5, 13))

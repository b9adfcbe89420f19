"""The published JD Pay vectors (payment-protocols.md §4, JD-1…JD-4) and the §3.3 primitives.

No official JD Python SDK exists; these vectors come from JD's own Java demo (``liangfahua/jdpayDemo``) and
the ``genkin-he/jdpay`` gem's tests, and are the oracle for :mod:`minigate.providers.jdpay.crypto`.
"""

from __future__ import annotations

import base64
import hashlib
from datetime import datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import SecretStr

from minigate.domain.results import NotificationKind, TradeState
from minigate.providers.jdpay import crypto, schemas
from minigate.providers.jdpay.config import JDPayConfig
from minigate.providers.jdpay.provider import JDPayProvider
from tests.keys import read

DEMO_PRIVATE = read("jd_demo_merchant_private_key.b64").strip()
DEMO_JD_PUBLIC = read("jd_demo_jd_public_key.b64").strip()
DEMO_DES = "ta4E/aspLA3lgFGKmNDNRYU92RkZ4w2t"

JD1_S1 = (
    '<?xml version="1.0" encoding="UTF-8"?><jdpay><amount>1</amount><currency>CNY</currency>'
    "<merchant>22294531</merchant><note></note><notifyUrl>http://10.13.81.116:63917/AsynNotifyHandler.ashx"
    "</notifyUrl><oTradeNum>1494236491939</oTradeNum><tradeNum>1494236491939_r</tradeNum>"
    "<tradeTime>20170508174906</tradeTime><version>V2.0</version></jdpay>"
)
JD1_SIGN = (
    "UlcPzSqTH+E/zCqZFUFsY+zZ7mj7sS1XF9By2HEb9a0v6s0px6cUjTMU8J5YmJ521DkePRDiA3XXISls9XDISsZvRXJBfBe9pOLf09Hz"
    "Jza45x4iMuuSyxeaGEGLHo5b9bAGslcwFPNZ14yxbGcptQ4tcvO30yNDbsWroTMzGZo="
)
JD2_XML = (
    '<?xml version="1.0" encoding="UTF-8"?><jdpay><version>V2.0</version><merchant>22294531</merchant>'
    "<result><code>000000</code><desc>成功</desc></result><tradeNum>1494236491939_r</tradeNum>"
    "<oTradeNum>1494236491939</oTradeNum><amount>1</amount><currency>CNY</currency>"
    "<tradeTime>20170508180239</tradeTime><note></note><status>1</status></jdpay>"
)
JD2_SIGN = (
    "W4g4PwHlh7OM60uz72MYH4+5PW1lJyFoHiKGFczOGDHdATqAAqbRy4p+sXU04FlsA29UpEfY3Fsct1IAhL5D7y1/tgZDRB+tGe1Tm0zT"
    "eFcKQjV8UU7bfRC+Mi3OdQgQvJ2JIIJcsxpXyQmeG2Vr/77aPhCY8hNEQObDp8fDDFc="
)
JD4_DES = "ta4E/aspLA3lgFGKmNDNRYU92RkZ4w35"
JD4_PLAIN = (
    '<?xml version="1.0" encoding="UTF-8" ?><jdpay><version>V2.0</version><merchant>110148035005</merchant>'
    "<result><code>000000</code><desc>success</desc></result><device>111</device><tradeNum>160927496812634"
    "</tradeNum><tradeType>0</tradeType><sign>YSHTmpqKE0VMqhMWP9dHCxf+GkfxjD56U2XcgT1seN3V02KbFguC41DTygFpO4XX"
    "HmepZZkl8P+6R0EWs0hlL5FO1tT53jnr2+zRYo7TV/AIaPTYMBKgPV2FRYVuTjgUi6VIS/gLFauxXGaouRIU+h8m0CPfctgcBcTMumr3z"
    "8w=</sign><amount>1690</amount><status>2</status><payList><pay><payType>0</payType><amount>1690</amount>"
    "<currency>CNY</currency><tradeTime>20160927142346</tradeTime><detail><cardHolderName>*径</cardHolderName>"
    "<cardHolderMobile>138****6396</cardHolderMobile><cardHolderType>0</cardHolderType><cardHolderId>****0049"
    "</cardHolderId><cardNo>622588****6178</cardNo><bankCode>CMB</bankCode><cardType>1</cardType></detail>"
    "</pay></payList></jdpay>"
)
#: The envelope text exactly as in JD's demo ``AsynNotifyAction.main()`` (whitespace between elements kept).
JD4_ENVELOPE_HEAD = (
    '<?xml version="1.0" encoding="UTF-8" ?><jdpay>  <version>V2.0</version>  <merchant>110148035005</merchant>'
    "  <result>    <code>000000</code>    <desc>success</desc>  </result>  <encrypt>"
)
JD4_ENVELOPE_TAIL = "</encrypt></jdpay>"


def jd4_encrypt() -> str:
    return crypto.envelope_encrypt(crypto.decode_des_key(JD4_DES), JD4_PLAIN)


# ---------------------------------------------------------------------------------------------- JD-1
def test_jd1_request_signature_is_reproduced_exactly() -> None:
    key = crypto.load_private_key(DEMO_PRIVATE)
    assert crypto.sha256_hex(JD1_S1) == hashlib.sha256(JD1_S1.encode()).hexdigest()
    assert crypto.rsa_sign(key, JD1_S1) == JD1_SIGN      # deterministic (type-1 padding), blinding or not
    assert crypto.rsa_sign(key, JD1_S1) == JD1_SIGN


def test_jd1_s1_is_what_build_xml_produces_for_sorted_fields() -> None:
    fields = {"amount": "1", "currency": "CNY", "merchant": "22294531", "note": "",
              "notifyUrl": "http://10.13.81.116:63917/AsynNotifyHandler.ashx", "oTradeNum": "1494236491939",
              "tradeNum": "1494236491939_r", "tradeTime": "20170508174906", "version": "V2.0"}
    assert schemas.build_xml(sorted(fields.items()), omit_empty=False) == JD1_S1
    signed = crypto.insert_sign(JD1_S1, JD1_SIGN)
    assert signed.endswith(f"<sign>{JD1_SIGN}</sign></jdpay>") and crypto.xml_s1(signed) == JD1_S1


def test_private_key_loads_from_base64_der_and_pem() -> None:
    key = crypto.load_private_key(DEMO_PRIVATE)
    pem = base64.encodebytes(base64.b64decode(DEMO_PRIVATE)).decode()
    again = crypto.load_private_key(f"-----BEGIN PRIVATE KEY-----\n{pem}-----END PRIVATE KEY-----\n")
    assert key.private_numbers() == again.private_numbers()
    with pytest.raises(crypto.CryptoError):
        crypto.load_private_key("not a key!")


# ---------------------------------------------------------------------------------------------- JD-2
def test_jd2_real_jd_signature_verifies_with_the_jd_public_key() -> None:
    from cryptography.hazmat.primitives.asymmetric import padding

    public = crypto.load_public_key(DEMO_JD_PUBLIC)
    recovered = public.recover_data_from_signature(base64.b64decode(JD2_SIGN), padding.PKCS1v15(), None)
    assert recovered == b"399694d732bcf5cceaa1b0dd657593718f35f00b858133407d8543ec82517943"
    assert crypto.sha256_hex(JD2_XML).encode() == recovered
    assert crypto.rsa_verify(public, JD2_XML, JD2_SIGN)
    assert not crypto.rsa_verify(public, JD2_XML.replace("<amount>1<", "<amount>2<"), JD2_SIGN)
    assert not crypto.rsa_verify(public, JD2_XML, "not base64!")
    assert not crypto.rsa_verify(public, JD2_XML, base64.b64encode(b"\x01" * 128).decode())
    # the signature sits anywhere in the signed text; S1 cuts it out
    assert crypto.rsa_verify(public, crypto.xml_s1(crypto.insert_sign(JD2_XML, JD2_SIGN)), JD2_SIGN)


# ---------------------------------------------------------------------------------------------- JD-3
def test_jd3_envelope_is_reproduced_exactly() -> None:
    des = crypto.decode_des_key(DEMO_DES)
    value = crypto.envelope_encrypt(des, crypto.insert_sign(JD2_XML, JD2_SIGN))
    assert len(value) == 1432
    assert value.startswith("ZDg2ZmU3YTk5YmM2MGQxYzhjNjc0YmY1ZWJlY2Qy") and value.endswith("ZDNkNDUxYTI3MWVmMw==")
    assert hashlib.sha256(value.encode()).hexdigest() == \
        "b41a7408c368423856e0f906671097ed8ed682337c6d1595395ea5c19c59f08b"
    assert base64.b64decode(value)[:16] == b"d86fe7a99bc60d1c"   # the first 3DES block, as hex
    assert crypto.envelope_decrypt(des, value) == crypto.insert_sign(JD2_XML, JD2_SIGN)


# ---------------------------------------------------------------------------------------------- JD-4
def test_jd4_plaintext_reencrypts_to_the_demo_ciphertext() -> None:
    value = jd4_encrypt()
    assert len(value) == 2284 and value.startswith("M2JlZTE1NTZkMTdmOGYzN2ZkN2YyY2IwNTFkMTI0")
    assert hashlib.sha256(value.encode()).hexdigest() == \
        "d949f75acb0fce9917add8b0580fd0ef4395a15153529c0d0f97585b31159a79"
    plain = crypto.envelope_decrypt(crypto.decode_des_key(JD4_DES), value)
    assert plain == JD4_PLAIN and len(plain.encode()) == 852


def test_jd4_literal_s1_matches_the_rsa_recovered_sign() -> None:
    from cryptography.hazmat.primitives.asymmetric import padding

    s1 = crypto.xml_s1(JD4_PLAIN)
    assert "<sign>" not in s1 and s1.startswith('<?xml version="1.0" encoding="UTF-8" ?><jdpay>')
    digest = crypto.sha256_hex(s1)
    assert digest == "892de3f38387277f5478a3ba50f88a119d5b876480b5f21fcb192178526b8832"
    sign = crypto.xml_sign_value(JD4_PLAIN)
    assert sign is not None
    public = crypto.load_public_key(DEMO_JD_PUBLIC)
    assert public.recover_data_from_signature(base64.b64decode(sign), padding.PKCS1v15(), None) == digest.encode()
    assert crypto.rsa_verify(public, s1, sign)
    # normalising the declaration to "?>" breaks it: the literal text is what JD signed
    assert not crypto.rsa_verify(public, s1.replace('"UTF-8" ?>', '"UTF-8"?>'), sign)


def test_jd4_whole_parse_notification_path_accepts_the_real_notification() -> None:
    import asyncio

    import httpx

    body = (JD4_ENVELOPE_HEAD + jd4_encrypt() + JD4_ENVELOPE_TAIL).encode()
    cfg = JDPayConfig(merchant="110148035005", merchant_private_key=SecretStr(DEMO_PRIVATE),
                      jd_public_key=DEMO_JD_PUBLIC, des_key=SecretStr(JD4_DES))

    async def run() -> None:
        async with httpx.AsyncClient() as client:
            note = await JDPayProvider(cfg, client).parse_notification({"content-type": "text/xml"}, body)
        assert note.kind is NotificationKind.PAYMENT and note.event_id == "0:160927496812634:2"
        assert note.trade is not None and note.trade.state is TradeState.PAID
        assert note.trade.out_trade_no == "160927496812634" and note.trade.amount_total == 1690
        assert note.trade.paid_at == datetime(2016, 9, 27, 14, 23, 46, tzinfo=schemas.CST)
        assert note.trade.raw["payList"][0]["detail"]["bankCode"] == "CMB"

    asyncio.run(run())


# ---------------------------------------------------------------------------------------------- primitives
@given(st.text(max_size=300))
def test_tdes_framing_round_trips_any_text(text: str) -> None:
    key = crypto.decode_des_key(DEMO_DES)
    hex_text = crypto.tdes_encrypt_hex(key, text)
    assert hex_text == hex_text.lower() and len(hex_text) % 16 == 0
    assert crypto.tdes_decrypt_hex(key, hex_text) == text


def test_tdes_framing_exact_block_and_bytes_below_0x10() -> None:
    key = crypto.decode_des_key(DEMO_DES)
    assert len(crypto.tdes_encrypt_hex(key, "abcd")) == 16           # 4 + 4 bytes: no padding block
    assert crypto.tdes_decrypt_hex(key, crypto.tdes_encrypt_hex(key, "\x01\x02\x0f")) == "\x01\x02\x0f"
    with pytest.raises(crypto.CryptoError):
        crypto.tdes_decrypt_hex(bytes(range(24)), crypto.tdes_encrypt_hex(key, "hello"))
    for bad in ("zz", "00" * 7, ""):
        with pytest.raises(crypto.CryptoError):
            crypto.tdes_decrypt_hex(key, bad)
    with pytest.raises(crypto.CryptoError):
        crypto.decode_des_key(base64.b64encode(b"x" * 16).decode())


def test_form_s1_sorts_drops_empty_and_sign_and_has_no_trailing_ampersand() -> None:
    fields = {"version": "V2.0", "merchant": "22294531", "tradeNum": "T1", "note": "", "sign": "x", "amount": "1"}
    assert crypto.form_s1(fields) == "amount=1&merchant=22294531&tradeNum=T1&version=V2.0"


@pytest.mark.parametrize("xml", [
    '<?xml version="1.0"?><!DOCTYPE jdpay [<!ENTITY a "aaaa"><!ENTITY b "&a;&a;&a;">]><jdpay>&b;</jdpay>',
    '<?xml version="1.0"?><!DOCTYPE jdpay [<!ENTITY x SYSTEM "file:///etc/passwd">]><jdpay>&x;</jdpay>',
    '<?xml version="1.0"?><!doctype jdpay SYSTEM "http://evil.example/x.dtd"><jdpay/>',
    "<jdpay>&undefined;</jdpay>",
    "<other/>",
    "<jdpay><a></jdpay>",
])
def test_xml_parser_refuses_dtds_entities_and_junk(xml: str) -> None:
    with pytest.raises(schemas.WireFormatError):
        schemas.parse_xml(xml)

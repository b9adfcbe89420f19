"""minigate's WeChat Pay cryptography against the published vectors (payment-protocols.md §4, WX-1…WX-8)."""

from __future__ import annotations

import hashlib
import json

import pytest

from minigate.providers.wechatpay import signing
from tests.keys import read

K_WXGO = signing.load_private_key(read("wxgo_private_key.pem"))
C_WXGO = signing.load_certificate(read("wxgo_cert.pem"))
K_WXDOC = signing.load_private_key(read("wxdoc_private_key.pem"))

WX2 = ("BKyAfU4iMCuvXMXS0Wzam3V/cnxZ+JaqigPM5OhljS2iOT95OO6Fsuml2JkFANJU9K6q9bLlDhPXuoVz+pp4hAm6pHU4ld815U4jsKu1Rky"
       "aII+1CYBUYC8TK0XtJ8FwUXXz8vZHh58rrAVN1XwNyvD1vfpxrMT4SL536GLwvpUHlCqIMzoZUguLli/K8V29QiOhuH6IEqLNJn8e9b3nwN"
       "cQ7be3CzYGpDAKBfDGPCqCv8Rw5zndhlffk2FEA70G4hvMwe51qMN/RAJbknXG23bSlObuTCN7Ndj1aJGH6/L+hdwfLpUtJm4QYVazzW7DFD"
       "27EpSQEqA8bX9+8m1rLg==")


def test_wx1_aes_gcm_decrypt_and_wrong_key() -> None:
    plain = signing.aes_gcm_decrypt(b"testAPIv3Key0000", "wCq51qZv4Yfg", "Dl56FrqWQJF1t9LtC3vEUsniZKvbqdR8",
                                     "FsdXzxryWfKwvLJKf8LG/ToRPTRh8RN9wROC")
    assert plain == b"Hello World"
    with pytest.raises(ValueError):
        signing.aes_gcm_decrypt(b"testAPIv3Key1111", "wCq51qZv4Yfg", "Dl56FrqWQJF1t9LtC3vEUsniZKvbqdR8",
                                "FsdXzxryWfKwvLJKf8LG/ToRPTRh8RN9wROC")


def test_wx2_sha256_with_rsa() -> None:
    assert signing.rsa_sign(K_WXGO, b"source") == WX2
    assert signing.rsa_verify(C_WXGO.public_key(), b"source", WX2)  # type: ignore[arg-type]
    assert not signing.rsa_verify(C_WXGO.public_key(), b"sourcE", WX2)  # type: ignore[arg-type]


def test_wx3_signed_encrypted_callback() -> None:
    body = ('{"id":"3119dfba-e649-5eec-ab1e-3412bc4d2e17","create_time":"2021-06-24T16:37:26+08:00",'
            '"resource_type":"encrypt-resource","event_type":"PAYSCORE.USER_OPEN_SERVICE","summary":"签约成功",'
            '"resource":{"original_type":"payscore","algorithm":"AEAD_AES_256_GCM","ciphertext":"YDS3lKPaC4Y52Gf3u'
            'hft5qUBlIa8b428AWTtTauHQfQrRw+X1WpiuHIDy0vo1Vd6VEq67aVyqPdDYMkRVSDaZL3iZttevRMOoPKMifozg6XPWjIZumks/GpT'
            '48lI4NizyeaqLBokNebthah3o1H76qSlO9NkDjp9bzmKLEYYH9TEklFUpsvPqOTOcgSLgh21YJXYR7dEBXFgRLiNIKRgO5JdXh1hccRU'
            'AlyVWxE54PXpnQ==","associated_data":"payscore","nonce":"Kj7QIyUiYx1q"}}')
    assert hashlib.sha256(body.encode()).hexdigest() == (
        "b6fdfc5e4afdc463950d873c4fdc3c494df05965016225c6a1e8e2e887cdc94d")
    sig = ("tJHIiIS9eB2hAYstmAmbbD3ZE5LiIm/Ug5tuL4fC0YOFRWIHV39UFIZXC0e9Wl6lBu6sKvkqDkzpqzBsVHyXFlbYZTOQrVdG4b6LfTnK4"
           "mikv9++ixJMd3vTf2yCqvBkh98zs3Ds5zsYQakzbcwhmw4fMJs4nPLws28H0UW9FjDR//rxELLwXvV1VEA1IBLX70xptjL8hrfUjEE8kk"
           "ry6yNJTHZRU8CAc7qHli2Ng1V1qb9ARbK8A3ThmFmPQvRGrapI/jS2laKKgYUmfdEdkNO6B2Cke5e8VTxY406ArAmQ90GAihDwIcb16TQ"
           "MnzCMBoutnwZKNiKRACrFmtxw2Q==")
    message = signing.response_message("1624523846", "EcZ9Cmy4Xyx1i6RlJQzLcCyEqDa26NBz", body)
    assert signing.rsa_verify(C_WXGO.public_key(), message, sig)  # type: ignore[arg-type]
    assert not signing.rsa_verify(C_WXGO.public_key(), message.replace(b"1624523846", b"1624523847"), sig)  # type: ignore[arg-type]
    resource = json.loads(body)["resource"]
    plain = signing.aes_gcm_decrypt(b"testMchAPIv3Key0", resource["nonce"], resource["associated_data"],
                                    resource["ciphertext"])
    assert json.loads(plain) == {"mchid": "1234567890", "appid": "054aa7d7a2a54ab5898df65bd96f001c",
                                 "create_time": "2020-06-30T12:12:00+08:00",
                                 "out_contract_code": "21640bdbd08e473e828f3206a2741c6e"}


def test_wx4_certificate_encryption() -> None:
    pem = read("wxgo_cert.pem").rstrip("\n")
    assert len(pem.encode()) == 1219
    ct = signing.aes_gcm_encrypt(b"mockAPIv3Key1234", "3a584b49ed9b", "certificate", pem)
    assert len(ct) == 1648 and ct.startswith("QHBP2NGCmcEhGWa1f+t5AeImEdkS+X")
    assert hashlib.sha256(ct.encode()).hexdigest() == (
        "52b0db9b46c7c30ff5f9be9584d032edc149385fc78fa03fadec2ab6c10498f9")
    assert signing.aes_gcm_decrypt(b"mockAPIv3Key1234", "3a584b49ed9b", "certificate", ct).decode() == pem
    assert signing.certificate_serial(C_WXGO) == "D7CE59D1F522D701"


def test_wx5_official_doc_pay_sign_and_request_signature() -> None:
    msg = signing.pay_sign_message("wx2421b1c4370ec43b", "1554208460", "593BEC0C930BF1AFEB40B4A08C8FB242",
                                   "prepay_id=wx201410272009395522657a690389285100")
    assert signing.rsa_sign(K_WXDOC, msg) == (
        "mI35pfNEQV6777ke/1T+LJLQDNTm7yeoUJH+j/adPGhmCCi0PbgkvYQTRcXH0uibcLVtvFLdGLpmoYO9FV6lBBsTAjuhh5YOvQi0e2g3e0y"
        "ytitiNET9FEuqM0pjnKfRW4K6LIZDdbWJv9KhZUx3DrJa5TL7OJ7VdADVivxVySIlPVKjGwuCXzuXSJes0UcILgWQUMyha5/3nYofuHtS7r"
        "+KYyMuxD+oJ9VM1Qdxk4UIG59CP5Y3wtYIFybyF3bdu1caHTRRX+DLyMXyYA/IrTmiW01c4RPjpHBX5Dk1sZyY1zVsWNsvMHr2e1NTWtB"
        "xKJ+qk5N61J7caYoepHFaxw==")
    body = ('{"appid":"wxd678efh567hg6787","mchid":"1900007291","description":"Image形象店-深圳腾大-QQ公仔",'
            '"out_trade_no":"1217752501201407033233368018","notify_url":"https://www.weixin.qq.com/wxpay/pay.php",'
            '"amount":{"total":100,"currency":"CNY"},"payer":{"openid":"oUpF8uMuAJO_M2pxb1Q9zNjWeS6o"}}')
    auth = signing.build_authorization(key=K_WXDOC, mchid="1900007291", serial_no="X", method="POST",
                                       canonical_url="/v3/pay/transactions/jsapi", body=body,
                                       timestamp="1554208460", nonce="593BEC0C930BF1AFEB40B4A08C8FB242")
    assert auth.signature == (
        "jnks4dlrPw3ZX+ozVvSK39oa0t7OMBsg83BHAwd8BRdUFiVaQNTLTvci+wURgP1OQBbKYhFGvt7iqYpDSTQkp7Uq1sltaQKyncCyrA1g88m"
        "5bsKERQfPyT0ahSwKTYJ1CAn9QiJuSJRq1QsQs07eehbU/k9BCS51jTyc1Jpsi2H77HF9f/BnjXAOP3/sPObg6V5Ee4EzwLox684hhuMuIw"
        "Ho7D8KFk3LIHOKDcNI4It1aCXydFWNpNK+SG86VUDe5kwoDpw4Ulqfu9z8OFDGbDs9TCxEv8iqQzbpxOlEVoOe2kalSYM5kApQb3nZcxdUt"
        "oE0liJGW3RGUNE0t4v01A==")


def test_wx6_real_production_response_with_public_key() -> None:
    key = signing.load_public_key(
        "MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEAwXNI6sdlknHBnK8Fu2U6Cwor9qY747jP8KAfeBMeveEt1TqaHkLfaSD07trZLhG"
        "pfs8/AHqjhgSMO1O10YQWOrrJ4hjIWPKqxbgrYMkBQc+mwdiWp4W3ByCqxBRagCveCXRWCmuJYovl9H/bsDI0iGbpVtEOghJtfciisYSgxc"
        "LufUDTRkvwxjIBK1pCRjk33jJ5YTBWTHMRtMAOcFLNF6hdEYdX8SPsgHHeLZ5Lv2T/686w1xtgCHef/sd4uSfWmyzsalQdHG/e4IyYmrhx+O"
        "3VBoNDzE3nx23bFeV/RVNCG7cV6VhmYokJNHa/erIPkEmEFID6A5wQOXuxUkmJWwIDAQAB")
    sig = ("mfI1CPqvBrgcXfgXMFjdNIhBf27ACE2YyeWsWV9ZI7T7RU0vHvbQpu9Z32ogzc+k8ZC5n3kz7h70eWKjgqNdKQF0eRp8mVKlmfzMLBVHbs"
           "sB9jEZEDXThOX1XFqX7s7ymia1hoHQxQagPGzkdWxtlZPZ4ZPvr1RiqkgAu6Is8MZgXXrRoBKqjmSdrP1N7uxzJ/cjfSiis9FiLjuADoqm"
           "Q1P7p2N876YPAol7Rn0+GswwAwxldbdLrmVSjfytfSBJFqTMHn4itojgxSWWN1byuckQt8hSTEv/Lg97QoeGniYP17T80pJeQyL3b+295FP"
           "HSO2AtvCgyIbKMZ0BALilAA==")
    body = '{"code_url":"weixin://wxpay/bizpayurl?pr=JyC91EIz1"}'
    assert signing.rsa_verify(key, signing.response_message("1722850421", "d824f2e086d3c1df967785d13fcd22ef", body), sig)
    assert not signing.rsa_verify(key, signing.response_message("1722850421", "d824f2e086d3c1df967785d13fcd22ee", body), sig)


def test_wx7_authorization_layout_and_parse() -> None:
    assert signing.request_message("GET", "/v3/certificates", "1624523846", "A1B2C3D4E5F6G7", "") == (
        b"GET\n/v3/certificates\n1624523846\nA1B2C3D4E5F6G7\n\n")
    assert signing.request_message("POST", "/v3/certificates", "1624523846", "A1B2C3D4E5F6G7", "Hello World!\n") == (
        b"POST\n/v3/certificates\n1624523846\nA1B2C3D4E5F6G7\nHello World!\n\n")
    auth = signing.Authorization(mchid="1234567890", serial_no="0123456789ABC", nonce_str="A1B2C3D4E5F6G7",
                                 timestamp="1624523846", signature="c2ln")
    assert auth.header() == ('WECHATPAY2-SHA256-RSA2048 mchid="1234567890",nonce_str="A1B2C3D4E5F6G7",'
                             'timestamp="1624523846",serial_no="0123456789ABC",signature="c2ln"')
    # wechatpayv3 orders the pairs differently: parsing is order-independent
    other = ('WECHATPAY2-SHA256-RSA2048 mchid="1234567890",nonce_str="A1B2C3D4E5F6G7",signature="c2ln",'
             'timestamp="1624523846",serial_no="0123456789ABC"')
    assert signing.parse_authorization(other) == auth
    assert signing.parse_authorization('WECHATPAY2-SHA256-RSA2048 mchid="1"') is None
    assert signing.parse_authorization("Bearer x") is None


def test_wx8_full_notification_with_32_byte_key() -> None:
    plaintext = ('{"mchid":"1900000001","appid":"wxd678efh567hg6787","out_trade_no":"ORDER20240513001",'
                 '"transaction_id":"4200000000202405130000000001","trade_type":"JSAPI","trade_state":"SUCCESS",'
                 '"trade_state_desc":"支付成功","bank_type":"OTHERS","attach":"","success_time":"2024-05-13T17:50:01+08:00",'
                 '"payer":{"openid":"oUpF8uMuAJO_M2pxb1Q9zNjWeS6o"},"amount":{"total":100,"payer_total":100,'
                 '"currency":"CNY","payer_currency":"CNY"}}')
    ct = signing.aes_gcm_encrypt(b"SimulatorAPIv3Key0123456789abcde", "aKu3nCbQ5s9z", "transaction", plaintext)
    assert len(ct) == 580 and ct.startswith("gXkty9xdOwDObqKBsRizx01PRKettQJyhlo1oOIMsXyXEiADNKO7")
    body = json.dumps({"id": "EV-2018022511223320873", "create_time": "2024-05-13T17:50:02+08:00",
                       "resource_type": "encrypt-resource", "event_type": "TRANSACTION.SUCCESS", "summary": "支付成功",
                       "resource": {"original_type": "transaction", "algorithm": "AEAD_AES_256_GCM", "ciphertext": ct,
                                    "associated_data": "transaction", "nonce": "aKu3nCbQ5s9z"}},
                      separators=(",", ":"), ensure_ascii=False).encode()
    assert len(body) == 893
    assert hashlib.sha256(body).hexdigest() == "988e643f2e7b2e08700b25a44984eb1649a799d25a0f3efad847a6256b0610bb"
    msg = signing.response_message("1715593802", "5K8264ILTKCH16CQ2502SI8ZNMTM67VS", body)
    assert signing.rsa_sign(K_WXGO, msg) == (
        "PjrumPb4e6lVBRI1xx+QtqTN30wgrhBSVB777Tcap6wUsp1iKrmN/72H7Bj7VowKSHfxI3NpwUusLiqDU8/kSka0+csb/ZVvtsIrx0ymFHM"
        "W8x8pgUpc7DCRJH3pg7smTeloDiPPBhZnMYOq09yVjo+ey+20AAQYnvlS0bNwVCKgdKFNUq02LnHpvuZ95IoF3XaF8ifA6SnkaXuk6QWLHd"
        "LWjGfEdVbrTMJ+wzGqvF5WvvihCH1fEE6PBfHaoCJjC/XYvVRZLS2fy6fFn7M1qJ2g80S2lzmloLzFEr7aLkByjc5MD+JjGDsflfzf7s8FJ"
        "/ROP7nHFlPpEYSBpTuNLw==")


def test_oaep_round_trip() -> None:
    ct = signing.oaep_encrypt(C_WXGO.public_key(), "张三")  # type: ignore[arg-type]
    assert ct != "张三"
    assert signing.oaep_decrypt(K_WXGO, ct) == "张三"

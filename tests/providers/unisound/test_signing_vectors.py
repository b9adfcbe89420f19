"""The Unisound body signature against the §5 cross-check value, and the parts of the scheme around it."""

from __future__ import annotations

import hashlib

from minigate.providers.unisound import signing

VECTOR = "094089B796299058F7FE8FA73AC7D764FF113B3B4AE88ADEA2094150471A352F"


def test_section_5_vector() -> None:
    assert signing.sign(appkey="appkeyX", timestamp=1585047674022, secret="secretY", nonce="b5e3df4e") == VECTOR


def test_timestamp_as_text_signs_the_same() -> None:
    assert signing.sign(appkey="appkeyX", timestamp="1585047674022", secret="secretY", nonce="b5e3df4e") == VECTOR


def test_it_is_plain_sha256_of_the_concatenation_upper_case() -> None:
    text = "appkeyX1585047674022secretYb5e3df4e"
    assert VECTOR == hashlib.sha256(text.encode()).hexdigest().upper()
    assert VECTOR.upper() == VECTOR and len(VECTOR) == 64


def test_non_ascii_is_utf8() -> None:
    expected = hashlib.sha256("键1云秘n".encode()).hexdigest().upper()
    assert signing.sign(appkey="键", timestamp=1, secret="云秘", nonce="n") == expected


def test_verify() -> None:
    kw = {"appkey": "appkeyX", "timestamp": 1585047674022, "secret": "secretY", "nonce": "b5e3df4e"}
    assert signing.verify(VECTOR, **kw)
    assert signing.verify(VECTOR.lower(), **kw)                  # letter case is not significant
    assert not signing.verify(VECTOR, **(kw | {"secret": "secretZ"}))
    assert not signing.verify(VECTOR, **(kw | {"nonce": "b5e3df4f"}))
    assert not signing.verify(VECTOR, **(kw | {"timestamp": 1585047674023}))
    assert not signing.verify("", **kw)


def test_auth_fields_use_milliseconds_and_a_fresh_nonce() -> None:
    first = signing.auth_fields(appkey="appkeyX", secret="secretY", clock=lambda: 1585047674.0229)
    second = signing.auth_fields(appkey="appkeyX", secret="secretY", clock=lambda: 1585047674.0229)
    assert first["timestamp"] == 1585047674022 and isinstance(first["timestamp"], int)
    assert first["nonce"] != second["nonce"] and len(first["nonce"]) == 32
    int(first["nonce"], 16)
    assert set(first) == set(signing.AUTH_FIELDS)
    assert first["sign"] == signing.sign(appkey="appkeyX", timestamp=1585047674022, secret="secretY",
                                         nonce=first["nonce"])
    fixed = signing.auth_fields(appkey="appkeyX", secret="secretY", timestamp=1585047674022, nonce="b5e3df4e")
    assert fixed == {"appkey": "appkeyX", "timestamp": 1585047674022, "nonce": "b5e3df4e", "sign": VECTOR}
    assert "secretY" not in str(fixed)

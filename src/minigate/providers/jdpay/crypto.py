"""JD Pay V2.0 cryptography (payment-protocols.md §3.3): 3DES framing, the "RSA private-encrypt of the
SHA-256 hex" signature, and the two S1 (string-to-sign) constructions.

Shared by the client (:mod:`minigate.providers.jdpay.provider`) and the simulator
(:mod:`minigate.simulators.jdpay`). The oracle is JD's own demo and the vectors JD-1…JD-4; there is no
official JD Python SDK. Sources: ``liangfahua/jdpayDemo`` (JD's Java demo), ``genkin-he/jdpay``
(``lib/jd_pay/des.rb``, ``sign.rb``), ``Javen205/IJPay`` ``IJPay-JDPay`` (``XmlEncryptUtil``, ``ThreeDesUtil``).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import secrets
from collections.abc import Mapping

from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.ciphers import Cipher, modes

__all__ = [
    "MAX_PLAINTEXT_BYTES",
    "CryptoError",
    "decode_des_key",
    "envelope_decrypt",
    "envelope_encrypt",
    "form_s1",
    "insert_sign",
    "load_private_key",
    "load_public_key",
    "rsa_sign",
    "rsa_verify",
    "sha256_hex",
    "tdes_decrypt_hex",
    "tdes_encrypt_hex",
    "xml_s1",
    "xml_sign_value",
]

#: Decrypted messages larger than this are refused (IJPay uses 16 KiB; notifications are ~1 KiB).
MAX_PLAINTEXT_BYTES = 64 * 1024
_SIGN_ELEMENT = re.compile(r"<sign>.*?</sign>", re.DOTALL)
_SIGN_VALUE = re.compile(r"<sign>(.*?)</sign>", re.DOTALL)


class CryptoError(ValueError):
    """A key, ciphertext or signature that cannot be used. Messages never contain key material."""


# --------------------------------------------------------------------------- keys

def _der_or_pem(text: str) -> tuple[bytes, bool]:
    stripped = text.strip()
    if stripped.startswith("-----BEGIN"):
        return stripped.encode(), True
    try:
        return base64.b64decode("".join(stripped.split()), validate=True), False
    except binascii.Error as exc:
        raise CryptoError("key is neither PEM nor Base64 DER") from exc


def load_private_key(text: str) -> rsa.RSAPrivateKey:
    """The merchant key: PKCS#8 DER Base64 (JD's ``rsaPrivateKey`` property) or any PEM."""
    data, pem = _der_or_pem(text)
    try:
        key = (serialization.load_pem_private_key(data, password=None) if pem
               else serialization.load_der_private_key(data, password=None))
    except (ValueError, TypeError) as exc:
        raise CryptoError("not a readable private key") from exc
    if not isinstance(key, rsa.RSAPrivateKey):
        raise CryptoError("not an RSA private key")
    return key


def load_public_key(text: str) -> rsa.RSAPublicKey:
    """JD's key: SPKI DER Base64 (JD's ``rsaPublicKey`` property) or PEM."""
    data, pem = _der_or_pem(text)
    try:
        key = serialization.load_pem_public_key(data) if pem else serialization.load_der_public_key(data)
    except (ValueError, TypeError) as exc:
        raise CryptoError("not a readable public key") from exc
    if not isinstance(key, rsa.RSAPublicKey):
        raise CryptoError("not an RSA public key")
    return key


def decode_des_key(text: str) -> bytes:
    """``desKey`` is Base64 of 24 bytes (three-key 3DES)."""
    try:
        key = base64.b64decode(text.strip(), validate=True)
    except binascii.Error as exc:
        raise CryptoError("des_key is not Base64") from exc
    if len(key) != 24:
        raise CryptoError("des_key must decode to 24 bytes")
    return key


# --------------------------------------------------------------------------- 3DES framing

def _cipher(key: bytes) -> Cipher[modes.ECB]:
    return Cipher(TripleDES(key), modes.ECB())  # noqa: S305 - ECB is JD's wire format, not our choice


def tdes_encrypt_hex(key: bytes, text: str) -> str:
    """``uint32_be(len) ‖ UTF-8 ‖ zero padding to 8`` → DES-EDE3-ECB → lowercase hex (§3.3)."""
    data = text.encode()
    buf = len(data).to_bytes(4, "big") + data
    buf += b"\x00" * (-len(buf) % 8)
    enc = _cipher(key).encryptor()
    return (enc.update(buf) + enc.finalize()).hex()


def tdes_decrypt_hex(key: bytes, hex_text: str) -> str:
    try:
        raw = bytes.fromhex(hex_text.strip())
    except ValueError as exc:
        raise CryptoError("ciphertext is not hex") from exc
    if not raw or len(raw) % 8:
        raise CryptoError("ciphertext length is not a multiple of the 3DES block")
    dec = _cipher(key).decryptor()
    plain = dec.update(raw) + dec.finalize()
    n = int.from_bytes(plain[:4], "big")
    if n > MAX_PLAINTEXT_BYTES or 4 + n > len(plain) or len(plain) - (4 + n) >= 8 \
            or any(plain[4 + n:]):
        raise CryptoError("ciphertext does not decrypt with this des_key")
    try:
        return plain[4:4 + n].decode()
    except UnicodeDecodeError as exc:
        raise CryptoError("ciphertext does not decrypt with this des_key") from exc


def envelope_encrypt(key: bytes, xml: str) -> str:
    """The ``<encrypt>`` value of an XML envelope: Base64 of the ASCII hex (§3.4 step 3)."""
    return base64.b64encode(tdes_encrypt_hex(key, xml).encode("ascii")).decode("ascii")


def envelope_decrypt(key: bytes, value: str) -> str:
    try:
        hex_text = base64.b64decode("".join(value.split()), validate=True).decode("ascii")
    except (binascii.Error, UnicodeDecodeError) as exc:
        raise CryptoError("encrypt value is not Base64 of hex") from exc
    return tdes_decrypt_hex(key, hex_text)


# --------------------------------------------------------------------------- signature

def sha256_hex(s1: str) -> str:
    return hashlib.sha256(s1.encode()).hexdigest()


def rsa_sign(key: rsa.RSAPrivateKey, s1: str) -> str:
    """Base64 of RSA "private encrypt" of the 64 ASCII hex chars with PKCS#1 type-1 padding, no DigestInfo.

    The high-level ``sign()`` always adds a DigestInfo, so the padding and ``m^d mod n`` are done here,
    with RSA blinding (``m·r^e``) so the timing of the exponentiation does not depend on the message.
    """
    digest = sha256_hex(s1).encode("ascii")
    numbers = key.private_numbers()
    n, e, d = numbers.public_numbers.n, numbers.public_numbers.e, numbers.d
    k = (n.bit_length() + 7) // 8
    if len(digest) > k - 11:
        raise CryptoError("RSA key too small for a JD signature")
    em = b"\x00\x01" + b"\xff" * (k - 3 - len(digest)) + b"\x00" + digest
    m = int.from_bytes(em, "big")
    while True:
        r = secrets.randbelow(n - 2) + 2
        try:
            r_inv = pow(r, -1, n)
        except ValueError:  # pragma: no cover - r shares a factor with n: practically impossible
            continue
        break
    s = (pow(m * pow(r, e, n) % n, d, n) * r_inv) % n
    return base64.b64encode(s.to_bytes(k, "big")).decode("ascii")


def rsa_verify(key: rsa.RSAPublicKey, s1: str, sign_b64: str) -> bool:
    """Recover the signed bytes with the public key and compare them with the SHA-256 hex of ``s1``."""
    try:
        signature = base64.b64decode("".join(sign_b64.split()), validate=True)
        recovered = key.recover_data_from_signature(signature, padding.PKCS1v15(), None)
    except (binascii.Error, ValueError):
        return False
    except Exception:  # noqa: BLE001 - cryptography raises InvalidSignature (not a ValueError)
        return False
    return hmac.compare_digest(recovered, sha256_hex(s1).encode("ascii"))


# --------------------------------------------------------------------------- S1

def xml_s1(xml: str) -> str:
    """S1 of an XML message: the literal text, lines trimmed, ``\\t\\r\\n`` removed, ``<sign>…</sign>`` cut.

    The declaration is kept exactly as received (JD sends ``<?xml version="1.0" encoding="UTF-8" ?>``
    with a space; normalising it breaks JD-4).
    """
    flat = "".join(line.strip() for line in xml.splitlines()).replace("\t", "")
    return _SIGN_ELEMENT.sub("", flat)


def xml_sign_value(xml: str) -> str | None:
    found = _SIGN_VALUE.search(xml)
    return found.group(1).strip() if found else None


def insert_sign(xml: str, sign: str) -> str:
    """``<sign>…</sign>`` goes right before ``</jdpay>`` (§3.4 step 2)."""
    end = xml.rstrip()
    if not end.endswith("</jdpay>"):
        raise CryptoError("message does not end with </jdpay>")
    return end[: -len("</jdpay>")] + f"<sign>{sign}</sign></jdpay>"


def form_s1(fields: Mapping[str, str]) -> str:
    """S1 of a form post: non-empty fields except ``sign``, sorted by key, ``k=v`` joined with ``&``."""
    return "&".join(f"{k}={v}" for k, v in sorted(fields.items()) if k != "sign" and v not in (None, ""))

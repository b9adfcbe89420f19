"""Alipay OpenAPI cryptography: RSA2 sign/verify, response sign-content extraction, certificate SNs, AES.

Shared by the client (:mod:`minigate.providers.alipay.provider`) and the simulator
(:mod:`minigate.simulators.alipay`): both sides of the wire use exactly this code.
Reference: ``payment-protocols.md`` §2.2 (request signing), §2.3 (response verification), §2.5 (notification
verification), §2.8 (certificate SNs), §2.9 (AES); vectors ALI-1…ALI-5 in §4.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hashlib
import re
from collections.abc import Mapping

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives import padding as sym_padding
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

__all__ = [
    "BEIJING",
    "TIMESTAMP_FORMAT",
    "aes_decrypt",
    "aes_encrypt",
    "cert_sn",
    "extract_sign_content",
    "format_timestamp",
    "load_certificate",
    "load_private_key",
    "load_public_key",
    "notification_content",
    "parse_timestamp",
    "root_cert_sn",
    "rsa2_sign",
    "rsa2_verify",
    "sign_content",
    "sign_params",
    "verify_notification",
]

#: Alipay writes and expects Beijing time (UTC+8) in ``yyyy-MM-dd HH:mm:ss``.
BEIJING = dt.timezone(dt.timedelta(hours=8))
TIMESTAMP_FORMAT = "%Y-%m-%d %H:%M:%S"
#: Signature algorithm OIDs of the RSA family; root certificates with other algorithms (SM2, ECDSA) are skipped.
_RSA_SIG_PREFIX = "1.2.840.113549.1.1"
_PEM_CERT = re.compile(rb"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", re.S)


# --------------------------------------------------------------------------- keys

def _bare_b64(text: str) -> bytes:
    try:
        return base64.b64decode("".join(text.split()), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValueError("key is neither PEM nor Base64") from exc


def load_private_key(text: str | bytes) -> rsa.RSAPrivateKey:
    """The app private key: PKCS#1 or PKCS#8, PEM or bare Base64 DER (as the Alipay key tool prints it)."""
    data = text.decode() if isinstance(text, bytes) else text
    data = data.strip()
    key: object
    if data.startswith("-----"):
        key = serialization.load_pem_private_key(data.encode(), password=None)
    else:
        key = serialization.load_der_private_key(_bare_b64(data), password=None)
    if not isinstance(key, rsa.RSAPrivateKey):
        raise ValueError("Alipay RSA2 keys are RSA")
    return key


def load_public_key(text: str | bytes) -> rsa.RSAPublicKey:
    """The Alipay public key: SPKI PEM, bare Base64 SPKI, or a PEM certificate (certificate mode)."""
    data = text.decode() if isinstance(text, bytes) else text
    data = data.strip()
    key: object
    if "-----BEGIN CERTIFICATE-----" in data:
        key = load_certificate(data).public_key()
    elif data.startswith("-----"):
        key = serialization.load_pem_public_key(data.encode())
    else:
        key = serialization.load_der_public_key(_bare_b64(data))
    if not isinstance(key, rsa.RSAPublicKey):
        raise ValueError("Alipay RSA2 keys are RSA")
    return key


def load_certificate(pem: str | bytes) -> x509.Certificate:
    """The first certificate of a PEM text."""
    data = pem.encode() if isinstance(pem, str) else pem
    match = _PEM_CERT.search(data)
    if match is None:
        raise ValueError("no PEM certificate found")
    return x509.load_pem_x509_certificate(match.group(0))


# --------------------------------------------------------------------------- sign strings

def sign_content(params: Mapping[str, str | None]) -> str:
    """Request sign string (§2.2): all params but ``sign``, empty ones dropped, sorted, ``k=v`` joined by ``&``.

    ``sign_type`` stays in. Values are raw (not URL-encoded); ``biz_content`` exactly as sent.
    """
    return "&".join(f"{k}={v}" for k, v in sorted(params.items()) if k != "sign" and v not in (None, ""))


def notification_content(params: Mapping[str, str | None]) -> str:
    """Notification sign string (§2.5): like :func:`sign_content` but ``sign_type`` is removed too (ALI-1)."""
    return sign_content({k: v for k, v in params.items() if k != "sign_type"})


def rsa2_sign(key: rsa.RSAPrivateKey, content: str, charset: str = "utf-8") -> str:
    """RSA2: RSASSA-PKCS1-v1_5 with SHA-256 over the content in ``charset``, Base64 without newlines."""
    return base64.b64encode(key.sign(content.encode(charset), padding.PKCS1v15(), hashes.SHA256())).decode()


def rsa2_verify(key: rsa.RSAPublicKey, content: str, signature_b64: str, charset: str = "utf-8") -> bool:
    try:
        signature = base64.b64decode("".join(signature_b64.split()), validate=True)
        key.verify(signature, content.encode(charset), padding.PKCS1v15(), hashes.SHA256())
    except (InvalidSignature, binascii.Error, ValueError, LookupError):
        return False
    return True


def sign_params(key: rsa.RSAPrivateKey, params: Mapping[str, str | None], charset: str = "utf-8") -> str:
    return rsa2_sign(key, sign_content(params), charset)


def verify_notification(key: rsa.RSAPublicKey, params: Mapping[str, str], charset: str = "utf-8") -> bool:
    """Verify a form-decoded notification: ``sign`` over :func:`notification_content`."""
    signature = params.get("sign") or ""
    return bool(signature) and rsa2_verify(key, notification_content(params), signature, charset)


def extract_sign_content(raw: str, response_key: str) -> str | None:
    """The signed content of a synchronous answer (§2.3): the raw text of the ``response_key`` value.

    A brace/quote-aware scan of the text as received (escapes such as ``\\/`` kept, never re-serialised). The
    key must be a top-level member name (a quoted ``"<key>"`` followed by ``:``). An object value runs from its
    ``{`` to the matching ``}``; a string value (AES mode) is returned with its two quotes. None if absent or
    unterminated.
    """
    needle = f'"{response_key}"'
    start = 0
    while True:
        at = raw.find(needle, start)
        if at < 0:
            return None
        i = at + len(needle)
        while i < len(raw) and raw[i] in " \t\r\n":
            i += 1
        if i < len(raw) and raw[i] == ":":
            break
        start = at + 1
    i += 1
    while i < len(raw) and raw[i] in " \t\r\n":
        i += 1
    if i >= len(raw) or raw[i] not in '{"':
        return None
    end = _value_end(raw, i)
    return None if end is None else raw[i:end]


def _value_end(raw: str, begin: int) -> int | None:
    """Index just past the object or string starting at ``begin``."""
    depth = 0
    in_string = False
    escaped = False
    for i in range(begin, len(raw)):
        c = raw[i]
        if in_string:
            if escaped:
                escaped = False
            elif c == "\\":
                escaped = True
            elif c == '"':
                in_string = False
                if depth == 0:
                    return i + 1
        elif c == '"':
            in_string = True
        elif c == "{":
            depth += 1
        elif c == "}":
            depth -= 1
            if depth == 0:
                return i + 1
    return None


# --------------------------------------------------------------------------- certificate SNs (§2.8)

def cert_sn(cert: x509.Certificate | str | bytes) -> str:
    """Lowercase hex MD5 of ``issuerDN + decimal(serial)`` (issuer RFC 4514, most specific RDN first)."""
    if not isinstance(cert, x509.Certificate):
        cert = load_certificate(cert)
    text = cert.issuer.rfc4514_string() + str(cert.serial_number)
    return hashlib.md5(text.encode()).hexdigest().rjust(32, "0")  # noqa: S324 - Alipay's identifier, not security


def root_cert_sn(pem_chain: str | bytes) -> str:
    """SNs of the RSA-signed certificates in ``alipayRootCert.crt``, in file order, joined with ``_``."""
    data = pem_chain.encode() if isinstance(pem_chain, str) else pem_chain
    sns: list[str] = []
    for block in _PEM_CERT.findall(data):
        try:
            cert = x509.load_pem_x509_certificate(block)
            oid = cert.signature_algorithm_oid.dotted_string
        except ValueError:
            continue   # e.g. an SM2 certificate this cryptography build cannot parse
        if oid.startswith(_RSA_SIG_PREFIX + "."):
            sns.append(cert_sn(cert))
    if not sns:
        raise ValueError("no RSA certificate in the Alipay root certificate file")
    return "_".join(sns)


# --------------------------------------------------------------------------- AES (§2.9)

def _aes_key(key_b64: str) -> bytes:
    key = _bare_b64(key_b64)
    if len(key) not in (16, 24, 32):
        raise ValueError("AES key must be Base64 of 16 (or 24/32) bytes")
    return key


def aes_encrypt(key_b64: str, plaintext: str, charset: str = "utf-8") -> str:
    """AES-CBC, IV = 16 zero bytes, PKCS#7 padding, Base64 (ALI-5)."""
    padder = sym_padding.PKCS7(128).padder()
    data = padder.update(plaintext.encode(charset)) + padder.finalize()
    encryptor = Cipher(algorithms.AES(_aes_key(key_b64)), modes.CBC(bytes(16))).encryptor()  # noqa: S305
    return base64.b64encode(encryptor.update(data) + encryptor.finalize()).decode()


def aes_decrypt(key_b64: str, ciphertext_b64: str, charset: str = "utf-8") -> str:
    """Inverse of :func:`aes_encrypt`; ValueError when the key or the ciphertext is wrong."""
    try:
        raw = base64.b64decode(ciphertext_b64, validate=True)
        decryptor = Cipher(algorithms.AES(_aes_key(key_b64)), modes.CBC(bytes(16))).decryptor()  # noqa: S305
        padded = decryptor.update(raw) + decryptor.finalize()
        unpadder = sym_padding.PKCS7(128).unpadder()
        return (unpadder.update(padded) + unpadder.finalize()).decode(charset)
    except (binascii.Error, ValueError, UnicodeDecodeError) as exc:
        raise ValueError("AES decryption failed") from exc


# --------------------------------------------------------------------------- time

def format_timestamp(moment: float | dt.datetime) -> str:
    """``yyyy-MM-dd HH:mm:ss`` in Beijing time; naive datetimes are refused (their zone would be a guess)."""
    if isinstance(moment, dt.datetime):
        if moment.tzinfo is None or moment.utcoffset() is None:
            raise ValueError("timezone-aware datetime required")
        when = moment.astimezone(BEIJING)
    else:
        when = dt.datetime.fromtimestamp(moment, BEIJING)
    return when.strftime(TIMESTAMP_FORMAT)


def parse_timestamp(text: str) -> dt.datetime:
    """A Beijing ``yyyy-MM-dd HH:mm:ss`` -> aware datetime (ValueError if malformed)."""
    return dt.datetime.strptime(text.strip(), TIMESTAMP_FORMAT).replace(tzinfo=BEIJING)

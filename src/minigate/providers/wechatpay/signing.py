"""WeChat Pay API v3 cryptography: request signing, response/callback verification, AES-256-GCM, RSA-OAEP.

Shared by the client (:mod:`minigate.providers.wechatpay.provider`) and the simulator
(:mod:`minigate.simulators.wechatpay`): both sides of the wire use exactly this code.
Reference: ``payment-protocols.md`` §1.2, §1.3, §1.5, §1.7, §1.10, §1.11 (wechatpay-go ``utils/``, ``core/auth``).
"""

from __future__ import annotations

import base64
import hmac
import re
import secrets
import string
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

__all__ = [
    "AUTH_SCHEME",
    "SIGNTEST_PREFIX",
    "Authorization",
    "aes_gcm_decrypt",
    "aes_gcm_encrypt",
    "build_authorization",
    "load_certificate",
    "load_private_key",
    "load_public_key",
    "new_nonce",
    "oaep_decrypt",
    "oaep_encrypt",
    "parse_authorization",
    "pay_sign_message",
    "request_message",
    "response_message",
    "rsa_sign",
    "rsa_verify",
    "certificate_serial",
]

AUTH_SCHEME = "WECHATPAY2-SHA256-RSA2048"
SIGNTEST_PREFIX = "WECHATPAY/SIGNTEST/"
_NONCE_ALPHABET = string.ascii_uppercase + string.digits
_AUTH_PAIR = re.compile(r'\s*([a-z_]+)="([^"]*)"\s*')


def new_nonce(length: int = 32) -> str:
    """Random nonce from a CSPRNG (uppercase letters and digits, as the official SDKs use)."""
    return "".join(secrets.choice(_NONCE_ALPHABET) for _ in range(length))


def load_private_key(pem: str | bytes) -> rsa.RSAPrivateKey:
    """Load a PKCS#8 or PKCS#1 PEM private key (``apiclient_key.pem``)."""
    data = pem.encode() if isinstance(pem, str) else pem
    key = serialization.load_pem_private_key(data, password=None)
    if not isinstance(key, rsa.RSAPrivateKey):
        raise ValueError("WeChat Pay keys are RSA")
    return key


def load_public_key(pem_or_b64: str | bytes) -> rsa.RSAPublicKey:
    """Load a WeChat Pay public key: SPKI PEM, or bare Base64 SPKI as shown in the merchant platform."""
    data = pem_or_b64.encode() if isinstance(pem_or_b64, str) else pem_or_b64
    data = data.strip()
    key: object
    if b"-----BEGIN CERTIFICATE-----" in data:
        key = x509.load_pem_x509_certificate(data).public_key()
    elif data.startswith(b"-----"):
        key = serialization.load_pem_public_key(data)
    else:
        key = serialization.load_der_public_key(base64.b64decode(data))
    if not isinstance(key, rsa.RSAPublicKey):
        raise ValueError("WeChat Pay keys are RSA")
    return key


def load_certificate(pem: str | bytes) -> x509.Certificate:
    return x509.load_pem_x509_certificate(pem.encode() if isinstance(pem, str) else pem)


def certificate_serial(cert: x509.Certificate) -> str:
    """Serial number as WeChat prints it: uppercase hex, no leading zeros."""
    return format(cert.serial_number, "X")


def request_message(method: str, canonical_url: str, timestamp: str, nonce: str, body: str | bytes) -> bytes:
    """``METHOD\\nURL\\nTS\\nNONCE\\nBODY\\n`` (§1.2). ``canonical_url`` is path + query as sent."""
    body_bytes = body.encode() if isinstance(body, str) else body
    head = f"{method.upper()}\n{canonical_url}\n{timestamp}\n{nonce}\n".encode()
    return head + body_bytes + b"\n"


def response_message(timestamp: str, nonce: str, body: str | bytes) -> bytes:
    """``TS\\nNONCE\\nBODY\\n`` for responses and callbacks (§1.3)."""
    body_bytes = body.encode() if isinstance(body, str) else body
    return f"{timestamp}\n{nonce}\n".encode() + body_bytes + b"\n"


def pay_sign_message(app_id: str, timestamp: str, nonce: str, package: str) -> bytes:
    """The ``wx.requestPayment`` paySign message (§1.5): ``appId\\ntimeStamp\\nnonceStr\\npackage\\n``."""
    return f"{app_id}\n{timestamp}\n{nonce}\n{package}\n".encode()


def rsa_sign(key: rsa.RSAPrivateKey, message: bytes) -> str:
    """Base64 RSASSA-PKCS1-v1_5 / SHA-256."""
    return base64.b64encode(key.sign(message, padding.PKCS1v15(), hashes.SHA256())).decode()


def rsa_verify(key: rsa.RSAPublicKey, message: bytes, signature_b64: str) -> bool:
    try:
        signature = base64.b64decode(signature_b64, validate=True)
    except (ValueError, TypeError):
        return False
    try:
        key.verify(signature, message, padding.PKCS1v15(), hashes.SHA256())
    except InvalidSignature:
        return False
    return True


@dataclass(frozen=True, slots=True)
class Authorization:
    mchid: str
    serial_no: str
    nonce_str: str
    timestamp: str
    signature: str

    def header(self) -> str:
        return (f'{AUTH_SCHEME} mchid="{self.mchid}",nonce_str="{self.nonce_str}",'
                f'timestamp="{self.timestamp}",serial_no="{self.serial_no}",signature="{self.signature}"')


def build_authorization(*, key: rsa.RSAPrivateKey, mchid: str, serial_no: str, method: str,
                        canonical_url: str, body: str | bytes, timestamp: str, nonce: str) -> Authorization:
    signature = rsa_sign(key, request_message(method, canonical_url, timestamp, nonce, body))
    return Authorization(mchid=mchid, serial_no=serial_no, nonce_str=nonce, timestamp=timestamp,
                         signature=signature)


def parse_authorization(header: str) -> Authorization | None:
    """Parse the ``Authorization`` header; key order does not matter (SDKs differ). None if malformed."""
    scheme, _, rest = header.strip().partition(" ")
    if scheme != AUTH_SCHEME:
        return None
    fields: dict[str, str] = {}
    for part in rest.split(","):
        match = _AUTH_PAIR.fullmatch(part)
        if not match or match.group(1) in fields:
            return None
        fields[match.group(1)] = match.group(2)
    try:
        return Authorization(mchid=fields["mchid"], serial_no=fields["serial_no"],
                             nonce_str=fields["nonce_str"], timestamp=fields["timestamp"],
                             signature=fields["signature"])
    except KeyError:
        return None


def aes_gcm_encrypt(key: bytes, nonce: str, associated_data: str, plaintext: str | bytes) -> str:
    """AEAD_AES_256_GCM as WeChat uses it: nonce and AAD are UTF-8 strings; output Base64(ciphertext‖tag)."""
    data = plaintext.encode() if isinstance(plaintext, str) else plaintext
    return base64.b64encode(AESGCM(key).encrypt(nonce.encode(), data, associated_data.encode())).decode()


def aes_gcm_decrypt(key: bytes, nonce: str, associated_data: str, ciphertext_b64: str) -> bytes:
    """Raises ValueError when the key, nonce, AAD or ciphertext do not match (tag check)."""
    try:
        raw = base64.b64decode(ciphertext_b64, validate=True)
        return AESGCM(key).decrypt(nonce.encode(), raw, associated_data.encode())
    except (InvalidTag, ValueError, TypeError) as exc:
        raise ValueError("AES-GCM decryption failed") from exc


def oaep_encrypt(key: rsa.RSAPublicKey, plaintext: str) -> str:
    """Sensitive-field encryption (§1.11): RSAES-OAEP, SHA-1, MGF1-SHA-1, empty label, Base64."""
    oaep = padding.OAEP(mgf=padding.MGF1(hashes.SHA1()), algorithm=hashes.SHA1(), label=None)  # noqa: S303
    return base64.b64encode(key.encrypt(plaintext.encode(), oaep)).decode()


def oaep_decrypt(key: rsa.RSAPrivateKey, ciphertext_b64: str) -> str:
    oaep = padding.OAEP(mgf=padding.MGF1(hashes.SHA1()), algorithm=hashes.SHA1(), label=None)  # noqa: S303
    return key.decrypt(base64.b64decode(ciphertext_b64), oaep).decode()


def constant_time_equal(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())

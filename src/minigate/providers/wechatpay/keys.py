"""Which WeChat key verifies what: a ``serial -> RSAPublicKey`` store (payment-protocols.md §1.3, §1.10).

``verify_mode`` (``WeChatPayConfig``) decides what the store holds:

* ``public_key``  -- only the WeChat Pay public key, under its ``PUB_KEY_ID_…`` id; nothing is downloaded.
* ``certificate`` -- platform certificates (configured ones plus those from ``GET /v3/certificates``).
* ``mixed``       -- both, during WeChat's migration (callbacks switch gradually between the two).

In the certificate modes an unknown serial triggers **one** download of ``/v3/certificates`` (serialised by an
``asyncio.Lock``: concurrent callers with the same unknown serial share one download, and downloads are at
most one per ``min_refresh_interval`` seconds so forged serials cannot make us hammer WeChat). Each
``encrypt_certificate`` is decrypted with the APIv3 key (AAD from the payload), every unexpired certificate is
kept, and the download answer itself must verify with one of the freshly decrypted certificates.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import httpx
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa

from minigate.errors import ConfigurationError, ProviderError, ProviderMisconfigured, ProviderUnavailable
from minigate.providers.wechatpay import signing
from minigate.providers.wechatpay.codes import DEFAULT_ERROR_MAPPER, PROVIDER, request_id_of
from minigate.providers.wechatpay.config import WeChatPayConfig

__all__ = [
    "CertificateFetcher",
    "SignatureHeaders",
    "VerificationKeyStore",
    "decode_certificates",
]

logger = logging.getLogger(__name__)

#: Sends an (Authorization-signed) ``GET /v3/certificates`` and returns the raw, unverified answer.
CertificateFetcher = Callable[[], Awaitable[httpx.Response]]


@dataclass(frozen=True, slots=True)
class SignatureHeaders:
    """The four ``Wechatpay-*`` headers of a signed response or callback (§1.3)."""

    timestamp: str
    nonce: str
    signature: str
    serial: str

    @classmethod
    def extract(cls, headers: Mapping[str, str]) -> SignatureHeaders | None:
        h = headers if isinstance(headers, httpx.Headers) else httpx.Headers(dict(headers))
        names = ("Timestamp", "Nonce", "Signature", "Serial")
        values = [h.get(f"Wechatpay-{name}", "").strip() for name in names]
        if not all(values):
            return None
        return cls(*values)

    @property
    def is_probe(self) -> bool:
        return self.signature.startswith(signing.SIGNTEST_PREFIX)

    def in_window(self, now: float, tolerance: int) -> bool:
        if not self.timestamp.isdigit() or len(self.timestamp) > 12:
            return False
        return abs(now - int(self.timestamp)) < tolerance

    def verify(self, key: rsa.RSAPublicKey, body: bytes) -> bool:
        message = signing.response_message(self.timestamp, self.nonce, body)
        return signing.rsa_verify(key, message, self.signature)


def _not_after(cert: x509.Certificate) -> datetime:
    return cert.not_valid_after_utc


def decode_certificates(data: object, apiv3_key: bytes, *, now: datetime) -> dict[str, x509.Certificate]:
    """Decrypt a ``/v3/certificates`` payload; returns the unexpired certificates by serial.

    Raises ValueError when the payload is malformed or an entry does not decrypt (wrong APIv3 key?).
    """
    if not isinstance(data, dict) or not isinstance(data.get("data"), list):
        raise ValueError("certificate payload has no data list")
    found: dict[str, x509.Certificate] = {}
    for item in data["data"]:
        enc = item.get("encrypt_certificate") if isinstance(item, dict) else None
        if not isinstance(enc, dict):
            raise ValueError("certificate entry without encrypt_certificate")
        try:
            pem = signing.aes_gcm_decrypt(apiv3_key, str(enc["nonce"]), str(enc.get("associated_data") or ""),
                                          str(enc["ciphertext"]))
            cert = signing.load_certificate(pem)
        except (KeyError, ValueError) as exc:
            raise ValueError("certificate entry does not decrypt") from exc
        serial = signing.certificate_serial(cert)
        if str(item.get("serial_no", serial)).upper() != serial:
            raise ValueError("certificate serial differs from its entry")
        if not isinstance(cert.public_key(), rsa.RSAPublicKey):
            raise ValueError("platform certificate is not RSA")
        if _not_after(cert) > now:
            found[serial] = cert
    return found


class VerificationKeyStore:
    """Maps ``Wechatpay-Serial`` values to verification keys; see the module docstring."""

    def __init__(self, config: WeChatPayConfig, *, fetch_certificates: CertificateFetcher | None = None,
                 clock: Callable[[], float] = time.time, min_refresh_interval: float = 60.0) -> None:
        self._config = config
        self._fetch = fetch_certificates
        self._clock = clock
        self._min_interval = min_refresh_interval
        self._lock = asyncio.Lock()
        self._generation = 0
        self._last_attempt = -math.inf
        self.refresh_count = 0
        self._public: dict[str, rsa.RSAPublicKey] = {}
        self._certs: dict[str, x509.Certificate] = {}
        mode = config.verify_mode
        if mode in ("public_key", "mixed") and config.platform_public_key:
            if not config.platform_public_key_id:
                raise ConfigurationError("platform_public_key needs platform_public_key_id (PUB_KEY_ID_…)")
            try:
                public = signing.load_public_key(config.platform_public_key)
                self._public[config.platform_public_key_id] = public
            except ValueError as exc:
                raise ConfigurationError("platform_public_key is not an RSA public key") from exc
        elif mode == "public_key":
            raise ConfigurationError("verify_mode=public_key needs platform_public_key(_id)")
        if mode in ("certificate", "mixed"):
            for pem in config.platform_certificates:
                try:
                    cert = signing.load_certificate(pem)
                except ValueError as exc:
                    raise ConfigurationError("platform_certificates holds an unreadable certificate") from exc
                self._certs[signing.certificate_serial(cert)] = cert

    @property
    def public_key_id(self) -> str | None:
        """The ``PUB_KEY_ID_…`` this store can verify, if any (requests name it in ``Wechatpay-Serial``)."""
        return next(iter(self._public), None)

    @property
    def downloads_certificates(self) -> bool:
        return self._config.verify_mode in ("certificate", "mixed")

    def _now(self) -> datetime:
        return datetime.fromtimestamp(self._clock(), UTC)

    @property
    def serials(self) -> list[str]:
        now = self._now()
        return sorted([*self._public, *(s for s, c in self._certs.items() if _not_after(c) > now)])

    def get(self, serial: str) -> rsa.RSAPublicKey | None:
        """The key for ``serial`` without any download; expired certificates count as absent."""
        if serial in self._public:
            return self._public[serial]
        cert = self._certs.get(serial)
        if cert is None or _not_after(cert) <= self._now():
            return None
        key = cert.public_key()
        return key if isinstance(key, rsa.RSAPublicKey) else None

    async def resolve(self, serial: str) -> rsa.RSAPublicKey | None:
        """Like :meth:`get`, but an unknown serial in a certificate mode triggers one (shared) download."""
        key = self.get(serial)
        if key is not None or not self.downloads_certificates or self._fetch is None:
            return key
        seen = self._generation
        async with self._lock:
            if self._generation != seen:           # someone else downloaded while we waited
                return self.get(serial)
            if self._clock() - self._last_attempt < self._min_interval:
                return None
            try:
                await self._refresh_locked()
            except ProviderError as exc:
                logger.warning("wechatpay: platform certificate download failed (%s, code=%s)",
                               type(exc).__name__, exc.provider_code)
                return None
        return self.get(serial)

    async def refresh(self) -> list[str]:
        """Download ``/v3/certificates`` now; returns the serials that were not known before."""
        if self._fetch is None or not self.downloads_certificates:
            raise ConfigurationError("certificate download is not used in verify_mode=public_key")
        async with self._lock:
            return await self._refresh_locked()

    async def _refresh_locked(self) -> list[str]:
        assert self._fetch is not None
        self._generation += 1
        self._last_attempt = self._clock()
        self.refresh_count += 1
        response = await self._fetch()
        if response.status_code != 200:
            result = DEFAULT_ERROR_MAPPER.raise_or_decline(response, op="certificates")
            raise ProviderMisconfigured(f"{PROVIDER}: certificate download refused ({result.provider_code})",
                                        provider=PROVIDER, provider_code=result.provider_code,
                                        request_id=result.request_id, http_status=response.status_code)
        now = self._now()
        try:
            apiv3_key = self._config.apiv3_key.get_secret_value().encode()
            fresh = decode_certificates(json.loads(response.content), apiv3_key, now=now)
        except ValueError as exc:
            raise ProviderUnavailable(f"{PROVIDER}: unusable certificate download ({exc})", provider=PROVIDER,
                                      request_id=request_id_of(response), http_status=200) from exc
        signed = SignatureHeaders.extract(response.headers)
        cert = fresh.get(signed.serial) if signed else None
        pub = cert.public_key() if cert is not None else None
        if (signed is None or not isinstance(pub, rsa.RSAPublicKey)
                or not signed.in_window(self._clock(), self._config.timestamp_tolerance_seconds)
                or not signed.verify(pub, response.content)):
            raise ProviderUnavailable(f"{PROVIDER}: certificate download not signed by a cert it holds",
                                      provider=PROVIDER, request_id=request_id_of(response), http_status=200)
        new = sorted(set(fresh) - set(self._certs))
        merged = {**self._certs, **fresh}
        self._certs = {s: c for s, c in merged.items() if _not_after(c) > now}
        return new

    def expiring_soon(self, within: timedelta) -> list[tuple[str, datetime]]:
        """Certificates (not yet expired) whose ``expire_time`` falls within ``within`` from now."""
        now = self._now()
        limit = now + within
        return sorted(((s, _not_after(c)) for s, c in self._certs.items() if now < _not_after(c) <= limit),
                      key=lambda item: item[1])

    def days_left(self) -> float | None:
        """Days until the first unexpired platform certificate expires (None without certificates)."""
        now = self._now()
        left = [(_not_after(c) - now).total_seconds() / 86400 for c in self._certs.values() if _not_after(c) > now]
        return min(left) if left else None

    async def encryption_key(self) -> tuple[str, rsa.RSAPublicKey]:
        """Key for sensitive-field encryption (§1.11): the public key, else the longest-valid certificate."""
        if self._public:
            serial = next(iter(self._public))
            return serial, self._public[serial]
        now = self._now()
        if not any(_not_after(c) > now for c in self._certs.values()) and self._fetch is not None:
            await self.refresh()
        valid = sorted(((_not_after(c), s) for s, c in self._certs.items() if _not_after(c) > now),
                       reverse=True)
        for _, serial in valid:
            key = self.get(serial)
            if key is not None:
                return serial, key
        raise ProviderUnavailable(f"{PROVIDER}: no valid WeChat key to encrypt with", provider=PROVIDER)

    async def check(self, headers: Mapping[str, str], body: bytes) -> str | None:
        """Verify a signed answer or callback. None when valid, else the rejection code.

        Order: headers -> probe (before any crypto) -> time window -> key -> signature.
        """
        signed = SignatureHeaders.extract(headers)
        if signed is None:
            return "missing_signature_headers"
        if signed.is_probe:
            return "signature_probe"
        if not signed.in_window(self._clock(), self._config.timestamp_tolerance_seconds):
            return "timestamp_out_of_window"
        key = await self.resolve(signed.serial)
        if key is None:
            return "unknown_serial"
        if not signed.verify(key, body):
            return "invalid_signature"
        return None

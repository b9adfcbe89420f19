"""Alibaba Cloud KMS (API version 2016-01-20) as a :class:`minigate.kms.KeyWrapper`: ``Encrypt`` and ``Decrypt``.

RPC-style calls to ``https://kms.<region>.aliyuncs.com/``, signed with the RPC "V2" HMAC-SHA1 signature of
:mod:`minigate.providers.aliyun_sms.signing` (the same code that signs SMS calls). Every parameter travels in a
form body (``POST /``), so no key material appears in a URL that a proxy might log. The plaintext is the root
key, base64-encoded; the ``EncryptionContext`` binds the ciphertext to the ``data_keys`` row holding it, so a
ciphertext copied to another row does not decrypt. ``Decrypt`` needs no key id (the ciphertext names its key),
which is what lets a process configured with a new key read a root still wrapped by the previous one.

Errors (``{"Code","Message","RequestId"}``, HTTP 4xx/5xx) become :class:`minigate.kms.KmsError` carrying the
code and request id only: Alibaba's ``SignatureDoesNotMatch`` message quotes the string it signed, which holds
the plaintext of an ``Encrypt``.
"""

from __future__ import annotations

import base64
import json
import secrets
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import httpx
from pydantic import SecretStr

from minigate.errors import MinigateError
from minigate.kms import KmsError
from minigate.logging import get_logger
from minigate.providers._http import send
from minigate.providers.aliyun_sms import signing

if TYPE_CHECKING:
    from minigate.config import Settings

__all__ = ["API_VERSION", "AliyunKmsWrapper", "encryption_context"]

API_VERSION = "2016-01-20"
NAME = "aliyun-kms"
log = get_logger("minigate.kms")


def encryption_context(key_id: str) -> str:
    """The ``EncryptionContext`` of a wrapped root: compact JSON, so Encrypt and Decrypt send the same text."""
    return json.dumps({"minigate": "root-key", "row": key_id}, separators=(",", ":"), sort_keys=True)


class AliyunKmsWrapper:
    """One customer master key of Alibaba Cloud KMS; the AccessKey needs ``kms:Encrypt`` and ``kms:Decrypt``
    on it (and ``kms:Decrypt`` on the previous key during a rotation)."""

    name = NAME

    def __init__(self, *, key_id: str, access_key_id: str, access_key_secret: SecretStr, endpoint: str,
                 region_id: str = "cn-hangzhou", timeout_seconds: float = 10.0,
                 client: httpx.AsyncClient | None = None, clock: Callable[[], float] = time.time,
                 nonce: Callable[[], str] = lambda: secrets.token_hex(16)) -> None:
        if not key_id or not access_key_id or not access_key_secret.get_secret_value():
            raise KmsError("Alibaba Cloud KMS needs MINIGATE_KMS_KEY_ID, MINIGATE_KMS_ACCESS_KEY_ID and "
                           "MINIGATE_KMS_ACCESS_KEY_SECRET")
        self.key_ref = key_id
        self.access_key_id = access_key_id
        self._secret = access_key_secret
        self.endpoint = endpoint.rstrip("/") + "/"
        self.region_id = region_id
        self._timeout = httpx.Timeout(timeout_seconds).as_dict()
        self._own_client = client is None
        self._client = client or httpx.AsyncClient(timeout=timeout_seconds)
        self._clock = clock
        self._nonce = nonce
        #: RequestIds of the calls made, for the log line of a start or a rotation
        self.request_ids: list[str] = []

    @classmethod
    def from_settings(cls, settings: Settings, *, key_id: str | None = None) -> AliyunKmsWrapper:
        secret = settings.kms_access_key_secret or SecretStr("")
        endpoint = settings.kms_endpoint or f"https://kms.{settings.kms_region_id}.aliyuncs.com"
        return cls(key_id=key_id or settings.kms_key_id or "", access_key_id=settings.kms_access_key_id or "",
                   access_key_secret=secret, endpoint=endpoint, region_id=settings.kms_region_id,
                   timeout_seconds=settings.kms_timeout_seconds)

    def __repr__(self) -> str:
        return f"AliyunKmsWrapper(key_id={self.key_ref!r}, endpoint={self.endpoint!r})"

    def describe(self) -> dict[str, str]:
        return {"wrapper": self.name, "kms_key": self.key_ref, "endpoint": self.endpoint,
                "access_key_id": self.access_key_id}

    async def aclose(self) -> None:
        if self._own_client:
            await self._client.aclose()

    # ------------------------------------------------------------------ requests
    def build_request(self, action: str, params: Mapping[str, str]) -> httpx.Request:
        """One signed ``POST /`` with every parameter, the signature included, in a form body."""
        form = {"Action": action, "Version": API_VERSION, "Format": "JSON", "AccessKeyId": self.access_key_id,
                "SignatureMethod": "HMAC-SHA1", "SignatureVersion": "1.0", "SignatureNonce": self._nonce(),
                "Timestamp": signing.format_timestamp(self._clock()), "RegionId": self.region_id, **params}
        form["Signature"] = signing.rpc_signature("POST", form, self._secret.get_secret_value())
        return httpx.Request("POST", self.endpoint, content=signing.canonical_query(form).encode(),
                             headers={"content-type": "application/x-www-form-urlencoded",
                                      "accept": "application/json"},
                             extensions={"timeout": self._timeout})

    async def _call(self, action: str, params: Mapping[str, str]) -> dict[str, Any]:
        try:
            response = await send(self._client, self.build_request(action, params), provider=self.name)
        except MinigateError as exc:
            raise KmsError(f"{self.name}: {action}: {exc}") from None
        try:
            data = json.loads(response.content)
        except (ValueError, UnicodeDecodeError):
            data = None
        if not isinstance(data, dict):
            raise KmsError(f"{self.name}: {action}: unreadable answer (HTTP {response.status_code})")
        request_id = str(data.get("RequestId", ""))
        if response.status_code != 200 or "Code" in data:
            code = str(data.get("Code", "")) or "unknown"
            raise KmsError(f"{self.name}: {action} refused: {code} (HTTP {response.status_code}, "
                           f"RequestId {request_id or '-'})")
        self.request_ids.append(request_id)
        log.info("kms call", provider=self.name, action=action, kms_key=str(data.get("KeyId", "")),
                 request_id=request_id)
        return data

    # ------------------------------------------------------------------ KeyWrapper
    async def wrap(self, key_id: str, raw: bytes) -> str:
        data = await self._call("Encrypt", {"KeyId": self.key_ref, "Plaintext": base64.b64encode(raw).decode(),
                                            "EncryptionContext": encryption_context(key_id)})
        blob = data.get("CiphertextBlob")
        if not isinstance(blob, str) or not blob:
            raise KmsError(f"{self.name}: Encrypt answered no CiphertextBlob")
        return blob

    async def unwrap(self, key_id: str, wrapped: str) -> bytes:
        data = await self._call("Decrypt", {"CiphertextBlob": wrapped,
                                            "EncryptionContext": encryption_context(key_id)})
        try:
            return base64.b64decode(str(data.get("Plaintext", "")), validate=True)
        except ValueError:
            raise KmsError(f"{self.name}: Decrypt answered an unreadable Plaintext") from None

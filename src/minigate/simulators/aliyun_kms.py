"""Alibaba Cloud KMS simulator (API version 2016-01-20): ``Encrypt`` and ``Decrypt`` of symmetric keys, an ASGI app.

``POST /`` (or ``GET``) with the RPC-style common parameters in the query and/or a form body, signed with the RPC
"V2" HMAC-SHA1 signature (:mod:`minigate.providers.aliyun_sms.signing`, the code the client signs with). Checks,
in the gateway's order: parse -> missing parameters (``MissingParameter``, 400) -> ``Version`` / ``Action``
(``InvalidVersion`` 400, ``InvalidAction.NotFound`` 404) -> AccessKeyId (``InvalidAccessKeyId.NotFound``, 404)
-> time stamp ±15 min (``IllegalTimestamp``, 400) -> nonce replay (``SignatureNonceUsed``, 400) -> signature
(``SignatureDoesNotMatch``, 400, quoting the string to sign as Alibaba does) -> the operation: unknown key
(``Forbidden.KeyNotFound``, 404), bad ``Plaintext`` or ``EncryptionContext`` (``InvalidParameter``, 400), a
ciphertext that does not decrypt — tampered, or another ``EncryptionContext`` (``InvalidParameter``, 400 [L]).
Errors answer ``{"HttpStatus","Code","Message","RequestId","HostId"}``; answers are JSON whatever ``Format``.

The account's keys live in the state dir (``aliyun-kms.json``: the AccessKey pair, and two keys with their
AES-256 material); ``minigate sandbox credentials aliyun-kms`` prints the AccessKey and the key ids, never the
material. A ``CiphertextBlob`` is ``base64(key id ‖ nonce ‖ AES-GCM(material, plaintext, aad=context))``: it
names its key, so ``Decrypt`` takes no ``KeyId``, as with Alibaba. ``next_call`` faults
(``/_sandbox/faults``) match a prefix of the Action.

Guesses ([L]): the code for a ciphertext that does not decrypt, and Alibaba's exact ciphertext format (opaque).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hmac
import json
import os
import secrets
import string
import uuid
from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qsl

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from minigate.providers.aliyun_sms import signing
from minigate.simulators._core import Clock, CredentialStore, Faults, fault_routes, json_bytes
from minigate.simulators._sms import NonceCache

__all__ = ["API_VERSION", "AliyunKmsSimulator", "create_credentials"]

API_VERSION = "2016-01-20"
HOST_ID = "kms.cn-hangzhou.aliyuncs.com"
#: Alibaba's limit on Encrypt's plaintext
MAX_PLAINTEXT = 6 * 1024
REQUIRED: Mapping[str, tuple[str, ...]] = {"Encrypt": ("KeyId", "Plaintext"), "Decrypt": ("CiphertextBlob",)}
_RPC_COMMON = ("AccessKeyId", "Signature", "SignatureMethod", "SignatureNonce", "Timestamp", "Version")
_NOT_MATCHED = "Specified signature is not matched with our calculation. server string to sign is:"
_ALNUM = string.ascii_letters + string.digits
_KEY_ID_BYTES = 36            # a key id is a UUID, 36 ASCII characters


def create_credentials() -> dict[str, Any]:
    """An AccessKey pair and two customer master keys (a rotation moves from one to the other)."""
    return {"access_key_id": "LTAI5t" + "".join(secrets.choice(_ALNUM) for _ in range(18)),
            "access_key_secret": "".join(secrets.choice(_ALNUM) for _ in range(30)),
            "region_id": "cn-hangzhou",
            "keys": {str(uuid.uuid4()): base64.b64encode(os.urandom(32)).decode() for _ in range(2)}}


class _Refusal(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(code)
        self.status = status
        self.code = code
        self.message = message


def _missing(name: str) -> _Refusal:
    return _Refusal(400, "MissingParameter", f'The parameter "{name}" is needed but not provided.')


def _invalid(name: str) -> _Refusal:
    return _Refusal(400, "InvalidParameter", f'The specified parameter "{name}" is not valid.')


class AliyunKmsSimulator:
    """One simulated Alibaba Cloud account with KMS enabled. ``app`` is the ASGI app (mount it anywhere)."""

    name = "aliyun-kms"

    def __init__(self, store: CredentialStore, *, clock: Clock, faults: Faults | None = None) -> None:
        data = store.load_or_create(self.name, create_credentials)
        self.access_key_id: str = data["access_key_id"]
        self.access_key_secret: str = data["access_key_secret"]
        self.region_id: str = data["region_id"]
        self._keys: dict[str, AESGCM] = {kid: AESGCM(base64.b64decode(material))
                                         for kid, material in data["keys"].items()}
        self.clock = clock
        self.faults = faults or Faults()
        self.nonces = NonceCache()
        self.timestamp_tolerance_seconds = 900.0
        #: (Action, KeyId) of every call that passed the gateway checks, for tests
        self.calls: list[tuple[str, str]] = []
        self.app = Starlette(routes=[Route("/", self._api, methods=["GET", "POST"]), *fault_routes(self.faults)])

    @property
    def key_ids(self) -> list[str]:
        return list(self._keys)

    def credentials(self) -> dict[str, Any]:
        return {"access_key_id": self.access_key_id, "access_key_secret": self.access_key_secret,
                "region_id": self.region_id, "key_ids": self.key_ids}

    def now(self) -> float:
        return self.clock.now() + self.faults.clock_skew_seconds

    # ------------------------------------------------------------------ wire
    @staticmethod
    def _answer(obj: dict[str, Any], status: int = 200) -> Response:
        return Response(json_bytes(obj), status, media_type="application/json;charset=utf-8")

    def _refusal(self, refusal: _Refusal) -> Response:
        return self._answer({"HttpStatus": refusal.status, "Code": refusal.code, "Message": refusal.message,
                             "RequestId": str(uuid.uuid4()), "HostId": HOST_ID}, refusal.status)

    async def _api(self, request: Request) -> Response:
        raw_query = request.scope.get("query_string", b"").decode("utf-8", "replace")
        params = dict(parse_qsl(raw_query, keep_blank_values=True))
        body = await request.body()
        if body and request.headers.get("content-type", "").startswith("application/x-www-form-urlencoded"):
            params |= dict(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))
        try:
            self._authenticate(request.method, params)
            action = params["Action"]
            fault = self.faults.take_call(action)
            if fault is not None and fault.kind == "timeout":
                await asyncio.sleep(fault.seconds)
                raise _Refusal(504, "ServiceTimeout", "The request has timed out.")
            if fault is not None and fault.kind == "http_429":
                raise _Refusal(429, "Throttling", "Request was denied due to request throttling.")
            if fault is not None and fault.kind in ("http_500", "charged_then_timeout", "bad_signature"):
                raise _Refusal(500, "InternalFailure", "Internal Failure.")
            result = self.encrypt(params) if action == "Encrypt" else self.decrypt(params)
        except _Refusal as refusal:
            return self._refusal(refusal)
        return self._answer({"RequestId": str(uuid.uuid4()), **result})

    def _authenticate(self, method: str, params: dict[str, str]) -> None:
        if not params.get("Action"):
            raise _missing("Action")
        for name in _RPC_COMMON:
            if not params.get(name):
                raise _missing(name)
        if params["SignatureMethod"] != "HMAC-SHA1" or params.get("SignatureVersion", "1.0") != "1.0":
            raise _Refusal(400, "InvalidSignatureMethod", "Specified signature method is not supported.")
        if params["Version"] != API_VERSION:
            raise _Refusal(400, "InvalidVersion", "Specified parameter Version is not valid.")
        if params["Action"] not in REQUIRED:
            raise _Refusal(404, "InvalidAction.NotFound", "Specified api is not found, please check your url and "
                                                          "method.")
        for name in REQUIRED[params["Action"]]:
            if not params.get(name):
                raise _missing(name)
        if params["AccessKeyId"] != self.access_key_id:
            raise _Refusal(404, "InvalidAccessKeyId.NotFound",
                           "The AccessKey ID provided does not exist in our records.")
        try:
            sent = signing.parse_timestamp(params["Timestamp"])
        except ValueError:
            raise _Refusal(400, "IllegalTimestamp", 'The input parameter "Timestamp" that is mandatory for '
                                                    "processing this request is not supplied.") from None
        now = self.now()
        if abs(now - sent) > self.timestamp_tolerance_seconds:
            raise _Refusal(400, "IllegalTimestamp", "Specified time stamp or date value is expired.")
        if not self.nonces.use(f"{params['AccessKeyId']}:{params['SignatureNonce']}", now):
            raise _Refusal(400, "SignatureNonceUsed", "Specified signature nonce was used already.")
        expected = signing.rpc_signature(method, params, self.access_key_secret)
        if not hmac.compare_digest(expected.encode(), params["Signature"].encode()):
            raise _Refusal(400, "SignatureDoesNotMatch", _NOT_MATCHED + signing.rpc_string_to_sign(method, params))

    # ------------------------------------------------------------------ operations
    @staticmethod
    def _context(params: Mapping[str, str]) -> bytes:
        """The EncryptionContext as associated data: a JSON object of strings, canonicalised (key order and
        spacing do not matter, as with Alibaba)."""
        raw = params.get("EncryptionContext")
        if not raw:
            return b""
        try:
            value = json.loads(raw)
        except ValueError:
            raise _invalid("EncryptionContext") from None
        if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
            raise _invalid("EncryptionContext")
        return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()

    def _key(self, key_id: str) -> AESGCM:
        key = self._keys.get(key_id)
        if key is None:
            raise _Refusal(404, "Forbidden.KeyNotFound", "The specified Key is not found.")
        return key

    def encrypt(self, params: Mapping[str, str]) -> dict[str, Any]:
        key_id = params["KeyId"]
        key = self._key(key_id)
        try:
            plaintext = base64.b64decode(params["Plaintext"], validate=True)
        except (binascii.Error, ValueError):
            raise _invalid("Plaintext") from None
        if len(plaintext) > MAX_PLAINTEXT:
            raise _invalid("Plaintext")
        context = self._context(params)
        nonce = os.urandom(12)
        blob = key_id.encode() + nonce + key.encrypt(nonce, plaintext, context)
        self.calls.append(("Encrypt", key_id))
        return {"KeyId": key_id, "KeyVersionId": key_id, "CiphertextBlob": base64.b64encode(blob).decode()}

    def decrypt(self, params: Mapping[str, str]) -> dict[str, Any]:
        try:
            blob = base64.b64decode(params["CiphertextBlob"], validate=True)
        except (binascii.Error, ValueError):
            raise _invalid("CiphertextBlob") from None
        if len(blob) < _KEY_ID_BYTES + 12 + 16:
            raise _invalid("CiphertextBlob")
        key_id = blob[:_KEY_ID_BYTES].decode("ascii", "replace")
        key = self._key(key_id)
        context = self._context(params)
        nonce, sealed = blob[_KEY_ID_BYTES:_KEY_ID_BYTES + 12], blob[_KEY_ID_BYTES + 12:]
        try:
            plaintext = key.decrypt(nonce, sealed, context)
        except InvalidTag:
            raise _invalid("CiphertextBlob") from None
        self.calls.append(("Decrypt", key_id))
        return {"KeyId": key_id, "KeyVersionId": key_id, "Plaintext": base64.b64encode(plaintext).decode()}

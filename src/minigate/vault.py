"""Encryption of personal data and stored credentials at rest.

Each value is sealed with AES-256-GCM under a *data key* (DEK); data keys are wrapped by the master
key (KEK, from ``MINIGATE_MASTER_KEY``) and stored in the ``data_keys`` table, so rotating the master key
re-wraps data keys only (B-10). Lookups go through keyed hashes (HMAC-SHA256 under the *lookup key*, itself
a wrapped row of ``data_keys`` with the id ``lookup``) so equality search never needs the clear text and
survives a master-key rotation. Sealed values are self-describing:
``mg1.<dek id>.<base64(nonce ‖ ciphertext ‖ tag)>``; the associated data binds a value to its column.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

__all__ = ["LOOKUP_KEY_ID", "Vault", "VaultError", "WrappedKey"]

_PREFIX = "mg1"
#: the ``data_keys`` row holding the lookup-hash key
LOOKUP_KEY_ID = "lookup"


class VaultError(Exception):
    """A sealed value cannot be opened (wrong key, tampered, unknown data key)."""


def _derive(master: bytes, purpose: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=b"minigate-vault-v1", info=purpose).derive(master)


@dataclass(frozen=True, slots=True)
class WrappedKey:
    key_id: str
    wrapped: str           # base64(nonce ‖ AES-GCM(KEK, dek))


class Vault:
    def __init__(self, master_key: str | bytes) -> None:
        master = master_key.encode() if isinstance(master_key, str) else master_key
        if len(master) < 16:
            raise ValueError("master key too short")
        self._kek = AESGCM(_derive(master, b"kek"))
        #: until a stored lookup key is loaded: the one databases made before it was stored used
        self._legacy_hash_key = self._hash_key = _derive(master, b"lookup-hash")
        self._deks: dict[str, AESGCM] = {}
        self._current: str | None = None

    # -- data keys -------------------------------------------------------------------------------
    def new_data_key(self) -> WrappedKey:
        dek = AESGCM.generate_key(bit_length=256)
        key_id = base64.b32encode(os.urandom(10)).decode().lower()
        nonce = os.urandom(12)
        wrapped = base64.b64encode(nonce + self._kek.encrypt(nonce, dek, key_id.encode())).decode()
        self._deks[key_id] = AESGCM(dek)
        self._current = key_id
        return WrappedKey(key_id, wrapped)

    def load_data_key(self, wrapped: WrappedKey, *, current: bool = False) -> None:
        self._deks[wrapped.key_id] = AESGCM(self._unwrap(wrapped))
        if current or self._current is None:
            self._current = wrapped.key_id

    def _wrap(self, key_id: str, raw: bytes) -> WrappedKey:
        nonce = os.urandom(12)
        return WrappedKey(key_id, base64.b64encode(nonce + self._kek.encrypt(nonce, raw, key_id.encode())).decode())

    def _unwrap(self, wrapped: WrappedKey) -> bytes:
        raw = base64.b64decode(wrapped.wrapped)
        try:
            return self._kek.decrypt(raw[:12], raw[12:], wrapped.key_id.encode())
        except InvalidTag as exc:
            raise VaultError("data key cannot be unwrapped: wrong master key?") from exc

    def can_unwrap(self, wrapped: WrappedKey) -> bool:
        try:
            self._unwrap(wrapped)
        except VaultError:
            return False
        return True

    def new_lookup_key(self, *, legacy: bool = False) -> WrappedKey:
        """A wrapped lookup-hash key: random, or (``legacy``) the master-derived one older databases used."""
        raw = self._legacy_hash_key if legacy else os.urandom(32)
        self._hash_key = raw
        return self._wrap(LOOKUP_KEY_ID, raw)

    def load_lookup_key(self, wrapped: WrappedKey) -> None:
        self._hash_key = self._unwrap(wrapped)

    def rewrap(self, wrapped: WrappedKey, new: Vault) -> WrappedKey:
        """Unwrap with this vault's master key, wrap with ``new``'s: master-key rotation touches nothing else."""
        return new._wrap(wrapped.key_id, self._unwrap(wrapped))

    @property
    def ready(self) -> bool:
        return self._current is not None

    # -- values ------------------------------------------------------------------------------------
    def seal(self, plaintext: str, *, context: str) -> str:
        if self._current is None:
            raise VaultError("no data key loaded")
        nonce = os.urandom(12)
        ct = self._deks[self._current].encrypt(nonce, plaintext.encode(), context.encode())
        return f"{_PREFIX}.{self._current}.{base64.b64encode(nonce + ct).decode()}"

    def open(self, sealed: str, *, context: str) -> str:
        try:
            prefix, key_id, payload = sealed.split(".", 2)
        except ValueError as exc:
            raise VaultError("not a sealed value") from exc
        if prefix != _PREFIX or key_id not in self._deks:
            raise VaultError("unknown data key")
        raw = base64.b64decode(payload)
        try:
            return self._deks[key_id].decrypt(raw[:12], raw[12:], context.encode()).decode()
        except InvalidTag as exc:
            raise VaultError("sealed value does not open: tampered or wrong context") from exc

    def lookup_hash(self, value: str, *, context: str) -> str:
        """Keyed hash for equality lookups; not reversible without the master key."""
        return hmac.new(self._hash_key, f"{context}\x00{value}".encode(), hashlib.sha256).hexdigest()


def mask(value: str, *, keep_start: int = 3, keep_end: int = 4) -> str:
    """``oUpF8uMuAJO_M2pxb1Q9zNjWeS6o`` -> ``oUp*********************WeS6o``-style masking for output."""
    if len(value) <= keep_start + keep_end:
        return "*" * len(value)
    return value[:keep_start] + "*" * (len(value) - keep_start - keep_end) + value[-keep_end:]

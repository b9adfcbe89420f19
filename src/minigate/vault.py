"""Encryption of personal data and stored credentials at rest.

Each value is sealed with AES-256-GCM under a *data key* (DEK). Data keys are wrapped by a key-encryption key
(KEK) and stored in the ``data_keys`` table, so changing the KEK re-wraps data keys only (B-10). The KEK is one
of two things, and a wrapped value says which:

- the **master key** (``MINIGATE_MASTER_KEY``, HKDF-derived): ``base64(nonce ‖ AES-GCM(KEK, dek))``, the format
  every database made before KMS support holds;
- a **root key** (32 random bytes) that a KMS wraps (:mod:`minigate.kms`): data keys under it are
  ``kr1.<root fingerprint>.base64(nonce ‖ AES-GCM(root, dek))`` and the root itself is the row
  ``root-<fingerprint>``, ``kms1.<wrapper>.<key ref>.<payload>``. The KMS is called once per process start to
  unwrap the root, so making a new data key or opening a value never waits on the KMS.

Lookups go through keyed hashes (HMAC-SHA256 under the *lookup key*, itself a wrapped row of ``data_keys`` with
the id ``lookup``) so equality search never needs the clear text and survives a KEK change. Sealed values are
self-describing: ``mg1.<dek id>.<base64(nonce ‖ ciphertext ‖ tag)>``; the associated data binds a value to its
column.
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

__all__ = ["KMS_PREFIX", "LOOKUP_KEY_ID", "ROOT_KEY_PREFIX", "KeyEncryptionKey", "UnknownWrapping", "Vault",
           "VaultError", "WrappedKey", "describe_wrapping", "root_key_id"]

_PREFIX = "mg1"
#: the ``data_keys`` row holding the lookup-hash key
LOOKUP_KEY_ID = "lookup"
#: ``data_keys`` rows whose id starts with this hold a KMS-wrapped root key (``root-<fingerprint>``)
ROOT_KEY_PREFIX = "root-"
#: a data key wrapped by a root key: ``kr1.<root fingerprint>.<base64>``
_ROOT_WRAP = "kr1"
#: a root key wrapped by a :class:`minigate.kms.KeyWrapper`: ``kms1.<wrapper>.<b64url key ref>.<payload>``
KMS_PREFIX = "kms1"


class VaultError(Exception):
    """A sealed value cannot be opened (wrong key, tampered, unknown data key)."""


class UnknownWrapping(VaultError):
    """A data key is wrapped by a KEK this process has not loaded (a root made after it started, or a KMS
    wrapping only the runtime can undo): ``await runtime.refresh_keys()`` and try again."""


def _derive(master: bytes, purpose: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=b"minigate-vault-v1", info=purpose).derive(master)


def _fingerprint(raw: bytes) -> str:
    """A root key's public name: 64 bits of a keyed digest, so it identifies the key without revealing it."""
    return hmac.new(raw, b"minigate-root-key-fingerprint", hashlib.sha256).hexdigest()[:16]


def root_key_id(raw: bytes) -> str:
    """The ``data_keys`` id of a root key."""
    return ROOT_KEY_PREFIX + _fingerprint(raw)


@dataclass(frozen=True, slots=True)
class WrappedKey:
    key_id: str
    wrapped: str           # see the module docstring for the formats


class KeyEncryptionKey:
    """An AES-256-GCM KEK: the master-derived one (untagged wire format) or a root key (``kr1`` tagged).

    Wrapping is synchronous and local, so new data keys can be made on any path without I/O.
    """

    def __init__(self, key: bytes, *, fingerprint: str | None) -> None:
        self._aead = AESGCM(key)
        #: None for the master key, the root key's fingerprint otherwise
        self.fingerprint = fingerprint

    @classmethod
    def from_master(cls, master_key: str | bytes) -> KeyEncryptionKey:
        master = master_key.encode() if isinstance(master_key, str) else master_key
        if len(master) < 16:
            raise ValueError("master key too short")
        return cls(_derive(master, b"kek"), fingerprint=None)

    @classmethod
    def root(cls, raw: bytes) -> KeyEncryptionKey:
        if len(raw) != 32:
            raise VaultError("a root key is 32 bytes")
        return cls(raw, fingerprint=_fingerprint(raw))

    def __repr__(self) -> str:
        return f"KeyEncryptionKey({'master' if self.fingerprint is None else 'root ' + self.fingerprint})"

    def wrap(self, key_id: str, raw: bytes) -> str:
        nonce = os.urandom(12)
        body = base64.b64encode(nonce + self._aead.encrypt(nonce, raw, key_id.encode())).decode()
        return body if self.fingerprint is None else f"{_ROOT_WRAP}.{self.fingerprint}.{body}"

    def owns(self, wrapped: str) -> bool:
        """Whether ``wrapped`` is in this KEK's format (it may still fail to unwrap with another master key)."""
        if self.fingerprint is None:
            return "." not in wrapped
        return wrapped.startswith(f"{_ROOT_WRAP}.{self.fingerprint}.")

    def unwrap(self, key_id: str, wrapped: str) -> bytes:
        body = wrapped if self.fingerprint is None else wrapped.split(".", 2)[2]
        try:
            raw = base64.b64decode(body, validate=True)
            return self._aead.decrypt(raw[:12], raw[12:], key_id.encode())
        except (InvalidTag, ValueError) as exc:
            raise VaultError(f"data key {key_id} cannot be unwrapped: wrong master key?") from exc


def describe_wrapping(wrapped: str) -> dict[str, str]:
    """Which KEK holds a wrapped key, from its format alone (fingerprints and key references only)."""
    parts = wrapped.split(".", 3)
    if parts[0] == _ROOT_WRAP and len(parts) >= 3:
        return {"wrapper": "root", "root": parts[1]}
    if parts[0] == KMS_PREFIX and len(parts) == 4:
        ref = base64.urlsafe_b64decode(parts[2] + "=" * (-len(parts[2]) % 4)).decode("utf-8", "replace")
        return {"wrapper": parts[1], "kms_key": ref}
    return {"wrapper": "master-key"}


class Vault:
    """Data keys in memory, the KEK that wraps new ones, and the readers for older wrappings.

    ``Vault(master_key)`` reads and writes the master-key format. A process configured with a KMS loads the
    root key with :meth:`install_root` (the runtime unwraps it through the KMS first).
    """

    def __init__(self, master_key: str | bytes | None = None) -> None:
        self._master = KeyEncryptionKey.from_master(master_key) if master_key is not None else None
        #: master-format readers, current master first (then ``MINIGATE_MASTER_KEY_PREVIOUS``)
        self._masters: list[KeyEncryptionKey] = [self._master] if self._master is not None else []
        self._roots: dict[str, KeyEncryptionKey] = {}
        #: the KEK wrapping new data keys: the active root once installed, else the master key
        self._kek: KeyEncryptionKey | None = self._master
        master = master_key.encode() if isinstance(master_key, str) else master_key
        #: until a stored lookup key is loaded: the one databases made before it was stored used
        self._legacy_hash_key: bytes | None = _derive(master, b"lookup-hash") if master is not None else None
        self._hash_key: bytes | None = self._legacy_hash_key
        self._deks: dict[str, AESGCM] = {}
        self._current: str | None = None

    # -- key-encryption keys -----------------------------------------------------------------------
    def add_previous_master(self, master_key: str | bytes) -> None:
        """Also read data keys wrapped by ``master_key`` (a master-key rotation in progress)."""
        self._masters.append(KeyEncryptionKey.from_master(master_key))

    def install_root(self, raw: bytes, *, current: bool) -> str:
        """Hold a root key (unwrapped by the KMS); ``current``: new data keys are wrapped by it. Its fingerprint."""
        kek = KeyEncryptionKey.root(raw)
        assert kek.fingerprint is not None
        self._roots[kek.fingerprint] = kek
        if current:
            self._kek = kek
        return kek.fingerprint

    def has_root(self, fingerprint: str) -> bool:
        return fingerprint in self._roots

    def use_root(self, fingerprint: str) -> None:
        """New data keys are wrapped by the root key ``fingerprint`` (installed before)."""
        if fingerprint not in self._roots:
            raise UnknownWrapping(f"root key {fingerprint} is not loaded")
        self._kek = self._roots[fingerprint]

    def use_master_for_new_keys(self) -> None:
        """New data keys are wrapped by the master key (no active root in the database)."""
        if self._master is None:
            raise VaultError("the data keys are wrapped by a master key and none is set: set MINIGATE_MASTER_KEY "
                             "(until `minigate keys rotate-master --to kms` has run)")
        self._kek = self._master

    @property
    def current_kek(self) -> KeyEncryptionKey | None:
        return self._kek

    def unwrap_key(self, wrapped: WrappedKey) -> bytes:
        """The raw key under any KEK this vault holds; :class:`UnknownWrapping` when it holds none that fits."""
        text = wrapped.wrapped
        if text.startswith(f"{KMS_PREFIX}."):
            raise UnknownWrapping(f"key {wrapped.key_id} is wrapped by a KMS: the runtime unwraps it")
        if text.startswith(f"{_ROOT_WRAP}."):
            fingerprint = text.split(".", 2)[1]
            root = self._roots.get(fingerprint)
            if root is None:
                raise UnknownWrapping(f"data key {wrapped.key_id} is wrapped by root key {fingerprint}, "
                                      "which this process has not loaded")
            return root.unwrap(wrapped.key_id, text)
        if not self._masters:
            raise UnknownWrapping(f"data key {wrapped.key_id} is wrapped by a master key, and none is configured")
        error: VaultError | None = None
        for master in self._masters:
            try:
                return master.unwrap(wrapped.key_id, text)
            except VaultError as exc:
                error = exc
        assert error is not None
        raise error

    def wrap_key(self, key_id: str, raw: bytes, kek: KeyEncryptionKey | None = None) -> WrappedKey:
        """``raw`` wrapped by ``kek`` (default: the KEK of new data keys)."""
        target = kek or self._kek
        if target is None:
            raise VaultError("no key-encryption key: set MINIGATE_MASTER_KEY or configure a KMS")
        return WrappedKey(key_id, target.wrap(key_id, raw))

    # -- data keys -------------------------------------------------------------------------------
    def new_data_key(self) -> WrappedKey:
        dek = AESGCM.generate_key(bit_length=256)
        key_id = base64.b32encode(os.urandom(10)).decode().lower()
        wrapped = self.wrap_key(key_id, dek)
        self._deks[key_id] = AESGCM(dek)
        self._current = key_id
        return wrapped

    def load_data_key(self, wrapped: WrappedKey, *, current: bool = False) -> None:
        self._deks[wrapped.key_id] = AESGCM(self.unwrap_key(wrapped))
        if current or self._current is None:
            self._current = wrapped.key_id

    def has_data_key(self, key_id: str) -> bool:
        return key_id in self._deks

    def can_unwrap(self, wrapped: WrappedKey) -> bool:
        try:
            self.unwrap_key(wrapped)
        except VaultError:
            return False
        return True

    def new_lookup_key(self, *, legacy: bool = False) -> WrappedKey:
        """A wrapped lookup-hash key: random, or (``legacy``) the master-derived one older databases used."""
        if legacy and self._legacy_hash_key is None:
            raise VaultError("this database predates stored lookup keys: its master key is needed")
        raw = self._legacy_hash_key if legacy and self._legacy_hash_key is not None else os.urandom(32)
        wrapped = self.wrap_key(LOOKUP_KEY_ID, raw)
        self._hash_key = raw
        return wrapped

    def load_lookup_key(self, wrapped: WrappedKey) -> None:
        self._hash_key = self.unwrap_key(wrapped)

    def rewrap(self, wrapped: WrappedKey, new: Vault) -> WrappedKey:
        """Unwrap with this vault's keys, wrap with ``new``'s current KEK: rotation touches nothing else."""
        return new.wrap_key(wrapped.key_id, self.unwrap_key(wrapped))

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
        """Keyed hash for equality lookups; not reversible without the lookup key."""
        if self._hash_key is None:
            raise VaultError("no lookup key loaded")
        return hmac.new(self._hash_key, f"{context}\x00{value}".encode(), hashlib.sha256).hexdigest()

    # -- values under a key the caller holds (per-person keys, minigate.services.person_keys) ---------
    @staticmethod
    def key_id_of(sealed: str) -> str | None:
        """The key id a sealed value names, or None when it is not a sealed value."""
        parts = sealed.split(".", 2)
        return parts[1] if len(parts) == 3 and parts[0] == _PREFIX else None

    @staticmethod
    def seal_with(key_id: str, key: bytes, plaintext: str, *, context: str) -> str:
        """Like :meth:`seal`, under ``key`` (32 bytes) named ``key_id`` in the sealed value."""
        nonce = os.urandom(12)
        ct = AESGCM(key).encrypt(nonce, plaintext.encode(), context.encode())
        return f"{_PREFIX}.{key_id}.{base64.b64encode(nonce + ct).decode()}"

    @staticmethod
    def open_with(key: bytes, sealed: str, *, context: str) -> str:
        """Like :meth:`open`, with ``key`` (the one the sealed value's key id names)."""
        if Vault.key_id_of(sealed) is None:
            raise VaultError("not a sealed value")
        raw = base64.b64decode(sealed.split(".", 2)[2])
        try:
            return AESGCM(key).decrypt(raw[:12], raw[12:], context.encode()).decode()
        except InvalidTag as exc:
            raise VaultError("sealed value does not open: tampered or wrong context") from exc


def mask(value: str, *, keep_start: int = 3, keep_end: int = 4) -> str:
    """``oUpF8uMuAJO_M2pxb1Q9zNjWeS6o`` -> ``oUp*********************WeS6o``-style masking for output."""
    if len(value) <= keep_start + keep_end:
        return "*" * len(value)
    return value[:keep_start] + "*" * (len(value) - keep_start - keep_end) + value[-keep_end:]

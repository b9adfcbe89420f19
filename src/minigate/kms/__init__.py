"""Key-encryption through a KMS: the small interface the vault's root key is wrapped with.

A :class:`KeyWrapper` turns 32 raw bytes into an opaque string and back. The runtime calls it once per process
start (and once per rotation), to unwrap the database's root key (:mod:`minigate.vault`); data keys are then
wrapped and unwrapped locally under that root, so no request ever waits on the KMS.

``MINIGATE_KMS`` chooses the wrapper:

- unset: no KMS, data keys are wrapped by ``MINIGATE_MASTER_KEY`` (environment or TOML file);
- ``aliyun``: Alibaba Cloud KMS ``Encrypt``/``Decrypt`` (:mod:`minigate.kms.aliyun`);
- ``package.module:factory``: any other KMS. ``factory(settings)`` returns an object with the attributes of
  :class:`KeyWrapper`; it may read its own configuration from the environment.

A wrapped root records its wrapper and key reference (``kms1.<name>.<b64url key ref>.<payload>``), so a process
can tell which KMS key holds it and a rotation can move between wrappers.
"""

from __future__ import annotations

import base64
import importlib
import re
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from minigate.vault import KMS_PREFIX, VaultError

if TYPE_CHECKING:
    from minigate.config import Settings

__all__ = ["KeyWrapper", "KmsError", "build_wrapper", "parse_tagged", "tag"]

_NAME = re.compile(r"^[a-z0-9-]{1,32}$")


class KmsError(VaultError):
    """The KMS refused or could not be reached. Messages carry codes and request ids, never key material."""


@runtime_checkable
class KeyWrapper(Protocol):
    """One KMS key. ``wrap``/``unwrap`` take the ``data_keys`` row id the key is stored under, which a KMS that
    supports it binds to the ciphertext (Alibaba: the encryption context)."""

    #: ``[a-z0-9-]``, recorded in every wrapped value (``aliyun-kms``)
    name: str
    #: the KMS key new values are wrapped with (key id, alias or ARN), recorded beside the payload
    key_ref: str

    async def wrap(self, key_id: str, raw: bytes) -> str: ...

    async def unwrap(self, key_id: str, wrapped: str) -> bytes: ...

    def describe(self) -> dict[str, str]:
        """What ``minigate keys list`` shows: the wrapper, its key and endpoint — never a secret."""
        ...

    async def aclose(self) -> None: ...


def tag(wrapper: KeyWrapper, payload: str) -> str:
    """``payload`` as stored: ``kms1.<name>.<b64url key ref>.<payload>``."""
    if not _NAME.match(wrapper.name):
        raise KmsError(f"a KMS wrapper name is [a-z0-9-]{{1,32}}, not {wrapper.name!r}")
    ref = base64.urlsafe_b64encode(wrapper.key_ref.encode()).decode().rstrip("=")
    return f"{KMS_PREFIX}.{wrapper.name}.{ref}.{payload}"


def parse_tagged(wrapped: str) -> tuple[str, str, str]:
    """(wrapper name, key ref, payload) of a stored KMS-wrapped value."""
    parts = wrapped.split(".", 3)
    if len(parts) != 4 or parts[0] != KMS_PREFIX:
        raise KmsError("not a KMS-wrapped value")
    ref = base64.urlsafe_b64decode(parts[2] + "=" * (-len(parts[2]) % 4)).decode()
    return parts[1], ref, parts[3]


def build_wrapper(settings: Settings, *, key_ref: str | None = None) -> KeyWrapper | None:
    """The wrapper ``MINIGATE_KMS`` names (None when unset); ``key_ref`` overrides ``MINIGATE_KMS_KEY_ID``."""
    kind = settings.kms
    if not kind:
        return None
    if kind == "aliyun":
        from minigate.kms.aliyun import AliyunKmsWrapper

        return AliyunKmsWrapper.from_settings(settings, key_id=key_ref)
    module_name, sep, attr = kind.partition(":")
    if not sep or not module_name or not attr:
        raise KmsError(f"MINIGATE_KMS must be 'aliyun' or 'package.module:factory', not {kind!r}")
    try:
        factory = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise KmsError(f"MINIGATE_KMS={kind}: cannot import the factory ({type(exc).__name__})") from exc
    wrapper = factory(settings) if key_ref is None else factory(settings, key_ref=key_ref)
    if not isinstance(wrapper, KeyWrapper):
        raise KmsError(f"MINIGATE_KMS={kind}: the factory did not return a KeyWrapper")
    return wrapper

"""The key-encryption layer: the vault's wrapping formats, the KMS interface and its plug-in hook, the Alibaba
Cloud KMS client's signature, and a runtime that unwraps its root key once at start or refuses to start."""

from __future__ import annotations

import base64
import hmac
import io
import json
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import httpx
import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from pydantic import SecretStr
from sqlalchemy import select

from minigate.config import Settings, load_settings
from minigate.errors import ConfigurationError
from minigate.kms import KeyWrapper, KmsError, build_wrapper, parse_tagged, tag
from minigate.kms.aliyun import AliyunKmsWrapper
from minigate.logging import configure_logging
from minigate.providers.aliyun_sms import signing
from minigate.services.runtime import Runtime
from minigate.simulators._core import Clock, CredentialStore
from minigate.simulators.aliyun_kms import AliyunKmsSimulator
from minigate.store.migrate import upgrade
from minigate.store.tables import DataKey
from minigate.vault import (
    LOOKUP_KEY_ID,
    UnknownWrapping,
    Vault,
    VaultError,
    WrappedKey,
    describe_wrapping,
    root_key_id,
)

MASTER = "unit-master-key-0123456789abcdef0123456789"


# -- a plug-in KMS (MINIGATE_KMS=tests.unit.test_kms:fake_kms) -------------------------------------------

class FakeKms:
    """A KMS living in this module: AES-GCM under a key per key ref, the row id as associated data."""

    name = "fake-kms"
    material: dict[str, bytes] = {}
    calls: list[str] = []

    def __init__(self, key_ref: str) -> None:
        self.key_ref = key_ref
        self.material.setdefault(key_ref, os.urandom(32))

    async def wrap(self, key_id: str, raw: bytes) -> str:
        self.calls.append("wrap")
        nonce = os.urandom(12)
        body = nonce + AESGCM(self.material[self.key_ref]).encrypt(nonce, raw, key_id.encode())
        return f"{self.key_ref}~{base64.b64encode(body).decode()}"

    async def unwrap(self, key_id: str, wrapped: str) -> bytes:
        self.calls.append("unwrap")
        ref, _, body = wrapped.partition("~")
        raw = base64.b64decode(body)
        try:
            return AESGCM(self.material[ref]).decrypt(raw[:12], raw[12:], key_id.encode())
        except Exception as exc:
            raise KmsError("fake-kms: Decrypt refused") from exc

    def describe(self) -> dict[str, str]:
        return {"wrapper": self.name, "kms_key": self.key_ref}

    async def aclose(self) -> None:
        return None


def fake_kms(settings: Settings, *, key_ref: str | None = None) -> FakeKms:
    return FakeKms(key_ref or settings.kms_key_id or "fake-key-1")


# -- the vault's formats --------------------------------------------------------------------------------

def _old_format(master: str, key_id: str, raw: bytes) -> str:
    """A data key wrapped the way every database made before KMS support holds it."""
    kek = HKDF(algorithm=hashes.SHA256(), length=32, salt=b"minigate-vault-v1", info=b"kek").derive(master.encode())
    nonce = os.urandom(12)
    return base64.b64encode(nonce + AESGCM(kek).encrypt(nonce, raw, key_id.encode())).decode()


def test_databases_made_before_kms_support_keep_opening() -> None:
    raw = AESGCM.generate_key(bit_length=256)
    sealed_nonce = os.urandom(12)
    sealed = "mg1.olddek." + base64.b64encode(
        sealed_nonce + AESGCM(raw).encrypt(sealed_nonce, b"13800138000", b"phone")).decode()
    vault = Vault(MASTER)
    vault.load_data_key(WrappedKey("olddek", _old_format(MASTER, "olddek", raw)))
    assert vault.open(sealed, context="phone") == "13800138000"
    # and what the master key wraps now is still that format: an older release reads it
    new = vault.new_data_key()
    assert "." not in new.wrapped and describe_wrapping(new.wrapped) == {"wrapper": "master-key"}


def test_a_root_key_wraps_data_keys_and_the_format_says_which() -> None:
    root = os.urandom(32)
    vault = Vault()                                   # no master key at all: a KMS-only process
    fingerprint = vault.install_root(root, current=True)
    assert root_key_id(root) == f"root-{fingerprint}" and fingerprint not in root.hex()
    wrapped = vault.new_data_key()
    assert wrapped.wrapped.startswith(f"kr1.{fingerprint}.")
    assert describe_wrapping(wrapped.wrapped) == {"wrapper": "root", "root": fingerprint}
    sealed = vault.seal("secret", context="c")

    other = Vault()
    with pytest.raises(UnknownWrapping, match=fingerprint):   # a root this process has not loaded
        other.load_data_key(wrapped)
    other.install_root(root, current=False)
    other.load_data_key(wrapped)
    assert other.open(sealed, context="c") == "secret"
    # bound to its row id: a wrapped key copied under another id does not unwrap
    with pytest.raises(VaultError):
        other.load_data_key(WrappedKey("another-id", wrapped.wrapped))
    with pytest.raises(VaultError, match="set MINIGATE_MASTER_KEY"):
        Vault().use_master_for_new_keys()


def test_a_previous_master_key_reads_during_a_rotation() -> None:
    old = Vault("old-master-key-0123456789abcdef")
    wrapped = old.new_data_key()
    new = Vault("new-master-key-0123456789abcdef")
    with pytest.raises(VaultError):
        new.load_data_key(wrapped)
    new.add_previous_master("old-master-key-0123456789abcdef")
    new.load_data_key(wrapped)
    assert "." not in new.rewrap(wrapped, Vault("new-master-key-0123456789abcdef")).wrapped


def test_tagged_values_record_wrapper_and_key() -> None:
    wrapper = FakeKms("acs:kms:cn-hangzhou:1234:key/abc-def")      # an ARN has colons and slashes
    stored = tag(wrapper, "payload.with.dots")
    assert parse_tagged(stored) == ("fake-kms", "acs:kms:cn-hangzhou:1234:key/abc-def", "payload.with.dots")
    assert describe_wrapping(stored) == {"wrapper": "fake-kms", "kms_key": "acs:kms:cn-hangzhou:1234:key/abc-def"}
    with pytest.raises(KmsError):
        parse_tagged("kr1.abc.def")


# -- configuration and the plug-in hook ----------------------------------------------------------------------

def test_kms_configuration() -> None:
    assert build_wrapper(load_settings()) is None
    plug_in = build_wrapper(load_settings(kms="tests.unit.test_kms:fake_kms", kms_key_id="k-9"))
    assert isinstance(plug_in, KeyWrapper) and plug_in.key_ref == "k-9"
    with pytest.raises(KmsError, match="cannot import"):
        build_wrapper(load_settings(kms="tests.unit.no_such_module:factory"))
    with pytest.raises(KmsError, match="module:factory"):
        build_wrapper(load_settings(kms="vault"))
    with pytest.raises(ConfigurationError, match="MINIGATE_KMS_ACCESS_KEY_SECRET"):
        load_settings(kms="aliyun", kms_key_id="k", kms_access_key_id="LTAI")
    live = {"mode": "live", "database_url": "postgresql://x/y", "public_url": "https://pay.example.com"}
    with pytest.raises(ConfigurationError, match="default MINIGATE_MASTER_KEY"):
        load_settings(**live)
    # with a KMS, live mode needs no master key of its own, and the development default then wraps nothing
    settings = load_settings(**live, kms="aliyun", kms_key_id="k", kms_access_key_id="LTAI",
                             kms_access_key_secret="s" * 30)
    assert settings.vault_master_key is None
    with pytest.raises(ConfigurationError, match="https"):
        load_settings(**live, kms="aliyun", kms_key_id="k", kms_access_key_id="LTAI",
                      kms_access_key_secret="s" * 30, kms_endpoint="http://kms.example")
    aliyun = build_wrapper(settings)
    assert isinstance(aliyun, AliyunKmsWrapper) and aliyun.endpoint == "https://kms.cn-hangzhou.aliyuncs.com/"
    assert "s" * 30 not in repr(aliyun) + json.dumps(aliyun.describe()) + repr(settings)


# -- the Alibaba Cloud KMS request -----------------------------------------------------------------------------

def test_published_rpc_signature_vector_a1() -> None:
    """service-protocols.md §6 A1 (ECS DescribeRegions), through the signer the KMS client uses."""
    params = {"AccessKeyId": "testid", "Action": "DescribeRegions", "Format": "XML",
              "SignatureMethod": "HMAC-SHA1", "SignatureNonce": "3ee8c1b8-83d3-44af-a94f-4e0ad82fd6cf",
              "SignatureVersion": "1.0", "Timestamp": "2016-02-23T12:46:24Z", "Version": "2014-05-26"}
    assert signing.rpc_signature("GET", params, "testsecret") == "OLeaidS1JvxuMvnyHOwuJ+uX5qY="


def test_kms_request_is_signed_and_keeps_key_material_out_of_the_url() -> None:
    wrapper = AliyunKmsWrapper(key_id="key-1", access_key_id="testid", access_key_secret=SecretStr("testsecret"),
                               endpoint="https://kms.cn-hangzhou.aliyuncs.com", clock=lambda: 1456231584.0,
                               nonce=lambda: "3ee8c1b8-83d3-44af-a94f-4e0ad82fd6cf")
    plaintext = base64.b64encode(b"k" * 32).decode()
    request = wrapper.build_request("Encrypt", {"KeyId": "key-1", "Plaintext": plaintext,
                                               "EncryptionContext": '{"row":"root-1"}'})
    assert request.method == "POST" and request.url.query == b"" and str(request.url).endswith(".com/")
    form = dict(parse_qsl(request.content.decode(), keep_blank_values=True))
    assert form["Timestamp"] == "2016-02-23T12:46:24Z" and form["Version"] == "2016-01-20"
    assert form["Plaintext"] == plaintext and form["SignatureMethod"] == "HMAC-SHA1"
    given = form.pop("Signature")
    assert given == signing.rpc_signature("POST", form, "testsecret")
    expected = base64.b64encode(hmac.new(b"testsecret&", signing.rpc_string_to_sign("POST", form).encode(),
                                         "sha1").digest()).decode()
    assert given == expected


# -- a runtime under a KMS --------------------------------------------------------------------------------------

@pytest.fixture
def kms_sim(tmp_path: Path) -> AliyunKmsSimulator:
    return AliyunKmsSimulator(CredentialStore(tmp_path / "sandbox"), clock=Clock())


def _aliyun(sim: AliyunKmsSimulator, key_id: str | None = None, secret: str | None = None) -> AliyunKmsWrapper:
    return AliyunKmsWrapper(key_id=key_id or sim.key_ids[0], access_key_id=sim.access_key_id,
                            access_key_secret=SecretStr(secret or sim.access_key_secret), endpoint="http://kms",
                            client=httpx.AsyncClient(transport=httpx.ASGITransport(app=sim.app)))


@pytest.fixture
async def runtimes(database_url: str, tmp_path: Path) -> AsyncIterator[list[Runtime]]:
    made: list[Runtime] = []
    yield made
    for rt in made:
        await rt.aclose()


async def _start(made: list[Runtime], database_url: str, tmp_path: Path, *, kms: KeyWrapper | None,
                 master: str | None = MASTER, **extra: Any) -> Runtime:
    settings = load_settings(data_dir=tmp_path / "data", database_url=database_url, master_key=master or "x" * 40,
                             **extra)
    rt = Runtime(settings)
    made.append(rt)
    rt.kms = kms
    if master is None:                                  # a process that holds no master key
        rt.vault = Vault()
    await upgrade(rt.db.engine)
    await rt.start()
    return rt


async def test_a_new_database_under_a_kms_gets_a_root_and_calls_the_kms_once_per_start(
        runtimes: list[Runtime], database_url: str, tmp_path: Path, kms_sim: AliyunKmsSimulator) -> None:
    first = await _start(runtimes, database_url, tmp_path, kms=_aliyun(kms_sim), master=None)
    assert kms_sim.calls == [("Encrypt", kms_sim.key_ids[0])]
    async with first.db.read() as session:
        rows = {r.id: r for r in (await session.execute(select(DataKey))).scalars()}
    [root] = [r for r in rows.values() if r.id.startswith("root-")]
    assert root.active and describe_wrapping(root.wrapped) == {"wrapper": "aliyun-kms", "kms_key": kms_sim.key_ids[0]}
    assert all(describe_wrapping(r.wrapped)["wrapper"] == "root" for r in rows.values() if r is not root)
    sealed = first.vault.seal("oUpF8uMuAJO_M2pxb1Q9zNjWeS6o", context="payer")
    hashed = first.vault.lookup_hash("+8613800138000", context="phone")

    second = await _start(runtimes, database_url, tmp_path, kms=_aliyun(kms_sim), master=None)
    assert kms_sim.calls[1:] == [("Decrypt", kms_sim.key_ids[0])]          # one call, however many data keys
    assert second.vault.open(sealed, context="payer") == "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o"
    assert second.vault.lookup_hash("+8613800138000", context="phone") == hashed
    second.vault.new_data_key()
    second.vault.seal("x", context="c")
    await second.refresh_keys()                                            # a root already held: no call
    assert len(kms_sim.calls) == 2
    assert LOOKUP_KEY_ID in rows


async def test_a_process_refuses_to_start_when_the_root_cannot_be_unwrapped(
        runtimes: list[Runtime], database_url: str, tmp_path: Path, kms_sim: AliyunKmsSimulator) -> None:
    await _start(runtimes, database_url, tmp_path, kms=_aliyun(kms_sim), master=None)
    with pytest.raises(VaultError, match="configure MINIGATE_KMS") as no_kms:
        await _start(runtimes, database_url, tmp_path, kms=None)
    assert "aliyun-kms" in str(no_kms.value)
    with pytest.raises(KmsError, match="SignatureDoesNotMatch") as bad_secret:
        await _start(runtimes, database_url, tmp_path, kms=_aliyun(kms_sim, secret="w" * 30))
    assert "w" * 30 not in str(bad_secret.value) and kms_sim.access_key_secret not in str(bad_secret.value)
    with pytest.raises(VaultError, match="configure MINIGATE_KMS"):
        await _start(runtimes, database_url, tmp_path, kms=FakeKms("fake-key-1"))


async def test_kms_calls_leave_no_secret_or_key_in_the_logs(
        runtimes: list[Runtime], database_url: str, tmp_path: Path, kms_sim: AliyunKmsSimulator) -> None:
    stream = io.StringIO()
    configure_logging("DEBUG", json=True, stream=stream)
    try:
        first = await _start(runtimes, database_url, tmp_path, kms=_aliyun(kms_sim))
        await _start(runtimes, database_url, tmp_path, kms=_aliyun(kms_sim))
        with pytest.raises(KmsError):
            await _start(runtimes, database_url, tmp_path, kms=_aliyun(kms_sim, secret="w" * 30))
    finally:
        configure_logging("INFO")
    output = stream.getvalue()
    lines = [json.loads(line) for line in output.splitlines() if line.strip()]
    assert any(line.get("event") == "kms call" for line in lines), output       # there is something to scan
    assert any(line.get("event") == "data keys unwrapped" for line in lines), output
    async with first.db.read() as session:
        root = next(r for r in (await session.execute(select(DataKey))).scalars() if r.id.startswith("root-"))
    raw_root = await first.unwrap_root(root)
    forbidden = {"access key secret": kms_sim.access_key_secret, "wrong secret": "w" * 30,
                 "root key (base64)": base64.b64encode(raw_root).decode(), "root key (hex)": raw_root.hex(),
                 "master key": MASTER, "ciphertext blob": parse_tagged(root.wrapped)[2]}
    for what, value in forbidden.items():
        assert value not in output, what

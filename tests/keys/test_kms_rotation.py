"""End to end: the key-encryption key moves from the master key to an Alibaba Cloud KMS key, to a second KMS
key, and back to a (new) master key, with ``minigate keys rotate-master`` — while a gateway keeps serving
requests, during each rotation and after it. The KMS is the ``aliyun-kms`` simulator on a real port, reached by
the CLI and by every process the way the real KMS would be."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import Result
from typer.testing import CliRunner

from minigate.api.app import create_app
from minigate.cli import app as cli
from minigate.config import load_settings
from minigate.services.runtime import Runtime
from minigate.simulators.sandbox import Sandbox
from minigate.store.tables import DataKey
from minigate.vault import VaultError
from tests.e2e.harness import ThreadedServer

OLD, NEW = "old-master-key-0123456789abcdef0123456789", "new-master-key-abcdef0123456789abcdef0123"
WRONG = "a-master-key-that-wrapped-nothing-here-0123"
PHONE = "+8613800138000"


@pytest.fixture
def kms(tmp_path: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    """The KMS simulator on a port: (endpoint, credentials)."""
    sandbox = Sandbox(tmp_path / "kms-state")
    server = ThreadedServer(sandbox.app_for("aliyun-kms"))
    server.start()
    yield server.url, sandbox.credentials("aliyun-kms")
    server.stop()


class Env:
    def __init__(self, tmp_path: Path, database_url: str, kms: tuple[str, dict[str, Any]]) -> None:
        self.base = {"MINIGATE_DATA_DIR": str(tmp_path / "data"), "MINIGATE_DATABASE_URL": database_url,
                     "MINIGATE_SANDBOX_DIR": str(tmp_path / "sandbox"), "MINIGATE_LOG_LEVEL": "WARNING"}
        self.endpoint, self.creds = kms

    def local(self, master: str, **extra: str) -> dict[str, str]:
        return {**self.base, "MINIGATE_MASTER_KEY": master, **extra}

    def kms(self, master: str, key: int = 0, **extra: str) -> dict[str, str]:
        return self.local(master, MINIGATE_KMS="aliyun", MINIGATE_KMS_KEY_ID=self.creds["key_ids"][key],
                          MINIGATE_KMS_ENDPOINT=self.endpoint, MINIGATE_KMS_ACCESS_KEY_ID=self.creds["access_key_id"],
                          MINIGATE_KMS_ACCESS_KEY_SECRET=self.creds["access_key_secret"], **extra)

    def settings(self, env: dict[str, str]) -> Any:
        fields = {k.removeprefix("MINIGATE_").lower(): v for k, v in env.items() if k != "MINIGATE_LOG_LEVEL"}
        return load_settings(**fields)


async def _cli(args: list[str], env: dict[str, str]) -> Result:
    """A CLI command in a thread of its own (it runs its own event loop), as another process would."""
    return await asyncio.to_thread(CliRunner().invoke, cli, args, env=env)


async def _probe(env: Env, variables: dict[str, str], app_id: str) -> tuple[str, dict[str, Any]]:
    """What a process started with ``variables`` sees: a lookup hash and the stored credentials."""
    rt = Runtime(env.settings(variables))
    try:
        await rt.start()
        _version, config = await rt.provider_config(app_id, "test", "yunpian")
        return rt.vault.lookup_hash(PHONE, context="phone"), config
    finally:
        await rt.aclose()


class Gateway:
    """A gateway process started before any rotation (master key OLD, no KMS), serving over ASGI."""

    def __init__(self, rt: Runtime, http: httpx.AsyncClient, key: str) -> None:
        self.rt, self.http, self.auth = rt, http, {"Authorization": f"Bearer {key}"}

    async def serves(self) -> None:
        made = await self.http.post("/v1/webhook_endpoints", headers=self.auth,
                                    json={"url": "https://merchant.example/hooks"})
        assert made.status_code == 200, made.text
        listed = await self.http.get("/v1/webhook_endpoints", headers=self.auth)
        assert listed.status_code == 200 and made.json()["id"] in {e["id"] for e in listed.json()["data"]}

    async def during(self, rotation: Any) -> Result:
        """Requests keep being answered while the rotation runs."""
        done = asyncio.Event()
        answered = 0

        async def keep_asking() -> None:
            nonlocal answered
            while not done.is_set():
                r = await self.http.get("/v1/webhook_endpoints", headers=self.auth)
                assert r.status_code == 200, r.text
                answered += 1
                await asyncio.sleep(0.005)

        asker = asyncio.create_task(keep_asking())
        try:
            result: Result = await rotation
        finally:
            done.set()
            await asker
        assert answered >= 1
        return result


@pytest.fixture
async def gateway(database_url: str, tmp_path: Path, kms: tuple[str, dict[str, Any]]
                  ) -> AsyncIterator[tuple[Env, Gateway, str]]:
    env = Env(tmp_path, database_url, kms)
    made = await _cli(["apps", "create", "KMS shop"], env.local(OLD))
    assert made.exit_code == 0, made.output
    app = json.loads(made.stdout)
    (tmp_path / "yunpian.json").write_text(json.dumps({
        "apikey": "0123456789abcdef0123456789abcdef", "sign_name": "测试商城", "templates": {},
        "base_url": "https://sms.yunpian.com"}))
    stored = await _cli(["apps", "set-credentials", app["id"], "yunpian", "--mode", "test", "--file",
                         str(tmp_path / "yunpian.json")], env.local(OLD))
    assert stored.exit_code == 0, stored.output
    settings = env.settings(env.local(OLD))
    rt = Runtime(settings)
    asgi = create_app(settings, runtime=rt, run_worker=False)
    async with asgi.router.lifespan_context(asgi):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=asgi), base_url="http://gateway") as http:
            yield env, Gateway(rt, http, app["test_key"]), app["id"]


async def _inventory(variables: dict[str, str]) -> dict[str, Any]:
    listed = await _cli(["keys", "list"], variables)
    assert listed.exit_code == 0, listed.output
    inventory: dict[str, Any] = json.loads(listed.stdout)
    return inventory


async def test_master_key_to_kms_to_another_kms_key_and_back(gateway: tuple[Env, Gateway, str]) -> None:
    env, gw, app_id = gateway
    await gw.serves()
    before = await _probe(env, env.local(OLD), app_id)

    # 1. master key -> KMS key 1: processes get MINIGATE_KMS (keeping the master key), then the rotation runs
    rotated = await gw.during(_cli(["keys", "rotate-master", "--to", "kms"], env.kms(OLD)))
    assert rotated.exit_code == 0, rotated.output
    assert "re-wrapped 3 keys" in rotated.output                    # the lookup key, the data key, a new root
    inventory = await _inventory(env.kms(OLD))
    [root] = [k for k in inventory["data_keys"] if k["kind"] == "root"]
    assert root["active"] and root["wrapped_by"] == {"wrapper": "aliyun-kms", "kms_key": env.creds["key_ids"][0]}
    fingerprint = root["id"].removeprefix("root-")
    assert inventory["new_keys_wrapped_by"] == {"wrapper": "root", "root": fingerprint}
    assert all(k["wrapped_by"] == {"wrapper": "root", "root": fingerprint}
               for k in inventory["data_keys"] if k["kind"] != "root")
    assert inventory["kms"]["kms_key"] == env.creds["key_ids"][0]
    assert env.creds["access_key_secret"] not in json.dumps(inventory)           # fingerprints only
    await gw.serves()                            # the running gateway holds its data keys: nothing to reload

    # the old gateway still wraps new data keys with the master key: such a key is reported, and re-running
    # the rotation re-wraps it
    straggler = gw.rt.vault.new_data_key()
    async with gw.rt.db.transaction() as session:
        session.add(DataKey(id=straggler.key_id, wrapped=straggler.wrapped, active=False, created_at=gw.rt.now()))
    checked = await _cli(["keys", "check"], env.kms(OLD))
    assert checked.exit_code == 1 and f"data key {straggler.key_id} is wrapped by" in checked.output
    swept = await _cli(["keys", "rotate-master", "--to", "kms"], env.kms(OLD))
    assert swept.exit_code == 0 and "re-wrapped 2 keys" in swept.output, swept.output   # it, and the root
    assert (await _cli(["keys", "check"], env.kms(OLD))).exit_code == 0

    # a process holding no usable master key reads everything through the KMS
    assert await _probe(env, env.kms(WRONG), app_id) == before

    # 2. KMS key 1 -> KMS key 2: only the root is re-wrapped; Decrypt needs no key id, so processes may be
    # configured with key 2 before the rotation runs
    rotated = await gw.during(_cli(["keys", "rotate-master", "--to", "kms"], env.kms(WRONG, key=1)))
    assert rotated.exit_code == 0 and "re-wrapped 1 keys" in rotated.output, rotated.output
    inventory = await _inventory(env.kms(WRONG, key=1))
    [root] = [k for k in inventory["data_keys"] if k["kind"] == "root"]
    assert root["wrapped_by"]["kms_key"] == env.creds["key_ids"][1] and root["id"] == f"root-{fingerprint}"
    assert await _probe(env, env.kms(WRONG, key=1), app_id) == before
    await gw.serves()

    # 3. KMS -> a new master key: processes get MINIGATE_MASTER_KEY=<new> (keeping MINIGATE_KMS), then rotate
    rotated = await gw.during(_cli(["keys", "rotate-master"], env.kms(NEW, key=1, MINIGATE_NEW_MASTER_KEY=NEW)))
    assert rotated.exit_code == 0 and "re-wrapped 3 keys" in rotated.output, rotated.output   # + the straggler
    inventory = await _inventory(env.kms(NEW, key=1))
    [root] = [k for k in inventory["data_keys"] if k["kind"] == "root"]
    assert not root["active"]                  # retired, kept while processes may still wrap under it
    assert inventory["new_keys_wrapped_by"] == {"wrapper": "master-key"}
    assert all(k["wrapped_by"] == {"wrapper": "master-key"} for k in inventory["data_keys"] if k["kind"] != "root")
    # without the KMS, with the new master key: the same lookups and credentials; the old key opens nothing
    assert await _probe(env, env.local(NEW), app_id) == before
    with pytest.raises(VaultError):
        await _probe(env, env.local(OLD), app_id)
    # once every process runs on the master key, running the rotation again drops the retired root
    swept = await _cli(["keys", "rotate-master"], env.local(NEW, MINIGATE_NEW_MASTER_KEY=NEW))
    assert swept.exit_code == 0, swept.output
    assert not [k for k in (await _inventory(env.local(NEW)))["data_keys"] if k["kind"] == "root"]
    assert await _probe(env, env.local(NEW), app_id) == before
    await gw.serves()
    # every rotation is in the audit trail, and the chain still verifies after the keys moved
    exported = await _cli(["audit", "export"], env.local(NEW))
    rotations = [json.loads(line) for line in exported.output.splitlines() if '"keys.rotated"' in line]
    assert [r["details"]["to"] for r in rotations] == ["kms", "kms", "kms", "master", "master"], rotations
    assert (await _cli(["audit", "verify"], env.local(NEW))).exit_code == 0


async def test_rotation_refuses_what_it_cannot_do(gateway: tuple[Env, Gateway, str]) -> None:
    env, _gw, _app_id = gateway
    no_kms = await _cli(["keys", "rotate-master", "--to", "kms"], env.local(OLD))
    assert no_kms.exit_code == 2 and "MINIGATE_KMS" in no_kms.output
    unknown = await _cli(["keys", "rotate-master", "--to", "kms", "--kms-key-id",
                          "00000000-0000-4000-8000-000000000000"], env.kms(OLD))
    assert unknown.exit_code == 1 and "Forbidden.KeyNotFound" in unknown.output
    assert env.creds["access_key_secret"] not in unknown.output
    assert (await _cli(["keys", "rotate-master", "--to", "hsm"], env.local(OLD))).exit_code == 2
    # nothing changed: still the master key
    inventory = await _inventory(env.local(OLD))
    assert not [k for k in inventory["data_keys"] if k["kind"] == "root"]

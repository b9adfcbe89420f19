"""`minigate keys`: fingerprints only, checks, and a master-key rotation that keeps every lookup and seal."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from typer.testing import CliRunner

from minigate.cli import app as cli
from minigate.cli.keys import describe_credentials
from minigate.config import load_settings
from minigate.services.runtime import Runtime
from minigate.vault import VaultError

OLD, NEW = "old-master-key-0123456789abcdef0123456789", "new-master-key-abcdef0123456789abcdef0123"


def _env(tmp_path: Path, key: str, **extra: str) -> dict[str, str]:
    return {"MINIGATE_DATA_DIR": str(tmp_path / "data"), "MINIGATE_MASTER_KEY": key, "MINIGATE_LOG_LEVEL": "WARNING",
            **extra}


async def _probe(tmp_path: Path, key: str, previous: str | None = None) -> tuple[str, dict[str, str]]:
    """What a process started with ``key`` sees: a lookup hash and the stored credentials."""
    from minigate.store.migrate import upgrade

    settings = load_settings(data_dir=tmp_path / "data", master_key=key, master_key_previous=previous)
    rt = Runtime(settings)
    try:
        await upgrade(rt.db.engine)
        await rt.start()
        app_id = json.loads((tmp_path / "app.json").read_text())["id"]
        _version, config = await rt.provider_config(app_id, "test", "yunpian")
        return rt.vault.lookup_hash("+8613800138000", context="phone"), config
    finally:
        await rt.aclose()


def test_list_check_and_rotate(tmp_path: Path) -> None:
    runner = CliRunner()
    made = runner.invoke(cli, ["apps", "create", "Keys shop"], env=_env(tmp_path, OLD))
    assert made.exit_code == 0, made.output
    (tmp_path / "app.json").write_text(made.stdout)
    app_id = json.loads(made.stdout)["id"]
    creds = {"apikey": "0123456789abcdef0123456789abcdef", "sign_name": "测试商城", "templates": {},
             "base_url": "https://sms.yunpian.com"}
    (tmp_path / "yunpian.json").write_text(json.dumps(creds))
    stored = runner.invoke(cli, ["apps", "set-credentials", app_id, "yunpian", "--mode", "test", "--file",
                                 str(tmp_path / "yunpian.json")], env=_env(tmp_path, OLD))
    assert stored.exit_code == 0, stored.output

    listed = runner.invoke(cli, ["keys", "list"], env=_env(tmp_path, OLD))
    assert listed.exit_code == 0, listed.output
    inventory = json.loads(listed.stdout)
    assert {k["kind"] for k in inventory["data_keys"]} == {"lookup", "data"}
    assert [c["provider"] for c in inventory["credentials"]] == ["yunpian"]
    assert creds["apikey"] not in listed.output and OLD not in listed.output     # fingerprints only
    assert runner.invoke(cli, ["keys", "check"], env=_env(tmp_path, OLD)).exit_code == 0

    before = asyncio.run(_probe(tmp_path, OLD))
    short = runner.invoke(cli, ["keys", "rotate-master"], env=_env(tmp_path, OLD, MINIGATE_NEW_MASTER_KEY="short"))
    assert short.exit_code == 2
    rotated = runner.invoke(cli, ["keys", "rotate-master"], env=_env(tmp_path, OLD, MINIGATE_NEW_MASTER_KEY=NEW))
    assert rotated.exit_code == 0, rotated.output
    assert f"re-wrapped {len(inventory['data_keys'])} keys" in rotated.output    # the lookup key and the data key
    # with the new key: the same lookups, the same credentials; the old key no longer opens anything
    assert asyncio.run(_probe(tmp_path, NEW)) == before
    with pytest.raises(VaultError):
        asyncio.run(_probe(tmp_path, OLD))
    # during a rollout a process may run with the old key as the previous one
    assert asyncio.run(_probe(tmp_path, NEW, previous=OLD)) == before


def test_certificates_near_their_end_are_reported() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Tenpay.com Root CA")])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(0x1234).not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=10)).sign(key, hashes.SHA256()))
    pem = cert.public_bytes(serialization.Encoding.PEM).decode()
    described = describe_credentials("wechatpay", {"platform_certificates": [pem], "apiv3_key": "s" * 32}, now)
    [found] = described["certificates"]
    assert found["serial"] == "1234" and found["days_left"] in (9, 10)
    assert "s" * 32 not in json.dumps(described)


def test_import_takes_pem_files_and_prints_fingerprints_only(tmp_path: Path) -> None:
    runner = CliRunner()
    env = _env(tmp_path, OLD)
    made = runner.invoke(cli, ["apps", "create", "Import shop"], env=env)
    assert made.exit_code == 0, made.output
    app_id = json.loads(made.stdout)["id"]
    sandbox = runner.invoke(cli, ["sandbox", "credentials", "alipay", "--state-dir", str(tmp_path / "sb")], env=env)
    alipay = json.loads(sandbox.stdout)
    (tmp_path / "app_private_key.pem").write_text(alipay["app_private_key"])
    (tmp_path / "alipay.json").write_text(json.dumps({k: v for k, v in alipay.items() if k != "app_private_key"}))
    (tmp_path / "not.pem").write_text("not a key")

    refused = runner.invoke(cli, ["keys", "import", app_id, "alipay", "--mode", "test", "--file",
                                  str(tmp_path / "alipay.json"), "--pem", f"app_private_key={tmp_path / 'not.pem'}"],
                            env=env)
    assert refused.exit_code == 2 and "no PEM block" in refused.output
    imported = runner.invoke(cli, ["keys", "import", app_id, "alipay", "--mode", "test", "--file",
                                   str(tmp_path / "alipay.json"), "--pem",
                                   f"app_private_key={tmp_path / 'app_private_key.pem'}"], env=env)
    assert imported.exit_code == 0, imported.output
    answer = json.loads(imported.stdout)
    assert answer["providers"] == ["alipay"] and len(answer["fingerprint"]) == 16
    body = max(alipay["app_private_key"].splitlines(), key=len)
    assert body not in imported.output                                  # fingerprints, never the key
    listed = json.loads(runner.invoke(cli, ["keys", "list"], env=env).stdout)
    assert [(c["provider"], c["fingerprint"]) for c in listed["credentials"]] == [("alipay", answer["fingerprint"])]
    exported = runner.invoke(cli, ["audit", "export"], env=env).output
    assert '"credentials.set"' in exported and body not in exported

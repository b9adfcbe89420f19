"""``minigate sandbox credentials`` / ``serve`` (the Typer sub-application)."""

from __future__ import annotations

import json
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from typer.testing import CliRunner

from minigate.cli.sandbox import app
from minigate.providers.wechatpay import signing

WECHATPAY_FIELDS = {
    "mchid",
    "appid",
    "app_secret",
    "merchant_serial_no",
    "merchant_private_key",
    "apiv3_key",
    "platform_public_key",
    "platform_public_key_id",
    "platform_certificate",
}


def run(*args: str) -> dict[str, str]:
    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == 0, result.output
    return dict(json.loads(result.stdout))


def test_wechatpay_credentials(tmp_path: Path) -> None:
    creds = run("credentials", "wechatpay", "--state-dir", str(tmp_path))
    assert set(creds) == WECHATPAY_FIELDS
    assert run("credentials", "wechatpay", "--state-dir", str(tmp_path)) == creds
    assert creds["mchid"].isdigit() and creds["appid"].startswith("wx")
    assert len(creds["apiv3_key"]) == 32 and creds["apiv3_key"].isascii()
    assert creds["platform_public_key_id"].startswith("PUB_KEY_ID_")
    assert len(creds["platform_public_key_id"]) == len("PUB_KEY_ID_") + 34
    assert creds["platform_public_key_id"][len("PUB_KEY_ID_") :].isdigit()
    private = serialization.load_pem_private_key(creds["merchant_private_key"].encode(), password=None)
    assert private.key_size == 2048  # type: ignore[union-attr]
    public = serialization.load_pem_public_key(creds["platform_public_key"].encode())
    cert = x509.load_pem_x509_certificate(creds["platform_certificate"].encode())
    assert cert.subject == cert.issuer  # self-signed
    assert signing.certificate_serial(cert) == format(cert.serial_number, "X")
    # two different platform key pairs, as real WeChat Pay has
    assert public.public_numbers() != cert.public_key().public_numbers()  # type: ignore[union-attr]
    assert stat.S_IMODE((tmp_path / "wechatpay.json").stat().st_mode) == 0o600


def test_wechat_credentials_and_env_state_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MINIGATE_SANDBOX_DIR", str(tmp_path))
    wechat = run("credentials", "wechat")
    assert set(wechat) == {"appid", "app_secret"}
    pay = run("credentials", "wechatpay", "--state-dir", str(tmp_path))
    assert wechat == {"appid": pay["appid"], "app_secret": pay["app_secret"]}


def test_unknown_provider(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["credentials", "paypal", "--state-dir", str(tmp_path)])
    assert result.exit_code != 0
    result = CliRunner().invoke(app, ["serve", "--only", "paypal", "--state-dir", str(tmp_path)])
    assert result.exit_code != 0


def test_concurrent_creation_agrees(tmp_path: Path) -> None:
    command = [
        sys.executable,
        "-m",
        "minigate.cli.sandbox",
        "credentials",
        "wechatpay",
        "--state-dir",
        str(tmp_path),
    ]
    procs = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in range(3)]
    outputs = [p.communicate(timeout=60) for p in procs]
    assert all(p.returncode == 0 for p in procs), outputs
    parsed = [json.loads(out) for out, _ in outputs]
    assert parsed[0] == parsed[1] == parsed[2]
    assert [p.name for p in tmp_path.iterdir()] == ["wechatpay.json"]  # no temp files left behind


def test_serve_mounts_every_simulator(tmp_path: Path) -> None:
    import socket
    import time

    import httpx

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    command = [
        sys.executable,
        "-m",
        "minigate.cli.sandbox",
        "serve",
        "--port",
        str(port),
        "--state-dir",
        str(tmp_path),
        "--time-scale",
        "0.5",
    ]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == f"http://127.0.0.1:{port}"
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            try:
                index = httpx.get(base + "/_sandbox", timeout=1)
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline and proc.poll() is None
                time.sleep(0.1)
        from minigate.simulators.sandbox import PROVIDERS

        assert index.json() == {"simulators": {name: f"/{name}" for name in PROVIDERS}}
        assert {"wechatpay", "wechat"} <= set(PROVIDERS)
        assert httpx.get(base + "/wechatpay/_sandbox/settings").json()["time_scale"] == 0.5
        code = httpx.post(base + "/wechat/_sandbox/login", json={"user": "u"}).json()["code"]
        creds = json.loads((tmp_path / "wechatpay.json").read_text())["merchant"]
        session = httpx.get(
            base + "/wechat/sns/jscode2session",
            params={
                "appid": creds["appid"],
                "secret": creds["app_secret"],
                "js_code": code,
                "grant_type": "authorization_code",
            },
        ).json()
        assert session["openid"].startswith("o")
        unsigned = httpx.post(base + "/wechatpay/v3/pay/transactions/jsapi", json={})
        assert unsigned.status_code == 401 and unsigned.json()["code"] == "SIGN_ERROR"
    finally:
        proc.terminate()
        proc.communicate(timeout=10)

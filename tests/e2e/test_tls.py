"""`minigate serve` speaks HTTPS itself when given a certificate and key."""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import os
import ssl
import subprocess
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.e2e.test_processes import cli, free_port


def make_certificate(directory: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


async def test_serve_over_https(tmp_path: Path) -> None:
    cert, key = await asyncio.to_thread(make_certificate, tmp_path)
    port = free_port()
    env = {**os.environ, "MINIGATE_DATA_DIR": str(tmp_path / "data"), "MINIGATE_PORT": str(port),
           "MINIGATE_PUBLIC_URL": f"https://127.0.0.1:{port}", "MINIGATE_TLS_CERT_FILE": str(cert),
           "MINIGATE_TLS_KEY_FILE": str(key), "MINIGATE_LOG_LEVEL": "WARNING"}
    proc = await asyncio.to_thread(subprocess.Popen, cli("serve"), env=env, stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL)
    context = ssl.create_default_context(cafile=str(cert))
    try:
        async with httpx.AsyncClient(base_url=f"https://127.0.0.1:{port}", verify=context, timeout=5) as http:
            for _ in range(300):
                try:
                    r = await http.get("/readyz")
                    break
                except httpx.TransportError:
                    await asyncio.sleep(0.05)
            else:
                pytest.fail("the HTTPS gateway did not start")
            assert r.status_code == 200
            assert r.headers["strict-transport-security"].startswith("max-age=")
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=5) as plain:
            with pytest.raises(httpx.HTTPError):
                await plain.get("/readyz")        # no plain HTTP on the TLS port
    finally:
        proc.terminate()
        await asyncio.to_thread(proc.wait, timeout=20)

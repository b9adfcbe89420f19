"""``minigate keys``: the key inventory (fingerprints only), checks, and master-key rotation (B-8..B-10)."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
from datetime import UTC, datetime
from typing import Annotated, Any

import typer

__all__ = ["app"]

app = typer.Typer(name="keys", no_args_is_help=True,
                  help="Keys: list fingerprints, check stored credentials, rotate the master key.")

_PEM = re.compile(r"-----BEGIN ([A-Z ]+)-----[^-]+-----END \1-----")
#: certificates closer than this to their end are reported
EXPIRY_WARNING_DAYS = 30


def _fingerprint(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()[:16]


def describe_credentials(provider: str, config: dict[str, Any], now: datetime) -> dict[str, Any]:
    """Fingerprints of a credentials object: never a secret, only SHA-256 prefixes and certificate facts."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes

    described: dict[str, Any] = {"fingerprint": _fingerprint(json.dumps(config, sort_keys=True)), "certificates": []}
    text = json.dumps(config)
    for match in _PEM.finditer(text.replace("\\n", "\n")):
        if match.group(1) != "CERTIFICATE":
            continue
        cert = x509.load_pem_x509_certificate(match.group(0).encode())
        days = (cert.not_valid_after_utc - now).days
        described["certificates"].append({
            "subject": cert.subject.rfc4514_string(), "serial": format(cert.serial_number, "X"),
            "not_after": cert.not_valid_after_utc.isoformat(), "days_left": days,
            "sha256": cert.fingerprint(hashes.SHA256()).hex()[:32]})
    return described


async def _inventory(check: bool) -> tuple[dict[str, Any], list[str]]:
    from pydantic import ValidationError
    from sqlalchemy import select

    from minigate.cli import _runtime
    from minigate.services.apps import _config_model
    from minigate.store.tables import AppCredential, DataKey
    from minigate.vault import LOOKUP_KEY_ID, VaultError

    rt = await _runtime()
    problems: list[str] = []
    try:
        now = datetime.now(UTC)
        async with rt.db.read() as session:
            keys = list((await session.execute(select(DataKey).order_by(DataKey.created_at))).scalars())
            creds = list((await session.execute(select(AppCredential).order_by(
                AppCredential.app_id, AppCredential.mode, AppCredential.provider))).scalars())
        out: dict[str, Any] = {
            "master_key": {"fingerprint": _fingerprint(rt.settings.master_key.get_secret_value()),
                           "default": rt.settings.uses_default_master_key},
            "data_keys": [{"id": k.id, "kind": "lookup" if k.id == LOOKUP_KEY_ID else "data",
                           "active": k.active, "created": k.created_at.isoformat()} for k in keys],
            "credentials": []}
        for row in creds:
            entry: dict[str, Any] = {"app": row.app_id, "mode": row.mode, "provider": row.provider,
                                     "updated": row.updated_at.isoformat()}
            try:
                config = json.loads(rt.vault.open(row.sealed_config, context=f"credentials:{row.provider}"))
            except VaultError:
                problems.append(f"{row.app_id}/{row.mode}/{row.provider}: sealed credentials do not open")
                entry["error"] = "does not open"
                out["credentials"].append(entry)
                continue
            entry |= describe_credentials(row.provider, config, now)
            model = _config_model(row.provider)
            if check and model is not None:
                try:
                    model(**config)
                except (ValidationError, ValueError) as exc:
                    problems.append(f"{row.app_id}/{row.mode}/{row.provider}: invalid ({type(exc).__name__})")
            for cert in entry["certificates"]:
                if cert["days_left"] < EXPIRY_WARNING_DAYS:
                    problems.append(f"{row.app_id}/{row.mode}/{row.provider}: certificate {cert['serial']} "
                                    f"expires in {cert['days_left']} days")
            out["credentials"].append(entry)
        if check and rt.settings.mode == "live" and rt.settings.uses_default_master_key:
            problems.append("the default master key is in use")
        return out, problems
    finally:
        await rt.aclose()


@app.command("list")
def list_keys() -> None:
    """Data keys, the master key's fingerprint, and every stored credential's fingerprints and certificates."""
    out, _ = asyncio.run(_inventory(check=False))
    typer.echo(json.dumps(out, indent=2, ensure_ascii=False))


@app.command("check")
def check() -> None:
    """Every stored credential opens and validates; certificates are not about to expire. Exit 1 otherwise."""
    out, problems = asyncio.run(_inventory(check=True))
    for problem in problems:
        typer.echo(f"problem: {problem}", err=True)
    typer.echo(json.dumps({"credentials": len(out["credentials"]), "data_keys": len(out["data_keys"]),
                           "problems": len(problems)}))
    if problems:
        raise typer.Exit(1)


@app.command("rotate-master")
def rotate_master(new_key_env: Annotated[str, typer.Option(
        help="name of the environment variable holding the new master key")] = "MINIGATE_NEW_MASTER_KEY") -> None:
    """Re-wrap every data key (and the lookup key) with a new master key, in one transaction.

    Nothing else is re-encrypted. Roll out without downtime: start processes with MINIGATE_MASTER_KEY=<new> and
    MINIGATE_MASTER_KEY_PREVIOUS=<old> (they read either), run this, then drop the previous key."""
    new_key = os.environ.get(new_key_env, "")
    if len(new_key) < 32:
        typer.echo(f"error: ${new_key_env} must hold the new master key (at least 32 characters)", err=True)
        raise typer.Exit(2)

    async def run() -> int:
        from sqlalchemy import select

        from minigate.cli import _runtime
        from minigate.store.tables import DataKey
        from minigate.vault import Vault, WrappedKey

        rt = await _runtime()
        new = Vault(new_key)
        try:
            async with rt.db.transaction() as session:
                rows = list((await session.execute(select(DataKey).with_for_update())).scalars())
                for row in rows:
                    if not rt.vault.can_unwrap(WrappedKey(row.id, row.wrapped)):
                        raise typer.BadParameter(f"data key {row.id} is not wrapped by the current master key")
                    row.wrapped = rt.vault.rewrap(WrappedKey(row.id, row.wrapped), new).wrapped
            return len(rows)
        finally:
            await rt.aclose()

    count = asyncio.run(run())
    typer.echo(f"re-wrapped {count} keys; restart every process with the new MINIGATE_MASTER_KEY")

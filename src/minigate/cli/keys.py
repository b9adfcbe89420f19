"""``minigate keys``: the key inventory (fingerprints only), checks, and rotation of the key-encryption key
between master keys and KMS keys (B-8..B-10)."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import typer

__all__ = ["app"]

if TYPE_CHECKING:
    from minigate.services.runtime import Runtime
    from minigate.store.tables import DataKey

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
    from minigate.vault import VaultError

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
            "kms": rt.kms.describe() if rt.kms is not None else None,
            "new_keys_wrapped_by": _current_kek(rt),
            "data_keys": [{"id": k.id, "kind": _kind(k), "active": k.active, "created": k.created_at.isoformat(),
                           "wrapped_by": _wrapped_by(k)} for k in keys],
            "credentials": []}
        problems.extend(_stragglers(rt, keys))
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


def read_credentials(file: Any, pems: list[str] | None) -> dict[str, Any]:
    """A provider's credentials from a JSON file and/or ``FIELD=PATH`` PEM files (a merchant's
    ``apiclient_key.pem`` as it was downloaded, without escaping it into JSON by hand)."""
    config: dict[str, Any] = {}
    if file is not None:
        try:
            loaded = json.load(file)
        except json.JSONDecodeError as exc:
            raise typer.BadParameter(f"{file.name} is not JSON ({exc.msg} at line {exc.lineno})",
                                     param_hint="--file") from None
        if not isinstance(loaded, dict):
            raise typer.BadParameter("the credentials file must hold one JSON object", param_hint="--file")
        config.update(loaded)
    for item in pems or []:
        field, sep, path = item.partition("=")
        if not sep or not field or not path:
            raise typer.BadParameter(f"{item!r}: expected FIELD=PATH", param_hint="--pem")
        try:
            text = Path(path).read_text()
        except OSError as exc:
            raise typer.BadParameter(f"{path}: {exc.strerror}", param_hint="--pem") from None
        if not _PEM.search(text):
            raise typer.BadParameter(f"{path} holds no PEM block", param_hint="--pem")
        config[field] = text
    if not config:
        raise typer.BadParameter("give --file and/or --pem", param_hint="--file")
    return config


async def store_credentials(app_id: str, mode: str, provider: str, config: dict[str, Any]) -> dict[str, Any]:
    """Validate, seal and store (an audit entry ``credentials.set``); answer fingerprints, never values."""
    from minigate.cli import _runtime
    from minigate.services.apps import set_credentials

    rt = await _runtime()
    try:
        stored = await set_credentials(rt, app_id=app_id, mode=mode, provider=provider, config=config)
        found = await rt.provider_config(app_id, mode, provider)      # as stored (validated, with defaults)
    finally:
        await rt.aclose()
    return {"app": app_id, "mode": mode, "providers": stored,
            **describe_credentials(provider, found[1] if found else config, datetime.now(UTC))}


@app.command("import")
def import_credentials(
    app_id: Annotated[str, typer.Argument(help="the app id (app_…)")],
    provider: Annotated[str, typer.Argument(help="wechatpay, alipay, jdpay, aliyun-sms, tencentcloud, …")],
    file: Annotated[typer.FileText | None, typer.Option("--file", help="JSON file with the provider's fields")]
    = None,
    pem: Annotated[list[str] | None, typer.Option(
        "--pem", help="FIELD=PATH: a PEM file for one field (repeatable), e.g. merchant_private_key=apiclient_key.pem")]
    = None,
    mode: Annotated[str, typer.Option(help="live (default) or test")] = "live",
) -> None:
    """Import a provider's keys and credentials for an app: validated (live: checked to work), sealed at rest,
    audited; prints fingerprints and certificate dates only."""
    from minigate.errors import ApiError

    config = read_credentials(file, pem)
    try:
        described = asyncio.run(store_credentials(app_id, mode, provider, config))
    except ApiError as exc:
        typer.echo(f"error: {exc.message}", err=True)
        raise typer.Exit(2) from None
    typer.echo(json.dumps(described, indent=2, ensure_ascii=False))


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


def _kind(row: DataKey) -> str:
    from minigate.vault import LOOKUP_KEY_ID, ROOT_KEY_PREFIX

    return "lookup" if row.id == LOOKUP_KEY_ID else "root" if row.id.startswith(ROOT_KEY_PREFIX) else "data"


def _wrapped_by(row: DataKey) -> dict[str, str]:
    from minigate.vault import describe_wrapping

    return describe_wrapping(row.wrapped)


def _current_kek(rt: Runtime) -> dict[str, str]:
    kek = rt.vault.current_kek
    if kek is None or kek.fingerprint is None:
        return {"wrapper": "master-key"}
    return {"wrapper": "root", "root": kek.fingerprint}


def _stragglers(rt: Runtime, keys: list[DataKey]) -> list[str]:
    """Data keys not under the KEK new keys get: made by a process still running with the previous wrapping
    while a rotation committed. Re-running the rotation re-wraps them."""
    current = _current_kek(rt)
    return [f"data key {k.id} is wrapped by {json.dumps(_wrapped_by(k), sort_keys=True)}, not by the current "
            f"{json.dumps(current, sort_keys=True)}: run `minigate keys rotate-master` again"
            for k in keys if _kind(k) != "root" and _wrapped_by(k) != current]


@app.command("rotate-master")
def rotate_master(
    to: Annotated[str, typer.Option(help="wrap the data keys with a new master key ('master') or with a root key "
                                         "held by the KMS of MINIGATE_KMS ('kms')")] = "master",
    new_key_env: Annotated[str, typer.Option(
        help="--to master: the environment variable holding the new master key")] = "MINIGATE_NEW_MASTER_KEY",
    kms_key_id: Annotated[str | None, typer.Option(
        help="--to kms: the KMS key to wrap the root key with [default: MINIGATE_KMS_KEY_ID]")] = None,
) -> None:
    """Re-wrap every data key and the lookup key (or, KMS to KMS, only the root key) in one transaction.

    Nothing else is re-encrypted and the gateway keeps serving: running processes hold their data keys in
    memory. To master: start processes with MINIGATE_MASTER_KEY=<new> and MINIGATE_MASTER_KEY_PREVIOUS=<old>
    (and MINIGATE_KMS still set when leaving a KMS), run this, then drop the previous key. To KMS: start
    processes with MINIGATE_KMS=... (and the master key still set), run this. Once every process has
    restarted, run the same command again: it re-wraps any data key a process made under the old wrapping
    and drops retired root keys. See docs/security.md "KMS"."""
    if to not in ("master", "kms"):
        typer.echo("error: --to is 'master' or 'kms'", err=True)
        raise typer.Exit(2)
    new_key = os.environ.get(new_key_env, "")
    if to == "master" and len(new_key) < 32:
        typer.echo(f"error: ${new_key_env} must hold the new master key (at least 32 characters)", err=True)
        raise typer.Exit(2)
    count, target = asyncio.run(_rotate("kms" if to == "kms" else "master", new_key, kms_key_id))
    typer.echo(f"re-wrapped {count} keys; new data keys are wrapped by {target}; restart every process with the "
               "new configuration, then run this command again to re-wrap what they made in between")


async def _rotate(to: Literal["master", "kms"], new_key: str, kms_key_id: str | None) -> tuple[int, str]:
    """The KMS is called before the transaction (one Encrypt, plus one Decrypt when a root exists), so row
    locks are held only for local AES work."""
    from sqlalchemy import select

    from minigate.cli import _runtime
    from minigate.kms import KmsError, build_wrapper, tag
    from minigate.services import audit
    from minigate.store.tables import DataKey
    from minigate.vault import KeyEncryptionKey, VaultError, WrappedKey, root_key_id

    rt = await _runtime()
    wrapper = None
    try:
        async with rt.db.read() as session:
            before = list((await session.execute(select(DataKey))).scalars())
        active = next((r for r in before if _kind(r) == "root" and r.active), None)
        root_row: tuple[str, str] | None = None        # (id, wrapped) of the root key to store
        if to == "kms":
            wrapper = build_wrapper(rt.settings, key_ref=kms_key_id)
            if wrapper is None:
                typer.echo("error: --to kms needs MINIGATE_KMS (and its key and credentials)", err=True)
                raise typer.Exit(2)
            raw = await rt.unwrap_root(active) if active is not None else os.urandom(32)
            root_id = active.id if active is not None else root_key_id(raw)
            root_row = (root_id, tag(wrapper, await wrapper.wrap(root_id, raw)))
            kek = KeyEncryptionKey.root(raw)
            target = f"root {kek.fingerprint} under {wrapper.name} key {wrapper.key_ref}"
        else:
            kek = KeyEncryptionKey.from_master(new_key)
            target = "the new master key"
        async with rt.db.transaction() as session:
            rows = list((await session.execute(select(DataKey).with_for_update())).scalars())
            now_active = next((r for r in rows if _kind(r) == "root" and r.active), None)
            if (now_active.id if now_active else None) != (active.id if active else None):
                raise typer.BadParameter("another rotation committed meanwhile: run this command again")
            count = 0
            for row in rows:
                if _kind(row) == "root":
                    continue
                if kek.fingerprint is not None and kek.owns(row.wrapped):
                    continue                   # already under this root (KMS to KMS re-wraps the root only)
                raw_key = rt.vault.unwrap_key(WrappedKey(row.id, row.wrapped))
                row.wrapped = rt.vault.wrap_key(row.id, raw_key, kek).wrapped
                count += 1
            referenced = {_wrapped_by(r).get("root") for r in rows if _kind(r) != "root"}
            for row in rows:
                if _kind(row) != "root":
                    continue
                if root_row is not None and row.id == root_row[0]:
                    row.wrapped, row.active = root_row[1], True
                    root_row = None
                    count += 1
                elif row.active:              # leaving the KMS: kept, so keys made under it meanwhile still open
                    row.active = False
                elif row.id.removeprefix("root-") not in referenced:
                    await session.delete(row)
            if root_row is not None:
                session.add(DataKey(id=root_row[0], wrapped=root_row[1], active=True, created_at=rt.now()))
                count += 1
            await audit.record(session, rt, action="keys.rotated", actor="cli",
                               details={"to": to, "rewrapped": count,
                                        **({"kms": wrapper.name, "kms_key": wrapper.key_ref} if wrapper else {})})
        return count, target
    except (KmsError, VaultError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    finally:
        if wrapper is not None:
            await wrapper.aclose()
        await rt.aclose()

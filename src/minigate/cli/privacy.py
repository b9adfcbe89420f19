"""``minigate privacy inventory``: every stored field holding personal information (C-1), and the person keys."""

from __future__ import annotations

import asyncio
import json
from typing import Annotated, Any

import typer

__all__ = ["app"]

app = typer.Typer(name="privacy", no_args_is_help=True, help="Personal information: the data inventory.")


async def _person_key_counts() -> list[dict[str, Any]]:
    """How many person keys each app and mode holds (counts only: never a hash or a key)."""
    from sqlalchemy import func, select

    from minigate.cli import _runtime
    from minigate.store.tables import PersonKey

    rt = await _runtime()
    try:
        async with rt.db.read() as session:
            rows = (await session.execute(select(PersonKey.app_id, PersonKey.mode, func.count())
                                          .group_by(PersonKey.app_id, PersonKey.mode)
                                          .order_by(PersonKey.app_id, PersonKey.mode))).all()
        return [{"app": app_id, "mode": mode, "person_keys": int(count)} for app_id, mode, count in rows]
    finally:
        await rt.aclose()


@app.command("inventory")
def inventory(as_json: Annotated[bool, typer.Option(
        "--json", help="a JSON array of the fields (with --keys: an object of the fields and key counts)")] = False,
              keys: Annotated[bool, typer.Option(
                  "--keys", help="also count the person keys in the database, per app and mode")] = False) -> None:
    """List every field that holds personal information (table, column, class, purpose, protection, retention)
    and the person-key table that crypto-shredding deletes from."""
    from minigate.privacy import PERSON_KEYS
    from minigate.privacy import inventory as rows

    data = rows()
    counts = asyncio.run(_person_key_counts()) if keys else None
    if as_json and counts is None:
        typer.echo(json.dumps(data, indent=2, ensure_ascii=False))
        return
    if as_json:
        out = {"fields": data, "person_keys": PERSON_KEYS | {"counts": counts}}
        typer.echo(json.dumps(out, indent=2, ensure_ascii=False))
        return
    for row in data:
        typer.echo(f"{row['table']}.{row['column']}  [{row['data_class']}]  {row['protection']}\n"
                   f"    purpose: {row['purpose']}\n    retention: {row['retention']}")
    typer.echo(f"\nperson keys: {PERSON_KEYS['table']}.{PERSON_KEYS['key']}  {PERSON_KEYS['protection']}\n"
               f"    erasure: {PERSON_KEYS['erasure']}\n    backups: {PERSON_KEYS['backups']}")
    for count in counts or []:
        typer.echo(f"    {count['app']} ({count['mode']}): {count['person_keys']} keys")

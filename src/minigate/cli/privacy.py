"""``minigate privacy inventory``: every stored field holding personal information (C-1)."""

from __future__ import annotations

import json
from typing import Annotated

import typer

__all__ = ["app"]

app = typer.Typer(name="privacy", no_args_is_help=True, help="Personal information: the data inventory.")


@app.command("inventory")
def inventory(as_json: Annotated[bool, typer.Option("--json", help="one JSON array")] = False) -> None:
    """List every field that holds personal information: table, column, class, purpose, protection, retention."""
    from minigate.privacy import inventory as rows

    data = rows()
    if as_json:
        typer.echo(json.dumps(data, indent=2, ensure_ascii=False))
        return
    for row in data:
        typer.echo(f"{row['table']}.{row['column']}  [{row['data_class']}]  {row['protection']}\n"
                   f"    purpose: {row['purpose']}\n    retention: {row['retention']}")

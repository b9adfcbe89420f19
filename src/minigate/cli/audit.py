"""``minigate audit``: verify the audit chain, export it (JSON lines) for off-host keeping, purge old entries."""

from __future__ import annotations

import asyncio
import json
import sys
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

import typer

__all__ = ["app"]

app = typer.Typer(name="audit", no_args_is_help=True,
                  help="The audit trail: verify the chain, export it, purge entries past retention.")


def _when(value: str | None, option: str) -> datetime | None:
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise typer.BadParameter(f"{value!r} is not an ISO 8601 date or time", param_hint=option) from None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed


@app.command("verify")
def verify() -> None:
    """Walk the whole chain; exit 0 when intact, 1 (naming the first broken entry) otherwise."""
    from minigate.cli import _runtime
    from minigate.services import audit

    async def run() -> dict[str, Any]:
        rt = await _runtime()
        try:
            return (await audit.verify(rt)).as_dict()
        finally:
            await rt.aclose()

    report = asyncio.run(run())
    typer.echo(json.dumps(report, indent=2))
    if not report["ok"]:
        typer.echo(f"audit chain BROKEN at entry #{report['first_bad_seq']}: {report['first_problem']}", err=True)
        raise typer.Exit(1)
    typer.echo(f"audit chain intact: {report['checked']} entries checked, head #{report['head_seq']}", err=True)


@app.command("export")
def export(since: Annotated[str | None, typer.Option(help="from this time (ISO 8601, UTC if no zone)")] = None,
           until: Annotated[str | None, typer.Option(help="before this time (ISO 8601, UTC if no zone)")] = None,
           ) -> None:
    """Print the entries (with their macs) as JSON lines on stdout, oldest first: ship them off-host."""
    from minigate.cli import _runtime
    from minigate.services import audit

    start, end = _when(since, "--since"), _when(until, "--until")

    async def run() -> int:
        rt = await _runtime()
        count = 0
        try:
            async for line in audit.export(rt, start, end):
                sys.stdout.write(line + "\n")
                count += 1
        finally:
            sys.stdout.flush()
            await rt.aclose()
        return count

    count = asyncio.run(run())
    typer.echo(f"{count} audit entries exported", err=True)


@app.command("purge")
def purge(older_than_days: Annotated[int, typer.Option(
        help="delete entries older than this many days (at least 183: six months of retention)")] = 365) -> None:
    """Delete the oldest entries past retention, leaving a checkpoint so the rest still verifies."""
    from minigate.cli import _runtime
    from minigate.errors import ApiError
    from minigate.services import audit

    async def run() -> audit.PurgeReport:
        rt = await _runtime()
        try:
            return await audit.purge(rt, timedelta(days=older_than_days), actor="cli")
        finally:
            await rt.aclose()

    try:
        report = asyncio.run(run())
    except ApiError as exc:
        typer.echo(f"error: {exc.message}", err=True)
        raise typer.Exit(2) from None
    typer.echo(f"{report.deleted} audit entries purged (through #{report.through_seq}, "
               f"cutoff {report.cutoff.isoformat()})")

"""``minigate reconcile``: match the providers' bills of one Beijing day against the ledger (A-11).

Exit codes: 0 — everything matched or was repaired (an ``unsupported`` provider, e.g. JD Pay, is reported but is
not a failure); 1 — something is left reported (see the exceptions queue); 2 — an error (a bill that could not be
downloaded, a bad date, an unknown app, a configuration problem).
"""

from __future__ import annotations

import asyncio
import json
from datetime import date as Date
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from minigate.services.reconcile import Report
    from minigate.services.runtime import Runtime

__all__ = ["exit_code", "reconcile", "run_reconcile"]


def reconcile(
    date: Annotated[str | None, typer.Option(
        "--date", metavar="YYYY-MM-DD", help="the bill day (Beijing time); default: yesterday in Beijing")] = None,
    app: Annotated[str | None, typer.Option("--app", help="only this app (app_…); default: every app")] = None,
    provider: Annotated[str | None, typer.Option(
        "--provider", help="only this payment provider (wechatpay, alipay, jdpay); default: every one in use")] = None,
    json_output: Annotated[bool, typer.Option("--json", help="print JSON instead of tables")] = False,
    repair: Annotated[bool, typer.Option(
        "--repair/--no-repair", help="query the provider to repair provider-only payments and unsettled refunds")
    ] = True,
) -> None:
    """Reconcile a day's provider bills with the ledger: classify, repair what is safe, report the rest."""
    from minigate.config import load_settings
    from minigate.errors import ConfigurationError

    bill_date: Date | None = None
    if date is not None:
        try:
            bill_date = Date.fromisoformat(date)
        except ValueError:
            typer.echo(f"error: --date must be YYYY-MM-DD, not {date!r}", err=True)
            raise typer.Exit(2) from None
    try:
        settings = load_settings()
    except ConfigurationError as exc:
        typer.echo(f"configuration error: {exc}", err=True)
        raise typer.Exit(2) from exc

    async def run() -> tuple[int, str]:
        from minigate.services.runtime import Runtime
        from minigate.store.migrate import upgrade

        rt = Runtime(settings)
        try:
            await upgrade(rt.db.engine)
            await rt.start()
            return await run_reconcile(rt, bill_date=bill_date, app_id=app, provider=provider,
                                       json_output=json_output, repair=repair)
        finally:
            await rt.aclose()

    code, text = asyncio.run(run())
    typer.echo(text, err=text.startswith("error:"))
    raise typer.Exit(code)


async def run_reconcile(rt: Runtime, *, bill_date: Date | None, app_id: str | None, provider: str | None,
                        json_output: bool, repair: bool) -> tuple[int, str]:
    """The command's work on a running runtime: (exit code, what to print)."""
    from minigate.providers import registry
    from minigate.services.reconcile import beijing_yesterday, reconcile_all, render_table
    from minigate.store.tables import App

    day = bill_date or beijing_yesterday(rt.now())
    if provider is not None and registry.payment_spec(provider) is None:
        return 2, f"error: unknown payment provider {provider!r}"
    if app_id is not None:
        async with rt.db.transaction() as session:
            if await session.get(App, app_id) is None:
                return 2, f"error: no app {app_id!r}"
    reports = await reconcile_all(rt, bill_date=day, repair=repair, app_id=app_id, provider=provider)
    code = exit_code(reports)
    if json_output:
        return code, json.dumps({"object": "list", "bill_date": day.isoformat(), "exit_code": code,
                                 "data": [r.as_json() for r in reports]}, ensure_ascii=False, indent=2)
    if not reports:
        return code, f"nothing to reconcile for {day.isoformat()} (no app uses a payment provider)"
    verdict = {0: "all matched or repaired", 1: "differences left: see the exceptions queue",
               2: "errors: some bills could not be reconciled"}[code]
    return code, "\n".join(render_table(r) for r in reports) + f"\n{day.isoformat()}: {verdict}"


def exit_code(reports: list[Report]) -> int:
    if any(r.status not in ("complete", "unsupported") for r in reports):
        return 2
    return 1 if any(r.needs_attention for r in reports) else 0

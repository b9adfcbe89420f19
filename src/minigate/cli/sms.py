"""``minigate sms``: send a templated SMS as an operator, and look a message up."""

from __future__ import annotations

import asyncio
import json
from typing import Annotated, Any

import typer

__all__ = ["app"]

app = typer.Typer(name="sms", no_args_is_help=True, help="SMS: send a templated message, show a message.")


def _params(values: list[str] | None) -> dict[str, str]:
    params: dict[str, str] = {}
    for item in values or []:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise typer.BadParameter(f"{item!r} is not name=value", param_hint="--param")
        params[name] = value
    return params


@app.command("send")
def send(
    phone: Annotated[str, typer.Argument(help="mobile number, e.g. 13800138000 or +8613800138000")],
    template: Annotated[str, typer.Argument(help="template name, e.g. order_shipped")],
    app_id: Annotated[str, typer.Option("--app", help="the app (app_…) the message is sent for")],
    param: Annotated[list[str] | None, typer.Option("--param", "-p", help="template value name=value; repeatable")]
    = None,
    mode: Annotated[str, typer.Option(help="test (sandbox providers) or live")] = "test",
) -> None:
    """Send one templated SMS now through the app's providers (failover included); prints the message."""
    from minigate.cli import _runtime
    from minigate.errors import ApiError
    from minigate.services import sms
    from minigate.services.apps import AppContext

    if mode not in ("test", "live"):
        raise typer.BadParameter("mode must be test or live", param_hint="--mode")
    values = _params(param)

    async def run() -> dict[str, Any]:
        rt = await _runtime()
        try:
            message = await sms.send_message(rt, AppContext(app_id, mode), phone_raw=phone, template_name=template,
                                             params=values, source="cli")
            return sms.message_view(message)
        finally:
            await rt.aclose()

    try:
        view = asyncio.run(run())
    except ApiError as exc:
        typer.echo(f"error: {exc.code}: {exc.message}", err=True)
        raise typer.Exit(2) from None
    typer.echo(json.dumps(view, indent=2, ensure_ascii=False))
    if view["status"] == "failed":
        raise typer.Exit(1)


@app.command("show")
def show(message_id: Annotated[str, typer.Argument(help="the message id (msg_…)")],
         app_id: Annotated[str, typer.Option("--app", help="the app the message belongs to")],
         mode: Annotated[str, typer.Option(help="test or live")] = "test") -> None:
    """Print one message: status, provider, attempts (the number masked)."""
    from minigate.cli import _runtime
    from minigate.errors import ApiError
    from minigate.services import sms
    from minigate.services.apps import AppContext

    async def run() -> dict[str, Any]:
        rt = await _runtime()
        try:
            return sms.message_view(await sms.get_message(rt, AppContext(app_id, mode), message_id))
        finally:
            await rt.aclose()

    try:
        typer.echo(json.dumps(asyncio.run(run()), indent=2, ensure_ascii=False))
    except ApiError as exc:
        typer.echo(f"error: {exc.code}: {exc.message}", err=True)
        raise typer.Exit(2) from None

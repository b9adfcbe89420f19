"""``minigate sandbox``: run the provider simulators and print the credentials they issued."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from minigate.simulators import PROVIDERS, Sandbox, default_state_dir

__all__ = ["app"]

app = typer.Typer(name="sandbox", no_args_is_help=True,
                  help="Offline simulators of every provider (real signatures, real callbacks).")

_STATE_HELP = "Where credentials are kept [default: $MINIGATE_SANDBOX_DIR or ./.minigate/sandbox]"
_KNOWN = ", ".join(PROVIDERS)
StateDir = Annotated[Path | None,
                     typer.Option("--state-dir", envvar="MINIGATE_SANDBOX_DIR", help=_STATE_HELP)]


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Interface to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on")] = 8900,
    state_dir: StateDir = None,
    only: Annotated[str | None, typer.Option(help=f"Serve one simulator at the root path ({_KNOWN})")] = None,
    time_scale: Annotated[float, typer.Option(envvar="MINIGATE_SANDBOX_TIME_SCALE", min=0.0,
                                              help="Multiply notification retry delays (e.g. 0.001)")] = 1.0,
) -> None:
    """All simulators on one port, each under its prefix; with --only, one simulator at the root path."""
    import uvicorn

    if only is not None and only not in PROVIDERS:
        raise typer.BadParameter(f"unknown provider {only!r}; known: {_KNOWN}", param_hint="--only")
    sandbox = Sandbox(state_dir or default_state_dir(), time_scale=time_scale)
    base = f"http://{host}:{port}"
    if only is not None:
        typer.echo(f"minigate sandbox: {only} simulator at {base}", err=True)
        asgi = sandbox.app_for(only)
    else:
        typer.echo(f"minigate sandbox at {base}", err=True)
        for name in PROVIDERS:
            typer.echo(f"  {name:<10} {base}/{name}", err=True)
        asgi = sandbox.app
    typer.echo(base)
    uvicorn.run(asgi, host=host, port=port, log_level="warning", lifespan="on")


@app.command()
def credentials(
    provider: Annotated[str, typer.Argument(help=f"One of: {_KNOWN}")],
    state_dir: StateDir = None,
) -> None:
    """Print, as one JSON object, the merchant-side credentials (created on first use)."""
    if provider not in PROVIDERS:
        raise typer.BadParameter(f"unknown provider {provider!r}; known: {_KNOWN}", param_hint="PROVIDER")
    creds = Sandbox(state_dir or default_state_dir()).credentials(provider)
    typer.echo(json.dumps(creds, indent=2, ensure_ascii=False))


if __name__ == "__main__":  # pragma: no cover - ``python -m minigate.cli.sandbox``
    app()

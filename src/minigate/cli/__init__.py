"""``minigate``: the command line."""

from __future__ import annotations

import asyncio
import json
import secrets
from typing import TYPE_CHECKING, Annotated, Any

import typer

from minigate.config import Settings, load_settings
from minigate.errors import ConfigurationError

if TYPE_CHECKING:
    from minigate.services.runtime import Runtime

__all__ = ["app", "main"]

#: the console admin a test gateway creates on its first start
FIRST_ADMIN = "admin@minigate.local"

app = typer.Typer(no_args_is_help=True, add_completion=False, help=(
    "minigate: payments and third-party services for mini-program backends, with an offline sandbox.\n\n"
    "Start here: `minigate serve` runs the gateway (SQLite and the sandbox built in); "
    "`minigate apps create NAME` gives you API keys; `minigate demo` walks a whole checkout."))
apps_app = typer.Typer(no_args_is_help=True, help="Merchant apps and their API keys.")
app.add_typer(apps_app, name="apps")
webhooks_app = typer.Typer(no_args_is_help=True, help="Outbound webhooks to the merchant.")
app.add_typer(webhooks_app, name="webhooks")


def _register_subcommands() -> None:
    from minigate.cli import audit, console, keys, privacy, reconcile, sandbox, sms

    app.add_typer(sandbox.app, name="sandbox", help="The provider simulators, on their own.")
    app.add_typer(sms.app, name="sms", help="SMS: send a templated message as an operator, show a message.")
    app.add_typer(privacy.app, name="privacy", help="Personal information: the data inventory.")
    app.add_typer(keys.app, name="keys", help="Keys: fingerprints, checks, master-key rotation.")
    app.add_typer(audit.app, name="audit", help="The audit trail: verify the chain, export it, purge.")
    app.add_typer(console.app, name="console", help="Admin console users: add, list, roles, resets.")
    app.command("reconcile")(reconcile.reconcile)


_register_subcommands()


@app.command()
def serve(host: Annotated[str | None, typer.Option(help="interface to listen on")] = None,
          port: Annotated[int | None, typer.Option(help="TCP port")] = None,
          workers: Annotated[int | None, typer.Option(
              min=1, help="processes sharing the port (default 1, or MINIGATE_WORKERS)")] = None) -> None:
    """Run the gateway: API, provider callbacks, webhooks worker; SQLite and the sandbox by default."""
    import uvicorn

    from minigate.api.app import create_app
    from minigate.logging import configure_logging

    overrides: dict[str, Any] = {"host": host, "port": port, "workers": workers}
    settings = _settings(**{k: v for k, v in overrides.items() if v is not None})
    configure_logging(settings.log_level, json=settings.log_json)
    if settings.public_url == "http://127.0.0.1:8000" and settings.port != 8000:
        settings = _settings(port=settings.port, host=settings.host, workers=settings.workers,
                             public_url=f"http://127.0.0.1:{settings.port}")
    if settings.workers > 1 and settings.sandbox_exposed and not settings.sandbox_url:
        typer.echo("configuration error: --workers above 1 needs an external sandbox (`minigate sandbox serve` and "
                   "MINIGATE_SANDBOX_URL) or live mode: the built-in sandbox keeps its orders in one process",
                   err=True)
        raise typer.Exit(2)
    first = asyncio.run(_first_run(settings))
    scheme = "https" if settings.tls_cert_file else "http"
    base = f"{scheme}://{settings.host}:{settings.port}"
    typer.echo(f"minigate gateway on {base}  (mode: {settings.mode}; "
               f"database: {settings.effective_database_url.split('@')[-1]})")
    if first is not None and "id" in first:
        typer.echo(f"\n  First start: created app {first['id']} ({first['name']}). Its keys are shown once:")
        typer.echo(f"    test key: {first['test_key']}")
        typer.echo(f"    live key: {first['live_key']}  (accepted only with MINIGATE_MODE=live)")
    if first is not None and "console_password" in first:
        typer.echo(f"\n  Console: {base}/console  — sign in as {FIRST_ADMIN} with {first['console_password']}"
                   "\n    (shown once; more users: minigate console add-user EMAIL --role viewer|operator|admin)")
    typer.echo(f"""
  Try it (test mode talks to the built-in sandbox):
    curl -s {base}/v1/orders -H 'Authorization: Bearer <test key>' -H 'Idempotency-Key: order-A1' \\
      -H 'Content-Type: application/json' -d '{{"channel":"wechat_mini","amount":100,"description":"Latte",\\
      "merchant_order_no":"A1","payer":{{"openid":"oDemoUser"}}}}'
    curl -s {base}/sandbox/wechatpay/_sandbox/pay -d '{{"out_trade_no":"<out_trade_no from above>"}}'
  API docs: {base}/docs   ·   console: {base}/console
  more apps: minigate apps create NAME   ·   full tour: minigate demo
""")
    tls: dict[str, Any] = {}
    if settings.tls_cert_file and settings.tls_key_file:
        tls = {"ssl_certfile": str(settings.tls_cert_file), "ssl_keyfile": str(settings.tls_key_file)}
    if settings.workers == 1:
        uvicorn.run(create_app(settings), host=settings.host, port=settings.port, log_level="warning",
                    proxy_headers=False, **tls)
        return
    _serve_processes(settings, tls)


def _serve_processes(settings: Settings, tls: dict[str, Any]) -> None:
    """``--workers N``: uvicorn starts N processes on one socket, each a whole gateway (API, callbacks, webhook
    and analytics workers — their claims are transactions, so they share the work). The processes read their
    settings from the environment, so what the command line decided is exported first; /metrics adds up every
    process (prometheus_client's multiprocess mode, in a directory made here and removed at exit)."""
    import os
    import shutil
    import tempfile

    import uvicorn

    os.environ.update({"MINIGATE_HOST": settings.host, "MINIGATE_PORT": str(settings.port),
                       "MINIGATE_PUBLIC_URL": settings.public_url, "MINIGATE_WORKERS": str(settings.workers)})
    made = None
    if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        made = os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="minigate-metrics-")
    try:
        uvicorn.run("minigate.api.app:worker_process_app", factory=True, workers=settings.workers,
                    host=settings.host, port=settings.port, log_level="warning", proxy_headers=False, **tls)
    finally:
        if made:
            shutil.rmtree(made, ignore_errors=True)


@app.command()
def migrate() -> None:
    """Create or upgrade the database schema (also done by `serve` at start)."""
    from minigate.store.db import Database
    from minigate.store.migrate import upgrade

    settings = _settings()

    async def run() -> None:
        db = Database(settings.effective_database_url)
        try:
            await upgrade(db.engine)
        finally:
            await db.dispose()

    asyncio.run(run())
    typer.echo("database is at the latest schema")


@apps_app.command("create")
def apps_create(name: Annotated[str, typer.Argument(help="a name for the app, e.g. your shop")]) -> None:
    """Create an app; prints its id and API keys as JSON. Keys are shown once: store them now."""
    from minigate.services.apps import create_app as create

    async def run() -> dict[str, str]:
        rt = await _runtime()
        try:
            created = await create(rt, name=name)
        finally:
            await rt.aclose()
        return {"id": created.id, "name": created.name, "test_key": created.test_key,
                "live_key": created.live_key}

    typer.echo(json.dumps(asyncio.run(run()), indent=2))


@apps_app.command("set-credentials")
def apps_set_credentials(
    app_id: Annotated[str, typer.Argument(help="the app id (app_…)")],
    provider: Annotated[str, typer.Argument(help="wechatpay or wechat")],
    file: Annotated[typer.FileText, typer.Option("--file", help="JSON file with the provider's fields")],
    mode: Annotated[str, typer.Option(help="live (default), or test to use a provider's own test environment "
                                            "instead of the built-in sandbox")] = "live",
) -> None:
    """Store a provider's live credentials for an app, encrypted at rest (the same as `minigate keys import`)."""
    from minigate.cli.keys import read_credentials, store_credentials
    from minigate.errors import ApiError

    config = read_credentials(file, None)
    try:
        described = asyncio.run(store_credentials(app_id, mode, provider, config))
    except ApiError as exc:
        typer.echo(f"error: {exc.message}", err=True)
        raise typer.Exit(2) from None
    typer.echo(f"credentials stored for {app_id} ({mode}): {', '.join(described['providers'])}")


@webhooks_app.command("redeliver")
def webhooks_redeliver(
    event_id: Annotated[str, typer.Argument(help="the event id (evt_…)")],
    endpoint: Annotated[list[str] | None, typer.Option(help="only this endpoint (we_…); repeatable")] = None,
) -> None:
    """Send an event again to its app's endpoints, with a fresh retry window (the worker delivers it)."""
    from minigate.services.events import redeliver
    from minigate.store.tables import Event

    async def run() -> int | None:
        rt = await _runtime()
        try:
            async with rt.db.transaction() as session:
                event = await session.get(Event, event_id)
            if event is None:
                return None
            return await redeliver(rt, event=event, endpoint_ids=endpoint or None)
        finally:
            await rt.aclose()

    queued = asyncio.run(run())
    if queued is None:
        typer.echo(f"error: no event {event_id}", err=True)
        raise typer.Exit(2)
    typer.echo(f"{event_id}: queued for {queued} endpoint(s)")


@app.command()
def demo(channel: Annotated[str, typer.Option(
        help="payment channel to walk through: wechat_mini, alipay_mini or jdpay_h5")] = "wechat_mini") -> None:
    """Walk a full mini-program checkout against the sandbox: login, order, pay, callback, webhook, refund."""
    from minigate.cli.demo import run_demo

    raise typer.Exit(asyncio.run(run_demo(channel)))


async def _first_run(settings: Settings) -> dict[str, str] | None:
    """Migrate; on an empty database create a first app so the newcomer has keys straight away."""
    from sqlalchemy import func, select

    from minigate.console.users import create_user
    from minigate.services.apps import create_app as create
    from minigate.services.runtime import Runtime
    from minigate.store.migrate import upgrade
    from minigate.store.tables import App, ConsoleUser

    rt = Runtime(settings)
    try:
        await upgrade(rt.db.engine)
        await rt.start()
        async with rt.db.transaction() as session:
            count = (await session.execute(select(func.count()).select_from(App))).scalar_one()
            console_users = (await session.execute(select(func.count()).select_from(ConsoleUser))).scalar_one()
        first: dict[str, str] = {}
        if not console_users and settings.mode == "test":
            # a test gateway gets a console admin at once, so `make run` leads straight to /console
            password = secrets.token_urlsafe(15)
            await create_user(rt, email=FIRST_ADMIN, name="Admin", role="admin", password=password)
            first["console_password"] = password
        if count:
            return first or None
        created = await create(rt, name="My mini-program")
        return {**first, "id": created.id, "name": created.name, "test_key": created.test_key,
                "live_key": created.live_key}
    finally:
        await rt.aclose()


async def _runtime() -> Runtime:
    from minigate.logging import configure_logging
    from minigate.services.runtime import Runtime
    from minigate.store.migrate import upgrade

    settings = _settings()
    # commands print their result on stdout; their log lines go to stderr
    configure_logging(settings.log_level, json=settings.log_json)
    rt = Runtime(settings)
    await upgrade(rt.db.engine)
    await rt.start()
    return rt


def _settings(**overrides: Any) -> Settings:
    try:
        return load_settings(**overrides)
    except ConfigurationError as exc:
        typer.echo(f"configuration error: {exc}", err=True)
        raise typer.Exit(2) from exc


def main() -> None:
    app()


if __name__ == "__main__":
    main()

"""``minigate console``: console users — add one (the first admin comes from here), list them, reset a password
or a second factor, change a role, disable or enable. Passwords are read from a prompt (or stdin with
``--password-stdin``), never from the command line, and are not printed."""

from __future__ import annotations

import asyncio
import json
import secrets
import sys
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Annotated, Any

import typer

if TYPE_CHECKING:
    from minigate.services.runtime import Runtime

__all__ = ["app"]

app = typer.Typer(name="console", no_args_is_help=True,
                  help="Console users: add, list, set role, reset password or second factor, disable.")


def _run(work: Callable[[Runtime], Awaitable[Any]]) -> Any:
    from minigate.cli import _runtime
    from minigate.errors import ApiError

    async def run() -> Any:
        rt = await _runtime()
        try:
            return await work(rt)
        finally:
            await rt.aclose()
    try:
        return asyncio.run(run())
    except ApiError as exc:
        typer.echo(f"error: {exc.message} ({exc.code})", err=True)
        raise typer.Exit(2) from None


def _password(from_stdin: bool, generate: bool) -> tuple[str, bool]:
    if generate:
        return secrets.token_urlsafe(15), True
    if from_stdin:
        return sys.stdin.readline().rstrip("\n"), False
    return typer.prompt("password (12 characters or more)", hide_input=True, confirmation_prompt=True), False


async def _user_id(rt: Runtime, email: str) -> str:
    from minigate.console import users
    from minigate.errors import NotFound

    for user in await users.list_users(rt):
        if user["email"] == email.strip().lower():
            return str(user["id"])
    raise NotFound(f"no console user {email}", code="resource_missing")


@app.command("add-user")
def add_user(email: str,
             role: Annotated[str, typer.Option(help="viewer, operator or admin")] = "viewer",
             name: Annotated[str | None, typer.Option(help="display name (default: the e-mail)")] = None,
             password_stdin: Annotated[bool, typer.Option("--password-stdin", help="read the password from stdin")]
             = False,
             generate: Annotated[bool, typer.Option("--generate", help="make a random password and print it once")]
             = False) -> None:
    """Add a console user (the first admin is made this way)."""
    from minigate.console import users

    password, show = _password(password_stdin, generate)
    user = _run(lambda rt: users.create_user(rt, email=email, name=name or email, role=role, password=password))
    typer.echo(json.dumps({"id": user["id"], "email": user["email"], "role": user["role"]}))
    if show:
        typer.echo(f"password (shown once): {password}", err=True)


@app.command("list-users")
def list_users() -> None:
    """Console users as JSON lines (no password hashes, no second-factor secrets)."""
    from minigate.console import users

    for user in _run(users.list_users):
        typer.echo(json.dumps(user, default=str))


@app.command("set-role")
def set_role(email: str, role: str) -> None:
    """Change a user's role (their sessions end)."""
    from minigate.console import users

    async def work(rt: Runtime) -> Any:
        return await users.set_role(rt, await _user_id(rt, email), role, actor="cli")
    typer.echo(json.dumps(_run(work), default=str))


@app.command("reset-password")
def reset_password(email: str,
                   password_stdin: Annotated[bool, typer.Option("--password-stdin")] = False,
                   generate: Annotated[bool, typer.Option("--generate")] = False) -> None:
    """Set a new password (every session of the user ends; a lock-out is lifted)."""
    from minigate.console import users

    password, show = _password(password_stdin, generate)

    async def work(rt: Runtime) -> None:
        await users.change_password(rt, await _user_id(rt, email), password, actor="cli")
    _run(work)
    if show:
        typer.echo(f"password (shown once): {password}", err=True)


@app.command("reset-totp")
def reset_totp(email: str) -> None:
    """Remove a user's second factor (a lost phone); they can enrol again from their account page."""
    from minigate.console import users

    async def work(rt: Runtime) -> None:
        await users.disable_totp(rt, await _user_id(rt, email), actor="cli")
    _run(work)


@app.command("disable")
def disable(email: str, enable: Annotated[bool, typer.Option("--enable", help="enable instead")] = False) -> None:
    """Disable a user (their sessions end at once), or enable them again."""
    from minigate.console import users

    async def work(rt: Runtime) -> Any:
        return await users.set_disabled(rt, await _user_id(rt, email), not enable, actor="cli")
    typer.echo(json.dumps(_run(work), default=str))

"""Sign-in (password, then TOTP when enrolled), sign-out, and what a session remembers: app, mode, language;
the user's own account page (password change, second factor)."""

from __future__ import annotations

from typing import Any

from fastapi import Request
from fastapi.responses import RedirectResponse, Response

from minigate.console import users
from minigate.console.i18n import LANGS, pick_language
from minigate.console.web import COOKIE, ViewerDep, apps_list, read_form, redirect, render, router, runtime
from minigate.console.web import client_ip as _ip
from minigate.errors import ApiError, InvalidRequest

__all__: list[str] = []


def _secure(request: Request) -> bool:
    return request.url.scheme == "https" or runtime(request).settings.public_url.startswith("https://")


def _next(target: str | None) -> str:
    """Only a path inside the console (no open redirect to another site)."""
    if target and target.startswith("/console") and not target.startswith("//") and "\\" not in target:
        return target
    return "/console/"


def _set_cookie(request: Request, response: Response, token: str, max_age: int) -> None:
    response.set_cookie(COOKIE, token, max_age=max_age, httponly=True, secure=_secure(request), samesite="strict",
                        path="/console")


@router.get("/login")
async def login_page(request: Request, next: str | None = None) -> Response:
    if await users.load_session(runtime(request), request.cookies.get(COOKIE)):
        return RedirectResponse(_next(next), status_code=303)
    return await render(request, None, "login.html", next=_next(next), error=None, email="")


@router.post("/login")
async def login(request: Request) -> Response:
    rt = runtime(request)
    form = await read_form(request, None)
    lang = pick_language(request.headers.get("accept-language"))
    email = form.get("email", "")[:254]
    target = _next(form.get("next"))
    try:
        signed = await users.sign_in(rt, email=email, password=form.get("password", "")[:256], ip=_ip(request),
                                     lang=lang)
    except ApiError as exc:
        headers = {"Retry-After": str(exc.details["retry_after"])} if exc.details and "retry_after" in exc.details \
            else None
        return await render(request, None, "login.html", status_code=exc.http_status, next=target, error=exc.code,
                            email=email, headers=headers)
    if signed.needs_totp:
        response = RedirectResponse(f"/console/login/totp?next={target}", status_code=303)
        _set_cookie(request, response, signed.token, 300)
        return response
    response = RedirectResponse(target, status_code=303)
    _set_cookie(request, response, signed.token, rt.settings.console_session_hours * 3600)
    return response


@router.get("/login/totp")
async def totp_page(request: Request, next: str | None = None) -> Response:
    op = await users.load_session(runtime(request), request.cookies.get(COOKIE), allow_pending=True)
    if op is None:
        return RedirectResponse("/console/login", status_code=303)
    return await render(request, None, "totp.html", next=_next(next), error=None)


@router.post("/login/totp")
async def totp(request: Request) -> Response:
    rt = runtime(request)
    form = await read_form(request, None)
    token = request.cookies.get(COOKIE, "")
    target = _next(form.get("next"))
    try:
        await users.finish_totp(rt, token, form.get("code", "")[:12], ip=_ip(request))
    except ApiError as exc:
        if exc.code == "session_expired":
            return RedirectResponse("/console/login", status_code=303)
        return await render(request, None, "totp.html", status_code=exc.http_status, next=target, error=exc.code)
    response = RedirectResponse(target, status_code=303)
    _set_cookie(request, response, token, rt.settings.console_session_hours * 3600)
    return response


@router.post("/logout")
async def logout(request: Request, op: ViewerDep) -> Response:
    await read_form(request, op)
    await users.end_session(runtime(request), op)
    response = RedirectResponse("/console/login", status_code=303)
    response.delete_cookie(COOKIE, path="/console")
    return response


@router.post("/session")
async def change_session(request: Request, op: ViewerDep) -> Response:
    """Switch app, mode or language; back to the page the form was on."""
    rt = runtime(request)
    form = await read_form(request, op)
    values: dict[str, Any] = {}
    if "app_id" in form:
        if form["app_id"] not in {a["id"] for a in await apps_list(rt)}:
            raise InvalidRequest("no such app", code="resource_missing", param="app_id")
        values["app_id"] = form["app_id"]
    if "mode" in form:
        if form["mode"] not in ("test", "live"):
            raise InvalidRequest("mode is test or live", code="parameter_invalid", param="mode")
        values["mode"] = form["mode"]
    if "lang" in form:
        if form["lang"] not in LANGS:
            raise InvalidRequest("unknown language", code="parameter_invalid", param="lang")
        values["lang"] = form["lang"]
    await users.update_session(rt, op, **values)
    back = _next(form.get("back"))
    if "mode" in values and back.startswith("/console/orders/"):
        back = "/console/orders"            # an order of one mode is not found in the other
    return redirect(back)


@router.get("/account")
async def account(request: Request, op: ViewerDep) -> Response:
    return await render(request, op, "account.html", totp_uri=None)


@router.post("/account/password")
async def account_password(request: Request, op: ViewerDep) -> Response:
    form = await read_form(request, op)
    await users.change_password(runtime(request), op.user_id, form.get("new", "")[:300], actor=op.actor,
                                current=form.get("current", "")[:300])
    response = RedirectResponse("/console/login", status_code=303)
    response.delete_cookie(COOKIE, path="/console")
    return response


@router.post("/account/totp")
async def account_totp_start(request: Request, op: ViewerDep) -> Response:
    await read_form(request, op)
    uri = await users.start_totp(runtime(request), op.user_id)
    return await render(request, op, "account.html", totp_uri=uri)


@router.post("/account/totp/confirm")
async def account_totp_confirm(request: Request, op: ViewerDep) -> Response:
    form = await read_form(request, op)
    await users.confirm_totp(runtime(request), op.user_id, form.get("code", "")[:12])
    return redirect("/console/account", notice="done")


@router.post("/account/totp/disable")
async def account_totp_disable(request: Request, op: ViewerDep) -> Response:
    await read_form(request, op)
    await users.disable_totp(runtime(request), op.user_id, actor=op.actor)
    return redirect("/console/account", notice="done")

"""The console's web plumbing: one router, the signed-in operator as a dependency, role checks, CSRF-checked forms,
and page rendering (Jinja2, autoescaped, labels in the session's language).

Pages are thin: they call the same services as the ``/v1`` API, with an :class:`AppContext` built from the
session's app and mode, so a console action is exactly an API action with a person as its actor (the audit trail
names ``console:<user id>``).

Every page answers with a strict Content-Security-Policy (scripts and styles from the console's own static files
only; no inline script), ``X-Frame-Options: DENY`` and ``Cache-Control: no-store`` (the request guard adds the
rest). Errors raised by services render an error page with the same HTTP status and machine-readable code as the
API (``data-code`` on the page), and change nothing.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable, Coroutine
from datetime import UTC, date, datetime
from importlib import resources
from typing import Annotated, Any
from urllib.parse import parse_qsl, quote, urlsplit

import jinja2
from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.routing import APIRoute
from sqlalchemy import select

from minigate.api.deps import client_ip
from minigate.api.deps import get_runtime as runtime
from minigate.console import users
from minigate.console.i18n import LANGS, translator
from minigate.console.users import Operator
from minigate.errors import ApiError, InvalidRequest, PermissionDenied
from minigate.logging import get_logger
from minigate.services import audit
from minigate.services.apps import AppContext
from minigate.services.runtime import Runtime
from minigate.store.tables import App

__all__ = ["COOKIE", "AdminDep", "ConsoleRoute", "Form", "OperatorDep", "ViewerDep", "app_context", "client_ip",
           "done", "query_date", "read_form", "redirect", "render", "request_apps", "router", "runtime"]

log = get_logger("minigate.console")

COOKIE = "mg_console"
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
       "font-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
_MAX_FORM = 64 * 1024


class SignInRequired(Exception):
    """No valid session: the browser is sent to the sign-in page."""


class ConsoleRoute(APIRoute):
    """Service errors become an HTML error page with the API's status and code; a missing session becomes a
    redirect to the sign-in page."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def guarded(request: Request) -> Response:
            try:
                return await handler(request)
            except SignInRequired:
                target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
                return RedirectResponse(f"/console/login?next={quote(target, safe='')}", status_code=303)
            except ApiError as exc:
                log.info("console request refused", path=request.url.path, error_code=exc.code, status=exc.http_status)
                op: Operator | None = getattr(request.state, "operator", None)
                return await render(request, op, "error.html", status_code=exc.http_status, code=exc.code,
                                    message=exc.message, headers=_retry_after(exc))
        return guarded


def _retry_after(exc: ApiError) -> dict[str, str]:
    retry = (exc.details or {}).get("retry_after")
    return {"Retry-After": str(retry)} if retry else {}


router = APIRouter(prefix="/console", route_class=ConsoleRoute, include_in_schema=False)

_env = jinja2.Environment(loader=jinja2.PackageLoader("minigate.console", "templates"),
                          autoescape=jinja2.select_autoescape(default=True), undefined=jinja2.StrictUndefined,
                          trim_blocks=True, lstrip_blocks=True)


def _money(fen: int | None, currency: str = "CNY") -> str:
    if fen is None:
        return "—"
    sign = "-" if fen < 0 else ""
    fen = abs(int(fen))
    symbol = "¥" if currency == "CNY" else f"{currency} "
    return f"{sign}{symbol}{fen // 100:,}.{fen % 100:02d}"


def _when(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, int | float):
        value = datetime.fromtimestamp(value, UTC)
    return value.strftime("%Y-%m-%d %H:%M:%S") if hasattr(value, "strftime") else str(value)


_env.filters["money"] = _money
_env.filters["when"] = _when


async def _signed_in(request: Request) -> Operator:
    op = await users.load_session(runtime(request), request.cookies.get(COOKIE))
    if op is None:
        raise SignInRequired()
    request.state.operator = op
    audit.bind_actor(op.actor)
    return op


def _role(needed: str) -> Callable[[Request], Awaitable[Operator]]:
    async def dependency(request: Request) -> Operator:
        op = await _signed_in(request)
        if not op.can(needed):
            raise PermissionDenied(f"this needs the {needed} role; you are {op.role}", code="role_required",
                                   details={"role": needed})
        return op
    return dependency


ViewerDep = Annotated[Operator, Depends(_role("viewer"))]
OperatorDep = Annotated[Operator, Depends(_role("operator"))]
AdminDep = Annotated[Operator, Depends(_role("admin"))]


class Form(dict[str, str]):
    """A submitted form, CSRF-checked. Repeated fields keep their last value; :meth:`all` has every value."""

    def __init__(self, pairs: list[tuple[str, str]]) -> None:
        super().__init__(pairs)
        self._pairs = pairs

    def all(self, name: str) -> list[str]:
        return [v for k, v in self._pairs if k == name]

    def text(self, name: str, *, required: bool = True, max_length: int = 500) -> str:
        value = self.get(name, "").strip()
        if required and not value:
            raise InvalidRequest(f"{name} is required", code="parameter_missing", param=name)
        if len(value) > max_length:
            raise InvalidRequest(f"{name} is too long", code="parameter_invalid", param=name)
        return value

    def integer(self, name: str, *, required: bool = True, minimum: int | None = None) -> int | None:
        value = self.get(name, "").strip()
        if not value:
            if required:
                raise InvalidRequest(f"{name} is required", code="parameter_missing", param=name)
            return None
        try:
            number = int(value)
        except ValueError:
            raise InvalidRequest(f"{name} must be a whole number", code="parameter_invalid", param=name) from None
        if minimum is not None and number < minimum:
            raise InvalidRequest(f"{name} must be at least {minimum}", code="parameter_invalid", param=name)
        return number

    def money(self, name: str) -> int:
        """A yuan amount typed by a person (``12.5``, ``12.50``) in fen, exactly (no floating point)."""
        raw = self.text(name).replace(",", "").replace("¥", "")
        whole, _, frac = raw.partition(".")
        if not whole.isdigit() or (frac and (not frac.isdigit() or len(frac) > 2)):
            raise InvalidRequest(f"{name} must be an amount in yuan such as 12.50", code="amount_invalid",
                                 param=name)
        fen = int(whole) * 100 + int(frac.ljust(2, "0") or 0)
        if fen <= 0:
            raise InvalidRequest(f"{name} must be more than zero", code="amount_invalid", param=name)
        return fen


def query_date(name: str, raw: str | None) -> date | None:
    """A ``YYYY-MM-DD`` filter from the query string (None when absent or empty)."""
    if raw is None or not raw.strip():
        return None
    try:
        return date.fromisoformat(raw.strip())
    except ValueError:
        raise InvalidRequest(f"{name} must be a date (YYYY-MM-DD)", code="parameter_invalid", param=name) from None


def _same_origin(request: Request) -> bool:
    """Browsers send Origin on POSTs: it must name this host (a cross-site form fails here before the token)."""
    origin = request.headers.get("origin")
    if origin is None or origin == "null":
        referer = request.headers.get("referer")
        if referer is None:
            return origin is None       # non-browser clients send neither; the token still has to match
        origin = referer
    parts = urlsplit(origin)
    return parts.netloc == request.headers.get("host", "")


async def read_form(request: Request, op: Operator | None) -> Form:
    """The urlencoded body of a state-changing request, refused (403 ``csrf_failed``, nothing changed) unless it
    carries this session's CSRF token and comes from this origin."""
    body = await request.body()
    if len(body) > _MAX_FORM:
        raise InvalidRequest("the form is too large", code="body_too_large")
    try:
        pairs = parse_qsl(body.decode("utf-8"), keep_blank_values=True, strict_parsing=False, max_num_fields=200)
    except (UnicodeDecodeError, ValueError):
        raise InvalidRequest("the form cannot be read", code="invalid_form") from None
    form = Form(pairs)
    if op is not None:
        sent = form.get("csrf_token", "")
        if not _same_origin(request) or not hmac.compare_digest(sent.encode(), op.csrf_token.encode()):
            log.warning("console form refused: CSRF check failed", path=request.url.path, user_id=op.user_id)
            raise PermissionDenied("the form has expired or did not come from this console; reload the page",
                                   code="csrf_failed")
    return form


def redirect(path: str, *, notice: str | None = None) -> RedirectResponse:
    """Post/redirect/get: after an action, the page that shows its result."""
    if notice:
        path += ("&" if "?" in path else "?") + f"notice={quote(notice)}"
    return RedirectResponse(path, status_code=303)


def done(path: str) -> RedirectResponse:
    return redirect(path, notice="done")


async def apps_list(rt: Runtime) -> list[dict[str, str]]:
    async with rt.db.read() as session:
        rows = (await session.execute(select(App.id, App.name).order_by(App.created_at))).all()
    return [{"id": r.id, "name": r.name} for r in rows]


async def request_apps(request: Request) -> list[dict[str, str]]:
    """The apps, read once per request (the page's header, its app context and its content all need them)."""
    apps: list[dict[str, str]] | None = getattr(request.state, "console_apps", None)
    if apps is None:
        apps = request.state.console_apps = await apps_list(runtime(request))
    return apps


def _current_app(apps: list[dict[str, str]], op: Operator) -> str | None:
    """The session's app if it still exists, else the first app (None when there is none)."""
    if any(a["id"] == op.app_id for a in apps):
        return op.app_id
    return apps[0]["id"] if apps else None


async def app_context(request: Request, op: Operator) -> AppContext:
    """The app and mode the operator is looking at (the first app when none was chosen yet)."""
    app_id = _current_app(await request_apps(request), op)
    if app_id is None:
        raise InvalidRequest("there is no app yet", code="no_app")
    return AppContext(app_id=app_id, mode=op.mode, key_id=None)


_NAV = [
    ("dashboard", "/console/", "viewer"),
    ("orders", "/console/orders", "viewer"),
    ("approvals", "/console/approvals", "viewer"),
    ("webhooks", "/console/webhooks", "viewer"),
    ("reconciliation", "/console/reconciliation", "viewer"),
    ("exceptions", "/console/exceptions", "viewer"),
    ("sms", "/console/sms", "viewer"),
    ("identity", "/console/identity", "viewer"),
    ("analytics", "/console/analytics", "viewer"),
    ("audit", "/console/audit", "viewer"),
    ("settings", "/console/settings", "admin"),
    ("sandbox", "/console/sandbox", "operator"),
]


async def render(request: Request, op: Operator | None, template: str, *, status_code: int = 200,
                 headers: dict[str, str] | None = None, **context: Any) -> HTMLResponse:
    rt = runtime(request)
    lang = op.lang if op else request.cookies.get("mg_lang", "en")
    lang = lang if lang in LANGS else "en"
    apps = await request_apps(request) if op else []
    current_app = _current_app(apps, op) if op else None
    nav = [(key, href) for key, href, role in _NAV
           if op and op.can(role) and (key != "sandbox" or op.mode == "test")]
    path = request.url.path
    html = _env.get_template(template).render(
        t=translator(lang), lang=lang, op=op, apps=apps, current_app=current_app, nav=nav, path=path,
        notice=request.query_params.get("notice"), csrf=op.csrf_token if op else "",
        sandbox=rt.sandbox is not None, **context)
    response = HTMLResponse(html, status_code=status_code, headers=headers)
    response.headers["Content-Security-Policy"] = CSP
    # browsers then send Origin on the console's own form posts (with no-referrer they send "Origin: null")
    response.headers["Referrer-Policy"] = "same-origin"
    return response


def static_dir() -> str:
    return str(resources.files("minigate.console") / "static")

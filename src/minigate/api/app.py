"""``create_app``: the gateway as an ASGI application."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from prometheus_client import Counter, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from minigate import __version__, console
from minigate.api import errors
from minigate.api.limits import BodyLimitMiddleware
from minigate.api.routes import analytics, api_keys, audit, exceptions, identity, misc, orders, reconciliation, sms
from minigate.api.routes import privacy as privacy_routes
from minigate.config import Settings
from minigate.logging import get_logger
from minigate.services.runtime import Runtime
from minigate.services.worker import Worker
from minigate.store.migrate import upgrade

__all__ = ["create_app"]

#: on every response (the interactive docs pages get no Content-Security-Policy: they load their own scripts)
SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-store",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
}

log = get_logger("minigate.api")

REQUESTS = Counter("minigate_http_requests_total", "HTTP requests", ["method", "route", "status"])
LATENCY = Histogram("minigate_http_request_seconds", "HTTP request latency", ["method", "route"])


def worker_process_app() -> FastAPI:
    """One process of ``minigate serve --workers N``: settings from the environment the parent exported; the
    parent has already migrated the database."""
    from minigate.config import load_settings
    from minigate.logging import configure_logging

    settings = load_settings()
    configure_logging(settings.log_level, json=settings.log_json)
    _stop_with_parent()
    return create_app(settings, migrate=False)


def _stop_with_parent() -> None:
    """A process of ``serve --workers`` shuts down (gracefully: SIGTERM) when the parent that started it is
    gone — killed with SIGKILL it cannot stop its children, which would otherwise keep the port and keep
    working jobs. Checked every second from a thread (the event loop never waits on it)."""
    import signal
    import threading

    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        log.warning("parent process gone: shutting down", parent=parent)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="minigate-parent-watch", daemon=True).start()


def create_app(settings: Settings, *, runtime: Runtime | None = None, migrate: bool = True,
               run_worker: bool | None = None) -> FastAPI:
    rt = runtime or Runtime(settings)
    worker_enabled = settings.run_worker if run_worker is None else run_worker

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if migrate:
            await upgrade(rt.db.engine)
        await rt.start()
        if rt.sandbox is not None and rt.settings.sandbox_url is None and settings.sandbox_exposed:
            app.mount("/sandbox", rt.sandbox.app)
        worker = Worker(rt, poll_seconds=settings.worker_poll_seconds)
        task = asyncio.create_task(worker.run()) if worker_enabled else None
        app.state.worker = worker
        try:
            yield
        finally:
            worker.stop()
            if task is not None:
                await task
            await rt.aclose()

    app = FastAPI(title="minigate", version=__version__, lifespan=lifespan,
                  description="Payments and third-party services for mini-program backends.")
    app.state.runtime = rt
    errors.install(app)
    app.include_router(orders.router)
    app.include_router(misc.router)
    app.include_router(exceptions.router)
    app.include_router(reconciliation.router)
    app.include_router(sms.router)
    app.include_router(identity.router)
    app.include_router(audit.router)
    app.include_router(analytics.router)
    app.include_router(api_keys.router)
    app.include_router(privacy_routes.router)
    console.mount(app)

    # HSTS when minigate serves TLS itself or is published at an https address
    hsts = settings.tls_cert_file is not None or settings.public_url.startswith("https://")

    app.add_middleware(GuardMiddleware, hsts=hsts)
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes)
    return app


class GuardMiddleware:
    """Security headers on every answer, and the request metrics — as plain ASGI (no per-request task or
    stream copy, which a decorator-style middleware costs on every call)."""

    def __init__(self, app: ASGIApp, *, hsts: bool) -> None:
        self.app = app
        headers = {k.lower().encode(): v.encode() for k, v in SECURITY_HEADERS.items()}
        if hsts:
            headers[b"strict-transport-security"] = b"max-age=31536000; includeSubDomains"
        self._headers = headers
        self._csp = (b"content-security-policy", b"default-src 'none'; frame-ancestors 'none'")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500
        with_csp = not scope["path"].startswith(("/docs", "/redoc"))

        async def guarded_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                present = {k.lower() for k, _ in message.get("headers", [])}
                extra = [(k, v) for k, v in self._headers.items() if k not in present]
                if with_csp and self._csp[0] not in present:
                    extra.append(self._csp)
                message = {**message, "headers": [*message.get("headers", []), *extra]}
            await send(message)

        try:
            await self.app(scope, receive, guarded_send)
        finally:
            route: Any = scope.get("route")
            name = getattr(route, "path", "unmatched")
            REQUESTS.labels(scope["method"], name, str(status)).inc()
            LATENCY.labels(scope["method"], name).observe(time.perf_counter() - started)

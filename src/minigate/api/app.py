"""``create_app``: the gateway as an ASGI application."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request, Response
from prometheus_client import Counter, Histogram

from minigate import __version__
from minigate.api import errors
from minigate.api.limits import BodyLimitMiddleware
from minigate.api.routes import audit, exceptions, identity, misc, orders, reconciliation, sms
from minigate.config import Settings
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

REQUESTS = Counter("minigate_http_requests_total", "HTTP requests", ["method", "route", "status"])
LATENCY = Histogram("minigate_http_request_seconds", "HTTP request latency", ["method", "route"])


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

    # HSTS when minigate serves TLS itself or is published at an https address
    hsts = settings.tls_cert_file is not None or settings.public_url.startswith("https://")

    @app.middleware("http")
    async def guard(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        started = time.perf_counter()
        response = await call_next(request)
        route: Any = request.scope.get("route")
        name = getattr(route, "path", "unmatched")
        REQUESTS.labels(request.method, name, str(response.status_code)).inc()
        LATENCY.labels(request.method, name).observe(time.perf_counter() - started)
        for header, value in SECURITY_HEADERS.items():
            response.headers.setdefault(header, value)
        if not request.url.path.startswith(("/docs", "/redoc")):
            response.headers.setdefault("Content-Security-Policy", "default-src 'none'; frame-ancestors 'none'")
        if hsts:
            response.headers.setdefault("Strict-Transport-Security", "max-age=31536000; includeSubDomains")
        return response

    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes)
    return app

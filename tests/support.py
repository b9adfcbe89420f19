"""Test doubles that are real components: ASGI routing between in-process apps, a merchant receiver."""

from __future__ import annotations

import json
from typing import Any

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from minigate import webhook_signature


class RoutingTransport(httpx.AsyncBaseTransport):
    """Sends each request to the in-process ASGI app registered for its host."""

    def __init__(self) -> None:
        self._apps: dict[str, httpx.ASGITransport] = {}

    def route(self, host: str, app: Any) -> None:
        # like a real server: an exception inside the app is a 500 answer, not an exception in the caller
        self._apps[host] = httpx.ASGITransport(app=app, raise_app_exceptions=False)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        transport = self._apps.get(request.url.host)
        if transport is None:
            raise httpx.ConnectError(f"no route to {request.url.host}", request=request)
        return await transport.handle_async_request(request)


class MerchantReceiver:
    """The merchant's webhook endpoint: verifies signatures, records events, can be told to fail."""

    def __init__(self) -> None:
        self.secrets: list[str] = []
        self.events: list[dict[str, Any]] = []
        self.bodies: list[bytes] = []
        self.rejected = 0
        self.fail_next = 0
        self.app = Starlette(routes=[Route("/hooks", self._hook, methods=["POST"])])

    async def _hook(self, request: Request) -> Response:
        body = await request.body()
        if self.fail_next > 0:
            self.fail_next -= 1
            return Response(status_code=500)
        try:
            webhook_signature.verify(body, request.headers.get("Minigate-Signature", ""), self.secrets)
        except webhook_signature.SignatureVerificationError:
            self.rejected += 1
            return Response(status_code=400)
        self.bodies.append(body)
        self.events.append(json.loads(body))
        return Response(status_code=204)

    def types(self) -> list[str]:
        return [e["type"] for e in self.events]

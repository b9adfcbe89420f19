"""The HTTP transport under every outbound ``httpx.AsyncClient`` (providers, webhooks): aiohttp's C parser.

Providers and the webhook worker still speak ``httpx`` — requests are built, signed and parsed as
``httpx.Request``/``httpx.Response``, tests inject ``httpx.MockTransport``/``ASGITransport`` — but the bytes go
over aiohttp's connection pool. Measured on the 2-core bench machine (docs/performance.md): httpx's default
transport (httpcore + h11 + anyio, pure Python) costs ~2.3 ms of CPU per request at 32 in flight, this one
~0.26 ms; on checkout that was about a fifth of the gateway's CPU per order.

What the transport keeps exactly as httpx would send and report it:

- the URL is sent as built (``yarl.URL(..., encoded=True)``): a re-quoted path or query would no longer be the
  string the request signature covers;
- headers as given, in order; aiohttp adds none of its own defaults that the request did not carry
  (no ``application/octet-stream`` Content-Type), does not decompress (httpx decodes ``Content-Encoding``),
  keeps no cookies and never follows redirects;
- httpx's timeouts (``pool``/``connect``/``read``) become aiohttp's; there is no separate write timeout;
- errors become the httpx exception of the same meaning, so ``providers._http.send`` still tells "could not
  connect" (nothing was sent) from "no answer" and "connection lost" (outcome unknown):
  connect failures → ``ConnectError``/``ConnectTimeout``, read timeouts → ``ReadTimeout``, a peer closing
  or a malformed answer → ``RemoteProtocolError``/``ReadError``.

``MINIGATE_HTTP_TRANSPORT=httpx`` switches back to httpx's own transport (e.g. to rule this one out).
Proxies come from the environment (``HTTPS_PROXY``/``HTTP_PROXY``/``NO_PROXY``), like httpx's default.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import weakref
from collections.abc import AsyncIterator
from typing import Any, Literal

import aiohttp
import certifi
import httpx
from multidict import CIMultiDict
from yarl import URL

__all__ = ["AiohttpTransport", "outbound_client"]

#: aiohttp exception → httpx exception, most specific first (the first ``isinstance`` match wins)
_ERRORS: tuple[tuple[type[BaseException], type[httpx.TransportError]], ...] = (
    (aiohttp.ConnectionTimeoutError, httpx.ConnectTimeout),       # no connection in time: nothing sent
    (aiohttp.SocketTimeoutError, httpx.ReadTimeout),              # sent, no (complete) answer in time
    (aiohttp.ServerTimeoutError, httpx.ReadTimeout),
    (aiohttp.ClientConnectorError, httpx.ConnectError),           # refused, DNS, TLS handshake: nothing sent
    (aiohttp.ServerDisconnectedError, httpx.RemoteProtocolError),  # the peer closed: outcome unknown
    (aiohttp.ClientPayloadError, httpx.ReadError),
    (aiohttp.ClientResponseError, httpx.RemoteProtocolError),     # a malformed status line or headers
    (aiohttp.InvalidURL, httpx.UnsupportedProtocol),
    (aiohttp.ClientOSError, httpx.ReadError),                     # reset while talking: outcome unknown
    (aiohttp.ClientConnectionError, httpx.ReadError),
    (TimeoutError, httpx.ReadTimeout),
)


def _mapped(exc: BaseException, request: httpx.Request) -> httpx.TransportError | None:
    for source, target in _ERRORS:
        if isinstance(exc, source):
            return target(f"{type(exc).__name__}: {exc}", request=request)
    return None


class _Body(httpx.AsyncByteStream):
    """The response body, read from aiohttp as the caller iterates (``send`` caps what it will read)."""

    CHUNK = 64 * 1024

    def __init__(self, response: aiohttp.ClientResponse, request: httpx.Request) -> None:
        self._response = response
        self._request = request

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._response.content.iter_chunked(self.CHUNK):
                yield chunk
        except (TimeoutError, aiohttp.ClientError) as exc:
            mapped = _mapped(exc, self._request)
            if mapped is None:
                raise
            raise mapped from exc

    async def aclose(self) -> None:
        # a body read to its end hands the connection back to the pool; one abandoned half-way closes it
        if self._response.content.at_eof():
            self._response.release()
        else:
            self._response.close()


class AiohttpTransport(httpx.AsyncBaseTransport):
    """An ``httpx`` transport over one ``aiohttp.ClientSession`` (created in the event loop that first uses it)."""

    def __init__(self, *, limits: httpx.Limits | None = None, verify: ssl.SSLContext | bool = True) -> None:
        self._limits = limits or httpx.Limits(max_connections=100, max_keepalive_connections=20)
        if verify is True:
            self._ssl: ssl.SSLContext | bool = ssl.create_default_context(cafile=certifi.where())
        else:
            self._ssl = verify
        self._session: aiohttp.ClientSession | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._finalizer: weakref.finalize[..., Any] | None = None

    def _session_now(self) -> aiohttp.ClientSession:
        loop = asyncio.get_running_loop()
        if self._session is None or self._session.closed or self._loop is not loop:
            if self._finalizer is not None:    # a pool of another (finished) event loop: closed in place
                self._finalizer()
            connector = aiohttp.TCPConnector(
                limit=self._limits.max_connections or 0, limit_per_host=0, ssl=self._ssl,
                keepalive_timeout=self._limits.keepalive_expiry or 5.0)
            self._session = aiohttp.ClientSession(
                connector=connector, auto_decompress=False, cookie_jar=aiohttp.DummyCookieJar(),
                skip_auto_headers=("Content-Type",), timeout=aiohttp.ClientTimeout(total=None), trust_env=True)
            self._loop = loop
            # A client dropped without ``aclose`` (its event loop over) closes its connections when collected, as
            # httpx's transport does, instead of aiohttp's "Unclosed client session" warning at some later moment.
            self._finalizer = weakref.finalize(self, _close_pool, connector)
        return self._session

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        limits: dict[str, float | None] = request.extensions.get("timeout", {})
        connect, pool, read = limits.get("connect"), limits.get("pool"), limits.get("read")
        timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=connect, sock_read=read,
            # aiohttp's ``connect`` covers waiting for a pooled connection and opening one
            connect=None if connect is None or pool is None else connect + pool)
        body = await request.aread()
        headers = CIMultiDict((k.decode("latin-1"), v.decode("latin-1")) for k, v in request.headers.raw)
        try:
            response = await self._session_now().request(
                request.method, URL(str(request.url), encoded=True), data=body or None, headers=headers,
                allow_redirects=False, timeout=timeout, compress=None, chunked=None)
        except (TimeoutError, aiohttp.ClientError) as exc:
            mapped = _mapped(exc, request)
            if mapped is None:
                raise
            raise mapped from exc
        return httpx.Response(
            status_code=response.status,
            headers=[(k, v) for k, v in response.raw_headers],
            stream=_Body(response, request),
            extensions={"http_version": f"HTTP/{response.version.major}.{response.version.minor}".encode()
                        if response.version else b"HTTP/1.1",
                        "reason_phrase": (response.reason or "").encode("latin-1", "replace")},
        )

    async def aclose(self) -> None:
        if self._session is not None and not self._session.closed:
            await self._session.close()
        if self._finalizer is not None:
            self._finalizer.detach()
        self._session = self._finalizer = None


def _close_pool(connector: aiohttp.BaseConnector) -> None:
    """Close a pool's connections now, without its event loop (none may be running any more); aiohttp's
    ``close()`` returns an awaitable that nobody could await here, ``_close()`` does the work in place."""
    with contextlib.suppress(Exception):
        connector._close()


def outbound_client(kind: Literal["aiohttp", "httpx"] = "aiohttp", *, limits: httpx.Limits | None = None,
                    transport: httpx.AsyncBaseTransport | None = None, **kwargs: Any) -> httpx.AsyncClient:
    """An ``httpx.AsyncClient`` for calls leaving the gateway, over the chosen transport — or over ``transport``
    when one is given (tests inject ``MockTransport``/``ASGITransport``; ``limits`` then do not apply)."""
    if transport is not None:
        return httpx.AsyncClient(transport=transport, **kwargs)
    if kind == "httpx":
        return httpx.AsyncClient(limits=limits or httpx.Limits(), **kwargs)
    return httpx.AsyncClient(transport=AiohttpTransport(limits=limits), **kwargs)

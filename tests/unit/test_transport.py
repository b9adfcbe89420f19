"""The outbound transport (minigate/transport.py) against a real TCP server that answers byte for byte.

What must hold for signed provider calls and for the "outcome unknown" rules: the request goes out exactly as
httpx built it (URL not re-quoted, no extra headers, body unchanged), answers come back undecoded for httpx to
decode, redirects are not followed, connections are reused, and every failure maps to the httpx error — and
from there to the minigate error — that says whether anything was sent.
"""

from __future__ import annotations

import asyncio
import gzip
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import httpx
import pytest

from minigate.errors import ProviderTimeout, ProviderUnavailable, ProviderUnreachable
from minigate.providers import _http
from minigate.transport import AiohttpTransport, outbound_client

Handler = Callable[[bytes, asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class Server:
    """A loopback HTTP/1.1 server whose handler writes raw bytes; records each request head and body."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.requests: list[tuple[bytes, bytes]] = []
        self.connections = 0
        self.port = 0

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":", 1)[1])
                body = await reader.readexactly(length) if length else b""
                self.requests.append((head, body))
                await self.handler(head, reader, writer)
                if writer.is_closing():
                    return
        finally:
            writer.close()

    @asynccontextmanager
    async def running(self) -> AsyncIterator[Server]:
        server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = server.sockets[0].getsockname()[1]
        try:
            yield self
        finally:
            server.close()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def answer(status: bytes = b"200 OK", body: bytes = b'{"ok":true}', *extra: bytes) -> Handler:
    async def handle(head: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        lines = [b"HTTP/1.1 " + status, b"Content-Length: " + str(len(body)).encode(), *extra]
        writer.write(b"\r\n".join(lines) + b"\r\n\r\n" + body)
        await writer.drain()
    return handle


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    c = outbound_client("aiohttp", timeout=5.0)
    yield c
    await c.aclose()


async def test_request_goes_out_exactly_as_built(client: httpx.AsyncClient) -> None:
    server = Server(answer())
    async with server.running():
        # a signature covers the path and query as sent: percent-escapes and their case must survive
        url = f"{server.url}/v3/bill/tradebill?bill_date=2026-11-26&tar_type=GZIP&x=%2F%e4%bd%a0%20a"
        body = '{"description":"拿铁 ×2","amount":{"total":100}}'.encode()
        request = client.build_request("POST", url, content=body, headers={
            "Authorization": 'WECHATPAY2-SHA256-RSA2048 mchid="1900000001",signature="abc=="',
            "Content-Type": "application/json", "Wechatpay-Serial": "5157F09EFDC096DE15EBE81A47057A72"})
        response = await client.send(request)
    assert response.status_code == 200 and response.json() == {"ok": True}
    head, sent = server.requests[0]
    assert head.startswith(b"POST /v3/bill/tradebill?bill_date=2026-11-26&tar_type=GZIP&x=%2F%e4%bd%a0%20a HTTP/1.1\r\n")
    assert sent == body
    names = [line.split(b":", 1)[0].lower() for line in head.split(b"\r\n")[1:] if line]
    assert names.count(b"content-type") == 1 and names.count(b"content-length") == 1
    assert b'Authorization: WECHATPAY2-SHA256-RSA2048 mchid="1900000001",signature="abc=="\r\n' in head
    assert b"Wechatpay-Serial: 5157F09EFDC096DE15EBE81A47057A72" in head


async def test_get_without_body_gets_no_content_type(client: httpx.AsyncClient) -> None:
    server = Server(answer())
    async with server.running():
        await client.get(f"{server.url}/v3/certificates")
    head, body = server.requests[0]
    assert body == b"" and b"content-type" not in head.lower() and b"content-length" not in head.lower()


async def test_gzip_answer_is_decoded_once(client: httpx.AsyncClient) -> None:
    raw = b"trade_time,transaction_id\n" * 200
    server = Server(answer(b"200 OK", gzip.compress(raw), b"Content-Encoding: gzip"))
    async with server.running():
        direct = await client.get(f"{server.url}/bill")
        via_send = await _http.send(client, client.build_request("GET", f"{server.url}/bill"), provider="test")
    assert direct.content == raw and via_send.content == raw


async def test_redirects_are_returned_not_followed(client: httpx.AsyncClient) -> None:
    server = Server(answer(b"302 Found", b"", b"Location: http://127.0.0.1:1/elsewhere"))
    async with server.running():
        response = await client.get(f"{server.url}/pay")
    assert response.status_code == 302 and response.headers["location"].endswith("/elsewhere")
    assert len(server.requests) == 1


async def test_connections_are_kept_alive(client: httpx.AsyncClient) -> None:
    server = Server(answer())
    async with server.running():
        for _ in range(5):
            assert (await client.get(f"{server.url}/ping")).status_code == 200
    assert len(server.requests) == 5 and server.connections == 1


async def test_refused_connection_is_unreachable(client: httpx.AsyncClient) -> None:
    server = Server(answer())
    async with server.running():
        url = server.url
    with pytest.raises(httpx.ConnectError):
        await client.get(url)
    with pytest.raises(ProviderUnreachable):
        await _http.send(client, client.build_request("GET", url), provider="test")


async def _silent(head: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await asyncio.sleep(30)


async def _hang_up(head: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.close()


async def _short_body(head: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{\"partial\":")
    await writer.drain()
    writer.close()


@pytest.mark.parametrize(("handler", "httpx_error", "minigate_error"), [
    (_silent, httpx.ReadTimeout, ProviderTimeout),               # sent, no answer: outcome unknown
    (_hang_up, httpx.RemoteProtocolError, ProviderUnavailable),  # sent, peer closed: outcome unknown
    (_short_body, httpx.ReadError, ProviderUnavailable),         # answer cut short
], ids=["silent", "hang-up", "short-body"])
async def test_failures_after_sending_are_outcome_unknown(handler: Handler, httpx_error: type[Exception],
                                                          minigate_error: type[Exception]) -> None:
    client = outbound_client("aiohttp", timeout=httpx.Timeout(5.0, read=0.3))
    try:
        server = Server(handler)
        async with server.running():
            with pytest.raises(httpx_error):
                response = await client.post(f"{server.url}/pay", content=b"{}")
                response.raise_for_status()
            with pytest.raises(minigate_error):
                await _http.send(client, client.build_request("POST", f"{server.url}/pay", content=b"{}"),
                                 provider="test")
        assert len(server.requests) == 2   # the server did receive both requests
    finally:
        await client.aclose()


async def test_oversized_answer_is_refused_while_streaming(client: httpx.AsyncClient,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_http, "MAX_RESPONSE_BYTES", 1000)
    server = Server(answer(b"200 OK", b"x" * 5000))
    async with server.running():
        with pytest.raises(ProviderUnavailable, match="larger than 1000 bytes"):
            await _http.send(client, client.build_request("GET", f"{server.url}/big"), provider="test")


async def test_httpx_transport_can_be_chosen() -> None:
    client = outbound_client("httpx")
    try:
        assert not isinstance(client._transport, AiohttpTransport)
        server = Server(answer())
        async with server.running():
            assert (await client.get(f"{server.url}/ping")).json() == {"ok": True}
    finally:
        await client.aclose()


def test_client_used_in_two_event_loops_and_dropped_closes_quietly() -> None:
    """A client outliving its event loop (a CLI running several loops in turn, tests) gets a fresh pool in the
    next loop, and a dropped one closes its connections when collected — no "Unclosed client session"."""
    import gc

    clients = [outbound_client(timeout=5.0)]
    servers: list[Server] = []

    async def use() -> None:
        server = Server(answer())
        servers.append(server)
        async with server.running():
            assert (await clients[0].get(f"{server.url}/ping")).json() == {"ok": True}

    asyncio.run(use())
    asyncio.run(use())
    assert [s.connections for s in servers] == [1, 1]
    clients.clear()
    gc.collect()     # with warnings as errors, aiohttp's warning from a collected open session fails this test

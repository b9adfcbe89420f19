"""``minigate sandbox serve`` (all simulators, one port) plus a stopwatch on the notification client.

It is the same :class:`minigate.simulators.Sandbox` that ``minigate sandbox serve`` runs, with the same
uvicorn settings; the only addition is that the client delivering notifications is an ordinary
``httpx.AsyncClient`` over the same transport and limits as the simulator's own
(:class:`minigate.transport.AiohttpTransport`, 100 connections) whose transport records, for every
notification attempt, the target URL, when it started, when the answer came back and the status. That is
what WeChat Pay sees of a merchant: time from sending the callback to the acknowledgement.

``GET /_bench/notify_log?url_prefix=...`` returns ``[[start, end, status], ...]`` (``time.monotonic``, which
on Linux is one clock for every process of the machine); ``DELETE /_bench/notify_log`` clears it.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Mount, Route

from minigate.simulators import Sandbox
from minigate.transport import AiohttpTransport

LOG: list[tuple[str, float, float, int | None]] = []


class TimingTransport(httpx.AsyncBaseTransport):
    def __init__(self) -> None:
        self._inner = AiohttpTransport()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        started = time.monotonic()
        try:
            response = await self._inner.handle_async_request(request)
            await response.aread()
        except BaseException:
            LOG.append((str(request.url), started, time.monotonic(), None))
            raise
        LOG.append((str(request.url), started, time.monotonic(), response.status_code))
        return response

    async def aclose(self) -> None:
        await self._inner.aclose()


def build(state_dir: Path, time_scale: float) -> Starlette:
    client = httpx.AsyncClient(transport=TimingTransport(), follow_redirects=False)
    sandbox = Sandbox(state_dir, time_scale=time_scale, notify_client=client)

    async def notify_log(request: Request) -> Response:
        if request.method == "DELETE":
            LOG.clear()
            return Response(b"{}", media_type="application/json")
        prefix = request.query_params.get("url_prefix", "")
        rows = [[s, e, st] for url, s, e, st in LOG if url.startswith(prefix)]
        return Response(json.dumps(rows), media_type="application/json")

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        await sandbox.aclose()
        await client.aclose()

    return Starlette(routes=[Route("/_bench/notify_log", notify_log, methods=["GET", "DELETE"]),
                             Mount("", app=sandbox.app)], lifespan=lifespan)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--state-dir", type=Path, required=True)
    parser.add_argument("--time-scale", type=float, default=0.001)
    args = parser.parse_args()
    uvicorn.run(build(args.state_dir, args.time_scale), host="127.0.0.1", port=args.port, log_level="warning",
                lifespan="on")


if __name__ == "__main__":
    main()

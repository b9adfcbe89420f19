"""The merchant's webhook endpoint: acknowledges every POST with 200 and remembers when it arrived.

``GET /_stats`` -> ``{"count": n, "arrivals": [[monotonic, object_id], ...]}``; ``DELETE /_stats`` clears.
Raw ASGI on uvicorn (uvloop + httptools) so that it costs the shared CPU as little as possible.
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

import uvicorn

ARRIVALS: list[tuple[float, str]] = []


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    body = b""
    more = True
    while more:
        message = await receive()
        body += message.get("body", b"")
        more = message.get("more_body", False)
    status, payload = 200, b"{}"
    if scope["path"] == "/_stats":
        if scope["method"] == "DELETE":
            ARRIVALS.clear()
        else:
            payload = json.dumps({"count": len(ARRIVALS), "arrivals": ARRIVALS}).encode()
    elif scope["method"] == "POST":
        now = time.monotonic()
        try:
            obj = json.loads(body)["data"]["object"]
            ref = obj.get("out_trade_no") or obj.get("id") or ""
        except (ValueError, KeyError, TypeError):
            ref = ""
        ARRIVALS.append((now, ref))
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": payload})


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning", lifespan="on")


if __name__ == "__main__":
    main()

"""The one place where transport errors become minigate errors (cf. httpx ``map_httpcore_exceptions``)."""

from __future__ import annotations

import httpx

from minigate.errors import ProviderTimeout, ProviderUnavailable, ProviderUnreachable

__all__ = ["MAX_RESPONSE_BYTES", "send"]

#: Provider answers larger than this are refused unread (B-13).
MAX_RESPONSE_BYTES = 8 * 1024 * 1024


async def send(client: httpx.AsyncClient, request: httpx.Request, *, provider: str) -> httpx.Response:
    """Send ``request``; transport failures raise :class:`OutcomeUnknown` subclasses, never bare httpx errors."""
    try:
        response = await client.send(request, stream=True, follow_redirects=False)
    except httpx.ConnectTimeout as exc:
        raise ProviderUnreachable(f"{provider}: could not connect in time", provider=provider) from exc
    except httpx.TimeoutException as exc:
        raise ProviderTimeout(f"{provider}: no answer in time ({type(exc).__name__})", provider=provider) from exc
    except httpx.ConnectError as exc:
        raise ProviderUnreachable(f"{provider}: connection refused or host not found", provider=provider) from exc
    except httpx.TransportError as exc:
        raise ProviderUnavailable(f"{provider}: transport error ({type(exc).__name__})",
                                  provider=provider) from exc
    if response.is_stream_consumed:   # a pre-read response (e.g. from httpx.MockTransport)
        return response
    try:
        chunks: list[bytes] = []
        size = 0
        async for chunk in response.aiter_raw():
            size += len(chunk)
            if size > MAX_RESPONSE_BYTES:
                raise ProviderUnavailable(f"{provider}: response larger than {MAX_RESPONSE_BYTES} bytes",
                                          provider=provider, http_status=response.status_code)
            chunks.append(chunk)
    except httpx.TimeoutException as exc:
        raise ProviderTimeout(f"{provider}: timed out reading the answer", provider=provider) from exc
    except httpx.TransportError as exc:
        raise ProviderUnavailable(f"{provider}: connection lost reading the answer", provider=provider) from exc
    finally:
        await response.aclose()
    raw = b"".join(chunks)
    encoding = response.headers.get("content-encoding", "").lower()
    if encoding in ("gzip", "deflate", "br") and raw:
        decoded = httpx.Response(response.status_code, headers=response.headers, content=raw)
        raw_bytes = decoded.read()
    else:
        raw_bytes = raw
    return httpx.Response(
        status_code=response.status_code,
        headers=[(k, v) for k, v in response.headers.items() if k.lower() != "content-encoding"],
        content=raw_bytes,
        request=request,
    )

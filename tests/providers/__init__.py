"""Shared by the provider tests: one provider's simulator in-process, with the configuration that reaches it."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx

from minigate.providers.registry import SandboxContext, ServiceSpec
from minigate.simulators.sandbox import Sandbox


@contextlib.asynccontextmanager
async def sandboxed(tmp_path: Path, spec: ServiceSpec | None, *, notify_client: httpx.AsyncClient | None = None
                    ) -> AsyncIterator[tuple[Sandbox, httpx.AsyncClient, dict[str, Any]]]:
    """(the sandbox, a client reaching it at http://sandbox, the provider's sandbox configuration)."""
    assert spec is not None
    sandbox = Sandbox(tmp_path, time_scale=0.0)
    if notify_client is not None:
        sandbox.notify_client = notify_client
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=sandbox.app), base_url="http://sandbox") as http:
        yield sandbox, http, spec.sandbox(SandboxContext(credentials=sandbox.credentials, base_url="http://sandbox",
                                                         browser_url="http://sandbox"))
    await sandbox.aclose()

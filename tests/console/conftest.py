"""Console fixtures.

* ``console`` — the in-process gateway of every API test (SQLite and PostgreSQL), with an admin, an operator and a
  viewer, and a :class:`ConsoleClient` per role: for page and action tests without a browser.
* ``browser`` / ``live_console`` — a real gateway over HTTP (uvicorn in a thread, SQLite in a temporary
  directory, the sandbox in-process, the worker running) and Debian's Chromium driven by Playwright. Chromium
  must be installed (``scripts/test.sh`` installs it from Debian when missing); the tests fail, never skip, when
  it is not.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from minigate.api.app import create_app
from minigate.config import load_settings
from minigate.services.apps import create_app as create_merchant_app
from minigate.services.runtime import Runtime
from minigate.store.migrate import upgrade
from tests.conftest import Gateway
from tests.console.support import ConsoleClient, add_user
from tests.e2e.harness import ThreadedServer

CHROMIUM = os.environ.get("MINIGATE_CHROMIUM", "/usr/bin/chromium")
#: as the machine's notes say: without the background-networking flags Chromium keeps dialling out
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage"]
MASTER_KEY = "console-test-master-key-0123456789abcdef01234"


@dataclass
class Console:
    gw: Gateway
    admin: ConsoleClient
    operator: ConsoleClient
    viewer: ConsoleClient
    users: dict[str, dict[str, Any]]


@pytest.fixture
async def console(gateway: Gateway) -> AsyncIterator[Console]:
    clients: dict[str, ConsoleClient] = {}
    accounts = {}
    for role in ("admin", "operator", "viewer"):
        accounts[role] = await add_user(gateway.rt, f"{role}@shop.example", role)
        client = ConsoleClient.on(gateway.app)
        r = await client.sign_in(f"{role}@shop.example")
        assert r.status_code == 303, r.text[:400]
        clients[role] = client
    yield Console(gateway, clients["admin"], clients["operator"], clients["viewer"], accounts)
    for client in clients.values():
        await client.aclose()


# -- a real gateway and a real browser ------------------------------------------------------------------------


@dataclass
class LiveConsole:
    url: str
    app_id: str
    test_key: str
    rt: Runtime
    server: ThreadedServer


@pytest.fixture(scope="module")
def playwright_instance() -> Iterator[Any]:
    """Per module, not per session: Playwright's sync API keeps an event loop running in this thread while it
    is started, which the async tests of other modules could not run beside."""
    from playwright.sync_api import sync_playwright

    if not Path(CHROMIUM).exists():
        pytest.fail(f"Chromium is needed for the console tests and is not at {CHROMIUM}: "
                    "apt-get install chromium (scripts/test.sh does this)")
    with sync_playwright() as pw:
        yield pw


@pytest.fixture(scope="module")
def browser(playwright_instance: Any) -> Iterator[Any]:
    b = playwright_instance.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
    yield b
    b.close()


def _seed(settings: Any) -> tuple[str, str]:
    async def run() -> tuple[str, str]:
        rt = Runtime(settings)
        await upgrade(rt.db.engine)
        await rt.start()
        try:
            created = await create_merchant_app(rt, name="Harbour Coffee")
            for role in ("admin", "operator", "viewer"):
                await add_user(rt, f"{role}@shop.example", role)
            await add_user(rt, "approver@shop.example", "operator")
            return created.id, created.test_key
        finally:
            await rt.aclose()
    # in a thread of its own: Playwright's sync API keeps an event loop running in this one
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, run()).result()


@pytest.fixture(scope="module")
def live_console(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveConsole]:
    """One gateway per test module, seeded with an app and four console users (admin, operator, viewer and a
    second operator, ``approver``), all with :data:`PASSWORD`."""
    base = tmp_path_factory.mktemp("console")
    from tests.e2e.harness import free_port

    port = free_port()
    settings = load_settings(data_dir=base / "data", public_url=f"http://127.0.0.1:{port}",
                             sandbox_dir=base / "sandbox", sandbox_time_scale=0.0001, worker_poll_seconds=0.05,
                             master_key=MASTER_KEY, api_requests_per_second_per_key=0, mode="test")
    app_id, key = _seed(settings)
    rt = Runtime(settings)
    server = ThreadedServer(create_app(settings, runtime=rt), port=port)
    server.start()
    yield LiveConsole(server.url, app_id, key, rt, server)
    server.stop()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1366, "height": 860}, locale="en-US")
    pg = context.new_page()
    errors: list[str] = []
    # script errors, Content-Security-Policy violations, and any sub-resource (script, style, image) that failed;
    # a page answered with an error status on purpose (a refused sign-in: 401) is not one of them
    pg.on("pageerror", lambda exc: errors.append(str(exc)))
    pg.on("console", lambda msg: errors.append(msg.text)
          if msg.type == "error" and not msg.text.startswith("Failed to load resource") else None)
    pg.on("response", lambda r: errors.append(f"{r.status} {r.url}")
          if r.status >= 400 and r.request.resource_type != "document" else None)
    pg.errors = errors
    yield pg
    context.close()

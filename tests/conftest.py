"""Shared fixtures: a fresh database per test on SQLite and on PostgreSQL, and an in-process gateway wired
to the in-process sandbox and a merchant webhook receiver over ASGI transports (no sockets)."""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from minigate.api.app import create_app
from minigate.config import load_settings
from minigate.services.apps import create_app as create_merchant_app
from minigate.services.runtime import Runtime
from minigate.store.db import Database
from minigate.store.migrate import upgrade
from tests.support import MerchantReceiver, RoutingTransport

PG_URL = os.environ.get("MINIGATE_TEST_POSTGRES_URL")

if os.environ.get("CI") and not PG_URL:
    raise RuntimeError("CI must run the suite on PostgreSQL too: MINIGATE_TEST_POSTGRES_URL is not set")
REDIS_URL = os.environ.get("MINIGATE_TEST_REDIS_URL")
if os.environ.get("CI") and not REDIS_URL:
    raise RuntimeError("CI must run the shared-limit tests on Redis: MINIGATE_TEST_REDIS_URL is not set")


def _backends() -> list[Any]:
    return ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)] if PG_URL else ["sqlite"]


@pytest.fixture(scope="session")
def pg_template() -> Iterator[str | None]:
    """A migrated template database; each test clones it (CREATE DATABASE … TEMPLATE, ~tens of ms)."""
    if not PG_URL:
        yield None
        return
    import asyncio

    name = f"mg_tmpl_{uuid.uuid4().hex[:8]}"

    async def make() -> None:
        admin = create_async_engine(_pg(PG_URL), isolation_level="AUTOCOMMIT")
        async with admin.connect() as conn:
            await conn.execute(text(f'CREATE DATABASE "{name}"'))
        await admin.dispose()
        db = Database(_pg(PG_URL, name))
        await upgrade(db.engine)
        await db.dispose()

    async def drop() -> None:
        admin = create_async_engine(_pg(PG_URL), isolation_level="AUTOCOMMIT")
        async with admin.connect() as conn:
            await conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        await admin.dispose()

    asyncio.run(make())
    yield name
    asyncio.run(drop())


def _pg(url: str, database: str | None = None) -> str:
    from sqlalchemy.engine import make_url

    parsed = make_url(url).set(drivername="postgresql+asyncpg")
    if database:
        parsed = parsed.set(database=database)
    return parsed.render_as_string(hide_password=False)


@pytest.fixture(params=_backends())
async def database_url(request: pytest.FixtureRequest, tmp_path: Path, pg_template: str | None
                       ) -> AsyncIterator[str]:
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'minigate.db'}"
        return
    assert PG_URL and pg_template
    name = f"mg_t_{uuid.uuid4().hex[:10]}"
    admin = create_async_engine(_pg(PG_URL), isolation_level="AUTOCOMMIT")
    async with admin.connect() as conn:
        await conn.execute(text(f'CREATE DATABASE "{name}" TEMPLATE "{pg_template}"'))
    yield _pg(PG_URL, name)
    async with admin.connect() as conn:
        await conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    await admin.dispose()


class Gateway:
    """An in-process gateway with its sandbox and a merchant receiver, plus helpers to drive a checkout."""

    def __init__(self, app: Any, rt: Runtime, http: httpx.AsyncClient, merchant: MerchantReceiver) -> None:
        self.app = app
        self.rt = rt
        self.http = http
        self.merchant = merchant
        self.key = ""
        self.app_id = ""

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}

    async def new_app(self, name: str = "Test shop") -> tuple[str, str]:
        created = await create_merchant_app(self.rt, name=name)
        return created.id, created.test_key

    async def login(self, user: str = "alice") -> str:
        code = (await self.http.post("/sandbox/wechat/_sandbox/login", json={"user": user})).json()["code"]
        r = await self.http.post("/v1/wechat/login", headers=self.auth, json={"code": code})
        assert r.status_code == 200, r.text
        return str(r.json()["openid"])

    async def create_order(self, amount: int = 100, **extra: Any) -> dict[str, Any]:
        body = {"channel": "wechat_mini", "amount": amount, "description": "Test item",
                "merchant_order_no": f"T{uuid.uuid4().hex[:16]}", "payer": {"openid": "oTestOpenid0000000000000001"}}
        body.update(extra)
        r = await self.http.post("/v1/orders", headers=self.auth, json=body)
        assert r.status_code == 200, r.text
        return dict(r.json())

    async def pay(self, order: dict[str, Any]) -> None:
        r = await self.http.post("/sandbox/wechatpay/_sandbox/pay", json={"out_trade_no": order["out_trade_no"]})
        assert r.status_code == 200, r.text
        await self.rt.sandbox.wait_idle()

    async def order(self, order_id: str) -> dict[str, Any]:
        r = await self.http.get(f"/v1/orders/{order_id}", headers=self.auth)
        assert r.status_code == 200, r.text
        return dict(r.json())

    @property
    def sim(self) -> Any:
        return self.rt.sandbox.wechatpay

    async def settle(self) -> None:
        """Let the sandbox finish its notifications."""
        await self.rt.sandbox.wait_idle()

    async def add_webhook(self, events: list[str] | None = None) -> dict[str, Any]:
        r = await self.http.post("/v1/webhook_endpoints", headers=self.auth,
                                 json={"url": "http://merchant.example/hooks", "enabled_events": events or ["*"]})
        assert r.status_code == 200, r.text
        self.merchant.secrets.append(r.json()["secret"])
        return dict(r.json())

    async def count(self, table: Any) -> int:
        from sqlalchemy import func, select

        async with self.rt.db.transaction() as session:
            return int((await session.execute(select(func.count()).select_from(table))).scalar_one())

    async def run_worker(self) -> int:
        return int(await self.app.state.worker.run_once())


@pytest.fixture(scope="session")
def sandbox_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Sandbox credentials (RSA keys) are made once per session; simulator state is per test, in memory."""
    return tmp_path_factory.mktemp("sandbox")


@pytest.fixture
async def gateway(database_url: str, tmp_path: Path, sandbox_dir: Path) -> AsyncIterator[Gateway]:
    async with open_gateway(database_url, tmp_path / "data", sandbox_dir) as gw:
        yield gw


@contextlib.asynccontextmanager
async def open_gateway(database_url: str, data_dir: Path, sandbox_dir: Path, *,
                       redis_url: str | None = None) -> AsyncIterator[Gateway]:
    """An in-process gateway with its sandbox and a merchant receiver, and a first app (also used outside
    pytest, by ``python -m tests.simulation``)."""
    settings = load_settings(data_dir=data_dir, database_url=database_url, public_url="http://gateway",
                             sandbox_dir=sandbox_dir, sandbox_time_scale=0.0001, run_worker=False,
                             master_key="test-master-key-0123456789abcdef0123456789", redis_url=redis_url)
    merchant = MerchantReceiver()
    transport = RoutingTransport()
    rt = Runtime(settings, webhook_transport=transport)
    app = create_app(settings, runtime=rt)
    transport.route("gateway", app)
    transport.route("merchant.example", merchant.app)
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app, raise_app_exceptions=False),
                                     base_url="http://gateway") as http:
            gw = Gateway(app, rt, http, merchant)
            gw.app_id, gw.key = await gw.new_app()
            yield gw

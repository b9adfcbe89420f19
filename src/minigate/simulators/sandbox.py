"""All simulators in one place: :class:`Sandbox` mounts each under its prefix (DESIGN "Contract")."""

from __future__ import annotations

import contextlib
import importlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Mount, Route
from starlette.types import ASGIApp, Receive, Scope, Send

from minigate.simulators._core import Clock, CredentialStore, Deliverer, Faults, json_response

__all__ = ["PROVIDERS", "REGISTRY", "Sandbox", "credentials_for"]

#: Every simulator: its name (also its mount prefix, ``/<name>``) -> ``"module:Class"``. A simulator class is
#: built as ``Class(store, clock=..., faults=...)``, plus ``deliverer=`` when its module defines
#: ``RETRY_SCHEDULE`` (the provider's notification retry delays, in seconds). Adding a provider is one line.
REGISTRY: dict[str, str] = {
    "wechatpay": "minigate.simulators.wechatpay:WeChatPaySimulator",
    "wechat": "minigate.simulators.wechat:WeChatSimulator",
    "alipay": "minigate.simulators.alipay:AlipaySimulator",
    "jdpay": "minigate.simulators.jdpay:JDPaySimulator",
    "aliyun-sms": "minigate.simulators.aliyun_sms:AliyunSmsSimulator",
    "aliyun-kms": "minigate.simulators.aliyun_kms:AliyunKmsSimulator",
    "tencentcloud": "minigate.simulators.tencentcloud:TencentCloudSimulator",
    "yunpian": "minigate.simulators.yunpian:YunpianSimulator",
    "baidu": "minigate.simulators.baidu:BaiduSimulator",
    "unisound": "minigate.simulators.unisound:UnisoundSimulator",
    "growingio": "minigate.simulators.growingio:GrowingIOSimulator",
    "youshu": "minigate.simulators.youshu:YoushuSimulator",
    "umeng": "minigate.simulators.umeng:UmengSimulator",
}

#: the simulators that own an SMS desk (a sandbox phone): ``GET /_sandbox/messages?phone=`` merges them
SMS_SIMULATORS = ("aliyun-sms", "tencentcloud", "yunpian")

PROVIDERS = tuple(REGISTRY)


def _load(path: str) -> tuple[Any, tuple[float, ...] | None]:
    module_name, _, attr = path.partition(":")
    module = importlib.import_module(module_name)
    schedule = getattr(module, "RETRY_SCHEDULE", None)
    return getattr(module, attr), (tuple(schedule) if schedule is not None else None)


class Sandbox:
    """Every simulator, sharing one state dir (credentials), one clock and one notification client.

    ``app`` mounts each simulator under ``/<name>``; ``app_for(name)`` serves one at the root path.
    Deliveries are asyncio tasks started lazily on the running loop; ``aclose()`` cancels them.
    """

    def __init__(self, state_dir: Path, *, time_scale: float = 1.0,
                 notify_client: httpx.AsyncClient | None = None, clock: Clock | None = None) -> None:
        self.state_dir = Path(state_dir)
        self.store = CredentialStore(self.state_dir)
        self.clock = clock or Clock()
        self.deliverers: dict[str, Deliverer] = {}
        self._simulators: dict[str, Any] = {}
        self._time_scale = time_scale
        self._notify_client = notify_client
        # Simulators (and their keys) are made on first use: a mount resolves its simulator on its first request.
        self.app: ASGIApp = Starlette(
            routes=[Route("/_sandbox", self._index, methods=["GET"]),
                    Route("/_sandbox/messages", self._messages, methods=["GET"]),
                    *(Mount(f"/{name}", app=self._lazy(name)) for name in REGISTRY)],
            lifespan=self._lifespan)

    def _lazy(self, name: str) -> ASGIApp:
        async def app(scope: Scope, receive: Receive, send: Send) -> None:
            await self._get(name).app(scope, receive, send)
        return app

    def simulator(self, name: str) -> Any:
        return self._get(name)

    @property
    def wechatpay(self) -> Any:
        return self._get("wechatpay")

    @property
    def wechat(self) -> Any:
        return self._get("wechat")

    @property
    def wechatpay_deliverer(self) -> Deliverer:
        self._get("wechatpay")
        return self.deliverers["wechatpay"]

    async def wait_idle(self) -> None:
        """Until no notification or delayed settlement is in flight in any simulator (tests)."""
        for deliverer in list(self.deliverers.values()):
            await deliverer.wait_idle()

    @property
    def notify_client(self) -> httpx.AsyncClient | None:
        return self._notify_client

    @notify_client.setter
    def notify_client(self, client: httpx.AsyncClient | None) -> None:
        self._notify_client = client
        for deliverer in self.deliverers.values():
            deliverer.client = client

    @property
    def time_scale(self) -> float:
        return self._time_scale

    @time_scale.setter
    def time_scale(self, value: float) -> None:
        self._time_scale = value
        for deliverer in self.deliverers.values():
            deliverer.time_scale = value

    def app_for(self, name: str) -> ASGIApp:
        """One simulator at the root path (official SDKs post to ``/v3/...``)."""
        sim = self._get(name)
        return Starlette(routes=[Mount("", app=sim.app)], lifespan=self._lifespan)

    def credentials(self, name: str) -> dict[str, str]:
        """The merchant-side credentials for ``name`` (created on first use, kept in the state dir)."""
        return dict(self._get(name).credentials())

    async def aclose(self) -> None:
        for deliverer in list(self.deliverers.values()):
            await deliverer.aclose()

    def _get(self, name: str) -> Any:
        sim = self._simulators.get(name)
        if sim is not None:
            return sim
        if name not in REGISTRY:
            raise KeyError(f"unknown simulator {name!r}; known: {', '.join(PROVIDERS)}")
        cls, schedule = _load(REGISTRY[name])
        kwargs: dict[str, Any] = {"clock": self.clock, "faults": Faults()}
        if schedule is not None:
            kwargs["deliverer"] = self.deliverers[name] = Deliverer(
                schedule=schedule, time_scale=self._time_scale, client=self._notify_client, clock=self.clock)
        sim = self._simulators[name] = cls(self.store, **kwargs)
        return sim

    async def _index(self, request: Request) -> Response:
        return json_response({"simulators": {name: f"/{name}" for name in REGISTRY}})

    async def _messages(self, request: Request) -> Response:
        """Every SMS simulator's phone at once (the per-simulator route is ``/<name>/_sandbox/messages``)."""
        from minigate.simulators._sms import sandbox_phone

        raw = request.query_params.get("phone")
        phone = sandbox_phone(raw) if raw is not None else None
        if phone is None:
            return json_response({"code": "PARAM_ERROR", "message": "phone=<mobile number> is required"}, 400)
        found = [m for name in SMS_SIMULATORS for m in self._get(name).desk.inbox(phone)]
        found.sort(key=lambda m: m.sent_at, reverse=True)
        return json_response({"phone": phone, "messages": [m.as_json() for m in found]})

    @contextlib.asynccontextmanager
    async def _lifespan(self, app: Starlette) -> AsyncIterator[None]:
        yield
        await self.aclose()


def credentials_for(state_dir: Path, name: str) -> dict[str, str]:
    """Credentials without building the simulators' apps (the CLI's ``credentials`` command)."""
    return Sandbox(state_dir).credentials(name)

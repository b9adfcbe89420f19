"""Driving the console over HTTP without a browser: a signed-in client that sends each form with the CSRF token
of the page it came from, as a browser would."""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path
from typing import Any

import httpx

from minigate.console import users
from minigate.services.runtime import Runtime

__all__ = ["PASSWORD", "ConsoleClient", "add_user", "crawl", "csrf_of", "screenshot", "sign_in"]

PASSWORD = "correct horse battery staple"
_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')
_LINK = re.compile(r'href="(/console/[^"#]*)"')


def csrf_of(html: str) -> str:
    found = _CSRF.search(html)
    assert found, "no CSRF token on the page"
    return found.group(1)


async def add_user(rt: Runtime, email: str, role: str, password: str = PASSWORD) -> dict[str, Any]:
    return await users.create_user(rt, email=email, name=email.split("@")[0].title(), role=role, password=password)


class ConsoleClient:
    """A browser-like client: cookies kept, redirects not followed (tests look at them), forms carry the token."""

    def __init__(self, http: httpx.AsyncClient) -> None:
        self.http = http
        self.csrf = ""

    @classmethod
    def on(cls, app: Any, base_url: str = "http://gateway") -> ConsoleClient:
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        return cls(httpx.AsyncClient(transport=transport, base_url=base_url, follow_redirects=False))

    async def aclose(self) -> None:
        await self.http.aclose()

    async def sign_in(self, email: str, password: str = PASSWORD) -> httpx.Response:
        r = await self.http.post("/console/login", data={"email": email, "password": password, "next": "/console/"})
        if r.status_code == 303 and r.headers["location"] == "/console/":
            await self.get("/console/")
        return r

    async def get(self, path: str, **params: Any) -> httpx.Response:
        r = await self.http.get(path, params=params or None)
        if r.status_code == 200 and "csrf_token" in r.text:
            self.csrf = csrf_of(r.text)
        return r

    async def post(self, path: str, data: dict[str, Any] | None = None, *, csrf: str | None = None) -> httpx.Response:
        body = {**(data or {}), "csrf_token": self.csrf if csrf is None else csrf}
        return await self.http.post(path, data=body)

    async def follow(self, r: httpx.Response) -> httpx.Response:
        """The page a post/redirect/get answer leads to."""
        assert r.status_code == 303, (r.status_code, r.text[:500])
        return await self.get(r.headers["location"])


async def crawl(client: ConsoleClient, start: str = "/console/", *, limit: int = 400) -> list[tuple[str, str]]:
    """Every console page reachable by following links from ``start`` (GET only: no form is submitted), as
    ``(path, html)``; static files and sign-out left out. Pages of one list with many rows (detail links) are
    all followed, up to ``limit`` pages."""
    seen: set[str] = set()
    queue = [start]
    pages: list[tuple[str, str]] = []
    while queue and len(pages) < limit:
        path = queue.pop(0)
        if path in seen:
            continue
        seen.add(path)
        r = await client.get(path)
        assert r.status_code == 200, (path, r.status_code, r.text[:300])
        pages.append((path, r.text))
        for link in _LINK.findall(r.text):
            link = link.replace("&amp;", "&")
            if not link.startswith(("/console/static", "/console/logout")) and link not in seen:
                queue.append(link)
    return pages


# -- in the browser (Playwright's sync API) -------------------------------------------------------------------


def sign_in(page: Any, base_url: str, role: str, password: str = PASSWORD) -> None:
    """Sign in as ``<role>@shop.example`` (the users the ``live_console`` fixture seeds)."""
    page.goto(f"{base_url}/console/login")
    page.fill("input[name=email]", f"{role}@shop.example")
    page.fill("input[name=password]", password)
    page.click("button[type=submit]")
    page.wait_for_url(f"{base_url}/console/**")


def screenshot(page: Any, name: str) -> Path:
    """A full-page screenshot, kept in MINIGATE_SCREENSHOTS_DIR when set (``make screenshots`` points it at
    docs/console/), else in a temporary directory."""
    target = os.environ.get("MINIGATE_SCREENSHOTS_DIR")
    directory = Path(target) if target else Path(tempfile.gettempdir()) / "minigate-console-screenshots"
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path

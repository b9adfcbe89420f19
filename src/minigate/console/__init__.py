"""The admin console (``/console``): a thin layer of server-rendered pages over the same services as the API.

:func:`mount` adds its routes and static files to the gateway. See docs/console.md.
"""

from __future__ import annotations

from fastapi import FastAPI
from starlette.staticfiles import StaticFiles

__all__ = ["mount"]


def mount(app: FastAPI) -> None:
    # importing the page modules registers their routes
    from minigate.console.pages import PAGES
    from minigate.console.web import router, static_dir

    if not PAGES:
        raise RuntimeError("no console pages")
    app.include_router(router)
    app.mount("/console/static", StaticFiles(directory=static_dir()), name="console-static")

"""Per-app, per-mode settings of one capability, kept in ``app_settings`` as validated JSON.

Each capability declares a :class:`Section` with its pydantic model; reads are cached for a few seconds per
process (a change reaches every process within that time), writes are validated and stored without defaults, so
a later release's better default applies to apps that never chose otherwise.
"""

from __future__ import annotations

import time
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, ValidationError
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from minigate.errors import InvalidRequest
from minigate.services import audit
from minigate.services.apps import AppContext
from minigate.services.runtime import Runtime
from minigate.store.tables import AppSetting

__all__ = ["Section"]

M = TypeVar("M", bound=BaseModel)
_CACHE_SECONDS = 5.0


class Section(Generic[M]):
    def __init__(self, name: str, model: type[M], *, error_code: str, label: str) -> None:
        self.name = name
        self.model = model
        self.error_code = error_code
        self.label = label
        self._cache: dict[tuple[int, str, str], tuple[float, M]] = {}

    def _query(self, ctx: AppContext) -> Any:
        return select(AppSetting).where(AppSetting.app_id == ctx.app_id, AppSetting.mode == ctx.mode,
                                        AppSetting.section == self.name)

    async def load(self, rt: Runtime, ctx: AppContext, *, session: AsyncSession | None = None) -> M:
        """The app's settings (cached for a few seconds per process). Pass ``session`` inside a transaction."""
        key = (id(rt), ctx.app_id, ctx.mode)
        cached = self._cache.get(key)
        if cached is not None and time.monotonic() - cached[0] < _CACHE_SECONDS:
            return cached[1]
        if session is not None:
            row = (await session.execute(self._query(ctx))).scalar_one_or_none()
        else:
            async with rt.db.read() as own:
                row = (await own.execute(self._query(ctx))).scalar_one_or_none()
        settings = self.model.model_validate(row.data) if row is not None else self.model()
        self._cache[key] = (time.monotonic(), settings)
        return settings

    async def save(self, rt: Runtime, ctx: AppContext, data: dict[str, Any], *, change: str | None = None) -> M:
        """Validate and store; an ``<section>_settings.updated`` audit entry commits with it (``change``: what a
        person said they changed, e.g. "template order_paid")."""
        try:
            settings = self.model.model_validate(data)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first.get("loc", ())) or None
            raise InvalidRequest(f"invalid {self.label} settings: {first.get('msg')}", param=where,
                                 code=self.error_code) from None
        async with rt.db.transaction() as session:
            row = (await session.execute(self._query(ctx))).scalar_one_or_none()
            stored = settings.model_dump(mode="json", exclude_defaults=True)
            if row is None:
                session.add(AppSetting(app_id=ctx.app_id, mode=ctx.mode, section=self.name, data=stored,
                                       updated_at=rt.now()))
            else:
                row.data = stored
                row.updated_at = rt.now()
            await audit.record(session, rt, action=f"{self.name}_settings.updated", app_id=ctx.app_id, mode=ctx.mode,
                               target=ctx.app_id, details={"fields": sorted(stored), **({"change": change}
                                                                                       if change else {})})
        self._cache.pop((id(rt), ctx.app_id, ctx.mode), None)
        return settings

"""/v1/reconciliation_runs: the stored results of reconciliation (A-11), scoped to the key's app and mode."""

from __future__ import annotations

from datetime import date
from typing import Annotated, Any

from fastapi import APIRouter, Query
from sqlalchemy import select

from minigate.api.deps import AppDep, RuntimeDep
from minigate.errors import InvalidRequest, NotFound
from minigate.services.reconcile import report_from_rows
from minigate.store.tables import ReconciliationItem, ReconciliationRun

router = APIRouter(prefix="/v1", tags=["reconciliation"])


@router.get("/reconciliation_runs", summary="List reconciliation runs, newest bill day first (without items)")
async def list_runs(rt: RuntimeDep, ctx: AppDep,
                    date: Annotated[str | None, Query(description="bill day, YYYY-MM-DD (Beijing)")] = None,
                    provider: str | None = None,
                    limit: Annotated[int, Query(ge=1, le=100)] = 20) -> dict[str, Any]:
    query = select(ReconciliationRun).where(ReconciliationRun.app_id == ctx.app_id,
                                            ReconciliationRun.mode == ctx.mode)
    if date is not None:
        query = query.where(ReconciliationRun.bill_date == _day(date))
    if provider:
        query = query.where(ReconciliationRun.provider == provider)
    query = query.order_by(ReconciliationRun.bill_date.desc(), ReconciliationRun.provider,
                           ReconciliationRun.id).limit(limit + 1)
    async with rt.db.transaction() as session:
        rows = list((await session.execute(query)).scalars())
    return {"object": "list", "data": [report_from_rows(run, []).as_json(items=False) for run in rows[:limit]],
            "has_more": len(rows) > limit}


@router.get("/reconciliation_runs/{run_id}", summary="Retrieve a reconciliation run with its items")
async def get_run(run_id: str, rt: RuntimeDep, ctx: AppDep) -> dict[str, Any]:
    async with rt.db.transaction() as session:
        run = await session.get(ReconciliationRun, run_id)
        if run is None or run.app_id != ctx.app_id or run.mode != ctx.mode:
            raise NotFound("no such reconciliation run", code="resource_missing", details={"id": run_id})
        items = list((await session.execute(select(ReconciliationItem).where(ReconciliationItem.run_id == run.id)
                                            .order_by(ReconciliationItem.id))).scalars())
    return report_from_rows(run, items).as_json()


def _day(text: str) -> str:
    try:
        return date.fromisoformat(text).isoformat()
    except ValueError:
        raise InvalidRequest("date must be YYYY-MM-DD", param="date", code="parameter_invalid") from None

"""/v1/audit_events: the calling app's audit trail (key use, refunds, redeliveries, exports, erasures, consent)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query

from minigate.api.deps import AppDep, RuntimeDep
from minigate.services import audit
from minigate.store.tables import AuditEntry

router = APIRouter(prefix="/v1")


def _view(row: AuditEntry) -> dict[str, Any]:
    return {"id": f"aud_{row.seq}", "object": "audit_event", "seq": row.seq, "livemode": row.mode == "live",
            "action": row.action, "actor": row.actor, "target": row.target, "details": row.details or {},
            "created": int(row.at.timestamp()), "mac": row.mac}


@router.get("/audit_events", tags=["audit"], summary="The app's audit trail (newest first)")
async def list_audit_events(rt: RuntimeDep, ctx: AppDep, limit: Annotated[int, Query(ge=1, le=100)] = 20,
                            starting_after: Annotated[int | None, Query(
                                ge=1, description="the seq of the last event of the previous page")] = None,
                            action: Annotated[str | None, Query(max_length=48)] = None) -> dict[str, Any]:
    rows, more = await audit.list_entries(rt, app_id=ctx.app_id, mode=ctx.mode, limit=limit,
                                          starting_after=starting_after, action=action)
    return {"object": "list", "data": [_view(r) for r in rows], "has_more": more}

"""/v1/privacy/subjects/export and /erase: one subject request across SMS, identity, consents, analytics, orders.

The scope table asks ``identity:write``; the request itself reaches into every capability, so the key must also
hold each of their scopes (``sms:write``, ``analytics:write``, ``orders:read``) — or ``*``.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from pydantic import Field, StrictStr

from minigate.api.deps import AppDep, RuntimeDep
from minigate.api.schemas import _Body
from minigate.errors import PermissionDenied
from minigate.services import subjects
from minigate.services.apps import AppContext, grants

router = APIRouter(tags=["privacy"])

#: what a subject request touches, beyond the route's own scope
SUBJECT_SCOPES = ("sms:write", "identity:write", "analytics:write", "orders:read")


class SubjectRequest(_Body):
    phone: StrictStr | None = Field(default=None, max_length=32, description="SMS, codes, marketing consent")
    id_number: StrictStr | None = Field(default=None, max_length=18, description="identity verifications")
    subject: StrictStr | None = Field(default=None, max_length=128,
                                      description="your reference for the person (voiceprints, identity consent)")
    user_id: StrictStr | None = Field(default=None, max_length=128, description="analytics user or device id")
    openid: StrictStr | None = Field(default=None, max_length=128, description="payer of orders (kept, reported)")


def _subject(body: SubjectRequest, rt: Any, ctx: AppContext) -> subjects.Subject:
    missing = [scope for scope in SUBJECT_SCOPES if not grants(ctx.scopes, scope)]
    if missing:
        raise PermissionDenied(f"a subject request needs the scopes {', '.join(SUBJECT_SCOPES)}",
                               code="insufficient_scope", details={"scope": missing[0]})
    return subjects.resolve(rt, ctx, phone=body.phone, id_number=body.id_number, subject=body.subject,
                            user_id=body.user_id, openid=body.openid)


@router.post("/v1/privacy/subjects/export", summary="Everything held about one person, across every capability")
async def export(body: SubjectRequest, rt: RuntimeDep, ctx: AppDep) -> JSONResponse:
    data = await subjects.export(rt, ctx, _subject(body, rt, ctx))
    return JSONResponse(data, headers={"Cache-Control": "no-store"})


@router.post("/v1/privacy/subjects/erase",
             summary="Erase one person's data (person keys shredded); report what was kept and why")
async def erase(body: SubjectRequest, rt: RuntimeDep, ctx: AppDep) -> dict[str, Any]:
    return await subjects.erase(rt, ctx, _subject(body, rt, ctx))

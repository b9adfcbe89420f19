"""/v1/sms/messages, /v1/verification_codes, /v1/sms/settings, the SMS push routes, and /v1/consents — the one
consent ledger of every purpose (marketing SMS, identity, analytics)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse, Response
from pydantic import Field, StrictStr

from minigate.api.deps import AppDep, IdempotencyKeyDep, JsonObjectDep, RuntimeDep
from minigate.api.errors import error_body
from minigate.api.schemas import UnixTime, _Body
from minigate.errors import InvalidRequest, NotificationRejected, PermissionDenied
from minigate.logging import get_logger
from minigate.services import consents, otp, sms, sms_settings, subjects
from minigate.services.apps import AppContext, grants
from minigate.services.idempotency import Idem, run_idempotent
from minigate.services.idempotency import Response as IdemResponse

router = APIRouter(tags=["sms"])
log = get_logger("minigate.api.sms")


class MessageCreate(_Body):
    phone: StrictStr = Field(description="mobile number; mainland 1xxxxxxxxxx or +86…", examples=["13800138000"])
    template: StrictStr = Field(description="template name, e.g. order_shipped", examples=["order_shipped"])
    params: dict[StrictStr, StrictStr] = Field(default_factory=dict, description="template values by name")
    metadata: dict[StrictStr, StrictStr] | None = None


class CodeCreate(_Body):
    phone: StrictStr
    purpose: StrictStr = Field(description="login, register, reset_password, ...", examples=["login"])
    ip: StrictStr | None = Field(default=None, max_length=64, description="the end user's IP, for the limits")
    device_id: StrictStr | None = Field(default=None, max_length=128,
                                        description="a device or openid the user sends from, for the limits")


class CodeCheck(_Body):
    phone: StrictStr
    purpose: StrictStr
    code: StrictStr
    ip: StrictStr | None = Field(default=None, max_length=64)


Purpose = Literal["marketing_sms", "identity_id", "identity_biometric", "analytics"]
#: the identifier each purpose is filed under, and the scope (beyond sms) that changing or reading it needs
_PURPOSE_IDENTIFIER = {"marketing_sms": ("phone", "sms"), "identity_id": ("subject", "identity"),
                       "identity_biometric": ("subject", "identity"), "analytics": ("user_id", "analytics")}


class ConsentChange(_Body):
    purpose: Purpose = "marketing_sms"
    action: Literal["grant", "withdraw"]
    phone: StrictStr | None = Field(default=None, description="marketing_sms: the number")
    id_number: StrictStr | None = Field(default=None, max_length=18, description="identity_*: the ID number")
    subject: StrictStr | None = Field(default=None, max_length=128,
                                      description="identity_*: your reference for the person (instead of an ID)")
    user_id: StrictStr | None = Field(default=None, max_length=128, description="analytics: the app's user id")
    text_version: StrictStr | None = Field(default=None, max_length=32,
                                           description="version of the consent text the person agreed to")
    evidence: dict[StrictStr, StrictStr] | None = Field(default=None, description="e.g. page, channel")


def _reply(response: IdemResponse) -> JSONResponse:
    return JSONResponse(response.body, status_code=response.status)


@router.post("/v1/sms/messages", summary="Send a templated SMS (notice or marketing), with failover")
async def create_message(body: MessageCreate, request: Request, rt: RuntimeDep, ctx: AppDep,
                         idempotency_key: IdempotencyKeyDep = None) -> JSONResponse:
    async def flow(_idem: Idem) -> IdemResponse:
        message = await sms.send_message(rt, ctx, phone_raw=body.phone, template_name=body.template,
                                         params=body.params, metadata=body.metadata)
        return IdemResponse(200, sms.message_view(message))

    return _reply(await run_idempotent(rt, ctx, idempotency_key, method="POST", path=request.url.path,
                                       body=body.model_dump(mode="json"), flow=flow))


@router.get("/v1/sms/messages", summary="List SMS messages, newest first")
async def list_messages(rt: RuntimeDep, ctx: AppDep, limit: Annotated[int, Query(ge=1, le=100)] = 20,
                        starting_after: str | None = None, status: str | None = None, kind: str | None = None,
                        template: str | None = None, phone: Annotated[str | None, Query(max_length=32)] = None,
                        created_gte: UnixTime = None, created_lt: UnixTime = None) -> dict[str, Any]:
    rows, has_more = await sms.list_messages(rt, ctx, limit=limit, starting_after=starting_after, status=status,
                                             kind=kind, template=template, phone=phone, created_gte=created_gte,
                                             created_lt=created_lt)
    return {"object": "list", "data": [sms.message_view(m) for m in rows], "has_more": has_more}


@router.get("/v1/sms/messages/{message_id}", summary="Retrieve an SMS message and its delivery status")
async def get_message(message_id: str, rt: RuntimeDep, ctx: AppDep) -> dict[str, Any]:
    return sms.message_view(await sms.get_message(rt, ctx, message_id))


@router.post("/v1/verification_codes", summary="Send a 6-digit verification code (limits apply)")
async def send_code(body: CodeCreate, request: Request, rt: RuntimeDep, ctx: AppDep,
                    idempotency_key: IdempotencyKeyDep = None) -> JSONResponse:
    async def flow(_idem: Idem) -> IdemResponse:
        return IdemResponse(200, await otp.send_code(rt, ctx, phone_raw=body.phone, purpose=body.purpose,
                                                     ip=body.ip, device_id=body.device_id))

    return _reply(await run_idempotent(rt, ctx, idempotency_key, method="POST", path=request.url.path,
                                       body=body.model_dump(mode="json"), flow=flow))


@router.post("/v1/verification_codes/check", summary="Check a code: single use, 5 tries, constant time")
async def check_code(body: CodeCheck, rt: RuntimeDep, ctx: AppDep) -> dict[str, Any]:
    return await otp.check_code(rt, ctx, phone_raw=body.phone, purpose=body.purpose, code=body.code, ip=body.ip)


@router.get("/v1/sms/settings", summary="The app's SMS settings (routing, limits, templates, ...)")
async def get_settings(rt: RuntimeDep, ctx: AppDep) -> dict[str, Any]:
    settings = await sms_settings.load(rt, ctx)
    return {"object": "sms_settings", **settings.model_dump(mode="json"),
            "available_providers": await rt.sms_provider_names(ctx.app_id, ctx.mode),
            "template_names": settings.template_names()}


@router.put("/v1/sms/settings", summary="Replace the app's SMS settings (validated)")
async def put_settings(data: JsonObjectDep, rt: RuntimeDep, ctx: AppDep) -> dict[str, Any]:
    settings = await sms_settings.save(rt, ctx, data)
    return {"object": "sms_settings", **settings.model_dump(mode="json")}


def _needs(ctx: AppContext, purpose: str, access: str) -> None:
    resource = _PURPOSE_IDENTIFIER[purpose][1]
    if not grants(ctx.scopes, f"{resource}:{access}"):
        raise PermissionDenied(f"{purpose} consent needs the scope {resource}:{access}", code="insufficient_scope",
                               details={"scope": f"{resource}:{access}"})


async def _consent_subject(rt: Any, ctx: AppContext, purpose: str, *, phone: str | None, id_number: str | None,
                           subject: str | None, user_id: str | None) -> tuple[str, dict[str, str]]:
    """(the keyed hash the purpose files the person under, the identifier as shown: masked)."""
    kind = _PURPOSE_IDENTIFIER[purpose][0]
    if kind == "phone":
        if not phone:
            raise InvalidRequest(f"{purpose} consent is filed under a phone number", param="phone",
                                 code="subject_required")
        parsed = sms.parse_app_phone(phone, await sms_settings.load(rt, ctx))
        return sms.phone_hash(rt, parsed), {"phone": parsed.masked}
    if kind == "user_id":
        if not user_id:
            raise InvalidRequest(f"{purpose} consent is filed under the app's user id", param="user_id",
                                 code="subject_required")
        person = subjects.resolve(rt, ctx, user_id=user_id)
        return person.hashes["user_id"], person.masked()
    if not (id_number or subject):
        raise InvalidRequest(f"{purpose} consent is filed under an ID number or your subject reference",
                             param="subject", code="subject_required")
    person = subjects.resolve(rt, ctx, id_number=id_number, subject=None if id_number else subject)
    return person.identity_hashes[0], person.masked()


@router.post("/v1/consents", summary="Record a grant or a withdrawal of consent (marketing SMS, identity, analytics)")
async def change_consent(body: ConsentChange, rt: RuntimeDep, ctx: AppDep) -> dict[str, Any]:
    _needs(ctx, body.purpose, "write")
    subject, shown = await _consent_subject(rt, ctx, body.purpose, phone=body.phone, id_number=body.id_number,
                                            subject=body.subject, user_id=body.user_id)
    evidence = dict(body.evidence or {}) | shown
    if body.action == "grant":
        if not body.text_version:
            raise InvalidRequest("text_version is required to grant consent", param="text_version",
                                 code="text_version_required")
        row = await consents.grant(rt, ctx, subject, body.purpose, text_version=body.text_version, source="api",
                                   evidence=evidence)
    else:
        row = await consents.withdraw(rt, ctx, subject, body.purpose, source="api", evidence=evidence)
    return {"object": "consent", **shown, "granted": row.action == "grant", **consents.record_view(row)}


@router.get("/v1/consents", summary="Current consent of a person for a purpose, with its history")
async def get_consent(rt: RuntimeDep, ctx: AppDep, phone: Annotated[str | None, Query(max_length=32)] = None,
                      subject: Annotated[str | None, Query(max_length=128)] = None,
                      user_id: Annotated[str | None, Query(max_length=128)] = None,
                      purpose: Purpose | None = None) -> dict[str, Any]:
    """One purpose (named, or the one the identifier implies: a number is marketing SMS, a user id analytics);
    a subject reference without a purpose answers both identity purposes (``current`` per purpose)."""
    if purpose is None:
        purpose = "marketing_sms" if phone else "analytics" if user_id else None
    purposes = [purpose] if purpose else ["identity_id", "identity_biometric"]
    for each in purposes:
        _needs(ctx, each, "read")
    subject_hash, shown = await _consent_subject(rt, ctx, purposes[0], phone=phone, id_number=None,
                                                 subject=subject, user_id=user_id)
    rows = await consents.subject_history(rt, ctx, [subject_hash], frozenset(purposes))
    current = {each: next((r.action == "grant" for r in rows if r.purpose == each), False) for each in purposes}
    answer: dict[str, Any] = {"object": "consent", **shown, "purpose": purpose, "current": current,
                              "history": [consents.record_view(r) for r in rows]}
    if purpose:
        answer["granted"] = current[purpose]
    return answer


async def _push(kind: str, provider: str, mode: str, token: str, request: Request, rt: Any) -> Response:
    body = await request.body()
    handler = sms.handle_receipts if kind == "receipts" else sms.handle_replies
    try:
        reply = await handler(rt, provider=provider, mode=mode, token=token, headers=dict(request.headers),
                              body=body)
    except NotificationRejected as exc:
        return JSONResponse(error_body("invalid_request_error", exc.code, exc.message), status_code=exc.http_status)
    return Response(content=reply.body, status_code=reply.status_code, media_type=reply.content_type)


@router.post("/notify/sms/{provider}/{mode}/{token}/receipts", include_in_schema=False)
async def sms_receipts(provider: str, mode: str, token: str, request: Request, rt: RuntimeDep) -> Response:
    return await _push("receipts", provider, mode, token, request, rt)


@router.post("/notify/sms/{provider}/{mode}/{token}/replies", include_in_schema=False)
async def sms_replies(provider: str, mode: str, token: str, request: Request, rt: RuntimeDep) -> Response:
    return await _push("replies", provider, mode, token, request, rt)

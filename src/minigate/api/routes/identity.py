"""/v1/identity/verifications, /v1/identity/settings and the subject-rights routes."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse
from pydantic import Field, StrictInt, StrictStr

from minigate.api.deps import AppDep, IdempotencyKeyDep, JsonObjectDep, RuntimeDep
from minigate.api.schemas import _Body
from minigate.services import identity
from minigate.services.idempotency import Idem, run_idempotent
from minigate.services.idempotency import Response as IdemResponse

router = APIRouter(tags=["identity"])


class Consent(_Body):
    granted: bool = Field(description="the person agreed, separately, to this processing (PIPL art. 29)")
    text_version: StrictStr = Field(max_length=32, description="the version of the notice they agreed to")
    channel: StrictStr | None = Field(default=None, max_length=64)
    page: StrictStr | None = Field(default=None, max_length=200)
    at: StrictInt | None = Field(default=None, description="when they agreed (unix seconds)")


class VerificationCreate(_Body):
    kind: Literal["id_card", "face", "voiceprint"]
    consent: Consent
    name: StrictStr | None = Field(default=None, max_length=64)
    id_number: StrictStr | None = Field(default=None, max_length=18)
    image: StrictStr | None = Field(default=None, description="face: Base64 photo (upload providers); omit to "
                                    "start the provider's mini-program flow")
    subject: StrictStr | None = Field(default=None, max_length=128, description="voiceprint: your reference")
    action: Literal["enrol", "verify"] = "verify"
    audio: StrictStr | None = None
    sample_rate: StrictInt = 16000
    audio_format: Literal["pcm", "mp3", "opus", "adpcm"] = "pcm"
    provider: StrictStr | None = None
    metadata: dict[StrictStr, StrictStr] | None = None


def _reply(response: IdemResponse) -> JSONResponse:
    return JSONResponse(response.body, status_code=response.status)


@router.post("/v1/identity/verifications", summary="Verify a person: name + ID, face, or voiceprint")
async def create(body: VerificationCreate, request: Request, rt: RuntimeDep, ctx: AppDep,
                 idempotency_key: IdempotencyKeyDep = None) -> JSONResponse:
    data = body.model_dump(mode="json", exclude_none=True)

    async def flow(_idem: Idem) -> IdemResponse:
        return IdemResponse(200, identity.verification_view(await identity.create_verification(rt, ctx, data)))

    # the fingerprint must not keep images or audio: hash them with the rest of the request
    return _reply(await run_idempotent(rt, ctx, idempotency_key, method="POST", path=request.url.path,
                                       body=data, flow=flow))


@router.get("/v1/identity/verifications", summary="List verifications, newest first")
async def list_(rt: RuntimeDep, ctx: AppDep, limit: Annotated[int, Query(ge=1, le=100)] = 20,
                status: str | None = None, kind: str | None = None) -> dict[str, Any]:
    rows = await identity.list_verifications(rt, ctx, limit=limit, status=status, kind=kind)
    return {"object": "list", "data": [identity.verification_view(r) for r in rows], "has_more": False}


@router.get("/v1/identity/verifications/{verification_id}", summary="Retrieve a verification")
async def get(verification_id: str, rt: RuntimeDep, ctx: AppDep) -> dict[str, Any]:
    return identity.verification_view(await identity.get_verification(rt, ctx, verification_id))


@router.post("/v1/identity/verifications/{verification_id}/refresh",
             summary="Ask the provider for the verdict of a face session now")
async def refresh(verification_id: str, rt: RuntimeDep, ctx: AppDep) -> dict[str, Any]:
    return identity.verification_view(await identity.refresh_verification(rt, ctx, verification_id))


@router.get("/v1/identity/settings", summary="Identity settings: providers per kind, retention")
async def get_settings(rt: RuntimeDep, ctx: AppDep) -> dict[str, Any]:
    settings = await identity._settings(rt, ctx)
    return {"object": "identity_settings", **settings.model_dump(mode="json"),
            "available_providers": await rt.identity_provider_names(ctx.app_id, ctx.mode)}


@router.put("/v1/identity/settings", summary="Replace the identity settings")
async def put_settings(data: JsonObjectDep, rt: RuntimeDep, ctx: AppDep) -> dict[str, Any]:
    return {"object": "identity_settings", **(await identity.save_settings(rt, ctx, data)).model_dump(mode="json")}


class SubjectQuery(_Body):
    id_number: StrictStr | None = Field(default=None, max_length=18)
    subject: StrictStr | None = Field(default=None, max_length=128)


@router.post("/v1/identity/subjects/export", summary="Everything held about one person (their copy, in clear)")
async def export(body: SubjectQuery, rt: RuntimeDep, ctx: AppDep) -> JSONResponse:
    data = await identity.export_subject(rt, ctx, id_number=body.id_number, subject=body.subject)
    return JSONResponse(data, headers={"Cache-Control": "no-store"})


@router.post("/v1/identity/subjects/erase", summary="Erase one person's identity data")
async def erase(body: SubjectQuery, rt: RuntimeDep, ctx: AppDep) -> dict[str, Any]:
    return await identity.erase_subject(rt, ctx, id_number=body.id_number, subject=body.subject)

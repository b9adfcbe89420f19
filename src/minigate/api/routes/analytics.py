"""/v1/analytics: collection (publishable key), queries, payment funnel, forwarding, pulls, keys, rights."""

from __future__ import annotations

from datetime import date
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import JSONResponse

from minigate.api.deps import AppDep, JsonObjectDep, RuntimeDep
from minigate.errors import AuthenticationFailed, InvalidRequest, RateLimited
from minigate.services import analytics

router = APIRouter(tags=["analytics"])

FromDate = Annotated[date | None, Query(alias="from", description="first local (Beijing) day; default 6 days ago")]
ToDate = Annotated[date | None, Query(alias="to", description="last local day, inclusive; default today")]
Platform = Annotated[Literal["wechat", "alipay", "web", "server"] | None, Query()]
Where = Annotated[list[str] | None, Query(description="property filters, each key:value (all must hold)")]


def _range(rt: Any, start: date | None, end: date | None) -> tuple[date, date]:
    return analytics.query_range(rt.now(), start, end)


def _where(items: list[str] | None) -> dict[str, str]:
    return analytics.parse_where(items or [])


@router.post("/v1/analytics/collect", summary="Collect a batch of events from a mini-program (publishable key)",
             responses={200: {"description": "every accepted event is durably stored; refused ones are listed"}})
async def collect(request: Request, rt: RuntimeDep,
                  authorization: Annotated[str | None, Header()] = None,
                  content_encoding: Annotated[str | None, Header()] = None) -> JSONResponse:
    scheme, _, key = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not key.startswith("mg_pk_"):
        raise AuthenticationFailed("send the app's publishable key as Authorization: Bearer mg_pk_…",
                                   code="invalid_publishable_key")
    ctx = await analytics.authenticate_publishable(rt, key.strip())
    body = await request.body()
    client_ip = request.client.host if request.client else None
    try:
        answer = await analytics.collect(rt, ctx, body, content_encoding=content_encoding, client_ip=client_ip)
    except RateLimited as exc:
        retry = str((exc.details or {}).get("retry_after", 1))
        return JSONResponse({"error": {"type": "invalid_request_error", "code": exc.code, "message": exc.message,
                                       "retry_after": int(retry)}}, status_code=429,
                            headers={"Retry-After": retry})
    return JSONResponse(answer)


@router.get("/v1/analytics/active_users", summary="Distinct persons active per day, week or month")
async def active_users(rt: RuntimeDep, ctx: AppDep, start: FromDate = None, end: ToDate = None,
                       interval: Literal["day", "week", "month"] = "day", platform: Platform = None,
                       where: Where = None) -> dict[str, Any]:
    start, end = _range(rt, start, end)
    return await analytics.active_users(rt, ctx, start=start, end=end, interval=interval, platform=platform,
                                        where=_where(where))


@router.get("/v1/analytics/retention", summary="Retention cohorts by first day (or week) seen")
async def retention(rt: RuntimeDep, ctx: AppDep, start: FromDate = None, end: ToDate = None,
                    period: Literal["day", "week"] = "day", horizon: Annotated[int, Query(ge=1, le=60)] = 7,
                    platform: Platform = None, where: Where = None) -> dict[str, Any]:
    start, end = _range(rt, start, end)
    return await analytics.retention(rt, ctx, start=start, end=end, period=period, horizon=horizon,
                                     platform=platform, where=_where(where))


@router.get("/v1/analytics/funnel", summary="An ordered funnel of events within a time window")
async def funnel(rt: RuntimeDep, ctx: AppDep,
                 steps: Annotated[str, Query(description="comma-separated event names, 2 to 10")],
                 window: Annotated[int, Query(ge=1, le=90 * 86400, description="seconds from the first step")] = 86400,
                 start: FromDate = None, end: ToDate = None, platform: Platform = None,
                 where: Where = None) -> dict[str, Any]:
    start, end = _range(rt, start, end)
    return await analytics.funnel(rt, ctx, steps=[s.strip() for s in steps.split(",") if s.strip()], start=start,
                                  end=end, window_seconds=window, platform=platform, where=_where(where))


@router.get("/v1/analytics/payment_funnel",
            summary="From product view to a payment the provider verified (events joined to the ledger)")
async def payment_funnel(rt: RuntimeDep, ctx: AppDep, start: FromDate = None, end: ToDate = None,
                         window: Annotated[int | None, Query(ge=60, le=30 * 86400)] = None,
                         view_events: Annotated[str | None, Query(description="comma-separated")] = None,
                         platform: Platform = None, where: Where = None) -> dict[str, Any]:
    start, end = _range(rt, start, end)
    views = [v.strip() for v in view_events.split(",") if v.strip()] if view_events else None
    return await analytics.payment_funnel(rt, ctx, start=start, end=end, window_seconds=window, view_events=views,
                                          platform=platform, where=_where(where))


@router.get("/v1/analytics/top_events", summary="The most frequent events")
async def top_events(rt: RuntimeDep, ctx: AppDep, start: FromDate = None, end: ToDate = None,
                     limit: Annotated[int, Query(ge=1, le=200)] = 20, platform: Platform = None,
                     where: Where = None) -> dict[str, Any]:
    start, end = _range(rt, start, end)
    return await analytics.top(rt, ctx, what="events", start=start, end=end, limit=limit, platform=platform,
                               where=_where(where))


@router.get("/v1/analytics/top_pages", summary="The most viewed pages")
async def top_pages(rt: RuntimeDep, ctx: AppDep, start: FromDate = None, end: ToDate = None,
                    limit: Annotated[int, Query(ge=1, le=200)] = 20, platform: Platform = None,
                    where: Where = None) -> dict[str, Any]:
    start, end = _range(rt, start, end)
    return await analytics.top(rt, ctx, what="pages", start=start, end=end, limit=limit, platform=platform,
                               where=_where(where))


@router.get("/v1/analytics/external_metrics", summary="Numbers pulled from WeChat datacube or Umeng+")
async def external_metrics(rt: RuntimeDep, ctx: AppDep, source: str, metric: str,
                           start: FromDate = None, end: ToDate = None) -> dict[str, Any]:
    start, end = _range(rt, start, end)
    return await analytics.external_metrics(rt, ctx, source=source, metric=metric, start=start, end=end)


@router.post("/v1/analytics/pulls", summary="Pull one finished day from a source now (also backfills)")
async def create_pull(rt: RuntimeDep, ctx: AppDep, body: JsonObjectDep) -> dict[str, Any]:
    source, day = body.get("source"), body.get("date")
    if not isinstance(source, str) or not isinstance(day, str):
        raise InvalidRequest("give source and date (YYYY-MM-DD)", code="parameter_invalid")
    try:
        parsed = date.fromisoformat(day)
    except ValueError:
        raise InvalidRequest("date must be YYYY-MM-DD", param="date", code="parameter_invalid") from None
    return await analytics.request_pull(rt, ctx, source=source, day=parsed)


@router.get("/v1/analytics/pulls", summary="Pulled days and their status")
async def list_pulls(rt: RuntimeDep, ctx: AppDep) -> dict[str, Any]:
    return await analytics.list_pulls(rt, ctx)


@router.get("/v1/analytics/forwarding", summary="Forwarding destinations: how far, failures, last error")
async def forwarding(rt: RuntimeDep, ctx: AppDep) -> dict[str, Any]:
    return await analytics.forwarding_status(rt, ctx)


@router.get("/v1/analytics/settings", summary="The app's analytics settings")
async def get_settings(rt: RuntimeDep, ctx: AppDep) -> dict[str, Any]:
    return (await analytics.settings_section.load(rt, ctx)).model_dump(mode="json")


@router.put("/v1/analytics/settings", summary="Replace the app's analytics settings (validated)")
async def put_settings(rt: RuntimeDep, ctx: AppDep, body: JsonObjectDep) -> dict[str, Any]:
    return (await analytics.settings_section.save(rt, ctx, body)).model_dump(mode="json")


@router.post("/v1/analytics/publishable_keys", summary="Create a publishable key (safe to ship in a mini-program)")
async def create_key(rt: RuntimeDep, ctx: AppDep) -> dict[str, Any]:
    return await analytics.create_publishable_key(rt, ctx)


@router.get("/v1/analytics/publishable_keys", summary="The app's publishable keys")
async def list_keys(rt: RuntimeDep, ctx: AppDep) -> dict[str, Any]:
    return {"object": "list", "data": await analytics.list_publishable_keys(rt, ctx)}


@router.delete("/v1/analytics/publishable_keys/{key_id}", summary="Revoke a publishable key")
async def revoke_key(key_id: str, rt: RuntimeDep, ctx: AppDep) -> dict[str, Any]:
    return await analytics.revoke_publishable_key(rt, ctx, key_id)


@router.get("/v1/analytics/persons/{person}/events", summary="Export every event of a person (user or device id)")
async def export_person(person: str, rt: RuntimeDep, ctx: AppDep) -> dict[str, Any]:
    return await analytics.export_person(rt, ctx, person)


@router.delete("/v1/analytics/persons/{person}", summary="Erase every event of a person")
async def erase_person(person: str, rt: RuntimeDep, ctx: AppDep) -> dict[str, Any]:
    return await analytics.erase_person(rt, ctx, person)

"""Events, webhook endpoints, mini-program login, provider notifications, health and metrics."""

from __future__ import annotations

import os
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest, multiprocess
from sqlalchemy import select, text

from minigate.api.deps import AppDep, RuntimeDep
from minigate.api.schemas import AlipayLogin, WebhookEndpointCreate, WeChatLogin
from minigate.errors import InvalidRequest, NotFound
from minigate.providers import registry
from minigate.providers.wechat.login import LoginError
from minigate.services import events, notifications
from minigate.store.tables import Event

router = APIRouter()

#: WeChat login refusals that are not the caller's fault
_LOGIN_STATUS = {"busy": 503, "rate_limited": 429}


@router.get("/v1/events", tags=["events"], summary="List events, newest first")
async def list_events(rt: RuntimeDep, ctx: AppDep, type: str | None = None,
                      limit: Annotated[int, Query(ge=1, le=100)] = 20) -> dict[str, Any]:
    query = select(Event).where(Event.app_id == ctx.app_id, Event.mode == ctx.mode)
    if type:
        query = query.where(Event.type == type)
    async with rt.db.read() as session:
        rows = (await session.execute(query.order_by(Event.created_at.desc(), Event.id.desc())
                                      .limit(limit))).scalars().all()
    return {"object": "list", "data": [events.event_view(e) for e in rows], "has_more": False}


@router.get("/v1/events/{event_id}", tags=["events"], summary="Retrieve an event")
async def get_event(event_id: str, rt: RuntimeDep, ctx: AppDep) -> dict[str, Any]:
    async with rt.db.read() as session:
        row = await session.get(Event, event_id)
    if row is None or row.app_id != ctx.app_id or row.mode != ctx.mode:
        raise NotFound("no such event", code="resource_missing", details={"id": event_id})
    return events.event_view(row)


@router.post("/v1/webhook_endpoints", tags=["webhooks"], summary="Register a webhook endpoint")
async def create_webhook_endpoint(body: WebhookEndpointCreate, rt: RuntimeDep, ctx: AppDep) -> dict[str, Any]:
    return await events.create_endpoint(rt, ctx, url=body.url, enabled_events=body.enabled_events)


@router.get("/v1/webhook_endpoints", tags=["webhooks"], summary="List webhook endpoints")
async def list_webhook_endpoints(rt: RuntimeDep, ctx: AppDep) -> dict[str, Any]:
    rows = await events.list_endpoints(rt, ctx)
    return {"object": "list", "data": [events.endpoint_view(r) for r in rows], "has_more": False}


@router.get("/v1/webhook_endpoints/{endpoint_id}", tags=["webhooks"], summary="Retrieve a webhook endpoint")
async def get_webhook_endpoint(endpoint_id: str, rt: RuntimeDep, ctx: AppDep) -> dict[str, Any]:
    return events.endpoint_view(await events.get_endpoint(rt, ctx, endpoint_id))


@router.delete("/v1/webhook_endpoints/{endpoint_id}", tags=["webhooks"], summary="Disable a webhook endpoint")
async def delete_webhook_endpoint(endpoint_id: str, rt: RuntimeDep, ctx: AppDep) -> dict[str, Any]:
    await events.delete_endpoint(rt, ctx, endpoint_id)
    return {"id": endpoint_id, "object": "webhook_endpoint", "deleted": True}


@router.post("/v1/wechat/login", tags=["login"],
             summary="Exchange a wx.login() code for the user's openid (the app secret stays here)")
async def wechat_login(body: WeChatLogin, rt: RuntimeDep, ctx: AppDep) -> dict[str, Any]:
    client = await rt.wechat_login_client(ctx.app_id, ctx.mode)
    try:
        session = await client.code2session(body.code)
    except LoginError as exc:
        error = InvalidRequest(exc.message, code=exc.code, param="code")
        error.http_status = _LOGIN_STATUS.get(exc.code, 400)
        raise error from None
    return {"object": "wechat_session", "openid": session.openid, "unionid": session.unionid}


@router.post("/v1/alipay/login", tags=["login"],
             summary="Exchange a my.getAuthCode() code for the user's open_id / user_id")
async def alipay_login(body: AlipayLogin, rt: RuntimeDep, ctx: AppDep) -> dict[str, Any]:
    from minigate.providers.alipay.login import LoginError as AlipayLoginError

    client = await rt.alipay_login_client(ctx.app_id, ctx.mode)
    try:
        session = await client.oauth_token(body.code)
    except AlipayLoginError as exc:
        raise InvalidRequest(exc.message, code=exc.code, param="code") from None
    return {"object": "alipay_session", "open_id": session.open_id, "user_id": session.user_id}


@router.post("/notify/{provider}/{mode}/{app_id}", include_in_schema=False)
async def provider_notification(provider: str, mode: str, app_id: str, request: Request,
                                rt: RuntimeDep) -> Response:
    if registry.payment_spec(provider) is None:
        raise NotFound("no such notification route", code="route_not_found")
    body = await request.body()
    reply = await notifications.handle_notification(rt, provider_name=provider, mode=mode, app_id=app_id,
                                                    headers=dict(request.headers), body=body)
    return Response(content=reply.body, status_code=reply.status_code, media_type=reply.content_type)


_RETURN_PAGE = """<!DOCTYPE html><html lang="zh"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width,initial-scale=1"><title>支付已提交 · Payment submitted</title></head>
<body style="font-family:sans-serif;text-align:center;padding:3em 1em">
<h1>支付已提交</h1><p>请返回小程序查看订单状态。</p>
<h2>Payment submitted</h2><p>Return to the mini-program to see your order.</p></body></html>"""


@router.api_route("/return/{provider}/{mode}/{app_id}", methods=["GET", "POST"], include_in_schema=False)
async def cashier_return(provider: str, mode: str, app_id: str) -> Response:
    """Where a browser cashier sends the payer back. Shows a page and changes nothing: what the browser
    brings back is never trusted (B-3); the order's state comes only from verified callbacks and queries."""
    return Response(_RETURN_PAGE, media_type="text/html; charset=utf-8")


@router.get("/healthz", tags=["operations"], summary="Liveness")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz", tags=["operations"], summary="Readiness: the database answers")
async def readyz(rt: RuntimeDep) -> Response:
    try:
        async with rt.db.read() as session:
            await session.execute(text("SELECT 1"))
    except Exception:  # any database failure means "not ready"; the reason goes to the log
        return Response('{"status":"unavailable","database":"down"}', status_code=503,
                        media_type="application/json")
    return Response('{"status":"ready","database":"ok"}', media_type="application/json")


@router.get("/metrics", tags=["operations"], summary="Prometheus metrics")
async def metrics() -> Response:
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):   # serve --workers N: every process's numbers, added up
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

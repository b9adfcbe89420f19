"""/v1/orders and /v1/refunds."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse

from minigate.api.deps import AppDep, IdempotencyKeyDep, RuntimeDep
from minigate.api.schemas import OrderCreate, RefundCreate, UnixTime
from minigate.services import orders, refunds
from minigate.services.idempotency import Idem, Response, run_idempotent

router = APIRouter(prefix="/v1", tags=["orders"])


def _reply(response: Response) -> JSONResponse:
    return JSONResponse(response.body, status_code=response.status)


@router.post("/orders", summary="Create an order; returns the wx.requestPayment parameters")
async def create_order(body: OrderCreate, request: Request, rt: RuntimeDep, ctx: AppDep,
                       idempotency_key: IdempotencyKeyDep = None) -> JSONResponse:
    new = orders.NewOrder(channel=body.channel, amount=body.amount, currency=body.currency,
                          description=body.description, merchant_order_no=body.merchant_order_no,
                          payer_id=body.payer.openid, expires_in=body.expires_in, metadata=body.metadata,
                          contact_phone=body.contact_phone)

    async def flow(idem: Idem) -> Response:
        return await orders.create_order(rt, ctx, new, idem)

    # the order's first commit (before the provider call) also writes a new key: one commit less per order
    return _reply(await run_idempotent(rt, ctx, idempotency_key, method="POST", path=request.url.path,
                                       body=body.model_dump(mode="json"), flow=flow, lock_at_checkpoint=True))


@router.get("/orders", summary="List orders, newest first")
async def list_orders(rt: RuntimeDep, ctx: AppDep,
                      limit: Annotated[int, Query(ge=1, le=100)] = 20,
                      starting_after: str | None = None, status: str | None = None, channel: str | None = None,
                      merchant_order_no: str | None = None,
                      payer_openid: Annotated[str | None, Query(max_length=128)] = None,
                      created_gte: UnixTime = None, created_lt: UnixTime = None) -> dict[str, Any]:
    rows, has_more = await orders.list_orders(rt, ctx, limit=limit, starting_after=starting_after,
                                              status=status, channel=channel,
                                              merchant_order_no=merchant_order_no, payer=payer_openid,
                                              created_gte=created_gte, created_lt=created_lt)
    return {"object": "list", "data": [orders.order_view(rt, o) for o in rows], "has_more": has_more}


@router.get("/orders/{order_id}", summary="Retrieve an order")
async def get_order(order_id: str, rt: RuntimeDep, ctx: AppDep) -> dict[str, Any]:
    return orders.order_view(rt, await orders.get_order(rt, ctx, order_id))


@router.post("/orders/{order_id}/close", summary="Close an unpaid order")
async def close_order(order_id: str, request: Request, rt: RuntimeDep, ctx: AppDep,
                      idempotency_key: IdempotencyKeyDep = None) -> JSONResponse:
    async def flow(_idem: Idem) -> Response:
        return Response(200, orders.order_view(rt, await orders.close_order(rt, ctx, order_id)))

    return _reply(await run_idempotent(rt, ctx, idempotency_key, method="POST", path=request.url.path,
                                       body={}, flow=flow))


@router.post("/refunds", summary="Refund an order, fully or partly")
async def create_refund(body: RefundCreate, request: Request, rt: RuntimeDep, ctx: AppDep,
                        idempotency_key: IdempotencyKeyDep = None) -> JSONResponse:
    async def flow(idem: Idem) -> Response:
        return await refunds.create_refund(rt, ctx, order_id=body.order, amount=body.amount, reason=body.reason,
                                           metadata=body.metadata, idem=idem)

    return _reply(await run_idempotent(rt, ctx, idempotency_key, method="POST", path=request.url.path,
                                       body=body.model_dump(mode="json"), flow=flow))


@router.get("/refunds", summary="List refunds")
async def list_refunds(rt: RuntimeDep, ctx: AppDep, order: str | None = None,
                       limit: Annotated[int, Query(ge=1, le=100)] = 20) -> dict[str, Any]:
    rows = await refunds.list_refunds(rt, ctx, order_id=order, limit=limit)
    return {"object": "list", "data": [refunds.refund_view(r) for r in rows], "has_more": False}


@router.get("/refunds/{refund_id}", summary="Retrieve a refund")
async def get_refund(refund_id: str, rt: RuntimeDep, ctx: AppDep) -> dict[str, Any]:
    return refunds.refund_view(await refunds.get_refund(rt, ctx, refund_id))

"""Refund approvals: the refunds above the approval amount waiting for a second person, and the decided ones.

Anyone may look; operators and admins decide, but never on their own request (the service refuses it with 403
``approval_own_request``, and the page shows such a request as waiting for another person).
"""

from __future__ import annotations

from urllib.parse import urlencode

from fastapi import Request
from fastapi.responses import Response

from minigate.console import approvals as approval_service
from minigate.console.i18n import register
from minigate.console.pages.orders import provider_errors
from minigate.console.web import OperatorDep, ViewerDep, app_context, done, read_form, render, router, runtime

__all__: list[str] = []

STATUSES = ("pending", "approved", "rejected", "failed")
PAGE = 25

register({
    "approvals.title": ("Refund approvals", "退款审批"),
    "approvals.explain": ("Console refunds above {amount} need a second person: the requester cannot approve their "
                          "own request.", "超过 {amount} 的控制台退款需要第二人审批，申请人不能批准自己的申请。"),
    "approvals.explain_all": ("Every console refund needs a second person: the requester cannot approve their own "
                              "request.", "所有控制台退款都需要第二人审批，申请人不能批准自己的申请。"),
    "approvals.id": ("Approval", "审批单"),
    "approvals.order": ("Order", "订单"),
    "approvals.reason": ("Reason", "原因"),
    "approvals.requested_by": ("Requested by", "申请人"),
    "approvals.requested_at": ("Requested", "申请时间"),
    "approvals.decided_by": ("Decided by", "审批人"),
    "approvals.refund": ("Refund", "退款单"),
    "approvals.approve": ("Approve and refund", "批准并退款"),
    "approvals.reject": ("Reject", "拒绝"),
    "approvals.waiting": ("Waiting for another person", "等待其他同事审批"),
    "approvals.status.pending": ("Pending", "待审批"),
    "approvals.status.approved": ("Approved", "已批准"),
    "approvals.status.rejected": ("Rejected", "已拒绝"),
    "approvals.status.failed": ("Failed", "失败"),
})


@router.get("/approvals")
async def approvals_page(request: Request, op: ViewerDep, status: str = "", after: str = "",
                         focus: str = "") -> Response:
    rt = runtime(request)
    ctx = await app_context(request, op)
    status = status if status in STATUSES else ""
    rows, cursor = await approval_service.list_approvals(rt, ctx, status=status or None, limit=PAGE,
                                                         before=after.strip()[:40] or None)
    next_url = "/console/approvals?" + urlencode({"status": status, "after": cursor} if status else
                                                 {"after": cursor}) if cursor else None
    return await render(request, op, "approvals.html", approvals=rows, status=status, statuses=STATUSES,
                        next_url=next_url, focus=focus[:40], can_decide=op.can("operator"),
                        threshold=rt.settings.console_refund_approval_amount)


@router.post("/approvals/{approval_id}/approve")
async def approve(request: Request, approval_id: str, op: OperatorDep) -> Response:
    await read_form(request, op)
    ctx = await app_context(request, op)
    with provider_errors():
        row = await approval_service.approve(runtime(request), ctx, op, approval_id[:40])
    return done(f"/console/orders/{row.order_id}")


@router.post("/approvals/{approval_id}/reject")
async def reject(request: Request, approval_id: str, op: OperatorDep) -> Response:
    await read_form(request, op)
    ctx = await app_context(request, op)
    await approval_service.reject(runtime(request), ctx, op, approval_id[:40])
    return done("/console/approvals")

"""Refund approvals over HTTP (SQLite and PostgreSQL): a large console refund waits for a second person, is made
exactly once however often (or concurrently) it is approved, and can be rejected."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy import delete, func, select

from minigate.store.tables import AuditEntry, IdempotencyKey, Refund, RefundApproval
from tests.console.conftest import Console
from tests.console.support import ConsoleClient, add_user
from tests.console.test_orders import _code, _paid, _refund

LARGE = 150_000          # ¥1,500: above the default approval amount (¥1,000)


@pytest.fixture
async def approver(console: Console) -> AsyncIterator[ConsoleClient]:
    """A second operator."""
    await add_user(console.gw.rt, "approver@shop.example", "operator")
    client = ConsoleClient.on(console.gw.app)
    assert (await client.sign_in("approver@shop.example")).status_code == 303
    yield client
    await client.aclose()


async def _approvals(console: Console) -> list[RefundApproval]:
    async with console.gw.rt.db.read() as session:
        return list((await session.execute(select(RefundApproval))).scalars().all())


async def _refunds(console: Console, order_id: str) -> list[Refund]:
    async with console.gw.rt.db.read() as session:
        return list((await session.execute(select(Refund).where(Refund.order_id == order_id))).scalars().all())


async def _audit(console: Console, action: str, target: str) -> int:
    async with console.gw.rt.db.read() as session:
        return int((await session.execute(select(func.count()).select_from(AuditEntry).where(
            AuditEntry.action == action, AuditEntry.target == target))).scalar_one())


async def _requested(console: Console) -> tuple[dict[str, Any], RefundApproval]:
    order = await _paid(console, amount=LARGE)
    r, _ = await _refund(console.operator, order["id"], "1500", reason="customer left")
    assert r.status_code == 303 and r.headers["location"].startswith("/console/approvals")
    (approval,) = await _approvals(console)
    return order, approval


async def _post(client: ConsoleClient, approval_id: str, action: str) -> Any:
    await client.get("/console/approvals")
    return await client.post(f"/console/approvals/{approval_id}/{action}")


async def test_large_refund_waits_for_a_second_person(console: Console, approver: ConsoleClient) -> None:
    order = await _paid(console, amount=LARGE)
    await console.operator.get(f"/console/orders/{order['id']}")
    review = await console.operator.post(f"/console/orders/{order['id']}/refund", {"full": "1"})
    assert 'data-testid="needs-approval"' in review.text
    order, approval = await _requested(console)
    assert (approval.status, approval.amount, approval.requested_by) == ("pending", LARGE,
                                                                         console.users["operator"]["id"])
    assert await _refunds(console, order["id"]) == []
    assert await _audit(console, "refund_approval.requested", approval.id) == 1
    # the requester sees it waiting and cannot approve it
    mine = await console.operator.get("/console/approvals")
    row = mine.text.split(f'data-approval="{approval.id}"')[1].split("</tr>")[0]
    assert 'data-testid="waiting"' in row and 'data-testid="approve"' not in row
    own = await _post(console.operator, approval.id, "approve")
    assert own.status_code == 403 and _code(own) == "approval_own_request"
    assert await _refunds(console, order["id"]) == []
    # a viewer cannot either
    seen = await console.viewer.get("/console/approvals")
    assert approval.id in seen.text and 'data-testid="approve"' not in seen.text
    viewer = await _post(console.viewer, approval.id, "approve")
    assert viewer.status_code == 403 and _code(viewer) == "role_required"
    # another operator approves: one refund, made through the refund service
    theirs = await approver.get("/console/approvals")
    assert 'data-testid="approve"' in theirs.text.split(f'data-approval="{approval.id}"')[1].split("</tr>")[0]
    ok = await _post(approver, approval.id, "approve")
    assert ok.status_code == 303 and ok.headers["location"].startswith(f"/console/orders/{order['id']}")
    await console.gw.settle()
    (refund,) = await _refunds(console, order["id"])
    assert refund.amount == LARGE and refund.metadata_ == {"console_approval": approval.id}
    (decided,) = await _approvals(console)
    assert (decided.status, decided.refund_id) == ("approved", refund.id)
    assert await _audit(console, "refund_approval.approved", approval.id) == 1
    page = await approver.follow(ok)
    assert f'data-refund="{refund.id}"' in page.text and 'data-kind="approval"' in page.text
    # approving again (the admin, or the same person reloading) makes no second refund
    again = await _post(console.admin, approval.id, "approve")
    assert again.status_code == 303
    assert len(await _refunds(console, order["id"])) == 1
    assert await _audit(console, "refund_approval.approved", approval.id) == 1
    rejected = await _post(console.admin, approval.id, "reject")
    assert rejected.status_code == 409 and _code(rejected) == "approval_decided"


async def test_concurrent_approvals_make_one_refund(console: Console, approver: ConsoleClient) -> None:
    order, approval = await _requested(console)
    await approver.get("/console/approvals")
    await console.admin.get("/console/approvals")
    answers = await asyncio.gather(approver.post(f"/console/approvals/{approval.id}/approve"),
                                   console.admin.post(f"/console/approvals/{approval.id}/approve"))
    assert any(a.status_code == 303 for a in answers), [a.status_code for a in answers]
    assert all(a.status_code in (303, 409) for a in answers)
    await console.gw.settle()
    assert len(await _refunds(console, order["id"])) == 1
    assert await _audit(console, "refund_approval.approved", approval.id) == 1


async def test_an_approval_interrupted_before_its_refund_resumes_into_one_refund(console: Console,
                                                                                approver: ConsoleClient) -> None:
    order, approval = await _requested(console)
    async with console.gw.rt.db.transaction() as session:   # approved, then the process died before the refund
        row = await session.get(RefundApproval, approval.id)
        assert row is not None
        row.status, row.decided_by = "approved", console.users["admin"]["id"]
    for _ in range(2):
        r = await _post(approver, approval.id, "approve")
        assert r.status_code == 303
    (refund,) = await _refunds(console, order["id"])
    (row,) = await _approvals(console)
    assert row.refund_id == refund.id
    # the same again after the idempotency key expired: the refund made for the approval is found, not repeated
    async with console.gw.rt.db.transaction() as session:
        await session.execute(delete(IdempotencyKey))
        row = await session.get(RefundApproval, approval.id)
        assert row is not None
        row.refund_id = None
    assert (await _post(approver, approval.id, "approve")).status_code == 303
    assert [r.id for r in await _refunds(console, order["id"])] == [refund.id]
    (row,) = await _approvals(console)
    assert row.refund_id == refund.id


async def test_reject_and_a_refund_that_can_no_longer_be_made(console: Console, approver: ConsoleClient) -> None:
    order, approval = await _requested(console)
    r = await _post(approver, approval.id, "reject")
    assert r.status_code == 303
    (row,) = await _approvals(console)
    assert row.status == "rejected" and row.decided_by is not None
    assert await _audit(console, "refund_approval.rejected", approval.id) == 1
    late = await _post(console.admin, approval.id, "approve")
    assert late.status_code == 409 and _code(late) == "approval_decided"
    assert await _refunds(console, order["id"]) == []
    # a second request; meanwhile the merchant refunds the order through the API
    r, _ = await _refund(console.operator, order["id"], "1500")
    second = next(a for a in await _approvals(console) if a.status == "pending")
    api = await console.gw.http.post("/v1/refunds", headers=console.gw.auth,
                                     json={"order": order["id"], "amount": 1})
    assert api.status_code == 200, api.text
    refused = await _post(approver, second.id, "approve")
    assert refused.status_code == 400 and _code(refused) == "refund_exceeds_refundable"
    failed = next(a for a in await _approvals(console) if a.id == second.id)
    assert failed.status == "failed" and failed.error and failed.error.startswith("refund_exceeds_refundable")
    assert len(await _refunds(console, order["id"])) == 1                # only the API's
    assert await _audit(console, "refund_approval.failed", second.id) == 1


async def test_approval_amount_zero_means_every_refund(console: Console) -> None:
    rt = console.gw.rt
    rt.settings = rt.settings.model_copy(update={"console_refund_approval_amount": 0})
    order = await _paid(console, amount=100)
    r, _ = await _refund(console.operator, order["id"], "0.50")
    assert r.status_code == 303 and r.headers["location"].startswith("/console/approvals")
    assert await _refunds(console, order["id"]) == []
    page = await console.operator.follow(r)
    assert re.search(r'class="notice"[^>]*>[^<]*approval', page.text)

"""Reconciliation (A-11, invariant 6, F10): the provider's bill of a Beijing day against the ledger.

Orders are paid "now", so every test reconciles today's Beijing day (the simulators build bills on demand from
their in-memory orders). Runs on SQLite and PostgreSQL.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import typer
from sqlalchemy import select, update
from typer.testing import CliRunner

from minigate.cli.reconcile import exit_code, run_reconcile
from minigate.cli.reconcile import reconcile as reconcile_command
from minigate.providers.bases.payment import CreateOrderRequest
from minigate.services.reconcile import BEIJING, Item, Report, reconcile, reconcile_due, render_table
from minigate.store.tables import Order, PaymentException, ReconciliationItem, ReconciliationRun, Refund
from tests.conftest import Gateway
from tests.contract.drivers import DRIVERS

ALIPAY = next(d for d in DRIVERS if d.provider == "alipay")


@pytest.fixture(autouse=True)
async def not_at_midnight() -> None:
    """A payment at 23:59:59 and its reconciliation at 00:00:01 would fall on two bill days."""
    now = datetime.now(BEIJING)
    left = (datetime.combine(now.date() + timedelta(days=1), datetime.min.time(), BEIJING) - now).total_seconds()
    if left < 30:
        await asyncio.sleep(left + 1)


def today(gw: Gateway) -> date:
    return gw.rt.now().astimezone(BEIJING).date()


async def run(gw: Gateway, provider: str = "wechatpay", **kw: Any) -> Report:
    return await reconcile(gw.rt, app_id=gw.app_id, mode="test", provider=provider, bill_date=today(gw), **kw)


def by_no(report: Report) -> dict[str, Item]:
    return {item.out_trade_no: item for item in report.items}


async def exceptions(gw: Gateway) -> list[PaymentException]:
    async with gw.rt.db.transaction() as session:
        return list((await session.execute(select(PaymentException))).scalars())


async def fault(gw: Gateway, provider: str = "wechatpay", **spec: Any) -> None:
    r = await gw.http.post(f"/sandbox/{provider}/_sandbox/faults", json={"seconds": 0, **spec})
    assert r.status_code < 300, r.text


async def refund(gw: Gateway, order: dict[str, Any], amount: int) -> dict[str, Any]:
    r = await gw.http.post("/v1/refunds", headers=gw.auth, json={"order": order["id"], "amount": amount})
    assert r.status_code == 200, r.text
    await gw.settle()
    return dict(r.json())


async def test_a_normal_day_is_all_matched_and_rerunning_it_replaces_the_run(gateway: Gateway) -> None:
    paid = [await gateway.create_order(amount=a) for a in (100, 2500)]
    for order in paid:
        await gateway.pay(order)
    refunded = await gateway.create_order(amount=1000)
    await gateway.pay(refunded)
    await refund(gateway, refunded, 400)
    await gateway.create_order(amount=300)                       # unpaid: on neither side, not an item
    report = await run(gateway)
    assert report.status == "complete" and not report.needs_attention
    assert report.summary["counts"] == {"matched": 3}
    assert report.summary["bill_rows"] == 4 and report.summary["unpaid_created"] == 1
    assert {i.category for i in report.items} == {"matched"} and all(i.action is None for i in report.items)
    again = await run(gateway)
    assert again.id == report.id and again.summary["runs"] == 2
    assert await gateway.count(ReconciliationRun) == 1 and await gateway.count(ReconciliationItem) == 3
    assert await exceptions(gateway) == []
    assert "wechatpay" in render_table(again) and "matched 3" in render_table(again)


async def test_lost_notification_is_provider_only_and_repaired_by_query(gateway: Gateway) -> None:
    """F10: the callback never came; the bill shows the payment; a query through the normal path settles it."""
    await gateway.add_webhook()
    await fault(gateway, notify="drop")
    order = await gateway.create_order(amount=700)
    await gateway.pay(order)
    assert (await gateway.order(order["id"]))["status"] == "pending"
    dry = await run(gateway, repair=False)
    item = by_no(dry)[order["out_trade_no"]]
    assert (item.category, item.action, item.provider_amount) == ("provider_only", "reported", 700)
    assert (await gateway.order(order["id"]))["status"] == "pending" and await exceptions(gateway) == []
    report = await run(gateway)
    item = by_no(report)[order["out_trade_no"]]
    assert (item.category, item.action) == ("provider_only", "repaired")
    assert not report.needs_attention and report.summary["repaired"] == 1 and report.id == dry.id
    after = await gateway.order(order["id"])
    assert after["status"] == "paid" and after["provider_trade_id"]
    await gateway.run_worker()
    assert gateway.merchant.types() == ["order.paid"]
    assert await exceptions(gateway) == []
    assert by_no(await run(gateway))[order["out_trade_no"]].category == "matched"


async def test_paid_locally_but_absent_from_the_bill_is_local_only_and_queued(gateway: Gateway) -> None:
    kept, lost = await gateway.create_order(), await gateway.create_order(amount=900)
    for order in (kept, lost):
        await gateway.pay(order)
    gateway.sim.order(lost["out_trade_no"]).success_time -= 2 * 86400   # off today's bill at the provider
    report = await run(gateway)
    item = by_no(report)[lost["out_trade_no"]]
    assert (item.category, item.action, item.local_amount, item.provider_amount) == ("local_only", "reported", 900, None)
    assert by_no(report)[kept["out_trade_no"]].category == "matched"
    assert (await gateway.order(lost["id"]))["status"] == "paid"           # never changed automatically
    rows = await exceptions(gateway)
    assert [(r.kind, r.status, r.order_id) for r in rows] == [("local_only", "open", lost["id"])]
    assert rows[0].data["run"] == report.id and rows[0].data["source"] == "reconciliation"
    await run(gateway)
    assert len(await exceptions(gateway)) == 1                              # once per order and kind
    code, text = await run_reconcile(gateway.rt, bill_date=today(gateway), app_id=gateway.app_id,
                                     provider="wechatpay", json_output=False, repair=True)
    assert code == 1 and "local_only" in text and lost["out_trade_no"] in text
    listed = await gateway.http.get("/v1/payment_exceptions", headers=gateway.auth)
    assert [e["kind"] for e in listed.json()["data"]] == ["local_only"]


async def test_amount_mismatch_is_reported_never_repaired(gateway: Gateway) -> None:
    order = await gateway.create_order(amount=1000)
    await gateway.pay(order)
    async with gateway.rt.db.transaction() as session:
        await session.execute(update(Order).where(Order.id == order["id"]).values(amount=999))
    report = await run(gateway)
    item = by_no(report)[order["out_trade_no"]]
    assert (item.category, item.action, item.local_amount, item.provider_amount) == \
        ("amount_mismatch", "reported", 999, 1000)
    assert "repair" not in item.data
    async with gateway.rt.db.transaction() as session:
        assert (await session.get(Order, order["id"])).amount == 999    # type: ignore[union-attr]
    assert [r.kind for r in await exceptions(gateway)] == ["amount_mismatch"]


async def test_refund_settled_at_the_provider_but_not_here_is_repaired(gateway: Gateway) -> None:
    order = await gateway.create_order(amount=1000)
    await gateway.pay(order)
    await fault(gateway, notify="drop")                                  # the refund's callback is lost
    created = await refund(gateway, order, 300)
    assert (await gateway.http.get(f"/v1/refunds/{created['id']}", headers=gateway.auth)).json()["status"] \
        == "processing"
    report = await run(gateway)
    item = by_no(report)[order["out_trade_no"]]
    assert (item.category, item.action) == ("status_mismatch", "repaired")
    assert item.data["refunds"][0]["problem"] == "not_succeeded_locally"
    assert (await gateway.http.get(f"/v1/refunds/{created['id']}", headers=gateway.auth)).json()["status"] \
        == "succeeded"
    assert (await gateway.order(order["id"]))["status"] == "partially_refunded"
    assert by_no(await run(gateway))[order["out_trade_no"]].category == "matched"


async def test_refund_on_the_bill_unknown_here_is_reported(gateway: Gateway) -> None:
    order = await gateway.create_order(amount=1000)
    await gateway.pay(order)
    await refund(gateway, order, 200)
    async with gateway.rt.db.transaction() as session:                  # as if made in the merchant console
        await session.execute(update(Refund).values(out_refund_no="RFSOMEWHEREELSE"))
    item = by_no(await run(gateway))[order["out_trade_no"]]
    assert (item.category, item.action) == ("status_mismatch", "reported")
    assert {p["problem"] for p in item.data["refunds"]} == {"unknown_to_ledger", "not_on_bill"}
    queued = await exceptions(gateway)                                   # an unresolved difference has an owner
    assert [(e.kind, e.order_id, e.status) for e in queued] == [("status_mismatch", order["id"], "open")]
    await run(gateway)                                                   # re-running does not queue it twice
    assert len(await exceptions(gateway)) == 1


async def test_bill_row_unknown_to_the_ledger_is_provider_only_without_an_order(gateway: Gateway) -> None:
    provider = await gateway.rt.payment_provider(gateway.app_id, "test", "wechatpay")
    created = await provider.create_order(CreateOrderRequest(
        out_trade_no="OUTSIDE0001", amount=55, description="not ours", payer_id="oOutsider",
        notify_url="http://gateway/notify/wechatpay/test/nobody"))
    assert created.ok
    await gateway.pay({"out_trade_no": "OUTSIDE0001"})
    item = by_no(await run(gateway))["OUTSIDE0001"]
    assert (item.category, item.action, item.order_id) == ("provider_only", "reported", None)
    assert item.data["reason"] == "unknown_to_ledger" and await exceptions(gateway) == []


async def test_alipay_bill(gateway: Gateway) -> None:
    async def create(amount: int) -> dict[str, Any]:
        body = {"channel": "alipay_mini", "amount": amount, "description": "Alipay item",
                "merchant_order_no": f"A{uuid.uuid4().hex[:16]}", "payer": {"openid": "2088000000000001"}}
        r = await gateway.http.post("/v1/orders", headers=gateway.auth, json=body)
        assert r.status_code == 200, r.text
        return dict(r.json())

    normal, lost = await create(1200), await create(800)
    assert (await ALIPAY.pay(gateway, normal)).status_code == 200
    await refund(gateway, normal, 200)
    await gateway.run_worker()
    await fault(gateway, "alipay", notify="drop")
    assert (await ALIPAY.pay(gateway, lost)).status_code == 200
    assert (await gateway.order(lost["id"]))["status"] == "pending"
    report = await run(gateway, "alipay")
    assert report.status == "complete" and report.summary["bill_rows"] == 3
    assert by_no(report)[normal["out_trade_no"]].category == "matched"
    item = by_no(report)[lost["out_trade_no"]]
    assert (item.category, item.action) == ("provider_only", "repaired")
    assert (await gateway.order(lost["id"]))["status"] == "paid"


async def test_jdpay_has_no_bill_api(gateway: Gateway) -> None:
    r = await gateway.http.post("/v1/orders", headers=gateway.auth, json={
        "channel": "jdpay_h5", "amount": 100, "description": "JD item", "merchant_order_no": "JD1",
        "payer": {"openid": "jdPayer0001"}})
    assert r.status_code == 200, r.text
    report = await run(gateway, "jdpay")
    assert report.status == "unsupported" and "not supported" in (report.reason or "")
    assert report.items == [] and exit_code([report]) == 0
    code, text = await run_reconcile(gateway.rt, bill_date=today(gateway), app_id=None, provider="jdpay",
                                     json_output=False, repair=True)
    assert code == 0 and "unsupported" in text


async def test_bill_download_failure_is_a_failed_run(gateway: Gateway) -> None:
    order = await gateway.create_order()
    await gateway.pay(order)
    await fault(gateway, next_call="http_500", path="/v3/bill/tradebill")
    report = await run(gateway)
    assert report.status == "failed" and "ProviderUnavailable" in (report.reason or "") and report.items == []
    code, out = await run_reconcile(gateway.rt, bill_date=today(gateway), app_id=gateway.app_id, provider=None,
                                    json_output=True, repair=True)
    assert code == 0 and json.loads(out)["data"][0]["status"] == "complete"   # the fault was used up
    await fault(gateway, next_call="http_500", path="/v3/bill/tradebill")
    code, out = await run_reconcile(gateway.rt, bill_date=today(gateway), app_id=gateway.app_id, provider=None,
                                    json_output=True, repair=True)
    assert code == 2 and json.loads(out)["data"][0]["status"] == "failed"


async def test_cli_json_shape(gateway: Gateway) -> None:
    order = await gateway.create_order(amount=321)
    await gateway.pay(order)
    code, out = await run_reconcile(gateway.rt, bill_date=today(gateway), app_id=None, provider=None,
                                    json_output=True, repair=True)
    assert code == 0
    doc = json.loads(out)
    assert doc["object"] == "list" and doc["bill_date"] == today(gateway).isoformat() and doc["exit_code"] == 0
    [run_json] = doc["data"]
    assert set(run_json) == {"id", "object", "app", "livemode", "provider", "bill_date", "status", "reason",
                             "created", "ran_at", "summary", "items"}
    assert run_json["object"] == "reconciliation_run" and run_json["provider"] == "wechatpay"
    assert run_json["summary"]["counts"] == {"matched": 1} and run_json["summary"]["reported"] == 0
    assert run_json["items"] == [{"out_trade_no": order["out_trade_no"], "order": order["id"], "category": "matched",
                                  "action": None, "local_amount": 321, "provider_amount": 321,
                                  "detail": {"local_status": "paid"}}]
    code, text = await run_reconcile(gateway.rt, bill_date=None, app_id="app_missing", provider=None,
                                     json_output=False, repair=True)
    assert code == 2 and text.startswith("error:")
    code, text = await run_reconcile(gateway.rt, bill_date=None, app_id=None, provider="paypal",
                                     json_output=False, repair=True)
    assert code == 2


def test_cli_command_parses_and_exits(tmp_path: Path, sandbox_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The Typer command itself, on an empty SQLite database of its own."""
    cli = typer.Typer()
    cli.command("reconcile")(reconcile_command)
    cli.command("noop")(lambda: None)                    # more than one command: `reconcile` is a subcommand
    monkeypatch.setenv("MINIGATE_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("MINIGATE_SANDBOX_DIR", str(sandbox_dir))
    monkeypatch.delenv("MINIGATE_DATABASE_URL", raising=False)
    runner = CliRunner()
    bad = runner.invoke(cli, ["reconcile", "--date", "yesterday"])
    assert bad.exit_code == 2
    ok = runner.invoke(cli, ["reconcile", "--date", "2025-01-31", "--json"])
    assert ok.exit_code == 0, ok.output
    assert json.loads(ok.stdout) == {"object": "list", "bill_date": "2025-01-31", "exit_code": 0, "data": []}
    default = runner.invoke(cli, ["reconcile", "--no-repair"])
    assert default.exit_code == 0 and "nothing to reconcile" in default.stdout


async def test_api_lists_and_retrieves_runs_scoped_to_the_app(gateway: Gateway) -> None:
    mine = await gateway.create_order(amount=150)
    await gateway.pay(mine)
    other_app, other_key = await gateway.new_app("Other shop")
    other = {"Authorization": f"Bearer {other_key}"}
    r = await gateway.http.post("/v1/orders", headers=other, json={
        "channel": "wechat_mini", "amount": 999, "description": "theirs", "merchant_order_no": "O1",
        "payer": {"openid": "oOtherPayer000000000001"}})
    assert r.status_code == 200, r.text
    await gateway.pay(r.json())                           # same sandbox merchant: on the same bill
    report = await run(gateway)
    assert report.summary["counts"] == {"matched": 1} and report.summary["foreign_rows"] == 1
    day = today(gateway).isoformat()
    listed = (await gateway.http.get(f"/v1/reconciliation_runs?date={day}&provider=wechatpay",
                                     headers=gateway.auth)).json()
    assert [x["id"] for x in listed["data"]] == [report.id] and "items" not in listed["data"][0]
    assert listed["data"][0]["summary"]["counts"] == {"matched": 1}
    assert (await gateway.http.get("/v1/reconciliation_runs?provider=alipay", headers=gateway.auth)).json()[
        "data"] == []
    got = await gateway.http.get(f"/v1/reconciliation_runs/{report.id}", headers=gateway.auth)
    assert got.status_code == 200 and got.json()["items"][0]["out_trade_no"] == mine["out_trade_no"]
    assert got.json() == report.as_json()
    foreign = await gateway.http.get(f"/v1/reconciliation_runs/{report.id}", headers=other)
    assert foreign.status_code == 404 and foreign.json()["error"]["code"] == "resource_missing"
    assert (await gateway.http.get("/v1/reconciliation_runs", headers=other)).json()["data"] == []
    bad = await gateway.http.get("/v1/reconciliation_runs?date=31-01-2025", headers=gateway.auth)
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "date"
    theirs = await reconcile(gateway.rt, app_id=other_app, mode="test", provider="wechatpay",
                             bill_date=today(gateway))
    assert theirs.id != report.id and theirs.summary["foreign_rows"] == 1


async def test_daily_schedule_runs_yesterday_once_after_ten(gateway: Gateway) -> None:
    order = await gateway.create_order()
    await gateway.pay(order)
    day = today(gateway)
    tomorrow = day + timedelta(days=1)
    gateway.rt.now = lambda: datetime(tomorrow.year, tomorrow.month, tomorrow.day, 9, 30, tzinfo=BEIJING)
    assert await reconcile_due(gateway.rt, interval_seconds=0) == 0            # before WeChat publishes
    await fault(gateway, next_call="http_500", path="/v3/bill/tradebill")
    gateway.rt.now = lambda: datetime(tomorrow.year, tomorrow.month, tomorrow.day, 10, 5, tzinfo=BEIJING)
    assert await reconcile_due(gateway.rt, interval_seconds=0) == 1
    async with gateway.rt.db.transaction() as session:
        [stored] = (await session.execute(select(ReconciliationRun))).scalars().all()
    assert stored.status == "failed" and stored.bill_date == day.isoformat()
    assert await reconcile_due(gateway.rt, interval_seconds=0) == 0            # failed: retried after an hour
    gateway.rt.now = lambda: datetime(tomorrow.year, tomorrow.month, tomorrow.day, 11, 10, tzinfo=BEIJING)
    assert await reconcile_due(gateway.rt, interval_seconds=0) == 1
    assert await reconcile_due(gateway.rt, interval_seconds=0) == 0            # done for the day
    assert await reconcile_due(gateway.rt) == 0                                # throttled anyway
    async with gateway.rt.db.transaction() as session:
        [stored] = (await session.execute(select(ReconciliationRun))).scalars().all()
    assert stored.status == "complete" and stored.summary["counts"] == {"matched": 1}

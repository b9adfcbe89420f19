"""JD Pay simulator over httpx.ASGITransport, driven by the real JDPayProvider end to end: cashier form ->
pay -> notification (decrypted and verified by the provider) -> query -> refunds; errors, retries, faults."""

from __future__ import annotations

import asyncio
import base64
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

import httpx
import pytest
from pydantic import SecretStr
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from minigate.domain.results import Notification, NotificationKind, RefundState, StandardCode, TradeState
from minigate.errors import NotificationRejected, ProviderMisconfigured, ProviderUnavailable
from minigate.providers.bases.payment import CreateOrderRequest, RefundRequest
from minigate.providers.jdpay import crypto, schemas
from minigate.providers.jdpay.config import JDPayConfig
from minigate.providers.jdpay.provider import JDPayProvider
from minigate.simulators import Sandbox
from minigate.simulators.jdpay import RETRY_SCHEDULE, JDPaySimulator
from minigate.simulators.sandbox import credentials_for

BASE = "http://sandbox/jdpay"


@dataclass
class Receiver:
    """The merchant's notify endpoint: parses with the provider, answers ``replies`` in turn, then ack."""

    provider: JDPayProvider | None = None
    replies: list[tuple[int, str]] = field(default_factory=list)
    accepted: list[Notification] = field(default_factory=list)
    rejected: list[str] = field(default_factory=list)

    def client(self) -> httpx.AsyncClient:
        async def notify(request: Request) -> Response:
            assert self.provider is not None
            try:
                note = await self.provider.parse_notification(dict(request.headers), await request.body())
            except NotificationRejected as exc:
                self.rejected.append(exc.code)
                reply = self.provider.nack(exc.code, exc.message)
                return Response(reply.body, reply.status_code, media_type=reply.content_type)
            if self.replies:
                status, body = self.replies.pop(0)
                return Response(body, status, media_type="text/plain")
            self.accepted.append(note)
            ack = self.provider.ack()
            return Response(ack.body, ack.status_code, media_type=ack.content_type)

        app = Starlette(routes=[Route("/notify/{kind}", notify, methods=["POST"])])
        return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver")


@dataclass
class Env:
    sandbox: Sandbox
    sim: JDPaySimulator
    client: httpx.AsyncClient
    provider: JDPayProvider
    receiver: Receiver
    creds: dict[str, str]

    async def settle(self) -> None:
        async with asyncio.timeout(5):
            await self.sandbox.deliverers["jdpay"].wait_idle()

    async def open_cashier(self, out_trade_no: str, amount: int = 1690, **extra: object) -> httpx.Response:
        req = CreateOrderRequest(out_trade_no=out_trade_no, amount=amount, description="沙箱-京东商品",
                                 notify_url="http://testserver/notify/pay", payer_id="user-42",
                                 **extra)  # type: ignore[arg-type]
        checkout = await self.provider.create_order(req)
        assert checkout.value is not None
        params = checkout.value.client_params
        return await self.client.post(params["cashier_url"], data=params["fields"])  # what the web-view posts

    async def pay(self, out_trade_no: str) -> httpx.Response:
        return await self.client.post("/jdpay/_sandbox/pay", json={"out_trade_no": out_trade_no})

    async def paid(self, out_trade_no: str, amount: int = 1690) -> None:
        assert (await self.open_cashier(out_trade_no, amount)).status_code == 200
        assert (await self.pay(out_trade_no)).status_code == 200
        await self.settle()

    def refund_req(self, out_trade_no: str, out_refund_no: str, amount: int, total: int = 1690) -> RefundRequest:
        return RefundRequest(out_trade_no=out_trade_no, out_refund_no=out_refund_no, amount=amount, total=total,
                             notify_url="http://testserver/notify/refund")


def provider_config(creds: dict[str, str], **overrides: object) -> JDPayConfig:
    values: dict[str, object] = {
        "merchant": creds["merchant"], "merchant_private_key": SecretStr(creds["merchant_private_key"]),
        "jd_public_key": creds["jd_public_key"], "des_key": SecretStr(creds["des_key"]), "base_url": BASE,
        "cashier_url": BASE + "/jdpay/saveOrder"}
    return JDPayConfig(**(values | overrides))  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def state_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("sandbox")


@pytest.fixture
async def env(state_dir: Path) -> AsyncIterator[Env]:
    sandbox = Sandbox(state_dir, time_scale=0.0001)
    creds = sandbox.credentials("jdpay")
    receiver = Receiver()
    sandbox.notify_client = receiver.client()
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=sandbox.app), base_url="http://sandbox") as c:
        receiver.provider = JDPayProvider(provider_config(creds), c, clock=sandbox.clock.now)
        yield Env(sandbox, sandbox.simulator("jdpay"), c, receiver.provider, receiver, creds)
    await sandbox.aclose()
    assert sandbox.notify_client is not None
    await sandbox.notify_client.aclose()


# ---------------------------------------------------------------------------------------------- credentials
def test_credentials_are_exactly_the_four_fields_and_stable(state_dir: Path) -> None:
    creds = credentials_for(state_dir, "jdpay")
    assert set(creds) == {"merchant", "merchant_private_key", "jd_public_key", "des_key"}
    assert creds["merchant"].isdigit()
    assert creds["merchant_private_key"].startswith("-----BEGIN PRIVATE KEY-----")
    assert creds["jd_public_key"].startswith("-----BEGIN PUBLIC KEY-----")
    assert len(base64.b64decode(creds["des_key"])) == 24
    assert credentials_for(state_dir, "jdpay") == creds
    assert "jd_private_key" not in creds


def test_retry_schedule_is_a_documented_module_constant() -> None:
    assert RETRY_SCHEDULE and all(isinstance(v, int) and v > 0 for v in RETRY_SCHEDULE)


# ---------------------------------------------------------------------------------------------- lifecycle
async def test_full_lifecycle_end_to_end(env: Env) -> None:
    page = await env.open_cashier("JD-E2E-001")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert "JD-E2E-001" in page.text and "16.90" in page.text
    assert 'action="/jdpay/_sandbox/pay"' in page.text
    found = await env.provider.query_order("JD-E2E-001")
    assert found.value is not None and found.value.state is TradeState.PENDING and found.value.amount_total == 1690

    paid = await env.pay("JD-E2E-001")
    assert paid.status_code == 200 and paid.json()["notification_id"] == "0:JD-E2E-001:2"
    await env.settle()
    (note,) = env.receiver.accepted
    assert note.kind is NotificationKind.PAYMENT and note.event_id == "0:JD-E2E-001:2"
    assert note.trade is not None and note.trade.state is TradeState.PAID and note.trade.amount_total == 1690
    status = await env.provider.query_order("JD-E2E-001")
    assert status.value is not None and status.value.state is TradeState.PAID and status.value.paid_at is not None
    assert (await env.pay("JD-E2E-001")).status_code == 409
    closed = await env.provider.close_order("JD-E2E-001")
    assert not closed.ok and closed.code is StandardCode.ALREADY_PAID

    part = await env.provider.refund(env.refund_req("JD-E2E-001", "JD-E2E-001-R1", 690))
    assert part.ok and part.value is not None and part.value.state in (RefundState.PROCESSING,
                                                                         RefundState.SUCCEEDED)
    again = await env.provider.refund(env.refund_req("JD-E2E-001", "JD-E2E-001-R1", 690))
    assert again.ok and again.value is not None and again.value.out_refund_no == "JD-E2E-001-R1"
    mismatch = await env.provider.refund(env.refund_req("JD-E2E-001", "JD-E2E-001-R1", 100))
    assert mismatch.code is StandardCode.PARAMS_MISMATCH
    over = await env.provider.refund(env.refund_req("JD-E2E-001", "JD-E2E-001-R2", 1001))
    assert not over.ok and over.code is StandardCode.REFUND_NOT_ALLOWED
    rest = await env.provider.refund(env.refund_req("JD-E2E-001", "JD-E2E-001-R2", 1000))
    assert rest.ok
    await env.settle()
    refunds = [n for n in env.receiver.accepted if n.kind is NotificationKind.REFUND]
    assert sorted(n.event_id for n in refunds) == ["1:JD-E2E-001-R1:1", "1:JD-E2E-001-R2:1"]
    queried = await env.provider.query_refund("JD-E2E-001-R2", out_trade_no="JD-E2E-001")
    assert queried.value is not None and queried.value.state is RefundState.SUCCEEDED
    assert queried.value.amount == 1000 and queried.value.out_trade_no == "JD-E2E-001"
    other = await env.provider.query_refund("JD-E2E-001-R2", out_trade_no="SOMETHING-ELSE")
    assert other.code is StandardCode.NOT_FOUND
    full = await env.provider.refund(env.refund_req("JD-E2E-001", "JD-E2E-001-R3", 1))
    assert full.code is StandardCode.REFUND_NOT_ALLOWED
    listing = await env.provider._call(env.provider.build_request("/service/queryRefund",
                                                                  [("oTradeNum", "JD-E2E-001")]), "queryRefund")
    assert listing.value is not None and [r["tradeNum"] for r in listing.value["refList"]] == [
        "JD-E2E-001-R1", "JD-E2E-001-R2"]
    order = (await env.client.get("/jdpay/_sandbox/orders/JD-E2E-001")).json()
    assert order["status"] == "2" and order["refunded"] == 1690 and len(order["refunds"]) == 2


async def test_refund_is_processing_then_succeeds_after_the_delay(env: Env) -> None:
    await env.paid("JD-DELAY-01")
    resp = await env.client.post("/jdpay/_sandbox/settings", json={"refund_delay_seconds": 600})
    assert resp.json()["refund_delay_seconds"] == 600
    first = await env.provider.refund(env.refund_req("JD-DELAY-01", "JD-DELAY-01-R", 100))
    assert first.value is not None and first.value.state is RefundState.PROCESSING
    queried = await env.provider.query_refund("JD-DELAY-01-R", out_trade_no="JD-DELAY-01")
    assert queried.value is not None and queried.value.state is RefundState.PROCESSING
    await env.settle()   # the scaled delay elapses: status 1 and a refund notification
    queried = await env.provider.query_refund("JD-DELAY-01-R", out_trade_no="JD-DELAY-01")
    assert queried.value is not None and queried.value.state is RefundState.SUCCEEDED
    assert any(n.event_id == "1:JD-DELAY-01-R:1" for n in env.receiver.accepted)


async def test_refund_of_unpaid_or_unknown_trades(env: Env) -> None:
    await env.open_cashier("JD-UNPAID-1")
    unpaid = await env.provider.refund(env.refund_req("JD-UNPAID-1", "JD-UNPAID-1-R", 1))
    assert unpaid.code is StandardCode.REFUND_NOT_ALLOWED
    unknown = await env.provider.refund(env.refund_req("JD-NOPE-1", "JD-NOPE-1-R", 1))
    assert unknown.code is StandardCode.NOT_FOUND
    assert (await env.provider.query_order("JD-NOPE-1")).code is StandardCode.NOT_FOUND
    assert (await env.provider.query_refund("JD-NOPE-R", out_trade_no="JD-NOPE-1")).code is StandardCode.NOT_FOUND
    assert (await env.provider.close_order("JD-NOPE-1")).ok
    assert (await env.provider.close_order("JD-UNPAID-1")).ok


# ---------------------------------------------------------------------------------------------- cashier
async def test_cashier_refuses_bad_forms(env: Env) -> None:
    checkout = await env.provider.create_order(CreateOrderRequest(
        out_trade_no="JD-FORM-001", amount=100, description="x", notify_url="http://testserver/notify/pay",
        payer_id="u"))
    assert checkout.value is not None
    fields = checkout.value.client_params["fields"]
    url = "/jdpay/jdpay/saveOrder"
    cases = {
        "SE0001": fields | {"sign": crypto.rsa_sign(crypto.load_private_key(env.creds["merchant_private_key"]), "x")},
        "ME0001": fields | {"merchant": "999"},
        "SE0002": fields | {"amount": "00ff"},
        "PA0001": {k: v for k, v in fields.items() if k != "sign"},
    }
    for code, form in cases.items():
        page = await env.client.post(url, data=form)
        assert page.status_code == 400 and re.search(rf'id="code">{code}<', page.text), code
    # a validly signed form whose notifyUrl is plain http on a public host
    bad = await env.provider.create_order(CreateOrderRequest(
        out_trade_no="JD-FORM-002", amount=100, description="x", notify_url="http://example.com/n", payer_id="u"))
    assert bad.value is not None
    page = await env.client.post(url, data=bad.value.client_params["fields"])
    assert page.status_code == 400 and 'id="code">PA0001<' in page.text
    assert (await env.pay("JD-FORM-001")).status_code == 404   # never opened: not payable


async def test_cashier_reopen_changed_params_and_paid(env: Env) -> None:
    assert (await env.open_cashier("JD-REOPEN-1")).status_code == 200
    assert (await env.open_cashier("JD-REOPEN-1")).status_code == 200      # same order again: same cashier
    changed = await env.open_cashier("JD-REOPEN-1", amount=1)
    assert changed.status_code == 400 and 'id="code">TS0006<' in changed.text
    assert (await env.pay("JD-REOPEN-1")).status_code == 200
    paid = await env.open_cashier("JD-REOPEN-1")
    assert paid.status_code == 400 and 'id="code">TS0005<' in paid.text


async def test_pay_button_of_the_html_cashier(env: Env) -> None:
    page = await env.open_cashier("JD-BUTTON-1")
    action = re.search(r'action="([^"]+)"', page.text)
    assert action is not None
    done = await env.client.post(action.group(1), data={"out_trade_no": "JD-BUTTON-1"})
    assert done.status_code == 200 and "支付成功" in done.text
    await env.settle()
    assert [n.event_id for n in env.receiver.accepted] == ["0:JD-BUTTON-1:2"]


async def test_expired_trade_is_closed_and_not_payable(env: Env) -> None:
    expires = datetime.fromtimestamp(env.sandbox.clock.now() + 120).astimezone()
    await env.open_cashier("JD-EXPIRE-1", expires_at=expires)
    env.sandbox.clock.advance(121)
    status = await env.provider.query_order("JD-EXPIRE-1")
    assert status.value is not None and status.value.state is TradeState.CLOSED
    assert (await env.pay("JD-EXPIRE-1")).status_code == 409
    assert (await env.provider.close_order("JD-EXPIRE-1")).ok


async def test_datetime_expire_format_is_accepted(env: Env) -> None:
    provider = JDPayProvider(provider_config(env.creds, expire_time_format="datetime"), env.client,
                             clock=env.sandbox.clock.now)
    expires = datetime.fromtimestamp(env.sandbox.clock.now()).astimezone() + timedelta(minutes=5)
    checkout = await provider.create_order(CreateOrderRequest(
        out_trade_no="JD-EXPDT-1", amount=100, description="x", notify_url="http://testserver/notify/pay",
        payer_id="u", expires_at=expires))
    assert checkout.value is not None
    assert (await env.client.post(BASE + "/jdpay/saveOrder", data=checkout.value.client_params["fields"])).is_success
    trade = env.sim.order("JD-EXPDT-1")
    assert trade is not None and abs(trade.expires_at - expires.timestamp()) < 1


# ---------------------------------------------------------------------------------------------- server API errors
async def test_server_refuses_wrong_credentials(env: Env) -> None:
    wrong_des = base64.b64encode(bytes(24)).decode()
    for override, expected in (({"des_key": SecretStr(wrong_des)}, "SE0002"), ({"merchant": "1"}, "ME0001")):
        other = JDPayProvider(provider_config(env.creds, **override), env.client)
        with pytest.raises(ProviderMisconfigured) as info:
            await other.query_order("X")
        assert info.value.provider_code == expected
    from tests.providers.jdpay import OTHER_KEY, pem_private

    intruder = JDPayProvider(provider_config(env.creds, merchant_private_key=SecretStr(pem_private(OTHER_KEY))),
                             env.client)
    with pytest.raises(ProviderMisconfigured) as info:
        await intruder.query_order("X")
    assert info.value.provider_code == "SE0001"
    junk = await env.client.post("/jdpay/service/query", content=b"<html/>")
    assert schemas.parse_envelope(junk.text).code == "PA0001"
    assert (await env.client.post("/jdpay/service/nope", content=b"")).status_code == 404


# ---------------------------------------------------------------------------------------------- notifications
async def test_notification_retries_until_ok_or_success_body(env: Env) -> None:
    env.receiver.replies = [(500, "error"), (200, "fail"), (200, "")]
    await env.paid("JD-RETRY-01")
    log = (await env.client.get("/jdpay/_sandbox/notifications")).json()["data"]
    record = next(r for r in log if r["id"] == "0:JD-RETRY-01:2")
    assert record["state"] == "delivered" and record["attempts"] == 4
    assert [a["status"] for a in record["log"]] == [500, 200, 200, 200]
    assert record["log"][-1]["body"] == "ok"
    env.receiver.provider = JDPayProvider(provider_config(env.creds, notify_ack_body="SUCCESS"), env.client)
    await env.paid("JD-RETRY-02")
    log = (await env.client.get("/jdpay/_sandbox/notifications")).json()["data"]
    assert next(r for r in log if r["id"] == "0:JD-RETRY-02:2")["attempts"] == 1


async def test_retry_schedule_is_settable_and_exhaustible(env: Env) -> None:
    settings = (await env.client.get("/jdpay/_sandbox/settings")).json()
    assert settings["retry_schedule"] == list(RETRY_SCHEDULE)
    resp = await env.client.post("/jdpay/_sandbox/settings", json={"retry_schedule": [1, 2]})
    assert resp.json()["retry_schedule"] == [1.0, 2.0]
    for bad in ({"retry_schedule": "x"}, {"retry_schedule": [-1]}, {"nope": 1}, {"time_scale": -1}):
        assert (await env.client.post("/jdpay/_sandbox/settings", json=bad)).status_code == 400
    env.receiver.replies = [(503, "")] * 3
    await env.paid("JD-EXHAUST-1")
    log = (await env.client.get("/jdpay/_sandbox/notifications")).json()["data"]
    record = next(r for r in log if r["id"] == "0:JD-EXHAUST-1:2")
    assert record["state"] == "failed" and record["attempts"] == 3


async def test_notify_faults_tamper_and_probe_are_refused_then_genuine_delivered(env: Env) -> None:
    for kind, trade_no in (("tamper", "JD-TAMPER-1"), ("signtest_probe", "JD-PROBE-1")):
        assert (await env.client.post("/jdpay/_sandbox/faults", json={"notify": kind})).status_code == 200
        await env.paid(trade_no)
    assert env.receiver.rejected == ["invalid_signature", "invalid_signature"]
    assert [n.event_id for n in env.receiver.accepted] == ["0:JD-TAMPER-1:2", "0:JD-PROBE-1:2"]


@pytest.mark.parametrize("kind", ["http_500", "http_429", "timeout", "bad_signature"])
async def test_call_faults_are_unknown_outcomes(env: Env, kind: str) -> None:
    await env.open_cashier(f"JD-FAULT-{kind}")
    await env.client.post("/jdpay/_sandbox/faults", json={"next_call": kind, "path": "/service/query",
                                                          "seconds": 0.01})
    with pytest.raises(ProviderUnavailable):
        await env.provider.query_order(f"JD-FAULT-{kind}")
    assert (await env.provider.query_order(f"JD-FAULT-{kind}")).ok   # fault consumed


async def test_charged_then_timeout_refund_exists_afterwards(env: Env) -> None:
    await env.paid("JD-CHARGED-1")
    await env.client.post("/jdpay/_sandbox/faults", json={"next_call": "charged_then_timeout",
                                                          "path": "/service/refund", "seconds": 0.01})
    with pytest.raises(ProviderUnavailable):
        await env.provider.refund(env.refund_req("JD-CHARGED-1", "JD-CHARGED-1-R", 100))
    queried = await env.provider.query_refund("JD-CHARGED-1-R", out_trade_no="JD-CHARGED-1")
    assert queried.ok and queried.value is not None and queried.value.amount == 100


async def test_build_notification_forges_signed_but_wrong_callbacks(env: Env) -> None:
    await env.paid("JD-FORGE-1", amount=500)
    body, headers = env.sim.build_notification("JD-FORGE-1")
    assert headers["Content-Type"].startswith("application/xml")
    note = await env.provider.parse_notification(headers, body)
    assert note.trade is not None and note.trade.amount_total == 500
    body, headers = env.sim.build_notification("JD-FORGE-1", amount="1")
    note = await env.provider.parse_notification(headers, body)   # genuinely signed, wrong amount
    assert note.trade is not None and note.trade.amount_total == 1
    body, headers = env.sim.build_notification("JD-FORGE-1", merchant="999")
    with pytest.raises(NotificationRejected) as info:
        await env.provider.parse_notification(headers, body)
    assert info.value.code == "merchant_mismatch"
    inner = crypto.envelope_decrypt(crypto.decode_des_key(env.creds["des_key"]),
                                    schemas.parse_envelope(body.decode()).encrypt or "")
    assert inner.startswith('<?xml version="1.0" encoding="UTF-8" ?>')   # JD's declaration, with the space
    assert inner.index("<sign>") < inner.index("<amount>")               # sign mid-message, as in JD-4


async def test_control_routes(env: Env) -> None:
    assert (await env.client.get("/jdpay/_sandbox/orders/NOPE")).status_code == 404
    assert (await env.client.post("/jdpay/_sandbox/pay", json={})).status_code == 400
    assert (await env.client.post("/jdpay/_sandbox/faults", json={"next_call": "nope"})).status_code == 400
    faults = (await env.client.delete("/jdpay/_sandbox/faults")).json()
    assert faults["next_call"] == [] and faults["notify"] == []

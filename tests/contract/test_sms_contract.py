"""The SMS contract: every SMS provider client, against its simulator, behaves the same way.

send → on the phone with the exact text → found by minigate's id; the same declines for the same faults
(bad number, unknown template, wrong values, wrong key, per-number limit); a lost answer is an unknown outcome
and the message can be found when it went out; receipts (delivered and failed) parse to the same shape and
the acknowledgement stops the pushes; replies parse; malformed pushes are refused; no number in a repr.
A new SMS provider passes this file before it is registered.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from minigate.domain.results import StandardCode
from minigate.domain.sms import DEFAULT_TEMPLATES
from minigate.errors import NotificationRejected, OutcomeUnknown
from minigate.providers import registry
from minigate.providers.bases.sms import DeliveryState, SmsProvider, SmsRequest
from minigate.simulators.sandbox import SMS_SIMULATORS, Sandbox

RECEIVER = "http://receiver.test"


@dataclass
class Harness:
    name: str
    sandbox: Sandbox
    provider: SmsProvider
    config: dict[str, Any]
    pushes: list[httpx.Request]

    @property
    def sim(self) -> Any:
        return self.sandbox.simulator(self.name)

    def request(self, phone: str, template: str = "order_paid", **values: str) -> SmsRequest:
        tpl = DEFAULT_TEMPLATES[template]
        mapping = self.provider.config.template(template)  # type: ignore[attr-defined]
        assert mapping is not None, f"{self.name} maps no {template}"
        params = values or {v: f"v{i}" for i, v in enumerate(tpl.variables)}
        if template == "order_paid" and not values:
            params = {"order": "A1001", "amount": "12.34"}
        order = mapping.params or tpl.variables
        sign = self.config["sign_name"]
        return SmsRequest(message_id=f"msg_{secrets.token_hex(8)}", phone=phone, sign_name=sign,
                          template_id=mapping.id, params=tuple((n, params[n]) for n in order),
                          text=f"【{sign}】{tpl.render(params)}", sent_at=datetime.now(UTC))

    async def inbox(self, phone: str) -> list[Any]:
        return list(self.sim.desk.inbox(phone))


@pytest.fixture(params=SMS_SIMULATORS)
async def h(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Harness]:
    name = str(request.param)
    pushes: list[httpx.Request] = []
    provider_box: list[SmsProvider] = []

    def receive(req: httpx.Request) -> httpx.Response:
        pushes.append(req)
        ack = provider_box[0].receipt_ack()
        return httpx.Response(ack.status_code, content=ack.body, headers={"content-type": ack.content_type})

    sandbox = Sandbox(tmp_path, time_scale=0.0001,
                      notify_client=httpx.AsyncClient(transport=httpx.MockTransport(receive)))
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=sandbox.app), base_url="http://sandbox")
    spec = registry.sms_spec(name)
    assert spec is not None
    config = spec.sandbox(registry.SandboxContext(credentials=sandbox.credentials, base_url="http://sandbox",
                                                  browser_url="http://sandbox"))
    provider = spec.build(config, client)
    provider_box.append(provider)
    desk = sandbox.simulator(name).desk
    desk.receipt_url, desk.reply_url = f"{RECEIVER}/receipts", f"{RECEIVER}/replies"
    yield Harness(name, sandbox, provider, config, pushes)
    await sandbox.aclose()
    await client.aclose()
    assert sandbox.notify_client is not None
    await sandbox.notify_client.aclose()


async def test_send_reaches_the_phone_with_the_exact_text_and_is_found(h: Harness) -> None:
    req = h.request("+8613800138000")
    result = await h.provider.send(req)
    assert result.ok and result.value is not None and result.value.provider_message_id
    inbox = await h.inbox("+8613800138000")
    assert [m.text for m in inbox] == [req.text]
    assert inbox[0].provider_message_id == result.value.provider_message_id
    await h.sandbox.wait_idle()                      # the receipt is reported (some lookups need it)
    found = await h.provider.find(req)
    assert found.ok and found.value is not None and found.value.found
    # Alibaba's QuerySendDetails carries no BizId: a lookup may not know the provider's id, never another one
    assert found.value.provider_message_id in (None, result.value.provider_message_id)
    other = await h.provider.find(replace(req, message_id="msg_never_sent"))
    assert other.ok and other.value is not None and not other.value.found


async def test_a_number_the_provider_refuses_is_invalid_phone(h: Harness) -> None:
    result = await h.provider.send(h.request("+8610000000000"))
    assert not result.ok and result.code is StandardCode.INVALID_PHONE, result
    assert await h.inbox("+8610000000000") == []


async def test_unknown_template_and_wrong_values_are_template_rejected(h: Harness) -> None:
    req = h.request("+8613800138001")
    unknown = await h.provider.send(replace(req, template_id="999999999"))
    assert not unknown.ok and unknown.code is StandardCode.TEMPLATE_REJECTED, unknown
    short = await h.provider.send(replace(req, params=req.params[:1]))
    assert not short.ok and short.code is StandardCode.TEMPLATE_REJECTED, short
    assert await h.inbox("+8613800138001") == []


async def test_a_wrong_secret_is_auth_failed(h: Harness, tmp_path: Path) -> None:
    spec = registry.sms_spec(h.name)
    assert spec is not None
    secret_field = {"aliyun-sms": "access_key_secret", "tencentcloud": "secret_key", "yunpian": "apikey"}[h.name]
    bad = spec.build(h.config | {secret_field: "x" * len(str(h.config[secret_field]))}, h.provider.client)
    result = await bad.send(h.request("+8613800138002"))
    assert not result.ok and result.code is StandardCode.AUTH_FAILED, result


async def test_the_per_number_limit_is_rate_limited(h: Harness) -> None:
    results = [await h.provider.send(h.request("+8613800138003", "order_paid", order=f"A{i}", amount="1.00"))
               for i in range(12)]
    assert results[0].ok
    refused = [r for r in results if not r.ok]
    assert refused and all(r.code is StandardCode.RATE_LIMITED for r in refused), refused
    assert len(await h.inbox("+8613800138003")) == sum(1 for r in results if r.ok)


async def test_no_answer_is_an_unknown_outcome_and_nothing_was_sent(h: Harness) -> None:
    h.sim.faults.add({"next_call": "timeout", "seconds": 0})
    with pytest.raises(OutcomeUnknown):
        await h.provider.send(h.request("+8613800138004"))
    assert await h.inbox("+8613800138004") == []


async def test_a_lost_answer_is_unknown_and_the_message_is_then_found(h: Harness) -> None:
    req = h.request("+8613800138005")
    h.sim.faults.add({"next_call": "charged_then_timeout", "seconds": 0})
    with pytest.raises(OutcomeUnknown):
        await h.provider.send(req)
    assert len(await h.inbox("+8613800138005")) == 1
    await h.sandbox.wait_idle()
    found = await h.provider.find(req)
    assert found.ok and found.value is not None and found.value.found


async def test_receipts_parse_to_delivered_and_failed_and_the_ack_stops_them(h: Harness) -> None:
    h.sim.desk.phone_states["+8613800138007"] = "unreachable"
    ok = await h.provider.send(h.request("+8613800138006"))
    ko = await h.provider.send(h.request("+8613800138007"))
    assert ok.ok and ko.ok and ok.value is not None and ko.value is not None
    async with asyncio.timeout(10):
        await h.sandbox.wait_idle()
    receipts = [r for push in h.pushes if push.url.path == "/receipts"
                for r in h.provider.parse_receipts(dict(push.headers), push.content)]
    by_id = {r.provider_message_id: r for r in receipts}
    assert by_id[ok.value.provider_message_id].state is DeliveryState.DELIVERED
    assert by_id[ko.value.provider_message_id].state is DeliveryState.FAILED
    assert by_id[ko.value.provider_message_id].error_code
    assert len([p for p in h.pushes if p.url.path == "/receipts"]) == 2      # acknowledged: not pushed again
    log = [record for record in h.sandbox.deliverers[h.name].log if record.event_type == "sms.receipt"]
    assert {record.state for record in log} == {"delivered"}


async def test_replies_parse_and_malformed_pushes_are_refused(h: Harness) -> None:
    r = await h.provider.client.post(f"/{h.name}/_sandbox/reply", json={"phone": "13800138008", "text": "TD"})
    assert r.status_code == 200, r.text
    async with asyncio.timeout(10):
        await h.sandbox.wait_idle()
    [push] = [p for p in h.pushes if p.url.path == "/replies"]
    [reply] = h.provider.parse_replies(dict(push.headers), push.content)
    assert reply.phone == "+8613800138008" and reply.text == "TD"
    for body in (b"", b"{not json", b"\xff\xfe"):
        with pytest.raises(NotificationRejected):
            h.provider.parse_receipts({"content-type": "application/json"}, body)


def test_requests_never_show_the_number_or_the_values() -> None:
    req = SmsRequest(message_id="msg_1", phone="+8613800138009", sign_name="签名", template_id="T1",
                     params=(("code", "493021"),), text="【签名】您的验证码为493021")
    assert "13800138009" not in repr(req) and "493021" not in repr(req) and "493021" not in str(req)

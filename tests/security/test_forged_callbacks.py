"""Forged provider callbacks, for every payment provider (B-1, B-2, B-4).

Each attack is a notification that claims the order was paid: a bad signature, one signed with another key,
WeChat's SIGNTEST probe, a genuine one replayed outside the 5-minute window (WeChat: the only timestamped
scheme), an amount altered after signing or genuinely signed with another amount, another app id / merchant
id, an unknown order, no signature at all. Each gets the precise status of docs/errors.md ("Provider
callbacks"), the provider's failure answer on the wire (so the provider retries the genuine one), a
machine-readable code on the record of the attempt, and changes nothing: the order stays pending, no event,
no webhook delivery, no refund.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import json
import re
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlencode

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from sqlalchemy import func, select

from minigate.providers.jdpay import crypto as jd_crypto
from minigate.providers.wechatpay import signing as wx_signing
from minigate.store.tables import Event, InboundNotification, Order, OrderEvent, Refund, WebhookDelivery
from tests.conftest import Gateway
from tests.contract.drivers import DRIVERS, Driver
from tests.security.conftest import record

SUITE = "forged callbacks"
DRIVER = {d.provider: d for d in DRIVERS}


@functools.cache
def stranger_key() -> rsa.RSAPrivateKey:
    """An RSA key nobody configured: what an attacker signs with."""
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


Forge = Callable[[Gateway, dict[str, Any]], tuple[bytes, dict[str, str]]]


@dataclass(frozen=True)
class Attack:
    provider: str
    name: str
    forge: Forge
    code: str          # the machine-readable code recorded with the attempt
    status: int        # the HTTP status answered


# --------------------------------------------------------------------------- helpers per provider

def sim(gw: Gateway, provider: str) -> Any:
    return gw.rt.sandbox.simulator(provider)


@contextlib.contextmanager
def swapped(obj: Any, attr: str, value: Any) -> Iterator[None]:
    old = getattr(obj, attr)
    setattr(obj, attr, value)
    try:
        yield
    finally:
        setattr(obj, attr, old)


def genuine(provider: str, **overrides: Any) -> Forge:
    """A notification genuinely signed by the provider's key, claiming payment, fields overridden."""
    claim = {"alipay": {"trade_status": "TRADE_SUCCESS"}, "jdpay": {"status": "2"}}.get(provider, {})

    def forge(gw: Gateway, order: dict[str, Any]) -> tuple[bytes, dict[str, str]]:
        body, headers = sim(gw, provider).build_notification(order["out_trade_no"], **(claim | overrides))
        return bytes(body), dict(headers)
    return forge


def altered(provider: str, change: Callable[[bytes, dict[str, str], Gateway], tuple[bytes, dict[str, str]]]
            ) -> Forge:
    def forge(gw: Gateway, order: dict[str, Any]) -> tuple[bytes, dict[str, str]]:
        body, headers = genuine(provider)(gw, order)
        return change(body, headers, gw)
    return forge


def signed_by_stranger(provider: str) -> Forge:
    """Built by the simulator's own code path, but with the provider's signing key replaced by another."""
    def forge(gw: Gateway, order: dict[str, Any]) -> tuple[bytes, dict[str, str]]:
        s = sim(gw, provider)
        if provider == "wechatpay":
            serial = s._keys["public_key"][1]
            with swapped(s, "_keys", s._keys | {"public_key": (stranger_key(), serial)}):
                return genuine(provider)(gw, order)
        attr = {"alipay": "_alipay_key", "jdpay": "_jd_key"}[provider]
        with swapped(s, attr, stranger_key()):
            return genuine(provider)(gw, order)
    return forge


def for_another_apps_order(provider: str) -> Forge:
    """A genuine notification for an order of another app (same sandbox merchant), sent to this app's URL:
    for this app the order does not exist."""
    def forge(gw: Gateway, order: dict[str, Any]) -> tuple[bytes, dict[str, str]]:
        return genuine(provider)(gw, order["_other"])
    return forge


def replayed(seconds_ago: float) -> Forge:
    """A genuine WeChat notification signed ``seconds_ago`` (its signed timestamp is that old)."""
    def forge(gw: Gateway, order: dict[str, Any]) -> tuple[bytes, dict[str, str]]:
        faults = sim(gw, "wechatpay").faults
        with swapped(faults, "clock_skew_seconds", -seconds_ago):
            return genuine("wechatpay")(gw, order)
    return forge


# WeChat ---------------------------------------------------------------------

def wx_bad_signature(body: bytes, headers: dict[str, str], gw: Gateway) -> tuple[bytes, dict[str, str]]:
    sig = headers["Wechatpay-Signature"]
    return body, headers | {"Wechatpay-Signature": ("B" if sig[0] == "A" else "A") + sig[1:]}


def wx_probe(body: bytes, headers: dict[str, str], gw: Gateway) -> tuple[bytes, dict[str, str]]:
    return body, headers | {"Wechatpay-Signature": wx_signing.SIGNTEST_PREFIX + "A" * 340}


def wx_unsigned(body: bytes, headers: dict[str, str], gw: Gateway) -> tuple[bytes, dict[str, str]]:
    return body, {k: v for k, v in headers.items() if not k.startswith("Wechatpay-")}


def wx_amount_after_signing(body: bytes, headers: dict[str, str], gw: Gateway) -> tuple[bytes, dict[str, str]]:
    """The resource re-encrypted with the (leaked) APIv3 key and a smaller amount; the signature kept."""
    key = gw.rt.sandbox.credentials("wechatpay")["apiv3_key"].encode()
    event = json.loads(body)
    res = event["resource"]
    plain = json.loads(wx_signing.aes_gcm_decrypt(key, res["nonce"], res["associated_data"], res["ciphertext"]))
    plain["amount"] = {"total": 1, "payer_total": 1, "currency": "CNY", "payer_currency": "CNY"}
    res["ciphertext"] = wx_signing.aes_gcm_encrypt(key, res["nonce"], res["associated_data"],
                                                   json.dumps(plain, ensure_ascii=False))
    return json.dumps(event, separators=(",", ":"), ensure_ascii=False).encode(), headers


# Alipay ---------------------------------------------------------------------

def form_edit(edit: Callable[[dict[str, str]], None]) -> Callable[..., tuple[bytes, dict[str, str]]]:
    def change(body: bytes, headers: dict[str, str], gw: Gateway) -> tuple[bytes, dict[str, str]]:
        fields = dict(parse_qsl(body.decode(), keep_blank_values=True))
        edit(fields)
        return urlencode(fields).encode(), headers
    return change


def _flip_sign(fields: dict[str, str]) -> None:
    raw = bytearray(base64.b64decode(fields["sign"]))
    raw[10] ^= 0x01
    fields["sign"] = base64.b64encode(bytes(raw)).decode()


# JD Pay ---------------------------------------------------------------------

def jd_inner_edit(edit: Callable[[str], str]) -> Callable[..., tuple[bytes, dict[str, str]]]:
    """Open the 3DES envelope (the merchant's des_key), edit the signed XML, close it again."""
    def change(body: bytes, headers: dict[str, str], gw: Gateway) -> tuple[bytes, dict[str, str]]:
        s = sim(gw, "jdpay")
        match = re.search(rb"<encrypt>([^<]+)</encrypt>", body)
        assert match
        inner = jd_crypto.envelope_decrypt(s._des, match.group(1).decode())
        return s.envelope(edit(inner)).encode(), headers
    return change


def _jd_flip_sign(inner: str) -> str:
    start, end = inner.index("<sign>") + 6, inner.index("</sign>")
    raw = bytearray(base64.b64decode(inner[start:end]))
    raw[10] ^= 0x01
    return inner[:start] + base64.b64encode(bytes(raw)).decode() + inner[end:]


def _jd_drop_sign(inner: str) -> str:
    return re.sub(r"<sign>[^<]*</sign>", "", inner)


def _jd_amount(inner: str) -> str:
    return re.sub(r"<amount>\d+</amount>", "<amount>1</amount>", inner, count=1)


# --------------------------------------------------------------------------- the attacks

ATTACKS: list[Attack] = [
    # WeChat Pay: RSA-SHA256 over ts\nnonce\nbody\n, AES-256-GCM resource
    Attack("wechatpay", "bad_signature", altered("wechatpay", wx_bad_signature), "invalid_signature", 400),
    Attack("wechatpay", "signed_with_wrong_key", signed_by_stranger("wechatpay"), "invalid_signature", 400),
    Attack("wechatpay", "signtest_probe", altered("wechatpay", wx_probe), "signature_probe", 400),
    Attack("wechatpay", "unsigned", altered("wechatpay", wx_unsigned), "missing_signature_headers", 400),
    Attack("wechatpay", "replayed_after_window", replayed(301), "timestamp_out_of_window", 400),
    Attack("wechatpay", "replayed_much_later", replayed(86_400), "timestamp_out_of_window", 400),
    Attack("wechatpay", "amount_altered_after_signing", altered("wechatpay", wx_amount_after_signing),
           "invalid_signature", 400),
    Attack("wechatpay", "amount_signed_wrong", genuine("wechatpay", amount={
        "total": 1, "payer_total": 1, "currency": "CNY", "payer_currency": "CNY"}), "amount_mismatch", 400),
    Attack("wechatpay", "wrong_appid", genuine("wechatpay", appid="wx0000000000000000"), "app_mismatch", 400),
    Attack("wechatpay", "wrong_mchid", genuine("wechatpay", mchid="1900000000"), "merchant_mismatch", 400),
    Attack("wechatpay", "unknown_order", for_another_apps_order("wechatpay"), "unknown_order", 404),
    # Alipay: RSA2 over the sorted form parameters
    Attack("alipay", "bad_signature", altered("alipay", form_edit(_flip_sign)), "invalid_signature", 400),
    Attack("alipay", "signed_with_wrong_key", signed_by_stranger("alipay"), "invalid_signature", 400),
    Attack("alipay", "unsigned", altered("alipay", form_edit(lambda f: f.pop("sign"))), "missing_signature", 400),
    Attack("alipay", "amount_altered_after_signing",
           altered("alipay", form_edit(lambda f: f.update(total_amount="0.01"))), "invalid_signature", 400),
    Attack("alipay", "amount_signed_wrong", genuine("alipay", total_amount="0.01"), "amount_mismatch", 400),
    Attack("alipay", "wrong_app_id", genuine("alipay", app_id="2021000000000000"), "app_mismatch", 400),
    Attack("alipay", "wrong_seller_id", genuine("alipay", seller_id="2088000000000000"), "merchant_mismatch", 400),
    Attack("alipay", "unknown_order", for_another_apps_order("alipay"), "unknown_order", 404),
    # JD Pay: RSA over the SHA-256 of the XML, inside a 3DES envelope
    Attack("jdpay", "bad_signature", altered("jdpay", jd_inner_edit(_jd_flip_sign)), "invalid_signature", 400),
    Attack("jdpay", "signed_with_wrong_key", signed_by_stranger("jdpay"), "invalid_signature", 400),
    Attack("jdpay", "unsigned", altered("jdpay", jd_inner_edit(_jd_drop_sign)), "invalid_signature", 400),
    Attack("jdpay", "amount_altered_after_signing", altered("jdpay", jd_inner_edit(_jd_amount)),
           "invalid_signature", 400),
    Attack("jdpay", "amount_signed_wrong", genuine("jdpay", amount="1"), "amount_mismatch", 400),
    Attack("jdpay", "wrong_merchant", genuine("jdpay", merchant="22294531"), "merchant_mismatch", 400),
    Attack("jdpay", "unknown_order", for_another_apps_order("jdpay"), "unknown_order", 404),
]
# Alipay and JD Pay callbacks carry no timestamp checked against a window: their notify_time / tradeTime are
# signed, but the providers resend the same message for a day, so a replay of a genuine message is handled by
# deduplication (tests/contract: duplicates change state once), not by a window.

#: the failure answer each provider's protocol expects (anything but it is retried by the provider)
WIRE_FAILURE = {"wechatpay": lambda r: r.json()["code"] == "FAIL",
                "alipay": lambda r: r.text == "fail",
                "jdpay": lambda r: r.text == "fail"}


async def create(gw: Gateway, driver: Driver, amount: int = 1500) -> dict[str, Any]:
    body = {"channel": driver.channel, "amount": amount, "description": "Forgery target",
            "merchant_order_no": f"F{uuid.uuid4().hex[:16]}", "payer": {"openid": "oForgeryPayer00000001"}}
    r = await gw.http.post("/v1/orders", headers=gw.auth, json=body)
    assert r.status_code == 200, r.text
    order = dict(r.json())
    await driver.open_cashier(gw, order)
    return order


async def snapshot(gw: Gateway) -> dict[str, Any]:
    async with gw.rt.db.read() as session:
        def count(table: Any) -> Any:
            return session.execute(select(func.count()).select_from(table))
        orders = (await session.execute(select(Order.id, Order.status, Order.amount_refunded,
                                               Order.provider_trade_id).order_by(Order.id))).all()
        return {"orders": [tuple(o) for o in orders],
                "events": (await count(Event)).scalar_one(),
                "deliveries": (await count(WebhookDelivery)).scalar_one(),
                "refunds": (await count(Refund)).scalar_one(),
                "order_events": (await session.execute(select(OrderEvent.type))).scalars().all()}


@pytest.mark.parametrize("attack", ATTACKS, ids=[f"{a.provider}-{a.name}" for a in ATTACKS])
async def test_forged_callback_is_refused_and_changes_nothing(gateway: Gateway, attack: Attack) -> None:
    record(SUITE)
    driver = DRIVER[attack.provider]
    await gateway.add_webhook()
    order = await create(gateway, driver)
    if attack.name == "unknown_order":
        other = Gateway(gateway.app, gateway.rt, gateway.http, gateway.merchant)
        other.app_id, other.key = await gateway.new_app("Other shop")
        order["_other"] = await create(other, driver)
    before = await snapshot(gateway)
    body, headers = attack.forge(gateway, order)

    r = await gateway.http.post(f"/notify/{attack.provider}/test/{gateway.app_id}", content=body, headers=headers)

    assert r.status_code == attack.status, (r.status_code, r.text)
    assert WIRE_FAILURE[attack.provider](r), r.text
    async with gateway.rt.db.read() as session:
        rows = (await session.execute(select(InboundNotification))).scalars().all()
    assert [(row.outcome, row.error_code) for row in rows] == [("rejected", attack.code)]
    assert rows[0].body == body                      # the raw bytes are kept for the investigation
    after = await snapshot(gateway)
    alerts = [t for t in after["order_events"] if t not in before["order_events"]]
    if attack.code == "amount_mismatch":
        # the only trace on the order: the alert of a signed callback that does not match it (B-2), raised as a
        # payment exception for a person to look at
        assert sorted(alerts) == ["exception.amount_mismatch", "notification.amount_mismatch"]
        r = await gateway.http.get("/v1/payment_exceptions", headers=gateway.auth)
        assert [(e["kind"], e["order"]) for e in r.json()["data"]] == [("amount_mismatch", order["id"])], r.text
    else:
        assert alerts == []
    after["order_events"] = before["order_events"]
    assert after == before
    assert (await gateway.order(order["id"]))["status"] == "pending"
    await gateway.run_worker()
    assert gateway.merchant.types() == []


async def test_every_payment_provider_is_attacked() -> None:
    """A new payment provider (a new contract driver) must come with its forged-callback cases."""
    from minigate.providers import registry

    attacked = {a.provider for a in ATTACKS}
    assert attacked == set(DRIVER)
    payment = {name for name in attacked if registry.payment_spec(name) is not None}
    assert payment == attacked


@pytest.mark.parametrize("provider", sorted(DRIVER))
async def test_control_the_unaltered_forgery_base_is_accepted(gateway: Gateway, provider: str) -> None:
    """The messages the attacks start from are genuine: unaltered, the same one pays the order. So each refusal
    above is due to its one alteration."""
    order = await create(gateway, DRIVER[provider])
    body, headers = genuine(provider)(gateway, order)
    r = await gateway.http.post(f"/notify/{provider}/test/{gateway.app_id}", content=body, headers=headers)
    assert r.status_code in (200, 204), r.text
    assert (await gateway.order(order["id"]))["status"] == "paid"

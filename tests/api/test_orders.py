"""Orders through the public API: creation, validation, auth, scoping, listing, closing."""

from __future__ import annotations

import asyncio
import base64
import json
import uuid
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding

from minigate.store.tables import IdempotencyKey, Order
from tests.conftest import Gateway


def order_body(**extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"channel": "wechat_mini", "amount": 100, "description": "Test item",
                            "merchant_order_no": f"T{uuid.uuid4().hex[:16]}", "payer": {"openid": "oPayer000000001"}}
    body.update(extra)
    return body


async def test_create_returns_verifiable_request_payment_params(gateway: Gateway) -> None:
    openid = await gateway.login("bob")
    order = await gateway.create_order(amount=1999, payer={"openid": openid})
    params = order["pay_params"]
    assert order["status"] == "pending" and order["amount"] == 1999 and order["currency"] == "CNY"
    assert params["signType"] == "RSA" and params["package"].startswith("prepay_id=wx")
    assert set(params) == {"timeStamp", "nonceStr", "package", "signType", "paySign"}
    creds = gateway.rt.sandbox.credentials("wechatpay")
    key = serialization.load_pem_private_key(creds["merchant_private_key"].encode(), password=None)
    message = f"{creds['appid']}\n{params['timeStamp']}\n{params['nonceStr']}\n{params['package']}\n".encode()
    key.public_key().verify(base64.b64decode(params["paySign"]), message, padding.PKCS1v15(),  # type: ignore[union-attr,call-arg]
                            hashes.SHA256())
    # the openid is personal data: masked on output, sealed at rest
    assert order["payer"]["openid"] != openid and order["payer"]["openid"].startswith(openid[:3])
    sim_order = gateway.sim.order(order["out_trade_no"])
    assert sim_order is not None and sim_order.total == 1999


@pytest.mark.parametrize(("body", "code", "param"), [
    ({"amount": 0}, "amount_invalid", "amount"),
    ({"amount": -5}, "amount_invalid", "amount"),
    ({"amount": 10_000_000_001}, "amount_invalid", "amount"),
    ({"amount": "100"}, "parameter_invalid", "amount"),
    ({"amount": 1.5}, "parameter_invalid", "amount"),
    ({"channel": "paypal"}, "unknown_channel", "channel"),
    ({"currency": "USD"}, "currency_unsupported", "currency"),
    ({"description": ""}, "invalid_request", "description"),
    ({"description": "x" * 128}, "invalid_request", "description"),
    ({"merchant_order_no": "has space"}, "invalid_request", "merchant_order_no"),
    ({"payer": {}}, "parameter_invalid", "payer.openid"),
    ({"expires_in": 10}, "invalid_request", "expires_in"),
    ({"unexpected": 1}, "parameter_invalid", "unexpected"),
])
async def test_bad_input_gets_a_precise_error_and_changes_nothing(gateway: Gateway, body: dict[str, Any],
                                                                  code: str, param: str) -> None:
    r = await gateway.http.post("/v1/orders", headers=gateway.auth | {"Idempotency-Key": "k-bad-input"},
                                json=order_body(**body))
    assert r.status_code == 400, r.text
    assert r.json()["error"]["code"] == code
    assert r.json()["error"]["param"] == param
    assert await gateway.count(Order) == 0
    assert await gateway.count(IdempotencyKey) == 0   # a refused request saves nothing


async def test_malformed_json_and_missing_body(gateway: Gateway) -> None:
    r = await gateway.http.post("/v1/orders", headers=gateway.auth | {"Content-Type": "application/json"},
                                content=b'{"amount": 1,')
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_json"
    r = await gateway.http.post("/v1/orders", headers=gateway.auth)
    assert r.status_code == 400
    assert await gateway.count(Order) == 0


@pytest.mark.parametrize(("header", "code"), [
    (None, "missing_api_key"),
    ("Bearer mg_test_wrong", "invalid_api_key"),
    ("Basic abc", "invalid_api_key"),
    ("Bearer sk_test_123", "invalid_api_key"),
])
async def test_authentication_failures(gateway: Gateway, header: str | None, code: str) -> None:
    headers = {"Authorization": header} if header else {}
    r = await gateway.http.post("/v1/orders", headers=headers, json=order_body())
    assert r.status_code == 401 and r.json()["error"]["code"] == code
    assert await gateway.count(Order) == 0


async def test_live_key_refused_while_gateway_is_in_test_mode(gateway: Gateway) -> None:
    from minigate.services.apps import create_app

    created = await create_app(gateway.rt, name="other")
    r = await gateway.http.get("/v1/orders", headers={"Authorization": f"Bearer {created.live_key}"})
    assert r.status_code == 401 and r.json()["error"]["code"] == "live_mode_disabled"


async def test_another_apps_order_is_not_found(gateway: Gateway) -> None:
    order = await gateway.create_order()
    _, other_key = await gateway.new_app("Other shop")
    other = {"Authorization": f"Bearer {other_key}"}
    for method, path, body in [("GET", f"/v1/orders/{order['id']}", None),
                               ("POST", f"/v1/orders/{order['id']}/close", None),
                               ("POST", "/v1/refunds", {"order": order["id"]})]:
        r = await gateway.http.request(method, path, headers=other, json=body)
        assert r.status_code == 404, (path, r.text)
        assert r.json()["error"]["code"] == "resource_missing"
    listed = (await gateway.http.get("/v1/orders", headers=other)).json()
    assert listed["data"] == []
    assert (await gateway.order(order["id"]))["status"] == "pending"


async def test_idempotency_replays_first_response(gateway: Gateway) -> None:
    body = order_body()
    headers = gateway.auth | {"Idempotency-Key": "same-key-0001"}
    first = await gateway.http.post("/v1/orders", headers=headers, json=body)
    second = await gateway.http.post("/v1/orders", headers=headers, json=body)
    assert first.status_code == second.status_code == 200
    assert first.json() == second.json()
    assert await gateway.count(Order) == 1
    other = await gateway.http.post("/v1/orders", headers=headers, json=body | {"amount": 101})
    assert other.status_code == 422 and other.json()["error"]["code"] == "idempotency_key_reused"
    assert await gateway.count(Order) == 1


async def test_idempotency_concurrent_same_key_executes_once(gateway: Gateway) -> None:
    body = order_body()
    headers = gateway.auth | {"Idempotency-Key": "concurrent-key-01"}
    results = await asyncio.gather(*(gateway.http.post("/v1/orders", headers=headers, json=body)
                                     for _ in range(8)))
    statuses = sorted(r.status_code for r in results)
    assert set(statuses) <= {200, 409}
    assert 200 in statuses
    for r in results:
        if r.status_code == 409:
            assert r.json()["error"]["code"] == "idempotency_key_in_use"
    ids = {r.json()["id"] for r in results if r.status_code == 200}
    assert len(ids) == 1
    assert await gateway.count(Order) == 1


async def test_duplicate_merchant_order_no_is_a_conflict(gateway: Gateway) -> None:
    body = order_body()
    assert (await gateway.http.post("/v1/orders", headers=gateway.auth, json=body)).status_code == 200
    r = await gateway.http.post("/v1/orders", headers=gateway.auth, json=body | {"amount": 5})
    assert r.status_code == 409 and r.json()["error"]["code"] == "order_exists"
    assert await gateway.count(Order) == 1


async def test_list_paginates_and_filters(gateway: Gateway) -> None:
    made = [await gateway.create_order(amount=100 + i) for i in range(5)]
    await gateway.create_order(payer={"openid": "oSomeoneElse000001"})
    page1 = (await gateway.http.get("/v1/orders?limit=2", headers=gateway.auth)).json()
    assert len(page1["data"]) == 2 and page1["has_more"] is True
    page2 = (await gateway.http.get(f"/v1/orders?limit=10&starting_after={page1['data'][-1]['id']}",
                                    headers=gateway.auth)).json()
    seen = [o["id"] for o in page1["data"] + page2["data"]]
    assert len(seen) == len(set(seen)) == 6 and page2["has_more"] is False
    mine = (await gateway.http.get("/v1/orders?payer_openid=oPayer000000001&limit=50",
                                   headers=gateway.auth)).json()
    assert len(mine["data"]) == 0
    others = (await gateway.http.get("/v1/orders?payer_openid=oSomeoneElse000001", headers=gateway.auth)).json()
    assert len(others["data"]) == 1
    await gateway.pay(made[0])
    paid = (await gateway.http.get("/v1/orders?status=paid", headers=gateway.auth)).json()
    assert [o["id"] for o in paid["data"]] == [made[0]["id"]]


async def test_close_unpaid_order_emits_order_closed(gateway: Gateway) -> None:
    await gateway.add_webhook()
    order = await gateway.create_order()
    r = await gateway.http.post(f"/v1/orders/{order['id']}/close", headers=gateway.auth)
    assert r.status_code == 200 and r.json()["status"] == "closed"
    assert gateway.sim.order(order["out_trade_no"]).trade_state == "CLOSED"
    await gateway.run_worker()
    assert gateway.merchant.types() == ["order.closed"]
    # closing again is harmless; paying a closed order is refused by the provider
    again = await gateway.http.post(f"/v1/orders/{order['id']}/close", headers=gateway.auth)
    assert again.status_code == 200 and again.json()["status"] == "closed"
    r = await gateway.http.post("/sandbox/wechatpay/_sandbox/pay", json={"out_trade_no": order["out_trade_no"]})
    assert r.status_code >= 400


async def test_close_paid_order_is_refused(gateway: Gateway) -> None:
    order = await gateway.create_order()
    await gateway.pay(order)
    r = await gateway.http.post(f"/v1/orders/{order['id']}/close", headers=gateway.auth)
    assert r.status_code == 409 and r.json()["error"]["code"] == "order_already_paid"
    assert (await gateway.order(order["id"]))["status"] == "paid"


async def test_pay_close_race_ends_paid(gateway: Gateway) -> None:
    """F9: the payer pays, the notification is lost, the merchant closes: the order ends paid."""
    await gateway.http.post("/sandbox/wechatpay/_sandbox/faults", json={"notify": "drop"})
    order = await gateway.create_order()
    await gateway.pay(order)
    assert (await gateway.order(order["id"]))["status"] == "pending"
    r = await gateway.http.post(f"/v1/orders/{order['id']}/close", headers=gateway.auth)
    assert r.status_code == 409 and r.json()["error"]["code"] == "order_already_paid"
    final = await gateway.order(order["id"])
    assert final["status"] == "paid" and final["provider_trade_id"]


async def test_oversized_bodies_are_refused(gateway: Gateway) -> None:
    big = json.dumps(order_body(description="x" * 2_000_000)).encode()
    r = await gateway.http.post("/v1/orders", headers=gateway.auth | {"Content-Type": "application/json"},
                                content=big)
    assert r.status_code == 413 and r.json()["error"]["code"] == "body_too_large"

    async def chunks() -> Any:
        for _ in range(40):
            yield b"x" * 65536

    r = await gateway.http.post("/v1/orders", headers=gateway.auth, content=chunks())
    assert r.status_code == 413
    assert await gateway.count(Order) == 0


async def test_health_readiness_metrics(gateway: Gateway) -> None:
    assert (await gateway.http.get("/healthz")).json() == {"status": "ok"}
    ready = await gateway.http.get("/readyz")
    assert ready.status_code == 200 and ready.json()["database"] == "ok"
    await gateway.http.get("/v1/orders", headers=gateway.auth)
    metrics = (await gateway.http.get("/metrics")).text
    assert 'minigate_http_requests_total{method="GET",route="/v1/orders",status="200"}' in metrics


async def test_openapi_describes_the_api(gateway: Gateway) -> None:
    spec = (await gateway.http.get("/openapi.json")).json()
    assert {"/v1/orders", "/v1/orders/{order_id}", "/v1/refunds", "/v1/webhook_endpoints",
            "/v1/wechat/login"} <= set(spec["paths"])


async def test_login_errors_are_precise(gateway: Gateway) -> None:
    r = await gateway.http.post("/v1/wechat/login", headers=gateway.auth, json={"code": "not-a-real-code"})
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_code"
    code = (await gateway.http.post("/sandbox/wechat/_sandbox/login", json={"user": "erin"})).json()["code"]
    assert (await gateway.http.post("/v1/wechat/login", headers=gateway.auth, json={"code": code})).status_code == 200
    again = await gateway.http.post("/v1/wechat/login", headers=gateway.auth, json={"code": code})
    assert again.status_code == 400 and again.json()["error"]["code"] == "code_used"
    missing = await gateway.http.post("/v1/wechat/login", headers=gateway.auth, json={})
    assert missing.status_code == 400 and missing.json()["error"]["code"] == "parameter_invalid"
    assert "session_key" not in (await gateway.http.post(
        "/v1/wechat/login", headers=gateway.auth,
        json={"code": (await gateway.http.post("/sandbox/wechat/_sandbox/login", json={"user": "f"})).json()["code"]}
    )).json()


async def test_alipay_login_gives_a_stable_open_id(gateway: Gateway) -> None:
    async def login(user: str) -> Any:
        code = (await gateway.http.post("/sandbox/alipay/_sandbox/login", json={"user": user})).json()["code"]
        return await gateway.http.post("/v1/alipay/login", headers=gateway.auth, json={"code": code})

    first, again, other = await login("amy"), await login("amy"), await login("ben")
    assert first.status_code == 200, first.text
    assert first.json()["open_id"] and first.json()["open_id"] == again.json()["open_id"]
    assert other.json()["open_id"] != first.json()["open_id"]
    bad = await gateway.http.post("/v1/alipay/login", headers=gateway.auth, json={"code": "nope"})
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "invalid_code"
    assert "access_token" not in first.json()

from __future__ import annotations

from tests.conftest import Gateway


async def test_checkout_smoke(gateway: Gateway) -> None:
    openid = await gateway.login("alice")
    order = await gateway.create_order(amount=250, payer={"openid": openid})
    assert order["status"] == "pending"
    assert order["pay_params"]["signType"] == "RSA"
    await gateway.pay(order)
    assert (await gateway.order(order["id"]))["status"] == "paid"

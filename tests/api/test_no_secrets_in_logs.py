"""Every log line written during a full checkout — including failures — is free of secrets and personal data."""

from __future__ import annotations

import io
import json

from minigate.logging import configure_logging
from tests.api.test_notifications import send_signed, transaction
from tests.conftest import Gateway


async def test_full_flow_logs_carry_no_secret(gateway: Gateway) -> None:
    stream = io.StringIO()
    configure_logging("DEBUG", json=True, stream=stream)
    try:
        endpoint = await gateway.add_webhook()
        openid = await gateway.login("carol")
        order = await gateway.create_order(amount=700, payer={"openid": openid})
        # failures log too: a forged callback, a bad key, an over-refund, a provider error
        await send_signed(gateway, transaction(gateway, order), mutate_headers=lambda h: h | {
            "Wechatpay-Signature": "AAAA" + h["Wechatpay-Signature"][4:]})
        await gateway.http.get("/v1/orders", headers={"Authorization": "Bearer mg_test_not_a_real_key"})
        await gateway.pay(order)
        await gateway.http.post("/v1/refunds", headers=gateway.auth, json={"order": order["id"], "amount": 9999})
        await gateway.http.post("/sandbox/wechatpay/_sandbox/faults", json={"next_call": "http_500", "seconds": 0})
        await gateway.http.post("/v1/refunds", headers=gateway.auth, json={"order": order["id"], "amount": 100})
        await gateway.run_worker()
    finally:
        configure_logging("INFO")
    output = stream.getvalue()
    lines = [json.loads(line) for line in output.splitlines() if line.strip()]
    assert len(lines) >= 3, output          # the scan below must have something to scan
    creds = gateway.rt.sandbox.credentials("wechatpay")
    login = gateway.rt.sandbox.credentials("wechat")
    forbidden = {
        "test API key": gateway.key,
        "webhook secret": endpoint["secret"],
        "APIv3 key": creds["apiv3_key"],
        "app secret": login["app_secret"],
        "openid": openid,
        "paySign": order["pay_params"]["paySign"],
        "private key": "PRIVATE KEY",
        "master key": "test-master-key-0123456789abcdef0123456789",
    }
    for what, value in forbidden.items():
        assert value not in output, f"{what} leaked into the logs"


def test_redactor_scrubs_known_shapes() -> None:
    from minigate.logging import redact, scrub_text

    assert "13812345678" not in scrub_text("call 13812345678 now")
    assert "11010519491231002X" not in scrub_text("id 11010519491231002X")
    assert "mg_live_abcDEF123" not in scrub_text("key=mg_live_abcDEF123")
    assert "whsec_abc123" not in scrub_text("whsec_abc123")
    assert "-----BEGIN" not in scrub_text("-----BEGIN PRIVATE KEY-----\nMIIE\n-----END PRIVATE KEY-----")
    event = redact(None, "info", {"event": "x", "authorization": "Bearer abc", "openid": "oAbc",
                                  "nested": {"app_secret": "s3", "ok": "fine"}, "error_code": "invalid_signature"})
    assert event["authorization"] == event["openid"] == "[redacted]"
    assert event["nested"] == {"app_secret": "[redacted]", "ok": "fine"}
    assert event["error_code"] == "invalid_signature"

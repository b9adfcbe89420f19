"""SMS safety across processes and in the logs: limits shared through Redis; no code, number or key logged."""

from __future__ import annotations

import io
import json
import re

from minigate.logging import configure_logging
from tests.conftest import REDIS_URL, Gateway, open_gateway


async def test_limits_are_shared_by_two_gateways_through_redis(gateway: Gateway, tmp_path, sandbox_dir) -> None:
    """Two gateway processes (here: two runtimes) on one database and one Redis: a number that got its code
    from the first is refused by the second within the minute."""
    assert REDIS_URL, "MINIGATE_TEST_REDIS_URL must point at a Redis (scripts/test.sh starts one)"
    db_url = str(gateway.rt.db.engine.url.render_as_string(hide_password=False))
    phone = "13900139001"
    async with open_gateway(db_url, tmp_path / "a", sandbox_dir, redis_url=REDIS_URL) as first, \
            open_gateway(db_url, tmp_path / "b", sandbox_dir, redis_url=REDIS_URL) as second:
        await first.rt.limiter.reset()
        assert first.rt.limiter.shared and second.rt.limiter.shared
        second.key = first.key                # the same app, served by another process
        body = {"phone": phone, "purpose": "login"}
        r1 = await first.http.post("/v1/verification_codes", headers=first.auth, json=body)
        assert r1.status_code == 200, r1.text
        r2 = await second.http.post("/v1/verification_codes", headers=second.auth, json=body)
        assert r2.status_code == 429 and r2.json()["error"]["limit"] == "phone_per_minute"
        # without Redis each process would count alone: the fixture gateway (memory limits) still allows it
        assert not gateway.rt.limiter.shared


async def test_sms_flows_log_no_code_number_or_key(gateway: Gateway) -> None:
    stream = io.StringIO()
    configure_logging("DEBUG", json=True, stream=stream)
    phone = "13900139002"
    try:
        await gateway.http.put("/v1/sms/settings", headers=gateway.auth, json={
            "providers": [{"provider": "aliyun-sms"}, {"provider": "tencentcloud", "weight": 0}]})
        await gateway.http.post("/sandbox/aliyun-sms/_sandbox/faults", json={"next_call": "http_429"})
        r = await gateway.http.post("/v1/verification_codes", headers=gateway.auth,
                                    json={"phone": phone, "purpose": "login", "ip": "203.0.113.7"})
        assert r.status_code == 200, r.text
        inbox = (await gateway.http.get("/sandbox/_sandbox/messages", params={"phone": phone})).json()["messages"]
        code = re.search(r"(\d{6})", inbox[0]["text"]).group(1)  # type: ignore[union-attr]
        await gateway.http.post("/v1/verification_codes/check", headers=gateway.auth,
                                json={"phone": phone, "purpose": "login", "code": "000000"})
        await gateway.http.post("/v1/verification_codes/check", headers=gateway.auth,
                                json={"phone": phone, "purpose": "login", "code": code})
        await gateway.http.post("/v1/verification_codes", headers=gateway.auth,   # refused: logged as a decision
                                json={"phone": phone, "purpose": "login"})
        await gateway.http.post("/notify/sms/aliyun-sms/test/wrong/receipts", content=b"[]")
        await gateway.settle()
    finally:
        configure_logging("INFO")
    output = stream.getvalue()
    lines = [json.loads(line) for line in output.splitlines() if line.strip()]
    assert lines, output
    aliyun = gateway.rt.sandbox.credentials("aliyun-sms")
    tencent = gateway.rt.sandbox.credentials("tencentcloud")
    forbidden = {"code": code, "phone": phone, "phone digits": phone[3:], "ip": "203.0.113.7",
                 "aliyun secret": aliyun["access_key_secret"], "tencent secret": tencent["secret_key"],
                 "callback token": gateway.rt.sms_callback_token("aliyun-sms", "test")}
    for what, value in forbidden.items():
        assert value not in output, f"{what} leaked into the logs"

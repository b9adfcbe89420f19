"""WeChat Pay v3 simulator over httpx.ASGITransport: signatures, lifecycle, errors, notifications, faults."""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import json
import re
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from minigate.providers.wechatpay import signing
from minigate.providers.wechatpay.bill import parse_trade_bill
from minigate.simulators import Sandbox
from tests.simulators import Merchant, Receiver, verify_signed


@pytest.fixture(scope="module")
def state_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("sandbox")


@pytest.fixture
async def env(state_dir: Path) -> AsyncIterator[tuple[Sandbox, Merchant, Receiver]]:
    sandbox = Sandbox(state_dir, time_scale=0.001)
    creds = sandbox.credentials("wechatpay")
    receiver = Receiver(creds)
    sandbox.notify_client = receiver.client()
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=sandbox.app), base_url="http://sandbox"
    ) as c:
        yield sandbox, Merchant(creds, c, now=sandbox.clock.now), receiver
    await sandbox.aclose()
    assert sandbox.notify_client is not None
    await sandbox.notify_client.aclose()


async def settle(sandbox: Sandbox) -> None:
    async with asyncio.timeout(5):
        await sandbox.wechatpay_deliverer.wait_idle()


async def pay(m: Merchant, out_trade_no: str) -> httpx.Response:
    return await m.client.post("/wechatpay/_sandbox/pay", json={"out_trade_no": out_trade_no})


# ----------------------------------------------------------------------------- request authentication


async def test_request_signature_is_required_and_checked(env: tuple[Sandbox, Merchant, Receiver]) -> None:
    sandbox, m, _ = env
    url = f"/v3/pay/transactions/out-trade-no/NOPE000001?mchid={m.creds['mchid']}"
    assert (await m.call("GET", url)).status_code == 404  # authenticated; simply unknown
    bare = await m.client.get("/wechatpay" + url)
    assert bare.status_code == 401 and bare.json()["code"] == "SIGN_ERROR" and bare.headers["Request-ID"]
    assert "Wechatpay-Signature" not in bare.headers
    # signed over another path (the prefixed one): the simulator verifies over the path below the mount
    wrong = await m.call("GET", url, sign_url="/wechatpay" + url)
    assert wrong.status_code == 401 and wrong.json()["code"] == "SIGN_ERROR"
    stale = await m.call("GET", url, timestamp=str(int(sandbox.clock.now()) - 301))
    assert stale.status_code == 401
    assert (await m.call("GET", url, timestamp=str(int(sandbox.clock.now()) - 290))).status_code == 404
    nonce = signing.new_nonce()
    assert (await m.call("GET", url, nonce=nonce)).status_code == 404
    replay = await m.call("GET", url, nonce=nonce)
    assert replay.status_code == 401 and "重复" in replay.json()["message"]
    tampered_body = await m.call(
        "POST",
        "/v3/pay/transactions/jsapi",
        raw=b'{"a":1}',
        headers={"Authorization": m.authorization("POST", "/v3/pay/transactions/jsapi", b'{"a":2}')},
    )
    assert tampered_body.status_code == 401


async def test_wrong_mchid_or_serial_or_key_is_refused(env: tuple[Sandbox, Merchant, Receiver]) -> None:
    _, m, _ = env
    url = f"/v3/pay/transactions/out-trade-no/NOPE000001?mchid={m.creds['mchid']}"
    for field, value in (("mchid", "1900000001"), ("merchant_serial_no", "ABCDEF")):
        other = Merchant(m.creds | {field: value}, m.client, now=m.now)
        assert (await other.call("GET", url)).status_code == 401
    from tests.keys import read

    intruder = Merchant(m.creds | {"merchant_private_key": read("wxgo_private_key.pem")}, m.client, now=m.now)
    assert (await intruder.call("GET", url)).status_code == 401


async def test_query_string_is_part_of_the_signed_url(env: tuple[Sandbox, Merchant, Receiver]) -> None:
    _, m, _ = env
    url = f"/v3/pay/transactions/out-trade-no/NOPE000001?mchid={m.creds['mchid']}"
    assert (await m.call("GET", url, sign_url=url.split("?")[0])).status_code == 401


async def test_root_app_for_sdk_paths(state_dir: Path) -> None:
    sandbox = Sandbox(state_dir)
    creds = sandbox.credentials("wechatpay")
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=sandbox.app_for("wechatpay")), base_url="http://sandbox"
    ) as c:
        m = Merchant(creds, c, prefix="", now=sandbox.clock.now)
        response = await m.prepay("ROOT000001")
        assert response.status_code == 200 and verify_signed(response.headers, response.content, creds)
    await sandbox.aclose()


# ----------------------------------------------------------------------------- prepay, query, close


async def test_prepay_validation_errors(env: tuple[Sandbox, Merchant, Receiver]) -> None:
    _, m, _ = env
    cases = [
        ({"description": "x" * 128}, "PARAM_ERROR"),
        ({"description": ""}, "PARAM_ERROR"),
        ({"out_trade_no": "abc"}, "PARAM_ERROR"),
        ({"out_trade_no": "bad#chars!"}, "PARAM_ERROR"),
        ({"amount": {"total": 0, "currency": "CNY"}}, "PARAM_ERROR"),
        ({"amount": {"total": 1.5, "currency": "CNY"}}, "PARAM_ERROR"),
        ({"amount": {"total": 100, "currency": "USD"}}, "PARAM_ERROR"),
        ({"notify_url": "http://example.com/notify"}, "PARAM_ERROR"),
        ({"notify_url": "http://127.0.0.1:9/notify?x=1"}, "PARAM_ERROR"),
        ({"payer": {}}, "PARAM_ERROR"),
        ({"time_expire": "tomorrow"}, "PARAM_ERROR"),
        ({"appid": "wx0000000000000000"}, "APPID_MCHID_NOT_MATCH"),
    ]
    for extra, code in cases:
        response = await m.call("POST", "/v3/pay/transactions/jsapi", m.prepay_body("VAL0000001") | extra)
        assert response.status_code == 400, extra
        assert response.json()["code"] == code, extra
        assert "Wechatpay-Signature" not in response.headers and response.headers["Request-ID"]
    body = m.prepay_body("VAL0000001")
    del body["payer"]
    assert (await m.call("POST", "/v3/pay/transactions/jsapi", body)).json()["code"] == "PARAM_ERROR"
    malformed = await m.call("POST", "/v3/pay/transactions/jsapi", raw=b"{not json")
    assert malformed.status_code == 400 and malformed.json()["code"] == "PARAM_ERROR"
    ok = (
        "http://localhost:8000/n",
        "http://[::1]/n",
        "http://127.0.0.2/n",
        "http://gateway/n",
        "https://x.cn/n",
    )
    for index, url in enumerate(ok):
        assert (await m.prepay(f"URL000000{index}", notify_url=url)).status_code == 200, url


async def test_prepay_is_idempotent_on_identical_parameters(env: tuple[Sandbox, Merchant, Receiver]) -> None:
    _, m, _ = env
    first = await m.prepay("IDEM000001")
    assert first.status_code == 200
    prepay_id = first.json()["prepay_id"]
    assert re.fullmatch(r"wx\d{14}[0-9a-f]+", prepay_id)
    again = await m.prepay("IDEM000001")
    assert again.status_code == 200 and again.json()["prepay_id"] == prepay_id
    changed = await m.prepay("IDEM000001", total=101)
    assert changed.status_code == 400 and changed.json() == {
        "code": "INVALID_REQUEST",
        "message": "请求重入时，参数与首次请求时不一致",
    }


async def test_query_unpaid_then_close(env: tuple[Sandbox, Merchant, Receiver]) -> None:
    sandbox, m, _ = env
    await m.prepay("CLOSE00001", attach="a=1")
    query = await m.query("CLOSE00001")
    assert query.status_code == 200 and verify_signed(query.headers, query.content, m.creds)
    txn = query.json()
    assert txn["trade_state"] == "NOTPAY" and txn["attach"] == "a=1" and txn["amount"]["total"] == 100
    assert {"transaction_id", "success_time", "payer"}.isdisjoint(txn) and "payer_total" not in txn["amount"]
    missing = await m.call("GET", "/v3/pay/transactions/out-trade-no/CLOSE00001")
    assert missing.status_code == 400 and missing.json()["code"] == "PARAM_ERROR"
    close_url = "/v3/pay/transactions/out-trade-no/CLOSE00001/close"
    closed = await m.call("POST", close_url, {"mchid": m.creds["mchid"]})
    assert closed.status_code == 204 and closed.content == b"" and verify_signed(closed.headers, b"", m.creds)
    assert (await m.query("CLOSE00001")).json()["trade_state"] == "CLOSED"
    assert (await m.call("POST", close_url, {"mchid": m.creds["mchid"]})).status_code == 204
    reopen = await m.prepay("CLOSE00001", attach="a=1")
    assert reopen.status_code == 400 and reopen.json()["code"] == "ORDER_CLOSED"
    refused = await pay(m, "CLOSE00001")
    assert refused.status_code == 409 and refused.json()["code"] == "ORDER_NOT_PAYABLE"
    unknown = await m.call(
        "POST", "/v3/pay/transactions/out-trade-no/NOSUCH0001/close", {"mchid": m.creds["mchid"]}
    )
    assert unknown.status_code == 404 and unknown.json()["code"] == "ORDER_NOT_EXIST"
    assert (await m.query("NOSUCH0001")).json()["code"] == "ORDER_NOT_EXIST"
    assert (
        await m.client.post("/wechatpay/_sandbox/pay", json={"out_trade_no": "NOSUCH0001"})
    ).status_code == 404


async def test_prepay_expiry_and_time_expire(env: tuple[Sandbox, Merchant, Receiver]) -> None:
    sandbox, m, _ = env
    first = (await m.prepay("EXPIRE0001")).json()["prepay_id"]
    sandbox.clock.advance(7201)
    expired = await pay(m, "EXPIRE0001")
    assert expired.status_code == 409 and expired.json()["code"] == "PREPAY_EXPIRED"
    renewed = (await m.prepay("EXPIRE0001")).json()["prepay_id"]
    assert renewed != first
    assert (await pay(m, "EXPIRE0001")).status_code == 200
    deadline = signing_time(sandbox.clock.now() + 60)
    await m.prepay("EXPIRE0002", time_expire=deadline)
    assert (await m.query("EXPIRE0002")).json()["trade_state"] == "NOTPAY"
    sandbox.clock.advance(61)
    assert (await m.query("EXPIRE0002")).json()["trade_state"] == "CLOSED"
    await settle(sandbox)


def signing_time(epoch: float) -> str:
    from minigate.simulators._core import rfc3339

    return rfc3339(epoch)


# ----------------------------------------------------------------------------- pay, notify, refund


async def test_full_lifecycle_with_notifications(env: tuple[Sandbox, Merchant, Receiver]) -> None:
    sandbox, m, receiver = env
    await m.prepay("LIFE000001", total=300)
    paid = await pay(m, "LIFE000001")
    assert paid.status_code == 200
    await settle(sandbox)
    [note] = receiver.accepted
    assert note.event is not None and note.resource is not None
    assert note.event["event_type"] == "TRANSACTION.SUCCESS" and note.event["summary"] == "支付成功"
    assert (
        note.event["resource"]["original_type"] == "transaction"
        and note.event["id"] == paid.json()["notification_id"]
    )
    assert note.headers["wechatpay-serial"] == m.creds["platform_public_key_id"]  # default: public-key mode
    txn = note.resource
    assert (
        txn["trade_state"] == "SUCCESS"
        and txn["out_trade_no"] == "LIFE000001"
        and txn["mchid"] == m.creds["mchid"]
    )
    assert re.fullmatch(r"42000\d{23}", txn["transaction_id"]) and txn["amount"]["payer_total"] == 300
    assert txn["success_time"].endswith("+08:00") and txn["payer"]["openid"]
    by_id = await m.call("GET", f"/v3/pay/transactions/id/{txn['transaction_id']}?mchid={m.creds['mchid']}")
    assert by_id.json() == txn
    assert (await m.prepay("LIFE000001", total=300)).json()["code"] == "ORDERPAID"
    close = await m.call(
        "POST", "/v3/pay/transactions/out-trade-no/LIFE000001/close", {"mchid": m.creds["mchid"]}
    )
    assert close.status_code == 400 and close.json()["code"] == "ORDERPAID"
    assert (await pay(m, "LIFE000001")).status_code == 409

    refund = await m.refund(
        "LIFE000001", "RF-LIFE-1", 100, total=300, notify_url="http://testserver/notify/refund"
    )
    assert refund.status_code == 200 and verify_signed(refund.headers, refund.content, m.creds)
    body = refund.json()
    assert body["status"] == "PROCESSING" and body["amount"]["refund"] == 100 and body["refund_id"].isdigit()
    assert body["transaction_id"] == txn["transaction_id"] and "success_time" not in body
    assert (await m.query("LIFE000001")).json()["trade_state"] == "REFUND"
    await settle(sandbox)
    queried = (await m.call("GET", "/v3/refund/domestic/refunds/RF-LIFE-1")).json()
    assert (
        queried["status"] == "SUCCESS"
        and queried["refund_id"] == body["refund_id"]
        and queried["success_time"]
    )
    refund_note = receiver.accepted[-1]
    assert refund_note.event is not None and refund_note.event["event_type"] == "REFUND.SUCCESS"
    assert refund_note.resource is not None and refund_note.resource["refund_status"] == "SUCCESS"
    assert refund_note.event["resource"]["associated_data"] == "refund"

    same = await m.refund(
        "LIFE000001", "RF-LIFE-1", 100, total=300, notify_url="http://testserver/notify/refund"
    )
    assert same.status_code == 200 and same.json()["refund_id"] == body["refund_id"]
    assert (await m.refund("LIFE000001", "RF-LIFE-1", 150, total=300)).json()["code"] == "INVALID_REQUEST"
    assert (await m.refund("LIFE000001", "RF-LIFE-2", 100, total=299)).json()["code"] == "INVALID_REQUEST"
    over = await m.refund("LIFE000001", "RF-LIFE-3", 201, total=300)
    assert (
        over.status_code == 400
        and over.json()["code"] == "INVALID_REQUEST"
        and "可退金额" in over.json()["message"]
    )
    by_txn = await m.call(
        "POST",
        "/v3/refund/domestic/refunds",
        {
            "transaction_id": txn["transaction_id"],
            "out_refund_no": "RF-LIFE-4",
            "amount": {"refund": 200, "total": 300, "currency": "CNY"},
        },
    )
    assert by_txn.status_code == 200
    assert (await m.refund("LIFE000001", "RF-LIFE-5", 1, total=300)).status_code == 400  # fully refunded
    assert (await m.refund("NOSUCH0001", "RF-X", 1)).json()["code"] == "RESOURCE_NOT_EXISTS"
    assert (await m.call("GET", "/v3/refund/domestic/refunds/RF-NONE")).status_code == 404
    await m.prepay("LIFE000002")
    unpaid = await m.refund("LIFE000002", "RF-LIFE-6", 1)
    assert unpaid.status_code == 400
    inspect = (await m.client.get("/wechatpay/_sandbox/orders/LIFE000001")).json()
    assert inspect["transaction"]["trade_state"] == "REFUND" and len(inspect["refunds"]) == 2
    await settle(sandbox)


async def test_refund_count_limit(env: tuple[Sandbox, Merchant, Receiver]) -> None:
    sandbox, m, _ = env
    await m.prepay("LIMIT00001", total=100)
    await pay(m, "LIMIT00001")
    for i in range(50):
        assert (await m.refund("LIMIT00001", f"RF-LIMIT-{i}", 1)).status_code == 200
    limited = await m.refund("LIMIT00001", "RF-LIMIT-50", 1)
    assert limited.status_code == 403 and limited.json()["code"] == "RULE_LIMIT"
    await settle(sandbox)


async def test_refund_delay_setting(env: tuple[Sandbox, Merchant, Receiver]) -> None:
    sandbox, m, _ = env
    r = await m.client.post("/wechatpay/_sandbox/settings", json={"refund_delay_seconds": 3600})
    assert r.status_code == 200 and r.json()["refund_delay_seconds"] == 3600
    await m.prepay("DELAY00001")
    await pay(m, "DELAY00001")
    await m.refund("DELAY00001", "RF-DELAY-1", 100)
    assert (await m.call("GET", "/v3/refund/domestic/refunds/RF-DELAY-1")).json()["status"] == "PROCESSING"
    sandbox.clock.advance(3.7)  # 3600 s * time_scale 0.001
    assert (await m.call("GET", "/v3/refund/domestic/refunds/RF-DELAY-1")).json()["status"] == "SUCCESS"
    assert (
        await m.client.post("/wechatpay/_sandbox/settings", json={"callback_key": "nope"})
    ).status_code == 400
    await sandbox.aclose()


# ----------------------------------------------------------------------------- response signing keys


async def test_response_key_follows_request_serial_and_settings(
    env: tuple[Sandbox, Merchant, Receiver],
) -> None:
    _, m, _ = env
    cert_serial = signing.certificate_serial(signing.load_certificate(m.creds["platform_certificate"]))
    await m.prepay("KEYS000001")
    plain = await m.query("KEYS000001")
    assert plain.headers["Wechatpay-Serial"] == cert_serial and verify_signed(
        plain.headers, plain.content, m.creds
    )
    m.serial_header = m.creds["platform_public_key_id"]
    pub = await m.query("KEYS000001")
    assert pub.headers["Wechatpay-Serial"] == m.creds["platform_public_key_id"]
    assert verify_signed(pub.headers, pub.content, m.creds)
    # the two keys differ: the certificate key does not verify a public-key signature
    cert_key = signing.load_certificate(m.creds["platform_certificate"]).public_key()
    message = signing.response_message(
        pub.headers["Wechatpay-Timestamp"], pub.headers["Wechatpay-Nonce"], pub.content
    )
    assert not signing.rsa_verify(cert_key, message, pub.headers["Wechatpay-Signature"])  # type: ignore[arg-type]
    await m.client.post("/wechatpay/_sandbox/settings", json={"callback_key": "certificate"})
    assert (await m.query("KEYS000001")).headers["Wechatpay-Serial"] == cert_serial
    await m.client.post("/wechatpay/_sandbox/settings", json={"callback_key": "mixed"})
    serials = {(await m.query("KEYS000001")).headers["Wechatpay-Serial"] for _ in range(2)}
    assert serials == {cert_serial, m.creds["platform_public_key_id"]}
    assert (await m.client.get("/wechatpay/_sandbox/settings")).json()["callback_key"] == "mixed"


async def test_certificates_download(env: tuple[Sandbox, Merchant, Receiver]) -> None:
    _, m, _ = env
    m.serial_header = m.creds["platform_public_key_id"]
    response = await m.call("GET", "/v3/certificates")
    assert response.status_code == 200 and verify_signed(response.headers, response.content, m.creds)
    [item] = response.json()["data"]
    cert = signing.load_certificate(m.creds["platform_certificate"])
    assert item["serial_no"] == response.headers["Wechatpay-Serial"] == signing.certificate_serial(cert)
    enc = item["encrypt_certificate"]
    assert enc["associated_data"] == "certificate" and len(enc["nonce"]) == 12
    pem = signing.aes_gcm_decrypt(
        m.creds["apiv3_key"].encode(), enc["nonce"], "certificate", enc["ciphertext"]
    )
    assert pem.decode() == m.creds["platform_certificate"].strip()
    assert item["effective_time"].endswith("+08:00")


async def test_trade_bill(env: tuple[Sandbox, Merchant, Receiver]) -> None:
    sandbox, m, _ = env
    await m.prepay("BILL000001", total=1234, attach="bill")
    await pay(m, "BILL000001")
    assert (await m.refund("BILL000001", "RF-BILL-1", 234, total=1234)).status_code == 200
    await m.call("GET", "/v3/refund/domestic/refunds/RF-BILL-1")
    today = signing_time(sandbox.clock.now())[:10]
    answer = await m.call("GET", f"/v3/bill/tradebill?bill_date={today}&bill_type=ALL&tar_type=GZIP")
    assert answer.status_code == 200 and verify_signed(answer.headers, answer.content, m.creds)
    bill = answer.json()
    assert bill["hash_type"] == "SHA1"
    assert bill["download_url"].startswith("http://sandbox/wechatpay/v3/billdownload/file?token=")
    path = bill["download_url"][len("http://sandbox/wechatpay") :]
    assert (await m.client.get("/wechatpay" + path)).status_code == 401  # still needs Authorization
    file = await m.call("GET", path)
    assert file.status_code == 200 and "Wechatpay-Signature" not in file.headers
    content = gzip.decompress(file.content)
    assert hashlib.sha1(content).hexdigest() == bill["hash_value"]
    text = content.decode("utf-8-sig")
    lines = text.strip().splitlines()
    assert lines[0].startswith("交易时间,公众账号ID,商户号") and lines[-2].startswith("总交易单数")
    assert any("`BILL000001" in line and "`SUCCESS" in line and "`12.34" in line for line in lines)
    assert any("`RF-BILL-1" in line and "`REFUND" in line and "`2.34" in line for line in lines)
    rows = {(r.trade_state, r.out_refund_no): r for r in parse_trade_bill(content)}  # the client's parser
    assert rows["SUCCESS", None].amount == 1234 and rows["SUCCESS", None].fee == 7
    assert rows["REFUND", "RF-BILL-1"].refund_amount == 234
    plain = await m.call("GET", f"/v3/bill/tradebill?bill_date={today}&bill_type=SUCCESS")
    raw = await m.call("GET", plain.json()["download_url"][len("http://sandbox/wechatpay") :])
    assert hashlib.sha1(raw.content).hexdigest() == plain.json()["hash_value"] and "RF-BILL-1" not in raw.text
    empty = await m.call("GET", "/v3/bill/tradebill?bill_date=2001-01-01&bill_type=ALL")
    assert empty.status_code == 400 and empty.json()["code"] == "NO_STATEMENT_EXIST"
    assert (await m.call("GET", "/v3/bill/tradebill?bill_date=20010101")).json()["code"] == "PARAM_ERROR"
    await settle(sandbox)


# ----------------------------------------------------------------------------- delivery and retries


async def test_retry_schedule_until_acknowledged(env: tuple[Sandbox, Merchant, Receiver]) -> None:
    sandbox, m, receiver = env
    receiver.statuses = [500, 500, 204]
    await m.prepay("RETRY00001")
    await pay(m, "RETRY00001")
    await settle(sandbox)
    assert [r.status for r in receiver.received] == [500, 500, 204]
    assert len({r.event["id"] for r in receiver.received if r.event}) == 1  # stable event id across retries
    log = (await m.client.get("/wechatpay/_sandbox/notifications")).json()["data"][0]
    assert log["attempts"] == 3 and log["last_status"] == 204 and log["state"] == "delivered"
    assert log["url"] == "http://testserver/notify/pay"


async def test_gives_up_after_the_fifteen_retries(state_dir: Path) -> None:
    sandbox = Sandbox(state_dir, time_scale=0.00001)
    creds = sandbox.credentials("wechatpay")
    receiver = Receiver(creds, statuses=[503] * 100)
    sandbox.notify_client = receiver.client()
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=sandbox.app), base_url="http://s") as c:
        m = Merchant(creds, c, now=sandbox.clock.now)
        await m.prepay("GIVEUP0001")
        await pay(m, "GIVEUP0001")
        await settle(sandbox)
    assert len(receiver.received) == 16 and sandbox.wechatpay_deliverer.log[0].state == "failed"
    await receiver_close(sandbox)


async def receiver_close(sandbox: Sandbox) -> None:
    await sandbox.aclose()
    if sandbox.notify_client is not None:
        await sandbox.notify_client.aclose()


async def test_aclose_cancels_pending_deliveries(state_dir: Path) -> None:
    sandbox = Sandbox(state_dir, time_scale=1.0)
    creds = sandbox.credentials("wechatpay")
    receiver = Receiver(creds, statuses=[500] * 10)
    sandbox.notify_client = receiver.client()
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=sandbox.app), base_url="http://s") as c:
        m = Merchant(creds, c, now=sandbox.clock.now)
        await m.prepay("CANCEL0001")
        await pay(m, "CANCEL0001")
        for _ in range(100):
            if receiver.received:
                break
            await asyncio.sleep(0.01)
    await receiver_close(sandbox)
    assert len(receiver.received) == 1 and sandbox.wechatpay_deliverer.log[0].state == "cancelled"


# ----------------------------------------------------------------------------- fault knobs


async def fault(m: Merchant, spec: dict[str, object]) -> None:
    response = await m.client.post("/wechatpay/_sandbox/faults", json=spec)
    assert response.status_code == 200, response.text


async def test_fault_http_errors_with_path_filter_and_count(env: tuple[Sandbox, Merchant, Receiver]) -> None:
    _, m, _ = env
    await fault(m, {"next_call": "http_500", "path": "/v3/refund", "count": 1})
    await fault(m, {"next_call": "http_429", "path": "/v3/pay", "count": 2})
    shown = (await m.client.get("/wechatpay/_sandbox/faults")).json()
    assert [f["kind"] for f in shown["next_call"]] == ["http_500", "http_429"]
    for _ in range(2):
        limited = await m.prepay("FAULT00001")
        assert limited.status_code == 429 and limited.json()["code"] == "FREQUENCY_LIMITED"
    assert (await m.prepay("FAULT00001")).status_code == 200
    await pay(m, "FAULT00001")
    failed = await m.refund("FAULT00001", "RF-FAULT-1", 1)
    assert failed.status_code == 500 and failed.json()["code"] == "SYSTEM_ERROR"
    assert (await m.refund("FAULT00001", "RF-FAULT-1", 1)).status_code == 200
    await fault(m, {"next_call": "http_500"})
    assert (await m.client.delete("/wechatpay/_sandbox/faults")).json()["next_call"] == []
    assert (await m.query("FAULT00001")).status_code == 200
    bad = await m.client.post("/wechatpay/_sandbox/faults", json={"next_call": "explode"})
    assert bad.status_code == 400


async def test_fault_timeout_and_charged_then_timeout(env: tuple[Sandbox, Merchant, Receiver]) -> None:
    _, m, _ = env
    await fault(m, {"next_call": "timeout", "seconds": 30})
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.3):
            await m.prepay("TIMEOUT001")
    assert (await m.query("TIMEOUT001")).status_code == 404  # nothing happened
    await fault(m, {"next_call": "charged_then_timeout", "path": "/v3/pay/transactions/jsapi", "seconds": 30})
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.3):
            await m.prepay("TIMEOUT002")
    assert (await m.query("TIMEOUT002")).json()["trade_state"] == "NOTPAY"  # it did happen
    await fault(m, {"next_call": "charged_then_timeout", "seconds": 0})
    late = await m.prepay("TIMEOUT003")
    assert late.status_code == 504 and (await m.query("TIMEOUT003")).status_code == 200


async def test_fault_bad_response_signature(env: tuple[Sandbox, Merchant, Receiver]) -> None:
    _, m, _ = env
    await fault(m, {"next_call": "bad_signature"})
    response = await m.prepay("BADSIG0001")
    assert response.status_code == 200 and not verify_signed(response.headers, response.content, m.creds)
    assert (await m.query("BADSIG0001")).status_code == 200


async def test_fault_clock_skew(env: tuple[Sandbox, Merchant, Receiver]) -> None:
    sandbox, m, _ = env
    await fault(m, {"clock_skew_seconds": 600})
    assert (await m.prepay("SKEW000001")).status_code == 401
    skewed = Merchant(m.creds, m.client, now=lambda: sandbox.clock.now() + 600)
    response = await skewed.prepay("SKEW000001")
    assert response.status_code == 200
    assert int(response.headers["Wechatpay-Timestamp"]) >= int(sandbox.clock.now()) + 599
    await m.client.delete("/wechatpay/_sandbox/faults")
    assert (await m.query("SKEW000001")).status_code == 200


async def test_fault_notify_drop_and_duplicate(env: tuple[Sandbox, Merchant, Receiver]) -> None:
    sandbox, m, receiver = env
    await fault(m, {"notify": "drop"})
    await fault(m, {"notify": "duplicate"})
    for no in ("DROP000001", "DUPL000001"):
        await m.prepay(no)
        await pay(m, no)
    await settle(sandbox)
    assert [r.resource["out_trade_no"] for r in receiver.accepted if r.resource] == [
        "DUPL000001",
        "DUPL000001",
    ]
    assert receiver.accepted[0].event == receiver.accepted[1].event
    log = {r.fault: r for r in sandbox.wechatpay_deliverer.log}
    assert log["drop"].state == "dropped" and log["drop"].attempts == []


async def test_fault_notify_tamper_and_signtest_probe(env: tuple[Sandbox, Merchant, Receiver]) -> None:
    sandbox, m, receiver = env
    await fault(m, {"notify": "tamper"})
    await fault(m, {"notify": "signtest_probe"})
    for no in ("TAMPER0001", "PROBE00001"):
        await m.prepay(no)
        await pay(m, no)
    await settle(sandbox)
    outcomes = sorted((r.verified, r.status) for r in receiver.received)
    assert outcomes == [(False, 401), (False, 401), (True, 204), (True, 204)]
    probes = [
        r for r in receiver.received if r.headers["wechatpay-signature"].startswith("WECHATPAY/SIGNTEST/")
    ]
    assert len(probes) == 1
    tampered = [r for r in receiver.received if not r.verified and r not in probes]
    assert len(tampered) == 1 and "已篡改" in json.loads(tampered[0].body)["summary"]
    variants = {r.fault: [a["variant"] for a in r.attempts] for r in sandbox.wechatpay_deliverer.log}
    assert variants == {"tamper": ["tamper", "genuine"], "signtest_probe": ["signtest_probe", "genuine"]}


async def test_fault_notify_delay(env: tuple[Sandbox, Merchant, Receiver]) -> None:
    sandbox, m, receiver = env
    await fault(m, {"notify": "delay", "seconds": 300})  # 300 s * 0.001 = 0.3 s
    await m.prepay("NDELAY0001")
    await pay(m, "NDELAY0001")
    await asyncio.sleep(0.05)
    assert receiver.received == []
    await settle(sandbox)
    assert len(receiver.accepted) == 1


# ----------------------------------------------------------------------------- minigate's own client


@pytest.mark.parametrize("verify_mode", ["public_key", "certificate", "mixed"])
async def test_minigate_client_against_simulator(state_dir: Path, verify_mode: str) -> None:
    import datetime as dt

    from minigate.domain.results import NotificationKind, RefundState, TradeState
    from minigate.errors import ProviderUnavailable
    from minigate.providers.bases.payment import CreateOrderRequest, RefundRequest
    from minigate.providers.wechatpay.config import WeChatPayConfig
    from minigate.providers.wechatpay.provider import WeChatPayProvider

    sandbox = Sandbox(state_dir, time_scale=0.001)
    creds = sandbox.credentials("wechatpay")
    captured: list[tuple[dict[str, str], bytes]] = []

    async def capture(request: httpx.Request) -> httpx.Response:
        captured.append((dict(request.headers), request.content))
        return httpx.Response(204)

    sandbox.notify_client = httpx.AsyncClient(transport=httpx.MockTransport(capture))
    config = WeChatPayConfig(
        mchid=creds["mchid"],
        appid=creds["appid"],
        merchant_serial_no=creds["merchant_serial_no"],
        merchant_private_key=creds["merchant_private_key"],
        apiv3_key=creds["apiv3_key"],
        platform_public_key=creds["platform_public_key"] if verify_mode != "certificate" else None,
        platform_public_key_id=creds["platform_public_key_id"] if verify_mode != "certificate" else None,
        verify_mode=verify_mode,
        base_url="http://sandbox/wechatpay",
    )  # type: ignore[arg-type]
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=sandbox.app)) as client:
        sandbox.wechatpay.update_settings(
            {"callback_key": "certificate" if verify_mode == "certificate" else "auto"}
        )
        provider = WeChatPayProvider(config, client, clock=sandbox.clock.now)
        order = f"MG{verify_mode[:4].upper()}0001"
        created = await provider.create_order(
            CreateOrderRequest(
                out_trade_no=order,
                amount=250,
                description="latte",
                notify_url="http://gateway/notify",
                payer_id="oUpF8uMuAJO_M2pxb1Q9zNjWeS6o",
            )
        )
        assert created.ok and created.value is not None
        assert created.value.client_params["package"].startswith("prepay_id=wx")
        queried = await provider.query_order(order)
        assert queried.ok and queried.value is not None and queried.value.state is TradeState.PENDING
        status, _ = sandbox.wechatpay.pay(order)
        assert status == 200
        await settle(sandbox)
        note = await provider.parse_notification(*captured[-1])
        assert note.kind is NotificationKind.PAYMENT and note.trade is not None
        assert note.trade.state is TradeState.PAID and note.trade.amount_total == 250
        refund = await provider.refund(
            RefundRequest(
                out_trade_no=order,
                out_refund_no=order + "R",
                amount=50,
                total=250,
                notify_url="http://gateway/notify",
            )
        )
        assert refund.ok and refund.value is not None
        await settle(sandbox)
        refund_note = await provider.parse_notification(*captured[-1])
        assert refund_note.refund is not None and refund_note.refund.state is RefundState.SUCCEEDED
        over = await provider.refund(
            RefundRequest(out_trade_no=order, out_refund_no=order + "X", amount=201, total=250)
        )
        assert not over.ok
        today = dt.datetime.fromtimestamp(sandbox.clock.now(), dt.timezone(dt.timedelta(hours=8))).date()
        rows = await provider.download_bill(today)
        assert {(r.out_trade_no, r.trade_state) for r in rows} >= {(order, "SUCCESS"), (order, "REFUND")}
        await client.post("http://sandbox/wechatpay/_sandbox/faults", json={"next_call": "bad_signature"})
        with pytest.raises(ProviderUnavailable):
            await provider.query_order(order)
    await sandbox.aclose()
    await sandbox.notify_client.aclose()

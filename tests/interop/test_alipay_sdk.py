"""Interop: the official ``python-alipay-sdk`` (fzlee, PyPI 3.4.x) against ``minigate sandbox serve --only alipay``.

The server is a real subprocess on a free port. The SDK chooses its gateway in ``BaseAliPay.__init__``
(``self._gateway = "https://openapi.alipay.com/gateway.do"``, or Alipay's own sandbox with ``debug=True``) and
every call does ``urlopen(self._gateway + "?" + signed_query)``; there is no constructor argument, so after
constructing ``AliPay`` we set ``alipay._gateway = "<sandbox>/gateway.do"``. The SDK sends everything as a GET
query string -- the simulator merges query and form parameters, as §2.1 requires.

The SDK stamps requests with ``datetime.now()`` in the *local* zone; Alipay (and the simulator) read the
timestamp as Beijing time, so this test pins the SDK module's clock to Beijing time (on a host in China this is a
no-op) instead of widening the simulator's timestamp window.

The SDK verifies every answer (``_verify_and_return_sync_response`` raises ``AliPayValidationError``); the
``bad_signature`` fault proves the check is live. ``alipay.verify(data, sign)`` checks a notification that a local
HTTP receiver captured.
"""

from __future__ import annotations

import datetime as dt
import queue
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import alipay as alipay_module
import httpx
import pytest
from alipay import AliPay
from alipay.exceptions import AliPayValidationError

from minigate.simulators import credentials_for
from tests.interop import sandbox_process

BEIJING = dt.timezone(dt.timedelta(hours=8))




@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, dict[str, str]]]:
    state_dir = tmp_path_factory.mktemp("interop-alipay")
    creds = credentials_for(state_dir, "alipay")
    with sandbox_process("alipay", state_dir) as base:
        yield base, creds


@pytest.fixture(scope="module")
def receiver() -> Iterator[tuple[str, queue.Queue[bytes]]]:
    captured: queue.Queue[bytes] = queue.Queue()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            captured.put(self.rfile.read(int(self.headers.get("Content-Length", "0"))))
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.end_headers()
            self.wfile.write(b"success")

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/notify", captured
    server.shutdown()
    server.server_close()
    thread.join()


class _BeijingDatetime(dt.datetime):
    @classmethod
    def now(cls, tz: dt.tzinfo | None = None) -> _BeijingDatetime:
        moment = dt.datetime.now(BEIJING)
        return cls(*moment.timetuple()[:6]) if tz is None else cls.fromtimestamp(moment.timestamp(), tz)


@pytest.fixture
def sdk(sandbox: tuple[str, dict[str, str]], monkeypatch: pytest.MonkeyPatch) -> AliPay:
    base, creds = sandbox
    monkeypatch.setattr(alipay_module, "datetime", _BeijingDatetime)
    client = AliPay(appid=creds["app_id"], app_notify_url=None, app_private_key_string=creds["app_private_key"],
                    alipay_public_key_string=creds["alipay_public_key"], sign_type="RSA2")
    client._gateway = base + "/gateway.do"   # no public setting; see the module docstring
    return client


def test_sdk_full_lifecycle_and_notification(sdk: AliPay, sandbox: tuple[str, dict[str, str]],
                                             receiver: tuple[str, queue.Queue[bytes]]) -> None:
    base, creds = sandbox
    notify_url, captured = receiver
    created = sdk.api_alipay_trade_create(subject="沙箱商品", out_trade_no="SDK1", total_amount="10.00",
                                          notify_url=notify_url, product_code="JSAPI_PAY",
                                          buyer_open_id="074a1CcTG1LelxKe4xQC0zgNdId0nxi95b5lsNpazWYoCo5")
    assert created["code"] == "10000" and created["out_trade_no"] == "SDK1" and len(created["trade_no"]) == 28
    assert sdk.api_alipay_trade_query(out_trade_no="SDK1")["trade_status"] == "WAIT_BUYER_PAY"

    assert httpx.post(base + "/_sandbox/pay", json={"out_trade_no": "SDK1"}).status_code == 200
    data = dict(parse_qsl(captured.get(timeout=10).decode(), keep_blank_values=True))
    signature = data.pop("sign")
    assert data["trade_status"] == "TRADE_SUCCESS" and data["app_id"] == creds["app_id"]
    assert sdk.verify(dict(data), signature)
    assert not sdk.verify(dict(data, total_amount="0.01"), signature)
    query = sdk.api_alipay_trade_query(trade_no=created["trade_no"])
    assert (query["trade_status"], query["total_amount"]) == ("TRADE_SUCCESS", "10.00")

    refund = sdk.api_alipay_trade_refund(refund_amount="3.00", out_trade_no="SDK1", out_request_no="R1")
    assert (refund["code"], refund["fund_change"], refund["refund_fee"]) == ("10000", "Y", "3.00")
    again = sdk.api_alipay_trade_refund(refund_amount="3.00", out_trade_no="SDK1", out_request_no="R1")
    assert (again["fund_change"], again["refund_fee"]) == ("N", "3.00")
    found = sdk.api_alipay_trade_fastpay_refund_query("R1", out_trade_no="SDK1")
    assert (found["refund_status"], found["refund_amount"]) == ("REFUND_SUCCESS", "3.00")
    refund_notify = dict(parse_qsl(captured.get(timeout=10).decode(), keep_blank_values=True))
    refund_sign = refund_notify.pop("sign")
    assert refund_notify["out_biz_no"] == "R1" and sdk.verify(refund_notify, refund_sign)

    closed = sdk.api_alipay_trade_close(out_trade_no="SDK1")   # paid: a signed business error
    assert (closed["code"], closed["sub_code"]) == ("40004", "ACQ.TRADE_STATUS_ERROR")


def test_sdk_close_and_errors(sdk: AliPay, sandbox: tuple[str, dict[str, str]]) -> None:
    base, _ = sandbox
    sdk.api_alipay_trade_create(subject="x", out_trade_no="SDK2", total_amount="0.01", product_code="JSAPI_PAY",
                                buyer_id="2088102534368455")
    closed = sdk.api_alipay_trade_close(out_trade_no="SDK2")
    assert (closed["code"], closed["out_trade_no"]) == ("10000", "SDK2")
    assert sdk.api_alipay_trade_query(out_trade_no="SDK2")["trade_status"] == "TRADE_CLOSED"
    changed = sdk.api_alipay_trade_create(subject="x", out_trade_no="SDK2", total_amount="0.02",
                                          product_code="JSAPI_PAY", buyer_id="2088102534368455")
    assert changed["sub_code"] == "ACQ.TRADE_HAS_CLOSE"
    assert sdk.api_alipay_trade_query(out_trade_no="nope")["sub_code"] == "ACQ.TRADE_NOT_EXIST"


def test_sdk_rejects_a_bad_response_signature(sdk: AliPay, sandbox: tuple[str, dict[str, str]]) -> None:
    base, _ = sandbox
    assert httpx.post(base + "/_sandbox/faults", json={"next_call": "bad_signature"}).status_code == 200
    with pytest.raises(AliPayValidationError):
        sdk.api_alipay_trade_query(out_trade_no="SDK1")
    assert sdk.api_alipay_trade_query(out_trade_no="SDK1")["code"] == "10000"   # the fault was one call


def test_sdk_signature_is_checked_by_the_simulator(sdk: AliPay, sandbox: tuple[str, dict[str, str]]) -> None:
    _, creds = sandbox
    other = AliPay(appid=creds["app_id"], app_private_key_string=Path(__file__).parent.parent.joinpath(
        "keys", "alipay_nodesdk_app_private_key.pem").read_text(), alipay_public_key_string=creds["alipay_public_key"])
    other._gateway = sdk._gateway
    answer = other.api_alipay_trade_query(out_trade_no="SDK1")
    assert (answer["code"], answer["sub_code"]) == ("40002", "isv.invalid-signature")

"""Interop: the official ``wechatpayv3`` SDK (PyPI 2.0.x) against ``minigate sandbox serve --only wechatpay``.

The server is a real subprocess on a free port. The SDK hard-codes its host
(``Core.__init__`` sets ``self._gate_way = 'https://api.mch.weixin.qq.com'`` and every call goes to
``self._gate_way + path``), so after constructing ``WeChatPay`` we set ``wxpay._core._gate_way`` to the
sandbox's base URL. Both verification modes:

- **public-key mode**: ``public_key=`` / ``public_key_id=`` from the credentials. The constructor makes no
  request. The SDK sends ``Wechatpay-Serial: PUB_KEY_ID_…`` and the simulator signs with the public key.
- **certificate mode**: no public key. The constructor would download ``/v3/certificates`` from the real host
  unless ``cert_dir`` already holds a valid certificate. We seed ``cert_dir`` with an unrelated published
  test certificate (C-WXGO). The constructor then makes no request, and the first simulator response carries
  an unknown serial. That makes the SDK download, decrypt (APIv3 key, AAD "certificate") and use the
  simulator's platform certificate through ``/v3/certificates``, the path a real merchant's SDK takes.

The SDK verifies every 2xx response (``Core.request`` raises "failed to verify the signature"). The
``bad_signature`` fault proves that this check is live. ``wxpay.callback`` verifies and decrypts the
notifications that a local HTTP receiver captures.
"""

from __future__ import annotations

import json
import queue
import shutil
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from wechatpayv3 import WeChatPay, WeChatPayType

from minigate.simulators import credentials_for
from tests.interop import sandbox_process
from tests.keys import KEYS

Capture = queue.Queue[tuple[dict[str, str], bytes]]






@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, dict[str, str]]]:
    state_dir = tmp_path_factory.mktemp("interop-sandbox")
    creds = credentials_for(state_dir, "wechatpay")
    with sandbox_process("wechatpay", state_dir) as base:
        yield base, creds


@pytest.fixture(scope="module")
def receiver() -> Iterator[tuple[str, Capture]]:
    captured: Capture = queue.Queue()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            captured.put(({k: v for k, v in self.headers.items()}, body))
            self.send_response(204)
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/notify", captured
    server.shutdown()
    server.server_close()
    thread.join()


def _control(
    base: str, path: str, payload: dict[str, Any] | None = None, method: str = "POST"
) -> httpx.Response:
    response = httpx.request(method, base + path, json=payload, timeout=10)
    assert response.status_code in (200, 204), response.text
    return response


def _sdk(
    base: str, creds: dict[str, str], notify_url: str, *, mode: str, cert_dir: Path | None = None
) -> WeChatPay:
    common: dict[str, Any] = dict(
        wechatpay_type=WeChatPayType.MINIPROG,
        mchid=creds["mchid"],
        private_key=creds["merchant_private_key"],
        cert_serial_no=creds["merchant_serial_no"],
        appid=creds["appid"],
        apiv3_key=creds["apiv3_key"],
        notify_url=notify_url,
        timeout=(5, 10),
    )
    if mode == "public_key":
        wxpay = WeChatPay(
            **common, public_key=creds["platform_public_key"], public_key_id=creds["platform_public_key_id"]
        )
    else:
        assert cert_dir is not None
        wxpay = WeChatPay(**common, cert_dir=str(cert_dir))
    wxpay._core._gate_way = base  # the SDK has no base-URL parameter; see the module docstring
    return wxpay


def _next_notification(captured: Capture) -> tuple[dict[str, str], bytes]:
    return captured.get(timeout=10)


def _lifecycle(wxpay: WeChatPay, base: str, captured: Capture, prefix: str) -> None:
    """Create, query, close, pay, notify, refund, refund notify, bill — all verified by the SDK."""
    openid = "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o"
    code, message = wxpay.pay(
        description="沙箱商品", out_trade_no=f"{prefix}CLOSE01", amount={"total": 1}, payer={"openid": openid}
    )
    assert code == 200 and json.loads(message)["prepay_id"].startswith("wx")
    code, message = wxpay.close(out_trade_no=f"{prefix}CLOSE01")
    assert code == 204
    code, message = wxpay.query(out_trade_no=f"{prefix}CLOSE01")
    assert code == 200 and json.loads(message)["trade_state"] == "CLOSED"

    order = f"{prefix}ORDER01"
    code, message = wxpay.pay(
        description="沙箱商品",
        out_trade_no=order,
        amount={"total": 100, "currency": "CNY"},
        payer={"openid": openid},
        attach="interop",
    )
    assert code == 200
    code, message = wxpay.query(out_trade_no=order)
    assert code == 200 and json.loads(message)["trade_state"] == "NOTPAY"

    _control(base, "/_sandbox/pay", {"out_trade_no": order})
    headers, body = _next_notification(captured)
    result = wxpay.callback(headers, body)
    assert result is not None, "the SDK refused the simulator's notification"
    assert result["event_type"] == "TRANSACTION.SUCCESS"
    txn = result["resource"]
    assert txn["out_trade_no"] == order and txn["trade_state"] == "SUCCESS" and txn["attach"] == "interop"
    assert wxpay.callback(headers, body.replace(b"TRANSACTION.SUCCESS", b"TRANSACTION.SUCCESZ")) is None

    code, message = wxpay.query(transaction_id=txn["transaction_id"])
    assert code == 200 and json.loads(message)["trade_state"] == "SUCCESS"
    code, message = wxpay.refund(
        out_refund_no=f"{prefix}RF01",
        amount={"refund": 40, "total": 100, "currency": "CNY"},
        out_trade_no=order,
        reason="interop",
    )
    assert code == 200 and json.loads(message)["status"] == "PROCESSING"
    headers, body = _next_notification(captured)
    refund_note = wxpay.callback(headers, body)
    assert refund_note is not None and refund_note["event_type"] == "REFUND.SUCCESS"
    assert refund_note["resource"]["out_refund_no"] == f"{prefix}RF01"
    code, message = wxpay.query_refund(out_refund_no=f"{prefix}RF01")
    assert code == 200 and json.loads(message)["status"] == "SUCCESS"
    code, message = wxpay.refund(
        out_refund_no=f"{prefix}RF02",
        amount={"refund": 61, "total": 100, "currency": "CNY"},
        out_trade_no=order,
    )
    assert code == 400 and json.loads(message)["code"] == "INVALID_REQUEST"

    code, message = wxpay.trade_bill(bill_date=txn["success_time"][:10])
    assert code == 200
    bill = json.loads(message)
    code, content = wxpay.download_bill(bill["download_url"])
    assert code == 200 and isinstance(content, bytes) and content[:2] == b"\x1f\x8b"  # gzip, unsigned

    # the SDK really verifies: a response with a broken signature makes it raise
    _control(base, "/_sandbox/faults", {"next_call": "bad_signature"})
    with pytest.raises(Exception, match="failed to verify the signature"):
        wxpay.query(out_trade_no=order)
    code, _ = wxpay.query(out_trade_no=order)
    assert code == 200


def test_public_key_mode(sandbox: tuple[str, dict[str, str]], receiver: tuple[str, Capture]) -> None:
    base, creds = sandbox
    url, captured = receiver
    _control(base, "/_sandbox/settings", {"callback_key": "auto"})
    wxpay = _sdk(base, creds, url, mode="public_key")
    _lifecycle(wxpay, base, captured, "PK")
    assert wxpay._core._certificates == []  # never needed a certificate


def test_certificate_mode(
    sandbox: tuple[str, dict[str, str]], receiver: tuple[str, Capture], tmp_path: Path
) -> None:
    base, creds = sandbox
    url, captured = receiver
    shutil.copy(KEYS / "wxgo_cert.pem", tmp_path / "D7CE59D1F522D701.pem")
    _control(base, "/_sandbox/settings", {"callback_key": "certificate"})
    wxpay = _sdk(base, creds, url, mode="certificate", cert_dir=tmp_path)
    _lifecycle(wxpay, base, captured, "CT")
    from minigate.providers.wechatpay import signing

    serial = signing.certificate_serial(signing.load_certificate(creds["platform_certificate"]))
    assert [format(c.serial_number, "X") for c in wxpay._core._certificates] == [serial]
    assert (tmp_path / f"{serial}.pem").read_text().strip() == creds["platform_certificate"].strip()


def test_public_key_sdk_follows_mixed_callbacks(
    sandbox: tuple[str, dict[str, str]], receiver: tuple[str, Capture]
) -> None:
    """During WeChat's migration callbacks may be signed by either key; a public-key SDK fetches the cert."""
    base, creds = sandbox
    url, captured = receiver
    _control(base, "/_sandbox/settings", {"callback_key": "mixed"})
    wxpay = _sdk(base, creds, url, mode="public_key")
    serials = set()
    for i in range(2):
        order = f"MIX{i}ORDER"
        _control(base, "/_sandbox/settings", {"callback_key": "auto"})
        assert (
            wxpay.pay(
                description="x",
                out_trade_no=order,
                amount={"total": 1},
                payer={"openid": "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o"},
            )[0]
            == 200
        )
        _control(base, "/_sandbox/settings", {"callback_key": "mixed"})
        _control(base, "/_sandbox/pay", {"out_trade_no": order})
        headers, body = _next_notification(captured)
        serials.add(headers["Wechatpay-Serial"])
        result = wxpay.callback(headers, body)
        assert result is not None and result["resource"]["out_trade_no"] == order
    assert creds["platform_public_key_id"] in serials and len(serials) == 2
    _control(base, "/_sandbox/settings", {"callback_key": "auto"})

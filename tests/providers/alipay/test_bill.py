"""Alipay trade bill: render/parse round trip, validation, and the download through the provider."""

from __future__ import annotations

import datetime as dt
import io
import zipfile
from pathlib import Path

import httpx
import pytest
from starlette.applications import Starlette
from starlette.routing import Mount

from minigate.domain.results import BillRow
from minigate.errors import ProviderUnavailable
from minigate.providers.alipay import bill
from minigate.providers.alipay.config import AlipayConfig
from minigate.providers.alipay.provider import AlipayProvider
from minigate.providers.bases.payment import CreateOrderRequest, RefundRequest
from minigate.simulators._core import Clock, CredentialStore, Faults
from minigate.simulators.alipay import AlipaySimulator

ROWS = [
    BillRow("2024-05-13 17:50:00", "ORDER1", "2024051322001468450512505578", "SUCCESS", 8888, fee=53),
    BillRow("2024-05-13 18:00:00", "ORDER1", "2024051322001468450512505578", "REFUND", 8888, refund_amount=1000,
            out_refund_no="R1"),
    BillRow("2024-05-13 19:00:00", "ORDER2", "2024051322001468450512505579", "SUCCESS", 1, fee=0),
]


def test_round_trip_zip_of_gbk_csv() -> None:
    raw = bill.render_trade_bill(ROWS, seller_id="2088123412341234", bill_date=dt.date(2024, 5, 13),
                                 extra={"ORDER1": {"商品名称": "测试商品"}})
    with zipfile.ZipFile(io.BytesIO(raw)) as archive:
        names = archive.namelist()
        assert names == ["2088123412341234_20240513_业务明细.csv", "2088123412341234_20240513_业务明细(汇总).csv"]
        text = archive.read(names[0]).decode("gbk")
    assert "#交易合计：2笔，商家实收共88.89元" in text and "#退款合计：1笔，商家实收共-10.00元" in text
    assert "测试商品" in text
    assert bill.decode_bill_zip(raw) == ROWS


def test_parser_checks_totals_and_shape() -> None:
    text = bill.render_trade_bill(ROWS)
    with zipfile.ZipFile(io.BytesIO(text)) as archive:
        csv_text = archive.read(archive.namelist()[0]).decode("gbk")
    with pytest.raises(bill.BillFormatError):
        bill.parse_trade_bill(csv_text.replace("交易合计：2笔", "交易合计：3笔"))
    with pytest.raises(bill.BillFormatError):
        bill.parse_trade_bill(csv_text.replace("商家实收共-10.00元", "商家实收共-10.01元"))
    with pytest.raises(bill.BillFormatError):
        bill.parse_trade_bill(csv_text.replace("支付宝交易号", "交易号"))
    with pytest.raises(bill.BillFormatError):
        bill.parse_trade_bill(csv_text.split("#-----------------------------------------业务明细列表结束")[0])
    with pytest.raises(bill.BillFormatError):
        bill.decode_bill_zip(b"not a zip")
    assert bill.parse_trade_bill(csv_text) == ROWS
    with pytest.raises(ValueError):
        bill.render_trade_bill(ROWS, extra={"ORDER1": {"商品名称": "a,b"}})


def test_download_url_host_check() -> None:
    base = "https://openapi.alipay.com/gateway.do"
    assert bill.check_download_url("http://dwbillcenter.alipay.com/downloadBillFile.resource?x=1", base)
    assert bill.check_download_url("http://openapi.alipay.com/x", base)
    for url in ("http://evil.example/x", "file:///etc/passwd", "ftp://dwbillcenter.alipay.com/x", "/relative"):
        with pytest.raises(bill.BillFormatError):
            bill.check_download_url(url, base)


async def test_download_bill_from_the_simulator(tmp_path: Path) -> None:
    sim = AlipaySimulator(CredentialStore(tmp_path), clock=Clock(), faults=Faults())
    app = Starlette(routes=[Mount("/alipay", app=sim.app)])
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://sandbox") as http:
        p = AlipayProvider(AlipayConfig.model_validate(sim.credentials() | {"base_url": "http://sandbox/alipay/gateway.do"}), http)
        for no, amount in (("B1", 1000), ("B2", 250)):
            await p.create_order(CreateOrderRequest(no, amount, "账单,测试", "http://testserver/n", "0abc"))
            await http.post("/alipay/_sandbox/pay", json={"out_trade_no": no})
        await p.refund(RefundRequest("B1", "RB1", 300, 1000))
        today = dt.datetime.fromtimestamp(sim.now(), dt.timezone(dt.timedelta(hours=8))).date()
        rows = await p.download_bill(today)
        assert [(r.out_trade_no, r.trade_state, r.amount, r.refund_amount, r.out_refund_no) for r in rows] == [
            ("B1", "SUCCESS", 1000, 0, None), ("B1", "REFUND", 1000, 300, "RB1"), ("B2", "SUCCESS", 250, 0, None)]
        assert rows[0].fee == 6
        assert await p.download_bill(today - dt.timedelta(days=3)) == []
        # the link is short-lived: the simulator refuses it after bill_url_ttl_seconds
        answer = await p.api.call(bill.BILL_METHOD, bill.bill_query_biz(today))
        url = answer.data["bill_download_url"]
        assert url.startswith("http://sandbox/alipay/downloadBillFile.resource?")
        sim.clock.advance(31)
        assert (await http.get(url)).status_code == 404
        await http.post("/alipay/_sandbox/faults", json={"next_call": "http_500"})
        with pytest.raises(ProviderUnavailable):
            await p.download_bill(today)
        bad = await p.api.call(bill.BILL_METHOD, {"bill_type": "signcustomer", "bill_date": "2024-05-13"})
        assert bad.error is not None

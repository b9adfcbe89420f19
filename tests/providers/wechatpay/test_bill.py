"""Trade bill: render/parse round trip, exact amounts, hash check, the signed download flow."""

from __future__ import annotations

import gzip
import hashlib
from datetime import date

import pytest

from minigate.domain.results import BillRow
from minigate.errors import ProviderUnavailable
from minigate.providers.wechatpay import bill
from tests.providers.wechatpay.fake_wechat import FakeWeChat, make_provider, wire_response

ROWS = [
    BillRow(
        trade_time="2024-05-13 17:50:01",
        out_trade_no="ORDER20240513001",
        provider_trade_id="4200000000202405130000000001",
        trade_state="SUCCESS",
        amount=100,
        fee=1,
    ),
    BillRow(
        trade_time="2024-05-13 18:01:00",
        out_trade_no="ORDER20240513001",
        provider_trade_id="4200000000202405130000000001",
        trade_state="REFUND",
        amount=0,
        refund_amount=40,
        out_refund_no="R1",
        provider_refund_id="50000000382019052709732678859",
    ),
    BillRow(
        trade_time="2024-05-13 23:59:59",
        out_trade_no="BIG|1",
        provider_trade_id="4200000000202405130000000002",
        trade_state="SUCCESS",
        amount=9_999_999_999,
        fee=59_999_999,
    ),
]

# Hand-written in the documented layout (BOM, backticks, 5-decimal fee, trailer with "45.0"-style count).
SAMPLE = (
    "\ufeff" + ",".join(bill.HEADER) + "\r\n"
    "`2024-05-13 10:00:00,`wx1,`1900000001,`0,`,`4200000001,`T1,`oABC,`JSAPI,`SUCCESS,`OTHERS,`CNY,`12.34,"
    "`0.00,`0,`0,`0.00,`0.00,`,`,`商品,`,`0.07000,`0.60%,`12.34,`0.00,`\r\n"
    "`2024-05-13 11:00:00,`wx1,`1900000001,`0,`,`4200000001,`T1,`oABC,`JSAPI,`REFUND,`OTHERS,`CNY,`0.00,"
    "`0.00,`5000001,`R1,`0.05,`0.00,`ORIGINAL,`SUCCESS,`商品,`,`0.00000,`0.60%,`0.00,`0.05,`\r\n"
    "总交易单数,应结订单总金额,退款总金额,充值券退款总金额,手续费总金额,订单总金额,申请退款总金额\r\n"
    "`2.0,`12.34,`0.05,`0.0,`0.07,`12.34,`0.05\r\n"
).encode()


def test_render_then_parse_round_trips() -> None:
    content = bill.render_trade_bill(ROWS, appid="wxd678efh567hg6787", mchid="1900000001")
    assert content.startswith(b"\xef\xbb\xbf" + "交易时间,公众账号ID".encode())
    lines = content.decode().splitlines()
    assert lines[-2] == ",".join(bill.TRAILER_HEADER)
    assert lines[-1] == "`3,`100000000.99,`0.40,`0.00,`600000.00,`100000000.99,`0.40"
    assert all(line.startswith("`") for line in lines[1:-2])
    assert bill.parse_trade_bill(content) == ROWS


def test_parse_handwritten_sample_exactly() -> None:
    rows = bill.parse_trade_bill(SAMPLE)
    assert rows == [
        BillRow(
            trade_time="2024-05-13 10:00:00",
            out_trade_no="T1",
            provider_trade_id="4200000001",
            trade_state="SUCCESS",
            amount=1234,
            refund_amount=0,
            out_refund_no=None,
            provider_refund_id=None,
            fee=7,
        ),
        BillRow(
            trade_time="2024-05-13 11:00:00",
            out_trade_no="T1",
            provider_trade_id="4200000001",
            trade_state="REFUND",
            amount=0,
            refund_amount=5,
            out_refund_no="R1",
            provider_refund_id="5000001",
            fee=0,
        ),
    ]


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("`2.0,", "`3.0,"),  # row count differs from the trailer
        ("`0.07,`12.34", "`0.07,`12.35"),  # order total differs
        ("`2.0,`12.34", "`2.0,`12.30"),  # settlement total differs
        ("`0.05,`0.0,`0.07", "`0.06,`0.0,`0.07"),  # refund total differs
        ("`0.60%,`12.34,", "`0.60%,`12.345,"),  # three decimals in an amount column
        ("`0,`0,`0.00", "0,`0,`0.00"),  # a field without its backtick
    ],
)
def test_parse_refuses_inconsistent_bills(old: str, new: str) -> None:
    broken = SAMPLE.decode().replace(old, new, 1).encode()
    assert broken != SAMPLE
    with pytest.raises(bill.BillFormatError):
        bill.parse_trade_bill(broken)


def test_parse_refuses_missing_trailer() -> None:
    with pytest.raises(bill.BillFormatError):
        bill.parse_trade_bill(b"\n".join(SAMPLE.splitlines()[:-2]))


def test_gunzip_limit_and_garbage() -> None:
    packed = gzip.compress(b"x" * 10_000)
    assert bill.gunzip(packed) == b"x" * 10_000
    with pytest.raises(bill.BillFormatError):
        bill.gunzip(packed, limit=1_000)
    with pytest.raises(bill.BillFormatError):
        bill.gunzip(packed[:-12])


def test_download_path_keeps_only_path_and_query() -> None:
    url = "https://api.mch.weixin.qq.com/v3/billdownload/file?token=6XIv5TUPto7pByrTQKhd6kwvyKLG2uY2wMMR8cNXqaA_"
    assert (
        bill.download_path(url) == "/v3/billdownload/file?token=6XIv5TUPto7pByrTQKhd6kwvyKLG2uY2wMMR8cNXqaA_"
    )
    assert bill.download_path(
        "http://sandbox/wechatpay/v3/billdownload/file?token=a", prefix="/wechatpay"
    ) == ("/v3/billdownload/file?token=a")


def serve_bill(
    fake: FakeWeChat,
    content: bytes,
    *,
    hash_value: str | None = None,
    download_url: str = "https://api.mch.weixin.qq.com/v3/billdownload/file?token=T0K3N&x=1",
) -> None:
    fake.route(
        "GET",
        "/v3/bill/tradebill",
        200,
        {
            "hash_type": "SHA1",
            "hash_value": hash_value or hashlib.sha1(content).hexdigest(),
            "download_url": download_url,
        },
    )
    # the file is served unsigned, gzip'd, as WeChat does
    fake.routes[("GET", "/v3/billdownload/file")] = lambda _r: (
        200,
        wire_response(200, gzip.compress(content)),
    )


async def test_download_bill_end_to_end() -> None:
    fake = FakeWeChat()
    serve_bill(fake, bill.render_trade_bill(ROWS, appid="wxd678efh567hg6787", mchid="1900000001"))
    rows = await make_provider(fake).download_bill(date(2024, 5, 13))
    assert rows == ROWS
    locate, download = fake.calls
    assert locate.canonical == "/v3/bill/tradebill?bill_date=2024-05-13&bill_type=ALL&tar_type=GZIP"
    assert download.canonical == "/v3/billdownload/file?token=T0K3N&x=1"  # signed over path + query
    assert locate.signature_ok and download.signature_ok


async def test_download_goes_to_base_url_not_to_the_named_host() -> None:
    fake = FakeWeChat()
    serve_bill(
        fake, bill.render_trade_bill(ROWS), download_url="https://evil.example/v3/billdownload/file?token=Z"
    )
    assert (
        await make_provider(fake).download_bill(date(2024, 5, 13)) == ROWS
    )  # MockTransport asserts the prefix


async def test_wrong_hash_is_refused() -> None:
    fake = FakeWeChat()
    content = bill.render_trade_bill(ROWS)
    serve_bill(fake, content, hash_value=hashlib.sha1(content + b" ").hexdigest())
    with pytest.raises(ProviderUnavailable) as info:
        await make_provider(fake).download_bill(date(2024, 5, 13))
    assert "hash" in str(info.value)


async def test_bill_locator_must_be_signed() -> None:
    fake = FakeWeChat(tamper=lambda h, b: (h, b.replace(b"T0K3N", b"OTHER")))
    serve_bill(fake, bill.render_trade_bill(ROWS))
    with pytest.raises(ProviderUnavailable):
        await make_provider(fake).download_bill(date(2024, 5, 13))
    assert len(fake.calls) == 1  # the file was never fetched


async def test_no_bill_yet_raises() -> None:
    fake = FakeWeChat()
    fake.route("GET", "/v3/bill/tradebill", 400, {"code": "NO_STATEMENT_EXIST", "message": "账单文件不存在"})
    with pytest.raises(ProviderUnavailable) as info:
        await make_provider(fake).download_bill(date(2024, 5, 13))
    assert info.value.provider_code == "NO_STATEMENT_EXIST"

"""WeChat Pay v3 trade bill (payment-protocols.md §1.9): locate, check, parse -- and render (simulator).

Flow: ``GET /v3/bill/tradebill?bill_date=…&bill_type=ALL&tar_type=GZIP`` (a normal signed API call) answers
``{"hash_type":"SHA1","hash_value":…,"download_url":…}``; the file is fetched from the *path and query* of
``download_url`` on our own ``base_url`` (never from whatever host the URL names), signed over that path and
query, and is itself unsigned: its integrity comes from ``sha1(decompressed) == hash_value``.

File format (wechatpay-php ``tests/fixtures/bill.ALL.csv``): UTF-8 with BOM, a header row, data rows whose
every field starts with a backtick, amounts in yuan, then a trailer header (总交易单数,…) and a totals row.
:func:`render_trade_bill` writes exactly what :func:`parse_trade_bill` reads, so the simulator and the client
stay in step.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import zlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any
from urllib.parse import urlsplit

from minigate.domain.results import BillRow
from minigate.money import fen_to_yuan, yuan_to_fen

__all__ = [
    "BILL_PATH",
    "HEADER",
    "MAX_BILL_BYTES",
    "TRAILER_HEADER",
    "BillFormatError",
    "BillInfo",
    "bill_query",
    "decode_trade_bill",
    "download_path",
    "gunzip",
    "parse_bill_info",
    "parse_trade_bill",
    "render_trade_bill",
    "verify_hash",
]

BILL_PATH = "/v3/bill/tradebill"
#: Decompressed bills larger than this are refused (a gzip bomb must not exhaust memory).
MAX_BILL_BYTES = 256 * 1024 * 1024

HEADER: tuple[str, ...] = tuple(
    "交易时间,公众账号ID,商户号,特约商户号,设备号,微信订单号,商户订单号,用户标识,交易类型,交易状态,付款银行,"
    "货币种类,应结订单金额,代金券金额,微信退款单号,商户退款单号,退款金额,充值券退款金额,退款类型,退款状态,"
    "商品名称,商户数据包,手续费,费率,订单金额,申请退款金额,费率备注".split(",")
)
TRAILER_HEADER: tuple[str, ...] = tuple(
    "总交易单数,应结订单总金额,退款总金额,充值券退款总金额,手续费总金额,订单总金额,申请退款总金额".split(",")
)
_BOM = "\ufeff"
_ALLOWED_HASHES = {"SHA1": "sha1", "SHA256": "sha256"}
_AMOUNT_2DP = re.compile(r"^\d+(\.\d{1,2})?$")


class BillFormatError(ValueError):
    """The bill file (or its locator) is not what WeChat documents, or fails its hash."""


@dataclass(frozen=True, slots=True)
class BillInfo:
    hash_type: str
    hash_value: str
    download_url: str


def bill_query(bill_date: date, bill_type: str = "ALL") -> dict[str, str]:
    return {"bill_date": bill_date.isoformat(), "bill_type": bill_type, "tar_type": "GZIP"}


def parse_bill_info(data: Any) -> BillInfo:
    if not isinstance(data, dict):
        raise BillFormatError("bill answer is not an object")
    values = [data.get(k) for k in ("hash_type", "hash_value", "download_url")]
    if not all(isinstance(v, str) and v for v in values):
        raise BillFormatError("bill answer lacks hash_type, hash_value or download_url")
    hash_type, hash_value, url = (str(v) for v in values)
    if hash_type.upper() not in _ALLOWED_HASHES:
        raise BillFormatError("unsupported bill hash_type")
    return BillInfo(hash_type.upper(), hash_value.lower(), url)


def download_path(download_url: str, *, prefix: str = "") -> str:
    """Path + query of ``download_url`` (what is requested on our base_url and what is signed).

    If the URL already carries our base_url's path prefix (a simulator mounted under ``/wechatpay`` that
    echoes its full URL), the prefix is removed so it is not doubled.
    """
    parts = urlsplit(download_url)
    path = parts.path or "/"
    if not path.startswith("/"):
        raise BillFormatError("download_url has no absolute path")
    prefix = prefix.rstrip("/")
    if prefix and path.startswith(prefix + "/"):
        path = path[len(prefix):]
    return f"{path}?{parts.query}" if parts.query else path


def gunzip(raw: bytes, *, limit: int = MAX_BILL_BYTES) -> bytes:
    """Decompress a gzip file; data that is not gzip (already decoded by the transport) is returned as is."""
    if not raw.startswith(b"\x1f\x8b"):
        return raw
    inflater = zlib.decompressobj(wbits=31)
    try:
        out = inflater.decompress(raw, limit + 1)
    except zlib.error as exc:
        raise BillFormatError("bill file is not valid gzip") from exc
    if len(out) > limit or inflater.unconsumed_tail:
        raise BillFormatError("bill file too large once decompressed")
    if not inflater.eof:
        raise BillFormatError("bill file is truncated")
    return out


def verify_hash(content: bytes, info: BillInfo) -> None:
    digest = hashlib.new(_ALLOWED_HASHES[info.hash_type], content).hexdigest()
    if not hmac.compare_digest(digest.encode(), info.hash_value.encode()):
        raise BillFormatError("bill file hash does not match hash_value")


def decode_trade_bill(raw: bytes, info: BillInfo) -> list[BillRow]:
    """gunzip -> hash check -> parse (CPU work: run it off the event loop for big bills)."""
    content = gunzip(raw)
    verify_hash(content, info)
    return parse_trade_bill(content)


def _fen(text: str, column: str) -> int:
    if _AMOUNT_2DP.match(text):
        return yuan_to_fen(text)
    raise BillFormatError(f"{column}: not a yuan amount")


def _fee_fen(text: str) -> int:
    """手续费 is written with 5 decimals (``0.01000``); WeChat charges whole fen, rounded half-up."""
    try:
        value = Decimal(text)
    except InvalidOperation as exc:
        raise BillFormatError("手续费: not a number") from exc
    if not value.is_finite() or value < 0:
        raise BillFormatError("手续费: not a number")
    return int((value * 100).quantize(Decimal(1), rounding=ROUND_HALF_UP))


def _total(text: str) -> Decimal:
    try:
        return Decimal(text.lstrip("`"))
    except InvalidOperation as exc:
        raise BillFormatError("bill totals are not numbers") from exc


def _opt(text: str) -> str | None:
    return None if text in ("", "0") else text


def parse_trade_bill(content: bytes | str) -> list[BillRow]:
    """Parse a trade bill (``bill_type`` ALL/SUCCESS/REFUND) and check its totals line."""
    text = content.decode("utf-8") if isinstance(content, bytes) else content
    lines = [line.rstrip("\r") for line in text.removeprefix(_BOM).split("\n")]
    while lines and not lines[-1]:
        lines.pop()
    if not lines:
        raise BillFormatError("empty bill")
    header = lines[0].split(",")
    index = {name: i for i, name in enumerate(header)}
    needed = ("交易时间", "微信订单号", "商户订单号", "交易状态", "订单金额", "退款金额", "微信退款单号",
              "商户退款单号", "手续费")
    if any(name not in index for name in needed):
        raise BillFormatError("bill header lacks a required column")
    rows: list[BillRow] = []
    settled = 0
    totals: list[str] | None = None
    for number, line in enumerate(lines[1:], start=2):
        if line.startswith(TRAILER_HEADER[0]):
            if number + 1 > len(lines):
                raise BillFormatError("bill totals line missing")
            totals = lines[number].split(",")
            if number + 1 != len(lines):
                raise BillFormatError("data after the bill totals")
            break
        if not line.startswith("`"):
            raise BillFormatError(f"line {number}: field without backtick")
        fields = line[1:].split(",`")
        if len(fields) != len(header):
            raise BillFormatError(f"line {number}: {len(fields)} fields, header has {len(header)}")

        def col(name: str, f: Sequence[str] = fields) -> str:
            return f[index[name]]

        settled += _fen(col("应结订单金额"), "应结订单金额") if "应结订单金额" in index else 0
        rows.append(BillRow(
            trade_time=col("交易时间"), out_trade_no=col("商户订单号"), provider_trade_id=col("微信订单号"),
            trade_state=col("交易状态"), amount=_fen(col("订单金额"), "订单金额"),
            refund_amount=_fen(col("退款金额"), "退款金额"), out_refund_no=_opt(col("商户退款单号")),
            provider_refund_id=_opt(col("微信退款单号")), fee=_fee_fen(col("手续费")),
        ))
    if totals is None or len(totals) != len(TRAILER_HEADER):
        raise BillFormatError("bill totals line missing or malformed")
    sums = dict(zip(TRAILER_HEADER, (_total(v) for v in totals), strict=True))
    if sums["总交易单数"] != len(rows):
        raise BillFormatError("bill row count differs from its totals line")
    if "应结订单金额" in index and sums["应结订单总金额"] * 100 != settled:
        raise BillFormatError("bill settlement total differs from its rows")
    if sums["订单总金额"] * 100 != sum(r.amount for r in rows):
        raise BillFormatError("bill order total differs from its rows")
    if sums["退款总金额"] * 100 != sum(r.refund_amount for r in rows):
        raise BillFormatError("bill refund total differs from its rows")
    return rows


def _field(value: str) -> str:
    if ",`" in value or "\n" in value or "\r" in value:
        raise ValueError("bill field contains a separator")
    return "`" + value


def render_trade_bill(rows: Iterable[BillRow], *, appid: str = "", mchid: str = "",
                      extra: Mapping[str, Mapping[str, str]] | None = None) -> bytes:
    """The bill file (before gzip) for ``rows``; ``extra[out_trade_no]`` may fill other columns by name."""
    items = list(rows)
    out = [_BOM + ",".join(HEADER)]
    for row in items:
        refunded = row.out_refund_no is not None or row.refund_amount > 0
        amount, refund = fen_to_yuan(row.amount), fen_to_yuan(row.refund_amount)
        values = {
            "交易时间": row.trade_time, "公众账号ID": appid, "商户号": mchid, "特约商户号": "0",
            "设备号": "", "微信订单号": row.provider_trade_id, "商户订单号": row.out_trade_no,
            "用户标识": "", "交易类型": "JSAPI", "交易状态": row.trade_state, "付款银行": "OTHERS",
            "货币种类": "CNY", "应结订单金额": amount, "代金券金额": "0.00",
            "微信退款单号": row.provider_refund_id or "0", "商户退款单号": row.out_refund_no or "0",
            "退款金额": refund, "充值券退款金额": "0.00", "退款类型": "ORIGINAL" if refunded else "",
            "退款状态": "SUCCESS" if refunded else "", "商品名称": "", "商户数据包": "",
            "手续费": f"{fen_to_yuan(row.fee)}000", "费率": "0.60%", "订单金额": amount,
            "申请退款金额": refund, "费率备注": "",
        }
        values.update((extra or {}).get(row.out_trade_no, {}))
        out.append(",".join(_field(values[name]) for name in HEADER))
    out.append(",".join(TRAILER_HEADER))
    amounts = fen_to_yuan(sum(r.amount for r in items))
    refunds = fen_to_yuan(sum(r.refund_amount for r in items))
    fees = fen_to_yuan(sum(r.fee for r in items))
    totals = (str(len(items)), amounts, refunds, "0.00", fees, amounts, refunds)
    out.append(",".join(_field(v) for v in totals))
    return ("\n".join(out) + "\n").encode("utf-8")

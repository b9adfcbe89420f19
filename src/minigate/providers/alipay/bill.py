"""Alipay trade bill (payment-protocols.md §2.6): locate, download, parse -- and render (simulator).

Flow: ``alipay.data.dataservice.bill.downloadurl.query`` (a normal signed call, ``bill_type=trade``) answers a
short-lived ``bill_download_url``; the file is fetched with a plain GET (the URL carries its own token and is
not signed -- its integrity rests on the signed answer that named it). We only fetch URLs on the host of our
``base_url`` or on Alipay's own domains (:data:`ALLOWED_BILL_HOST_SUFFIXES`), never wherever an answer points.

**File format: an explicit, documented guess** (§2.6 [U], §5.4: "zip/GBK format" unconfirmed). It follows
the commonly seen layout of Alipay's downloaded "业务明细" bills:

* a zip holding ``<seller_id>_<yyyymmdd>_业务明细.csv`` (and a ``…(汇总).csv`` summary we ignore), GBK encoded;
* ``#`` comment lines (title, account, period), then the header row starting ``支付宝交易号``, then data rows
  whose values may carry trailing tabs/spaces (Alipay pads them so spreadsheets keep long numbers as text);
* ``#-----…业务明细列表结束…`` and the totals ``#交易合计：N笔，商家实收共X元…`` / ``#退款合计：M笔，商家实收共-Y元…``.

Rows: 业务类型 ``交易`` (a payment: 商家实收 = amount) or ``退款`` (商家实收 = -refund, 退款批次号/请求号 =
out_request_no). 服务费 is written negative for payments. :func:`render_trade_bill` writes exactly what
:func:`parse_trade_bill` reads, so simulator and client stay in step; the parser matches columns by name and
ignores unknown ones, so a real file with more columns still parses.
"""

from __future__ import annotations

import csv
import io
import re
import zipfile
from collections.abc import Iterable, Mapping
from datetime import date
from decimal import Decimal, InvalidOperation
from urllib.parse import urlsplit

from minigate.domain.results import BillRow
from minigate.money import fen_to_yuan

__all__ = [
    "ALLOWED_BILL_HOST_SUFFIXES",
    "BILL_METHOD",
    "HEADER",
    "MAX_BILL_BYTES",
    "BillFormatError",
    "bill_query_biz",
    "check_download_url",
    "decode_bill_zip",
    "parse_trade_bill",
    "render_trade_bill",
]

BILL_METHOD = "alipay.data.dataservice.bill.downloadurl.query"
ALLOWED_BILL_HOST_SUFFIXES: tuple[str, ...] = (".alipay.com", ".alipaydev.com")
#: Uncompressed bills larger than this are refused (a zip bomb must not exhaust memory).
MAX_BILL_BYTES = 256 * 1024 * 1024
ENCODING = "gbk"

HEADER: tuple[str, ...] = tuple(
    "支付宝交易号,商户订单号,业务类型,商品名称,创建时间,完成时间,门店编号,门店名称,操作员,终端号,对方账户,"
    "订单金额（元）,商家实收（元）,支付宝红包（元）,集分宝（元）,支付宝优惠（元）,商家优惠（元）,券核销金额（元）,"
    "券名称,商家红包消费金额（元）,卡消费金额（元）,退款批次号/请求号,服务费（元）,分润（元）,备注".split(",")
)
_NEEDED = ("支付宝交易号", "商户订单号", "业务类型", "完成时间", "订单金额（元）", "商家实收（元）",
           "退款批次号/请求号", "服务费（元）")
_LIST_END = "#-----------------------------------------业务明细列表结束------------------------------------"
_TOTAL = re.compile(r"^#(交易|退款)合计：(\d+)笔，商家实收共(-?\d+(?:\.\d+)?)元")


class BillFormatError(ValueError):
    """The bill file (or its locator) is not what we expect."""


def bill_query_biz(bill_date: date, bill_type: str = "trade") -> dict[str, str]:
    return {"bill_type": bill_type, "bill_date": bill_date.isoformat()}


def check_download_url(url: str, base_url: str,
                       allowed_suffixes: tuple[str, ...] = ALLOWED_BILL_HOST_SUFFIXES) -> str:
    """``url`` if it is http(s) on ``base_url``'s host or an Alipay domain; BillFormatError otherwise."""
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    if parts.scheme not in ("http", "https") or not host:
        raise BillFormatError("bill_download_url is not an http(s) URL")
    if host != (urlsplit(base_url).hostname or "").lower() and not host.endswith(allowed_suffixes):
        raise BillFormatError("bill_download_url points to a host that is not Alipay's")
    return url


def _fen(text: str, column: str) -> int:
    try:
        value = Decimal(text.strip() or "0")
    except InvalidOperation as exc:
        raise BillFormatError(f"{column}: not an amount") from exc
    if not value.is_finite() or value != value.quantize(Decimal("0.01")):
        raise BillFormatError(f"{column}: not an amount in fen")
    return int(value * 100)


def decode_bill_zip(raw: bytes, *, limit: int = MAX_BILL_BYTES) -> list[BillRow]:
    """Unzip, pick the detail CSV (not the summary), decode GBK, parse."""
    try:
        archive = zipfile.ZipFile(io.BytesIO(raw))
    except zipfile.BadZipFile as exc:
        raise BillFormatError("bill file is not a zip") from exc
    with archive:
        infos = archive.infolist()
        if len(infos) > 16:
            raise BillFormatError("bill zip holds too many files")
        details = [i for i in infos if "业务明细" in i.filename and "汇总" not in i.filename]
        if len(details) != 1:
            raise BillFormatError("bill zip does not hold exactly one 业务明细 CSV")
        info = details[0]
        if info.file_size > limit:
            raise BillFormatError("bill file too large once decompressed")
        with archive.open(info) as member:
            content = member.read(limit + 1)
    if len(content) > limit:
        raise BillFormatError("bill file too large once decompressed")
    try:
        return parse_trade_bill(content.decode(ENCODING))
    except UnicodeDecodeError as exc:
        raise BillFormatError("bill CSV is not GBK") from exc


def parse_trade_bill(text: str) -> list[BillRow]:
    """Parse the detail CSV text and check it against its totals lines."""
    lines = [line.rstrip("\r") for line in text.lstrip("\ufeff").split("\n")]
    start = next((i for i, line in enumerate(lines) if line.startswith("支付宝交易号")), None)
    if start is None:
        raise BillFormatError("bill has no 支付宝交易号 header row")
    header = [h.strip() for h in next(csv.reader([lines[start]]))]
    index = {name: i for i, name in enumerate(header)}
    if any(name not in index for name in _NEEDED):
        raise BillFormatError("bill header lacks a required column")
    rows: list[BillRow] = []
    totals: dict[str, tuple[int, int]] = {}
    ended = False
    for number, line in enumerate(lines[start + 1:], start=start + 2):
        if not line.strip():
            continue
        if line.startswith("#"):
            ended = ended or "业务明细列表结束" in line
            match = _TOTAL.match(line)
            if match:
                totals[match.group(1)] = (int(match.group(2)), _fen(match.group(3), "合计"))
            continue
        if ended:
            raise BillFormatError(f"line {number}: data after the end of the list")
        fields = [f.strip() for f in next(csv.reader([line]))]
        if len(fields) != len(header):
            raise BillFormatError(f"line {number}: {len(fields)} fields, header has {len(header)}")

        def col(name: str, f: list[str] = fields) -> str:
            return f[index[name]]

        kind = col("业务类型")
        if kind not in ("交易", "退款"):
            raise BillFormatError(f"line {number}: unknown 业务类型")
        received = _fen(col("商家实收（元）"), "商家实收（元）")
        refund = kind == "退款"
        rows.append(BillRow(
            trade_time=col("完成时间") or (col("创建时间") if "创建时间" in index else ""),
            out_trade_no=col("商户订单号"), provider_trade_id=col("支付宝交易号"),
            trade_state="REFUND" if refund else "SUCCESS",
            amount=_fen(col("订单金额（元）"), "订单金额（元）"),
            refund_amount=-received if refund else 0,
            out_refund_no=(col("退款批次号/请求号") or None) if refund else None,
            fee=abs(_fen(col("服务费（元）"), "服务费（元）")),
        ))
    if not ended or set(totals) != {"交易", "退款"}:
        raise BillFormatError("bill totals lines missing")
    payments = [r for r in rows if r.trade_state == "SUCCESS"]
    refunds = [r for r in rows if r.trade_state == "REFUND"]
    if totals["交易"] != (len(payments), sum(r.amount for r in payments)):
        raise BillFormatError("bill payment totals differ from its rows")
    if totals["退款"] != (len(refunds), -sum(r.refund_amount for r in refunds)):
        raise BillFormatError("bill refund totals differ from its rows")
    return rows


def _yuan(fen: int) -> str:
    return ("-" if fen < 0 else "") + fen_to_yuan(abs(fen))


def render_trade_bill(rows: Iterable[BillRow], *, seller_id: str = "", bill_date: date | None = None,
                      extra: Mapping[str, Mapping[str, str]] | None = None) -> bytes:
    """The zip (GBK CSVs) for ``rows``; ``extra[out_trade_no]`` may fill other columns by name."""
    items = list(rows)
    day = bill_date or date(1980, 1, 1)
    out = io.StringIO()
    out.write("#支付宝业务明细查询\n")
    out.write(f"#账号：[{seller_id}0156]\n")
    out.write(f"#起始日期：[{day:%Y年%m月%d日} 00:00:00]   终止日期：[{day:%Y年%m月%d日} 23:59:59]\n")
    out.write("#-----------------------------------------业务明细列表----------------------------------------\n")
    out.write(",".join(HEADER) + "\n")
    for row in items:
        refund = row.trade_state == "REFUND"
        values = dict.fromkeys(HEADER, "")
        values.update({
            "支付宝交易号": row.provider_trade_id, "商户订单号": row.out_trade_no,
            "业务类型": "退款" if refund else "交易", "创建时间": row.trade_time, "完成时间": row.trade_time,
            "订单金额（元）": fen_to_yuan(row.amount),
            "商家实收（元）": _yuan(-row.refund_amount if refund else row.amount),
            "退款批次号/请求号": (row.out_refund_no or "") if refund else "",
            "服务费（元）": _yuan(0 if refund else -row.fee), "分润（元）": "0.00",
        })
        for money in ("支付宝红包（元）", "集分宝（元）", "支付宝优惠（元）", "商家优惠（元）", "券核销金额（元）",
                      "商家红包消费金额（元）", "卡消费金额（元）"):
            values[money] = "0.00"
        values.update((extra or {}).get(row.out_trade_no, {}))
        for value in values.values():
            if any(c in value for c in ',"\r\n'):
                raise ValueError("bill field contains a separator")
        out.write(",".join(values[name] + "\t" for name in HEADER) + "\n")
    payments = [r for r in items if r.trade_state != "REFUND"]
    refunds = [r for r in items if r.trade_state == "REFUND"]
    out.write(_LIST_END + "\n")
    out.write(f"#交易合计：{len(payments)}笔，商家实收共{_yuan(sum(r.amount for r in payments))}元，商家优惠共0.00元\n")
    out.write(f"#退款合计：{len(refunds)}笔，商家实收共{_yuan(-sum(r.refund_amount for r in refunds))}元，"
              "商家优惠共0.00元\n")
    out.write(f"#导出时间：[{day:%Y年%m月%d日} 23:59:59]\n")
    summary = "#支付宝业务汇总查询\n门店编号,门店名称,交易订单总笔数,退款订单总笔数,实收金额（元）\n" \
        f"合计,,{len(payments)},{len(refunds)}," \
        f"{_yuan(sum(r.amount for r in payments) - sum(r.refund_amount for r in refunds))}\n"
    stem = f"{seller_id}_{day:%Y%m%d}"
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, text in ((f"{stem}_业务明细.csv", out.getvalue()), (f"{stem}_业务明细(汇总).csv", summary)):
            info = zipfile.ZipInfo(name, date_time=(day.year, day.month, day.day, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            info.flag_bits |= 0x800   # UTF-8 file names
            archive.writestr(info, text.encode(ENCODING))
    return buffer.getvalue()

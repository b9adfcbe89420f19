"""Wire-level rules of the JD Pay simulator (:mod:`minigate.simulators.jdpay`): records, validation of the
cashier form and the refund request, the inner XML fields of answers and notifications, the HTML pages.

No I/O and no Starlette app. Guesses (JD's code list, limits; payment-protocols.md §5.6) are marked ``[guess]``.
"""

from __future__ import annotations

import html
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

from minigate.money import MAX_AMOUNT_FEN, fen_to_yuan
from minigate.providers.jdpay.codes import SANDBOX_CODES, SUCCESS
from minigate.providers.jdpay.schemas import Value, WireFormatError, format_time, parse_time
from minigate.simulators._core import is_local_notify_url

__all__ = ["DEFAULT_EXPIRE_SECONDS", "Refund", "Trade", "cashier_page", "error_page", "parse_form",
           "problem", "refund_fields", "trade_fields", "validate_form", "validate_refund"]

#: Lifetime of a trade whose form carries no expireTime [guess].
DEFAULT_EXPIRE_SECONDS = 86400
_TRADE_NUM = re.compile(r"[0-9A-Za-z_\-]{1,50}")   # [guess] JD's exact tradeNum rule is not documented
_TIME = re.compile(r"\d{14}")
#: Form fields that must be identical when the same tradeNum is posted again (tradeTime may change).
COMPARED_FIELDS = ("amount", "currency", "tradeName", "notifyUrl", "userId", "orderType")


def problem(code: str) -> tuple[str, str]:
    return code, SANDBOX_CODES[code]


@dataclass
class Refund:
    trade_num: str
    o_trade_num: str
    amount: int
    currency: str
    trade_time: str
    notify_url: str | None
    note: str
    created_at: float
    due_at: float
    status: str = "0"  # 0 processing, 1 success, 2 failed

    def as_json(self) -> dict[str, Any]:
        return {"tradeNum": self.trade_num, "oTradeNum": self.o_trade_num, "amount": self.amount,
                "currency": self.currency, "tradeTime": self.trade_time, "status": self.status,
                "notifyUrl": self.notify_url, "note": self.note}


@dataclass
class Trade:
    params: dict[str, str]          # the decrypted, verified cashier form (without sign)
    created_at: float
    expires_at: float
    status: str = "0"               # 0 created, 1 processing, 2 success, 3 failed, 4 closed
    paid_at: float | None = None
    refunds: list[Refund] = field(default_factory=list)

    @property
    def trade_num(self) -> str:
        return self.params["tradeNum"]

    @property
    def amount(self) -> int:
        return int(self.params["amount"])

    @property
    def notify_url(self) -> str:
        return self.params["notifyUrl"]

    def refunded(self) -> int:
        return sum(r.amount for r in self.refunds if r.status != "2")

    def as_json(self) -> dict[str, Any]:
        return {"tradeNum": self.trade_num, "amount": self.amount, "currency": self.params.get("currency"),
                "status": self.status, "tradeName": self.params.get("tradeName"), "userId": self.params.get("userId"),
                "notifyUrl": self.notify_url, "callbackUrl": self.params.get("callbackUrl"),
                "created_at": self.created_at, "expires_at": self.expires_at, "paid_at": self.paid_at,
                "refunded": self.refunded(), "refunds": [r.as_json() for r in self.refunds]}


def parse_form(body: bytes) -> dict[str, str] | None:
    """An ``application/x-www-form-urlencoded`` body; None when a field repeats or it is not UTF-8."""
    try:
        pairs = parse_qsl(body.decode(), keep_blank_values=True, strict_parsing=False)
    except (UnicodeDecodeError, ValueError):
        return None
    form = dict(pairs)
    return form if len(form) == len(pairs) else None


def validate_form(form: Mapping[str, str], now: float) -> tuple[tuple[str, str] | None, float]:
    """Check the decrypted cashier form (§3.4 uniorder fields + callbackUrl). Returns (problem, expires_at)."""
    for name in ("tradeNum", "tradeName", "tradeTime", "amount", "currency", "callbackUrl", "notifyUrl"):
        if not form.get(name):
            return problem("PA0001"), 0.0
    amount = form["amount"]
    if not _TRADE_NUM.fullmatch(form["tradeNum"]) or not _TIME.fullmatch(form["tradeTime"]) \
            or not amount.isdigit() or not 0 < int(amount) <= MAX_AMOUNT_FEN or form["currency"] != "CNY" \
            or form.get("orderType", "0") not in ("0", "1") or not is_local_notify_url(form["notifyUrl"]) \
            or len(form["tradeName"]) > 256:
        return problem("PA0001"), 0.0
    expire = form.get("expireTime", "")
    if not expire:
        return None, now + DEFAULT_EXPIRE_SECONDS
    if not expire.isdigit():
        return problem("PA0001"), 0.0
    if len(expire) == 14:  # absolute yyyyMMddHHmmss (the §3.4 sample) [guess: both forms accepted]
        try:
            return None, parse_time(expire).timestamp()
        except WireFormatError:
            return problem("PA0001"), 0.0
    return None, now + int(expire)  # lifetime in seconds


def validate_refund(data: Mapping[str, Any]) -> tuple[str, str] | None:
    for name in ("tradeNum", "oTradeNum", "amount", "tradeTime"):
        if not isinstance(data.get(name), str) or not data[name]:
            return problem("PA0001")
    if not _TRADE_NUM.fullmatch(data["tradeNum"]) or not data["amount"].isdigit() or int(data["amount"]) <= 0 \
            or data.get("currency", "CNY") != "CNY" or not _TIME.fullmatch(data["tradeTime"]):
        return problem("PA0001")
    notify = data.get("notifyUrl")
    if notify and (not isinstance(notify, str) or not is_local_notify_url(notify)):
        return problem("PA0001")
    return None


def _result(code: str = SUCCESS, desc: str = "成功") -> tuple[str, Value]:
    return "result", [("code", code), ("desc", desc)]


def trade_fields(trade: Trade, *, merchant: str, desc: str = "成功") -> list[tuple[str, Value]]:
    """Inner fields of a payment query answer / payment notification (JD-4 order, sign added by the caller)."""
    fields: list[tuple[str, Value]] = [
        ("version", "V2.0"), ("merchant", merchant), _result(desc=desc), ("tradeNum", trade.trade_num),
        ("tradeType", "0"), ("amount", str(trade.amount)), ("currency", trade.params.get("currency", "CNY")),
        ("tradeTime", trade.params["tradeTime"]), ("note", trade.params.get("note", "")), ("status", trade.status)]
    if trade.paid_at is not None:
        fields.append(("payList", [("pay", [
            ("payType", "0"), ("amount", str(trade.amount)), ("currency", "CNY"),
            ("tradeTime", format_time(trade.paid_at)),
            ("detail", [("cardHolderName", "*沙"), ("cardHolderMobile", "138****0000"), ("cardHolderType", "0"),
                        ("cardHolderId", "****0000"), ("cardNo", "622588****0000"), ("bankCode", "CMB"),
                        ("cardType", "1")])])]))
    return fields


def refund_fields(refund: Refund, *, merchant: str, with_header: bool = True) -> list[tuple[str, Value]]:
    body: list[tuple[str, Value]] = [
        ("tradeNum", refund.trade_num), ("tradeType", "1"), ("oTradeNum", refund.o_trade_num),
        ("amount", str(refund.amount)), ("currency", refund.currency), ("tradeTime", refund.trade_time),
        ("note", refund.note), ("status", refund.status)]
    return [("version", "V2.0"), ("merchant", merchant), _result(), *body] if with_header else body


_PAGE = """<!DOCTYPE html><html lang="zh-CN"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width,initial-scale=1"><title>{title}</title></head>
<body>{body}</body></html>"""


def cashier_page(trade: Trade, pay_action: str) -> str:
    """The simulated H5 cashier: order number, amount and a "pay" button posting to ``/_sandbox/pay``."""
    body = (f"<h1>京东支付（沙箱）</h1><p>订单号：<span id=\"tradeNum\">{html.escape(trade.trade_num)}</span></p>"
            f"<p>商品：{html.escape(trade.params.get('tradeName', ''))}</p>"
            f"<p>金额：¥<span id=\"amount\">{fen_to_yuan(trade.amount)}</span></p>"
            f"<form method=\"POST\" action=\"{html.escape(pay_action)}\">"
            f"<input type=\"hidden\" name=\"out_trade_no\" value=\"{html.escape(trade.trade_num)}\">"
            "<button type=\"submit\">立即支付</button></form>")
    return _PAGE.format(title="京东支付收银台", body=body)


def error_page(code: str, desc: str) -> str:
    body = (f"<h1>支付请求失败</h1><p>错误码：<span id=\"code\">{html.escape(code)}</span></p>"
            f"<p>错误描述：<span id=\"desc\">{html.escape(desc)}</span></p>")
    return _PAGE.format(title="京东支付", body=body)

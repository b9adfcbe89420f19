"""Wire-level rules of the WeChat Pay v3 simulator (:mod:`minigate.simulators.wechatpay`).

The ``Order``/``Refund`` records, request validation (§1.4, §1.8), the Transaction and Refund objects
(§1.6, §1.8), the trade bill (§1.9), the handler ``Reply`` and the small helpers the handlers share.
No I/O and no Starlette app: those stay in :mod:`minigate.simulators.wechatpay`.

Guesses (see §5.1/§5.2 of the reference) are marked ``[guess]`` next to the error they produce.
"""

from __future__ import annotations

import re
import secrets
import string
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from minigate.domain.results import BillRow
from minigate.providers.wechatpay.bill import render_trade_bill
from minigate.simulators._core import is_local_notify_url, rfc3339

PREPAY_TTL = 7200
BILL_TOKEN_TTL = 300  # [guess] the real download_url lifetime is not documented in the reference
_ALNUM = string.ascii_letters + string.digits


def _digits(n: int) -> str:
    return "".join(secrets.choice(string.digits) for _ in range(n))


@dataclass
class Reply:
    status: int = 200
    json: Any = None
    raw: bytes | None = None
    signed: bool = True
    key: str | None = None  # force "certificate" / "public_key"
    error: tuple[int, str, str] | None = None
    detail: dict[str, Any] | None = field(default=None)


def err(status: int, code: str, message: str, detail: dict[str, Any] | None = None) -> Reply:
    return Reply(error=(status, code, message), detail=detail)


def _prepay_id(now: float) -> str:
    return "wx" + time.strftime("%Y%m%d%H%M%S", time.gmtime(now + 8 * 3600)) + secrets.token_hex(9)


# ---------------------------------------------------------------------- wire rules (§1.4, §1.6, §1.8, §1.9)

_OUT_TRADE_NO = re.compile(r"[0-9A-Za-z_\-*|]{6,32}")
_OUT_REFUND_NO = re.compile(r"[0-9A-Za-z_\-*|@]{1,64}")
Problem = tuple[int, str, str, dict[str, Any]]


def _param(field_path: str, issue: str, value: Any = None) -> Problem:
    detail = {"field": field_path, "value": value, "issue": issue, "location": "body"}
    return 400, "PARAM_ERROR", f"参数错误：{field_path} {issue}", detail


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def parse_time(value: Any) -> float | None:
    """RFC 3339 with an offset -> epoch seconds (None if malformed)."""
    import datetime as dt

    if not isinstance(value, str):
        return None
    try:
        parsed = dt.datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed.timestamp() if parsed.tzinfo is not None else None


def _check_notify_url(url: Any, field_path: str = "/notify_url") -> Problem | None:
    if not isinstance(url, str) or not url or len(url) > 255:
        return _param(field_path, "必须是不超过255字符的URL", url)
    if "?" in url or not is_local_notify_url(url):
        return _param(field_path, "必须为https地址（沙箱另接受回环地址的http），且不能携带参数", url)
    return None


def validate_prepay(data: dict[str, Any], merchant: dict[str, str]) -> Problem | None:
    for name in ("appid", "mchid", "description", "out_trade_no", "notify_url", "amount", "payer"):
        if name not in data:
            return _param(f"/{name}", "缺少必填字段")
    if data["mchid"] != merchant["mchid"]:
        return 400, "PARAM_ERROR", "mchid与请求签名中的商户号不一致", {"field": "/mchid", "location": "body"}
    if data["appid"] != merchant["appid"]:
        return 400, "APPID_MCHID_NOT_MATCH", "appid和mch_id不匹配", {"field": "/appid", "location": "body"}
    description = data["description"]
    if not isinstance(description, str) or not 1 <= len(description) <= 127:
        return _param("/description", "长度必须为1到127个字符", description)
    if not isinstance(data["out_trade_no"], str) or not _OUT_TRADE_NO.fullmatch(data["out_trade_no"]):
        return _param("/out_trade_no", "必须为6-32位数字、字母、_-*|", data["out_trade_no"])
    problem = _check_notify_url(data["notify_url"])
    if problem is not None:
        return problem
    amount = data["amount"]
    if not isinstance(amount, dict) or not _is_int(amount.get("total")) or amount["total"] < 1:
        return _param("/amount/total", "必须为大于0的整数（单位：分）", amount)
    if amount.get("currency", "CNY") != "CNY":
        return _param("/amount/currency", "仅支持CNY", amount.get("currency"))
    payer = data["payer"]
    if not isinstance(payer, dict) or not isinstance(payer.get("openid"), str) or not payer["openid"]:
        return _param("/payer/openid", "缺少必填字段", payer)
    if "attach" in data and (not isinstance(data["attach"], str) or len(data["attach"]) > 128):
        return _param("/attach", "长度不能超过128个字符", data["attach"])
    if "time_expire" in data and parse_time(data["time_expire"]) is None:
        return _param("/time_expire", "必须为rfc3339格式，如2018-06-08T10:34:56+08:00", data["time_expire"])
    return None


def validate_refund(data: dict[str, Any]) -> Problem | None:
    if not isinstance(data.get("out_refund_no"), str) or not _OUT_REFUND_NO.fullmatch(data["out_refund_no"]):
        return _param("/out_refund_no", "必须为1-64位数字、字母、_-|*@", data.get("out_refund_no"))
    if ("out_trade_no" in data) == ("transaction_id" in data):
        return _param("/out_trade_no", "transaction_id与out_trade_no必须二选一")
    ref = data.get("out_trade_no", data.get("transaction_id"))
    if not isinstance(ref, str) or not ref:
        return _param("/out_trade_no", "必须为非空字符串", ref)
    amount = data.get("amount")
    if not isinstance(amount, dict):
        return _param("/amount", "缺少必填字段")
    for name in ("refund", "total"):
        if not _is_int(amount.get(name)) or amount[name] < 1:
            return _param(f"/amount/{name}", "必须为大于0的整数（单位：分）", amount.get(name))
    if amount.get("currency") != "CNY":
        return _param("/amount/currency", "必填，仅支持CNY", amount.get("currency"))
    if "notify_url" in data:
        problem = _check_notify_url(data["notify_url"])
        if problem is not None:
            return problem
    if "reason" in data and (not isinstance(data["reason"], str) or len(data["reason"]) > 80):
        return _param("/reason", "长度不能超过80个字符", data["reason"])
    return None


@dataclass
class Refund:
    out_refund_no: str
    out_trade_no: str
    refund_id: str
    refund: int
    total: int
    notify_url: str | None
    reason: str
    created_at: float
    due_at: float
    status: str = "PROCESSING"
    success_time: float | None = None

    def _amount(self) -> dict[str, Any]:
        return {"total": self.total, "refund": self.refund, "payer_total": self.total,
                "payer_refund": self.refund}

    def as_json(self, order: Order) -> dict[str, Any]:
        """The Refund object of §1.8."""
        body: dict[str, Any] = {
            "refund_id": self.refund_id, "out_refund_no": self.out_refund_no,
            "transaction_id": order.transaction_id, "out_trade_no": self.out_trade_no,
            "channel": "ORIGINAL", "user_received_account": "支付用户零钱",
            "create_time": rfc3339(self.created_at), "status": self.status, "funds_account": "AVAILABLE",
            "amount": self._amount() | {"settlement_refund": self.refund, "settlement_total": self.total,
                                        "discount_refund": 0, "currency": "CNY", "refund_fee": 0, "from": []},
            "promotion_detail": [],
        }
        if self.success_time is not None:
            body["success_time"] = rfc3339(self.success_time)
        return body

    def notify_json(self, order: Order) -> dict[str, Any]:
        """The decrypted resource of a REFUND.SUCCESS notification (§1.8)."""
        return {"mchid": order.params["mchid"], "transaction_id": order.transaction_id,
                "out_trade_no": self.out_trade_no, "refund_id": self.refund_id,
                "out_refund_no": self.out_refund_no, "refund_status": self.status,
                "success_time": rfc3339(self.success_time or self.created_at),
                "user_received_account": "支付用户零钱", "amount": self._amount()}


@dataclass
class Order:
    params: dict[str, Any]
    created_at: float
    prepay_id: str
    prepay_expires_at: float
    time_expire: float | None = None
    trade_state: str = "NOTPAY"
    transaction_id: str | None = None
    success_time: float | None = None
    bank_type: str = "OTHERS"
    refunds: list[Refund] = field(default_factory=list)

    @property
    def out_trade_no(self) -> str:
        return str(self.params["out_trade_no"])

    @property
    def total(self) -> int:
        return int(self.params["amount"]["total"])

    @property
    def notify_url(self) -> str:
        return str(self.params["notify_url"])


_STATE_DESC = {"NOTPAY": "订单未支付", "SUCCESS": "支付成功", "REFUND": "转入退款", "CLOSED": "订单已关闭",
               "PAYERROR": "支付失败，请重新下单支付"}


def transaction_json(order: Order, merchant: dict[str, str]) -> dict[str, Any]:
    """The Transaction object of §1.6; unpaid orders omit transaction_id, success_time, payer, payer_total."""
    paid = order.transaction_id is not None
    body: dict[str, Any] = {"appid": order.params["appid"], "mchid": merchant["mchid"],
                            "out_trade_no": order.out_trade_no}
    if paid:
        body["transaction_id"] = order.transaction_id
    body |= {"trade_type": "JSAPI", "trade_state": order.trade_state,
             "trade_state_desc": _STATE_DESC[order.trade_state], "attach": order.params.get("attach", "")}
    if paid:
        body |= {"bank_type": order.bank_type, "success_time": rfc3339(order.success_time or 0),
                 "payer": {"openid": order.params["payer"]["openid"]}}
    amount: dict[str, Any] = {"total": order.total}
    if paid:
        amount["payer_total"] = order.total
    body["amount"] = amount | {"currency": "CNY", "payer_currency": "CNY"}
    return body


def _fee(fen: int) -> int:
    return (fen * 6 + 500) // 1000  # 0.6 % rate, rounded half up to the fen [guess: sandbox rate]


def bill_csv(orders: Iterable[Order], merchant: dict[str, str], bill_date: str,
             bill_type: str) -> bytes | None:
    """The trade bill of §1.9, rendered by the client's own :func:`render_trade_bill`. None: no rows."""
    rows: list[BillRow] = []
    extra: dict[str, dict[str, str]] = {}

    def day(epoch: float | None) -> str:
        return time.strftime("%Y-%m-%d", time.gmtime((epoch or 0) + 8 * 3600))

    def stamp(epoch: float | None) -> str:
        return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime((epoch or 0) + 8 * 3600))

    for order in orders:
        if order.transaction_id is None:
            continue
        extra[order.out_trade_no] = {"用户标识": order.params["payer"]["openid"], "付款银行": order.bank_type,
                                     "商品名称": order.params["description"],
                                     "商户数据包": order.params.get("attach", "")}
        if bill_type in ("ALL", "SUCCESS") and day(order.success_time) == bill_date:
            rows.append(BillRow(trade_time=stamp(order.success_time), out_trade_no=order.out_trade_no,
                                provider_trade_id=order.transaction_id, trade_state="SUCCESS",
                                amount=order.total, fee=_fee(order.total)))
        for refund in order.refunds:
            if bill_type in ("ALL", "REFUND") and refund.success_time is not None \
                    and day(refund.success_time) == bill_date:
                rows.append(BillRow(trade_time=stamp(refund.success_time), out_trade_no=order.out_trade_no,
                                    provider_trade_id=order.transaction_id, trade_state="REFUND",
                                    amount=order.total, refund_amount=refund.refund,
                                    out_refund_no=refund.out_refund_no, provider_refund_id=refund.refund_id))
    if not rows:
        return None
    return render_trade_bill(rows, appid=merchant["appid"], mchid=merchant["mchid"], extra=extra)

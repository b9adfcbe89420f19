"""Wire-level rules of the Alipay simulator (:mod:`minigate.simulators.alipay`).

Credentials and the sandbox CA, the ``Trade``/``Refund`` records, answer builders, and the method handlers
(:class:`MethodHandlers`, a mixin). No Starlette app and no signing of answers: those stay in
:mod:`minigate.simulators.alipay`.

Guesses (payment-protocols.md §5.4) are marked ``[guess]`` next to the answer they produce.
"""

from __future__ import annotations

import abc
import base64
import datetime as dt
import hashlib
import hmac
import re
import secrets
import string
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from minigate.domain.results import BillRow
from minigate.money import fen_to_yuan, yuan_to_fen
from minigate.providers.alipay import signing
from minigate.providers.alipay.bill import render_trade_bill
from minigate.simulators._core import generate_rsa_private_key_pem, is_local_notify_url, public_key_pem

__all__ = ["CODE_TTL_SECONDS", "MERCHANT_FIELDS", "METHODS", "MethodHandlers", "Refund", "Trade",
           "biz_error", "create_credentials", "gateway_error", "ok", "render_bill"]

MERCHANT_FIELDS = ("app_id", "seller_id", "app_private_key", "alipay_public_key")
CODE_TTL_SECONDS = 300
METHODS = ("alipay.trade.create", "alipay.trade.query", "alipay.trade.close", "alipay.trade.refund",
           "alipay.trade.fastpay.refund.query", "alipay.data.dataservice.bill.downloadurl.query",
           "alipay.system.oauth.token")
_ALNUM = string.ascii_letters + string.digits
_OUT_TRADE_NO = re.compile(r"[0-9A-Za-z_]{1,64}")
_OUT_REQUEST_NO = re.compile(r"[0-9A-Za-z_\-]{1,64}")
_MAX_TOTAL = 10_000_000_000


def _digits(n: int) -> str:
    return "".join(secrets.choice(string.digits) for _ in range(n))


# ---------------------------------------------------------------------- credentials and the sandbox CA (§2.8)

def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COUNTRY_NAME, "CN"),
                      x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Ant Financial"),
                      x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "Certification Authority"),
                      x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _pem(cert: x509.Certificate) -> str:
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def _issue(issuer_key: Any, issuer: x509.Name, subject: x509.Name, public_key: Any, *, ca: bool,
           days: int = 3650) -> x509.Certificate:
    now = dt.datetime.now(dt.UTC)
    builder = (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer).public_key(public_key)
               .serial_number(x509.random_serial_number())
               .not_valid_before(now - dt.timedelta(days=1)).not_valid_after(now + dt.timedelta(days=days))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    return builder.sign(issuer_key, hashes.SHA256())


def create_credentials() -> dict[str, Any]:
    """Fresh app and Alipay key pairs, plus a small CA issuing the certificate-mode material.

    The root file holds an RSA root (counted in ``alipay_root_cert_sn``) and an ECDSA root (skipped, as the
    real file's SM2/ECDSA roots are), so the root SN is computed the real way.
    """
    app_id = "2021" + _digits(12)
    seller_id = "2088" + _digits(12)
    app_key, alipay_key = generate_rsa_private_key_pem(), generate_rsa_private_key_pem()
    root_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    root_name = _name("Ant Financial Certification Authority R1 (sandbox)")
    root = _issue(root_key, root_name, root_name, root_key.public_key(), ca=True)
    ec_key = ec.generate_private_key(ec.SECP256R1())
    ec_name = _name("Ant Financial Certification Authority E1 (sandbox)")
    ec_root = _issue(ec_key, ec_name, ec_name, ec_key.public_key(), ca=True)

    def leaf(private_pem: str, cn: str) -> str:
        key = serialization.load_pem_private_key(private_pem.encode(), password=None)
        subject = x509.Name([x509.NameAttribute(NameOID.COUNTRY_NAME, "CN"),
                             x509.NameAttribute(NameOID.ORGANIZATION_NAME, "minigate sandbox"),
                             x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "Alipay"),
                             x509.NameAttribute(NameOID.COMMON_NAME, cn)])
        return _pem(_issue(root_key, root_name, subject, key.public_key(), ca=False))

    merchant = {"app_id": app_id, "seller_id": seller_id, "app_private_key": app_key,
                "alipay_public_key": public_key_pem(alipay_key)}
    simulator = {"alipay_private_key": alipay_key, "app_public_key": public_key_pem(app_key),
                 "user_secret": secrets.token_hex(32),
                 "encrypt_key": base64.b64encode(secrets.token_bytes(16)).decode(),
                 "app_cert": leaf(app_key, f"{seller_id}-{app_id}"),
                 "alipay_cert": leaf(alipay_key, f"支付宝(中国)网络技术有限公司-{seller_id}"),
                 "alipay_root_cert": _pem(root) + "\n" + _pem(ec_root)}
    return {"merchant": merchant, "simulator": simulator}


# ---------------------------------------------------------------------- records

@dataclass
class Refund:
    out_request_no: str
    amount: int
    at: float
    reason: str = ""


@dataclass
class Trade:
    out_trade_no: str
    trade_no: str
    biz: dict[str, Any]
    notify_url: str | None
    total: int
    buyer_field: str
    buyer: str
    created_at: float
    time_expire: float | None = None
    status: str = "WAIT_BUYER_PAY"
    paid_at: float | None = None
    closed_at: float | None = None
    buyer_user_id: str = ""
    refunds: list[Refund] = field(default_factory=list)

    @property
    def refunded(self) -> int:
        return sum(r.amount for r in self.refunds)


def ok(**fields: Any) -> dict[str, Any]:
    return {"code": "10000", "msg": "Success", **fields}


def biz_error(sub_code: str, sub_msg: str) -> dict[str, Any]:
    return {"code": "40004", "msg": "Business Failed", "sub_code": sub_code, "sub_msg": sub_msg}


def gateway_error(code: str, sub_code: str, sub_msg: str) -> dict[str, Any]:
    msg = {"20000": "Service Currently Unavailable", "40001": "Missing Required Arguments",
           "40002": "Invalid Arguments", "40006": "Insufficient Permissions"}.get(code, "Business Failed")
    return {"code": code, "msg": msg, "sub_code": sub_code, "sub_msg": sub_msg}


def _stamp(epoch: float | None) -> str:
    return signing.format_timestamp(epoch or 0)


def _amount(value: Any) -> int | None:
    if not isinstance(value, str | int | float) or isinstance(value, bool):
        return None
    try:
        fen = yuan_to_fen(str(value))
    except ValueError:
        return None
    return fen if 1 <= fen <= _MAX_TOTAL else None


def _fund_bill_list(trade: Trade) -> list[dict[str, str]]:
    return [{"amount": fen_to_yuan(trade.total), "fundChannel": "ALIPAYACCOUNT"}]


def trade_fields(trade: Trade) -> dict[str, Any]:
    """The fields a query answer and a notification share."""
    paid = trade.paid_at is not None
    fields: dict[str, Any] = {
        "trade_no": trade.trade_no, "out_trade_no": trade.out_trade_no, "trade_status": trade.status,
        "total_amount": fen_to_yuan(trade.total), "buyer_logon_id": "sbx***@sandbox.alipay.com",
        "buyer_pay_amount": fen_to_yuan(trade.total if paid else 0),
        "receipt_amount": fen_to_yuan(trade.total if paid else 0),
        "invoice_amount": fen_to_yuan(trade.total if paid else 0), "point_amount": "0.00",
    }
    if trade.buyer_field == "buyer_open_id":
        fields["buyer_open_id"] = trade.buyer
    return fields


def render_bill(trades: Iterable[Trade], seller_id: str, bill_date: str) -> bytes:
    """The trade bill of a day (``yyyy-MM-dd``) or month (``yyyy-MM``), rendered by the client's own renderer."""
    def on_day(epoch: float | None) -> bool:
        return epoch is not None and signing.format_timestamp(epoch).startswith(bill_date)

    rows: list[BillRow] = []
    extra: dict[str, dict[str, str]] = {}
    for trade in trades:
        subject = str(trade.biz.get("subject", "")).replace(",", "，").replace('"', "'")
        extra[trade.out_trade_no] = {"商品名称": subject, "对方账户": "sbx***@sandbox.alipay.com"}
        if on_day(trade.paid_at):
            rows.append(BillRow(signing.format_timestamp(trade.paid_at or 0), trade.out_trade_no, trade.trade_no,
                                "SUCCESS", trade.total, fee=(trade.total * 6 + 500) // 1000))  # [guess] 0.6 %
        for refund in trade.refunds:
            if on_day(refund.at):
                rows.append(BillRow(signing.format_timestamp(refund.at), trade.out_trade_no, trade.trade_no,
                                    "REFUND", trade.total, refund_amount=refund.amount,
                                    out_refund_no=refund.out_request_no))
    day = dt.date.fromisoformat(bill_date if len(bill_date) == 10 else bill_date + "-01")
    return render_trade_bill(rows, seller_id=seller_id, bill_date=day, extra=extra)


# ---------------------------------------------------------------------- handlers (§2.4, §2.6)

class MethodHandlers(abc.ABC):
    """``alipay.trade.*``, the bill locator and ``alipay.system.oauth.token``, mixed into ``AlipaySimulator``."""

    merchant: dict[str, str]
    trades: dict[str, Trade]
    settings: dict[str, Any]
    _codes: dict[str, tuple[str, float, bool]]
    _open_ids: dict[str, str]   # open_id handed out by oauth -> user_id of the same user
    _user_secret: bytes

    @abc.abstractmethod
    def now(self) -> float:
        """The simulator's clock (provided by AlipaySimulator)."""

    @abc.abstractmethod
    def notify_trade(self, trade: Trade, event: str) -> str | None:
        """Send the trade's notification (provided by AlipaySimulator)."""

    @abc.abstractmethod
    def bill_url(self, base_url: str, bill_date: str) -> str:
        """Where the bill of ``bill_date`` can be downloaded (provided by AlipaySimulator)."""

    # ------------------------------------------------------------------ users
    def user_ids(self, user: str) -> tuple[str, str]:
        """Stable (user_id, open_id) of a sandbox user for this app: 2088 + 12 digits, ``0`` + 46 chars."""
        digest = hmac.new(self._user_secret, f"{self.merchant['app_id']}\x00{user}".encode(), hashlib.sha256)
        number = int.from_bytes(digest.digest(), "big")
        user_id = "2088" + str(number % 10**12).zfill(12)
        chars = []
        for _ in range(46):
            number, rest = divmod(number, 62)
            chars.append(_ALNUM[rest])
        return user_id, "0" + "".join(chars)

    def trade(self, out_trade_no: str | None = None, trade_no: str | None = None) -> Trade | None:
        """A trade by either id, after lazily applying ``time_expire`` (auto-close without notification)."""
        found = self.trades.get(out_trade_no or "") if out_trade_no else next(
            (t for t in self.trades.values() if t.trade_no == trade_no), None)
        if found is not None and found.status == "WAIT_BUYER_PAY" and found.time_expire is not None \
                and self.now() >= found.time_expire:
            found.status, found.closed_at = "TRADE_CLOSED", found.time_expire
        return found

    def _find(self, biz: dict[str, Any]) -> Trade | dict[str, Any]:
        out_trade_no, trade_no = biz.get("out_trade_no"), biz.get("trade_no")
        if not isinstance(out_trade_no, str) and not isinstance(trade_no, str):
            return biz_error("ACQ.INVALID_PARAMETER", "参数无效:out_trade_no和trade_no不能同时为空")
        found = self.trade(out_trade_no if isinstance(out_trade_no, str) else None,
                           trade_no if isinstance(trade_no, str) else None)
        return found if found is not None else biz_error("ACQ.TRADE_NOT_EXIST", "交易不存在")

    # ------------------------------------------------------------------ trade
    def m_create(self, params: dict[str, str], biz: dict[str, Any]) -> dict[str, Any]:
        out_trade_no, subject = biz.get("out_trade_no"), biz.get("subject")
        if not isinstance(out_trade_no, str) or not _OUT_TRADE_NO.fullmatch(out_trade_no):
            return biz_error("ACQ.INVALID_PARAMETER", "参数无效:out_trade_no")
        total = _amount(biz.get("total_amount"))
        if total is None:
            return biz_error("ACQ.INVALID_PARAMETER", "参数无效:total_amount")
        if not isinstance(subject, str) or not subject or len(subject) > 256:
            return biz_error("ACQ.INVALID_PARAMETER", "参数无效:subject")
        if biz.get("product_code", "JSAPI_PAY") != "JSAPI_PAY":
            return biz_error("ACQ.INVALID_PARAMETER", "参数无效:product_code")   # the sandbox only does JSAPI_PAY
        buyer_field = next((f for f in ("buyer_open_id", "buyer_id") if biz.get(f)), None)
        if buyer_field is None or not isinstance(biz[buyer_field], str):
            return biz_error("ACQ.INVALID_PARAMETER", "参数无效:买家不能为空")
        notify_url = params.get("notify_url") or None
        if notify_url is not None and not is_local_notify_url(notify_url):
            return gateway_error("40002", "isv.invalid-notify-url", "notify_url必须为https地址")  # [guess] code
        expire = None
        if "time_expire" in biz:
            try:
                expire = signing.parse_timestamp(str(biz["time_expire"])).timestamp()
            except ValueError:
                return biz_error("ACQ.INVALID_PARAMETER", "参数无效:time_expire")
        existing = self.trade(out_trade_no)
        if existing is not None:
            if existing.status in ("TRADE_SUCCESS", "TRADE_FINISHED"):
                return biz_error("ACQ.TRADE_HAS_SUCCESS", "交易已被支付")
            if existing.status == "TRADE_CLOSED":
                return biz_error("ACQ.TRADE_HAS_CLOSE", "交易已经关闭")
            if existing.biz != biz or existing.notify_url != notify_url:   # [guess] §5.4 exact repeat rules
                return biz_error("ACQ.CONTEXT_INCONSISTENT", "交易信息被篡改")
            return ok(out_trade_no=out_trade_no, trade_no=existing.trade_no)
        now = self.now()
        trade_no = signing.format_timestamp(now)[:10].replace("-", "") + "22001" + _digits(15)
        buyer = biz[buyer_field]
        user_id = buyer if buyer_field == "buyer_id" else (
            self._open_ids.get(buyer) or self.user_ids("open_id:" + buyer)[0])
        trade = Trade(out_trade_no=out_trade_no, trade_no=trade_no, biz=dict(biz), notify_url=notify_url,
                      total=total, buyer_field=buyer_field, buyer=buyer, created_at=now, time_expire=expire,
                      buyer_user_id=user_id)
        self.trades[out_trade_no] = trade
        if self.settings["notify_wait_buyer_pay"]:
            self.notify_trade(trade, "WAIT_BUYER_PAY")
        return ok(out_trade_no=out_trade_no, trade_no=trade_no)

    def m_query(self, params: dict[str, str], biz: dict[str, Any]) -> dict[str, Any]:
        trade = self._find(biz)
        if isinstance(trade, dict):
            return trade
        fields = trade_fields(trade) | {"buyer_user_id": trade.buyer_user_id}
        if trade.paid_at is not None:
            fields |= {"send_pay_date": _stamp(trade.paid_at), "fund_bill_list": _fund_bill_list(trade)}
        return ok(**fields)

    def m_close(self, params: dict[str, str], biz: dict[str, Any]) -> dict[str, Any]:
        trade = self._find(biz)
        if isinstance(trade, dict):
            return trade
        if trade.status != "WAIT_BUYER_PAY":
            return biz_error("ACQ.TRADE_STATUS_ERROR", "交易状态不合法")
        trade.status, trade.closed_at = "TRADE_CLOSED", self.now()
        if self.settings["notify_on_close"]:
            self.notify_trade(trade, "TRADE_CLOSED")
        return ok(trade_no=trade.trade_no, out_trade_no=trade.out_trade_no)

    def m_refund(self, params: dict[str, str], biz: dict[str, Any]) -> dict[str, Any]:
        trade = self._find(biz)
        if isinstance(trade, dict):
            return trade
        amount = _amount(biz.get("refund_amount"))
        if amount is None:
            return biz_error("ACQ.INVALID_PARAMETER", "参数无效:refund_amount")
        request_no = biz.get("out_request_no") or trade.out_trade_no   # §2.6: defaults to out_trade_no
        if not isinstance(request_no, str) or not _OUT_REQUEST_NO.fullmatch(request_no):
            return biz_error("ACQ.INVALID_PARAMETER", "参数无效:out_request_no")
        existing = next((r for r in trade.refunds if r.out_request_no == request_no), None)
        if existing is not None:
            if existing.amount != amount:   # [guess] §5.4: the repeat-with-other-amount answer
                return biz_error("ACQ.CONTEXT_INCONSISTENT", "参数与前次请求不一致")
            return ok(**self._refund_fields(trade, existing), fund_change="N")
        if trade.status == "WAIT_BUYER_PAY":
            return biz_error("ACQ.TRADE_STATUS_ERROR", "交易状态不合法")
        if trade.status == "TRADE_CLOSED":
            return biz_error("ACQ.TRADE_HAS_CLOSE", "交易已经关闭")
        if trade.status == "TRADE_FINISHED":
            return biz_error("ACQ.TRADE_NOT_ALLOW_REFUND", "当前交易不允许退款")
        if trade.refunded + amount > trade.total:
            return biz_error("ACQ.REFUND_AMT_NOT_EQUAL_TOTAL", "退款金额超限")   # [guess] §5.4 sub_code
        refund = Refund(out_request_no=request_no, amount=amount, at=self.now(),
                        reason=str(biz.get("refund_reason") or ""))
        trade.refunds.append(refund)
        full = trade.refunded == trade.total
        if full:
            trade.status, trade.closed_at = "TRADE_CLOSED", refund.at
        if self.settings["notify_on_full_refund" if full else "notify_on_partial_refund"]:
            self.notify_trade(trade, "TRADE_CLOSED" if full else "REFUND")
        return ok(**self._refund_fields(trade, refund), fund_change="Y")

    @staticmethod
    def _refund_fields(trade: Trade, refund: Refund) -> dict[str, Any]:
        upto = trade.refunds[:trade.refunds.index(refund) + 1]
        fields = {"trade_no": trade.trade_no, "out_trade_no": trade.out_trade_no,
                  "buyer_logon_id": "sbx***@sandbox.alipay.com", "buyer_user_id": trade.buyer_user_id,
                  "refund_fee": fen_to_yuan(sum(r.amount for r in upto)), "gmt_refund_pay": _stamp(refund.at)}
        if trade.buyer_field == "buyer_open_id":
            fields["buyer_open_id"] = trade.buyer
        return fields

    def m_refund_query(self, params: dict[str, str], biz: dict[str, Any]) -> dict[str, Any]:
        trade = self._find(biz)
        if isinstance(trade, dict):
            return trade
        request_no = biz.get("out_request_no")
        if not isinstance(request_no, str) or not request_no:
            return biz_error("ACQ.INVALID_PARAMETER", "参数无效:out_request_no")
        base = {"trade_no": trade.trade_no, "out_trade_no": trade.out_trade_no, "out_request_no": request_no}
        refund = next((r for r in trade.refunds if r.out_request_no == request_no), None)
        if refund is None:
            return ok(**base)   # §2.6: no refund_status = not refunded
        return ok(**base, refund_amount=fen_to_yuan(refund.amount), total_amount=fen_to_yuan(trade.total),
                  refund_status="REFUND_SUCCESS", gmt_refund_pay=_stamp(refund.at))

    # ------------------------------------------------------------------ bill, login
    def m_bill(self, params: dict[str, str], biz: dict[str, Any], base_url: str) -> dict[str, Any]:
        bill_type, bill_date = biz.get("bill_type"), biz.get("bill_date")
        if bill_type != "trade":   # the sandbox keeps no "signcustomer" (account) bill
            return biz_error("isv.invalid-bill-type", "账单类型不正确")   # [guess]
        if not isinstance(bill_date, str) or not re.fullmatch(r"\d{4}-\d{2}(-\d{2})?", bill_date):
            return biz_error("isv.invalid-bill-date", "账单时间格式不正确")   # [guess]
        return ok(bill_download_url=self.bill_url(base_url, bill_date))

    def login(self, user: str) -> str:
        now = self.now()
        self._codes = {c: v for c, v in self._codes.items() if v[1] > now - CODE_TTL_SECONDS}
        code = secrets.token_hex(16)
        self._codes[code] = (user, now + CODE_TTL_SECONDS, False)
        return code

    def m_oauth(self, params: dict[str, str], biz: dict[str, Any]) -> dict[str, Any]:
        """Errors go in ``error_response`` (as the python SDK documents for ``isv.code-invalid``)."""
        if params.get("grant_type") != "authorization_code":
            return gateway_error("40002", "isv.grant-type-invalid", "grant_type参数不正确")   # [guess]
        entry = self._codes.get(params.get("code", ""))
        if entry is None or entry[2] or self.now() >= entry[1]:
            return gateway_error("40002", "isv.code-invalid", "授权码code无效")
        user, expires, _ = entry
        self._codes[params["code"]] = (user, expires, True)
        user_id, open_id = self.user_ids(user)
        self._open_ids[open_id] = user_id
        return ok(user_id=user_id, open_id=open_id, access_token="authusrB" + secrets.token_hex(16),
                  expires_in=1296000, refresh_token="authusrB" + secrets.token_hex(16), re_expires_in=2592000,
                  auth_start=_stamp(self.now()))

"""The v3 API handlers of :class:`~minigate.simulators.wechatpay.WeChatPaySimulator`: orders, refunds,
certificates and bills.

:class:`V3Handlers` is a mixin. The simulator supplies the state declared on it, its clock (``now``) and
notification sending (``notify``); authentication, routing and the control routes stay in
:mod:`minigate.simulators.wechatpay`, the wire rules live in :mod:`minigate.simulators._wechatpay_wire`.
"""

from __future__ import annotations

import abc
import gzip
import hashlib
import re
import secrets
import time
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa
from starlette.requests import Request

from minigate.providers.wechatpay import signing
from minigate.simulators._core import Deliverer, read_json_object, rfc3339
from minigate.simulators._wechatpay_wire import (
    _ALNUM,
    BILL_TOKEN_TTL,
    PREPAY_TTL,
    Order,
    Refund,
    Reply,
    _digits,
    _prepay_id,
    bill_csv,
    err,
    parse_time,
    transaction_json,
    validate_prepay,
    validate_refund,
)


class V3Handlers(abc.ABC):
    """The ``/v3`` handlers, ``order``, ``pay`` and ``settle_refund``, mixed into ``WeChatPaySimulator``."""

    merchant: dict[str, str]
    settings: dict[str, Any]
    deliverer: Deliverer
    orders: dict[str, Order]
    refunds: dict[str, Refund]
    _apiv3_key: bytes
    _cert: x509.Certificate
    _keys: dict[str, tuple[rsa.RSAPrivateKey, str]]
    _bills: dict[str, tuple[bytes, float]]

    @abc.abstractmethod
    def now(self) -> float:
        """The simulator's clock (provided by WeChatPaySimulator)."""

    @abc.abstractmethod
    def notify(self, url: str, event_type: str, summary: str, original_type: str,
               plain: dict[str, Any]) -> str:
        """Encrypt, sign and deliver a notification (provided by WeChatPaySimulator)."""

    # ------------------------------------------------------------------ orders

    def order(self, out_trade_no: str) -> Order | None:
        """The order, after lazily applying ``time_expire`` (auto-close)."""
        order = self.orders.get(out_trade_no)
        if order is not None and order.trade_state == "NOTPAY" and order.time_expire is not None \
                and self.now() >= order.time_expire:
            order.trade_state = "CLOSED"
        return order

    async def _prepay(self, request: Request, match: re.Match[str], body: bytes) -> Reply:
        data = await read_json_object(request)
        if data is None:
            return err(400, "PARAM_ERROR", "请求的JSON格式不正确")
        problem = validate_prepay(data, self.merchant)
        if problem is not None:
            return err(*problem)
        now = self.now()
        order = self.order(data["out_trade_no"])
        if order is not None:
            if order.trade_state in ("SUCCESS", "REFUND"):
                return err(400, "ORDERPAID", "该订单已支付")  # [guess] §5.1: the v3 string code
            if order.trade_state == "CLOSED":
                return err(400, "ORDER_CLOSED", "订单已关闭")
            if order.params != data:
                return err(400, "INVALID_REQUEST", "请求重入时，参数与首次请求时不一致")
            if now >= order.prepay_expires_at:
                order.prepay_id, order.prepay_expires_at = _prepay_id(now), now + PREPAY_TTL
            return Reply(json={"prepay_id": order.prepay_id})
        expire = parse_time(data["time_expire"]) if "time_expire" in data else None
        order = Order(params=data, created_at=now, prepay_id=_prepay_id(now),
                      prepay_expires_at=now + PREPAY_TTL, time_expire=expire)
        self.orders[order.out_trade_no] = order
        return Reply(json={"prepay_id": order.prepay_id})

    def _check_mchid(self, request: Request) -> Reply | None:
        mchid = request.query_params.get("mchid")
        if not mchid:
            return err(400, "PARAM_ERROR", "缺少参数mchid", {"field": "mchid", "location": "query"})
        if mchid != self.merchant["mchid"]:
            return err(400, "PARAM_ERROR", "mchid与请求签名中的商户号不一致")
        return None

    async def _query_by_out_trade_no(self, request: Request, match: re.Match[str], body: bytes) -> Reply:
        problem = self._check_mchid(request)
        if problem is not None:
            return problem
        order = self.order(match.group(1))
        if order is None:
            return err(404, "ORDER_NOT_EXIST", "订单不存在")
        return Reply(json=transaction_json(order, self.merchant))

    async def _query_by_id(self, request: Request, match: re.Match[str], body: bytes) -> Reply:
        problem = self._check_mchid(request)
        if problem is not None:
            return problem
        for order in self.orders.values():
            if order.transaction_id == match.group(1):
                return Reply(json=transaction_json(order, self.merchant))
        return err(404, "ORDER_NOT_EXIST", "订单不存在")

    async def _close(self, request: Request, match: re.Match[str], body: bytes) -> Reply:
        data = await read_json_object(request)
        if data is None:
            return err(400, "PARAM_ERROR", "请求的JSON格式不正确")
        if data.get("mchid") != self.merchant["mchid"]:
            return err(400, "PARAM_ERROR", "mchid与请求签名中的商户号不一致")
        order = self.order(match.group(1))
        if order is None:
            return err(404, "ORDER_NOT_EXIST", "订单不存在")
        if order.trade_state in ("SUCCESS", "REFUND"):
            return err(400, "ORDERPAID", "订单已支付，不能关闭")  # [guess] §5.1
        order.trade_state = "CLOSED"  # closing a closed order again answers 204 as well [guess]
        return Reply(status=204)

    def pay(self, out_trade_no: str, *, bank_type: str = "OTHERS") -> tuple[int, dict[str, Any]]:
        """The simulated payer confirms: NOTPAY + live prepay -> SUCCESS, then TRANSACTION.SUCCESS is sent."""
        order = self.order(out_trade_no)
        now = self.now()
        if order is None:
            return 404, {"code": "ORDER_NOT_EXIST", "message": "no such order"}
        if order.trade_state != "NOTPAY":
            return 409, {"code": "ORDER_NOT_PAYABLE", "message": f"trade_state is {order.trade_state}"}
        if now >= order.prepay_expires_at:
            return 409, {"code": "PREPAY_EXPIRED", "message": "prepay_id expired (valid 2 hours)"}
        order.trade_state, order.success_time, order.bank_type = "SUCCESS", now, bank_type
        order.transaction_id = "42000" + _digits(5) + time.strftime("%Y%m%d", time.gmtime(now + 8 * 3600)) \
            + _digits(10)
        plain = transaction_json(order, self.merchant)
        event_id = self.notify(order.notify_url, "TRANSACTION.SUCCESS", "支付成功", "transaction", plain)
        return 200, {"out_trade_no": out_trade_no, "transaction_id": order.transaction_id,
                     "trade_state": "SUCCESS", "notification_id": event_id}

    def fail(self, out_trade_no: str) -> tuple[int, dict[str, Any]]:
        """The payer's payment fails (the bank refuses): NOTPAY -> PAYERROR. WeChat Pay sends no notification for
        it; a query shows it, and the order cannot be paid any more (the payer must order again)."""
        order = self.order(out_trade_no)
        if order is None:
            return 404, {"code": "ORDER_NOT_EXIST", "message": "no such order"}
        if order.trade_state != "NOTPAY":
            return 409, {"code": "ORDER_NOT_PAYABLE", "message": f"trade_state is {order.trade_state}"}
        order.trade_state = "PAYERROR"
        return 200, {"out_trade_no": out_trade_no, "trade_state": "PAYERROR"}

    def expire(self, out_trade_no: str) -> tuple[int, dict[str, Any]]:
        """The payer never pays and the order's ``time_expire`` passes now: WeChat Pay closes it (CLOSED)."""
        order = self.order(out_trade_no)
        if order is None:
            return 404, {"code": "ORDER_NOT_EXIST", "message": "no such order"}
        if order.trade_state != "NOTPAY":
            return 409, {"code": "ORDER_NOT_PAYABLE", "message": f"trade_state is {order.trade_state}"}
        order.time_expire = self.now()
        self.order(out_trade_no)                       # applies the auto-close to this same order
        return 200, {"out_trade_no": out_trade_no, "trade_state": order.trade_state}

    # ------------------------------------------------------------------ refunds

    async def _refund(self, request: Request, match: re.Match[str], body: bytes) -> Reply:
        data = await read_json_object(request)
        if data is None:
            return err(400, "PARAM_ERROR", "请求的JSON格式不正确")
        problem = validate_refund(data)
        if problem is not None:
            return err(*problem)
        order = self.order(data["out_trade_no"]) if "out_trade_no" in data else next(
            (o for o in self.orders.values() if o.transaction_id == data["transaction_id"]), None)
        if order is None:
            return err(404, "RESOURCE_NOT_EXISTS", "订单不存在")
        amount = data["amount"]
        existing = self.refunds.get(data["out_refund_no"])
        if existing is not None:
            if (existing.out_trade_no, existing.refund, existing.total) != (
                    order.out_trade_no, amount["refund"], amount["total"]):
                # [guess] v2 answered REFUND_FEE_MISMATCH with this text
                return err(400, "INVALID_REQUEST", "订单金额或退款金额与之前请求不一致，请核实后再试")
            self.settle_refund(existing)
            return Reply(json=existing.as_json(order))
        if order.trade_state not in ("SUCCESS", "REFUND"):
            return err(400, "INVALID_REQUEST", "订单未支付或已关闭，不能退款")  # [guess]
        if amount["total"] != order.total:
            return err(400, "INVALID_REQUEST", "订单金额与原订单金额不一致")  # [guess]
        live = [r for r in order.refunds if r.status != "CLOSED"]
        if len(order.refunds) >= 50:
            return err(403, "RULE_LIMIT", "该订单部分退款次数已达上限（50次）")  # [guess]
        if sum(r.refund for r in live) + amount["refund"] > order.total:
            return err(400, "INVALID_REQUEST", "申请退款金额超过订单可退金额")  # [guess] v2: INVALID_REQUEST
        delay = float(self.settings["refund_delay_seconds"]) * self.deliverer.time_scale
        now = self.now()
        refund = Refund(out_refund_no=data["out_refund_no"], out_trade_no=order.out_trade_no,
                        refund_id="50" + _digits(9) + time.strftime("%Y%m%d", time.gmtime(now + 8 * 3600))
                        + _digits(10), refund=amount["refund"], total=order.total,
                        notify_url=data.get("notify_url"), reason=data.get("reason", ""),
                        created_at=now, due_at=now + delay)
        self.refunds[refund.out_refund_no] = refund
        order.refunds.append(refund)
        order.trade_state = "REFUND"
        reply = refund.as_json(order)

        async def settle() -> None:
            self.settle_refund(refund, force=True)

        self.deliverer.later(float(self.settings["refund_delay_seconds"]), settle)
        return Reply(json=reply)

    def settle_refund(self, refund: Refund, *, force: bool = False) -> None:
        if refund.status != "PROCESSING" or not (force or self.now() >= refund.due_at):
            return
        refund.status, refund.success_time = "SUCCESS", self.now()
        order = self.orders[refund.out_trade_no]
        if refund.notify_url:
            self.notify(refund.notify_url, "REFUND.SUCCESS", "退款成功", "refund", refund.notify_json(order))

    async def _query_refund(self, request: Request, match: re.Match[str], body: bytes) -> Reply:
        refund = self.refunds.get(match.group(1))
        if refund is None:
            return err(404, "RESOURCE_NOT_EXISTS", "退款单不存在")
        self.settle_refund(refund)
        return Reply(json=refund.as_json(self.orders[refund.out_trade_no]))

    # ------------------------------------------------------------------ certificates, bills

    async def _certificates(self, request: Request, match: re.Match[str], body: bytes) -> Reply:
        nonce = "".join(secrets.choice(_ALNUM) for _ in range(12))
        pem = self.merchant["platform_certificate"].strip()
        item = {"serial_no": self._keys["certificate"][1],
                "effective_time": rfc3339(self._cert.not_valid_before_utc.timestamp()),
                "expire_time": rfc3339(self._cert.not_valid_after_utc.timestamp()),
                "encrypt_certificate": {"algorithm": "AEAD_AES_256_GCM", "nonce": nonce,
                                        "associated_data": "certificate",
                                        "ciphertext": signing.aes_gcm_encrypt(self._apiv3_key, nonce,
                                                                              "certificate", pem)}}
        return Reply(json={"data": [item]}, key="certificate")

    async def _tradebill(self, request: Request, match: re.Match[str], body: bytes) -> Reply:
        params = request.query_params
        bill_date, bill_type = params.get("bill_date", ""), params.get("bill_type", "ALL")
        tar_type = params.get("tar_type")
        if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", bill_date):
            return err(400, "PARAM_ERROR", "账单日期格式不正确", {"field": "bill_date", "location": "query"})
        if bill_type not in ("ALL", "SUCCESS", "REFUND") or tar_type not in (None, "GZIP"):
            return err(400, "PARAM_ERROR", "bill_type或tar_type取值不正确")
        content = bill_csv(self.orders.values(), self.merchant, bill_date, bill_type)
        if content is None:
            return err(400, "NO_STATEMENT_EXIST", "要查询的账单文件不存在")
        token = secrets.token_urlsafe(24)
        data = gzip.compress(content, mtime=0) if tar_type == "GZIP" else content
        self._bills[token] = (data, self.now() + BILL_TOKEN_TTL)
        url = request.url.replace(path=request.scope.get("root_path", "") + "/v3/billdownload/file",
                                  query=f"token={token}")
        return Reply(json={"hash_type": "SHA1", "hash_value": hashlib.sha1(content).hexdigest(),  # noqa: S324
                           "download_url": str(url)})

    async def _billdownload(self, request: Request, match: re.Match[str], body: bytes) -> Reply:
        entry = self._bills.get(request.query_params.get("token", ""))
        if entry is None or self.now() > entry[1]:
            return err(400, "INVALID_REQUEST", "下载链接已失效，请重新申请")  # [guess]
        return Reply(raw=entry[0], signed=False)

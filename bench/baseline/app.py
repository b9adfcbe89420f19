"""The baseline mini-program payment backend: Flask + the ``wechatpayv3`` SDK + SQLAlchemy (sync).

What most teams write today, doing the same work as minigate's checkout and callback:

- ``POST /orders`` (``Idempotency-Key`` header): a repeated key returns the stored answer; otherwise create
  the order, call JSAPI prepay through the SDK (it signs the request and verifies the signed answer), sign
  ``paySign`` with ``wxpay.sign``, store the order with its pay params in one transaction, return them.
- ``POST /notify``: ``wxpay.callback`` verifies the signature and decrypts the resource; check the amount;
  mark the order paid (one transaction); answer 200.

Served by gunicorn with sync workers (see bench/README.md). Durability as minigate: SQLite in WAL mode with
``synchronous=FULL``; PostgreSQL with its defaults (fsync on, synchronous_commit on).

Environment: ``BASELINE_DATABASE_URL`` (``sqlite:///path`` or ``postgresql://...``), ``BASELINE_CREDENTIALS``
(JSON from ``minigate sandbox credentials wechatpay``), ``BASELINE_SANDBOX_URL`` (``http://host:port/wechatpay``),
``BASELINE_NOTIFY_URL``.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import string
import time
import uuid
from datetime import UTC, datetime

from flask import Flask, jsonify, request
from sqlalchemy import JSON, DateTime, Integer, String, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, sessionmaker
from wechatpayv3 import WeChatPay, WeChatPayType

from bench.baseline.db import make_engine


class Base(DeclarativeBase):
    pass


class Order(Base):
    __tablename__ = "orders"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    out_trade_no: Mapped[str] = mapped_column(String(32), unique=True, index=True)
    merchant_order_no: Mapped[str] = mapped_column(String(64), unique=True)
    idempotency_key: Mapped[str | None] = mapped_column(String(255), unique=True, nullable=True)
    request_hash: Mapped[str] = mapped_column(String(64))
    openid: Mapped[str] = mapped_column(String(128))
    amount: Mapped[int] = mapped_column(Integer)
    description: Mapped[str] = mapped_column(String(127))
    status: Mapped[str] = mapped_column(String(16), default="pending")
    prepay_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    pay_params: Mapped[dict | None] = mapped_column(JSON, nullable=True)
    transaction_id: Mapped[str | None] = mapped_column(String(32), nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    paid_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


ALNUM = string.ascii_uppercase + string.digits
CREDS = json.loads(open(os.environ["BASELINE_CREDENTIALS"]).read())  # noqa: SIM115
engine = make_engine(os.environ["BASELINE_DATABASE_URL"])
Session = sessionmaker(engine, expire_on_commit=False)

wxpay = WeChatPay(
    wechatpay_type=WeChatPayType.MINIPROG, mchid=CREDS["mchid"], private_key=CREDS["merchant_private_key"],
    cert_serial_no=CREDS["merchant_serial_no"], appid=CREDS["appid"], apiv3_key=CREDS["apiv3_key"],
    notify_url=os.environ["BASELINE_NOTIFY_URL"], public_key=CREDS["platform_public_key"],
    public_key_id=CREDS["platform_public_key_id"], timeout=(5, 10))
wxpay._core._gate_way = os.environ["BASELINE_SANDBOX_URL"]  # the SDK has no base-URL option

app = Flask(__name__)


def init_db() -> None:
    Base.metadata.create_all(engine)


@app.get("/healthz")
def healthz():  # type: ignore[no-untyped-def]
    return jsonify(status="ok")


@app.post("/orders")
def create_order():  # type: ignore[no-untyped-def]
    data = request.get_json()
    key = request.headers.get("Idempotency-Key")
    request_hash = hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()
    with Session() as session:
        if key:
            existing = session.scalars(select(Order).where(Order.idempotency_key == key)).first()
            if existing is not None:
                if existing.request_hash != request_hash:
                    return jsonify(error="idempotency key reused with another request"), 422
                return jsonify(order_json(existing))
    amount = int(data["amount"])
    if amount <= 0:
        return jsonify(error="bad amount"), 400
    out_trade_no = "BL" + uuid.uuid4().hex[:24].upper()
    code, message = wxpay.pay(description=data["description"], out_trade_no=out_trade_no,
                              amount={"total": amount}, payer={"openid": data["payer"]["openid"]})
    if code != 200:
        return jsonify(error="wechat pay refused", code=code, detail=message), 502
    prepay_id = json.loads(message)["prepay_id"]
    timestamp = str(int(time.time()))
    nonce = "".join(secrets.choice(ALNUM) for _ in range(32))
    package = "prepay_id=" + prepay_id
    pay_sign = wxpay.sign([CREDS["appid"], timestamp, nonce, package])
    order = Order(out_trade_no=out_trade_no, merchant_order_no=data["merchant_order_no"], idempotency_key=key,
                  request_hash=request_hash, openid=data["payer"]["openid"], amount=amount,
                  description=data["description"], status="pending", prepay_id=prepay_id,
                  pay_params={"timeStamp": timestamp, "nonceStr": nonce, "package": package, "signType": "RSA",
                              "paySign": pay_sign},
                  created_at=datetime.now(UTC))
    try:
        with Session.begin() as session:
            session.add(order)
    except IntegrityError:
        return jsonify(error="order exists"), 409
    return jsonify(order_json(order))


def order_json(order: Order) -> dict:
    return {"id": order.id, "out_trade_no": order.out_trade_no, "merchant_order_no": order.merchant_order_no,
            "amount": order.amount, "status": order.status, "pay_params": order.pay_params}


@app.post("/notify")
def notify():  # type: ignore[no-untyped-def]
    result = wxpay.callback(request.headers, request.get_data())
    if not result:
        return jsonify(code="FAIL", message="signature"), 400
    if result.get("event_type") != "TRANSACTION.SUCCESS":
        return jsonify(code="SUCCESS", message="ignored")
    resource = result["resource"]
    with Session.begin() as session:
        order = session.scalars(select(Order).where(Order.out_trade_no == resource["out_trade_no"])
                                .with_for_update()).first()
        if order is None:
            return jsonify(code="FAIL", message="unknown order"), 404
        if resource["amount"]["total"] != order.amount:
            return jsonify(code="FAIL", message="amount mismatch"), 400
        if order.status != "paid":
            order.status = "paid"
            order.transaction_id = resource["transaction_id"]
            order.paid_at = datetime.now(UTC)
    return jsonify(code="SUCCESS", message="OK")


@app.get("/stats")
def stats():  # type: ignore[no-untyped-def]
    from sqlalchemy import func
    with Session() as session:
        rows = session.execute(select(Order.status, func.count()).group_by(Order.status)).all()
    return jsonify({status: count for status, count in rows})

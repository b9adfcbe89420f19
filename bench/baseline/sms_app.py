"""The baseline verification-code backend: Flask + the official Alibaba Cloud SMS SDK + SQLAlchemy (sync).

What most teams write today, doing the same work per code as minigate's ``/v1/verification_codes``:

- ``POST /v1/verification_codes`` ``{"phone", "purpose"}``: refuse (429) when the number already got a code for
  this purpose in the last 60 s (a query on the codes table); otherwise draw 6 random digits, store an HMAC of
  them with an expiry and an attempt counter (superseding the previous code), commit, then ``SendSms`` through
  ``alibabacloud_dysmsapi20170525`` (ACS3-HMAC-SHA256 signed by the SDK); a refused send marks the row failed.
- ``POST /v1/verification_codes/check`` ``{"phone", "purpose", "code"}``: the newest code of the number and
  purpose, row-locked; expired, used or out of attempts answers ``verified: false``; the HMACs are compared in
  constant time; a match consumes the code, a miss counts an attempt. One transaction.

What it does not do and minigate does: limits per IP, device, number range and app, refusal bookkeeping,
delivery receipts and their webhooks, sealing the number under a per-person key, failover between providers.

SQLite transactions start with ``BEGIN IMMEDIATE`` (SQLAlchemy's documented recipe for pysqlite): with five
worker processes a read-then-write transaction would otherwise fail with "database is locked" instead of
waiting. Durability as minigate: WAL + ``synchronous=FULL``; PostgreSQL with fsync and synchronous_commit on.

Served by gunicorn (the factory ``create_app()``, one per worker) with the settings of
``bench/baseline/gunicorn_conf.py``. Environment: ``BASELINE_DATABASE_URL``, ``BASELINE_SMS_CREDENTIALS`` (JSON
from ``minigate sandbox credentials aliyun-sms``), ``BASELINE_SMS_ENDPOINT`` (``127.0.0.1:<port>`` of the
sandbox), ``BASELINE_SMS_PATH`` (the simulator's mount, ``/aliyun-sms``), ``BASELINE_CODE_SECRET``.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import secrets
import time
from typing import Any

from sqlalchemy import Float, Index, Integer, String, func, select, update
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, sessionmaker

from bench.baseline.db import make_engine

CODE_TTL_SECONDS = 300
WINDOW_SECONDS = 60
MAX_ATTEMPTS = 5
PHONE = re.compile(r"^1\d{10}$")
PURPOSE = re.compile(r"^[a-z][a-z0-9_]{1,31}$")


class Base(DeclarativeBase):
    pass


class VerificationCode(Base):
    __tablename__ = "verification_codes"
    __table_args__ = (Index("ix_codes_phone_purpose_created", "phone", "purpose", "created_at"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    phone: Mapped[str] = mapped_column(String(20))
    purpose: Mapped[str] = mapped_column(String(32))
    code_hash: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(12), default="pending")   # pending, used, superseded, failed
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    biz_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    created_at: Mapped[float] = mapped_column(Float)
    expires_at: Mapped[float] = mapped_column(Float)


def init_db(url: str) -> None:
    """Create the table once, before gunicorn forks its workers."""
    engine = make_engine(url, immediate=True)
    Base.metadata.create_all(engine)
    engine.dispose()


def _sms_client(creds: dict[str, Any], endpoint: str, path: str) -> Any:
    from alibabacloud_dysmsapi20170525.client import Client
    from alibabacloud_tea_openapi import utils_models
    from darabonba.core import DaraCore

    # The SDK has no base-path option: its requests go to "/" of the endpoint (and are signed for "/", as
    # dysmsapi expects). The simulator is mounted at BASELINE_SMS_PATH of the sandbox, so prefix the path
    # after signing, as a reverse proxy would.
    original = DaraCore.do_action

    def do_action(request: Any, runtime_option: Any = None) -> Any:
        if not request.pathname.startswith(path):
            request.pathname = path + (request.pathname or "/")
        return original(request, runtime_option)

    DaraCore.do_action = staticmethod(do_action)  # type: ignore[method-assign]
    config = utils_models.Config(access_key_id=creds["access_key_id"], access_key_secret=creds["access_key_secret"],
                                 endpoint=endpoint, protocol="http")
    return Client(config)


def create_app() -> Any:
    from alibabacloud_dysmsapi20170525 import models
    from flask import Flask, jsonify, request

    creds = json.loads(open(os.environ["BASELINE_SMS_CREDENTIALS"]).read())  # noqa: SIM115
    secret = os.environ["BASELINE_CODE_SECRET"].encode()
    engine = make_engine(os.environ["BASELINE_DATABASE_URL"], immediate=True)
    session_factory = sessionmaker(engine, expire_on_commit=False)
    client = _sms_client(creds, os.environ["BASELINE_SMS_ENDPOINT"], os.environ.get("BASELINE_SMS_PATH", ""))
    app = Flask(__name__)

    def code_hash(phone: str, purpose: str, code: str) -> str:
        return hmac.new(secret, f"{phone}|{purpose}|{code}".encode(), hashlib.sha256).hexdigest()

    def arguments() -> tuple[dict[str, Any], str, str] | None:
        data = request.get_json(silent=True)
        if not isinstance(data, dict):
            return None
        phone, purpose = data.get("phone"), data.get("purpose", "login")
        if not isinstance(phone, str) or not PHONE.match(phone) or not isinstance(purpose, str) \
                or not PURPOSE.match(purpose):
            return None
        return data, phone, purpose

    @app.get("/healthz")
    def healthz():  # type: ignore[no-untyped-def]
        return jsonify(status="ok")

    @app.post("/v1/verification_codes")
    def send_code():  # type: ignore[no-untyped-def]
        parsed = arguments()
        if parsed is None:
            return jsonify(error="phone must be 11 digits starting with 1; purpose a short name"), 400
        _, phone, purpose = parsed
        now = time.time()
        code = f"{secrets.randbelow(1_000_000):06d}"
        with session_factory.begin() as session:
            recent = session.scalar(select(func.count()).select_from(VerificationCode).where(
                VerificationCode.phone == phone, VerificationCode.purpose == purpose,
                VerificationCode.created_at > now - WINDOW_SECONDS, VerificationCode.status != "failed"))
            if recent:
                return jsonify(error="too many codes; try again later", retry_after=WINDOW_SECONDS), 429
            session.execute(update(VerificationCode).where(
                VerificationCode.phone == phone, VerificationCode.purpose == purpose,
                VerificationCode.status == "pending").values(status="superseded"))
            row = VerificationCode(phone=phone, purpose=purpose, code_hash=code_hash(phone, purpose, code),
                                   status="pending", attempts=0, created_at=now, expires_at=now + CODE_TTL_SECONDS)
            session.add(row)
        try:
            answer = client.send_sms(models.SendSmsRequest(
                phone_numbers=phone, sign_name=creds["sign_name"],
                template_code=creds["templates"]["verification_code"],
                template_param=json.dumps({"code": code, "minutes": str(CODE_TTL_SECONDS // 60)})))
            sent = answer.body.code == "OK"
            reason = answer.body.code
        except Exception as exc:   # the SDK raises ClientException / ServerException / network errors
            sent, reason = False, type(exc).__name__
        if not sent:
            with session_factory.begin() as session:
                session.execute(update(VerificationCode).where(VerificationCode.id == row.id).values(status="failed"))
            return jsonify(error="the code could not be sent", reason=reason), 502
        return jsonify(status="sent", expires_at=int(row.expires_at))

    @app.post("/v1/verification_codes/check")
    def check_code():  # type: ignore[no-untyped-def]
        parsed = arguments()
        if parsed is None:
            return jsonify(error="phone must be 11 digits starting with 1; purpose a short name"), 400
        data, phone, purpose = parsed
        code = data.get("code")
        if not isinstance(code, str) or not re.fullmatch(r"\d{6}", code):
            return jsonify(error="code must be 6 digits"), 400
        candidate = code_hash(phone, purpose, code)
        now = time.time()
        with session_factory.begin() as session:
            row = session.scalars(select(VerificationCode).where(
                VerificationCode.phone == phone, VerificationCode.purpose == purpose,
            ).order_by(VerificationCode.id.desc()).limit(1).with_for_update()).first()
            if row is None or row.status != "pending":
                result: dict[str, Any] = {"verified": False, "reason": "no_active_code"}
            elif now >= row.expires_at:
                result = {"verified": False, "reason": "expired"}
            elif row.attempts >= MAX_ATTEMPTS:
                result = {"verified": False, "reason": "too_many_attempts"}
            elif hmac.compare_digest(row.code_hash, candidate):
                row.status = "used"
                result = {"verified": True, "reason": None}
            else:
                row.attempts += 1
                result = {"verified": False, "reason": "wrong_code"}
        return jsonify(result)

    return app

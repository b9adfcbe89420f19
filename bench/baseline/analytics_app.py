"""The baseline event collector: a Flask endpoint that inserts each batch into an ``events`` table (SQLAlchemy ORM).

The usual approach to first-party analytics: ``POST /v1/analytics/collect`` takes the same JSON batch as
minigate's (``{"sent_at", "context", "events": [{"id", "type", "name", "ts", "distinct_id", "user_id",
"session_id", "page", "properties"}]}``, optionally gzip-encoded), checks the key (``Authorization: Bearer``) and
each event minimally (an id, a name, an integer time stamp, a device id), inserts the valid ones as ORM objects
in one transaction per request, commits (durable) and answers ``{"accepted": n, "rejected": [...]}``.

What it does not do and minigate does: per-app and per-IP request limits, consent checks for identified users,
the personal-data scan of properties, de-duplication by event id, the size limits of the batch and of each
event, and an analytical store (queries over this table scan a row store).

Durability as minigate: SQLite WAL + ``synchronous=FULL`` (``BEGIN IMMEDIATE``, as in ``sms_app``), PostgreSQL
with fsync and synchronous_commit on. Served by gunicorn (``create_app()``, one per worker) with the settings of
``bench/baseline/gunicorn_conf.py``. Environment: ``BASELINE_DATABASE_URL``, ``BASELINE_ANALYTICS_KEY``.
"""

from __future__ import annotations

import gzip
import hmac
import json
import os
import time
from typing import Any

from sqlalchemy import JSON, BigInteger, Integer, String, func, select
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, sessionmaker

from bench.baseline.db import make_engine

MAX_EVENTS = 500


class Base(DeclarativeBase):
    pass


class Event(Base):
    __tablename__ = "events"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    event_id: Mapped[str] = mapped_column(String(64))
    type: Mapped[str] = mapped_column(String(16))
    name: Mapped[str] = mapped_column(String(64))
    ts: Mapped[int] = mapped_column(BigInteger)
    received_at: Mapped[int] = mapped_column(BigInteger)
    distinct_id: Mapped[str] = mapped_column(String(64))
    user_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    session_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    page: Mapped[str | None] = mapped_column(String(255), nullable=True)
    platform: Mapped[str | None] = mapped_column(String(32), nullable=True)
    properties: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)


def init_db(url: str) -> None:
    """Create the table once, before gunicorn forks its workers."""
    engine = make_engine(url)
    Base.metadata.create_all(engine)
    engine.dispose()


def _valid(e: Any) -> bool:
    return (isinstance(e, dict) and isinstance(e.get("id"), str) and 0 < len(e["id"]) <= 64
            and isinstance(e.get("name"), str) and 0 < len(e["name"]) <= 64
            and isinstance(e.get("ts"), int) and isinstance(e.get("distinct_id"), str) and e["distinct_id"] != ""
            and (e.get("properties") is None or isinstance(e["properties"], dict)))


def create_app() -> Any:
    from flask import Flask, jsonify, request

    key = os.environ["BASELINE_ANALYTICS_KEY"]
    engine = make_engine(os.environ["BASELINE_DATABASE_URL"])
    session_factory = sessionmaker(engine, expire_on_commit=False)
    app = Flask(__name__)

    @app.get("/healthz")
    def healthz():  # type: ignore[no-untyped-def]
        return jsonify(status="ok")

    @app.post("/v1/analytics/collect")
    def collect():  # type: ignore[no-untyped-def]
        given = request.headers.get("Authorization", "").removeprefix("Bearer ")
        if not hmac.compare_digest(given.encode(), key.encode()):
            return jsonify(error="unknown key"), 401
        raw = request.get_data()
        if request.headers.get("Content-Encoding") == "gzip":
            raw = gzip.decompress(raw)
        try:
            batch = json.loads(raw)
        except ValueError:
            return jsonify(error="the body is not JSON"), 400
        events = batch.get("events") if isinstance(batch, dict) else None
        if not isinstance(events, list) or not events or len(events) > MAX_EVENTS:
            return jsonify(error=f"events must be a list of 1..{MAX_EVENTS}"), 400
        platform = (batch.get("context") or {}).get("platform")
        received = int(time.time() * 1000)
        rows, rejected = [], []
        for i, e in enumerate(events):
            if not _valid(e):
                rejected.append({"index": i, "code": "invalid_event"})
                continue
            rows.append(Event(event_id=e["id"], type=e.get("type") or "event", name=e["name"], ts=e["ts"],
                              received_at=received, distinct_id=e["distinct_id"], user_id=e.get("user_id"),
                              session_id=e.get("session_id"), page=e.get("page"), platform=platform,
                              properties=e.get("properties")))
        with session_factory.begin() as session:
            session.add_all(rows)
        return jsonify(accepted=len(rows), rejected=rejected)

    @app.get("/stats")
    def stats():  # type: ignore[no-untyped-def]
        with session_factory() as session:
            return jsonify(events=session.scalar(select(func.count()).select_from(Event)))

    return app

"""Tables. Uniqueness lives in constraints, never in memory: any number of processes share one database."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

__all__ = [
    "ApiKey",
    "App",
    "AppCredential",
    "AppSetting",
    "ConsentRecord",
    "ConsoleSession",
    "ConsoleUser",
    "RefundApproval",
    "SmsDecision",
    "SmsMessage",
    "SmsReceiptRecord",
    "VerificationCode",
    "Base",
    "DataKey",
    "DeletionRecord",
    "PersonKey",
    "IdentityVerification",
    "Event",
    "IdempotencyKey",
    "InboundNotification",
    "Order",
    "OrderEvent",
    "PaymentException",
    "ReconciliationItem",
    "ReconciliationRun",
    "Refund",
    "WebhookDelivery",
    "WebhookEndpoint",
]

_naming = {
    "ix": "ix_%(column_0_N_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}



class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC on every backend (SQLite keeps no zone; we store UTC and re-attach it)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetimes are not stored")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


TZ = UTCDateTime()


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=_naming)
    type_annotation_map = {dict[str, Any]: JSON, datetime: TZ}


class DataKey(Base):
    """Data encryption keys, wrapped by the master key (see :mod:`minigate.vault`)."""

    __tablename__ = "data_keys"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    wrapped: Mapped[str] = mapped_column(Text)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime]


class App(Base):
    __tablename__ = "apps"
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    name: Mapped[str] = mapped_column(String(120))
    created_at: Mapped[datetime]


class ApiKey(Base):
    """API keys are stored as SHA-256 digests; the clear key is shown once at creation."""

    __tablename__ = "api_keys"
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    app_id: Mapped[str] = mapped_column(ForeignKey("apps.id"), index=True)
    mode: Mapped[str] = mapped_column(String(8))
    digest: Mapped[str] = mapped_column(String(64), unique=True)
    hint: Mapped[str] = mapped_column(String(24))          # "mg_test_…abcd"
    created_at: Mapped[datetime]
    revoked_at: Mapped[datetime | None]
    #: what the key may do (``<resource>:<read|write>``, or ``*`` for everything: keys made before scopes)
    scopes: Mapped[list[str]] = mapped_column(JSON, default=lambda: ["*"], server_default=text("'[\"*\"]'"))
    name: Mapped[str | None] = mapped_column(String(120))
    #: refused from this instant (a rolled key's overlap ends, or an expiring key was asked for)
    expires_at: Mapped[datetime | None]


class AppCredential(Base):
    """A provider configuration for one app and mode, sealed by the vault."""

    __tablename__ = "app_credentials"
    __table_args__ = (UniqueConstraint("app_id", "mode", "provider"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    app_id: Mapped[str] = mapped_column(ForeignKey("apps.id"))
    mode: Mapped[str] = mapped_column(String(8))
    provider: Mapped[str] = mapped_column(String(32))
    sealed_config: Mapped[str] = mapped_column(Text)
    updated_at: Mapped[datetime]


class Order(Base):
    __tablename__ = "orders"
    __table_args__ = (
        UniqueConstraint("app_id", "mode", "merchant_order_no"),
        UniqueConstraint("provider", "out_trade_no"),
        UniqueConstraint("provider", "provider_trade_id"),
        Index("ix_orders_app_created", "app_id", "mode", "created_at"),
        Index("ix_orders_next_check", "next_check_at"),
    )
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    app_id: Mapped[str] = mapped_column(ForeignKey("apps.id"))
    mode: Mapped[str] = mapped_column(String(8))
    channel: Mapped[str] = mapped_column(String(32))
    provider: Mapped[str] = mapped_column(String(32))
    merchant_order_no: Mapped[str] = mapped_column(String(64))
    out_trade_no: Mapped[str] = mapped_column(String(64))
    amount: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(String(3))
    description: Mapped[str] = mapped_column(String(128))
    #: creating | pending | paid | partially_refunded | refunded | closed
    status: Mapped[str] = mapped_column(String(24), index=True)
    amount_refunded: Mapped[int] = mapped_column(BigInteger, default=0)
    amount_refund_pending: Mapped[int] = mapped_column(BigInteger, default=0)
    payer_sealed: Mapped[str] = mapped_column(Text)
    payer_hash: Mapped[str] = mapped_column(String(64), index=True)
    #: the buyer's mobile number for order SMS (opt-in per app), sealed; hash and mask beside it
    contact_phone_sealed: Mapped[str | None] = mapped_column(Text)
    contact_phone_hash: Mapped[str | None] = mapped_column(String(64))
    provider_order_ref: Mapped[str | None] = mapped_column(String(128))
    provider_trade_id: Mapped[str | None] = mapped_column(String(64))
    #: what the mini-program passes to wx.requestPayment (signatures only, no secrets)
    client_params: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    failure_code: Mapped[str | None] = mapped_column(String(64))
    expires_at: Mapped[datetime]
    paid_at: Mapped[datetime | None]
    closed_at: Mapped[datetime | None]
    #: when the worker should ask the provider about this order (no notification yet / expiry)
    next_check_at: Mapped[datetime | None]
    check_attempts: Mapped[int] = mapped_column(Integer, default=0)
    metadata_: Mapped[dict[str, Any]] = mapped_column("metadata", JSON, default=dict)
    version: Mapped[int] = mapped_column(Integer, default=1)
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]


class Refund(Base):
    __tablename__ = "refunds"
    __table_args__ = (
        UniqueConstraint("provider", "out_refund_no"),
        Index("ix_refunds_next_check", "next_check_at"),
        #: the refund lists and the console's dashboard read one app's refunds by time
        Index("ix_refunds_app_created", "app_id", "mode", "created_at"),
    )
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    app_id: Mapped[str] = mapped_column(ForeignKey("apps.id"))
    mode: Mapped[str] = mapped_column(String(8))
    order_id: Mapped[str] = mapped_column(ForeignKey("orders.id"), index=True)
    provider: Mapped[str] = mapped_column(String(32))
    out_refund_no: Mapped[str] = mapped_column(String(64))
    amount: Mapped[int] = mapped_column(BigInteger)
    reason: Mapped[str | None] = mapped_column(String(80))
    #: pending (not yet accepted by the provider) | processing | succeeded | failed
    status: Mapped[str] = mapped_column(String(16), index=True)
    provider_refund_id: Mapped[str | None] = mapped_column(String(64))
    failure_code: Mapped[str | None] = mapped_column(String(64))
    next_check_at: Mapped[datetime | None]
    check_attempts: Mapped[int] = mapped_column(Integer, default=0)
    metadata_: Mapped[dict[str, Any]] = mapped_column("metadata", JSON, default=dict)
    created_at: Mapped[datetime]
    succeeded_at: Mapped[datetime | None]
    updated_at: Mapped[datetime]


class OrderEvent(Base):
    """Append-only history of every state change of an order and its refunds."""

    __tablename__ = "order_events"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    order_id: Mapped[str] = mapped_column(ForeignKey("orders.id"), index=True)
    refund_id: Mapped[str | None] = mapped_column(String(40))
    type: Mapped[str] = mapped_column(String(48))
    from_status: Mapped[str | None] = mapped_column(String(24))
    to_status: Mapped[str | None] = mapped_column(String(24))
    source: Mapped[str] = mapped_column(String(24))       # api | notification | query | worker
    data: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime]


class InboundNotification(Base):
    """Every provider callback received, raw bytes kept; accepted ones deduplicated by provider event id."""

    __tablename__ = "inbound_notifications"
    __table_args__ = (UniqueConstraint("provider", "dedupe_key"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    provider: Mapped[str] = mapped_column(String(32))
    app_id: Mapped[str | None] = mapped_column(String(40))
    mode: Mapped[str | None] = mapped_column(String(8))
    dedupe_key: Mapped[str | None] = mapped_column(String(160))
    order_id: Mapped[str | None] = mapped_column(String(40), index=True)
    outcome: Mapped[str] = mapped_column(String(24))      # processed | rejected | ignored
    error_code: Mapped[str | None] = mapped_column(String(48))
    headers: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    body: Mapped[bytes] = mapped_column(LargeBinary)
    received_at: Mapped[datetime]


class Event(Base):
    """Merchant-facing events (Stripe-style); written in the same transaction as the state change."""

    __tablename__ = "events"
    __table_args__ = (Index("ix_events_app_created", "app_id", "mode", "created_at"),)
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    app_id: Mapped[str] = mapped_column(ForeignKey("apps.id"))
    mode: Mapped[str] = mapped_column(String(8))
    type: Mapped[str] = mapped_column(String(48))
    object_id: Mapped[str] = mapped_column(String(40), index=True)
    data: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime]


class WebhookEndpoint(Base):
    __tablename__ = "webhook_endpoints"
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    app_id: Mapped[str] = mapped_column(ForeignKey("apps.id"), index=True)
    mode: Mapped[str] = mapped_column(String(8))
    url: Mapped[str] = mapped_column(String(2048))
    secret_sealed: Mapped[str] = mapped_column(Text)
    #: during a rotation the old secret still signs (both v1 values are sent) until it expires
    previous_secret_sealed: Mapped[str | None] = mapped_column(Text)
    previous_secret_expires_at: Mapped[datetime | None]
    enabled_events: Mapped[list[str]] = mapped_column(JSON)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime]


class PaymentException(Base):
    """The exceptions queue: money states that need a decision (A-7), e.g. a payment after our close."""

    __tablename__ = "payment_exceptions"
    __table_args__ = (UniqueConstraint("order_id", "kind"), Index("ix_payment_exceptions_open", "app_id", "status"))
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    app_id: Mapped[str] = mapped_column(ForeignKey("apps.id"))
    mode: Mapped[str] = mapped_column(String(8))
    order_id: Mapped[str] = mapped_column(ForeignKey("orders.id"))
    #: paid_after_close | amount_mismatch | provider_only | local_only
    kind: Mapped[str] = mapped_column(String(32))
    #: open | resolved
    status: Mapped[str] = mapped_column(String(16))
    #: refund | accept | None
    resolution: Mapped[str | None] = mapped_column(String(16))
    refund_id: Mapped[str | None] = mapped_column(String(40))
    data: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime]
    resolved_at: Mapped[datetime | None]


class ReconciliationRun(Base):
    """One three-way match of a provider's bill for one day against the ledger (A-11)."""

    __tablename__ = "reconciliation_runs"
    __table_args__ = (Index("ix_reconciliation_runs_day", "app_id", "mode", "provider", "bill_date"),)
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    app_id: Mapped[str] = mapped_column(ForeignKey("apps.id"))
    mode: Mapped[str] = mapped_column(String(8))
    provider: Mapped[str] = mapped_column(String(32))
    bill_date: Mapped[str] = mapped_column(String(10))          # YYYY-MM-DD, provider's (Beijing) day
    #: complete | unsupported | failed
    status: Mapped[str] = mapped_column(String(16))
    summary: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime]


class ReconciliationItem(Base):
    __tablename__ = "reconciliation_items"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("reconciliation_runs.id"), index=True)
    order_id: Mapped[str | None] = mapped_column(String(40))
    out_trade_no: Mapped[str] = mapped_column(String(64))
    #: matched | provider_only | local_only | amount_mismatch | status_mismatch
    category: Mapped[str] = mapped_column(String(24))
    #: repaired (by query) | reported
    action: Mapped[str | None] = mapped_column(String(24))
    local_amount: Mapped[int | None] = mapped_column(BigInteger)
    provider_amount: Mapped[int | None] = mapped_column(BigInteger)
    data: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


class WebhookDelivery(Base):
    """The outbox: one row per (event, endpoint), drained by the worker with retries."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (
        UniqueConstraint("event_id", "endpoint_id"),
        Index("ix_webhook_deliveries_due", "status", "next_attempt_at"),
    )
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    event_id: Mapped[str] = mapped_column(ForeignKey("events.id"))
    endpoint_id: Mapped[str] = mapped_column(ForeignKey("webhook_endpoints.id"), index=True)
    app_id: Mapped[str] = mapped_column(String(40))
    #: pending | delivered | dead
    status: Mapped[str] = mapped_column(String(16))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime]
    locked_until: Mapped[datetime | None]
    last_status_code: Mapped[int | None]
    last_error: Mapped[str | None] = mapped_column(String(255))
    created_at: Mapped[datetime]
    delivered_at: Mapped[datetime | None]


class IdempotencyKey(Base):
    """Stripe semantics plus recovery points (Brandur): the key row is the lock and the replay store."""

    __tablename__ = "idempotency_keys"
    __table_args__ = (UniqueConstraint("app_id", "mode", "key"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    app_id: Mapped[str] = mapped_column(ForeignKey("apps.id"))
    mode: Mapped[str] = mapped_column(String(8))
    key: Mapped[str] = mapped_column(String(255))
    fingerprint: Mapped[str] = mapped_column(String(64))
    locked_until: Mapped[datetime | None]
    recovery_point: Mapped[str] = mapped_column(String(32))
    resource_id: Mapped[str | None] = mapped_column(String(40))
    response_status: Mapped[int | None]
    response_body: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    created_at: Mapped[datetime]
    expires_at: Mapped[datetime] = mapped_column(TZ, index=True)


class AppSetting(Base):
    """Per-app, per-mode settings of one capability (``sms``, ...), validated by that capability's model."""

    __tablename__ = "app_settings"
    __table_args__ = (UniqueConstraint("app_id", "mode", "section"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    app_id: Mapped[str] = mapped_column(ForeignKey("apps.id"))
    mode: Mapped[str] = mapped_column(String(8))
    section: Mapped[str] = mapped_column(String(32))
    data: Mapped[dict[str, Any]] = mapped_column(JSON)
    updated_at: Mapped[datetime]


class SmsMessage(Base):
    """One SMS to one number. The number and the template values are sealed; codes are never stored."""

    __tablename__ = "sms_messages"
    __table_args__ = (
        UniqueConstraint("app_id", "mode", "dedupe_key"),
        UniqueConstraint("provider", "provider_message_id"),
        Index("ix_sms_messages_app_created", "app_id", "mode", "created_at"),
        Index("ix_sms_messages_due", "status", "next_attempt_at"),
    )
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    app_id: Mapped[str] = mapped_column(ForeignKey("apps.id"))
    mode: Mapped[str] = mapped_column(String(8))
    #: verification | notice | marketing
    kind: Mapped[str] = mapped_column(String(16))
    template: Mapped[str] = mapped_column(String(64))
    phone_sealed: Mapped[str] = mapped_column(Text)
    phone_hash: Mapped[str] = mapped_column(String(64), index=True)
    phone_masked: Mapped[str] = mapped_column(String(24))
    params_sealed: Mapped[str] = mapped_column(Text)
    #: queued | sending | sent | delivered | failed | unknown
    status: Mapped[str] = mapped_column(String(16))
    provider: Mapped[str | None] = mapped_column(String(32))
    provider_message_id: Mapped[str | None] = mapped_column(String(96))
    #: every provider tried: [{provider, outcome, code, provider_code, at}]
    attempts: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    error_code: Mapped[str | None] = mapped_column(String(64))
    error_message: Mapped[str | None] = mapped_column(String(255))
    carrier_code: Mapped[str | None] = mapped_column(String(64))
    #: e.g. "order:<id>:order.paid": at most one message per key and app
    dedupe_key: Mapped[str | None] = mapped_column(String(120))
    #: api | verification | order_event | cli
    source: Mapped[str] = mapped_column(String(24))
    next_attempt_at: Mapped[datetime | None]
    locked_until: Mapped[datetime | None]
    metadata_: Mapped[dict[str, Any]] = mapped_column("metadata", JSON, default=dict)
    created_at: Mapped[datetime]
    sent_at: Mapped[datetime | None]
    delivered_at: Mapped[datetime | None]
    updated_at: Mapped[datetime]


class SmsReceiptRecord(Base):
    """Delivery reports received, deduplicated: providers push the same report more than once."""

    __tablename__ = "sms_receipts"
    __table_args__ = (UniqueConstraint("provider", "dedupe_key"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    provider: Mapped[str] = mapped_column(String(32))
    dedupe_key: Mapped[str] = mapped_column(String(200))
    message_id: Mapped[str | None] = mapped_column(String(40), index=True)
    #: applied | unmatched | stale
    outcome: Mapped[str] = mapped_column(String(16))
    state: Mapped[str] = mapped_column(String(16))
    carrier_code: Mapped[str | None] = mapped_column(String(64))
    received_at: Mapped[datetime]


class VerificationCode(Base):
    """A one-time code: only an HMAC of it is kept (B-23); single use, bound to phone and purpose (B-21)."""

    __tablename__ = "verification_codes"
    __table_args__ = (Index("ix_verification_codes_lookup", "app_id", "mode", "phone_hash", "purpose", "created_at"),)
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    app_id: Mapped[str] = mapped_column(ForeignKey("apps.id"))
    mode: Mapped[str] = mapped_column(String(8))
    phone_hash: Mapped[str] = mapped_column(String(64))
    purpose: Mapped[str] = mapped_column(String(32))
    code_hash: Mapped[str] = mapped_column(String(64))
    message_id: Mapped[str | None] = mapped_column(String(40))
    #: active | used | dead (too many wrong tries) | superseded | failed (never delivered)
    status: Mapped[str] = mapped_column(String(16))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    max_attempts: Mapped[int] = mapped_column(Integer)
    expires_at: Mapped[datetime]
    created_at: Mapped[datetime]
    used_at: Mapped[datetime | None]


class SmsDecision(Base):
    """Every send/check decision, allowed or refused, with its reason (B-24..B-27). Identifiers are hashed."""

    __tablename__ = "sms_decisions"
    __table_args__ = (Index("ix_sms_decisions_app_created", "app_id", "mode", "created_at"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    app_id: Mapped[str] = mapped_column(ForeignKey("apps.id"))
    mode: Mapped[str] = mapped_column(String(8))
    #: send_code | check_code | send_message
    action: Mapped[str] = mapped_column(String(24))
    phone_hash: Mapped[str | None] = mapped_column(String(64))
    ip_hash: Mapped[str | None] = mapped_column(String(64))
    device_hash: Mapped[str | None] = mapped_column(String(64))
    purpose: Mapped[str | None] = mapped_column(String(32))
    #: allowed | refused
    outcome: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str] = mapped_column(String(48))
    created_at: Mapped[datetime]


class ConsentRecord(Base):
    """The consent ledger, append-only: each grant and each withdrawal is a row; the latest row wins."""

    __tablename__ = "consent_records"
    __table_args__ = (Index("ix_consent_records_subject", "app_id", "mode", "subject_hash", "purpose", "id"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    app_id: Mapped[str] = mapped_column(ForeignKey("apps.id"))
    mode: Mapped[str] = mapped_column(String(8))
    subject_hash: Mapped[str] = mapped_column(String(64))
    #: marketing_sms | ...
    purpose: Mapped[str] = mapped_column(String(32))
    #: grant | withdraw
    action: Mapped[str] = mapped_column(String(16))
    text_version: Mapped[str | None] = mapped_column(String(32))
    #: api | sms_reply | console
    source: Mapped[str] = mapped_column(String(24))
    evidence: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime]


class IdentityVerification(Base):
    """One identity check. Names and ID numbers are sealed (and purged after their retention); images and audio
    are never stored — only the outcome, the score and the provider's reference (C-5)."""

    __tablename__ = "identity_verifications"
    __table_args__ = (
        Index("ix_identity_verifications_app_created", "app_id", "mode", "created_at"),
        Index("ix_identity_verifications_subject", "app_id", "mode", "subject_hash"),
        Index("ix_identity_verifications_due", "status", "next_check_at"),
    )
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    app_id: Mapped[str] = mapped_column(ForeignKey("apps.id"))
    mode: Mapped[str] = mapped_column(String(8))
    #: id_card | face | voiceprint
    kind: Mapped[str] = mapped_column(String(16))
    #: voiceprint: enrol | verify; otherwise verify
    action: Mapped[str] = mapped_column(String(16))
    provider: Mapped[str | None] = mapped_column(String(32))
    #: pending | passed | failed | expired
    status: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str | None] = mapped_column(String(48))
    #: keyed hash of the ID number (or, for voiceprints, of the merchant's subject reference)
    subject_hash: Mapped[str] = mapped_column(String(64))
    name_sealed: Mapped[str | None] = mapped_column(Text)
    id_number_sealed: Mapped[str | None] = mapped_column(Text)
    masked: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    provider_ref: Mapped[str | None] = mapped_column(String(128))
    provider_code: Mapped[str | None] = mapped_column(String(64))
    score: Mapped[float | None]
    liveness: Mapped[bool | None]
    attempts: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    #: what the mini-program needs to run a provider's face flow (a token; no personal data)
    client_params: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    consent_record_id: Mapped[int | None]
    metadata_: Mapped[dict[str, Any]] = mapped_column("metadata", JSON, default=dict)
    expires_at: Mapped[datetime | None]
    next_check_at: Mapped[datetime | None]
    created_at: Mapped[datetime]
    completed_at: Mapped[datetime | None]
    personal_data_purged_at: Mapped[datetime | None]
    updated_at: Mapped[datetime]


class DeletionRecord(Base):
    """A certificate of deletion: what a retention purge or a subject's erasure removed, and when (C-9)."""

    __tablename__ = "deletion_records"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    app_id: Mapped[str | None] = mapped_column(String(40))
    mode: Mapped[str | None] = mapped_column(String(8))
    #: retention_purge | subject_erasure
    reason: Mapped[str] = mapped_column(String(32))
    data_class: Mapped[str] = mapped_column(String(48))
    subject_hash: Mapped[str | None] = mapped_column(String(64))
    count: Mapped[int] = mapped_column(Integer)
    details: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime]


class AuditEntry(Base):
    """The audit trail (B-15, C-11): append-only and hash-chained. ``mac`` is HMAC-SHA256, under the chain key
    (protected by the master key), of ``prev_mac`` followed by the canonical JSON of the entry (see
    :mod:`minigate.services.audit`), so an edited, removed, reordered or inserted entry breaks the chain."""

    __tablename__ = "audit_entries"
    __table_args__ = (
        Index("ix_audit_entries_app", "app_id", "mode", "seq"),
        Index("ix_audit_entries_at", "at"),
    )
    #: 1, 2, 3… with no gaps: appends are serialised by the lock on ``audit_head``
    seq: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    at: Mapped[datetime]
    app_id: Mapped[str | None] = mapped_column(String(40))
    mode: Mapped[str | None] = mapped_column(String(8))
    #: key:<api key id> | cli | worker | system
    actor: Mapped[str] = mapped_column(String(48))
    action: Mapped[str] = mapped_column(String(48))
    target: Mapped[str | None] = mapped_column(String(80))
    #: identifiers, counts and reasons only: never secrets or clear personal data
    details: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    prev_mac: Mapped[str] = mapped_column(String(64))
    mac: Mapped[str] = mapped_column(String(64), unique=True)


class AuditHead(Base):
    """One row (id 1): the end of the audit chain, locked by every append so the chain never forks; the
    checkpoint left by retention purges (the last purged entry's sequence number and mac); and the chain's
    HMAC key, random and sealed by the vault (so it survives a master-key rotation)."""

    __tablename__ = "audit_head"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    seq: Mapped[int] = mapped_column(BigInteger, default=0)
    mac: Mapped[str] = mapped_column(String(64))
    purged_seq: Mapped[int] = mapped_column(BigInteger, default=0)
    purged_mac: Mapped[str] = mapped_column(String(64))
    key_sealed: Mapped[str | None] = mapped_column(Text)
    updated_at: Mapped[datetime | None]


class PublishableKey(Base):
    """A per-app key that is safe to ship inside a mini-program: it can only write analytics events."""

    __tablename__ = "publishable_keys"
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    app_id: Mapped[str] = mapped_column(ForeignKey("apps.id"))
    mode: Mapped[str] = mapped_column(String(8))
    digest: Mapped[str] = mapped_column(String(64), unique=True)
    #: the key itself, sealed: it is public by design, so it can be shown again
    key_sealed: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime]
    revoked_at: Mapped[datetime | None]


class AnalyticsOutbox(Base):
    """Server-side analytics events (``$payment_verified``...), written in the transaction of the ledger change
    that causes them and moved into the analytics journal by the worker."""

    __tablename__ = "analytics_outbox"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    app_id: Mapped[str] = mapped_column(String(40))
    mode: Mapped[str] = mapped_column(String(8))
    event_id: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(100))
    distinct_id: Mapped[str] = mapped_column(String(128))
    user_id: Mapped[str | None] = mapped_column(String(128))
    properties: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    occurred_at: Mapped[datetime]


class AnalyticsForwardCursor(Base):
    """How far one app's events have been forwarded to one destination (``seq`` of the analytics store)."""

    __tablename__ = "analytics_forward_cursors"
    __table_args__ = (UniqueConstraint("app_id", "mode", "provider"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    app_id: Mapped[str] = mapped_column(String(40))
    mode: Mapped[str] = mapped_column(String(8))
    provider: Mapped[str] = mapped_column(String(32))
    last_seq: Mapped[int] = mapped_column(BigInteger, default=0)
    forwarded: Mapped[int] = mapped_column(BigInteger, default=0)
    failures: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime]
    claimed_until: Mapped[datetime | None]
    last_error: Mapped[str | None] = mapped_column(String(300))
    last_success_at: Mapped[datetime | None]
    updated_at: Mapped[datetime]


class AnalyticsPull(Base):
    """One day of one source's numbers for one app: pending, done or failed (retried)."""

    __tablename__ = "analytics_pulls"
    __table_args__ = (UniqueConstraint("app_id", "mode", "source", "ref_date"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    app_id: Mapped[str] = mapped_column(String(40))
    mode: Mapped[str] = mapped_column(String(8))
    source: Mapped[str] = mapped_column(String(32))
    ref_date: Mapped[str] = mapped_column(String(10))
    #: pending | done | failed
    status: Mapped[str] = mapped_column(String(12))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    rows: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime]
    claimed_until: Mapped[datetime | None]
    last_error: Mapped[str | None] = mapped_column(String(300))
    updated_at: Mapped[datetime]


class ConsoleUser(Base):
    """A person who signs in to the admin console: separate from API keys, one role for every app."""

    __tablename__ = "console_users"
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    #: lower-cased; the sign-in name
    email: Mapped[str] = mapped_column(String(254), unique=True)
    name: Mapped[str] = mapped_column(String(120))
    #: viewer | operator | admin
    role: Mapped[str] = mapped_column(String(12))
    #: Argon2id (PHC string)
    password_hash: Mapped[str] = mapped_column(String(200))
    #: the TOTP secret sealed by the vault, once the second factor is confirmed
    totp_sealed: Mapped[str | None] = mapped_column(Text)
    #: a TOTP secret being enrolled (sealed), until the user confirms a code from it
    totp_pending_sealed: Mapped[str | None] = mapped_column(Text)
    #: the last TOTP time step accepted (a code is good once)
    totp_last_step: Mapped[int | None] = mapped_column(BigInteger)
    failed_logins: Mapped[int] = mapped_column(Integer, default=0)
    locked_until: Mapped[datetime | None]
    disabled_at: Mapped[datetime | None]
    created_at: Mapped[datetime]
    last_login_at: Mapped[datetime | None]


class ConsoleSession(Base):
    """A signed-in browser. The cookie holds a random token; only its SHA-256 is stored."""

    __tablename__ = "console_sessions"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)          # SHA-256 of the cookie token
    user_id: Mapped[str] = mapped_column(ForeignKey("console_users.id"), index=True)
    csrf_token: Mapped[str] = mapped_column(String(64))
    #: password checked, second factor still owed (only the TOTP page accepts such a session)
    pending_totp: Mapped[bool] = mapped_column(Boolean, default=False)
    app_id: Mapped[str | None] = mapped_column(String(40))
    mode: Mapped[str] = mapped_column(String(8), default="test")
    lang: Mapped[str] = mapped_column(String(5), default="en")
    ip: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime]
    last_seen_at: Mapped[datetime]
    #: idle and absolute expiry, whichever comes first
    expires_at: Mapped[datetime]
    absolute_expires_at: Mapped[datetime]
    revoked_at: Mapped[datetime | None]


class RefundApproval(Base):
    """A console refund above the approval amount: requested by one person, carried out when another approves."""

    __tablename__ = "refund_approvals"
    __table_args__ = (Index("ix_refund_approvals_app", "app_id", "mode", "status"),)
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    app_id: Mapped[str] = mapped_column(String(40))
    mode: Mapped[str] = mapped_column(String(8))
    order_id: Mapped[str] = mapped_column(String(40), index=True)
    amount: Mapped[int] = mapped_column(BigInteger)
    reason: Mapped[str | None] = mapped_column(String(200))
    #: pending | approved | rejected | failed
    status: Mapped[str] = mapped_column(String(12))
    requested_by: Mapped[str] = mapped_column(String(40))
    requested_at: Mapped[datetime]
    decided_by: Mapped[str | None] = mapped_column(String(40))
    decided_at: Mapped[datetime | None]
    refund_id: Mapped[str | None] = mapped_column(String(40))
    error: Mapped[str | None] = mapped_column(String(300))


class PersonKey(Base):
    """One person's data key (crypto-shredding): the personal data minigate holds about a subject of an app is
    sealed under it; erasure deletes the row, so every copy of those values — backups included — stops opening.
    The key is stored sealed by the vault's shared data key (itself wrapped by the master key)."""

    __tablename__ = "person_keys"
    __table_args__ = (UniqueConstraint("app_id", "mode", "subject_hash"),)
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    app_id: Mapped[str] = mapped_column(String(40))
    mode: Mapped[str] = mapped_column(String(8))
    #: the keyed lookup hash of the identifier the data is filed under (phone, ID number, subject reference)
    subject_hash: Mapped[str] = mapped_column(String(64))
    wrapped: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime]

"""The SMS capability: what every SMS provider (Alibaba Cloud, Tencent Cloud, Yunpian, ...) implements.

Same shape as payments: pure build/parse code plus one ``send`` over an injected :class:`httpx.AsyncClient`.

- ``send`` answers ``ProviderResult[SmsAccepted]``: accepted (with the provider's message id) or a decline
  with a :class:`~minigate.domain.results.StandardCode` (``INVALID_PHONE``, ``RATE_LIMITED``,
  ``TEMPLATE_REJECTED``, ``AUTH_FAILED``, ``INSUFFICIENT_BALANCE``, ``DECLINED`` ...). Transport trouble
  raises :class:`~minigate.errors.OutcomeUnknown`: the message may have gone out.
- ``find`` settles such an unknown outcome: it looks the message up at the provider by minigate's own
  message id (sent as ``OutId`` / ``SessionContext`` / ``uid``). ``lookup_is_authoritative`` says whether
  "not found" proves the provider never accepted it (then the router may fail over without sending twice).
- ``parse_receipts`` / ``parse_replies`` read the provider's delivery-report and upstream-reply pushes.
  None of the three providers signs these pushes; minigate authenticates them by an unguessable token in
  the callback URL and by matching each report to a message it sent (see docs/sms.md).
"""

from __future__ import annotations

import abc
import enum
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import ClassVar

import httpx
from pydantic import BaseModel, ConfigDict, Field, field_validator

from minigate.domain.results import ProviderResult
from minigate.errors import OperationNotSupported
from minigate.providers.bases.payment import NotificationReply

__all__ = ["SIGN_NAME_PATTERN", "DeliveryState", "SmsAccepted", "SmsLookup", "SmsProvider", "SmsProviderConfig",
           "SmsReceipt", "SmsReply", "SmsRequest", "TemplateMapping"]


@dataclass(frozen=True, slots=True)
class SmsRequest:
    """One message to one number, already mapped to the provider's template."""

    message_id: str                          # minigate's id ("msg_…"): OutId / SessionContext / uid
    phone: str                               # E.164, e.g. "+8613800138000"
    sign_name: str                           # the approved signature text, without 【】
    template_id: str                         # the provider's template code / id
    #: template variables in the provider template's order: (name, value); Tencent sends the values only
    params: tuple[tuple[str, str], ...]
    #: the full text as the recipient will read it, 【sign】 included (Yunpian text mode, logs never)
    text: str = ""
    sent_at: datetime | None = None          # when minigate first tried (used by ``find``)

    def __repr__(self) -> str:               # no phone number or code in a traceback or log line
        return f"SmsRequest({self.message_id}, template={self.template_id})"


@dataclass(frozen=True, slots=True)
class SmsAccepted:
    provider_message_id: str                 # Alibaba BizId, Tencent SerialNo, Yunpian sid
    segments: int | None = None              # billed parts (Tencent Fee, Yunpian count)
    fee: str | None = None                   # as the provider states it, e.g. "0.05" (Yunpian, yuan)


class DeliveryState(enum.StrEnum):
    ACCEPTED = "accepted"                    # the provider has it; no receipt yet
    DELIVERED = "delivered"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class SmsLookup:
    """What the provider knows of one message; ``found=False`` means it has no record of it."""

    found: bool
    provider_message_id: str | None = None
    state: DeliveryState | None = None
    error_code: str | None = None


@dataclass(frozen=True, slots=True)
class SmsReceipt:
    """One delivery report from a push."""

    provider_message_id: str
    state: DeliveryState                     # DELIVERED or FAILED
    phone: str | None = None                 # E.164 when the report carries the number
    message_id: str | None = None            # minigate's id, when the provider echoes it (OutId, uid, ...)
    error_code: str | None = None            # carrier code, e.g. DELIVRD / DB:0103
    description: str | None = None
    reported_at: datetime | None = None

    @property
    def dedupe_key(self) -> str:
        """Receipts are pushed more than once: dedupe on (message, phone) (Alibaba's own advice)."""
        return f"{self.provider_message_id}|{self.phone or ''}|{self.state}"


@dataclass(frozen=True, slots=True)
class SmsReply:
    """An upstream message ("TD", "退订", ...) a recipient sent back."""

    phone: str                               # E.164
    text: str
    received_at: datetime | None = None
    reply_id: str | None = None              # the provider's id for the reply, when it has one
    sign_name: str | None = None


class SmsProvider(abc.ABC):
    """Base class of every SMS provider client."""

    #: registry name, e.g. ``"aliyun-sms"``
    name: ClassVar[str]
    #: True when ``find`` reports every message the provider accepted (so "not found" = never accepted)
    lookup_is_authoritative: ClassVar[bool] = False
    #: how long after a send ``find`` can be trusted to see it (seconds)
    lookup_settle_seconds: ClassVar[float] = 1.0
    #: the provider's configuration (credentials, signature, template mapping); set by the subclass
    config: SmsProviderConfig

    def __init__(self, client: httpx.AsyncClient) -> None:
        self.client = client

    @abc.abstractmethod
    async def send(self, req: SmsRequest) -> ProviderResult[SmsAccepted]: ...

    @abc.abstractmethod
    async def find(self, req: SmsRequest) -> ProviderResult[SmsLookup]:
        """Look ``req`` up at the provider by ``req.message_id`` (and phone/date where the API needs them)."""

    @abc.abstractmethod
    def parse_receipts(self, headers: Mapping[str, str], body: bytes) -> list[SmsReceipt]:
        """Parse a delivery-report push. Raises NotificationRejected when the body is not one."""

    def parse_replies(self, headers: Mapping[str, str], body: bytes) -> list[SmsReply]:
        """Parse an upstream-reply push (opt-outs). Raises NotificationRejected when the body is not one."""
        raise OperationNotSupported(f"{self.name} does not push replies", provider=self.name)

    @abc.abstractmethod
    def receipt_ack(self) -> NotificationReply:
        """The answer that stops the provider re-pushing (Alibaba ``{"code":0}``, Tencent ``{"result":0}``,
        Yunpian ``SUCCESS``)."""

    def receipt_nack(self) -> NotificationReply:
        """The answer that makes the provider push again later."""
        return NotificationReply(500, b"retry", "text/plain")


# --------------------------------------------------------------------------- configuration

#: SMS signature rule (C-18, both Alibaba's and Tencent's console rules): 2–12 characters of Chinese,
#: letters or digits, not digits only; the 【】 brackets are added when sending, never stored.
SIGN_NAME_PATTERN = re.compile(r"^(?![0-9]+$)[\u4e00-\u9fa5A-Za-z0-9]{2,12}$")


class TemplateMapping(BaseModel):
    """One minigate template at one provider: its id there and the order of its variables."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    id: str = Field(min_length=1, max_length=64)
    #: variable names in the provider template's order (Tencent is positional); default: minigate's order
    params: tuple[str, ...] | None = None


class SmsProviderConfig(BaseModel):
    """Fields every SMS provider's configuration has (each provider adds its credentials)."""

    model_config = ConfigDict(extra="forbid")
    sign_name: str = ""
    #: minigate template name -> the provider's template id, or {"id": ..., "params": [...]}
    templates: dict[str, str | TemplateMapping] = Field(default_factory=dict)
    base_url: str

    @field_validator("sign_name")
    @classmethod
    def _sign_name(cls, value: str) -> str:
        value = value.strip()
        if value.startswith("【") and value.endswith("】"):
            value = value[1:-1]
        if value and not SIGN_NAME_PATTERN.match(value):
            raise ValueError("sign_name must be 2-12 Chinese characters, letters or digits (without 【】)")
        return value

    def template(self, name: str) -> TemplateMapping | None:
        entry = self.templates.get(name)
        if entry is None or isinstance(entry, TemplateMapping):
            return entry
        return TemplateMapping(id=entry)

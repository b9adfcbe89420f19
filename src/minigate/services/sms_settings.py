"""Per-app SMS settings: routing, signature, templates, code rules, anti-abuse limits, order notifications.

Stored in ``app_settings`` (section ``sms``) per app and mode; read through :func:`load` (cached briefly)
and written through :func:`save` (validated). Every field has a safe default, so an app with no settings
sends through the sandbox in test mode with the limits of B-24.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from minigate.domain.sms import DEFAULT_TEMPLATES, KINDS, Template
from minigate.errors import InvalidRequest
from minigate.providers import registry
from minigate.providers.bases.sms import SIGN_NAME_PATTERN
from minigate.services.app_settings import Section

__all__ = ["ORDER_EVENTS", "SECTION", "SmsLimits", "SmsRoute", "SmsSettings", "load", "save", "template"]

SECTION = "sms"
#: payment events that may trigger an order SMS, and the template each defaults to
ORDER_EVENTS = {"order.paid": "order_paid", "refund.succeeded": "refund_succeeded"}


class SmsRoute(BaseModel):
    model_config = ConfigDict(extra="forbid")
    provider: str
    #: share of first attempts; 0 = failover only
    weight: int = Field(default=1, ge=0, le=1000)

    @field_validator("provider")
    @classmethod
    def _known(cls, value: str) -> str:
        if registry.sms_spec(value) is None:
            raise ValueError(f"unknown SMS provider {value!r}; known: {', '.join(registry.sms_specs())}")
        return value


class TemplateDef(BaseModel):
    model_config = ConfigDict(extra="forbid")
    kind: Literal["verification", "notice", "marketing"]
    text: str = Field(min_length=1, max_length=500)

    @field_validator("text")
    @classmethod
    def _no_brackets(cls, value: str) -> str:
        if "【" in value or "】" in value:
            raise ValueError("templates must not contain 【】: the signature is added when sending (C-18)")
        return value


class SmsLimits(BaseModel):
    """Anti-bombing and anti-pumping limits (B-22, B-24), enforced before any provider call."""

    model_config = ConfigDict(extra="forbid")
    phone_per_minute: int = Field(default=1, ge=1)
    phone_per_hour: int = Field(default=5, ge=1)
    phone_per_day: int = Field(default=10, ge=1)
    ip_per_hour: int = Field(default=10, ge=1)
    ip_per_day: int = Field(default=20, ge=1)
    device_per_hour: int = Field(default=10, ge=1)
    device_per_day: int = Field(default=20, ge=1)
    #: numbers that share all but their last four digits (SMS pumping walks through such ranges)
    prefix_per_hour: int = Field(default=20, ge=1)
    #: every SMS of the app (codes, notices, marketing) in a day: the global budget
    app_per_day: int = Field(default=10_000, ge=1)
    #: code checks per phone in a day (B-22)
    checks_per_phone_day: int = Field(default=20, ge=1)
    #: ask for a captcha when any IP/device/phone window has this many sends left or fewer
    captcha_remaining: int = Field(default=1, ge=0)


class SmsSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")
    #: provider order and weights; empty = every configured provider in registry order (the first one sends,
    #: the others are failover)
    providers: list[SmsRoute] = Field(default_factory=list)
    #: overrides the providers' configured signature (2-12 characters, without 【】)
    sign_name: str | None = None
    #: the app's own templates, beside (or replacing) the default set
    templates: dict[str, TemplateDef] = Field(default_factory=dict)
    code_ttl_seconds: int = Field(default=300, ge=60, le=600)
    max_code_attempts: int = Field(default=5, ge=1, le=10)
    limits: SmsLimits = Field(default_factory=SmsLimits)
    #: country calling codes numbers may belong to; +86 only unless configured (B-26)
    allowed_country_codes: list[str] = Field(default_factory=lambda: ["86"])
    #: payment event -> template name (opt-in): e.g. {"order.paid": "order_paid"}
    order_notifications: dict[str, str] = Field(default_factory=dict)
    #: appended to every marketing text that does not already end with it (C-17)
    opt_out_text: str = "回TD退订"
    #: replies that withdraw marketing consent at once (case-insensitive, whole reply)
    opt_out_keywords: list[str] = Field(default_factory=lambda: ["T", "TD", "N", "R", "退订", "取消", "STOP"])
    #: circuit breaker: consecutive failures that open it, and how long it stays open
    breaker_failures: int = Field(default=3, ge=1)
    breaker_open_seconds: float = Field(default=30.0, gt=0)

    @field_validator("sign_name")
    @classmethod
    def _sign(cls, value: str | None) -> str | None:
        if value is not None and not SIGN_NAME_PATTERN.match(value):
            raise ValueError("sign_name must be 2-12 Chinese characters, letters or digits (without 【】)")
        return value

    @field_validator("allowed_country_codes")
    @classmethod
    def _codes(cls, value: list[str]) -> list[str]:
        for code in value:
            if not re.fullmatch(r"[1-9]\d{0,3}", code):
                raise ValueError(f"{code!r} is not a country calling code (digits, no +)")
        return value

    @model_validator(mode="after")
    def _references(self) -> SmsSettings:
        names = {r.provider for r in self.providers}
        if len(names) != len(self.providers):
            raise ValueError("a provider is listed twice")
        if self.providers and not any(r.weight for r in self.providers):
            raise ValueError("at least one provider needs a weight above 0")
        for event, name in self.order_notifications.items():
            if event not in ORDER_EVENTS:
                raise ValueError(f"order_notifications: {event!r} is not one of {', '.join(ORDER_EVENTS)}")
            found = self.template(name)
            if found is None or found.kind != "notice":
                raise ValueError(f"order_notifications: {name!r} is not a notice template")
        return self

    def template(self, name: str) -> Template | None:
        own = self.templates.get(name)
        if own is not None:
            return Template(name, own.text, own.kind)
        return DEFAULT_TEMPLATES.get(name)

    def template_names(self) -> list[str]:
        return sorted({*DEFAULT_TEMPLATES, *self.templates})


def template(settings: SmsSettings, name: str) -> Template:
    found = settings.template(name)
    if found is None:
        raise InvalidRequest(f"unknown template {name!r}; known: {', '.join(settings.template_names())}",
                             param="template", code="unknown_template")
    assert found.kind in KINDS
    return found


_section = Section(SECTION, SmsSettings, error_code="invalid_sms_settings", label="SMS")
#: the app's settings (cached for a few seconds per process); pass ``session`` inside a transaction
load = _section.load
save = _section.save

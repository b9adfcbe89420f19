"""Mobile numbers: parse, validate, format per provider, mask.

Mainland numbers (the default and, unless configured, the only accepted country) are validated with
``^1[3-9]\\d{9}$`` after stripping spaces/dashes and a leading ``+86``/``0086``/``86`` that leaves 11
digits (service-protocols §2.5). Other countries are accepted only in E.164 form (``+<cc><digits>``, 8–15
digits) and only when the caller's configuration lists the country code.
"""

from __future__ import annotations

import re
from collections.abc import Collection
from dataclasses import dataclass

__all__ = ["InvalidPhone", "Phone", "mask_phone", "parse_phone"]

_MAINLAND = re.compile(r"^1[3-9]\d{9}$")
_E164 = re.compile(r"^\+([1-9]\d{0,3})(\d{4,14})$")
_STRIP = re.compile(r"[\s\-()]")
#: country calling codes, longest first, for splitting an E.164 number (enough for the opt-in list)
_KNOWN_CC = ("852", "853", "886", "1", "7", "44", "60", "61", "62", "63", "65", "66", "81", "82", "84", "86")


class InvalidPhone(ValueError):
    """``code`` is machine-readable: ``invalid_phone`` or ``country_not_allowed``."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True, slots=True)
class Phone:
    country_code: str          # "86"
    national: str              # "13800138000"

    @property
    def e164(self) -> str:
        return f"+{self.country_code}{self.national}"

    @property
    def is_mainland(self) -> bool:
        return self.country_code == "86"

    @property
    def prefix(self) -> str:
        """The number without its last four digits: the unit SMS-pumping rings walk through (B-24)."""
        return self.e164[:-4]

    @property
    def masked(self) -> str:
        return f"+{self.country_code}{_mask_national(self.national)}"

    def __str__(self) -> str:       # never the clear number by accident in an f-string or a log line
        return self.masked

    def __repr__(self) -> str:
        return f"Phone({self.masked})"


def parse_phone(raw: str, *, allowed_country_codes: Collection[str] | None = frozenset({"86"})) -> Phone:
    """Normalise ``raw`` to a :class:`Phone`; raises :class:`InvalidPhone`. ``None`` allows every country."""
    if not isinstance(raw, str) or len(raw) > 32:
        raise InvalidPhone("invalid_phone", "phone must be a string of at most 32 characters")
    text = _STRIP.sub("", raw)
    mainland = text
    for lead in ("+86", "0086", "86"):
        if text.startswith(lead) and len(text) - len(lead) == 11:
            mainland = text[len(lead):]
            break
    if _MAINLAND.match(mainland):
        phone = Phone("86", mainland)
    else:
        if text.startswith("00"):
            text = "+" + text[2:]
        match = _E164.match(text)
        if not match or text.startswith("+86"):
            raise InvalidPhone("invalid_phone", "not a valid mobile number (mainland 1[3-9]xxxxxxxxx or E.164 +cc…)")
        digits = text[1:]
        cc = next((c for c in _KNOWN_CC if digits.startswith(c)), match.group(1))
        phone = Phone(cc, digits[len(cc):])
        if not 6 <= len(phone.national) <= 14:
            raise InvalidPhone("invalid_phone", "not a valid mobile number")
    if allowed_country_codes is not None and phone.country_code not in allowed_country_codes:
        raise InvalidPhone("country_not_allowed",
                           f"numbers in country +{phone.country_code} are not enabled for this app")
    return phone


def mask_phone(value: str) -> str:
    """``+8613800138000`` → ``+86138****8000``; ``13800138000`` → ``138****8000``."""
    digits = value[3:] if value.startswith("+86") else value
    return value[: len(value) - len(digits)] + _mask_national(digits)


def _mask_national(digits: str) -> str:
    if len(digits) < 8:
        return digits[:1] + "*" * (len(digits) - 1)
    return digits[:3] + "*" * (len(digits) - 7) + digits[-4:]

"""Local checks before any identity provider is paid for a call: resident ID numbers, names; and masking.

Resident ID numbers follow GB 11643-1999: 17 digits + a check character, ``S = Σ aᵢ·Wᵢ`` with weights
``7 9 10 5 8 4 2 1 6 3 7 9 10 5 8 4 2`` and check ``"10X98765432"[S mod 11]``; the first two digits must be a
province code, the birth date a real past date (not before 1800: the standard's own example is from 1880).
A 15-digit legacy number is converted (``19`` inserted before the year, check character computed).
Lower-case ``x`` is normalised to ``X`` (Tencent refuses lower case). Vectors: ``11010519491231002X``,
``440524188001010014`` (service-protocols §2.4).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date

__all__ = ["IdNumber", "InvalidIdentity", "mask_id_number", "mask_name", "parse_id_number", "parse_name"]

_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
_CHECK = "10X98765432"
_PROVINCES = frozenset({11, 12, 13, 14, 15, 21, 22, 23, 31, 32, 33, 34, 35, 36, 37, 41, 42, 43, 44, 45, 46,
                        50, 51, 52, 53, 54, 61, 62, 63, 64, 65, 71, 81, 82, 83})
#: Chinese names (with the middle dot of minority and transliterated names) or Latin names
_NAME = re.compile(r"^(?:[\u4e00-\u9fa5]{1,15}(?:[·•][\u4e00-\u9fa5]{1,15}){0,3}|[A-Za-z][A-Za-z .'-]{0,58}[A-Za-z.])$")


class InvalidIdentity(ValueError):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True, slots=True)
class IdNumber:
    value: str               # 18 characters, upper-case X
    birth: date
    male: bool

    def __repr__(self) -> str:
        return f"IdNumber({mask_id_number(self.value)})"

    __str__ = __repr__


def check_character(first17: str) -> str:
    return _CHECK[sum(int(d) * w for d, w in zip(first17, _WEIGHTS, strict=True)) % 11]


def parse_id_number(raw: str, *, today: date | None = None) -> IdNumber:
    if not isinstance(raw, str):
        raise InvalidIdentity("invalid_id_number", "id_number must be a string")
    text = raw.strip().upper()
    if re.fullmatch(r"\d{15}", text):
        text = text[:6] + "19" + text[6:]
        text += check_character(text)
    if not re.fullmatch(r"\d{17}[\dX]", text):
        raise InvalidIdentity("invalid_id_number", "a resident ID number has 18 characters: 17 digits and a "
                                                   "digit or X")
    if int(text[:2]) not in _PROVINCES:
        raise InvalidIdentity("invalid_id_number", "the ID number does not start with a province code")
    try:
        birth = date(int(text[6:10]), int(text[10:12]), int(text[12:14]))
    except ValueError:
        raise InvalidIdentity("invalid_id_number", "the ID number holds no valid birth date") from None
    if birth.year < 1800 or birth > (today or date.today()):
        raise InvalidIdentity("invalid_id_number", "the ID number's birth date is out of range")
    if check_character(text[:17]) != text[17]:
        raise InvalidIdentity("invalid_id_number", "the ID number's check character does not match "
                                                   "(GB 11643-1999)")
    return IdNumber(text, birth, int(text[16]) % 2 == 1)


def parse_name(raw: str) -> str:
    if not isinstance(raw, str):
        raise InvalidIdentity("invalid_name", "name must be a string")
    name = re.sub(r"\s+", " ", raw.strip())
    if not _NAME.match(name):
        raise InvalidIdentity("invalid_name", "name must be 1-30 Chinese characters (· allowed) or a Latin name")
    return name


def mask_id_number(value: str) -> str:
    """``11010519491231002X`` → ``110***********002X``."""
    if len(value) < 8:
        return "*" * len(value)
    return value[:3] + "*" * (len(value) - 7) + value[-4:]


def mask_name(value: str) -> str:
    """``张三`` → ``张*``; ``欧阳娜娜`` → ``欧***``; ``Li Lei`` → ``L*****``."""
    if not value:
        return value
    return value[0] + "*" * (len(value) - 1)

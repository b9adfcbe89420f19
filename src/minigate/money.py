"""Money is an integer number of fen plus a currency. Conversions to yuan strings happen only at wire edges."""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

__all__ = ["MAX_AMOUNT_FEN", "fen_to_yuan", "yuan_to_fen"]

#: 100,000,000.00 yuan: the largest single amount any supported provider accepts.
MAX_AMOUNT_FEN = 10_000_000_000

_YUAN = re.compile(r"^(0|[1-9]\d{0,9})(\.\d{1,2})?$")


def fen_to_yuan(fen: int) -> str:
    """``1234`` -> ``"12.34"``; exact, always two decimals."""
    if not isinstance(fen, int) or isinstance(fen, bool) or fen < 0:
        raise ValueError("amount must be a non-negative integer number of fen")
    return f"{fen // 100}.{fen % 100:02d}"


def yuan_to_fen(yuan: str) -> int:
    """``"12.34"`` -> ``1234``; rejects anything that is not an exact, non-negative yuan amount."""
    text = yuan.strip()
    if not _YUAN.match(text):
        raise ValueError(f"not a yuan amount: {yuan!r}")
    try:
        value = Decimal(text) * 100
    except InvalidOperation as exc:  # pragma: no cover - regex already guards
        raise ValueError(f"not a yuan amount: {yuan!r}") from exc
    return int(value)

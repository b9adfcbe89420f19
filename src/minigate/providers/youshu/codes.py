"""Youshu answer codes -> :class:`StandardCode` declines.

Youshu documents the answer shape only: ``{"code": 0, "msg": "..."}``, ``code`` non-zero for a client error
(service-protocols.md §3.3). Its code numbers are **not published**, so the table below is the sandbox's own
numbering (the simulator answers with it) and is data: pass your own :class:`ErrorMapper` to the forwarder once
real answers are known. Codes missing from the table are ``declined``; codes in ``unknown_outcome_codes`` (Youshu's
own failure) raise :class:`~minigate.errors.ProviderUnavailable`, because the batch may have been stored.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from minigate.domain.results import ProviderResult, StandardCode
from minigate.errors import ProviderUnavailable

__all__ = ["CODES", "DEFAULT_ERROR_MAPPER", "MESSAGES", "PROVIDER", "SUCCESS_CODE", "ErrorMapper"]

PROVIDER = "youshu"
SUCCESS_CODE = 0

#: the sandbox's numbering [not confirmed] -> message
MESSAGES: Mapping[int, str] = {
    0: "success",
    40001: "missing parameter",
    40002: "unknown app_id",
    40003: "signature mismatch",
    40004: "timestamp expired",
    40005: "invalid nonce",
    40006: "nonce already used",
    40007: "unsupported sign method",
    40008: "invalid body",
    40009: "body too large",
    42900: "too many requests",
    50000: "internal error",
}

CODES: Mapping[int, StandardCode] = {
    40001: StandardCode.INVALID_REQUEST,
    40002: StandardCode.AUTH_FAILED,
    40003: StandardCode.AUTH_FAILED,
    40004: StandardCode.AUTH_FAILED,       # our clock is off: the credentials cannot be checked
    40005: StandardCode.INVALID_REQUEST,
    40006: StandardCode.INVALID_REQUEST,
    40007: StandardCode.INVALID_REQUEST,
    40008: StandardCode.INVALID_REQUEST,
    40009: StandardCode.INVALID_REQUEST,
    42900: StandardCode.RATE_LIMITED,
}


@dataclass(frozen=True, slots=True)
class ErrorMapper:
    """The code table; pass your own to :class:`~minigate.providers.youshu.provider.YoushuForwarder`."""

    codes: Mapping[int, StandardCode] = field(default_factory=lambda: dict(CODES))
    unknown_outcome_codes: frozenset[int] = frozenset({50000})

    def decline_or_raise(self, code: int, msg: str | None, *, http_status: int) -> ProviderResult[Any]:
        if code in self.unknown_outcome_codes:
            raise ProviderUnavailable(f"{PROVIDER}: safe-report: code {code}: Youshu failed, the outcome is unknown",
                                      provider=PROVIDER, provider_code=str(code), http_status=http_status)
        return ProviderResult.decline(self.codes.get(code, StandardCode.DECLINED), provider_code=str(code),
                                      message=msg)


DEFAULT_ERROR_MAPPER = ErrorMapper()

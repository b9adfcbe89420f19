"""Alipay ``code``/``sub_code`` -> :class:`StandardCode` declines, or exceptions when the outcome is unknown.

Rules (payment-protocols.md §2.7), applied in this order:

1. Unknown outcome -> raise :class:`ProviderUnavailable`: gateway code ``20000`` (service unavailable), any
   ``isp.*`` / ``aop.unknow-error`` sub_code, and ``ACQ.SYSTEM_ERROR`` (Alipay: "retry with the same
   parameters"). HTTP 5xx, timeouts and unverifiable answers are handled before this table (provider).
2. Credentials refused -> raise :class:`ProviderMisconfigured`: ``20001`` (token permissions), ``40006``
   (insufficient permissions: product not signed), and the sub_codes in ``misconfigured_sub_codes``
   (``isv.invalid-signature``, ``isv.invalid-app-id``, ``isv.missing-signature``, ...).
3. Otherwise a decline value from ``sub_codes``; unmapped ``40001``/``40002`` -> ``INVALID_REQUEST``, unmapped
   ``40004`` -> ``DECLINED``.

Guesses (§5.4: "refund sub_codes" are not confirmed): ``ACQ.REFUND_AMT_NOT_EQUAL_TOTAL``,
``ACQ.REASON_TRADE_REFUND_FEE_ERR``, ``ACQ.TRADE_NOT_ALLOW_REFUND``, ``ACQ.REFUND_FEE_ERROR`` ->
``REFUND_NOT_ALLOWED``. Every mapping is data: pass your own :class:`ErrorMapper` to the provider.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, NoReturn

from minigate.domain.results import ProviderResult, StandardCode
from minigate.errors import ProviderMisconfigured, ProviderUnavailable

__all__ = ["DEFAULT_ERROR_MAPPER", "PROVIDER", "SUCCESS_CODE", "AlipayError", "ErrorMapper"]

PROVIDER = "alipay"
SUCCESS_CODE = "10000"

_SUB_CODES: Mapping[str, StandardCode] = {
    "ACQ.TRADE_HAS_SUCCESS": StandardCode.ALREADY_PAID,
    "ACQ.TRADE_HAS_FINISHED": StandardCode.ALREADY_PAID,
    "ACQ.TRADE_HAS_CLOSE": StandardCode.ORDER_CLOSED,
    "ACQ.TRADE_NOT_EXIST": StandardCode.NOT_FOUND,
    "ACQ.CONTEXT_INCONSISTENT": StandardCode.PARAMS_MISMATCH,
    "ACQ.REFUND_AMT_NOT_EQUAL_TOTAL": StandardCode.REFUND_NOT_ALLOWED,
    "ACQ.REASON_TRADE_REFUND_FEE_ERR": StandardCode.REFUND_NOT_ALLOWED,
    "ACQ.TRADE_NOT_ALLOW_REFUND": StandardCode.REFUND_NOT_ALLOWED,
    "ACQ.REFUND_FEE_ERROR": StandardCode.REFUND_NOT_ALLOWED,
    "ACQ.SELLER_BALANCE_NOT_ENOUGH": StandardCode.INSUFFICIENT_BALANCE,
    "ACQ.TRADE_STATUS_ERROR": StandardCode.DECLINED,
    "ACQ.INVALID_PARAMETER": StandardCode.INVALID_REQUEST,
    "ACQ.BUYER_NOT_EXIST": StandardCode.INVALID_REQUEST,
    "ACQ.TOTAL_FEE_EXCEED": StandardCode.INVALID_REQUEST,
    "ACQ.ACCESS_FORBIDDEN": StandardCode.AUTH_FAILED,
    "ACQ.TRADE_BUYER_NOT_MATCH": StandardCode.PARAMS_MISMATCH,
}

_UNKNOWN_OUTCOME_CODES = frozenset({"20000"})
_UNKNOWN_OUTCOME_SUB_CODES = frozenset({"ACQ.SYSTEM_ERROR", "aop.unknow-error", "isp.unknow-error"})
_MISCONFIGURED_CODES = frozenset({"20001", "40006"})
_MISCONFIGURED_SUB_CODES = frozenset({
    "isv.invalid-signature", "isv.missing-signature", "isv.invalid-signature-type", "isv.invalid-app-id",
    "isv.missing-app-id", "isv.invalid-timestamp", "isv.invalid-encrypt", "isv.decryption-error",
    "isv.missing-encrypt-key", "isv.invalid-app-cert-sn", "isv.invalid-alipay-root-cert-sn",
    "isv.app-unbind-partner", "isv.insufficient-isv-permissions", "isv.invalid-charset",
})


@dataclass(frozen=True, slots=True)
class AlipayError:
    """A decoded non-10000 answer. ``msg``/``sub_msg`` are Alipay's own texts (never our secrets)."""

    code: str
    msg: str | None = None
    sub_code: str | None = None
    sub_msg: str | None = None
    verified: bool = True

    @classmethod
    def of(cls, data: Mapping[str, Any], *, verified: bool = True) -> AlipayError:
        def text(key: str) -> str | None:
            value = data.get(key)
            return value if isinstance(value, str) and value else None

        return cls(code=text("code") or "0", msg=text("msg"), sub_code=text("sub_code"),
                   sub_msg=text("sub_msg"), verified=verified)

    @property
    def provider_code(self) -> str:
        return self.sub_code or self.code


@dataclass(frozen=True, slots=True)
class ErrorMapper:
    """The code table; pass your own to :class:`~minigate.providers.alipay.provider.AlipayProvider`."""

    sub_codes: Mapping[str, StandardCode] = field(default_factory=lambda: dict(_SUB_CODES))
    unknown_outcome_codes: frozenset[str] = _UNKNOWN_OUTCOME_CODES
    unknown_outcome_sub_codes: frozenset[str] = _UNKNOWN_OUTCOME_SUB_CODES
    unknown_outcome_prefixes: tuple[str, ...] = ("isp.",)
    misconfigured_codes: frozenset[str] = _MISCONFIGURED_CODES
    misconfigured_sub_codes: frozenset[str] = _MISCONFIGURED_SUB_CODES

    def raise_or_decline(self, err: AlipayError, *, op: str) -> ProviderResult[Any]:
        """Map a non-10000 answer. Returns a decline or raises (never ``ok=True``).

        An answer whose signature could not be checked (``verified=False``: Alipay may leave ``sign`` empty on
        gateway errors) may only raise: a decline is a fact we would act on.
        """
        sub = err.sub_code or ""
        if (err.code in self.unknown_outcome_codes or sub in self.unknown_outcome_sub_codes
                or sub.startswith(self.unknown_outcome_prefixes)):
            _raise(ProviderUnavailable, err, op, "Alipay asks to retry (outcome unknown)")
        if err.code in self.misconfigured_codes or sub in self.misconfigured_sub_codes:
            _raise(ProviderMisconfigured, err, op, "credentials, signature or permissions refused")
        if not err.verified:
            _raise(ProviderUnavailable, err, op, "unsigned error answer")
        return ProviderResult.decline(self.classify(err, op=op), provider_code=err.provider_code,
                                      message=err.sub_msg or err.msg)

    def classify(self, err: AlipayError, *, op: str) -> StandardCode:
        mapped = self.sub_codes.get(err.sub_code or "")
        if mapped is not None:
            return mapped
        if err.code in ("40001", "40002"):
            return StandardCode.INVALID_REQUEST
        return StandardCode.DECLINED


def _raise(kind: type[ProviderUnavailable] | type[ProviderMisconfigured], err: AlipayError, op: str,
           what: str) -> NoReturn:
    raise kind(f"{PROVIDER}: {op}: {err.code} {err.sub_code or '-'}: {what}", provider=PROVIDER,
               provider_code=err.provider_code)


DEFAULT_ERROR_MAPPER = ErrorMapper()

"""JD Pay result codes -> :class:`StandardCode` declines, or exceptions when the outcome is unknown.

JD's full code list is not public (payment-protocols.md §5 point 6). What is certain: ``000000`` means
success and answers carry ``<result><code>…</code><desc>…</desc></result>``. Everything else here is a
guess, kept in one overridable table (:class:`ErrorMapper`; pass your own to ``JDPayProvider``):

1. Unknown outcome -> raise :class:`ProviderUnavailable`: any non-200 HTTP status, an answer that is not a
   JD envelope, a code in ``unknown_outcome_codes``, or a ``desc`` that says "system busy / timeout"
   (``系统``/``繁忙``/``超时``/``稍后``).
2. Our credentials refused -> raise :class:`ProviderMisconfigured`: ``misconfigured_codes``, or a ``desc``
   about signature/decryption/merchant (``验签``/``签名``/``解密``/``商户不存在``).
3. Otherwise a decline: the ``codes`` table, then ``desc`` markers (``不存在`` -> NOT_FOUND, ``已支付`` ->
   ALREADY_PAID, ``退款金额``/``可退`` -> REFUND_NOT_ALLOWED, ``不一致`` -> PARAMS_MISMATCH), else DECLINED.

The ``SANDBOX_*`` codes are minigate's own labels (the simulator answers with them); they are not JD's.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from minigate.domain.results import ProviderResult, StandardCode
from minigate.errors import ProviderMisconfigured, ProviderUnavailable

__all__ = [
    "DEFAULT_ERROR_MAPPER",
    "PROVIDER",
    "SANDBOX_CODES",
    "SUCCESS",
    "ErrorMapper",
]

PROVIDER = "jdpay"
SUCCESS = "000000"

#: The simulator's codes and their ``desc`` (guesses, labelled as such; JD's real ones are unknown, §5.6).
SANDBOX_CODES: Mapping[str, str] = {
    "SY0001": "系统异常，请稍后再试",
    "SE0001": "验签失败",
    "SE0002": "解密失败",
    "ME0001": "商户不存在",
    "PA0001": "参数错误",
    "TS0001": "交易不存在",
    "TS0002": "退款金额超过可退金额",
    "TS0003": "交易未支付，不能退款",
    "TS0004": "退款单号重复，参数与原请求不一致",
    "TS0005": "交易已支付",
    "TS0006": "交易号重复，参数与原订单不一致",
    "RL0001": "请求过于频繁",
}

_CODES: Mapping[str, StandardCode] = {
    "PA0001": StandardCode.INVALID_REQUEST,
    "TS0001": StandardCode.NOT_FOUND,
    "TS0002": StandardCode.REFUND_NOT_ALLOWED,
    "TS0003": StandardCode.REFUND_NOT_ALLOWED,
    "TS0004": StandardCode.PARAMS_MISMATCH,
    "TS0005": StandardCode.ALREADY_PAID,
    "TS0006": StandardCode.PARAMS_MISMATCH,
    "RL0001": StandardCode.RATE_LIMITED,
}

_MARKERS: tuple[tuple[str, StandardCode], ...] = (
    ("不存在", StandardCode.NOT_FOUND),
    ("已支付", StandardCode.ALREADY_PAID),
    ("不一致", StandardCode.PARAMS_MISMATCH),
    ("退款金额", StandardCode.REFUND_NOT_ALLOWED),
    ("可退", StandardCode.REFUND_NOT_ALLOWED),
    ("已关闭", StandardCode.ORDER_CLOSED),
    ("余额不足", StandardCode.INSUFFICIENT_BALANCE),
    ("频繁", StandardCode.RATE_LIMITED),
    ("参数", StandardCode.INVALID_REQUEST),
)


@dataclass(frozen=True, slots=True)
class ErrorMapper:
    """The code table; construct your own to correct a guess without a code change."""

    codes: Mapping[str, StandardCode] = field(default_factory=lambda: dict(_CODES))
    unknown_outcome_codes: frozenset[str] = frozenset({"SY0001"})
    misconfigured_codes: frozenset[str] = frozenset({"SE0001", "SE0002", "ME0001"})
    unknown_outcome_markers: tuple[str, ...] = ("系统", "繁忙", "超时", "稍后")
    misconfigured_markers: tuple[str, ...] = ("验签", "签名", "解密", "商户不存在")
    markers: tuple[tuple[str, StandardCode], ...] = _MARKERS

    def raise_or_decline(self, code: str | None, desc: str | None, *, op: str) -> ProviderResult[Any]:
        """Map a non-``000000`` result. Returns a decline or raises (never ``ok=True``)."""
        text = desc or ""
        if not code:
            raise ProviderUnavailable(f"{PROVIDER}: {op}: answer without a result code", provider=PROVIDER)
        if code in self.unknown_outcome_codes or (
                code not in self.codes and any(m in text for m in self.unknown_outcome_markers)):
            raise ProviderUnavailable(f"{PROVIDER}: {op}: {code}: unknown outcome", provider=PROVIDER,
                                      provider_code=code)
        if code in self.misconfigured_codes or (
                code not in self.codes and any(m in text for m in self.misconfigured_markers)):
            raise ProviderMisconfigured(f"{PROVIDER}: {op}: {code}: credentials or signature refused",
                                        provider=PROVIDER, provider_code=code)
        return ProviderResult.decline(self.classify(code, text), provider_code=code, message=desc)

    def classify(self, code: str, desc: str) -> StandardCode:
        mapped = self.codes.get(code)
        if mapped is not None:
            return mapped
        for marker, standard in self.markers:
            if marker in desc:
                return standard
        return StandardCode.DECLINED


DEFAULT_ERROR_MAPPER = ErrorMapper()

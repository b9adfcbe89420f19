"""WeChat Pay v3 error answers -> :class:`StandardCode` declines, or exceptions when the outcome is unknown.

Rules (payment-protocols.md §1.12), applied in this order:

1. Unknown outcome -> raise :class:`ProviderUnavailable`: any 5xx, any 429 (WeChat: "429 on refund =
   state unknown: query, or retry with the same out_refund_no"), the retry codes (``SYSTEM_ERROR``,
   ``BANK_ERROR`` / ``BANKERROR`` -- spelling unconfirmed, §5.2 -- ``SERVICE_UNAVAILABLE``, ...), any 3xx,
   and any 4xx whose body is not a WeChat error object (e.g. an HTML 404 from a proxy or a wrong
   ``base_url`` prefix: treating that as "order not found" would be a lie).
2. 401 (``SIGN_ERROR``) and the credential codes (``APPID_MCHID_NOT_MATCH``, ``MCH_NOT_EXISTS``) ->
   raise :class:`ProviderMisconfigured`.
3. Otherwise a decline value. Guesses, all overridable through :class:`ErrorMapper`:

   * ``ORDERPAID`` (§5 open point 1: v2's code; v3 not confirmed) -> ``ALREADY_PAID``; the same for any
     code whose ``Request-ID`` ends in one of the numeric "already paid" codes 268449538 / 268498689, or
     whose message says 订单已支付.
   * ``INVALID_REQUEST`` -> ``PARAMS_MISMATCH`` when distinguishable: the message contains 不一致
     ("参数与首次请求时不一致", parameters differ from the first request) or the ``Request-ID`` ends in
     268498688. Otherwise ``REFUND_NOT_ALLOWED`` for refund calls (WeChat reports "refund exceeds the
     refundable amount", "already fully refunded" etc. as INVALID_REQUEST) and ``INVALID_REQUEST`` elsewhere.
   * ``FREQUENCY_LIMITED`` / ``RATELIMIT_EXCEEDED`` with a non-429 status -> ``RATE_LIMITED`` (with 429 the
     rule 1 exception wins: the provider_code on the exception still says it was rate limiting).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, NoReturn

import httpx

from minigate.domain.results import ProviderResult, StandardCode
from minigate.errors import ProviderMisconfigured, ProviderUnavailable

__all__ = [
    "DEFAULT_ERROR_MAPPER",
    "PROVIDER",
    "ErrorMapper",
    "WeChatError",
    "parse_error_body",
    "request_id_of",
]

PROVIDER = "wechatpay"

_UNKNOWN_OUTCOME = frozenset({
    "SYSTEM_ERROR", "SYSTEMERROR", "BANK_ERROR", "BANKERROR", "SERVICE_UNAVAILABLE", "INTERNAL_ERROR",
})
_MISCONFIGURED = frozenset({"SIGN_ERROR", "APPID_MCHID_NOT_MATCH", "MCH_NOT_EXISTS", "APPID_NOT_EXIST",
                            "MCHID_NOT_EXIST"})

_CODES: Mapping[str, StandardCode] = {
    "ORDERPAID": StandardCode.ALREADY_PAID,
    "ORDER_PAID": StandardCode.ALREADY_PAID,
    "ORDER_CLOSED": StandardCode.ORDER_CLOSED,
    "ORDERCLOSED": StandardCode.ORDER_CLOSED,
    "ORDER_NOT_EXIST": StandardCode.NOT_FOUND,
    "ORDERNOTEXIST": StandardCode.NOT_FOUND,
    "RESOURCE_NOT_EXISTS": StandardCode.NOT_FOUND,
    "NOT_FOUND": StandardCode.NOT_FOUND,
    "OUT_TRADE_NO_USED": StandardCode.PARAMS_MISMATCH,
    "PARAM_ERROR": StandardCode.INVALID_REQUEST,
    "NOT_ENOUGH": StandardCode.INSUFFICIENT_BALANCE,
    "NOTENOUGH": StandardCode.INSUFFICIENT_BALANCE,
    "USER_ACCOUNT_ABNORMAL": StandardCode.REFUND_NOT_ALLOWED,
    "TRADE_OVERDUE": StandardCode.REFUND_NOT_ALLOWED,
    "REFUND_AMOUNT_ERROR": StandardCode.REFUND_NOT_ALLOWED,
    "REFUNDNOTEXIST": StandardCode.NOT_FOUND,
    "FREQUENCY_LIMITED": StandardCode.RATE_LIMITED,
    "RATELIMIT_EXCEEDED": StandardCode.RATE_LIMITED,
    "NO_AUTH": StandardCode.AUTH_FAILED,
    "RULE_LIMIT": StandardCode.DECLINED,
    "TRADE_ERROR": StandardCode.DECLINED,
    "ACCOUNT_ERROR": StandardCode.DECLINED,
}


@dataclass(frozen=True, slots=True)
class WeChatError:
    """A decoded WeChat error answer. ``message`` is WeChat's own text (no secrets of ours)."""

    http_status: int
    code: str | None
    message: str | None
    request_id: str | None
    detail: Any = None


def request_id_of(response: httpx.Response) -> str | None:
    value: str | None = response.headers.get("Request-ID")
    return value


def parse_error_body(response: httpx.Response) -> WeChatError:
    code: str | None = None
    message: str | None = None
    detail: Any = None
    try:
        data = json.loads(response.content) if response.content else None
    except ValueError:
        data = None
    if isinstance(data, dict):
        raw_code, raw_message = data.get("code"), data.get("message")
        code = raw_code if isinstance(raw_code, str) and raw_code else None
        message = raw_message if isinstance(raw_message, str) else None
        detail = data.get("detail")
    return WeChatError(response.status_code, code, message, request_id_of(response), detail)


def _numeric_code(request_id: str | None) -> str | None:
    """WeChat embeds a numeric error code after the last ``-`` of ``Request-ID`` (§1.12)."""
    if not request_id or "-" not in request_id:
        return None
    tail = request_id.rsplit("-", 1)[1]
    return tail if tail.isdigit() else None


@dataclass(frozen=True, slots=True)
class ErrorMapper:
    """The code table; pass your own to :class:`WeChatPayProvider` to correct a guess (no code change)."""

    codes: Mapping[str, StandardCode] = field(default_factory=lambda: dict(_CODES))
    unknown_outcome_codes: frozenset[str] = _UNKNOWN_OUTCOME
    misconfigured_codes: frozenset[str] = _MISCONFIGURED
    already_paid_numeric: frozenset[str] = frozenset({"268449538", "268498689"})
    already_paid_markers: tuple[str, ...] = ("订单已支付",)
    params_mismatch_numeric: frozenset[str] = frozenset({"268498688"})
    params_mismatch_markers: tuple[str, ...] = ("不一致",)

    def raise_or_decline(self, response: httpx.Response, *, op: str) -> ProviderResult[Any]:
        """Map a non-2xx answer. Returns a decline or raises (never returns ``ok=True``)."""
        err = parse_error_body(response)
        status = err.http_status
        if status >= 500 or status == 429 or status < 400:
            _raise(ProviderUnavailable, err, "unknown outcome")
        if err.code is None:
            if status == 401:
                _raise(ProviderMisconfigured, err, "credentials or signature refused")
            _raise(ProviderUnavailable, err, "error answer without a WeChat error body")
        if err.code in self.unknown_outcome_codes:
            _raise(ProviderUnavailable, err, "WeChat asks to retry with the same parameters")
        if status == 401 or err.code in self.misconfigured_codes:
            _raise(ProviderMisconfigured, err, "credentials or signature refused")
        return ProviderResult.decline(self.classify(err, op=op), provider_code=err.code,
                                      message=err.message, request_id=err.request_id)

    def classify(self, err: WeChatError, *, op: str) -> StandardCode:
        numeric = _numeric_code(err.request_id)
        message = err.message or ""
        if numeric in self.already_paid_numeric or any(m in message for m in self.already_paid_markers):
            return StandardCode.ALREADY_PAID
        if err.code == "INVALID_REQUEST":
            markers = self.params_mismatch_markers
            if numeric in self.params_mismatch_numeric or any(m in message for m in markers):
                return StandardCode.PARAMS_MISMATCH
            return StandardCode.REFUND_NOT_ALLOWED if op == "refund" else StandardCode.INVALID_REQUEST
        mapped = self.codes.get(err.code or "")
        if mapped is not None:
            return mapped
        if err.http_status == 404:
            return StandardCode.NOT_FOUND
        if err.http_status == 400:
            return StandardCode.INVALID_REQUEST
        return StandardCode.DECLINED


def _raise(kind: type[ProviderUnavailable] | type[ProviderMisconfigured], err: WeChatError,
           what: str) -> NoReturn:
    code = f" {err.code}" if err.code else ""
    raise kind(f"{PROVIDER}: HTTP {err.http_status}{code}: {what}", provider=PROVIDER,
               provider_code=err.code, request_id=err.request_id, http_status=err.http_status)


DEFAULT_ERROR_MAPPER = ErrorMapper()

"""Alibaba Cloud SMS ``Code`` values -> :class:`StandardCode` declines, or exceptions when the outcome is unknown.

Two families (service-protocols.md §1.1.1):

- **business answers**, HTTP 200 with ``Code != "OK"`` (``isv.*`` / ``isp.*``);
- **gateway refusals**, HTTP 4xx with ``{"RequestId","HostId","Code","Message","Recommend"}``: the request was
  refused before the SMS service ran (signature, key, time stamp, nonce, missing parameters).

Both are declines (the message was not sent) except ``isp.SYSTEM_ERROR`` and the ``unknown_outcome`` codes:
Alibaba asks to retry, so the send may or may not have happened -> :class:`ProviderUnavailable`. HTTP 5xx,
429 and unreadable answers are handled before this table (provider).

Codes marked ``# outside the reference`` come from public code listing Alibaba's SMS error table, not from
service-protocols.md; every mapping is data: pass your own :class:`CodeTable` to the provider.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from minigate.domain.results import ProviderResult, StandardCode
from minigate.errors import ProviderUnavailable

__all__ = ["BUSINESS_CODES", "DEFAULT_CODE_TABLE", "GATEWAY_CODES", "PROVIDER", "SUCCESS_CODE", "CodeTable"]

PROVIDER = "aliyun-sms"
SUCCESS_CODE = "OK"

#: HTTP 200 answers with ``Code != "OK"``.
BUSINESS_CODES: Mapping[str, StandardCode] = {
    # per-number / per-account flow control
    "isv.BUSINESS_LIMIT_CONTROL": StandardCode.RATE_LIMITED,
    "isv.DAY_LIMIT_CONTROL": StandardCode.RATE_LIMITED,                 # outside the reference
    # the number
    "isv.MOBILE_NUMBER_ILLEGAL": StandardCode.INVALID_PHONE,
    "isv.DOMESTIC_NUMBER_NOT_SUPPORTED": StandardCode.INVALID_PHONE,    # outside the reference
    "isv.MOBILE_COUNT_OVER_LIMIT": StandardCode.INVALID_REQUEST,
    # template, signature and their parameters
    "isv.SMS_SIGNATURE_ILLEGAL": StandardCode.TEMPLATE_REJECTED,
    "isv.SMS_TEMPLATE_ILLEGAL": StandardCode.TEMPLATE_REJECTED,
    "isv.TEMPLATE_MISSING_PARAMETERS": StandardCode.TEMPLATE_REJECTED,
    "isv.INVALID_JSON_PARAM": StandardCode.TEMPLATE_REJECTED,
    "isv.PARAM_LENGTH_LIMIT": StandardCode.TEMPLATE_REJECTED,
    "isv.SMS_SIGN_ILLEGAL": StandardCode.TEMPLATE_REJECTED,             # outside the reference
    "isv.SMS_SIGNATURE_SCENE_ILLEGAL": StandardCode.TEMPLATE_REJECTED,  # outside the reference
    # content
    "isv.BLACK_KEY_CONTROL_LIMIT": StandardCode.CONTENT_REJECTED,
    "isv.PARAM_NOT_SUPPORT_URL": StandardCode.CONTENT_REJECTED,
    "isv.SMS_CONTENT_ILLEGAL": StandardCode.CONTENT_REJECTED,           # outside the reference
    "isv.TEMPLATE_PARAMS_ILLEGAL": StandardCode.CONTENT_REJECTED,       # outside the reference
    # money
    "isv.AMOUNT_NOT_ENOUGH": StandardCode.INSUFFICIENT_BALANCE,
    "isv.OUT_OF_SERVICE": StandardCode.INSUFFICIENT_BALANCE,            # "业务停机": suspended for arrears
    # the account and its permissions
    "isv.PRODUCT_UN_SUBSCRIPT": StandardCode.AUTH_FAILED,
    "isv.PRODUCT_UNSUBSCRIBE": StandardCode.AUTH_FAILED,                # outside the reference
    "isv.ACCOUNT_NOT_EXISTS": StandardCode.AUTH_FAILED,
    "isv.ACCOUNT_ABNORMAL": StandardCode.AUTH_FAILED,
    "isp.RAM_PERMISSION_DENY": StandardCode.AUTH_FAILED,
    "isv.DENY_IP_RANGE": StandardCode.AUTH_FAILED,                      # outside the reference
    # the request
    "isv.INVALID_PARAMETERS": StandardCode.INVALID_REQUEST,
    "isv.EXTEND_CODE_ERROR": StandardCode.INVALID_REQUEST,              # outside the reference
}

#: HTTP 4xx gateway refusals (the SMS service never saw the request).
GATEWAY_CODES: Mapping[str, StandardCode] = {
    "SignatureDoesNotMatch": StandardCode.AUTH_FAILED,
    "IncompleteSignature": StandardCode.AUTH_FAILED,
    "InvalidAccessKeyId.NotFound": StandardCode.AUTH_FAILED,
    "InvalidAccessKeyId.Inactive": StandardCode.AUTH_FAILED,
    "InvalidSecurityToken.Expired": StandardCode.AUTH_FAILED,
    "InvalidSecurityToken.MismatchWithAccessKey": StandardCode.AUTH_FAILED,
    "InvalidTimeStamp.Expired": StandardCode.AUTH_FAILED,
    "InvalidTimeStamp.Format": StandardCode.AUTH_FAILED,
    "SignatureNonceUsed": StandardCode.AUTH_FAILED,
    "Forbidden.RAM": StandardCode.AUTH_FAILED,
    "MissingParameter": StandardCode.INVALID_REQUEST,
    "InvalidParameter": StandardCode.INVALID_REQUEST,
    "InvalidVersion": StandardCode.INVALID_REQUEST,
    "InvalidAction.NotFound": StandardCode.INVALID_REQUEST,
    "Throttling": StandardCode.RATE_LIMITED,
    "Throttling.User": StandardCode.RATE_LIMITED,
    "Throttling.Api": StandardCode.RATE_LIMITED,
}

#: Alibaba asks to retry: the send may have happened.
_UNKNOWN_OUTCOME = frozenset({"isp.SYSTEM_ERROR", "InternalError", "ServiceUnavailable", "ServiceTimeout"})


@dataclass(frozen=True, slots=True)
class CodeTable:
    """The code table; pass your own to :class:`~minigate.providers.aliyun_sms.provider.AliyunSmsProvider`."""

    business: Mapping[str, StandardCode] = field(default_factory=lambda: dict(BUSINESS_CODES))
    gateway: Mapping[str, StandardCode] = field(default_factory=lambda: dict(GATEWAY_CODES))
    unknown_outcome: frozenset[str] = _UNKNOWN_OUTCOME

    def classify(self, code: str, *, http_status: int) -> StandardCode:
        """The StandardCode of a refusal. ``Missing<Name>`` (e.g. ``MissingPhoneNumbers``) -> INVALID_REQUEST;
        unmapped 4xx gateway codes -> INVALID_REQUEST, unmapped business codes -> DECLINED."""
        mapped = self.business.get(code) or self.gateway.get(code)
        if mapped is not None:
            return mapped
        if code.startswith(("Missing", "Invalid")):
            return StandardCode.INVALID_REQUEST
        return StandardCode.INVALID_REQUEST if http_status >= 400 else StandardCode.DECLINED

    def decline_or_raise(self, data: Mapping[str, Any], *, http_status: int, op: str) -> ProviderResult[Any]:
        """A decline for a refusal answer (never ``ok=True``); raises when Alibaba leaves the outcome open."""
        code = str(data.get("Code") or data.get("code") or "")
        message = data.get("Message") or data.get("message")
        request_id = data.get("RequestId") or data.get("requestId")
        request_id = request_id if isinstance(request_id, str) else None
        if code in self.unknown_outcome or (code.startswith("isp.") and code not in self.business):
            raise ProviderUnavailable(f"{PROVIDER}: {op}: {code}: Alibaba asks to retry (outcome unknown)",
                                      provider=PROVIDER, provider_code=code, request_id=request_id,
                                      http_status=http_status)
        return ProviderResult.decline(self.classify(code, http_status=http_status), provider_code=code or None,
                                      message=_safe_message(message), request_id=request_id)


def _safe_message(message: Any) -> str | None:
    """Alibaba's own text, without the ``server string to sign`` echo (it repeats the number and the
    template parameters of the request)."""
    if not isinstance(message, str) or not message:
        return None
    return message.split(" server string to sign is:", 1)[0][:200]


DEFAULT_CODE_TABLE = CodeTable()

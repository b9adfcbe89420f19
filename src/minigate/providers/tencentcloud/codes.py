"""Tencent Cloud error codes -> :class:`StandardCode` (service-protocols.md §1.2, §2.1).

Two tables over the common API 3.0 codes: SMS (``SMS_CODES``; it serves request-level refusals
``Response.Error.Code`` and per-number entries of ``SendStatusSet``) and FaceID (``FACEID_CODES``, with
:data:`FACEID_ERROR_MAPPER`). Rules, in this order:

1. Outcome unknown -> raise :class:`ProviderUnavailable`: ``InternalError`` and ``InternalError.*`` (except the
   few listed in ``codes`` that are plainly about our request), because the message may have gone out.
2. A listed code -> its StandardCode.
3. Prefixes: ``AuthFailure.*`` -> AUTH_FAILED, ``LimitExceeded.*`` -> RATE_LIMITED, ``MissingParameter*`` /
   ``InvalidParameter*`` / ``UnknownParameter`` / ``InvalidAction`` -> INVALID_REQUEST (FaceID adds
   ``UnauthorizedOperation*`` -> AUTH_FAILED); anything else DECLINED.

The mapping is data: pass your own :class:`ErrorMapper` to the provider.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from minigate.domain.results import ProviderResult, StandardCode
from minigate.errors import ProviderUnavailable

__all__ = ["COMMON_CODES", "DEFAULT_ERROR_MAPPER", "FACEID_CODES", "FACEID_ERROR_MAPPER", "OK", "PROVIDER",
           "SMS_CODES", "ErrorMapper"]

PROVIDER = "tencentcloud"
#: per-number success in SendStatusSet
OK = "Ok"

_C = StandardCode
#: codes every API 3.0 service answers
COMMON_CODES: Mapping[str, StandardCode] = {
    "AuthFailure.SignatureFailure": _C.AUTH_FAILED,
    "AuthFailure.SignatureExpire": _C.AUTH_FAILED,
    "AuthFailure.SecretIdNotFound": _C.AUTH_FAILED,
    "AuthFailure.InvalidSecretId": _C.AUTH_FAILED,
    "AuthFailure.TokenFailure": _C.AUTH_FAILED,
    "AuthFailure.UnauthorizedOperation": _C.AUTH_FAILED,
    "AuthFailure.InvalidAuthorization": _C.AUTH_FAILED,
    "RequestLimitExceeded": _C.RATE_LIMITED,
    "InvalidAction": _C.INVALID_REQUEST,
    "InvalidParameter": _C.INVALID_REQUEST,
    "MissingParameter": _C.INVALID_REQUEST,
    "UnknownParameter": _C.INVALID_REQUEST,
    "NoSuchVersion": _C.INVALID_REQUEST,
    "UnsupportedRegion": _C.INVALID_REQUEST,
}

SMS_CODES: Mapping[str, StandardCode] = {
    **COMMON_CODES,
    # SMS: flow control (per number and per application)
    "LimitExceeded.PhoneNumberThirtySecondLimit": _C.RATE_LIMITED,
    "LimitExceeded.PhoneNumberOneHourLimit": _C.RATE_LIMITED,
    "LimitExceeded.PhoneNumberDailyLimit": _C.RATE_LIMITED,
    "LimitExceeded.PhoneNumberSameContentDailyLimit": _C.RATE_LIMITED,
    "LimitExceeded.DeliveryFrequencyLimit": _C.RATE_LIMITED,
    "LimitExceeded.AppDailyLimit": _C.RATE_LIMITED,
    "LimitExceeded.DailyLimit": _C.RATE_LIMITED,
    "LimitExceeded.AppCountryOrRegionDailyLimit": _C.RATE_LIMITED,
    "LimitExceeded.AppGlobalDailyLimit": _C.RATE_LIMITED,
    "LimitExceeded.AppMainlandChinaDailyLimit": _C.RATE_LIMITED,
    "LimitExceeded.GlobalSmsSendingRateLimit": _C.RATE_LIMITED,
    "LimitExceeded.PhoneNumberCountLimit": _C.INVALID_REQUEST,
    "LimitExceeded.AppCountryOrRegionInBlacklist": _C.INVALID_PHONE,
    # SMS: the number
    "InvalidParameterValue.IncorrectPhoneNumber": _C.INVALID_PHONE,
    "FailedOperation.PhoneNumberInBlacklist": _C.INVALID_PHONE,
    "FailedOperation.PhoneNumberParseFail": _C.INVALID_PHONE,
    "MissingParameter.EmptyPhoneNumberSet": _C.INVALID_REQUEST,
    "UnsupportedOperation.ContainDomesticAndInternationalPhoneNumber": _C.INVALID_REQUEST,
    "UnsupportedOperation.ContainDomesticPhoneNumber": _C.INVALID_REQUEST,
    "InvalidParameterValue.InvalidInternational": _C.INVALID_PHONE,
    # SMS: template and signature
    "FailedOperation.SignatureIncorrectOrUnapproved": _C.TEMPLATE_REJECTED,
    "FailedOperation.MissingSignature": _C.TEMPLATE_REJECTED,
    "FailedOperation.TemplateIncorrectOrUnapproved": _C.TEMPLATE_REJECTED,
    "FailedOperation.TemplateUnapprovedOrNotExist": _C.TEMPLATE_REJECTED,
    "FailedOperation.TemplateIdNotExist": _C.TEMPLATE_REJECTED,
    "FailedOperation.TemplateParamSetNotMatchApprovedTemplate": _C.TEMPLATE_REJECTED,
    "InvalidParameterValue.TemplateParameterFormatError": _C.TEMPLATE_REJECTED,
    "InvalidParameterValue.TemplateParameterLengthLimit": _C.TEMPLATE_REJECTED,
    "UnsupportedOperation.ChineseMainlandTemplateToGlobalPhone": _C.TEMPLATE_REJECTED,
    "UnsupportedOperation.GlobalTemplateToChineseMainlandPhone": _C.TEMPLATE_REJECTED,
    "UnauthorizedOperation.IndividualUserMarketingSmsPermissionDeny": _C.TEMPLATE_REJECTED,
    # SMS: content
    "FailedOperation.ContainSensitiveWord": _C.CONTENT_REJECTED,
    "InvalidParameterValue.ProhibitedUseUrlInTemplateParameter": _C.CONTENT_REJECTED,
    "InvalidParameter.DirtyWordFound": _C.CONTENT_REJECTED,
    "InvalidParameterValue.ContentLengthLimit": _C.CONTENT_REJECTED,
    "FailedOperation.MarketingSendTimeConstraint": _C.DECLINED,
    # SMS: account, application, keys
    "FailedOperation.InsufficientBalanceInSmsPackage": _C.INSUFFICIENT_BALANCE,
    "UnauthorizedOperation.ServiceSuspendDueToArrears": _C.INSUFFICIENT_BALANCE,
    "UnauthorizedOperation.SmsSdkAppIdVerifyFail": _C.AUTH_FAILED,
    "UnauthorizedOperation.RequestIpNotInWhitelist": _C.AUTH_FAILED,
    "UnauthorizedOperation.RequestPermissionDeny": _C.AUTH_FAILED,
    "UnauthorizedOperation.SdkAppIdIsDisabled": _C.AUTH_FAILED,
    "InvalidParameterValue.SdkAppIdNotExist": _C.AUTH_FAILED,
    "FailedOperation.ProhibitSubAccountUse": _C.AUTH_FAILED,
    "UnsupportedOperation.UnsupportedRegion": _C.INVALID_REQUEST,
    # InternalError.* that are about our request, not about an unknown outcome
    "InternalError.SigVerificationFail": _C.AUTH_FAILED,
    "InternalError.SigFieldMissing": _C.AUTH_FAILED,
    "InternalError.RestApiInterfaceNotExist": _C.INVALID_REQUEST,
    "InternalError.JsonParseFail": _C.INVALID_REQUEST,
    "FailedOperation.JsonParseFail": _C.INVALID_REQUEST,
    "FailedOperation.FailResolvePacket": _C.INVALID_REQUEST,
}

#: FaceID (faceid 2018-03-01, SDK ``errorcodes.py``). Outcomes of a check are verdicts, not codes: only refusals
#: of the call itself are here. ``BizTokenExpired`` is a verdict (EXPIRED) where the provider reads a session.
FACEID_CODES: Mapping[str, StandardCode] = {
    **COMMON_CODES,
    "InvalidParameterValue": _C.INVALID_REQUEST,
    "InvalidParameterValue.BizTokenIllegal": _C.NOT_FOUND,
    "InvalidParameterValue.BizTokenExpired": _C.NOT_FOUND,
    "FailedOperation.InvalidTokenParameter": _C.NOT_FOUND,
    "InvalidParameterValue.RuleIdNotExist": _C.AUTH_FAILED,
    "InvalidParameterValue.RuleIdDisabled": _C.AUTH_FAILED,
    "InvalidParameter.UnsupportEncryptField": _C.INVALID_REQUEST,
    "FailedOperation.IdFormatError": _C.INVALID_REQUEST,
    "FailedOperation.NameFormatError": _C.INVALID_REQUEST,
    "FailedOperation.ImageDecodeFailed": _C.INVALID_REQUEST,
    "FailedOperation.ImageSizeTooLarge": _C.INVALID_REQUEST,
    "FailedOperation.EmptyImageError": _C.INVALID_REQUEST,
    "FailedOperation.DecryptSystemError": _C.INVALID_REQUEST,
    "FailedOperation.RequestLimitExceeded": _C.RATE_LIMITED,
    "FailedOperation.IdentityAuthLimitExceeded": _C.RATE_LIMITED,
    "UnauthorizedOperation.Arrears": _C.INSUFFICIENT_BALANCE,
    "UnauthorizedOperation.ChargeStatusException": _C.INSUFFICIENT_BALANCE,
    "UnauthorizedOperation": _C.AUTH_FAILED,
    "UnauthorizedOperation.Nonactivated": _C.AUTH_FAILED,
    "UnauthorizedOperation.Activating": _C.AUTH_FAILED,
    "UnauthorizedOperation.ActivateError": _C.AUTH_FAILED,
    "UnauthorizedOperation.NonAuthorize": _C.AUTH_FAILED,
    "FailedOperation.StsUnAuthErrError": _C.AUTH_FAILED,
    "UnsupportedOperation": _C.INVALID_REQUEST,
}

_PREFIXES: tuple[tuple[str, StandardCode], ...] = (
    ("AuthFailure.", _C.AUTH_FAILED), ("LimitExceeded.", _C.RATE_LIMITED),
    ("MissingParameter", _C.INVALID_REQUEST), ("InvalidParameter", _C.INVALID_REQUEST),
    ("UnknownParameter", _C.INVALID_REQUEST), ("InvalidAction", _C.INVALID_REQUEST),
)
_FACEID_PREFIXES = (*_PREFIXES, ("UnauthorizedOperation", _C.AUTH_FAILED))


@dataclass(frozen=True, slots=True)
class ErrorMapper:
    """The code table; pass your own to :class:`~minigate.providers.tencentcloud.sms.TencentSmsProvider` or
    :class:`~minigate.providers.tencentcloud.faceid.TencentFaceIdProvider`."""

    codes: Mapping[str, StandardCode] = field(default_factory=lambda: dict(SMS_CODES))
    #: codes (and ``<code>.*``) after which the message may or may not have gone out
    unknown_outcome: tuple[str, ...] = ("InternalError",)
    #: (prefix, code) rules for codes not in ``codes``, first match wins
    prefixes: tuple[tuple[str, StandardCode], ...] = _PREFIXES
    #: the provider named in ProviderUnavailable
    provider: str = PROVIDER

    def is_unknown_outcome(self, code: str) -> bool:
        if code in self.codes:
            return False
        return any(code == c or code.startswith(c + ".") for c in self.unknown_outcome)

    def classify(self, code: str) -> StandardCode:
        mapped = self.codes.get(code)
        if mapped is not None:
            return mapped
        for prefix, standard in self.prefixes:
            if code.startswith(prefix):
                return standard
        return StandardCode.DECLINED

    def decline(self, code: str, message: str | None, *, op: str, request_id: str | None) -> ProviderResult[Any]:
        """A decline value for ``code``, or ProviderUnavailable when the outcome is unknown."""
        if self.is_unknown_outcome(code):
            raise ProviderUnavailable(f"{self.provider}: {op}: {code}: outcome unknown", provider=self.provider,
                                      provider_code=code, request_id=request_id)
        return ProviderResult.decline(self.classify(code), provider_code=code, message=message,
                                      request_id=request_id)


DEFAULT_ERROR_MAPPER = ErrorMapper()
#: FaceID: engine and database failures may or may not have been billed / run -> outcome unknown
FACEID_ERROR_MAPPER = ErrorMapper(
    codes=dict(FACEID_CODES), prefixes=_FACEID_PREFIXES, provider="tencent-faceid",
    unknown_outcome=("InternalError", "FailedOperation.UnKnown", "FailedOperation.DbError",
                     "FailedOperation.CompareSystemError", "FailedOperation.LivessSystemError",
                     "FailedOperation.DetectEngineSystemError", "FailedOperation.IdPhotoSystemNoanswer",
                     "FailedOperation.CompareLibServiceUnavailable", "FailedOperation.EncryptSystemError"))

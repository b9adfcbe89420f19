"""Umeng+ OpenAPI refusals -> :class:`StandardCode` declines, or "outcome unknown".

Two layers answer errors (service-protocols.md §3.1 and §8 item 7: the exact bodies are not confirmed):

- **The gateway** (the Alibaba open-platform "Ocean" gateway that Umeng's OpenAPI runs on) refuses before the API
  runs: HTTP 4xx with ``{"error_code": "gw.<Name>", "error_message": "...", "exception": "..."}``. The official
  SDK reads ``error_code``/``error_message`` from any 4xx/5xx answer. The ``gw.*`` names below are the ones the
  same gateway answers on the 1688 platform; that Umeng answers the same names is likely, not confirmed.
- **The API** answers HTTP 200 with ``{"success": bool, "code": <int>, "msg": "...", "data": ...}``. Which
  ``code`` values a refusal carries is not confirmed: the table below is a default, and ``UmengConfig.error_codes``
  lays the account's observed codes over it.

Every mapping is data: a meaning is a :class:`StandardCode` value or ``"unknown_outcome"`` (raise
``ProviderUnavailable``: retry later).
"""

from __future__ import annotations

from collections.abc import Mapping

from minigate.domain.results import StandardCode

__all__ = ["BUSINESS_CODES", "GATEWAY_CODES", "MEANINGS", "PROVIDER", "UNKNOWN_OUTCOME", "classify"]

PROVIDER = "umeng"
UNKNOWN_OUTCOME = "unknown_outcome"
#: every meaning a configured code may have
MEANINGS = frozenset({*(code.value for code in StandardCode if code is not StandardCode.OK), UNKNOWN_OUTCOME})

#: gateway refusals (``error_code``) -> meaning
GATEWAY_CODES: Mapping[str, str] = {
    "gw.AppKeyNotFound": StandardCode.AUTH_FAILED,       # the apiKey in the path is unknown
    "gw.AppKeyMissing": StandardCode.AUTH_FAILED,
    "gw.SignatureMissing": StandardCode.AUTH_FAILED,
    "gw.SignatureInvalid": StandardCode.AUTH_FAILED,     # wrong apiSecurity (or a signing bug)
    "gw.TimestampInvalid": StandardCode.AUTH_FAILED,     # _aop_timestamp outside the window [U: name]
    "gw.APIACLDecline": StandardCode.AUTH_FAILED,        # the key may not call this API
    "gw.QosAppFrequencyLimit": StandardCode.RATE_LIMITED,
    "gw.NoUsageLeftError": StandardCode.RATE_LIMITED,    # the package's call quota is used up
    "gw.APIUnsupported": StandardCode.INVALID_REQUEST,   # no such namespace/API
}

#: API refusals (``success: false`` with ``code``) -> meaning [U: the codes are not published]
BUSINESS_CODES: Mapping[str, str] = {
    "400": StandardCode.INVALID_REQUEST,                 # a parameter is missing or malformed (dates, timeUnit)
    "403": StandardCode.AUTH_FAILED,                     # the dataSourceId is not this account's
    "429": StandardCode.RATE_LIMITED,
    "500": UNKNOWN_OUTCOME,
}


def classify(code: str, overrides: Mapping[str, str] | None = None) -> str:
    """The meaning of a gateway ``error_code`` or an API ``code`` (as text); ``declined`` when unknown."""
    if overrides and code in overrides:
        return overrides[code]
    meaning = GATEWAY_CODES.get(code) or BUSINESS_CODES.get(code)
    return str(meaning) if meaning is not None else StandardCode.DECLINED.value

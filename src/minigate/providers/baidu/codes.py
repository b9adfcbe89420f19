"""Baidu AI ``error_code`` values -> what minigate makes of them (service-protocols.md §2.2).

Every non-zero ``error_code`` falls in exactly one of four classes:

- **token**: ``110`` (token invalid) and ``111`` (token expired). The provider fetches a new access token once
  and retries the call once; if the retry is refused again, the code is declined as ``AUTH_FAILED``.
- **verdict**: the call worked and the answer is about the person or the photo (no face, poor image, name/ID
  mismatch, no record, ...). It becomes a ``Verdict`` with ``Outcome.FAILED`` and the reason below.
- **unknown outcome**: ``1`` (unknown error) and ``2`` (service temporarily unavailable) raise
  :class:`~minigate.errors.ProviderUnavailable`.
- **decline**: a refusal of the call itself (quota, permission, parameters) -> ``ProviderResult`` decline with
  the StandardCode below; codes not in any table decline as ``DECLINED``.

Confirmed by the reference: 4, 6, 14, 17, 18, 19, 100, 110, 111 and the 2223xx/2231xx codes it lists (whose
meanings are themselves not confirmed). Not confirmed, from Baidu's public error table as commonly quoted: 1, 2,
3, 13, 15, 222001, 222013, 222015, 222019, 222020, 222200, 222204, 222208, 222209, 222350, 222352, 222353,
222361, 223115, 223116, 223120. The tables are data: a configuration's ``error_codes`` lays ``{code: meaning}``
over them (:meth:`ErrorMapper.merged`), or pass your own :class:`ErrorMapper` to the provider.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from minigate.domain.results import StandardCode

__all__ = ["DECLINE_CODES", "DEFAULT_ERROR_MAPPER", "MEANINGS", "PROVIDER", "TOKEN_CODES", "UNKNOWN_OUTCOME",
           "UNKNOWN_OUTCOME_CODES", "VERDICT_CODES", "VERDICT_REASONS", "ErrorMapper"]

PROVIDER = "baidu"

#: the access token is invalid (110) or expired (111): refresh once, retry once
TOKEN_CODES: frozenset[int] = frozenset({110, 111})

#: the provider may have failed half-way: outcome unknown
UNKNOWN_OUTCOME_CODES: frozenset[int] = frozenset({1, 2})

_C = StandardCode
DECLINE_CODES: Mapping[int, StandardCode] = {
    3: _C.INVALID_REQUEST,          # unsupported openapi method
    4: _C.RATE_LIMITED,             # open api request limit reached (cluster quota)
    6: _C.AUTH_FAILED,              # no permission to access data (API not granted to this application)
    13: _C.AUTH_FAILED,             # get service token failed
    14: _C.AUTH_FAILED,             # IAM certification failed
    15: _C.AUTH_FAILED,             # app not exists or create failed
    17: _C.RATE_LIMITED,            # daily request limit reached
    18: _C.RATE_LIMITED,            # QPS limit reached
    19: _C.RATE_LIMITED,            # total request limit reached
    100: _C.INVALID_REQUEST,        # invalid parameter (a missing or malformed access_token parameter)
    110: _C.AUTH_FAILED,            # access token invalid -- still refused after a fresh token
    111: _C.AUTH_FAILED,            # access token expired -- still refused after a fresh token
    222001: _C.INVALID_REQUEST,     # param[] is null
    222013: _C.INVALID_REQUEST,     # param[image] format error
    222015: _C.INVALID_REQUEST,     # param[image_type] format error
    222019: _C.INVALID_REQUEST,     # param[quality_control] format error
    222020: _C.INVALID_REQUEST,     # param[liveness_control] format error
    222200: _C.INVALID_REQUEST,     # request body should be json format
    222204: _C.INVALID_REQUEST,     # image_url_download_fail
    222208: _C.INVALID_REQUEST,     # the number of image is incorrect
    222209: _C.INVALID_REQUEST,     # face token not exist
}

#: the reasons a verdict code may carry (the identity vocabulary)
VERDICT_REASONS = frozenset({"mismatch", "invalid_id", "invalid_name", "no_record", "liveness_failed",
                             "low_similarity", "no_face", "poor_image", "authority_unavailable"})
#: the meaning that makes a code an unknown outcome
UNKNOWN_OUTCOME = "unknown_outcome"
#: what a configuration's ``error_codes`` may map a code to
MEANINGS = frozenset(VERDICT_REASONS | {c.value for c in StandardCode if c is not StandardCode.OK}
                     | {UNKNOWN_OUTCOME})

#: error codes that are a verdict about the person or the photo -> the Verdict reason
VERDICT_CODES: Mapping[int, str] = {
    222202: "no_face",              # pic not has face
    222203: "poor_image",           # image check fail
    223113: "poor_image",           # face is covered
    223114: "poor_image",           # face is fuzzy
    223115: "poor_image",           # face light is not good
    223116: "poor_image",           # incomplete face
    222356: "poor_image",           # person picture is low quality
    222351: "mismatch",             # id number and name not match, or id number not exist
    222354: "no_record",            # id number not exist
    222355: "no_record",            # police picture not exist (the authority has no photo to compare)
    222350: "no_record",            # police picture is none or low quality
    222360: "invalid_id",           # name or id number illegal (Baidu does not say which)
    222352: "invalid_name",         # name format error
    222353: "invalid_id",           # id number format error
    223120: "liveness_failed",      # liveness check fail
    222361: "authority_unavailable",  # the authority's service could not be reached
}


@dataclass(frozen=True, slots=True)
class ErrorMapper:
    """The code tables; pass your own to :class:`~minigate.providers.baidu.provider.BaiduFaceProvider`."""

    declines: Mapping[int, StandardCode] = field(default_factory=lambda: dict(DECLINE_CODES))
    verdicts: Mapping[int, str] = field(default_factory=lambda: dict(VERDICT_CODES))
    token_codes: frozenset[int] = TOKEN_CODES
    unknown_outcome: frozenset[int] = UNKNOWN_OUTCOME_CODES

    def is_token_error(self, code: int) -> bool:
        return code in self.token_codes

    def is_unknown_outcome(self, code: int) -> bool:
        return code in self.unknown_outcome

    def verdict_reason(self, code: int) -> str | None:
        """The Verdict reason when ``code`` is about the person or the photo, else None."""
        return self.verdicts.get(code)

    def classify(self, code: int) -> StandardCode:
        """The StandardCode of a refusal (anything that is not a verdict)."""
        return self.declines.get(code, StandardCode.DECLINED)

    def merged(self, overrides: Mapping[int, str]) -> ErrorMapper:
        """This table with ``{code: meaning}`` laid over it; a meaning is a verdict reason, a StandardCode value
        or ``unknown_outcome`` (see :data:`MEANINGS`). The token codes 110/111 keep their refresh."""
        declines, verdicts = dict(self.declines), dict(self.verdicts)
        unknown = set(self.unknown_outcome)
        for code, meaning in overrides.items():
            if meaning not in MEANINGS:
                raise ValueError(f"unknown meaning {meaning!r} for error_code {code}")
            declines.pop(code, None)
            verdicts.pop(code, None)
            unknown.discard(code)
            if meaning in VERDICT_REASONS:
                verdicts[code] = meaning
            elif meaning == UNKNOWN_OUTCOME:
                unknown.add(code)
            else:
                declines[code] = StandardCode(meaning)
        return ErrorMapper(declines, verdicts, self.token_codes, frozenset(unknown))


DEFAULT_ERROR_MAPPER = ErrorMapper()

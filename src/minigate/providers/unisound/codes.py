"""Unisound voiceprint result codes -> what minigate does with them (service-protocols.md §2.3, §8 item 6).

**Not confirmed.** The envelope is ``{"code": 0, "msg": "...", "sid": "...", "data": {...}}`` with ``code`` 0
for success, but Unisound's non-zero codes are not published in any source read for this project. The numbers in
:data:`DEFAULT_CODES` are the ones minigate's sandbox answers; they are a placeholder for the real table, which
replaces them without code changes:

- per application: ``error_codes`` in :class:`~minigate.providers.unisound.config.UnisoundConfig`
  (``{"<code>": "<meaning>"}``, merged over the defaults);
- in code: pass a :class:`CodeTable` to :class:`~minigate.providers.unisound.provider.UnisoundVoiceprintProvider`.

Every code has a :class:`Meaning`; the provider decides by meaning, never by number:

=================== ==================================================== ===============================
meaning             examples                                             result
=================== ==================================================== ===============================
auth                unknown appkey, bad sign, expired timestamp, nonce   decline AUTH_FAILED
permission          voiceprint not enabled for the appkey                decline AUTH_FAILED
invalid             missing or malformed parameter                       decline INVALID_REQUEST
audio_invalid       undecodable audio, unsupported format/rate, too big  decline INVALID_REQUEST
rate_limited        QPS limit                                            decline RATE_LIMITED
quota               call quota used up                                   decline RATE_LIMITED
arrears             account in arrears                                   decline INSUFFICIENT_BALANCE
group_exists        createGroup for an existing group                    tolerated (enrolment goes on)
group_not_found     the group does not exist                             createGroup, or not_enrolled
feature_exists      createFeature for an existing featureId              updateFeatureById instead
feature_not_found   no such featureId                                    verdict FAILED not_enrolled
no_speech           no usable speech in the sample                       verdict FAILED (see provider)
server_error        the service failed                                   raise ProviderUnavailable
declined            anything else known                                  decline DECLINED
=================== ==================================================== ===============================

A code missing from the table is a DECLINED decline, except that its ``msg`` is read for the two facts minigate
cannot do without (when ``match_messages`` is on): "already exists" (``已存在`` / ``already exist``) on
createGroup / createFeature, and "does not exist" (``不存在`` / ``not exist`` / ``not found``) on
confirmFeature / updateFeatureById.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from minigate.domain.results import ProviderResult, StandardCode
from minigate.errors import ProviderUnavailable

__all__ = ["DEFAULT_CODES", "DEFAULT_CODE_TABLE", "OK", "PROVIDER", "STANDARD", "CodeTable", "Meaning"]

PROVIDER = "unisound"
OK = 0


class Meaning(enum.StrEnum):
    AUTH = "auth"
    PERMISSION = "permission"
    INVALID = "invalid"
    AUDIO_INVALID = "audio_invalid"
    RATE_LIMITED = "rate_limited"
    QUOTA = "quota"
    ARREARS = "arrears"
    GROUP_EXISTS = "group_exists"
    GROUP_NOT_FOUND = "group_not_found"
    FEATURE_EXISTS = "feature_exists"
    FEATURE_NOT_FOUND = "feature_not_found"
    NO_SPEECH = "no_speech"
    SERVER_ERROR = "server_error"
    DECLINED = "declined"


_M = Meaning
#: the sandbox's numbering (not Unisound's confirmed one: see the module docstring)
DEFAULT_CODES: Mapping[int, Meaning] = {
    10001: _M.AUTH,              # appkey missing or unknown
    10002: _M.AUTH,              # sign does not verify
    10003: _M.AUTH,              # timestamp outside the allowed window
    10004: _M.AUTH,              # nonce already used
    10005: _M.INVALID,           # parameter missing or malformed
    10006: _M.PERMISSION,        # voiceprint service not enabled for this appkey
    10007: _M.RATE_LIMITED,      # too many requests per second
    10008: _M.QUOTA,             # call quota used up
    10009: _M.ARREARS,           # account in arrears
    20001: _M.GROUP_EXISTS,
    20002: _M.GROUP_NOT_FOUND,
    20003: _M.FEATURE_EXISTS,
    20004: _M.FEATURE_NOT_FOUND,
    20005: _M.AUDIO_INVALID,     # audio not decodable / unsupported format or sample rate
    20006: _M.AUDIO_INVALID,     # audio larger than 4 MB (Base64)
    20007: _M.NO_SPEECH,         # no speech detected in the audio
    50001: _M.SERVER_ERROR,
}

#: declines by meaning (the meanings the provider handles itself are absent)
STANDARD: Mapping[Meaning, StandardCode] = {
    _M.AUTH: StandardCode.AUTH_FAILED,
    _M.PERMISSION: StandardCode.AUTH_FAILED,
    _M.INVALID: StandardCode.INVALID_REQUEST,
    _M.AUDIO_INVALID: StandardCode.INVALID_REQUEST,
    _M.RATE_LIMITED: StandardCode.RATE_LIMITED,
    _M.QUOTA: StandardCode.RATE_LIMITED,
    _M.ARREARS: StandardCode.INSUFFICIENT_BALANCE,
    _M.GROUP_EXISTS: StandardCode.DECLINED,
    _M.GROUP_NOT_FOUND: StandardCode.DECLINED,
    _M.FEATURE_EXISTS: StandardCode.DECLINED,
    _M.FEATURE_NOT_FOUND: StandardCode.DECLINED,
    _M.NO_SPEECH: StandardCode.INVALID_REQUEST,
    _M.DECLINED: StandardCode.DECLINED,
}

_EXISTS = re.compile(r"已存在|already\s+exist", re.I)
_MISSING = re.compile(r"不存在|not\s+exist|not\s+found|does\s+not\s+exist", re.I)
_EXISTS_OPS = {"createGroup": _M.GROUP_EXISTS, "createFeature": _M.FEATURE_EXISTS}
_MISSING_OPS = {"confirmFeature": _M.FEATURE_NOT_FOUND, "updateFeatureById": _M.FEATURE_NOT_FOUND}


@dataclass(frozen=True, slots=True)
class CodeTable:
    """Code -> :class:`Meaning`, and the decline each meaning becomes."""

    codes: Mapping[int, Meaning] = field(default_factory=lambda: dict(DEFAULT_CODES))
    #: read ``msg`` for "already exists" / "does not exist" when the code is not in the table
    match_messages: bool = True

    def with_overrides(self, overrides: Mapping[int, Meaning], *, match_messages: bool | None = None) -> CodeTable:
        return replace(self, codes={**self.codes, **overrides},
                       match_messages=self.match_messages if match_messages is None else match_messages)

    def meaning(self, code: int, msg: str | None, *, op: str) -> Meaning:
        known = self.codes.get(code)
        if known is not None:
            return known
        if self.match_messages and msg:
            if op in _EXISTS_OPS and _EXISTS.search(msg):
                return _EXISTS_OPS[op]
            if op in _MISSING_OPS and _MISSING.search(msg):
                return _MISSING_OPS[op]
        return Meaning.DECLINED

    def decline(self, meaning: Meaning, code: int, msg: str | None, *, op: str,
                request_id: str | None) -> ProviderResult[Any]:
        """The decline for ``meaning``; raises ProviderUnavailable for ``server_error`` (outcome unknown)."""
        if meaning is Meaning.SERVER_ERROR:
            raise ProviderUnavailable(f"{PROVIDER}: {op}: service error {code}", provider=PROVIDER,
                                      provider_code=str(code), request_id=request_id)
        return ProviderResult.decline(STANDARD.get(meaning, StandardCode.DECLINED), provider_code=str(code),
                                      message=msg or None, request_id=request_id)


DEFAULT_CODE_TABLE = CodeTable()

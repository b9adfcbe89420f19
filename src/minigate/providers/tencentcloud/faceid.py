"""Tencent Cloud FaceID (慧眼, faceid.tencentcloudapi.com, API 2018-03-01), service-protocols.md §2.1.

Same account (SecretId/SecretKey) and the same TC3 client core as SMS (:mod:`.api`); service ``faceid``, no
region. Kinds ``id_card`` and ``face``; faces run as a *session* the mini-program drives with Tencent's own SDK.

- ``check_id``: ``IdCardVerification`` (name + ID number against the authority). ``Result`` is a verdict:
  ``"0"`` match, ``"-1"`` mismatch, ``"-2"`` invalid_id, ``"-3"`` invalid_name, ``"-5"`` no_record,
  ``"-4"``/``"-6"`` authority_unavailable; ``"-7"`` (daily limit, not billed) is a RATE_LIMITED decline.
- ``start_face``: ``DetectAuth`` (``RuleId``, ``IdCard`` with an upper-case ``X``, ``Name``, ``Extra`` = minigate's
  reference, ``RedirectUrl`` for H5 only) -> ``BizToken``; the mini-program calls
  ``wx.startVerify({data: {token: BizToken}})``. The token is valid for 7200 s.
- ``face_result``: ``GetDetectInfoEnhanced`` with ``InfoType "1"`` -- the text result only; images and video are
  never requested. ``Text.ErrCode`` 0 is a pass (``Sim`` is the score, at least ``sim_threshold``); other codes go
  through ``err_code_reasons`` (Tencent's published return codes), then ``LiveStatus``/``Comparestatus``/``Sim``.
  ``InvalidParameterValue.BizTokenExpired`` is the verdict EXPIRED.

Not confirmed, and so configurable: how an unfinished session answers (``Text.ErrCode`` null, or code 17
"本次流程未完成" -- both are read as PENDING), the ``ErrCode`` enumeration (``err_code_reasons``), whether Tencent
ever answers ``ErrCode 0`` with ``Sim`` under 70 (``sim_threshold`` is checked anyway).

Nothing here logs, and no exception message carries, a name, an ID number, a token or a secret.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import httpx
from pydantic import BaseModel, ConfigDict, Field, SecretStr

from minigate.domain.results import ProviderResult, StandardCode
from minigate.errors import ProviderUnavailable
from minigate.providers.bases.identity import FaceSession, IdentityProvider, Outcome, PersonId, Verdict
from minigate.providers.tencentcloud.api import TcAnswer, TencentCloudApi
from minigate.providers.tencentcloud.codes import FACEID_ERROR_MAPPER, ErrorMapper

if TYPE_CHECKING:
    from minigate.providers.registry import SandboxContext

__all__ = ["BIZ_TOKEN_EXPIRED", "DEFAULT_ERR_CODE_REASONS", "ID_RESULTS", "INFO_TYPE_TEXT", "LIVE_BASE_URL",
           "PROVIDER", "SERVICE", "VERSION", "TencentFaceIdConfig", "TencentFaceIdProvider", "sandbox_config"]

PROVIDER = "tencent-faceid"
LIVE_BASE_URL = "https://faceid.tencentcloudapi.com"
SERVICE = "faceid"
VERSION = "2018-03-01"
#: GetDetectInfoEnhanced InfoType: "1" = text only (0 all, 2 ID images, 3 best frame, 4 video -- never asked for)
INFO_TYPE_TEXT = "1"
BIZ_TOKEN_EXPIRED = "InvalidParameterValue.BizTokenExpired"

Reason = Literal["match", "mismatch", "invalid_id", "invalid_name", "no_record", "liveness_failed",
                 "low_similarity", "no_face", "poor_image", "pending", "expired", "authority_unavailable"]

#: IdCardVerification ``Result`` -> (outcome, reason) [C]; "-7" (daily limit) is a decline, not a verdict
ID_RESULTS: Mapping[str, tuple[Outcome, str]] = {
    "0": (Outcome.PASSED, "match"),
    "-1": (Outcome.FAILED, "mismatch"),
    "-2": (Outcome.FAILED, "invalid_id"),
    "-3": (Outcome.FAILED, "invalid_name"),
    "-4": (Outcome.FAILED, "authority_unavailable"),
    "-5": (Outcome.FAILED, "no_record"),
    "-6": (Outcome.FAILED, "authority_unavailable"),
}
ID_RATE_LIMITED = "-7"

#: ``Text.ErrCode`` -> reason, from Tencent's return-code list for mini-program / H5 face sessions (product doc
#: 1007/31082). Not confirmed as the exact values ``GetDetectInfoEnhanced`` carries: override per code in the config.
DEFAULT_ERR_CODE_REASONS: Mapping[int, Reason] = {
    4: "authority_unavailable", 8: "authority_unavailable", 10: "authority_unavailable",
    12: "authority_unavailable", 13: "authority_unavailable",
    15: "expired",                       # Token 过期
    17: "pending",                       # 本次流程未完成
    301: "mismatch",                     # the ID read from the card differs from the one given
    302: "invalid_id",                   # the ID card has expired
    303: "poor_image",
    1001: "authority_unavailable",       # engine timeout
    1002: "liveness_failed", 1003: "liveness_failed", 1004: "liveness_failed", 1005: "liveness_failed",
    1006: "authority_unavailable", 1007: "liveness_failed", 1008: "liveness_failed",
    2001: "authority_unavailable", 2002: "invalid_name", 2003: "invalid_id", 2004: "poor_image",
    2005: "no_record", 2006: "mismatch", 2007: "no_record", 2008: "no_record", 2009: "poor_image",
    2010: "no_face", 2011: "liveness_failed", 2012: "poor_image", 2013: "no_face", 2014: "poor_image",
    2015: "mismatch", 2016: "low_similarity", 2017: "authority_unavailable",
}

_OUTCOME_OF_REASON = {"match": Outcome.PASSED, "pending": Outcome.PENDING, "expired": Outcome.EXPIRED}


class TencentFaceIdConfig(BaseModel):
    """Field names match ``minigate sandbox credentials tencentcloud`` where they overlap (``secret_id``,
    ``secret_key``; ``rule_id`` is the credentials' ``faceid_rule_id``)."""

    model_config = ConfigDict(extra="forbid")

    secret_id: str = Field(min_length=1, max_length=128)
    secret_key: SecretStr
    #: the face-session rule (RuleId) created in the FaceID console
    rule_id: str = Field(pattern=r"^[A-Za-z0-9]{1,32}$")
    #: temporary-credential token (X-TC-Token), only with STS keys
    token: SecretStr | None = None
    #: X-TC-Region; FaceID needs none
    region: str | None = None
    base_url: str = LIVE_BASE_URL
    request_timeout_seconds: float = Field(default=10.0, gt=0)
    #: X-TC-Language for Error.Message texts; None = Tencent's default (zh-CN)
    language: Literal["zh-CN", "en-US"] | None = None
    #: ``Sim`` at or above which the 1:1 comparison counts as the same person. Tencent fixes it at 70 (FAR 1e-4) and
    #: decides ``ErrCode`` with it; a higher value here turns passes below it into ``low_similarity``.
    sim_threshold: float = Field(default=70.0, ge=0, le=100)
    #: how long a BizToken can be used to run the flow (seconds; Tencent: 7200)
    session_ttl_seconds: int = Field(default=7200, gt=0)
    #: ``Text.ErrCode`` -> reason, merged over :data:`DEFAULT_ERR_CODE_REASONS` (not confirmed)
    err_code_reasons: dict[int, Reason] = Field(default_factory=dict)

    def problems(self) -> list[str]:
        """What would make this configuration fail in production (checked by ``apps set-credentials``)."""
        found: list[str] = []
        if not self.secret_id.startswith("AKID"):
            found.append("secret_id should be an API key id starting with AKID")
        if len(self.secret_key.get_secret_value()) != 32:
            found.append("secret_key should be the 32-character SecretKey of that key id")
        if not self.base_url.startswith("https://"):
            found.append("base_url must be https:// in live mode")
        if self.sim_threshold < 70:
            found.append("sim_threshold below 70 has no effect: Tencent fails those comparisons itself")
        return found


def sandbox_config(ctx: SandboxContext) -> dict[str, Any]:
    """The configuration that talks to the sandbox's ``tencentcloud`` simulator (the account SMS uses too)."""
    creds = ctx.credentials("tencentcloud")
    return {"secret_id": creds["secret_id"], "secret_key": creds["secret_key"],
            "rule_id": creds["faceid_rule_id"], "base_url": f"{ctx.base_url}/tencentcloud"}


class TencentFaceIdProvider(IdentityProvider):
    """Tencent Cloud FaceID over an injected :class:`httpx.AsyncClient`."""

    name: ClassVar[str] = PROVIDER
    kinds: ClassVar[frozenset[str]] = frozenset({"id_card", "face"})
    face_mode: ClassVar[str] = "session"

    def __init__(self, config: TencentFaceIdConfig, client: httpx.AsyncClient, *,
                 clock: Callable[[], float] = time.time, errors: ErrorMapper = FACEID_ERROR_MAPPER) -> None:
        super().__init__(client)
        self.config = config
        self.errors = errors
        self.err_code_reasons: dict[int, str] = {**DEFAULT_ERR_CODE_REASONS, **config.err_code_reasons}
        self.api = TencentCloudApi(
            client=client, provider=PROVIDER, service=SERVICE, version=VERSION, base_url=config.base_url,
            secret_id=config.secret_id, secret_key=config.secret_key.get_secret_value(), region=config.region,
            token=config.token.get_secret_value() if config.token else None, language=config.language,
            timeout=config.request_timeout_seconds, clock=clock)

    # ------------------------------------------------------------------ name + ID
    @staticmethod
    def id_payload(person: PersonId) -> dict[str, Any]:
        return {"IdCard": person.id_number.strip().upper(), "Name": person.name.strip()}

    async def check_id(self, person: PersonId) -> ProviderResult[Verdict]:
        op = "IdCardVerification"
        answer = await self.api.call(op, self.id_payload(person))
        if answer.error is not None:
            return self._decline(answer, op)
        result = answer.data.get("Result")
        description = answer.data.get("Description")
        message = description if isinstance(description, str) else None
        if result == ID_RATE_LIMITED:
            return ProviderResult.decline(StandardCode.RATE_LIMITED, provider_code=result, message=message,
                                          request_id=answer.request_id)
        if not isinstance(result, str) or result not in ID_RESULTS:
            raise self._unavailable(op, "Result is missing or unknown", answer)
        outcome, reason = ID_RESULTS[result]
        return ProviderResult.success(Verdict(outcome, reason, provider_ref=answer.request_id, provider_code=result),
                                      request_id=answer.request_id)

    # ------------------------------------------------------------------ face sessions
    def detect_auth_payload(self, person: PersonId, reference: str, redirect_url: str | None) -> dict[str, Any]:
        payload: dict[str, Any] = {"RuleId": self.config.rule_id, **self.id_payload(person), "Extra": reference}
        if redirect_url:
            payload["RedirectUrl"] = redirect_url
        return payload

    async def start_face(self, person: PersonId, *, reference: str,
                         redirect_url: str | None = None) -> ProviderResult[FaceSession]:
        op = "DetectAuth"
        answer = await self.api.call(op, self.detect_auth_payload(person, reference, redirect_url))
        if answer.error is not None:
            return self._decline(answer, op)
        token = answer.data.get("BizToken")
        if not isinstance(token, str) or not token:
            raise self._unavailable(op, "no BizToken in the answer", answer)
        params: dict[str, Any] = {"token": token}
        url = answer.data.get("Url")
        if redirect_url and isinstance(url, str) and url:
            params["url"] = url                   # H5: open this page; the mini-program uses the token
        return ProviderResult.success(FaceSession(provider_ref=token, client_params=params,
                                                  expires_in=self.config.session_ttl_seconds),
                                      request_id=answer.request_id)

    def result_payload(self, session: str) -> dict[str, Any]:
        return {"BizToken": session, "RuleId": self.config.rule_id, "InfoType": INFO_TYPE_TEXT}

    async def face_result(self, session: str) -> ProviderResult[Verdict]:
        op = "GetDetectInfoEnhanced"
        answer = await self.api.call(op, self.result_payload(session))
        if answer.error is not None:
            if answer.error.code == BIZ_TOKEN_EXPIRED:
                return ProviderResult.success(Verdict(Outcome.EXPIRED, "expired", provider_ref=session,
                                                      provider_code=BIZ_TOKEN_EXPIRED),
                                              request_id=answer.request_id)
            return self._decline(answer, op)
        text = answer.data.get("Text")
        if text is not None and not isinstance(text, dict):
            raise self._unavailable(op, "Text is not an object", answer)
        return ProviderResult.success(self.read_text(text or {}, session), request_id=answer.request_id)

    def read_text(self, text: Mapping[str, Any], session: str) -> Verdict:
        """The verdict in one ``Text`` object (pure)."""
        err_code = _int(text.get("ErrCode"))
        live_status = _int(text.get("LiveStatus"))
        sim = _sim(text.get("Sim"))
        threshold = self.config.sim_threshold
        details: dict[str, Any] = {"sim_threshold": threshold}
        for key, name in (("LiveStatus", "live_status"), ("Comparestatus", "compare_status"),
                          ("LivenessMode", "liveness_mode"), ("ErrMsg", "message")):
            value = text.get(key)
            if isinstance(value, int | str) and not isinstance(value, bool):
                details[name] = value
        liveness = None if live_status is None else live_status == 0

        def verdict(outcome: Outcome, reason: str, *, live: bool | None = liveness) -> Verdict:
            return Verdict(outcome, reason, provider_ref=session,
                           provider_code=None if err_code is None else str(err_code),
                           score=sim, liveness=live, details=details)

        if err_code is None:
            return verdict(Outcome.PENDING, "pending", live=None)
        if err_code == 0:
            if sim is not None and sim < threshold:
                return verdict(Outcome.FAILED, "low_similarity", live=True)
            return verdict(Outcome.PASSED, "match", live=True)
        reason = self.err_code_reasons.get(err_code)
        if reason is None:
            if live_status not in (None, 0):
                reason = "liveness_failed"
            elif sim is not None and sim < threshold:
                reason = "low_similarity"
            else:
                reason = "mismatch"
        outcome = _OUTCOME_OF_REASON.get(reason, Outcome.FAILED)
        if outcome is Outcome.PASSED:      # a table entry saying "match" for a non-zero code: not trusted
            outcome, reason = Outcome.FAILED, "mismatch"
        return verdict(outcome, reason, live=None if outcome is Outcome.PENDING else liveness)

    # ------------------------------------------------------------------ helpers
    def _decline(self, answer: TcAnswer, op: str) -> ProviderResult[Any]:
        assert answer.error is not None
        return self.errors.decline(answer.error.code, answer.error.message or None, op=op,
                                   request_id=answer.request_id)

    @staticmethod
    def _unavailable(op: str, what: str, answer: TcAnswer) -> ProviderUnavailable:
        return ProviderUnavailable(f"{PROVIDER}: {op}: {what}", provider=PROVIDER, request_id=answer.request_id)


_NUMBER = re.compile(r"^-?\d+(\.\d+)?$")


def _int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and re.fullmatch(r"-?\d+", value.strip()):
        return int(value.strip())
    return None


def _sim(value: Any) -> float | None:
    """``Sim`` is a string ("76.52") in the SDK model; a number is accepted too."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str) and _NUMBER.match(value.strip()):
        return float(value.strip())
    return None

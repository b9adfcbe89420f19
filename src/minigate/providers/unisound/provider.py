"""Unisound (云知声) voiceprint recognition (``ai-vpr.hivoice.cn``), service-protocols.md §2.3.

Every call is ``POST <base_url>/vpr/v1/<operation>`` with a JSON body that carries the signed authentication
fields of :mod:`~minigate.providers.unisound.signing` next to the operation's own. Every answer is the envelope
``{"code": 0, "msg": "...", "sid": "...", "data": ...}``; ``sid`` becomes the verdict's ``provider_ref``.

- ``enrol_voice(subject, sample)``: ``createGroup`` for the configured ``group_id`` the first time this client
  needs it ("already exists" is success), then ``createFeature`` with ``featureId = subject`` (minigate's
  pseudonym, never a name); when that feature exists, ``updateFeatureById`` replaces its audio. Verdict PASSED
  ``enrolled`` (``details["action"]`` is ``created`` or ``updated``).
- ``verify_voice(subject, sample)``: ``confirmFeature`` (1:1). ``data.score >= pass_threshold`` -> PASSED
  ``match``, else FAILED ``mismatch``; an unknown feature or group -> FAILED ``not_enrolled``.
- No speech in the sample -> FAILED :data:`NO_SPEECH_REASON`, on either operation (the voice counterpart of "no
  face in the image").

Codes go through :class:`~minigate.providers.unisound.codes.CodeTable` (not confirmed; replaceable). HTTP 429,
5xx, non-JSON answers and answers without an integer ``code`` raise
:class:`~minigate.errors.ProviderUnavailable`; transport trouble is mapped by :func:`minigate.providers._http.send`.
Nothing here logs, and no exception message carries, the subject, the audio or the secret.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import httpx

from minigate.domain.results import ProviderResult, StandardCode
from minigate.errors import ProviderUnavailable
from minigate.providers._http import send
from minigate.providers.bases.identity import IdentityProvider, Outcome, Verdict, VoiceSample
from minigate.providers.unisound import signing
from minigate.providers.unisound.codes import DEFAULT_CODE_TABLE, OK, PROVIDER, CodeTable, Meaning
from minigate.providers.unisound.config import UnisoundConfig

__all__ = ["API_PREFIX", "AUDIO_FORMATS", "MAX_AUDIO_CHARS", "NO_SPEECH_REASON", "SAMPLE_RATES", "USER_AGENT",
           "UnisoundAnswer", "UnisoundVoiceprintProvider"]

USER_AGENT = "minigate/0.1 (unisound-vpr)"
API_PREFIX = "/vpr/v1/"
#: the reason of a verdict on a sample without speech: the identity vocabulary's "no biometric in the sample"
NO_SPEECH_REASON = "no_speech"
#: audioData limit: Base64 text of at most 4 MB (§2.3)
MAX_AUDIO_CHARS = 4 * 1024 * 1024
SAMPLE_RATES = (16000, 8000)
AUDIO_FORMATS = ("pcm", "mp3", "opus", "adpcm")
#: featureId limits are not published: minigate's pseudonyms are 32 hex characters
_FEATURE_ID = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


@dataclass(frozen=True, slots=True)
class UnisoundAnswer:
    """One envelope: ``code`` 0 is success; ``data`` is whatever the operation returns."""

    op: str
    code: int
    msg: str
    sid: str | None
    data: Any


class UnisoundVoiceprintProvider(IdentityProvider):
    """Unisound voiceprint 1:1 over an injected :class:`httpx.AsyncClient`. Only voiceprints: every other identity
    operation raises :class:`~minigate.errors.OperationNotSupported` (from the base class)."""

    name: ClassVar[str] = PROVIDER
    kinds: ClassVar[frozenset[str]] = frozenset({"voiceprint"})

    def __init__(self, config: UnisoundConfig, client: httpx.AsyncClient, *, clock: Callable[[], float] = time.time,
                 codes: CodeTable = DEFAULT_CODE_TABLE, nonce: Callable[[], str] = signing.new_nonce) -> None:
        super().__init__(client)
        self.config = config
        self.codes = codes.with_overrides(config.error_codes, match_messages=config.match_messages)
        self._clock = clock
        self._nonce = nonce
        self._base = config.base_url.rstrip("/")
        #: createGroup succeeded (or the group already existed) since this client was built
        self.group_ready = False

    # ------------------------------------------------------------------ wire
    def build(self, op: str, fields: Mapping[str, Any], *, timestamp: int | None = None,
              nonce: str | None = None) -> httpx.Request:
        """The signed request for ``op`` (pure apart from the clock and the nonce source)."""
        auth = signing.auth_fields(appkey=self.config.appkey, secret=self.config.secret.get_secret_value(),
                                   timestamp=timestamp, nonce=nonce or self._nonce(), clock=self._clock)
        body = json.dumps({**auth, **fields}, ensure_ascii=False, separators=(",", ":")).encode()
        return httpx.Request("POST", f"{self._base}{API_PREFIX}{op}", content=body,
                             headers={"Content-Type": "application/json; charset=utf-8",
                                      "Accept": "application/json", "User-Agent": USER_AGENT},
                             extensions={"timeout": httpx.Timeout(self.config.request_timeout_seconds).as_dict()})

    def open(self, response: httpx.Response, op: str) -> UnisoundAnswer:
        """Read an envelope; raises ProviderUnavailable when the answer is not one (or is a 429 / 5xx)."""
        status = response.status_code
        if status == 429 or status >= 500:
            raise self._unavailable(op, f"HTTP {status}", status)
        try:
            document = json.loads(response.content)
        except (UnicodeDecodeError, ValueError) as exc:
            raise self._unavailable(op, "answer is not JSON", status) from exc
        code = document.get("code") if isinstance(document, dict) else None
        if isinstance(code, str) and re.fullmatch(r"-?\d+", code):
            code = int(code)
        if not isinstance(code, int) or isinstance(code, bool):
            raise self._unavailable(op, "answer has no integer code", status)
        if status != 200 and code == OK:
            raise self._unavailable(op, f"HTTP {status} with code 0", status)
        msg, sid = document.get("msg"), document.get("sid")
        return UnisoundAnswer(op, code, msg if isinstance(msg, str) else "",
                              sid if isinstance(sid, str) and sid else None, document.get("data"))

    async def call(self, op: str, fields: Mapping[str, Any]) -> UnisoundAnswer:
        """Build, send, open. Transport trouble raises :class:`~minigate.errors.OutcomeUnknown`."""
        response = await send(self.client, self.build(op, fields), provider=PROVIDER)
        return self.open(response, op)

    # ------------------------------------------------------------------ operations
    async def enrol_voice(self, subject: str, sample: VoiceSample) -> ProviderResult[Verdict]:
        refused = self._check(subject, sample)
        if refused is not None:
            return refused
        if not self.group_ready:
            refused = await self.ensure_group()
            if refused is not None:
                return refused
        answer = await self.call("createFeature", self._feature_fields(subject, sample, info=True))
        meaning = self._meaning(answer)
        if meaning is Meaning.GROUP_NOT_FOUND:       # the group was deleted behind this client's back
            self.group_ready = False
            refused = await self.ensure_group()
            if refused is not None:
                return refused
            answer = await self.call("createFeature", self._feature_fields(subject, sample, info=True))
            meaning = self._meaning(answer)
        action = "created"
        if meaning is Meaning.FEATURE_EXISTS:
            answer = await self.call("updateFeatureById", self._feature_fields(subject, sample, info=True))
            meaning, action = self._meaning(answer), "updated"
        if meaning is Meaning.NO_SPEECH:
            return self._verdict(answer, Outcome.FAILED, NO_SPEECH_REASON)
        if meaning is not None:
            return self.codes.decline(meaning, answer.code, answer.msg, op=answer.op, request_id=answer.sid)
        if action == "updated" and isinstance(answer.data, dict) and answer.data.get("result") is False:
            return ProviderResult.decline(StandardCode.DECLINED, provider_code=str(answer.code),
                                          message="updateFeatureById answered result=false", request_id=answer.sid)
        return self._verdict(answer, Outcome.PASSED, "enrolled", details={"action": action})

    async def verify_voice(self, subject: str, sample: VoiceSample) -> ProviderResult[Verdict]:
        refused = self._check(subject, sample)
        if refused is not None:
            return refused
        answer = await self.call("confirmFeature", self._feature_fields(subject, sample, info=False))
        meaning = self._meaning(answer)
        if meaning in (Meaning.FEATURE_NOT_FOUND, Meaning.GROUP_NOT_FOUND):
            return self._verdict(answer, Outcome.FAILED, "not_enrolled")
        if meaning is Meaning.NO_SPEECH:
            return self._verdict(answer, Outcome.FAILED, NO_SPEECH_REASON)
        if meaning is not None:
            return self.codes.decline(meaning, answer.code, answer.msg, op=answer.op, request_id=answer.sid)
        raw = answer.data.get("score") if isinstance(answer.data, dict) else None
        if isinstance(raw, str):
            try:
                raw = float(raw)
            except ValueError:
                raw = None
        if not isinstance(raw, int | float) or isinstance(raw, bool):
            raise ProviderUnavailable(f"{PROVIDER}: confirmFeature: answer has no numeric data.score",
                                      provider=PROVIDER, request_id=answer.sid)
        passed = raw >= self.config.pass_threshold
        return self._verdict(answer, Outcome.PASSED if passed else Outcome.FAILED, "match" if passed else "mismatch",
                             score=round(float(raw) * 100 / self.config.score_max, 2),
                             details={"raw_score": raw, "pass_threshold": self.config.pass_threshold})

    async def ensure_group(self) -> ProviderResult[Verdict] | None:
        """createGroup for the configured group; None once it exists (created now or before), else a decline."""
        answer = await self.call("createGroup", {"groupId": self.config.group_id,
                                                 "groupInfo": self.config.group_info})
        meaning = self._meaning(answer)
        if meaning is not None and meaning is not Meaning.GROUP_EXISTS:
            return self.codes.decline(meaning, answer.code, answer.msg, op=answer.op, request_id=answer.sid)
        self.group_ready = True
        return None

    # ------------------------------------------------------------------ helpers
    def _check(self, subject: str, sample: VoiceSample) -> ProviderResult[Verdict] | None:
        """Refuse locally what Unisound would refuse anyway (nothing is sent, nothing is billed)."""
        problem = None
        if not isinstance(subject, str) or not _FEATURE_ID.match(subject):
            problem = "subject must be 1-64 letters, digits, '_', '.' or '-'"
        elif not sample.base64:
            problem = "the voice sample is empty"
        elif len(sample.base64) > MAX_AUDIO_CHARS:
            problem = "the voice sample is larger than 4 MB (Base64)"
        elif self._rate(sample) not in SAMPLE_RATES:
            problem = "sample_rate must be 16000 or 8000"
        elif self._format(sample) not in AUDIO_FORMATS:
            problem = "audio_format must be pcm, mp3, opus or adpcm"
        if problem is None:
            return None
        return ProviderResult.decline(StandardCode.INVALID_REQUEST, provider_code=None, message=problem)

    def _rate(self, sample: VoiceSample) -> int:
        return sample.sample_rate or self.config.audio_sample_rate

    def _format(self, sample: VoiceSample) -> str:
        return (sample.audio_format or self.config.audio_format).lower()

    def _feature_fields(self, subject: str, sample: VoiceSample, *, info: bool) -> dict[str, Any]:
        fields: dict[str, Any] = {"groupId": self.config.group_id, "featureId": subject}
        if info:
            fields["featureInfo"] = "minigate"
        fields |= {"audioData": sample.base64, "audioSampleRate": self._rate(sample),
                   "audioFormat": self._format(sample)}
        return fields

    def _meaning(self, answer: UnisoundAnswer) -> Meaning | None:
        return None if answer.code == OK else self.codes.meaning(answer.code, answer.msg, op=answer.op)

    @staticmethod
    def _verdict(answer: UnisoundAnswer, outcome: Outcome, reason: str, *, score: float | None = None,
                 details: dict[str, Any] | None = None) -> ProviderResult[Verdict]:
        return ProviderResult.success(
            Verdict(outcome, reason, provider_ref=answer.sid, provider_code=str(answer.code), score=score,
                    details=details or {}),
            request_id=answer.sid)

    @staticmethod
    def _unavailable(op: str, what: str, status: int | None = None) -> ProviderUnavailable:
        return ProviderUnavailable(f"{PROVIDER}: {op}: {what}", provider=PROVIDER, http_status=status)

"""The identity capability: name + ID checks, face liveness and match, voiceprint — what every identity
provider (Tencent Cloud FaceID, Baidu AI face, Unisound voiceprint, ...) implements, as far as it can.

Same shape as payments and SMS: pure build/parse code plus one send over an injected
:class:`httpx.AsyncClient`. A verdict is a *value* (:class:`Verdict`); a business refusal of the call itself
(bad parameters, no permission, quota) is a ``ProviderResult`` decline; transport trouble raises
:class:`~minigate.errors.OutcomeUnknown`. Operations a provider does not offer raise
:class:`~minigate.errors.OperationNotSupported` (the base class does that).

Personal data (names, ID numbers, images, audio) passes through these objects and is never kept by them:
their ``repr`` shows none of it, and nothing here logs it.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any, ClassVar

import httpx

from minigate.domain.results import ProviderResult
from minigate.errors import OperationNotSupported

__all__ = ["FaceImage", "FaceSession", "IdentityProvider", "Outcome", "PersonId", "Verdict", "VoiceSample"]


class Outcome(enum.StrEnum):
    PASSED = "passed"
    FAILED = "failed"
    PENDING = "pending"        # the user has not finished the flow yet (face sessions)
    EXPIRED = "expired"        # the flow's token expired before a verdict


@dataclass(frozen=True, slots=True)
class PersonId:
    """A name and a mainland resident ID number (already checked locally: see :mod:`minigate.identity`)."""

    name: str
    id_number: str

    def __repr__(self) -> str:
        return "PersonId(***)"


@dataclass(frozen=True, slots=True)
class FaceImage:
    """One face image, Base64 without a ``data:`` prefix; used for one call and dropped."""

    base64: str
    kind: str = "LIVE"          # Baidu face_type: LIVE | IDCARD | CERT ...

    def __repr__(self) -> str:
        return f"FaceImage({self.kind}, {len(self.base64)} chars)"


@dataclass(frozen=True, slots=True)
class VoiceSample:
    base64: str
    sample_rate: int = 16000
    audio_format: str = "pcm"

    def __repr__(self) -> str:
        return f"VoiceSample({self.audio_format}/{self.sample_rate}, {len(self.base64)} chars)"


@dataclass(frozen=True, slots=True)
class FaceSession:
    """A face flow started at the provider: what the mini-program needs to run it, and the provider's token."""

    provider_ref: str                       # Tencent BizToken
    client_params: dict[str, Any]           # e.g. {"token": BizToken} for wx.startVerify
    expires_in: int                         # seconds


@dataclass(frozen=True, slots=True)
class Verdict:
    """The outcome of one check, with the evidence minigate keeps (never the image, audio or raw ID data)."""

    outcome: Outcome
    #: machine-readable: match, mismatch, invalid_id, invalid_name, no_record, liveness_failed, low_similarity,
    #: no_face, pending, expired, service_unavailable, ...
    reason: str
    provider_ref: str | None = None         # the provider's request / session id, for audits and disputes
    provider_code: str | None = None        # the provider's own result code
    score: float | None = None              # similarity / voiceprint score, 0-100
    liveness: bool | None = None            # did the liveness check pass
    details: dict[str, Any] = field(default_factory=dict)   # non-personal extras (thresholds, modes)


class IdentityProvider:
    """Base class of every identity provider client. Override what the provider offers."""

    #: registry name, e.g. ``"tencentcloud"``
    name: ClassVar[str]
    #: verification kinds it serves: ``id_card``, ``face``, ``voiceprint``
    kinds: ClassVar[frozenset[str]] = frozenset()
    #: ``session`` (the mini-program runs the provider's own flow, e.g. Tencent's face SDK) or ``upload``
    #: (the image comes through the merchant's backend, e.g. Baidu)
    face_mode: ClassVar[str] = "upload"

    def __init__(self, client: httpx.AsyncClient) -> None:
        self.client = client

    def _unsupported(self, what: str) -> OperationNotSupported:
        return OperationNotSupported(f"{self.name} does not offer {what}", provider=self.name)

    async def check_id(self, person: PersonId) -> ProviderResult[Verdict]:
        """Name + ID number against the authority's records."""
        raise self._unsupported("name and ID checks")

    async def start_face(self, person: PersonId, *, reference: str,
                         redirect_url: str | None = None) -> ProviderResult[FaceSession]:
        """Start a liveness + 1:1 flow the mini-program runs (``face_mode == "session"``)."""
        raise self._unsupported("face sessions")

    async def face_result(self, session: str) -> ProviderResult[Verdict]:
        """The verdict of a face session (PENDING while the user has not finished)."""
        raise self._unsupported("face sessions")

    async def verify_face(self, person: PersonId, image: FaceImage) -> ProviderResult[Verdict]:
        """One uploaded image against the authority's photo of ``person`` (``face_mode == "upload"``)."""
        raise self._unsupported("face verification")

    async def match_faces(self, first: FaceImage, second: FaceImage) -> ProviderResult[Verdict]:
        """Two images: the same person?"""
        raise self._unsupported("face matching")

    async def enrol_voice(self, subject: str, sample: VoiceSample) -> ProviderResult[Verdict]:
        """Register a voiceprint for ``subject`` (a pseudonymous id, never a name)."""
        raise self._unsupported("voiceprints")

    async def verify_voice(self, subject: str, sample: VoiceSample) -> ProviderResult[Verdict]:
        """1:1: is ``sample`` the voice enrolled for ``subject``?"""
        raise self._unsupported("voiceprints")

"""Configuration of one Unisound voiceprint application (appkey + secret) and the group minigate uses in it."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr

from minigate.providers.unisound.codes import Meaning

if TYPE_CHECKING:
    from minigate.providers.registry import SandboxContext

__all__ = ["LIVE_BASE_URL", "UnisoundConfig", "sandbox_config"]

LIVE_BASE_URL = "https://ai-vpr.hivoice.cn"


class UnisoundConfig(BaseModel):
    """Field names match ``minigate sandbox credentials unisound`` where they overlap (``appkey``, ``secret``).

    Not confirmed, and so configurable: the score scale and a sensible pass threshold (``score_max``,
    ``pass_threshold``), the error codes (``error_codes``), the limits on ids.
    """

    model_config = ConfigDict(extra="forbid")

    appkey: str = Field(min_length=1, max_length=128)
    secret: SecretStr
    base_url: str = LIVE_BASE_URL
    #: the voiceprint group (声纹组) minigate keeps this application's voiceprints in; created on first enrolment.
    #: Use one group per app configuration: two configurations sharing an appkey must not share a group.
    group_id: str = Field(default="minigate", pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    #: ``groupInfo`` sent with createGroup (free text; nothing personal)
    group_info: str = Field(default="minigate voiceprints", max_length=128)
    #: confirmFeature's ``data.score`` at or above which a sample passes, **on Unisound's scale** (see
    #: ``score_max``). Not confirmed: Unisound does not publish the scale or a recommended threshold.
    pass_threshold: float = Field(default=80.0, ge=0)
    #: the top of Unisound's score scale (100 when scores are 0-100, 1 when they are 0-1). Verdict scores are
    #: reported as ``score * 100 / score_max``. Not confirmed.
    score_max: float = Field(default=100.0, gt=0)
    #: defaults for samples that do not say (``audioSampleRate``, ``audioFormat``)
    audio_sample_rate: Literal[16000, 8000] = 16000
    audio_format: Literal["pcm", "mp3", "opus", "adpcm"] = "pcm"
    request_timeout_seconds: float = Field(default=10.0, gt=0)
    #: Unisound code -> meaning, merged over the built-in table (which is the sandbox's numbering). Not confirmed.
    error_codes: dict[int, Meaning] = Field(default_factory=dict)
    #: read ``msg`` for "already exists" / "does not exist" when a code is not in the table
    match_messages: bool = True

    def problems(self) -> list[str]:
        """What would make this configuration fail in production (checked by ``apps set-credentials``)."""
        found: list[str] = []
        if not self.secret.get_secret_value():
            found.append("secret is empty")
        if not self.base_url.startswith("https://"):
            found.append("base_url must be https:// in live mode")
        if self.pass_threshold > self.score_max:
            found.append("pass_threshold is above score_max: nothing could pass")
        return found


def sandbox_config(ctx: SandboxContext) -> dict[str, Any]:
    """The configuration that talks to the sandbox's ``unisound`` simulator."""
    creds = ctx.credentials("unisound")
    return {"appkey": creds["appkey"], "secret": creds["secret"], "base_url": f"{ctx.base_url}/unisound",
            "group_id": "minigate-sandbox"}

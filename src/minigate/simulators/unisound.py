"""Unisound (云知声) voiceprint WebAPI simulator (service-protocols.md §2.3).

Routes (below the ``/unisound`` prefix): ``POST /vpr/v1/createGroup``, ``/vpr/v1/createFeature``,
``/vpr/v1/updateFeatureById``, ``/vpr/v1/confirmFeature`` (1:1), ``/vpr/v1/findFeatureListByGroupId``. JSON bodies
carry ``appkey``, ``timestamp`` (ms), ``nonce`` and ``sign = UPPER(hex(SHA256(appkey+timestamp+secret+nonce)))``
next to the operation's fields. Every answer is HTTP 200 with ``{"code", "msg", "sid", "data"}``.

Checks, in this order: the body is a JSON object -> the four auth fields are present (``timestamp`` digits) ->
the appkey is known -> the timestamp is within ±5 minutes of the simulator's clock -> the nonce has not been
used in the last 15 minutes -> the signature verifies (only then is the nonce recorded) -> the next-call fault ->
the operation's parameters -> its business rules. Groups and features live in memory.

Deterministic voices: a feature remembers the SHA-256 of its decoded audio. confirmFeature with the same bytes
scores :data:`SAME_VOICE_SCORE`; other bytes score between 5 and 40 (a hash of both, so repeatable). Decoded
audio starting with ``b"SILENCE"`` is refused as "no speech" by createFeature, updateFeatureById and
confirmFeature.

Control routes: ``POST /_sandbox/next {"outcome": "pass"|"mismatch"|"liveness_failed"|"no_face"|"timeout",
"count": n?, "seconds": s?}`` overrides the next ``n`` confirmFeature verdicts (``pass`` scores 95, ``mismatch``
20; Unisound has no liveness check, so ``liveness_failed`` also scores 20; ``no_face`` answers "no speech";
``timeout`` holds the request ``seconds`` (default 0) and answers 504). ``GET`` shows and ``DELETE`` clears the
queue. ``/_sandbox/faults`` as in every simulator (``path`` matches a prefix of ``/vpr/v1/<operation>``).

Not confirmed, and so attributes to change: the error codes and messages (:data:`CODES`; the real numbering is
not published), the ±5 minute window (``tolerance_seconds``), the score scale (0-100 here), the accepted audio
formats (``audio_formats``), and the answer's HTTP status on errors (200 here).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import json
import re
import secrets
import string
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from minigate.providers.unisound import signing
from minigate.simulators._core import Clock, CredentialStore, Deliverer, Faults, fault_routes, json_response
from minigate.simulators._identity import Authority, Override

__all__ = ["CODES", "CREDENTIAL_FIELDS", "NEXT_OUTCOMES", "SAME_VOICE_SCORE", "UnisoundSimulator", "VprError",
           "create_credentials"]

CREDENTIAL_FIELDS = ("appkey", "secret")
TIMESTAMP_TOLERANCE_SECONDS = 300
NONCE_TTL_SECONDS = 900
MAX_AUDIO_CHARS = 4 * 1024 * 1024
SAME_VOICE_SCORE = 96.0
NEXT_SCORES = {"pass": 95.0, "mismatch": 20.0, "liveness_failed": 20.0}
NEXT_OUTCOMES = ("pass", "mismatch", "liveness_failed", "no_face", "timeout")
SILENCE = b"SILENCE"
_ID = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")

#: name -> (code, msg): the sandbox's numbering (Unisound's is not published; see the module docstring)
CODES: dict[str, tuple[int, str]] = {
    "appkey_unknown": (10001, "appkey不存在"),
    "sign_error": (10002, "签名校验失败"),
    "timestamp_expired": (10003, "时间戳已过期"),
    "nonce_reused": (10004, "nonce重复使用"),
    "param_error": (10005, "参数错误"),
    "group_exists": (20001, "声纹组已存在"),
    "group_not_found": (20002, "声纹组不存在"),
    "feature_exists": (20003, "声纹已存在"),
    "feature_not_found": (20004, "声纹不存在"),
    "audio_invalid": (20005, "音频解码失败"),
    "audio_too_large": (20006, "音频数据超过4M"),
    "no_speech": (20007, "未检测到有效语音"),
    "server_error": (50001, "服务内部错误"),
}


def create_credentials() -> dict[str, Any]:
    alphabet = string.ascii_lowercase + string.digits
    return {"appkey": "".join(secrets.choice(alphabet) for _ in range(40)), "secret": secrets.token_hex(16)}


class VprError(Exception):
    """A refusal, answered as ``{"code": <non-zero>, "msg": ...}``."""

    def __init__(self, name: str, detail: str | None = None) -> None:
        code, msg = CODES[name]
        super().__init__(name)
        self.name = name
        self.code = code
        self.msg = f"{msg}: {detail}" if detail else msg


@dataclass
class Feature:
    info: str
    digest: bytes


@dataclass
class Group:
    info: str
    features: dict[str, Feature] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Audio:
    digest: bytes
    silent: bool


Handler = Callable[[Mapping[str, Any]], Awaitable[Any]]


class UnisoundSimulator:
    """One simulated Unisound voiceprint account (one appkey and secret). ``app`` is the ASGI app."""

    name = "unisound"

    def __init__(self, store: CredentialStore, *, clock: Clock, faults: Faults | None = None,
                 deliverer: Deliverer | None = None) -> None:
        self.account: dict[str, Any] = store.load_or_create(self.name, create_credentials)
        self.clock = clock
        self.faults = faults or Faults()
        self.tolerance_seconds = TIMESTAMP_TOLERANCE_SECONDS
        self.audio_formats: tuple[str, ...] = ("pcm", "mp3", "opus", "adpcm")
        self.sample_rates: tuple[int, ...] = (16000, 8000)
        self.groups: dict[str, Group] = {}
        #: the override queue (``timeout`` without ``seconds`` holds 0 s); Unisound keeps no persons
        self.authority = Authority(NEXT_OUTCOMES, default_seconds=0.0)
        self._nonces: dict[str, float] = {}
        self.handlers: dict[str, Handler] = {
            "createGroup": self.create_group, "createFeature": self.create_feature,
            "updateFeatureById": self.update_feature, "confirmFeature": self.confirm_feature,
            "findFeatureListByGroupId": self.list_features,
        }
        routes = [Route(f"/vpr/v1/{op}", self._endpoint(op), methods=["POST"]) for op in self.handlers]
        self.app = Starlette(routes=[*routes, *fault_routes(self.faults), *self.authority.routes(persons=False)])

    @property
    def overrides(self) -> list[Override]:
        return self.authority.overrides

    def now(self) -> float:
        """The simulator's clock: the shared clock plus the ``clock_skew_seconds`` fault."""
        return self.clock.now() + self.faults.clock_skew_seconds

    def credentials(self) -> dict[str, Any]:
        return {k: self.account[k] for k in CREDENTIAL_FIELDS}

    # ------------------------------------------------------------------ the front door
    @staticmethod
    def answer(code: int, msg: str, data: Any = None, status: int = 200) -> Response:
        return json_response({"code": code, "msg": msg, "sid": uuid.uuid4().hex, "data": data}, status)

    def _endpoint(self, op: str) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            return await self.handle(op, request)
        return endpoint

    async def handle(self, op: str, request: Request) -> Response:
        try:
            params = self._verify(await request.body())
        except VprError as exc:
            return self.answer(exc.code, exc.msg)
        fault = self.faults.take_call(f"/vpr/v1/{op}")
        if fault is not None and fault.kind != "charged_then_timeout":
            if fault.kind == "timeout":
                await asyncio.sleep(fault.seconds)
            status = {"timeout": 504, "http_429": 429}.get(fault.kind, 500)
            return Response(b"<html><body>upstream error</body></html>", status, media_type="text/html")
        try:
            data = await self.handlers[op](params)
            response = self.answer(0, "success", data)
        except VprError as exc:
            response = self.answer(exc.code, exc.msg)
        except _Timeout as exc:
            await asyncio.sleep(exc.seconds)
            return Response(b"<html><body>Gateway Timeout</body></html>", 504, media_type="text/html")
        if fault is not None:                       # charged_then_timeout: done, but the answer is lost
            await asyncio.sleep(fault.seconds)
            return Response(b"<html><body>Gateway Timeout</body></html>", 504, media_type="text/html")
        return response

    def _verify(self, body: bytes) -> dict[str, Any]:
        try:
            params = json.loads(body)
        except (UnicodeDecodeError, ValueError):
            raise VprError("param_error", "body is not JSON") from None
        if not isinstance(params, dict):
            raise VprError("param_error", "body is not a JSON object")
        for name in signing.AUTH_FIELDS:
            value = params.get(name)
            if value is None or value == "":
                raise VprError("param_error", f"{name} is required")
        appkey, nonce, sign, raw_ts = params["appkey"], params["nonce"], params["sign"], params["timestamp"]
        if not isinstance(appkey, str) or not isinstance(nonce, str) or not isinstance(sign, str):
            raise VprError("param_error", "appkey, nonce and sign must be strings")
        if isinstance(raw_ts, bool) or not ((isinstance(raw_ts, int) and raw_ts >= 0)
                                            or (isinstance(raw_ts, str) and raw_ts.isascii() and raw_ts.isdigit())):
            raise VprError("param_error", "timestamp must be a Unix time in milliseconds")
        stamp = str(raw_ts)
        if appkey != self.account["appkey"]:
            raise VprError("appkey_unknown")
        now = self.now()
        if abs(now * 1000 - int(stamp)) > self.tolerance_seconds * 1000:
            raise VprError("timestamp_expired")
        key = f"{appkey}:{nonce}"
        seen = self._nonces.get(key)
        if seen is not None and seen > now - NONCE_TTL_SECONDS:
            raise VprError("nonce_reused")
        if not signing.verify(sign, appkey=appkey, timestamp=stamp, secret=str(self.account["secret"]), nonce=nonce):
            raise VprError("sign_error")
        if len(self._nonces) > 10_000:
            self._nonces = {k: t for k, t in self._nonces.items() if t > now - NONCE_TTL_SECONDS}
        self._nonces[key] = now
        return params

    # ------------------------------------------------------------------ parameters
    @staticmethod
    def _id(params: Mapping[str, Any], name: str) -> str:
        value = params.get(name)
        if value is None or value == "":
            raise VprError("param_error", f"{name} is required")
        if not isinstance(value, str) or not _ID.match(value):
            raise VprError("param_error", f"{name} must be 1-64 letters, digits, '_', '.' or '-'")
        return value

    @staticmethod
    def _text(params: Mapping[str, Any], name: str) -> str:
        value = params.get(name, "")
        if not isinstance(value, str) or len(value) > 256:
            raise VprError("param_error", f"{name} must be a string of at most 256 characters")
        return value

    def _audio(self, params: Mapping[str, Any]) -> Audio:
        data, rate, fmt = params.get("audioData"), params.get("audioSampleRate"), params.get("audioFormat")
        if data is None or data == "":
            raise VprError("param_error", "audioData is required")
        if not isinstance(data, str):
            raise VprError("param_error", "audioData must be a Base64 string")
        if isinstance(rate, str) and rate.isascii() and rate.isdigit():
            rate = int(rate)
        if rate is None or isinstance(rate, bool) or rate not in self.sample_rates:
            raise VprError("param_error", "audioSampleRate must be 16000 or 8000")
        if not isinstance(fmt, str) or fmt not in self.audio_formats:
            raise VprError("param_error", f"audioFormat must be one of {', '.join(self.audio_formats)}")
        if len(data) > MAX_AUDIO_CHARS:
            raise VprError("audio_too_large")
        try:
            raw = base64.b64decode(data, validate=True)
        except (binascii.Error, ValueError):
            raise VprError("audio_invalid") from None
        if not raw:
            raise VprError("audio_invalid")
        return Audio(hashlib.sha256(raw).digest(), raw.startswith(SILENCE))

    def _group(self, params: Mapping[str, Any]) -> Group:
        group = self.groups.get(self._id(params, "groupId"))
        if group is None:
            raise VprError("group_not_found")
        return group

    # ------------------------------------------------------------------ operations
    async def create_group(self, params: Mapping[str, Any]) -> dict[str, Any]:
        group_id = self._id(params, "groupId")
        info = self._text(params, "groupInfo")
        if group_id in self.groups:
            raise VprError("group_exists")
        self.groups[group_id] = Group(info)
        return {"groupId": group_id, "groupInfo": info}

    async def create_feature(self, params: Mapping[str, Any]) -> dict[str, Any]:
        feature_id = self._id(params, "featureId")
        info = self._text(params, "featureInfo")
        audio = self._audio(params)
        group = self._group(params)
        if feature_id in group.features:
            raise VprError("feature_exists")
        if audio.silent:
            raise VprError("no_speech")
        group.features[feature_id] = Feature(info, audio.digest)
        return {"featureId": feature_id, "featureInfo": info}

    async def update_feature(self, params: Mapping[str, Any]) -> dict[str, Any]:
        feature_id = self._id(params, "featureId")
        info = self._text(params, "featureInfo") if "featureInfo" in params else None
        audio = self._audio(params)
        group = self._group(params)
        feature = group.features.get(feature_id)
        if feature is None:
            raise VprError("feature_not_found")
        if audio.silent:
            raise VprError("no_speech")
        feature.digest = audio.digest
        if info is not None:
            feature.info = info
        return {"result": True}

    async def confirm_feature(self, params: Mapping[str, Any]) -> dict[str, Any]:
        feature_id = self._id(params, "featureId")
        audio = self._audio(params)
        override = self.authority.take()
        if override is not None and override.outcome == "timeout":
            raise _Timeout(override.seconds or 0.0)
        if audio.silent or (override is not None and override.outcome == "no_face"):
            raise VprError("no_speech")
        feature = self._group(params).features.get(feature_id)
        if feature is None:
            raise VprError("feature_not_found")
        if override is not None:
            score = NEXT_SCORES[override.outcome]
        elif audio.digest == feature.digest:
            score = SAME_VOICE_SCORE
        else:
            mixed = hashlib.sha256(feature.digest + audio.digest).digest()
            score = 5 + (int.from_bytes(mixed[:4], "big") % 3501) / 100      # 5.00 .. 40.00
        return {"score": score, "featureId": feature_id, "featureInfo": feature.info}

    async def list_features(self, params: Mapping[str, Any]) -> list[dict[str, Any]]:
        group = self._group(params)
        return [{"featureId": fid, "featureInfo": f.info} for fid, f in group.features.items()]


class _Timeout(Exception):
    """A ``timeout`` override: hold the request, then answer 504."""

    def __init__(self, seconds: float) -> None:
        super().__init__("timeout")
        self.seconds = seconds


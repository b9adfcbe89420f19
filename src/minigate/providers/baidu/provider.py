"""Baidu AI face (aip.baidubce.com), service-protocols.md §2.2: name + ID checks, one photo against the
authority's photo, and two photos against each other. The image comes through the merchant's backend
(``face_mode == "upload"``).

**Access token.** ``GET <token_url>?grant_type=client_credentials&client_id=<API Key>&client_secret=<Secret Key>``
(as the official SDK does) answers ``access_token`` and ``expires_in`` (30 days). The token is cached and renewed
``token_refresh_margin_seconds`` (30 s) before it expires; one :class:`asyncio.Lock` makes concurrent calls share
one fetch. When a call is refused with ``110`` (token invalid) or ``111`` (token expired), the token is fetched
again -- once, however many calls saw the refusal at the same moment -- and the call is retried once. An OAuth
refusal (``{"error": "invalid_client", ...}``) is an ``AUTH_FAILED`` decline.

**Calls.** ``POST <base_url><path>?access_token=<token>`` with a JSON body; every answer is HTTP 200 with
``{"error_code", "error_msg", "log_id", "timestamp", "cached", "result"}``. ``error_code`` 0 carries the result;
other codes go through :mod:`~minigate.providers.baidu.codes` (a verdict, a decline or an unknown outcome).
Any other HTTP status, or a body that is not that envelope, raises :class:`~minigate.errors.ProviderUnavailable`.

- ``verify_face``: ``/rest/2.0/face/v3/person/verify`` -> ``result.score`` against ``pass_threshold``.
- ``match_faces``: ``/rest/2.0/face/v3/match`` (a JSON array of two images) -> ``result.score``.
- ``check_id``: ``/rest/2.0/face/v3/person/idmatch``. Its result shape is not confirmed: ``error_code`` 0 is read
  as a match whatever ``result`` holds; the refusal codes (``222351`` mismatch, ``222354`` no record, ``222360``
  invalid) carry the negative answers.

Names, ID numbers, images and tokens never appear in logs or exception messages; the token travels in the URL
(Baidu's protocol), so nothing here puts a request URL in a message.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import httpx

from minigate.domain.results import ProviderResult, StandardCode
from minigate.errors import ProviderUnavailable
from minigate.providers._http import send
from minigate.providers.baidu.codes import DEFAULT_ERROR_MAPPER, PROVIDER, ErrorMapper
from minigate.providers.baidu.config import BaiduFaceConfig
from minigate.providers.bases.identity import FaceImage, IdentityProvider, Outcome, PersonId, Verdict

__all__ = ["IDMATCH_PATH", "MATCH_PATH", "USER_AGENT", "VERIFY_PATH", "BaiduAnswer", "BaiduFaceProvider"]

USER_AGENT = "minigate/0.1 (baidu-aip)"
MATCH_PATH = "/rest/2.0/face/v3/match"
VERIFY_PATH = "/rest/2.0/face/v3/person/verify"
IDMATCH_PATH = "/rest/2.0/face/v3/person/idmatch"


@dataclass(frozen=True, slots=True)
class BaiduAnswer:
    """One opened answer: Baidu's code and message, its ``log_id`` (as text) and ``result``."""

    error_code: int
    error_msg: str
    log_id: str | None
    result: Any


class _TokenRefused(Exception):
    """The token endpoint refused our credentials (an OAuth ``error``)."""

    def __init__(self, error: str, description: str) -> None:
        super().__init__(error)
        self.error = error
        self.description = description


class BaiduFaceProvider(IdentityProvider):
    """Baidu AI face over an injected :class:`httpx.AsyncClient`."""

    name: ClassVar[str] = PROVIDER
    kinds: ClassVar[frozenset[str]] = frozenset({"id_card", "face"})
    face_mode: ClassVar[str] = "upload"

    def __init__(self, config: BaiduFaceConfig, client: httpx.AsyncClient, *,
                 clock: Callable[[], float] = time.time, errors: ErrorMapper = DEFAULT_ERROR_MAPPER) -> None:
        super().__init__(client)
        self.config = config
        self.errors = errors.merged(config.error_codes) if config.error_codes else errors
        self._clock = clock
        self._base = config.base_url.rstrip("/")
        self._token: str | None = None
        self._token_expires_at = 0.0
        self._token_lock = asyncio.Lock()
        #: how many tokens this provider has fetched (observability and tests)
        self.token_fetches = 0

    # ------------------------------------------------------------------ access token
    def _timeout(self) -> dict[str, Any]:
        return {"timeout": httpx.Timeout(self.config.request_timeout_seconds).as_dict()}

    def token_request(self) -> httpx.Request:
        params = {"grant_type": "client_credentials", "client_id": self.config.api_key,
                  "client_secret": self.config.secret_key.get_secret_value()}
        return httpx.Request("GET", self.config.resolved_token_url, params=params,
                             headers={"Accept": "application/json", "User-Agent": USER_AGENT},
                             extensions=self._timeout())

    def _fresh(self, token: str | None) -> bool:
        return (token is not None
                and self._clock() < self._token_expires_at - self.config.token_refresh_margin_seconds)

    async def access_token(self, *, refused: str | None = None) -> str:
        """The cached token, or a new one. ``refused``: a token Baidu just refused -- it is replaced unless another
        call has replaced it already."""
        async with self._token_lock:
            token = self._token
            if token is not None and token != refused and self._fresh(token):
                return token
            response = await send(self.client, self.token_request(), provider=PROVIDER)
            fetched_at = self._clock()
            token, expires_in = self._open_token(response)
            self.token_fetches += 1
            self._token, self._token_expires_at = token, fetched_at + expires_in
            return token

    @staticmethod
    def _open_token(response: httpx.Response) -> tuple[str, float]:
        status = response.status_code
        try:
            document = json.loads(response.content)
        except (UnicodeDecodeError, ValueError):
            document = None
        if isinstance(document, dict) and isinstance(document.get("error"), str) and status < 500:
            description = document.get("error_description")
            raise _TokenRefused(document["error"], description if isinstance(description, str) else "")
        if status != 200 or not isinstance(document, dict):
            raise ProviderUnavailable(f"{PROVIDER}: token: HTTP {status}, no token answer", provider=PROVIDER,
                                      http_status=status)
        token = document.get("access_token")
        expires_in = document.get("expires_in")
        if (not isinstance(token, str) or not token or isinstance(expires_in, bool)
                or not isinstance(expires_in, int | float) or expires_in <= 0):
            raise ProviderUnavailable(f"{PROVIDER}: token: answer has no access_token/expires_in",
                                      provider=PROVIDER, http_status=status)
        return token, float(expires_in)

    # ------------------------------------------------------------------ calls
    def build(self, path: str, payload: Any, token: str) -> httpx.Request:
        body = json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()
        return httpx.Request("POST", self._base + path, params={"access_token": token}, content=body,
                             headers={"Content-Type": "application/json", "Accept": "application/json",
                                      "User-Agent": USER_AGENT}, extensions=self._timeout())

    @staticmethod
    def open(response: httpx.Response, op: str) -> BaiduAnswer:
        """Decode an answer; raises ProviderUnavailable when it is not Baidu's envelope."""
        status = response.status_code
        if status != 200:
            raise ProviderUnavailable(f"{PROVIDER}: {op}: HTTP {status}", provider=PROVIDER, http_status=status)
        try:
            document = json.loads(response.content)
        except (UnicodeDecodeError, ValueError) as exc:
            raise ProviderUnavailable(f"{PROVIDER}: {op}: answer is not JSON", provider=PROVIDER,
                                      http_status=status) from exc
        if not isinstance(document, dict):
            raise ProviderUnavailable(f"{PROVIDER}: {op}: answer is not a JSON object", provider=PROVIDER,
                                      http_status=status)
        raw_code = document.get("error_code", 0 if "result" in document else None)
        if isinstance(raw_code, str) and raw_code.isdigit():
            raw_code = int(raw_code)
        if not isinstance(raw_code, int) or isinstance(raw_code, bool):
            raise ProviderUnavailable(f"{PROVIDER}: {op}: answer has no error_code", provider=PROVIDER,
                                      http_status=status)
        log_id = document.get("log_id")
        message = document.get("error_msg")
        return BaiduAnswer(raw_code, message if isinstance(message, str) else "",
                           str(log_id) if isinstance(log_id, int | str) and not isinstance(log_id, bool) else None,
                           document.get("result"))

    async def call(self, op: str, path: str, payload: Any) -> BaiduAnswer:
        """Token, send, open; on 110/111 a new token and one retry. Raises _TokenRefused and OutcomeUnknown."""
        token = await self.access_token()
        answer = self.open(await send(self.client, self.build(path, payload, token), provider=PROVIDER), op)
        if self.errors.is_token_error(answer.error_code):
            token = await self.access_token(refused=token)
            answer = self.open(await send(self.client, self.build(path, payload, token), provider=PROVIDER), op)
        return answer

    async def _verdict(self, op: str, path: str, payload: Any,
                       on_success: Callable[[BaiduAnswer], Verdict]) -> ProviderResult[Verdict]:
        try:
            answer = await self.call(op, path, payload)
        except _TokenRefused as refused:
            return ProviderResult.decline(StandardCode.AUTH_FAILED, provider_code=refused.error,
                                          message=refused.description or "access token refused")
        code = answer.error_code
        if code == 0:
            return ProviderResult.success(on_success(answer), request_id=answer.log_id)
        if self.errors.is_unknown_outcome(code):
            raise ProviderUnavailable(f"{PROVIDER}: {op}: error_code {code}: outcome unknown", provider=PROVIDER,
                                      provider_code=str(code), request_id=answer.log_id)
        reason = self.errors.verdict_reason(code)
        if reason is not None:
            verdict = Verdict(Outcome.FAILED, reason, provider_ref=answer.log_id, provider_code=str(code),
                              liveness=False if reason == "liveness_failed" else None,
                              details={"error_msg": answer.error_msg})
            return ProviderResult.success(verdict, request_id=answer.log_id)
        return ProviderResult.decline(self.errors.classify(code), provider_code=str(code),
                                      message=answer.error_msg or None, request_id=answer.log_id)

    def _scored(self, answer: BaiduAnswer, op: str, *, liveness: bool | None,
                details: Mapping[str, Any]) -> Verdict:
        result = answer.result
        score = result.get("score") if isinstance(result, dict) else None
        if isinstance(score, bool) or not isinstance(score, int | float):
            raise ProviderUnavailable(f"{PROVIDER}: {op}: answer has no result.score", provider=PROVIDER,
                                      request_id=answer.log_id)
        passed = float(score) >= self.config.pass_threshold
        return Verdict(Outcome.PASSED if passed else Outcome.FAILED, "match" if passed else "low_similarity",
                       provider_ref=answer.log_id, provider_code="0", score=float(score), liveness=liveness,
                       details={"threshold": self.config.pass_threshold, **details})

    # ------------------------------------------------------------------ operations
    def verify_payload(self, person: PersonId, image: FaceImage) -> dict[str, Any]:
        payload: dict[str, Any] = {"image": image.base64, "image_type": "BASE64",
                                   "id_card_number": person.id_number, "name": person.name,
                                   "quality_control": self.config.quality_control,
                                   "liveness_control": self.config.liveness_control}
        if self.config.spoofing_control is not None:
            payload["spoofing_control"] = self.config.spoofing_control
        return payload

    def match_payload(self, first: FaceImage, second: FaceImage) -> list[dict[str, Any]]:
        return [{"image": image.base64, "image_type": "BASE64", "face_type": image.kind,
                 "quality_control": self.config.quality_control,
                 "liveness_control": self.config.liveness_control if image.kind == "LIVE" else "NONE"}
                for image in (first, second)]

    async def verify_face(self, person: PersonId, image: FaceImage) -> ProviderResult[Verdict]:
        liveness = self.config.liveness_control
        checked = True if liveness != "NONE" else None
        details = {"liveness_control": liveness, "quality_control": self.config.quality_control}
        return await self._verdict("person/verify", VERIFY_PATH, self.verify_payload(person, image),
                                   lambda a: self._scored(a, "person/verify", liveness=checked, details=details))

    async def match_faces(self, first: FaceImage, second: FaceImage) -> ProviderResult[Verdict]:
        payload = self.match_payload(first, second)
        checked = True if any(item["liveness_control"] != "NONE" for item in payload) else None
        details = {"liveness_control": [item["liveness_control"] for item in payload],
                   "quality_control": self.config.quality_control}
        return await self._verdict("match", MATCH_PATH, payload,
                                   lambda a: self._scored(a, "match", liveness=checked, details=details))

    async def check_id(self, person: PersonId) -> ProviderResult[Verdict]:
        payload = {"id_card_number": person.id_number, "name": person.name}

        def matched(answer: BaiduAnswer) -> Verdict:
            return Verdict(Outcome.PASSED, "match", provider_ref=answer.log_id, provider_code="0")

        return await self._verdict("person/idmatch", IDMATCH_PATH, payload, matched)

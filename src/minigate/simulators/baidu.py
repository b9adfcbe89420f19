"""Baidu AI face simulator (aip.baidubce.com): the OAuth token endpoint and three face APIs (service-protocols.md
§2.2), with deterministic outcomes shared by every identity simulator.

**Token** ``GET|POST /oauth/2.0/token`` (parameters in the query string or a form body): ``grant_type`` must be
``client_credentials`` (else ``unsupported_grant_type``, HTTP 400), ``client_id`` the API Key (else
``invalid_client`` / ``unknown client id``, HTTP 401), ``client_secret`` the Secret Key (else ``invalid_client`` /
``Client authentication failed``, HTTP 401). A token answer carries ``access_token``
(``24.<hex>.2592000.<epoch>.<n>-<app_id>``), ``expires_in`` (:attr:`BaiduSimulator.token_lifetime_seconds`),
``refresh_token``, ``scope`` (with ``brain_all_scope``, so the official SDK sends ``access_token`` rather than
``bce-auth-v1`` signatures), ``session_key`` and ``session_secret``.

**Face APIs**, ``POST <path>?access_token=...`` with a JSON body, every answer HTTP 200 with the envelope
``{"error_code", "error_msg", "log_id", "timestamp", "cached", "result"}`` (``result`` null on errors). Check
order: ``access_token`` present (``100 Invalid parameter``; a ``bce-auth-v1`` IAM signature instead of a token
answers ``14 IAM Certification failed``, the sandbox has no IAM keys) -> known (``110 Access token invalid or no longer
valid``) -> not expired (``111 Access token expired``) -> the next-call fault -> the body is JSON of the right
shape (``222200``) -> required parameters (``222001 param[<name>] is null``) -> their formats (``222015``
image_type, ``222019`` quality_control, ``222020`` liveness_control, ``100`` face_type, ``222208`` match needs two
images) -> the verdict.

- ``/rest/2.0/face/v3/match``: ``result {"score", "face_list": [{"face_token"}, {"face_token"}]}``.
- ``/rest/2.0/face/v3/person/verify``: ``result {"score"}``.
- ``/rest/2.0/face/v3/person/idmatch``: ``result`` null on success (the real shape is not confirmed).

**Deterministic outcomes** (the same rules as the other identity simulators):

- ``POST /_sandbox/persons {"name", "id_number", "photo"?}`` registers the authority's record (``DELETE``
  forgets them all). A name+ID check answers: registered with the same name -> success; registered with another
  name -> ``222351``; a valid ID not registered -> ``222354``; an ID that fails GB 11643 (or a malformed name)
  -> ``222360``. ``person/verify`` adds: registered without a photo -> ``222355``.
- Images are compared by content: the same decoded bytes (or the registered photo) score
  :attr:`~BaiduSimulator.same_score` (95), others :attr:`~BaiduSimulator.other_score` (25); decoded bytes starting
  with ``b"NOFACE"`` -> ``222202 pic not has face``; Base64 that does not decode -> ``222203 image check fail``.
  ``image_type`` ``FACE_TOKEN`` accepts the face tokens this simulator handed out (else ``222209``); ``URL``
  images cannot be fetched by the sandbox (``222204``).
- ``POST /_sandbox/next {"outcome": "pass"|"liveness_failed"|"mismatch"|"no_face"|"timeout", "count"?,
  "seconds"?}`` overrides the next ``count`` verdicts: pass -> score 95 (idmatch: success), mismatch -> score 25
  (idmatch: ``222351``), no_face -> ``222202``, liveness_failed -> ``223120 liveness check fail``, timeout -> the
  answer comes after ``seconds`` (without ``seconds``: HTTP 504 at once). ``no_face`` and ``liveness_failed`` are
  about images: an ID check leaves them queued for the next face call. ``GET`` shows the queue, ``DELETE``
  clears it.
- ``POST /_sandbox/tokens/expire`` expires every issued token (calls then answer ``111``); with
  ``{"revoke": true}`` it forgets them instead (calls answer ``110``, as after a restart).
- ``/_sandbox/faults``: next-call faults; ``path`` matches a prefix of the provider path (``/oauth/2.0/token``,
  ``/rest/2.0/face/v3/match``, ...), so ``"path": "/rest"`` spares the token fetch.

Not confirmed, and so attributes or plain table rows: the HTTP statuses of token errors, the 2223xx codes and
their messages, ``222200``/``222208``/``222209``/``222204``/``223120``, the idmatch result shape, and that a
missing ``access_token`` answers ``100``.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import json
import secrets
import string
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from minigate.identity import InvalidIdentity, parse_id_number, parse_name
from minigate.simulators._core import (
    Clock,
    CredentialStore,
    Deliverer,
    Faults,
    fault_routes,
    json_response,
    read_json_object,
)
from minigate.simulators._identity import Authority, Override, Person, param_error

__all__ = ["OUTCOMES", "BaiduApiError", "BaiduSimulator", "create_credentials"]

CREDENTIAL_FIELDS = ("app_id", "api_key", "secret_key")
TOKEN_LIFETIME_SECONDS = 30 * 24 * 3600
SCOPE = "public brain_all_scope vis-faceverify_FACE_V3 vis-faceverify_FACE_Police wise_adapt"
OUTCOMES = ("pass", "liveness_failed", "mismatch", "no_face", "timeout")
#: outcomes about images: an ID check leaves them queued for the next face call
FACE_OUTCOMES = frozenset({"no_face", "liveness_failed"})
IMAGE_TYPES = ("BASE64", "URL", "FACE_TOKEN")
CONTROLS = ("NONE", "LOW", "NORMAL", "HIGH")
FACE_TYPES = ("LIVE", "IDCARD", "WATERMARK", "CERT", "INFRARED", "HYBRID")
#: Base64 images larger than this are refused (2 MB, service-protocols.md §2.2)
MAX_IMAGE_BYTES = 2 * 1024 * 1024

MATCH = "/rest/2.0/face/v3/match"
VERIFY = "/rest/2.0/face/v3/person/verify"
IDMATCH = "/rest/2.0/face/v3/person/idmatch"
TOKEN = "/oauth/2.0/token"


def _alnum(n: int) -> str:
    return "".join(secrets.choice(string.ascii_letters + string.digits) for _ in range(n))


def create_credentials() -> dict[str, Any]:
    """An application: numeric AppID, 24-character API Key, 32-character Secret Key."""
    return {"app_id": str(10_000_000 + secrets.randbelow(90_000_000)), "api_key": _alnum(24),
            "secret_key": _alnum(32)}


class BaiduApiError(Exception):
    """A refusal, answered as the envelope with ``result: null``."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(code)
        self.code = code
        self.message = message


def _null(name: str) -> BaiduApiError:
    return BaiduApiError(222001, f"param[{name}] is null")


@dataclass
class Token:
    expires_at: float
    expired: bool = False


class BaiduSimulator:
    """One simulated Baidu AI application (AppID, API Key, Secret Key). ``app`` is the ASGI app."""

    name = "baidu"

    def __init__(self, store: CredentialStore, *, clock: Clock, faults: Faults | None = None,
                 deliverer: Deliverer | None = None) -> None:
        self.account: dict[str, Any] = store.load_or_create(self.name, create_credentials)
        self.clock = clock
        self.faults = faults or Faults()
        self.token_lifetime_seconds = TOKEN_LIFETIME_SECONDS
        self.same_score = 95.0
        self.other_score = 25.0
        self.tokens: dict[str, Token] = {}
        self.authority = Authority(OUTCOMES)
        #: face tokens handed out by ``match`` -> image bytes
        self.face_tokens: dict[str, bytes] = {}
        self.app = Starlette(routes=[
            *fault_routes(self.faults),
            *self.authority.routes(),
            Route("/_sandbox/tokens/expire", self.expire_endpoint, methods=["POST"]),
            Route(TOKEN, self.token_endpoint, methods=["GET", "POST"]),
            Route(MATCH, self._api(MATCH, self.match), methods=["POST"]),
            Route(VERIFY, self._api(VERIFY, self.verify), methods=["POST"]),
            Route(IDMATCH, self._api(IDMATCH, self.idmatch), methods=["POST"]),
        ])

    def now(self) -> float:
        """The simulator's clock: the shared clock plus the ``clock_skew_seconds`` fault."""
        return self.clock.now() + self.faults.clock_skew_seconds

    def credentials(self) -> dict[str, Any]:
        return {k: self.account[k] for k in CREDENTIAL_FIELDS}

    # ------------------------------------------------------------------ token endpoint
    async def token_endpoint(self, request: Request) -> Response:
        params = dict(parse_qsl(request.url.query, keep_blank_values=True))
        if request.method == "POST":
            form = dict(parse_qsl((await request.body()).decode("utf-8", "replace"), keep_blank_values=True))
            params = form | params
        fault = self.faults.take_call(TOKEN)
        if fault is not None and fault.kind != "charged_then_timeout":
            return await self._fault_answer(fault.kind, fault.seconds)
        grant = params.get("grant_type", "")
        if not grant:
            return json_response({"error": "invalid_request", "error_description": "Invalid Request"}, 400)
        if grant != "client_credentials":
            return json_response({"error": "unsupported_grant_type",
                                  "error_description": "The authorization grant type is not supported"}, 400)
        if params.get("client_id", "") != self.account["api_key"]:
            return json_response({"error": "invalid_client", "error_description": "unknown client id"}, 401)
        if not hmac.compare_digest(params.get("client_secret", "").encode(), str(self.account["secret_key"]).encode()):
            return json_response({"error": "invalid_client", "error_description": "Client authentication failed"},
                                 401)
        now = int(self.now())
        lifetime = int(self.token_lifetime_seconds)
        serial = secrets.randbelow(1_000_000)
        app_id = self.account["app_id"]
        token = f"24.{secrets.token_hex(16)}.{lifetime}.{now + lifetime}.{serial}-{app_id}"
        self.tokens[token] = Token(expires_at=now + lifetime)
        answer = {"refresh_token": f"25.{secrets.token_hex(16)}.315360000.{now + 315360000}.{serial}-{app_id}",
                  "expires_in": lifetime, "session_key": _alnum(64), "access_token": token, "scope": SCOPE,
                  "session_secret": secrets.token_hex(16)}
        if fault is not None:                       # charged_then_timeout: the token was issued, the answer lost
            await asyncio.sleep(fault.seconds)
            return Response(b"<html><body>Gateway Timeout</body></html>", 504, media_type="text/html")
        return json_response(answer)

    # ------------------------------------------------------------------ face APIs
    def envelope(self, code: int = 0, message: str = "SUCCESS", result: Any = None) -> Response:
        return json_response({"error_code": code, "error_msg": message,
                              "log_id": 10**17 + secrets.randbelow(9 * 10**17), "timestamp": int(self.now()),
                              "cached": 0, "result": result})

    @staticmethod
    async def _fault_answer(kind: str, seconds: float) -> Response:
        if kind == "timeout":
            await asyncio.sleep(seconds)
        status = {"timeout": 504, "http_429": 429}.get(kind, 500)
        return Response(b"<html><body>upstream error</body></html>", status, media_type="text/html")

    def _check_token(self, request: Request) -> None:
        token = request.query_params.get("access_token", "")
        if not token:
            if request.headers.get("authorization", "").startswith("bce-auth-v1/"):
                # cloud IAM signing: the sandbox application has no IAM key pair, so no such signature verifies
                raise BaiduApiError(14, "IAM Certification failed")
            raise BaiduApiError(100, "Invalid parameter")
        known = self.tokens.get(token)
        if known is None:
            raise BaiduApiError(110, "Access token invalid or no longer valid")
        if known.expired or self.now() >= known.expires_at:
            raise BaiduApiError(111, "Access token expired")

    def _api(self, path: str, handler: Callable[[Any], Awaitable[Any]]) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            try:
                self._check_token(request)
            except BaiduApiError as exc:
                return self.envelope(exc.code, exc.message)
            fault = self.faults.take_call(path)
            if fault is not None and fault.kind != "charged_then_timeout":
                return await self._fault_answer(fault.kind, fault.seconds)
            try:
                body = json.loads(await request.body())
            except (UnicodeDecodeError, ValueError):
                return self.envelope(222200, "request body should be json format")
            try:
                result = await handler(body)
            except BaiduApiError as exc:
                answer = self.envelope(exc.code, exc.message)
            except _Late as late:
                return late.response
            else:
                answer = self.envelope(result=result)
            if fault is not None:
                await asyncio.sleep(fault.seconds)
                return Response(b"<html><body>Gateway Timeout</body></html>", 504, media_type="text/html")
            return answer

        return endpoint

    # ------------------------------------------------------------------ parameters
    @staticmethod
    def _text(body: Mapping[str, Any], name: str, *, required: bool = True) -> str | None:
        value = body.get(name)
        if value is None or value == "":
            if required:
                raise _null(name)
            return None
        if not isinstance(value, str):
            raise BaiduApiError(100, "Invalid parameter")
        return value

    def _controls(self, body: Mapping[str, Any]) -> str:
        quality = self._text(body, "quality_control", required=False) or "NONE"
        if quality not in CONTROLS:
            raise BaiduApiError(222019, "param[quality_control] format error")
        liveness = self._text(body, "liveness_control", required=False) or "NONE"
        if liveness not in CONTROLS:
            raise BaiduApiError(222020, "param[liveness_control] format error")
        spoofing = self._text(body, "spoofing_control", required=False) or "NONE"
        if spoofing not in CONTROLS:
            raise BaiduApiError(100, "Invalid parameter")
        return liveness

    def _image(self, body: Mapping[str, Any]) -> bytes:
        """The image's bytes (after the parameter checks); NOFACE images are refused later, by the verdict."""
        image = self._text(body, "image")
        image_type = self._text(body, "image_type")
        assert image is not None and image_type is not None
        if image_type not in IMAGE_TYPES:
            raise BaiduApiError(222015, "param[image_type] format error")
        if image_type == "URL":
            raise BaiduApiError(222204, "image_url_download_fail")
        if image_type == "FACE_TOKEN":
            found = self.face_tokens.get(image)
            if found is None:
                raise BaiduApiError(222209, "face token not exist")
            return found
        if image.startswith("data:") or len(image) > MAX_IMAGE_BYTES:
            raise BaiduApiError(222203, "image check fail")
        try:
            raw = base64.b64decode(image, validate=True)
        except (binascii.Error, ValueError):
            raise BaiduApiError(222203, "image check fail") from None
        if not raw:
            raise BaiduApiError(222203, "image check fail")
        return raw

    @staticmethod
    def _person(body: Mapping[str, Any]) -> tuple[str, str]:
        """(ID number, name) from a body; ``222360`` when either is malformed."""
        id_number = BaiduSimulator._text(body, "id_card_number")
        name = BaiduSimulator._text(body, "name")
        assert id_number is not None and name is not None
        try:
            return parse_id_number(id_number).value, parse_name(name)
        except InvalidIdentity:
            raise BaiduApiError(222360, "name or id number illegal") from None

    def _record(self, id_number: str, name: str) -> Person:
        person = self.authority.persons.get(id_number)
        if person is None:
            raise BaiduApiError(222354, "id number not exist")
        if person.name != name:
            raise BaiduApiError(222351, "id number and name not match or id number not exist")
        return person

    # ------------------------------------------------------------------ overrides
    def _take_override(self, *, face: bool) -> Override | None:
        return self.authority.take(lambda outcome: face or outcome not in FACE_OUTCOMES)

    async def _apply(self, override: Override | None) -> str | None:
        """The outcome to force, after honouring a timeout override (answer later, or a 504 at once)."""
        if override is None:
            return None
        if override.outcome == "timeout":
            if override.seconds is None:
                raise _Late(Response(b"<html><body>Gateway Timeout</body></html>", 504, media_type="text/html"))
            await asyncio.sleep(override.seconds)
            return None
        if override.outcome == "no_face":
            raise BaiduApiError(222202, "pic not has face")
        if override.outcome == "liveness_failed":
            raise BaiduApiError(223120, "liveness check fail")
        return override.outcome

    @staticmethod
    def _face_present(raw: bytes) -> None:
        if raw.startswith(b"NOFACE"):
            raise BaiduApiError(222202, "pic not has face")

    # ------------------------------------------------------------------ handlers
    async def match(self, body: Any) -> dict[str, Any]:
        if not isinstance(body, list):
            raise BaiduApiError(222200, "request body should be json format")
        if len(body) != 2 or not all(isinstance(item, dict) for item in body):
            raise BaiduApiError(222208, "the number of image is incorrect")
        images = []
        for item in body:
            raw = self._image(item)
            face_type = self._text(item, "face_type", required=False) or "LIVE"
            if face_type not in FACE_TYPES:
                raise BaiduApiError(100, "Invalid parameter")
            self._controls(item)
            images.append(raw)
        forced = await self._apply(self._take_override(face=True))
        if forced is None:
            for raw in images:
                self._face_present(raw)
        tokens = []
        for raw in images:
            token = hashlib.md5(raw, usedforsecurity=False).hexdigest()
            self.face_tokens[token] = raw
            tokens.append({"face_token": token})
        same = images[0] == images[1] if forced is None else forced == "pass"
        return {"score": self.same_score if same else self.other_score, "face_list": tokens}

    async def verify(self, body: Any) -> dict[str, Any]:
        if not isinstance(body, dict):
            raise BaiduApiError(222200, "request body should be json format")
        for name in ("image", "image_type", "id_card_number", "name"):
            self._text(body, name)
        raw = self._image(body)
        self._controls(body)
        id_number, name = self._person(body)
        forced = await self._apply(self._take_override(face=True))
        if forced is not None:
            return {"score": self.same_score if forced == "pass" else self.other_score}
        self._face_present(raw)
        person = self._record(id_number, name)
        if person.photo is None:
            raise BaiduApiError(222355, "police picture not exist")
        return {"score": self.same_score if person.photo == raw else self.other_score}

    async def idmatch(self, body: Any) -> None:
        if not isinstance(body, dict):
            raise BaiduApiError(222200, "request body should be json format")
        self._text(body, "id_card_number")
        self._text(body, "name")
        id_number, name = self._person(body)
        forced = await self._apply(self._take_override(face=False))
        if forced == "pass":
            return None
        if forced == "mismatch":
            raise BaiduApiError(222351, "id number and name not match or id number not exist")
        self._record(id_number, name)
        return None

    # ------------------------------------------------------------------ control routes
    async def expire_endpoint(self, request: Request) -> Response:
        raw = await request.body()
        spec = await read_json_object(request) if raw.strip() else {}
        if spec is None or set(spec) - {"revoke"} or not isinstance(spec.get("revoke", False), bool):
            return param_error('an empty body or JSON {"revoke": true|false} expected')
        count = len(self.tokens)
        if spec.get("revoke"):
            self.tokens.clear()
            return json_response({"revoked": count})
        for token in self.tokens.values():
            token.expired = True
        return json_response({"expired": count})


class _Late(Exception):
    """A timeout override without ``seconds``: this response (a 504) instead of an answer."""

    def __init__(self, response: Response) -> None:
        super().__init__("late")
        self.response = response

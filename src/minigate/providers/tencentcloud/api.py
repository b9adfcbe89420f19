"""The Tencent Cloud API 3.0 client core, shared by every Tencent Cloud service minigate calls (SMS; FaceID).

One call is a signed JSON ``POST /`` (service-protocols.md §1.2): headers ``X-TC-Action``, ``X-TC-Version``,
``X-TC-Timestamp``, ``X-TC-Region`` (when the service needs one), ``X-TC-Token`` (temporary credentials only),
and the TC3-HMAC-SHA256 ``Authorization`` over ``content-type;host;x-tc-action``. Every answer, errors
included, is HTTP 200 with ``{"Response": {..., "RequestId": "..."}}``; a refusal carries
``Response.Error = {"Code", "Message"}`` and comes back here as :attr:`TcAnswer.error` for the service module
to map. Anything else -- HTTP status other than 200, a body that is not that JSON shape -- raises
:class:`~minigate.errors.ProviderUnavailable` (outcome unknown); transport errors are mapped by
:func:`minigate.providers._http.send`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx

from minigate.errors import ProviderUnavailable
from minigate.providers._http import send
from minigate.providers.tencentcloud.signing import tc3_authorization

__all__ = ["CONTENT_TYPE", "SIGNED_HEADERS", "USER_AGENT", "TcAnswer", "TcError", "TencentCloudApi"]

USER_AGENT = "minigate/0.1 (tencentcloud-api3)"
CONTENT_TYPE = "application/json; charset=utf-8"
SIGNED_HEADERS = ("content-type", "host", "x-tc-action")


@dataclass(frozen=True, slots=True)
class TcError:
    """``Response.Error``: Tencent's own code and message (never our secrets)."""

    code: str
    message: str


@dataclass(frozen=True, slots=True)
class TcAnswer:
    """An answer: ``data`` is ``Response`` without ``RequestId``/``Error``; ``error`` is set on refusals."""

    action: str
    request_id: str | None
    data: dict[str, Any]
    error: TcError | None = None


class TencentCloudApi:
    """Signs, sends and opens API 3.0 calls for one service with one key pair, over an injected client.

    ``base_url`` is the endpoint (``https://sms.tencentcloudapi.com``, or a simulator such as
    ``http://sandbox/tencentcloud``); the request goes to ``<base_url>/`` and the signed ``host`` is the
    URL's host[:port]. ``service`` is named explicitly because a simulator's host does not carry it.
    """

    def __init__(self, *, client: httpx.AsyncClient, provider: str, service: str, version: str, base_url: str,
                 secret_id: str, secret_key: str, region: str | None = None, token: str | None = None,
                 language: str | None = None, timeout: float = 10.0,
                 clock: Callable[[], float] = time.time) -> None:
        self.client = client
        self.provider = provider
        self.service = service
        self.version = version
        self.url = base_url.rstrip("/") + "/"
        self.host = urlsplit(self.url).netloc
        self.region = region
        self.timeout = timeout
        self._secret_id = secret_id
        self._secret_key = secret_key
        self._token = token
        self._language = language
        self._clock = clock

    def build(self, action: str, payload: Mapping[str, Any], *, timestamp: int | None = None) -> httpx.Request:
        """The signed request (pure apart from the clock)."""
        ts = int(self._clock()) if timestamp is None else timestamp
        body = json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()
        headers = {"Content-Type": CONTENT_TYPE, "Host": self.host, "X-TC-Action": action,
                   "X-TC-Version": self.version, "X-TC-Timestamp": str(ts)}
        if self.region:
            headers["X-TC-Region"] = self.region
        if self._token:
            headers["X-TC-Token"] = self._token
        if self._language:
            headers["X-TC-Language"] = self._language
        headers["Authorization"] = tc3_authorization(
            secret_id=self._secret_id, secret_key=self._secret_key, service=self.service, timestamp=ts,
            headers=headers, payload=body, signed_headers=SIGNED_HEADERS)
        headers |= {"Accept": "application/json", "User-Agent": USER_AGENT}
        return httpx.Request("POST", self.url, content=body, headers=headers,
                             extensions={"timeout": httpx.Timeout(self.timeout).as_dict()})

    def _unavailable(self, action: str, what: str, status: int | None = None) -> ProviderUnavailable:
        return ProviderUnavailable(f"{self.provider}: {action}: {what}", provider=self.provider, http_status=status)

    def open(self, response: httpx.Response, action: str) -> TcAnswer:
        """Decode an answer; raises ProviderUnavailable when it is not a Tencent Cloud API 3.0 answer."""
        status = response.status_code
        if status != 200:
            raise self._unavailable(action, f"HTTP {status}", status)
        try:
            document = json.loads(response.content)
        except (UnicodeDecodeError, ValueError) as exc:
            raise self._unavailable(action, "answer is not JSON", status) from exc
        body = document.get("Response") if isinstance(document, dict) else None
        if not isinstance(body, dict):
            raise self._unavailable(action, "answer has no Response object", status)
        request_id = body.get("RequestId")
        request_id = request_id if isinstance(request_id, str) else None
        error = body.get("Error")
        if error is not None:
            if not isinstance(error, dict) or not isinstance(error.get("Code"), str):
                raise self._unavailable(action, "Response.Error has no Code", status)
            message = error.get("Message")
            return TcAnswer(action, request_id, {},
                            TcError(error["Code"], message if isinstance(message, str) else ""))
        data = {k: v for k, v in body.items() if k != "RequestId"}
        return TcAnswer(action, request_id, data)

    async def call(self, action: str, payload: Mapping[str, Any]) -> TcAnswer:
        """Build, send, open. Transport trouble raises :class:`~minigate.errors.OutcomeUnknown`."""
        response = await send(self.client, self.build(action, payload), provider=self.provider)
        return self.open(response, action)

"""Youshu (腾讯有数) forwarder: one ``forward`` call is one signed POST to the safe-report API
(service-protocols.md §3.3; Youshu's "后台数据上报接口" page and its official mini-program SDK ``sr-sdk-wxapp``)::

    POST {base_url}/api/v1/safe-report?app_id=<app_id>&nonce=<nonce>&timestamp=<s>&sign=sha256&signature=<hex>
    Content-Type: application/json

    [{"type": "browse_wxapp_page", "from": "sr-sdk-wxapp", "tracking_id": "<event id>",
      "props": {"time": 1764000000000, "page": "pages/index", "wx_user": {"local_id": "<user_key>"}}}]

- The query is signed by :mod:`.signing` (HMAC-SHA256 keyed with ``app_secret``; a fresh 32-character nonce and
  the current Unix second for every request). ``app_secret`` itself never leaves the process.
- The body is always a JSON array (Youshu takes an object or an array). ``props`` holds the event's properties
  (names Youshu reserves — ``time``, ``page``, ``wx_user``, ``chan``… — get the ``mg_`` prefix), ``time`` in epoch
  milliseconds, ``page`` without its leading ``/`` (Youshu's rule), ``wx_user`` with the pseudonymous user key in
  the configured fields (``user_id`` for logged-in users, ``local_id`` otherwise; ``app_id`` when ``wxapp_id`` is
  configured) and ``chan.chan_wxapp_scene`` when the event has a ``scene`` property. ``tracking_id`` is
  minigate's event id (Youshu's SDK fills it with a per-session id; Youshu uses it "for data recovery and
  tracing"), so duplicates of an at-least-once delivery can be told apart.
- Page views go as ``browse_wxapp_page``; other events under their own name as the type, as ``sr.track(type,
  props)`` sends them (see :class:`~minigate.providers.youshu.config.YoushuConfig` for what is not confirmed).

Answers: ``{"code": 0, "msg": …}`` with HTTP 2xx -> success (the number of items sent); a non-zero ``code`` -> a
decline mapped by :mod:`.codes` (or ``ProviderUnavailable`` for Youshu's own failures); HTTP 429 ->
``rate_limited``; HTTP 5xx, an answer without a ``code``, transport errors and timeouts raise
:class:`~minigate.errors.OutcomeUnknown` — the batch is sent again later.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import httpx

from minigate.domain.results import ProviderResult, StandardCode
from minigate.errors import ProviderUnavailable
from minigate.providers._http import send as http_send
from minigate.providers.bases.analytics import AnalyticsForwarder, ForwardEvent
from minigate.providers.youshu import signing
from minigate.providers.youshu.codes import DEFAULT_ERROR_MAPPER, PROVIDER, SUCCESS_CODE, ErrorMapper
from minigate.providers.youshu.config import RESERVED_PROPS, YoushuConfig, wire_name

__all__ = ["PATH", "PROVIDER", "YoushuForwarder"]

PATH = "/api/v1/safe-report"
CONTENT_TYPE = "application/json"


def _scene(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.isdigit():
        return int(value)
    return None


class YoushuForwarder(AnalyticsForwarder):
    """Forwards batches to one Youshu data source. Built as ``YoushuForwarder(config, client)``."""

    config: YoushuConfig
    name: ClassVar[str] = PROVIDER
    max_batch: ClassVar[int] = 100

    def __init__(self, config: YoushuConfig, client: httpx.AsyncClient, *, clock: Callable[[], float] = time.time,
                 nonce: Callable[[], str] = signing.new_nonce, error_mapper: ErrorMapper = DEFAULT_ERROR_MAPPER
                 ) -> None:
        super().__init__(client)
        self.config = config
        self._clock = clock
        self._nonce = nonce
        self._errors = error_mapper

    # ------------------------------------------------------------------ building (pure but for clock and nonce)
    def url(self) -> str:
        return f"{self.config.base_url.rstrip('/')}{PATH}"

    def _name(self, event: ForwardEvent) -> str:
        return wire_name(event.name, mapping=self.config.event_names, prefix=self.config.name_prefix)

    def wire_name(self, event: ForwardEvent) -> str:
        """The Youshu behaviour type ``event`` is sent as."""
        if event.kind == "page_view":
            return self.config.page_view_type
        return self.config.custom_event_type or self._name(event)

    def _prop_key(self, key: str) -> str:
        prefix = self.config.name_prefix
        if key.startswith("$"):
            return prefix + key[1:]
        return prefix + key if key in RESERVED_PROPS else key

    def wire_item(self, event: ForwardEvent) -> dict[str, Any]:
        cfg = self.config
        props: dict[str, Any] = {}
        scene: int | None = None
        for key, value in event.properties.items():
            if cfg.scene_property is not None and key == cfg.scene_property:
                scene = _scene(value)
                if scene is not None:
                    continue
            props[self._prop_key(key)] = value
        if event.kind != "page_view" and cfg.custom_event_type:
            props[cfg.custom_event_name_prop] = self._name(event)
        fields = cfg.logged_in_user_fields if event.logged_in else cfg.anonymous_user_fields
        wx_user: dict[str, Any] = {"app_id": cfg.wxapp_id} if cfg.wxapp_id else {}
        wx_user |= dict.fromkeys(fields, event.user_key)
        props |= {"time": event.ts_ms, "wx_user": wx_user}
        if event.page:
            props["page"] = event.page.lstrip("/")
        if scene is not None:
            props["chan"] = {"chan_wxapp_scene": scene}
        return {"type": self.wire_name(event), "from": cfg.source, "props": props, "tracking_id": event.event_id}

    def build_forward(self, events: Sequence[ForwardEvent]) -> httpx.Request:
        query = signing.signed_query(app_id=self.config.app_id, app_secret=self.config.app_secret.get_secret_value(),
                                     nonce=self._nonce(), clock=self._clock)
        body = json.dumps([self.wire_item(e) for e in events], ensure_ascii=False, separators=(",", ":"))
        timeout = httpx.Timeout(self.config.request_timeout_seconds)
        return httpx.Request("POST", self.url(), params=query, content=body.encode("utf-8"),
                             headers={"Content-Type": CONTENT_TYPE, "Accept": "application/json"},
                             extensions={"timeout": timeout.as_dict()})

    # ------------------------------------------------------------------ answers
    def parse_forward(self, response: httpx.Response, count: int) -> ProviderResult[int]:
        """Success, a decline, or raise ``ProviderUnavailable`` when the outcome is unknown."""
        status = response.status_code
        if status == 429:
            return ProviderResult.decline(StandardCode.RATE_LIMITED, provider_code="429", message="HTTP 429")
        if status >= 500 or status < 200 or 300 <= status < 400:
            raise ProviderUnavailable(f"{PROVIDER}: safe-report: HTTP {status}", provider=PROVIDER,
                                      http_status=status)
        code, msg = _code(response)
        if code is None:
            if status in (401, 403):
                return ProviderResult.decline(StandardCode.AUTH_FAILED, provider_code=str(status),
                                              message=f"HTTP {status}")
            if status >= 400:
                return ProviderResult.decline(StandardCode.INVALID_REQUEST, provider_code=str(status),
                                              message=f"HTTP {status}")
            raise ProviderUnavailable(f"{PROVIDER}: safe-report: answer has no code", provider=PROVIDER,
                                      http_status=status)
        if code == SUCCESS_CODE:
            if status >= 400:
                raise ProviderUnavailable(f"{PROVIDER}: safe-report: code 0 with HTTP {status}", provider=PROVIDER,
                                          http_status=status)
            return ProviderResult.success(count)
        result: ProviderResult[int] = self._errors.decline_or_raise(code, msg, http_status=status)
        return result

    # ------------------------------------------------------------------ AnalyticsForwarder
    async def forward(self, events: Sequence[ForwardEvent]) -> ProviderResult[int]:
        if len(events) > self.max_batch:
            raise ValueError(f"{PROVIDER}: at most {self.max_batch} events per batch, got {len(events)}")
        if not events:
            return ProviderResult.success(0)
        response = await http_send(self.client, self.build_forward(events), provider=PROVIDER)
        return self.parse_forward(response, len(events))


def _code(response: httpx.Response) -> tuple[int | None, str | None]:
    """(``code``, ``msg``) of a ``{code, msg}`` answer; (None, None) when the body is not one."""
    try:
        data = json.loads(response.content)
    except ValueError:
        return None, None
    if not isinstance(data, dict):
        return None, None
    raw = data.get("code")
    if isinstance(raw, bool) or not isinstance(raw, int | str):
        return None, None
    try:
        code = int(raw)
    except ValueError:
        return None, None
    msg = data.get("msg")
    return code, msg[:300] if isinstance(msg, str) and msg else None

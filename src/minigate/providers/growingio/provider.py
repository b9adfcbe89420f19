"""GrowingIO forwarder: one ``forward`` call is one POST to the collect API of GrowingIO's server SDKs
(service-protocols.md §3.2; read in ``growingio-php-sdk`` and ``growingio-sdk-go``)::

    POST {base_url}/v3/projects/{account_id}/collect?stm={epoch ms}
    Content-Type: application/json

    [{"eventType": "CUSTOM", "eventName": "mg_pageview", "deviceId": "<user_key>", "timestamp": 1764000000000,
      "dataSourceId": "<data_source_id>", "attributes": {"page": "/pages/index", "mg_event_id": "ev_1"}}]

- Every event goes as ``CUSTOM``, page views included: ``PAGE`` events belong to the client SDKs (they need a
  session, a domain, a page sequence), and neither server SDK builds anything but ``CUSTOM`` and
  ``LOGIN_USER_ATTRIBUTES``. A page view is the custom event ``mg_pageview`` with the page path in the ``page``
  attribute.
- ``userId`` carries the user key when the event is from a logged-in user; otherwise ``deviceId`` (what the Go
  SDK fills from ``WithAnonymousId``). The key is minigate's pseudonym, never the app's user id or an openid.
- Names pass :func:`~minigate.providers.growingio.config.wire_key` (GrowingIO's key rule). Attribute values are
  strings (``true``/``false`` for booleans, numbers as written), cut to 1000 characters as the SDKs cut them.
- No signature exists. The SDKs ignore the answer body; a 2xx is success.

Answers: 2xx -> success (the number of events sent); 404 (no such project), 401, 403 -> ``auth_failed``; 429 ->
``rate_limited``; other 4xx -> ``invalid_request``; 5xx, other statuses, transport errors and timeouts raise
:class:`~minigate.errors.OutcomeUnknown` (the batch is sent again later; every event carries its id). The status
codes GrowingIO answers for refusals are not published (the SDKs do not read them).
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
from minigate.providers.bases.analytics import AnalyticsForwarder, ForwardEvent, PropertyValue
from minigate.providers.growingio.config import MAX_VALUE_LENGTH, GrowingIOConfig, wire_key

__all__ = ["PROVIDER", "GrowingIOForwarder", "attribute_value"]

PROVIDER = "growingio"
CONTENT_TYPE = "application/json"
_AUTH_STATUSES = frozenset({401, 403, 404})


def attribute_value(value: PropertyValue) -> str:
    """The string GrowingIO stores: ``true``/``false``, numbers as Python writes them, text as is; at most 1000
    characters."""
    if isinstance(value, bool):
        text = "true" if value else "false"
    else:
        text = value if isinstance(value, str) else str(value)
    return text[:MAX_VALUE_LENGTH]


def _message(response: httpx.Response) -> str | None:
    """A short text from an error answer (``message``/``msg``/``error`` of a JSON object), if any."""
    try:
        data = json.loads(response.content)
    except ValueError:
        return None
    if not isinstance(data, dict):
        return None
    for key in ("message", "msg", "error"):
        value = data.get(key)
        if isinstance(value, str) and value:
            return value[:300]
    return None


class GrowingIOForwarder(AnalyticsForwarder):
    """Forwards batches to one GrowingIO project. Built as ``GrowingIOForwarder(config, client)``."""

    config: GrowingIOConfig
    name: ClassVar[str] = PROVIDER
    max_batch: ClassVar[int] = 100

    def __init__(self, config: GrowingIOConfig, client: httpx.AsyncClient, *,
                 clock: Callable[[], float] = time.time) -> None:
        super().__init__(client)
        self.config = config
        self._clock = clock

    # ------------------------------------------------------------------ building (pure but for the clock)
    def url(self) -> str:
        return f"{self.config.base_url.rstrip('/')}/v3/projects/{self.config.account_id}/collect"

    def wire_name(self, event: ForwardEvent) -> str:
        """The GrowingIO event key of ``event``."""
        return wire_key(event.name, mapping=self.config.event_names, prefix=self.config.name_prefix)

    def wire_event(self, event: ForwardEvent) -> dict[str, Any]:
        cfg = self.config
        attributes = {wire_key(key, mapping=cfg.attribute_names, prefix=cfg.name_prefix): attribute_value(value)
                      for key, value in event.properties.items()}
        if cfg.page_attribute and event.page:
            attributes[cfg.page_attribute] = attribute_value(event.page)
        if cfg.platform_attribute and event.platform:
            attributes[cfg.platform_attribute] = attribute_value(event.platform)
        if cfg.event_id_attribute:
            attributes[cfg.event_id_attribute] = attribute_value(event.event_id)
        wire: dict[str, Any] = {"eventType": "CUSTOM", "eventName": self.wire_name(event)}
        wire["userId" if event.logged_in else "deviceId"] = event.user_key
        wire |= {"timestamp": event.ts_ms, "dataSourceId": cfg.data_source_id, "attributes": attributes}
        return wire

    def build_forward(self, events: Sequence[ForwardEvent]) -> httpx.Request:
        body = json.dumps([self.wire_event(e) for e in events], ensure_ascii=False, separators=(",", ":"))
        timeout = httpx.Timeout(self.config.request_timeout_seconds)
        return httpx.Request("POST", self.url(), params={"stm": str(int(self._clock() * 1000))},
                             content=body.encode("utf-8"),
                             headers={"Content-Type": CONTENT_TYPE, "Accept": "application/json"},
                             extensions={"timeout": timeout.as_dict()})

    # ------------------------------------------------------------------ answers
    @staticmethod
    def parse_forward(response: httpx.Response, count: int) -> ProviderResult[int]:
        """Success, a decline, or raise ``ProviderUnavailable`` when the outcome is unknown."""
        status = response.status_code
        if 200 <= status < 300:
            return ProviderResult.success(count)
        if status >= 500 or not 400 <= status < 500:
            raise ProviderUnavailable(f"{PROVIDER}: collect: HTTP {status}", provider=PROVIDER, http_status=status)
        message = _message(response) or f"HTTP {status}"
        if status in _AUTH_STATUSES:
            code = StandardCode.AUTH_FAILED
        elif status == 429:
            code = StandardCode.RATE_LIMITED
        else:
            code = StandardCode.INVALID_REQUEST
        return ProviderResult.decline(code, provider_code=str(status), message=message)

    # ------------------------------------------------------------------ AnalyticsForwarder
    async def forward(self, events: Sequence[ForwardEvent]) -> ProviderResult[int]:
        if len(events) > self.max_batch:
            raise ValueError(f"{PROVIDER}: at most {self.max_batch} events per batch, got {len(events)}")
        if not events:
            return ProviderResult.success(0)
        response = await http_send(self.client, self.build_forward(events), provider=PROVIDER)
        return self.parse_forward(response, len(events))

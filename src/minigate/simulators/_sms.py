"""What the three SMS simulators share: templates, the sandbox phone, per-number limits, nonces, receipts.

Each SMS simulator (``aliyun-sms``, ``tencentcloud``, ``yunpian``) owns one :class:`SmsDesk` and adds its
own wire protocol on top (signature checks, parameter names, error bodies, receipt format). The desk gives:

- the **sandbox phone**: every accepted message, with its full text, at ``GET /_sandbox/messages?phone=``
  (newest first);
- **per-number limits** as sliding windows with the provider's own error codes;
- a **nonce cache** (15-minute TTL) for the providers that refuse replayed nonces;
- **receipts** pushed to the account's callback URL (``POST /_sandbox/callbacks`` sets it — what the
  provider's console does) after ``receipt_delay`` seconds, through the shared :class:`Deliverer` so the
  notification faults (drop, duplicate, delay, reorder, tamper) apply;
- **phone states** (``POST /_sandbox/phones {"phone": ..., "state": "unreachable"}``) so a test can make a
  delivery fail, and **replies** (``POST /_sandbox/reply {"phone": ..., "text": "TD"}``) pushed to the
  account's reply URL, the way opt-outs arrive.
"""

from __future__ import annotations

import datetime as dt
import secrets
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from minigate.domain.sms import DEFAULT_TEMPLATES, Template
from minigate.phones import InvalidPhone, parse_phone
from minigate.simulators._core import BEIJING, Clock, Deliverer, Faults, Outgoing, json_response, read_json_object

__all__ = ["DEFAULT_TEMPLATES", "NonceCache", "PhoneMessage", "SimTemplate", "SmsDesk", "Window",
           "beijing_time", "sandbox_phone", "template_ids"]

#: How long after acceptance the simulated carrier reports (seconds, scaled by the sandbox time scale).
RECEIPT_DELAY_SECONDS = 1.0
#: The receipt retry schedule (none of the providers documents one; these are modest, scaled delays).
RECEIPT_RETRY_SCHEDULE = (5.0, 30.0, 120.0)


#: The templates every sandbox account has "approved" (minigate's default set); each simulator gives them its
#: own ids (``template_ids``). The marketing text ends with its opt-out.
SimTemplate = Template


def template_ids(make_id: Callable[[int, SimTemplate], str]) -> dict[str, str]:
    """name -> provider template id for every default template (``make_id(index, template)``)."""
    return {t.name: make_id(i, t) for i, t in enumerate(DEFAULT_TEMPLATES.values())}


def beijing_time(epoch: float) -> str:
    """``2017-01-01 00:00:00`` in Beijing time, the format of every SMS provider's reports."""
    return dt.datetime.fromtimestamp(int(epoch), BEIJING).strftime("%Y-%m-%d %H:%M:%S")


def sandbox_phone(raw: str) -> str | None:
    """E.164 for any well-formed number (the sandbox accepts every country), None otherwise."""
    try:
        return parse_phone(raw, allowed_country_codes=None).e164
    except InvalidPhone:
        return None


@dataclass(frozen=True, slots=True)
class Window:
    """At most ``limit`` messages per number in ``seconds``; beyond it the provider answers ``code``."""

    seconds: float
    limit: int
    code: str
    message: str
    same_content: bool = False   # count only messages with the same text (Yunpian codes 8 and 9)


class NonceCache:
    """Nonces seen in the last ``ttl`` seconds."""

    def __init__(self, ttl: float = 900.0) -> None:
        self.ttl = ttl
        self._seen: dict[str, float] = {}

    def use(self, nonce: str, now: float) -> bool:
        """False when ``nonce`` was already used within the TTL."""
        if len(self._seen) > 10_000:
            self._seen = {n: t for n, t in self._seen.items() if t > now - self.ttl}
        seen = self._seen.get(nonce)
        if seen is not None and seen > now - self.ttl:
            return False
        self._seen[nonce] = now
        return True


@dataclass
class PhoneMessage:
    """One message on the sandbox phone."""

    provider: str
    provider_message_id: str
    phone: str                   # E.164
    sign_name: str
    template_id: str
    template_name: str
    params: dict[str, str]
    text: str                    # 【sign】 + rendered template
    out_id: str | None           # OutId / SessionContext / uid as sent
    sent_at: float
    status: str = "accepted"     # accepted | delivered | failed
    error_code: str | None = None
    reported_at: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        return {"provider": self.provider, "id": self.provider_message_id, "phone": self.phone,
                "text": self.text, "sign_name": self.sign_name, "template_id": self.template_id,
                "template": self.template_name, "params": self.params, "out_id": self.out_id,
                "sent_at": beijing_time(self.sent_at), "status": self.status, "error_code": self.error_code}


#: builds the push body for receipts: (messages, variant) -> Outgoing; variant as in :class:`Deliverer`
ReceiptBuilder = Callable[[Sequence[PhoneMessage], str], Outgoing]
#: builds the push body for one reply: (phone E.164, text, epoch, variant) -> Outgoing
ReplyBuilder = Callable[[str, str, float, str], Outgoing]


class SmsDesk:
    """The provider-independent half of an SMS simulator."""

    def __init__(self, provider: str, *, clock: Clock, faults: Faults, deliverer: Deliverer | None,
                 templates: Mapping[str, str], windows: Sequence[Window],
                 build_receipts: ReceiptBuilder, build_reply: ReplyBuilder | None = None,
                 failure_code: str = "UNDELIV") -> None:
        self.provider = provider
        self.clock = clock
        self.faults = faults
        self.deliverer = deliverer or Deliverer(schedule=RECEIPT_RETRY_SCHEDULE, clock=clock)
        #: provider template id -> template
        self.templates: dict[str, SimTemplate] = {tid: DEFAULT_TEMPLATES[name] for name, tid in templates.items()}
        self.windows: list[Window] = list(windows)
        self.build_receipts = build_receipts
        self.build_reply = build_reply
        self.failure_code = failure_code
        self.receipt_delay = RECEIPT_DELAY_SECONDS
        self.receipt_url: str | None = None
        self.reply_url: str | None = None
        self.phone_states: dict[str, str] = {}       # E.164 -> ok | unreachable
        self.messages: list[PhoneMessage] = []
        self.nonces = NonceCache()
        self._history: dict[str, deque[tuple[float, str]]] = {}

    # -- rules ---------------------------------------------------------------------------------------
    def template(self, template_id: str) -> SimTemplate | None:
        return self.templates.get(template_id)

    def limit_exceeded(self, phone: str, text: str) -> Window | None:
        """The first window this send would break, or None (nothing is recorded: call :meth:`accept`)."""
        now = self.clock.now()
        history = self._history.get(phone, deque())
        for window in self.windows:
            recent = [t for t, body in history
                      if t > now - window.seconds and (not window.same_content or body == text)]
            if len(recent) >= window.limit:
                return window
        return None

    # -- sending -------------------------------------------------------------------------------------
    def accept(self, *, phone: str, sign_name: str, template_id: str, params: Mapping[str, str],
               out_id: str | None, provider_message_id: str | None = None,
               extra: Mapping[str, Any] | None = None) -> PhoneMessage:
        """Put the message on the phone and schedule its receipt. ``params`` must fit the template."""
        template = self.templates[template_id]
        now = self.clock.now()
        text = f"【{sign_name}】{template.render(params)}"
        message = PhoneMessage(
            provider=self.provider, provider_message_id=provider_message_id or secrets.token_hex(10),
            phone=phone, sign_name=sign_name, template_id=template_id, template_name=template.name,
            params=dict(params), text=text, out_id=out_id, sent_at=now, extra=dict(extra or {}))
        self.messages.append(message)
        history = self._history.setdefault(phone, deque(maxlen=64))
        history.append((now, text))
        self.deliverer.later(self.receipt_delay, lambda: self._report(message))
        return message

    async def _report(self, message: PhoneMessage) -> None:
        state = self.phone_states.get(message.phone, "ok")
        message.status = "delivered" if state == "ok" else "failed"
        message.error_code = None if state == "ok" else self.failure_code
        message.reported_at = self.clock.now()
        url = self.receipt_url_for(message)
        if url:
            self.deliverer.submit(event_id=message.provider_message_id, url=url,
                                  event_type="sms.receipt", fault=self.faults.take_notify(),
                                  build=lambda variant: self.build_receipts([message], variant))

    def receipt_url_for(self, message: PhoneMessage) -> str | None:
        """Where this message's receipt goes: a per-message ``callback_url`` (Yunpian takes one per request)
        wins over the account's registered URL."""
        url = message.extra.get("callback_url")
        return url if isinstance(url, str) and url else self.receipt_url

    def by_out_id(self, out_id: str) -> PhoneMessage | None:
        return next((m for m in reversed(self.messages) if m.out_id == out_id), None)

    def by_id(self, provider_message_id: str) -> PhoneMessage | None:
        return next((m for m in reversed(self.messages) if m.provider_message_id == provider_message_id), None)

    def inbox(self, phone: str) -> list[PhoneMessage]:
        return [m for m in reversed(self.messages) if m.phone == phone]

    # -- control routes ------------------------------------------------------------------------------
    def routes(self) -> list[Route]:
        return [Route("/_sandbox/messages", self._messages, methods=["GET"]),
                Route("/_sandbox/callbacks", self._callbacks, methods=["GET", "POST"]),
                Route("/_sandbox/phones", self._phones, methods=["POST"]),
                Route("/_sandbox/reply", self._reply, methods=["POST"])]

    async def _messages(self, request: Request) -> Response:
        raw = request.query_params.get("phone")
        if raw is None:
            return json_response({"messages": [m.as_json() for m in reversed(self.messages)]})
        phone = sandbox_phone(raw)
        if phone is None:
            return json_response({"code": "PARAM_ERROR", "message": "phone is not a mobile number"}, 400)
        return json_response({"phone": phone, "messages": [m.as_json() for m in self.inbox(phone)]})

    async def _callbacks(self, request: Request) -> Response:
        if request.method == "POST":
            data = await read_json_object(request)
            if data is None or set(data) - {"receipt_url", "reply_url"}:
                return json_response({"code": "PARAM_ERROR",
                                      "message": 'JSON {"receipt_url": ..., "reply_url": ...} expected'}, 400)
            for key in ("receipt_url", "reply_url"):
                if key in data:
                    value = data[key]
                    if value is not None and not (isinstance(value, str) and value.startswith(("http://",
                                                                                               "https://"))):
                        return json_response({"code": "PARAM_ERROR", "message": f"{key} must be a URL"}, 400)
                    setattr(self, key, value)
        return json_response({"receipt_url": self.receipt_url, "reply_url": self.reply_url})

    async def _phones(self, request: Request) -> Response:
        data = await read_json_object(request)
        phone = sandbox_phone(str(data.get("phone", ""))) if data else None
        state = data.get("state") if data else None
        if phone is None or state not in ("ok", "unreachable"):
            return json_response({"code": "PARAM_ERROR",
                                  "message": 'JSON {"phone": ..., "state": "ok"|"unreachable"} expected'}, 400)
        self.phone_states[phone] = state
        return json_response({"phone": phone, "state": state})

    async def _reply(self, request: Request) -> Response:
        data = await read_json_object(request)
        phone = sandbox_phone(str(data.get("phone", ""))) if data else None
        text = data.get("text") if data else None
        if phone is None or not isinstance(text, str) or not text:
            return json_response({"code": "PARAM_ERROR", "message": 'JSON {"phone": ..., "text": ...} expected'},
                                 400)
        if self.build_reply is None or not self.reply_url:
            return json_response({"code": "NO_REPLY_URL", "message": "no reply URL registered"}, 409)
        build_reply = self.build_reply
        now = self.clock.now()
        record = self.deliverer.submit(event_id=secrets.token_hex(8), url=self.reply_url, event_type="sms.reply",
                                       fault=self.faults.take_notify(),
                                       build=lambda variant: build_reply(phone, text, now, variant))
        return json_response({"queued": record.id})

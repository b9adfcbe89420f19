"""Configuration of one GrowingIO project, as its server SDKs address it: ``accountId`` (项目 ID, in the URL) and
``dataSourceId`` (数据源 ID, in every event).

GrowingIO's collect API has no signature and no API key: the account id is not a secret (the mini-program SDK
ships it in client code), so nothing here is a ``SecretStr``. Event and attribute keys must follow GrowingIO's key
rule (letters, digits and ``_``, not starting with a digit, at most 100 characters — the official mini-program
SDK's ``eventNameValidate``); :func:`wire_key` turns minigate's names into such keys.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

if TYPE_CHECKING:
    from minigate.providers.registry import SandboxContext

__all__ = ["DEFAULT_EVENT_ID_ATTRIBUTE", "DEFAULT_PAGE_ATTRIBUTE", "DEFAULT_PREFIX", "KEY_PATTERN", "LIVE_BASE_URL",
           "MAX_KEY_LENGTH", "MAX_VALUE_LENGTH", "GrowingIOConfig", "sandbox_config", "wire_key"]

#: the collector of GrowingIO's cloud edition; a private deployment has its own host (not confirmed, configurable)
LIVE_BASE_URL = "https://napi.growingio.com"
#: GrowingIO's key rule for event names (official mini-program SDK), applied to attribute keys too
KEY_PATTERN = re.compile(r"^[A-Za-z_][0-9A-Za-z_]{0,99}$")
MAX_KEY_LENGTH = 100
#: attribute values longer than this are cut by the official SDKs
MAX_VALUE_LENGTH = 1000
#: what a leading ``$`` of minigate's reserved names becomes (``$pageview`` -> ``mg_pageview``)
DEFAULT_PREFIX = "mg_"
DEFAULT_PAGE_ATTRIBUTE = "page"
DEFAULT_EVENT_ID_ATTRIBUTE = "mg_event_id"
_NOT_KEY = re.compile(r"[^0-9A-Za-z_]")


def wire_key(name: str, *, mapping: dict[str, str], prefix: str) -> str:
    """GrowingIO's key for a minigate event or property name.

    An explicit ``mapping`` entry wins. Otherwise a leading ``$`` becomes ``prefix``, every character outside
    ``[0-9A-Za-z_]`` becomes ``_``, a leading digit gets a ``_`` in front, and the result is cut to 100
    characters. Two names can meet on one key (``a-b`` and ``a_b``); map them explicitly when that matters.
    """
    if name in mapping:
        return mapping[name]
    key = prefix + name[1:] if name.startswith("$") else name
    key = _NOT_KEY.sub("_", key)
    if not key or key[0].isdigit():
        key = "_" + key
    return key[:MAX_KEY_LENGTH]


class GrowingIOConfig(BaseModel):
    """Field names match ``minigate sandbox credentials growingio`` (``account_id``, ``data_source_id``)."""

    model_config = ConfigDict(extra="forbid")

    #: 项目 ID (16 or 32 characters in GrowingIO's consoles; the server SDKs only warn on other lengths)
    account_id: str = Field(pattern=r"^[0-9A-Za-z]{1,64}$")
    #: 数据源 ID of the data source the events are counted under
    data_source_id: str = Field(pattern=r"^[0-9A-Za-z_-]{1,64}$")
    #: the collector host; ``/v3/projects/<account_id>/collect`` is appended
    base_url: str = LIVE_BASE_URL
    #: minigate event name -> GrowingIO event key (keys must be registered in GrowingIO's console to be counted)
    event_names: dict[str, str] = Field(default_factory=dict)
    #: minigate property name -> GrowingIO attribute key
    attribute_names: dict[str, str] = Field(default_factory=dict)
    #: replaces the leading ``$`` of names without a mapping
    name_prefix: str = Field(default=DEFAULT_PREFIX, pattern=r"^[A-Za-z_][0-9A-Za-z_]{0,19}$")
    #: the attribute carrying the page path of page views (None: not sent)
    page_attribute: str | None = DEFAULT_PAGE_ATTRIBUTE
    #: the attribute carrying minigate's event id, so duplicates of an at-least-once delivery can be told apart
    #: (None: not sent). GrowingIO's event JSON has no id field of its own.
    event_id_attribute: str | None = DEFAULT_EVENT_ID_ATTRIBUTE
    #: the attribute carrying the platform (``wechat``, ``alipay``, ``server``); None: not sent
    platform_attribute: str | None = None
    request_timeout_seconds: float = Field(default=10.0, gt=0, le=120)

    @field_validator("event_names", "attribute_names")
    @classmethod
    def _keys(cls, value: dict[str, str]) -> dict[str, str]:
        bad = sorted(v for v in value.values() if not KEY_PATTERN.match(v))
        if bad:
            raise ValueError(f"not GrowingIO keys (letters, digits, _; not starting with a digit): {bad}")
        return value

    @field_validator("page_attribute", "event_id_attribute", "platform_attribute")
    @classmethod
    def _attribute(cls, value: str | None) -> str | None:
        if value is not None and not KEY_PATTERN.match(value):
            raise ValueError("must be a GrowingIO key (letters, digits, _; not starting with a digit)")
        return value

    def problems(self) -> list[str]:
        """What would make this configuration fail in production (checked by ``apps set-credentials``)."""
        found: list[str] = []
        if len(self.account_id) not in (16, 32):
            found.append("account_id should be the 16 or 32 characters of the project ID (项目 ID)")
        if not self.base_url.startswith("https://"):
            found.append("base_url must be https:// in live mode")
        return found


def sandbox_config(ctx: SandboxContext) -> dict[str, Any]:
    """The configuration that talks to the sandbox's ``growingio`` simulator."""
    creds = ctx.credentials("growingio")
    return {"account_id": creds["account_id"], "data_source_id": creds["data_source_id"],
            "base_url": f"{ctx.base_url}/growingio"}

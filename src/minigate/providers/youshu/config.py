"""Configuration of one Youshu (腾讯有数) data source: the ``app_id`` and ``app_secret`` Youshu assigns (not the
mini-program's own AppID), and how minigate's events are shaped into Youshu behaviour data.

Youshu publishes the transport (safe-report, its signature) but little about how server-side behaviour data is
keyed. Everything marked "not confirmed" below is a default that can be changed here:

- the ``from`` value (``source``): Youshu asks for an identifier of the data's origin that is unique in your
  business; its official WeChat SDK sends ``sr-sdk-wxapp``, which is the default;
- the behaviour type of page views (``page_view_type``, default ``browse_wxapp_page``, the SDK's page-browse
  type) and of other events (``custom_event_type``): by default the event's own name is the type, as the SDK's
  ``sr.track(type, props)`` sends it; set ``custom_event_type`` to send every other event under one type with its
  name in the ``custom_event_name_prop`` property;
- where the user key goes in ``props.wx_user``: ``user_id`` (Youshu's "user id at the merchant") for logged-in
  users, ``local_id`` otherwise. Youshu marks ``wx_user.open_id`` required, but minigate forwards no openid to
  an analytics vendor (compliance C-7); add ``"open_id"`` to a field list only if your DPA with Tencent allows
  the pseudonymous key there.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

if TYPE_CHECKING:
    from minigate.providers.registry import SandboxContext

__all__ = ["DEFAULT_PREFIX", "DEFAULT_SOURCE", "LIVE_BASE_URL", "PAGE_VIEW_TYPE", "RESERVED_PROPS", "YoushuConfig",
           "sandbox_config", "wire_name"]

LIVE_BASE_URL = "https://zhls.qq.com"
#: what the official WeChat mini-program SDK (``sr-sdk-wxapp``) puts in ``from``
DEFAULT_SOURCE = "sr-sdk-wxapp"
#: the SDK's page-browse behaviour type
PAGE_VIEW_TYPE = "browse_wxapp_page"
#: what a leading ``$`` of minigate's reserved names becomes (``$payment_verified`` -> ``mg_payment_verified``)
DEFAULT_PREFIX = "mg_"
#: props keys the forwarder sets itself; event properties with these names are sent with the prefix in front
RESERVED_PROPS = frozenset({"time", "page", "wx_user", "chan", "page_title", "sr_sdk_version"})
_USER_FIELDS = re.compile(r"^(user_id|local_id|open_id|union_id)$")


def wire_name(name: str, *, mapping: dict[str, str], prefix: str) -> str:
    """Youshu's name for a minigate event name: the mapping's entry, else a leading ``$`` replaced by ``prefix``."""
    if name in mapping:
        return mapping[name]
    return prefix + name[1:] if name.startswith("$") else name


class YoushuConfig(BaseModel):
    """Field names match ``minigate sandbox credentials youshu`` (``app_id``, ``app_secret``)."""

    model_config = ConfigDict(extra="forbid")

    #: the data source's app_id assigned by Youshu (数据中心分配的应用ID)
    app_id: str = Field(pattern=r"^[0-9A-Za-z_-]{1,64}$")
    #: the signing key (签名密钥); only ever used to compute the signature
    app_secret: SecretStr
    #: the Youshu host; ``/api/v1/safe-report`` is appended
    base_url: str = LIVE_BASE_URL
    #: ``from`` of every item [not confirmed]
    source: str = Field(default=DEFAULT_SOURCE, min_length=1, max_length=64)
    #: the mini-program's AppID (``wx…``), sent as ``props.wx_user.app_id`` when set (Youshu marks it required)
    wxapp_id: str | None = Field(default=None, pattern=r"^[0-9A-Za-z_-]{1,64}$")
    #: behaviour type of page views [not confirmed for server-side data]
    page_view_type: str = Field(default=PAGE_VIEW_TYPE, min_length=1, max_length=64)
    #: one behaviour type for every other event (None: the event's Youshu name is the type) [not confirmed]
    custom_event_type: str | None = Field(default=None, min_length=1, max_length=64)
    #: with ``custom_event_type``: the props key holding the event's Youshu name
    custom_event_name_prop: str = Field(default="event_name", min_length=1, max_length=64)
    #: minigate event name -> Youshu name (type, or ``custom_event_name_prop``)
    event_names: dict[str, str] = Field(default_factory=dict)
    #: replaces the leading ``$`` of names without a mapping, and goes in front of reserved property names
    name_prefix: str = Field(default=DEFAULT_PREFIX, pattern=r"^[A-Za-z_][0-9A-Za-z_]{0,19}$")
    #: ``props.wx_user`` fields that receive the user key of a logged-in user [not confirmed]
    logged_in_user_fields: tuple[str, ...] = Field(default=("user_id",), min_length=1)
    #: ``props.wx_user`` fields that receive the user key of an anonymous device [not confirmed]
    anonymous_user_fields: tuple[str, ...] = Field(default=("local_id",), min_length=1)
    #: an event property holding the mini-program scene value, sent as ``props.chan.chan_wxapp_scene``
    scene_property: str | None = "scene"
    request_timeout_seconds: float = Field(default=10.0, gt=0, le=120)

    @field_validator("logged_in_user_fields", "anonymous_user_fields")
    @classmethod
    def _user_fields(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for name in value:
            if not _USER_FIELDS.match(name):
                raise ValueError(f"wx_user field {name!r}: one of user_id, local_id, open_id, union_id")
        return value

    def problems(self) -> list[str]:
        """What would make this configuration fail in production (checked by ``apps set-credentials``)."""
        found: list[str] = []
        if not self.app_secret.get_secret_value():
            found.append("app_secret is empty")
        if not self.base_url.startswith("https://"):
            found.append("base_url must be https:// in live mode")
        if self.wxapp_id is None:
            found.append("wxapp_id (the mini-program's AppID) is not set: Youshu marks wx_user.app_id required")
        return found


def sandbox_config(ctx: SandboxContext) -> dict[str, Any]:
    """The configuration that talks to the sandbox's ``youshu`` simulator."""
    creds = ctx.credentials("youshu")
    return {"app_id": creds["app_id"], "app_secret": creds["app_secret"], "base_url": f"{ctx.base_url}/youshu"}

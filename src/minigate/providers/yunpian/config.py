"""Configuration of one Yunpian account (SMS API v2).

Yunpian has no request signature: the ``apikey`` form field is the credential, so it is a secret like any key.
The template mapping gives Yunpian ``tpl_id`` values (numbers, kept as strings). Yunpian templates contain
their 【sign】 text, so ``sign_name`` is used only by the ``single_send`` (text) method.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field, SecretStr

from minigate.providers.bases.sms import SmsProviderConfig

if TYPE_CHECKING:
    from minigate.providers.registry import SandboxContext

__all__ = ["LIVE_BASE_URL", "OVERSEAS_BASE_URL", "YunpianConfig", "sandbox_config"]

LIVE_BASE_URL = "https://sms.yunpian.com"
#: Yunpian's overseas access point (same API)
OVERSEAS_BASE_URL = "https://us.yunpian.com"
_APIKEY = re.compile(r"^[0-9a-f]{32}$")


class YunpianConfig(SmsProviderConfig):
    """Credentials and options; ``base_url`` is the host (``/v2/sms/<method>.json`` is appended)."""

    apikey: SecretStr
    base_url: str = LIVE_BASE_URL
    #: ``tpl_single_send`` (template id + ``tpl_value``) or ``single_send`` (the full text, which Yunpian matches
    #: against the account's approved templates)
    send_method: Literal["tpl_single_send", "single_send"] = "tpl_single_send"
    #: sent as ``callback_url`` with every message: Yunpian then pushes that message's status there instead of to
    #: the URL set in its console
    callback_url: str | None = None
    #: check the ``_sign`` field of reply pushes (md5 over the sorted values and the apikey; see the docs page)
    reply_sign_check: bool = False
    #: ``find`` searches ``get_record`` from one minute before the send to this many seconds after it
    lookup_window_seconds: int = Field(default=900, ge=60, le=86400)
    request_timeout_seconds: float = Field(default=10.0, gt=0, le=120)

    def problems(self) -> list[str]:
        """What would make these credentials fail in production."""
        found: list[str] = []
        if not _APIKEY.match(self.apikey.get_secret_value()):
            found.append("apikey should be the 32 hex characters shown in the Yunpian console")
        if not self.base_url.startswith("https://"):
            found.append("base_url must be https:// in live mode")
        if self.callback_url is not None and not self.callback_url.startswith("https://"):
            found.append("callback_url should be https://")
        if self.send_method == "single_send" and not self.sign_name:
            found.append("send_method single_send needs sign_name")
        return found


def sandbox_config(ctx: SandboxContext) -> dict[str, Any]:
    """The configuration that talks to the ``yunpian`` simulator."""
    creds: dict[str, Any] = ctx.credentials("yunpian")
    return {"apikey": creds["apikey"], "sign_name": creds["sign_name"], "templates": dict(creds["templates"]),
            "base_url": f"{ctx.base_url}/yunpian"}

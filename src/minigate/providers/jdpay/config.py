"""Configuration of one JD Pay merchant (V2.0 gateway; H5 cashier opened in a mini-program ``<web-view>``)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr

__all__ = ["JDPayConfig"]

LIVE_BASE_URL = "https://paygate.jd.com"
LIVE_CASHIER_URL = "https://h5pay.jd.com/jdpay/saveOrder"


class JDPayConfig(BaseModel):
    """Field names match ``minigate sandbox credentials jdpay`` (plus the optional ones below)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    merchant: str = Field(min_length=1, max_length=32, pattern=r"^\d+$", description="JD merchant number")
    merchant_private_key: SecretStr = Field(description="PKCS#8 DER Base64 (JD's rsaPrivateKey) or PEM")
    jd_public_key: str = Field(description="JD's RSA public key: SPKI DER Base64 or PEM")
    des_key: SecretStr = Field(description="desKey: Base64 of 24 bytes (3DES)")
    #: Only JD's APP SDK hand-off uses it (§3.4); kept so a complete merchant config validates.
    md5_key: SecretStr | None = None
    #: Server-to-server XML API (``/service/query``, ``/service/refund``, ...).
    base_url: str = LIVE_BASE_URL
    #: The H5 cashier the mini-program ``<web-view>`` posts the form to (§3.5).
    cashier_url: str = LIVE_CASHIER_URL
    #: JD requires ``callbackUrl`` (where the cashier sends the payer back, with a signed form). ``None``:
    #: use the order's notify_url (the page is informational only; the notification is authoritative).
    callback_url: str | None = None
    #: §5.6: JD's demo answers ``ok``, other integrators ``success``; JD's real expectation is unknown.
    notify_ack_body: str = "ok"
    #: ``orderType``: ``0`` physical goods, ``1`` virtual goods.
    order_type: Literal["0", "1"] = "1"
    #: ``expireTime`` format [U] (§3.4): ``seconds`` = lifetime in seconds after tradeTime (JD's PC/H5
    #: document as the author remembers it), ``datetime`` = absolute ``yyyyMMddHHmmss`` (the sample in §3.4).
    expire_time_format: Literal["seconds", "datetime"] = "seconds"
    request_timeout_seconds: float = 10.0

    def problems(self) -> list[str]:
        """What would make these credentials fail in production (checked by ``apps set-credentials``)."""
        from minigate.providers.jdpay import crypto

        found: list[str] = []
        try:
            crypto.load_private_key(self.merchant_private_key.get_secret_value())
        except (ValueError, TypeError):
            found.append("merchant_private_key is not a readable RSA private key (PKCS#8 Base64 or PEM)")
        try:
            crypto.load_public_key(self.jd_public_key)
        except (ValueError, TypeError):
            found.append("jd_public_key is not a readable RSA public key")
        try:
            crypto.decode_des_key(self.des_key.get_secret_value())
        except (ValueError, TypeError):
            found.append("des_key must be the Base64 of 24 bytes")
        for name in ("base_url", "cashier_url", "callback_url"):
            value = getattr(self, name)
            if value and not value.startswith("https://"):
                found.append(f"{name} must be https:// in live mode")
        return found

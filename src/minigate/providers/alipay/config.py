"""Configuration of one Alipay application (mini-program, JSAPI_PAY product)."""

from __future__ import annotations

import base64
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator

__all__ = ["LIVE_BASE_URL", "SANDBOX_BASE_URL", "AlipayConfig"]

LIVE_BASE_URL = "https://openapi.alipay.com/gateway.do"
#: Alipay's own sandbox environment (not minigate's simulator).
SANDBOX_BASE_URL = "https://openapi-sandbox.dl.alipaydev.com/gateway.do"


class AlipayConfig(BaseModel):
    """Everything the client needs. Field names match ``minigate sandbox credentials alipay`` where they overlap.

    Keys may be PEM or bare Base64 (as the Alipay open platform shows them): ``app_private_key`` PKCS#1 or
    PKCS#8, ``alipay_public_key`` SPKI. In ``certificate`` mode the three PEM certificates are required and the
    Alipay public key is taken from ``alipay_cert``. ``encrypt_key`` (Base64 of 16 bytes) turns on AES content
    encryption (§2.9) for every call.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    app_id: str = Field(min_length=1, max_length=32)
    seller_id: str = Field(min_length=1, max_length=32, description="the merchant's 2088… partner id (PID)")
    app_private_key: SecretStr
    alipay_public_key: str | None = None
    key_mode: Literal["public_key", "certificate"] = "public_key"
    app_cert: str | None = None
    alipay_cert: str | None = None
    alipay_root_cert: str | None = None
    encrypt_key: SecretStr | None = None
    #: the mini-program AppID that opens the cashier, when it differs from ``app_id`` (§2.4, §5.4)
    op_app_id: str | None = None
    #: ``buyer_open_id`` (new open-id apps) or ``buyer_id`` (legacy 2088… user ids) (§2.4)
    buyer_id_field: Literal["buyer_open_id", "buyer_id"] = "buyer_open_id"
    #: the full gateway URL; a simulator is e.g. ``http://sandbox/alipay/gateway.do``
    base_url: str = LIVE_BASE_URL
    request_timeout_seconds: float = 10.0
    charset: str = "utf-8"

    @model_validator(mode="after")
    def _key_material(self) -> AlipayConfig:
        if self.key_mode == "public_key" and not self.alipay_public_key:
            raise ValueError("key_mode=public_key needs alipay_public_key")
        if self.key_mode == "certificate" and not (self.app_cert and self.alipay_cert and self.alipay_root_cert):
            raise ValueError("key_mode=certificate needs app_cert, alipay_cert and alipay_root_cert")
        return self

    def problems(self) -> list[str]:
        """What would make these credentials fail in production (checked by ``apps set-credentials``)."""
        from minigate.providers.alipay import signing

        found: list[str] = []
        try:
            signing.load_private_key(self.app_private_key.get_secret_value())
        except (ValueError, TypeError):
            found.append("app_private_key is not a readable RSA private key (PEM or Base64)")
        if self.alipay_public_key:
            try:
                signing.load_public_key(self.alipay_public_key)
            except (ValueError, TypeError):
                found.append("alipay_public_key is not a readable RSA public key")
        for name in ("app_cert", "alipay_cert"):
            value = getattr(self, name)
            if value:
                try:
                    signing.load_certificate(value)
                except (ValueError, TypeError):
                    found.append(f"{name} is not a readable X.509 PEM")
        if self.alipay_root_cert:
            try:
                signing.root_cert_sn(self.alipay_root_cert)
            except (ValueError, TypeError):
                found.append("alipay_root_cert holds no readable certificate")
        if self.encrypt_key is not None:
            try:
                if len(base64.b64decode(self.encrypt_key.get_secret_value(), validate=True)) != 16:
                    raise ValueError
            except (ValueError, TypeError):
                found.append("encrypt_key must be the Base64 of a 16-byte AES key")
        if not self.seller_id.startswith("2088") or len(self.seller_id) != 16:
            found.append("seller_id should be the 16-digit 2088… partner id")
        if not self.base_url.startswith("https://"):
            found.append("base_url must be https:// in live mode")
        return found

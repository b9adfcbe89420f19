"""The Alipay OpenAPI envelope: signed requests and verified answers (payment-protocols.md §2.1-§2.3, §2.8, §2.9).

:class:`OpenApi` is shared by :class:`~minigate.providers.alipay.provider.AlipayProvider` and
:class:`~minigate.providers.alipay.login.AlipayLoginClient`.

Requests: common params + compact ``biz_content`` (AES-encrypted first when ``encrypt_key`` is set), signed
RSA2 over the sorted non-empty params (``sign_type`` included), POSTed form-urlencoded to ``base_url``.

Answers: the raw text of ``<method>_response`` (or ``error_response``) is cut out of the body exactly as
received and verified **before** any field is read (in certificate mode ``alipay_cert_sn`` must name the
configured Alipay certificate). An answer that fails this -- bad signature, unknown certificate, not JSON,
HTTP status other than 200 -- raises :class:`ProviderUnavailable`: someone may be tampering, so the outcome is
unknown rather than a decline. An error answer with an empty ``sign`` (gateway errors) is kept but marked
unverified; :class:`~minigate.providers.alipay.codes.ErrorMapper` never turns it into a decline.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import httpx

from minigate.errors import ConfigurationError, ProviderUnavailable
from minigate.providers._http import send
from minigate.providers.alipay import signing
from minigate.providers.alipay.codes import PROVIDER, SUCCESS_CODE, AlipayError
from minigate.providers.alipay.config import AlipayConfig
from minigate.providers.alipay.schemas import compact_json

__all__ = ["USER_AGENT", "Answer", "OpenApi", "response_key"]

USER_AGENT = "minigate/0.1 (alipay-openapi)"


def response_key(method: str) -> str:
    """``alipay.trade.query`` -> ``alipay_trade_query_response``."""
    return method.replace(".", "_") + "_response"


@dataclass(frozen=True, slots=True)
class Answer:
    """A verified answer: the business object, and the error when ``code`` is not 10000."""

    method: str
    data: dict[str, Any]
    error: AlipayError | None = None


class OpenApi:
    """Signs requests and opens answers for one :class:`AlipayConfig` over an injected client."""

    def __init__(self, config: AlipayConfig, client: httpx.AsyncClient, *,
                 clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self.client = client
        self._clock = clock
        try:
            self._private_key = signing.load_private_key(config.app_private_key.get_secret_value())
        except (ValueError, TypeError) as exc:
            raise ConfigurationError("alipay app_private_key is not a readable RSA private key") from exc
        self.app_cert_sn: str | None = None
        self.alipay_root_cert_sn: str | None = None
        self.alipay_cert_sn: str | None = None
        try:
            if config.key_mode == "certificate":
                assert config.app_cert and config.alipay_cert and config.alipay_root_cert
                self.app_cert_sn = signing.cert_sn(config.app_cert)
                self.alipay_root_cert_sn = signing.root_cert_sn(config.alipay_root_cert)
                self.alipay_cert_sn = signing.cert_sn(config.alipay_cert)
                self.alipay_key = signing.load_public_key(config.alipay_cert)
            else:
                self.alipay_key = signing.load_public_key(config.alipay_public_key or "")
        except ValueError as exc:
            raise ConfigurationError("alipay public key or certificates are unreadable") from exc
        if config.encrypt_key is not None:
            try:
                signing.aes_encrypt(config.encrypt_key.get_secret_value(), "")
            except ValueError as exc:
                raise ConfigurationError("alipay encrypt_key is not Base64 of an AES key") from exc

    # ------------------------------------------------------------------ requests
    def params(self, method: str, biz: Mapping[str, Any] | None = None, *, notify_url: str | None = None,
               extra: Mapping[str, str] | None = None, timestamp: str | None = None) -> dict[str, str]:
        """The signed parameter set of one call (pure apart from the clock)."""
        cfg = self.config
        params: dict[str, str] = {
            "app_id": cfg.app_id, "method": method, "format": "JSON", "charset": cfg.charset,
            "sign_type": "RSA2", "timestamp": timestamp or signing.format_timestamp(self._clock()),
            "version": "1.0",
        }
        if notify_url:
            params["notify_url"] = notify_url
        if self.app_cert_sn and self.alipay_root_cert_sn:
            params["app_cert_sn"] = self.app_cert_sn
            params["alipay_root_cert_sn"] = self.alipay_root_cert_sn
        if biz is not None:
            content = compact_json(biz)
            if cfg.encrypt_key is not None:
                params["encrypt_type"] = "AES"
                content = signing.aes_encrypt(cfg.encrypt_key.get_secret_value(), content, cfg.charset)
            params["biz_content"] = content
        params.update(extra or {})
        params = {k: v for k, v in params.items() if v not in (None, "")}
        params["sign"] = signing.sign_params(self._private_key, params, cfg.charset)
        return params

    def build(self, method: str, biz: Mapping[str, Any] | None = None, *, notify_url: str | None = None,
              extra: Mapping[str, str] | None = None) -> httpx.Request:
        cfg = self.config
        params = self.params(method, biz, notify_url=notify_url, extra=extra)
        body = urlencode(params, encoding=cfg.charset).encode("ascii")
        timeout = httpx.Timeout(cfg.request_timeout_seconds)
        return httpx.Request("POST", cfg.base_url, content=body, extensions={"timeout": timeout.as_dict()},
                             headers={"Content-Type": f"application/x-www-form-urlencoded;charset={cfg.charset}",
                                      "Accept": "application/json", "User-Agent": USER_AGENT})

    # ------------------------------------------------------------------ answers
    def _unavailable(self, method: str, what: str, response: httpx.Response | None = None) -> ProviderUnavailable:
        return ProviderUnavailable(f"{PROVIDER}: {method}: {what}", provider=PROVIDER,
                                   http_status=response.status_code if response is not None else None)

    def open(self, response: httpx.Response, method: str) -> Answer:
        """Verify and decode an answer (see the module docstring). Never returns unverified success."""
        if response.status_code != 200:
            raise self._unavailable(method, f"HTTP {response.status_code}", response)
        try:
            text = response.content.decode(self.config.charset)
            document = json.loads(text)
        except (UnicodeDecodeError, ValueError) as exc:
            raise self._unavailable(method, "answer is not JSON", response) from exc
        if not isinstance(document, dict):
            raise self._unavailable(method, "answer is not a JSON object", response)
        key = response_key(method)
        if key not in document:
            if "error_response" not in document:
                raise self._unavailable(method, f"answer lacks {key}", response)
            key = "error_response"
        content = signing.extract_sign_content(text, key)
        if content is None:
            raise self._unavailable(method, "cannot locate the signed content", response)
        sign = document.get("sign")
        signed = isinstance(sign, str) and bool(sign)
        if signed:
            assert isinstance(sign, str)
            if self.alipay_cert_sn is not None and document.get("alipay_cert_sn") != self.alipay_cert_sn:
                # Alipay rotated its certificate: fetch it with alipay.open.app.alipaycert.download (§2.8) and
                # configure it; until then nothing from this answer can be trusted.
                raise self._unavailable(method, "answer signed by an unknown Alipay certificate", response)
            if not signing.rsa2_verify(self.alipay_key, content, sign, self.config.charset):
                raise self._unavailable(method, "answer signature does not verify", response)
        value = self._decode(method, content, signed=signed, response=response)
        code = value.get("code")
        if code == SUCCESS_CODE and signed and key != "error_response":
            return Answer(method, value)
        if code == SUCCESS_CODE:
            raise self._unavailable(method, "success answer without a valid signature", response)
        return Answer(method, value, AlipayError.of(value, verified=signed))

    def _decode(self, method: str, content: str, *, signed: bool, response: httpx.Response) -> dict[str, Any]:
        try:
            value = json.loads(content)
            if isinstance(value, str):  # AES mode: the signed content is the quoted ciphertext (§2.9)
                key = self.config.encrypt_key
                if key is None or not signed:
                    raise self._unavailable(method, "encrypted answer but no AES key / no signature", response)
                value = json.loads(signing.aes_decrypt(key.get_secret_value(), value, self.config.charset))
        except ValueError as exc:
            raise self._unavailable(method, "answer content does not decode", response) from exc
        if not isinstance(value, dict):
            raise self._unavailable(method, "answer content is not an object", response)
        return value

    async def call(self, method: str, biz: Mapping[str, Any] | None = None, *, notify_url: str | None = None,
                   extra: Mapping[str, str] | None = None) -> Answer:
        """Build, send, verify. Transport trouble raises :class:`~minigate.errors.OutcomeUnknown`."""
        request = self.build(method, biz, notify_url=notify_url, extra=extra)
        response = await send(self.client, request, provider=PROVIDER)
        return self.open(response, method)

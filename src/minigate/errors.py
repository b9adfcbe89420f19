"""Every exception minigate raises, in one tree.

    MinigateError
    ├── ConfigurationError            settings or credentials unusable (fail at start-up)
    ├── ProviderError                 something went wrong talking to a provider
    │   ├── OutcomeUnknown            the provider may or may not have acted: query before retrying
    │   │   ├── ProviderTimeout       no answer in time
    │   │   └── ProviderUnavailable   connection failed, 5xx, 429, or an unverifiable answer
    │   ├── ProviderMisconfigured     the provider refused our credentials or signature
    │   └── OperationNotSupported     the provider has no such operation
    ├── NotificationRejected          an inbound callback failed verification or validation
    └── ApiError                      a request to minigate's own API was refused (HTTP 4xx)
        ├── InvalidRequest            400/422: malformed or semantically invalid input
        ├── AuthenticationFailed      401
        ├── NotFound                  404 (includes another app's resources)
        ├── PermissionDenied          403: not allowed (e.g. marketing SMS without consent)
        ├── Conflict                  409: idempotency lock or state conflict
        ├── IdempotencyMismatch       422: key reused with another body
        ├── RateLimited               429: a limit refused it (retry_after, captcha_required)
        └── ServiceUnavailable        503: no provider could take it now

Declines (a provider saying "no" for a business reason) are *values*
(:class:`minigate.domain.results.ProviderResult` with ``ok=False``), never exceptions.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "ApiError",
    "AuthenticationFailed",
    "ConfigurationError",
    "Conflict",
    "IdempotencyMismatch",
    "InvalidRequest",
    "MinigateError",
    "NotFound",
    "NotificationRejected",
    "OperationNotSupported",
    "OutcomeUnknown",
    "PermissionDenied",
    "ProviderError",
    "ProviderMisconfigured",
    "ProviderTimeout",
    "ProviderUnavailable",
    "ProviderUnreachable",
    "RateLimited",
    "ServiceUnavailable",
]


class MinigateError(Exception):
    """Base of every minigate exception."""


class ConfigurationError(MinigateError):
    pass


class ProviderError(MinigateError):
    def __init__(
        self,
        message: str,
        *,
        provider: str,
        provider_code: str | None = None,
        request_id: str | None = None,
        http_status: int | None = None,
    ) -> None:
        super().__init__(message)
        self.provider = provider
        self.provider_code = provider_code
        self.request_id = request_id
        self.http_status = http_status


class OutcomeUnknown(ProviderError):
    """The call may have taken effect. Settle it by query or notification; never treat it as failed."""


class ProviderTimeout(OutcomeUnknown):
    pass


class ProviderUnavailable(OutcomeUnknown):
    pass


class ProviderUnreachable(ProviderUnavailable):
    """No connection could be made: the request never left this host, so the provider cannot have acted.

    Still an :class:`OutcomeUnknown` for callers that do not care; the SMS router uses the difference to
    fail over at once."""


class ProviderMisconfigured(ProviderError):
    pass


class OperationNotSupported(ProviderError):
    pass


class NotificationRejected(MinigateError):
    """A callback that must not change state. ``code`` is machine-readable, ``message`` is safe to log."""

    def __init__(self, code: str, message: str, *, http_status: int = 400, order_id: str | None = None,
                 details: dict[str, Any] | None = None) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.http_status = http_status
        #: set when the callback was matched to an order (e.g. an amount mismatch): kept with the record
        self.order_id = order_id
        self.details = details or {}


class ApiError(MinigateError):
    http_status = 400
    code = "invalid_request"

    def __init__(self, message: str, *, code: str | None = None, param: str | None = None,
                 details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.param = param
        self.details = details


class InvalidRequest(ApiError):
    http_status = 400
    code = "invalid_request"


class AuthenticationFailed(ApiError):
    http_status = 401
    code = "authentication_failed"


class NotFound(ApiError):
    http_status = 404
    code = "not_found"


class Conflict(ApiError):
    http_status = 409
    code = "conflict"


class IdempotencyMismatch(ApiError):
    http_status = 422
    code = "idempotency_key_reused"


class PermissionDenied(ApiError):
    """403: the request is well-formed but not allowed (e.g. marketing SMS without consent)."""

    http_status = 403
    code = "permission_denied"


class RateLimited(ApiError):
    """429: a limit refused the request; ``details`` carry ``retry_after`` and ``captcha_required``."""

    http_status = 429
    code = "rate_limited"


class ServiceUnavailable(ApiError):
    """503: no provider could take the request now (every one failed or is circuit-broken)."""

    http_status = 503
    code = "service_unavailable"

"""One error shape: ``{"error": {"type", "code", "message", "param"?, ...}}`` with a precise HTTP status."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from minigate.errors import ApiError, ConfigurationError, OutcomeUnknown, ProviderMisconfigured
from minigate.logging import get_logger

__all__ = ["error_body", "install"]

log = get_logger("minigate.api")


def error_body(type_: str, code: str, message: str, **extra: Any) -> dict[str, Any]:
    return {"error": {"type": type_, "code": code, "message": message,
                      **{k: v for k, v in extra.items() if v is not None}}}


#: the error object's own fields: a detail with one of these names is renamed, never allowed to replace it
_OWN_FIELDS = frozenset({"type", "type_", "code", "message", "param"})


def error_details(details: dict[str, Any] | None) -> dict[str, Any]:
    """An error's details as extra fields of its body; one named like a field of the body itself is kept as
    ``detail_<name>`` (an error answer must never turn into a 500 because of what it carries)."""
    return {(f"detail_{k}" if k in _OWN_FIELDS else k): v for k, v in (details or {}).items()}


#: the error answers of every /v1 operation (docs/errors.md), described in the OpenAPI document
ERROR_RESPONSES: dict[str, str] = {
    "400": "invalid request (parameter_invalid, invalid_json, amount_invalid, ...)",
    "401": "missing, invalid or disabled API key",
    "402": "the provider declined the operation (provider_declined)",
    "403": "not allowed (e.g. consent_required)",
    "404": "no such object for this app and mode (resource_missing), or no such route",
    "405": "wrong HTTP method",
    "409": "conflict (order_exists, order_already_paid, idempotency_key_in_use, ...)",
    "413": "body too large",
    "415": "body sent with a content type other than JSON",
    "422": "Idempotency-Key reused with a different request",
    "429": "a limit was reached",
    "500": "configuration_error or internal_error",
    "502": "the provider rejected minigate's credentials (provider_auth_failed)",
    "503": "outcome unknown or provider unavailable (retryable)",
}
ERROR_SCHEMA: dict[str, Any] = {
    "type": "object", "required": ["error"],
    "properties": {"error": {
        "type": "object", "required": ["type", "code", "message"],
        "properties": {"type": {"type": "string", "enum": ["invalid_request_error", "provider_error", "api_error"]},
                       "code": {"type": "string"}, "message": {"type": "string"},
                       "param": {"type": "string"}}}},
}


def _document_errors(app: FastAPI) -> None:
    """The OpenAPI document declares the one error shape and the statuses of docs/errors.md for each /v1
    operation, instead of FastAPI's default 422 ``HTTPValidationError`` (never sent: invalid input is a 400)."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        schema = generate()
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        if "Error" in components:
            return schema
        components.pop("HTTPValidationError", None)
        components.pop("ValidationError", None)
        components["Error"] = ERROR_SCHEMA
        error = {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
        for path, operations in schema.get("paths", {}).items():
            for operation in operations.values():
                responses = operation.setdefault("responses", {})
                responses.pop("422", None)
                if path.startswith("/v1/"):
                    for status, description in ERROR_RESPONSES.items():
                        responses[status] = {"description": description, **error}
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


def install(app: FastAPI) -> None:
    _document_errors(app)

    @app.exception_handler(ApiError)
    async def _api_error(_request: Request, exc: ApiError) -> JSONResponse:
        retry = (exc.details or {}).get("retry_after")
        return JSONResponse(error_body("invalid_request_error" if exc.http_status < 500 else "api_error",
                                       exc.code, exc.message, param=exc.param, **error_details(exc.details)),
                            status_code=exc.http_status,
                            headers={"Retry-After": str(int(retry))} if exc.http_status == 429 and retry else None)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        content_type = request.headers.get("content-type", "")
        if request.method in ("POST", "PUT", "PATCH") and content_type and "json" not in content_type:
            return JSONResponse(error_body("invalid_request_error", "unsupported_media_type",
                                           "send the body as JSON with Content-Type: application/json"),
                                status_code=415)
        first = exc.errors()[0] if exc.errors() else {}
        loc = [str(p) for p in first.get("loc", ()) if p not in ("body", "query", "path", "header")]
        code = "invalid_json" if first.get("type") == "json_invalid" else "parameter_invalid"
        message = first.get("msg", "invalid request")
        if loc:
            message = f"{'.'.join(loc)}: {message}"
        return JSONResponse(error_body("invalid_request_error", code, message, param=".".join(loc) or None),
                            status_code=400)

    @app.exception_handler(OutcomeUnknown)
    async def _unknown(_request: Request, exc: OutcomeUnknown) -> JSONResponse:
        log.warning("provider outcome unknown", provider=exc.provider, provider_code=exc.provider_code)
        return JSONResponse(error_body(
            "provider_error", "provider_unavailable",
            "the provider did not answer definitively; retry with the same Idempotency-Key (nothing is lost "
            "or doubled)", provider=exc.provider, retryable=True), status_code=503)

    @app.exception_handler(ProviderMisconfigured)
    async def _misconfigured(_request: Request, exc: ProviderMisconfigured) -> JSONResponse:
        log.error("provider refused our credentials", provider=exc.provider, provider_code=exc.provider_code)
        return JSONResponse(error_body("provider_error", "provider_auth_failed",
                                       "the provider refused the configured credentials", provider=exc.provider),
                            status_code=502)

    @app.exception_handler(ConfigurationError)
    async def _configuration(_request: Request, exc: ConfigurationError) -> JSONResponse:
        log.error("configuration error", reason=str(exc))
        return JSONResponse(error_body("api_error", "configuration_error",
                                       "the gateway's configuration for this request is unusable; see its log"),
                            status_code=500)

    @app.exception_handler(Exception)
    async def _unexpected(_request: Request, exc: Exception) -> JSONResponse:
        # the same shape as every other error; the detail goes to the (redacting) log, never to the caller
        log.error("unhandled error", error_type=type(exc).__name__, exc_info=exc)
        return JSONResponse(error_body("api_error", "internal_error", "an unexpected error; nothing was "
                                       "acknowledged: retry with the same Idempotency-Key"), status_code=500)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "route_not_found", 405: "method_not_allowed", 413: "body_too_large"}.get(
            exc.status_code, "http_error")
        return JSONResponse(error_body("invalid_request_error", code, str(exc.detail)),
                            status_code=exc.status_code)

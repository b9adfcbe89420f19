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


def install(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(_request: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse(error_body("invalid_request_error" if exc.http_status < 500 else "api_error",
                                       exc.code, exc.message, param=exc.param, **(exc.details or {})),
                            status_code=exc.http_status)

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

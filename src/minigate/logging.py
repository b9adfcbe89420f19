"""Structured logs (structlog) that never carry secrets or personal data.

Every event passes :func:`redact` before rendering: values under sensitive keys are replaced, and
free text is scrubbed of PEM blocks, bearer tokens, API keys, signatures, phone and ID numbers.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Mapping, MutableMapping
from typing import Any

import structlog

__all__ = ["configure_logging", "get_logger", "redact", "scrub_text"]

_SENSITIVE_KEYS = re.compile(
    r"(secret|password|passwd|private|apiv3|api_key|apikey|token|authorization|signature|sign$|^sign_|"
    r"session_key|master_key|openid|phone|mobile|id_card|id_number|name$|code$|otp|cookie|credential)",
    re.IGNORECASE,
)
_SAFE_KEYS = frozenset({"event", "level", "timestamp", "logger", "code_name", "error_code", "status_code",
                        "http_status", "provider_code", "app_name", "event_type", "kind", "name_space"})
_PATTERNS: list[tuple[re.Pattern[str], str]] = [
    (re.compile(r"-----BEGIN [A-Z ]+-----.*?-----END [A-Z ]+-----", re.S), "[pem]"),
    (re.compile(r"\bmg_(test|live|pub)_[A-Za-z0-9]+"), r"mg_\1_[redacted]"),
    (re.compile(r"\bwhsec_[A-Za-z0-9]+"), "whsec_[redacted]"),
    (re.compile(r"(?i)(bearer\s+)[A-Za-z0-9._~+/=-]+"), r"\1[redacted]"),
    (re.compile(r'(signature|paySign|sign)(["\']?\s*[=:]\s*["\']?)[A-Za-z0-9+/=]{16,}'), r"\1\2[redacted]"),
    (re.compile(r"(?<!\d)(?:\+?86)?1[3-9]\d{9}(?!\d)"), "[phone]"),
    (re.compile(r"(?<![0-9A-Za-z])\d{17}[\dXx](?![0-9A-Za-z])"), "[id-number]"),
]


def scrub_text(text: str) -> str:
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text


def _redact_value(key: str, value: Any) -> Any:
    if key not in _SAFE_KEYS and _SENSITIVE_KEYS.search(key):
        return "[redacted]"
    if isinstance(value, str):
        return scrub_text(value)
    if isinstance(value, Mapping):
        return {k: _redact_value(str(k), v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_redact_value(key, v) for v in value]
    return value


def redact(_logger: Any, _method: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """structlog processor: the last line of defence, applied to every event."""
    for key in list(event_dict):
        event_dict[key] = _redact_value(key, event_dict[key])
    return event_dict


class _Stderr:
    """Whatever ``sys.stderr`` is when a line is written (a test runner may swap and close its stream)."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


_STDERR = _Stderr()


def configure_logging(level: str = "INFO", *, json: bool = True, stream: Any = None) -> None:
    processors: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.format_exc_info,
        redact,
        structlog.processors.JSONRenderer(ensure_ascii=False) if json else structlog.dev.ConsoleRenderer(
            colors=False),
    ]
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        logger_factory=structlog.PrintLoggerFactory(file=stream or _STDERR),  # type: ignore[arg-type]
        cache_logger_on_first_use=False,
    )
    # httpx logs every request URL at INFO; some providers (Baidu) carry tokens and keys in the URL
    for noisy in ("httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def get_logger(name: str) -> Any:
    return structlog.get_logger(name)

"""Yunpian v2 answer codes -> :class:`StandardCode` declines, or exceptions when the outcome is unknown.

Yunpian answers every refusal with HTTP **400** and ``{"http_status_code":400,"code":<int>,"msg":…,"detail":…}``
(service-protocols.md §1.3; success is HTTP 200 with ``code`` 0). Rules, in this order:

1. ``-50`` 未知异常, ``-51`` 系统繁忙, ``-53`` 提交短信失败 -> raise :class:`ProviderUnavailable`: Yunpian's own
   failure, and nothing proves the message was not submitted. HTTP 5xx/429, timeouts and unreadable answers are
   handled before this table (provider).
2. Otherwise a decline value. Code ``2`` (参数格式错误) is refined by its ``detail``: a ``mobile`` problem is
   ``INVALID_PHONE``, a ``tpl_id``/``tpl_value`` problem ``TEMPLATE_REJECTED``, anything else ``INVALID_REQUEST``.
   Codes missing from the table -> ``DECLINED``.

The key refusals (``-1`` 非法的apikey, ``-2``, ``-3``) and the codes of Yunpian's unpublished signed mode (``18``
签名校验失败, ``19`` 请求已失效, ``21`` 解密失败) are ``AUTH_FAILED`` declines. Every mapping is data: pass your own
:class:`ErrorMapper` to the provider.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, NoReturn

from minigate.domain.results import ProviderResult, StandardCode
from minigate.errors import ProviderUnavailable
from minigate.phones import mask_phone

__all__ = ["CODES", "DEFAULT_ERROR_MAPPER", "MESSAGES", "PROVIDER", "SUCCESS_CODE", "ErrorMapper", "YunpianError"]

PROVIDER = "yunpian"
SUCCESS_CODE = 0

#: Yunpian's ``msg`` for each code (the simulator answers with these).
MESSAGES: Mapping[int, str] = {
    0: "发送成功",
    1: "请求参数缺失",
    2: "请求参数格式错误",
    3: "账户余额不足",
    4: "关键词屏蔽",
    5: "未找到匹配的模板",
    7: "模板不可用",
    8: "同一手机号30秒内重复提交相同的内容",
    9: "同一手机号5分钟内重复提交相同的内容超过3次",
    10: "手机号黑名单过滤",
    13: "您的营销短信已暂停发送",
    14: "解码失败",
    15: "签名不匹配",
    16: "签名格式不正确",
    17: "24小时内同一手机号发送次数超过限制",
    18: "签名校验失败",
    19: "请求已失效",
    20: "不支持的国家地区",
    21: "解密失败",
    22: "1小时内同一手机号发送次数超过限制",
    23: "号码归属地不在模板可发送的地区内",
    25: "手机号和内容个数不匹配",
    28: "运营商错误",
    -1: "非法的apikey",
    -2: "API没有权限",
    -3: "IP没有权限",
    -4: "访问次数超限",
    -5: "访问频率超限",
    -50: "未知异常",
    -51: "系统繁忙",
    -53: "提交短信失败",
}

CODES: Mapping[int, StandardCode] = {
    1: StandardCode.INVALID_REQUEST,
    2: StandardCode.INVALID_REQUEST,          # refined by detail, see ErrorMapper.classify
    3: StandardCode.INSUFFICIENT_BALANCE,
    4: StandardCode.CONTENT_REJECTED,
    5: StandardCode.TEMPLATE_REJECTED,
    7: StandardCode.TEMPLATE_REJECTED,
    8: StandardCode.RATE_LIMITED,
    9: StandardCode.RATE_LIMITED,
    10: StandardCode.INVALID_PHONE,
    13: StandardCode.DECLINED,
    14: StandardCode.INVALID_REQUEST,
    15: StandardCode.TEMPLATE_REJECTED,
    16: StandardCode.TEMPLATE_REJECTED,
    17: StandardCode.RATE_LIMITED,
    18: StandardCode.AUTH_FAILED,
    19: StandardCode.AUTH_FAILED,
    20: StandardCode.INVALID_PHONE,
    21: StandardCode.AUTH_FAILED,
    22: StandardCode.RATE_LIMITED,
    23: StandardCode.INVALID_PHONE,
    25: StandardCode.INVALID_REQUEST,
    28: StandardCode.DECLINED,
    -1: StandardCode.AUTH_FAILED,
    -2: StandardCode.AUTH_FAILED,
    -3: StandardCode.AUTH_FAILED,
    -4: StandardCode.RATE_LIMITED,
    -5: StandardCode.RATE_LIMITED,
}

_UNKNOWN_OUTCOME_CODES = frozenset({-50, -51, -53})
_LONG_NUMBER = re.compile(r"\+?\d{7,}")


def scrub(text: str | None) -> str | None:
    """Yunpian's texts with any phone-number-like digit run masked (details may quote the number)."""
    if not text:
        return text
    return _LONG_NUMBER.sub(lambda m: mask_phone(m.group(0)), text)


@dataclass(frozen=True, slots=True)
class YunpianError:
    """A decoded non-zero answer."""

    code: int
    msg: str | None = None
    detail: str | None = None
    http_status: int = 400

    @classmethod
    def of(cls, data: Mapping[str, Any], *, http_status: int) -> YunpianError | None:
        """The error in ``data``, or None when ``data`` has no integer ``code`` (not a Yunpian answer)."""
        raw = data.get("code")
        try:
            code = int(raw) if isinstance(raw, int | str) and not isinstance(raw, bool) else None
        except ValueError:
            code = None
        if code is None:
            return None

        def text(key: str) -> str | None:
            value = data.get(key)
            return value[:300] if isinstance(value, str) and value else None

        return cls(code=code, msg=text("msg"), detail=text("detail"), http_status=http_status)

    @property
    def message(self) -> str | None:
        parts = [p for p in dict.fromkeys((self.msg, self.detail)) if p]
        return scrub("; ".join(parts)) if parts else None


@dataclass(frozen=True, slots=True)
class ErrorMapper:
    """The code table; pass your own to :class:`~minigate.providers.yunpian.provider.YunpianProvider`."""

    codes: Mapping[int, StandardCode] = field(default_factory=lambda: dict(CODES))
    unknown_outcome_codes: frozenset[int] = _UNKNOWN_OUTCOME_CODES

    def raise_or_decline(self, err: YunpianError, *, op: str) -> ProviderResult[Any]:
        """Map a non-zero answer: a decline, or ProviderUnavailable when Yunpian may have acted."""
        if err.code in self.unknown_outcome_codes:
            _raise(err, op)
        return ProviderResult.decline(self.classify(err), provider_code=str(err.code), message=err.message)

    def classify(self, err: YunpianError) -> StandardCode:
        if err.code == 2:
            detail = (err.detail or "").lower()
            if "mobile" in detail or "手机号" in detail:
                return StandardCode.INVALID_PHONE
            if "tpl_" in detail or "模板" in detail:
                return StandardCode.TEMPLATE_REJECTED
        return self.codes.get(err.code, StandardCode.DECLINED)


def _raise(err: YunpianError, op: str) -> NoReturn:
    raise ProviderUnavailable(f"{PROVIDER}: {op}: code {err.code}: Yunpian failed, the outcome is unknown",
                              provider=PROVIDER, provider_code=str(err.code), http_status=err.http_status)


DEFAULT_ERROR_MAPPER = ErrorMapper()

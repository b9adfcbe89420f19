"""Pure SMS pieces: numbers, templates, settings, the circuit breaker and the rate limiter."""

from __future__ import annotations

import secrets
from collections import Counter
from typing import Any

import pytest

from minigate.domain.sms import DEFAULT_TEMPLATES
from minigate.phones import InvalidPhone, mask_phone, parse_phone
from minigate.services.limiter import Check, Limiter, per_hour, per_minute
from minigate.services.sms import Breaker
from minigate.services.sms_settings import SmsSettings
from tests.conftest import REDIS_URL


@pytest.mark.parametrize("raw", ["13800138000", "+8613800138000", "008613800138000", "8613800138000",
                                 "138 0013 8000", "138-0013-8000", "+86 138-0013-8000"])
def test_mainland_numbers_normalise_to_e164(raw: str) -> None:
    phone = parse_phone(raw)
    assert phone.e164 == "+8613800138000" and phone.is_mainland
    assert phone.prefix == "+861380013"
    assert str(phone) == repr(phone)[6:-1] == "+86138****8000"      # never the clear number by accident


@pytest.mark.parametrize("raw", ["12800138000", "1380013800", "138001380000", "+86123", "abc", "", "1" * 40,
                                 "+8612800138000"])
def test_bad_numbers_are_refused(raw: str) -> None:
    with pytest.raises(InvalidPhone) as info:
        parse_phone(raw)
    assert info.value.code == "invalid_phone"


def test_other_countries_only_when_allowed() -> None:
    with pytest.raises(InvalidPhone) as info:
        parse_phone("+85261234567")
    assert info.value.code == "country_not_allowed"
    assert parse_phone("+85261234567", allowed_country_codes={"86", "852"}).e164 == "+85261234567"
    assert parse_phone("+85261234567", allowed_country_codes=None).masked == "+852612*4567"
    assert mask_phone("13800138000") == "138****8000" and mask_phone("+8613800138000") == "+86138****8000"


def test_templates_list_their_variables_in_order_and_render() -> None:
    template = DEFAULT_TEMPLATES["order_shipped"]
    assert template.variables == ("order", "carrier", "tracking")
    assert template.render({"order": "A1", "carrier": "顺丰", "tracking": "SF1"}) == "您的订单A1已发货，顺丰运单号SF1。"
    assert {t.kind for t in DEFAULT_TEMPLATES.values()} == {"verification", "notice", "marketing"}
    assert DEFAULT_TEMPLATES["marketing_promo"].text.endswith("回TD退订")


def test_settings_defaults_are_the_b24_limits_and_plus86_only() -> None:
    settings = SmsSettings()
    assert (settings.limits.phone_per_minute, settings.limits.phone_per_hour, settings.limits.phone_per_day) == (1, 5, 10)
    assert settings.allowed_country_codes == ["86"] and settings.code_ttl_seconds == 300
    assert settings.max_code_attempts == 5
    with pytest.raises(ValueError, match="weight"):
        SmsSettings.model_validate({"providers": [{"provider": "yunpian", "weight": 0}]})
    with pytest.raises(ValueError, match="country calling code"):
        SmsSettings.model_validate({"allowed_country_codes": ["+852"]})
    with pytest.raises(ValueError, match="600"):
        SmsSettings.model_validate({"code_ttl_seconds": 3600})      # B-21: at most 10 minutes


def test_breaker_opens_after_consecutive_failures_and_half_opens(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = [1000.0]
    monkeypatch.setattr("minigate.services.sms.time.monotonic", lambda: clock[0])
    breaker = Breaker(failures=2, open_seconds=30)
    breaker.failure()
    assert breaker.allow() and breaker.state == "closed"
    breaker.failure()
    assert breaker.state == "open" and not breaker.allow()
    clock[0] += 30
    assert breaker.state == "half_open"
    assert breaker.allow() and not breaker.allow()      # one trial call only
    breaker.failure()                                    # the trial failed: open again
    assert breaker.state == "open"
    clock[0] += 30
    assert breaker.allow()
    breaker.success()
    assert breaker.state == "closed" and breaker.allow()


async def test_memory_limiter_refuses_without_counting_the_refusal() -> None:
    limiter = Limiter()
    checks = [Check("per_minute", per_minute(1), "k1"), Check("per_hour", per_hour(3), "k1")]
    first = await limiter.acquire(checks)
    assert first.allowed and first.remaining == {"per_minute": 0, "per_hour": 2}
    refused = await limiter.acquire(checks)
    assert not refused.allowed and refused.refused_by == "per_minute" and 1 <= (refused.retry_after or 0) <= 61
    stats = await limiter.strategy.get_window_stats(per_hour(3), "k1")
    assert stats.remaining == 2                          # the refused attempt consumed nothing
    assert (await limiter.acquire([Check("per_minute", per_minute(1), "k2")])).allowed


async def test_redis_limiter_is_shared_between_instances() -> None:
    assert REDIS_URL, "MINIGATE_TEST_REDIS_URL must point at a Redis (scripts/test.sh starts one)"
    key = f"unit:{secrets.token_hex(6)}"
    one, two = Limiter(REDIS_URL), Limiter(REDIS_URL)
    try:
        assert one.shared and two.shared
        assert (await one.acquire([Check("per_minute", per_minute(2), key)])).allowed
        assert (await two.acquire([Check("per_minute", per_minute(2), key)])).allowed
        verdict = await one.acquire([Check("per_minute", per_minute(2), key)])
        assert not verdict.allowed and verdict.refused_by == "per_minute"
    finally:
        await one.aclose()
        await two.aclose()


class _Names:
    """The one thing ``_routes`` asks the runtime: which providers have credentials."""

    def __init__(self, names: list[str]) -> None:
        self.names = names

    async def sms_provider_names(self, app_id: str, mode: str) -> list[str]:
        return list(self.names)


async def test_routes_follow_weights_then_list_order_and_skip_unconfigured() -> None:
    from minigate.services.apps import AppContext
    from minigate.services.sms import _routes

    rt: Any = _Names(["aliyun-sms", "tencentcloud", "yunpian"])
    ctx = AppContext("app_x", "test")
    assert await _routes(rt, ctx, SmsSettings()) == ["aliyun-sms", "tencentcloud", "yunpian"]
    backup_first = SmsSettings.model_validate({"providers": [
        {"provider": "yunpian", "weight": 0}, {"provider": "tencentcloud", "weight": 1}]})
    assert await _routes(rt, ctx, backup_first) == ["tencentcloud", "yunpian"]
    split = SmsSettings.model_validate({"providers": [
        {"provider": "aliyun-sms", "weight": 3}, {"provider": "tencentcloud", "weight": 1}]})
    firsts = Counter([(await _routes(rt, ctx, split))[0] for _ in range(400)])
    assert set(firsts) == {"aliyun-sms", "tencentcloud"} and 0.6 < firsts["aliyun-sms"] / 400 < 0.9
    rt.names = ["tencentcloud"]           # aliyun-sms has no credentials here
    assert await _routes(rt, ctx, split) == ["tencentcloud"]

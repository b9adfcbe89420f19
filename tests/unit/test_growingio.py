"""GrowingIO forwarder, pure parts: key mapping, attribute values, the exact collect request, and how every kind
of answer is read (success, declines, unknown outcomes)."""

from __future__ import annotations

import json

import httpx
import pytest
from pydantic import ValidationError

from minigate.domain.results import StandardCode
from minigate.errors import OutcomeUnknown, ProviderTimeout, ProviderUnavailable, ProviderUnreachable
from minigate.providers.bases.analytics import ForwardEvent
from minigate.providers.growingio.config import GrowingIOConfig, wire_key
from minigate.providers.growingio.provider import GrowingIOForwarder, attribute_value

ACCOUNT = "0a1b2c3d4e5f60718293a4b5c6d7e8f9"
SOURCE = "9f8e7d6c5b4a3921"
NOW = 1_764_000_000.123


def config(**overrides: object) -> GrowingIOConfig:
    return GrowingIOConfig(**{"account_id": ACCOUNT, "data_source_id": SOURCE,
                              "base_url": "https://collect.example.com/"} | overrides)


def forwarder(handler: object = None, **overrides: object) -> GrowingIOForwarder:
    transport = httpx.MockTransport(handler or (lambda req: httpx.Response(200, json={})))  # type: ignore[arg-type]
    return GrowingIOForwarder(config(**overrides), httpx.AsyncClient(transport=transport), clock=lambda: NOW)


PAGE = ForwardEvent(event_id="ev_1", name="$pageview", kind="page_view", user_key="dk_a1", logged_in=False,
                    ts_ms=1_763_999_999_000, page="/pages/goods/detail", platform="wechat",
                    properties={"sku": "A1", "from_share": True})
PAID = ForwardEvent(event_id="ev_2", name="$payment_verified", kind="server", user_key="uk_b2", logged_in=True,
                    ts_ms=1_763_999_999_500, platform="server", properties={"amount": 1234, "rate": 0.5})


# --------------------------------------------------------------------------- keys and values

@pytest.mark.parametrize(("name", "key"), [
    ("$pageview", "mg_pageview"),
    ("$payment_verified", "mg_payment_verified"),
    ("add_to_cart", "add_to_cart"),
    ("a-b.c d", "a_b_c_d"),
    ("1st_visit", "_1st_visit"),
    ("", "_"),
    ("加购", "__"),
    ("x" * 150, "x" * 100),
])
def test_wire_key_follows_growingios_key_rule(name: str, key: str) -> None:
    assert wire_key(name, mapping={}, prefix="mg_") == key


def test_an_explicit_mapping_and_another_prefix_win() -> None:
    assert wire_key("$pageview", mapping={"$pageview": "page_view"}, prefix="mg_") == "page_view"
    assert wire_key("$pageview", mapping={}, prefix="minigate_") == "minigate_pageview"


@pytest.mark.parametrize(("value", "text"), [(True, "true"), (False, "false"), (2, "2"), (12.5, "12.5"),
                                             ("张三", "张三"), ("x" * 1200, "x" * 1000)])
def test_attribute_values_are_strings_of_at_most_1000_characters(value: object, text: str) -> None:
    assert attribute_value(value) == text  # type: ignore[arg-type]


# --------------------------------------------------------------------------- the request

def test_the_collect_request_is_exactly_the_server_sdks() -> None:
    request = forwarder().build_forward([PAGE, PAID])
    assert request.method == "POST"
    assert str(request.url) == f"https://collect.example.com/v3/projects/{ACCOUNT}/collect?stm=1764000000123"
    assert request.headers["content-type"] == "application/json"
    assert json.loads(request.content) == [
        {"eventType": "CUSTOM", "eventName": "mg_pageview", "deviceId": "dk_a1", "timestamp": 1_763_999_999_000,
         "dataSourceId": SOURCE, "attributes": {"sku": "A1", "from_share": "true", "page": "/pages/goods/detail",
                                                "mg_event_id": "ev_1"}},
        {"eventType": "CUSTOM", "eventName": "mg_payment_verified", "userId": "uk_b2",
         "timestamp": 1_763_999_999_500, "dataSourceId": SOURCE,
         "attributes": {"amount": "1234", "rate": "0.5", "mg_event_id": "ev_2"}},
    ]


def test_a_logged_in_event_has_the_php_sdks_fields_and_no_others() -> None:
    """growingio-php-sdk ``CustomEvent``: timestamp, eventName, userId, attributes, eventType, dataSourceId (nulls
    dropped; resourceItem only for items)."""
    wire = forwarder().wire_event(PAID)
    assert set(wire) == {"timestamp", "eventName", "userId", "attributes", "eventType", "dataSourceId"}
    assert set(forwarder().wire_event(PAGE)) == {"timestamp", "eventName", "deviceId", "attributes", "eventType",
                                                 "dataSourceId"}


def test_attributes_follow_the_configuration() -> None:
    fwd = forwarder(event_names={"$pageview": "page_view"}, attribute_names={"sku": "goods_sku"},
                    page_attribute="page_path", event_id_attribute=None, platform_attribute="platform")
    wire = fwd.wire_event(PAGE)
    assert wire["eventName"] == "page_view"
    assert wire["attributes"] == {"goods_sku": "A1", "from_share": "true", "page_path": "/pages/goods/detail",
                                  "platform": "wechat"}
    odd = ForwardEvent(event_id="ev_3", name="checkout", kind="event", user_key="dk", logged_in=False, ts_ms=1,
                       properties={"$coupon": "C1", "金额": 5})
    assert forwarder().wire_event(odd)["attributes"] == {"mg_coupon": "C1", "__": "5", "mg_event_id": "ev_3"}


# --------------------------------------------------------------------------- answers

@pytest.mark.parametrize("status", [200, 201, 204])
def test_any_2xx_is_success_with_the_number_of_events(status: int) -> None:
    result = GrowingIOForwarder.parse_forward(httpx.Response(status, content=b""), 7)
    assert result.ok and result.value == 7


@pytest.mark.parametrize(("status", "code"), [
    (404, StandardCode.AUTH_FAILED), (401, StandardCode.AUTH_FAILED), (403, StandardCode.AUTH_FAILED),
    (429, StandardCode.RATE_LIMITED), (400, StandardCode.INVALID_REQUEST), (413, StandardCode.INVALID_REQUEST),
    (422, StandardCode.INVALID_REQUEST),
])
def test_refusals_are_declines(status: int, code: StandardCode) -> None:
    result = GrowingIOForwarder.parse_forward(httpx.Response(status, json={"message": "project not found"}), 3)
    assert not result.ok and result.code is code and result.provider_code == str(status)
    assert result.message == "project not found"
    html = GrowingIOForwarder.parse_forward(httpx.Response(status, text="<html>nope</html>"), 3)
    assert html.code is code and html.message == f"HTTP {status}"


@pytest.mark.parametrize("status", [500, 502, 503, 504, 302, 101])
def test_5xx_and_odd_statuses_are_unknown_outcomes(status: int) -> None:
    with pytest.raises(ProviderUnavailable) as caught:
        GrowingIOForwarder.parse_forward(httpx.Response(status), 1)
    assert caught.value.http_status == status and caught.value.provider == "growingio"


async def test_an_empty_batch_sends_nothing_and_a_large_one_is_refused() -> None:
    sent: list[httpx.Request] = []
    fwd = forwarder(lambda req: sent.append(req) or httpx.Response(200, json={}))
    result = await fwd.forward([])
    assert result.ok and result.value == 0 and sent == []
    with pytest.raises(ValueError, match="at most 100"):
        await fwd.forward([PAGE] * 101)
    assert sent == []
    full = await fwd.forward([PAGE] * 100)
    assert full.ok and full.value == 100 and len(sent) == 1


@pytest.mark.parametrize(("error", "raised"), [
    (httpx.ReadTimeout("slow"), ProviderTimeout), (httpx.ConnectError("refused"), ProviderUnreachable),
    (httpx.RemoteProtocolError("cut"), ProviderUnavailable),
])
async def test_transport_failures_are_unknown_outcomes(error: Exception, raised: type[Exception]) -> None:
    def fail(request: httpx.Request) -> httpx.Response:
        raise error

    with pytest.raises(raised) as caught:
        await forwarder(fail).forward([PAGE])
    assert isinstance(caught.value, OutcomeUnknown)


# --------------------------------------------------------------------------- configuration

def test_configuration_is_checked() -> None:
    with pytest.raises(ValidationError, match="not GrowingIO keys"):
        config(event_names={"$pageview": "page-view"})
    with pytest.raises(ValidationError, match="GrowingIO key"):
        config(page_attribute="1page")
    with pytest.raises(ValidationError):
        config(api_key="x")
    with pytest.raises(ValidationError):
        config(account_id="a/b")
    assert config().problems() == []
    assert config(account_id="abc", base_url="http://collect.example.com").problems() == [
        "account_id should be the 16 or 32 characters of the project ID (项目 ID)",
        "base_url must be https:// in live mode"]
    assert config(account_id="0123456789abcdef").problems() == []

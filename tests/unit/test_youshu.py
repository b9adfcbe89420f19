"""Youshu forwarder, pure parts: the safe-report signature (published vector Y1), the exact signed request, how
events become behaviour items, and how every kind of answer is read."""

from __future__ import annotations

import hashlib
import hmac
import json
from urllib.parse import parse_qsl, urlsplit

import httpx
import pytest
from pydantic import ValidationError

from minigate.domain.results import StandardCode
from minigate.errors import OutcomeUnknown, ProviderTimeout, ProviderUnavailable
from minigate.providers.bases.analytics import ForwardEvent
from minigate.providers.youshu import signing
from minigate.providers.youshu.codes import ErrorMapper
from minigate.providers.youshu.config import YoushuConfig
from minigate.providers.youshu.provider import YoushuForwarder

Y1_CON_STR = "app_id=abc&nonce=407313d23c3f7&sign=sha256&timestamp=1542951251"
Y1_SIGNATURE = "6e54c38c7e9c382a5295c3885503fa4a9ee37cabc884350d84973fc1b843126d"
SECRET = "5ecret-of-the-data-source-000001"
NONCE = "0123456789abcdef0123456789abcdef"


# --------------------------------------------------------------------------- the signature

def test_vector_y1_con_str_and_signature() -> None:
    assert signing.con_str(app_id="abc", nonce="407313d23c3f7", timestamp=1542951251) == Y1_CON_STR
    assert signing.signature(app_secret="xyz", app_id="abc", nonce="407313d23c3f7",
                             timestamp="1542951251") == Y1_SIGNATURE
    # the doc's prose says sha256(conStr); its published value is the HMAC, not that
    assert hashlib.sha256(Y1_CON_STR.encode()).hexdigest().startswith("6e5b1bb3")


def test_verify_is_exact_but_case_insensitive() -> None:
    args = {"app_secret": "xyz", "app_id": "abc", "nonce": "407313d23c3f7", "timestamp": 1542951251}
    assert signing.verify(Y1_SIGNATURE, **args)  # type: ignore[arg-type]
    assert signing.verify(Y1_SIGNATURE.upper(), **args)  # type: ignore[arg-type]
    assert not signing.verify(Y1_SIGNATURE[:-1] + "e", **args)  # type: ignore[arg-type]
    assert not signing.verify(Y1_SIGNATURE, **(args | {"timestamp": 1542951252}))  # type: ignore[arg-type]
    assert not signing.verify(Y1_SIGNATURE, **(args | {"app_secret": "xy"}))  # type: ignore[arg-type]


def test_nonces_are_32_random_hex_characters() -> None:
    nonces = {signing.new_nonce() for _ in range(50)}
    assert len(nonces) == 50
    assert all(len(n) == 32 and int(n, 16) >= 0 for n in nonces)


def test_signed_query_order_and_values() -> None:
    query = signing.signed_query(app_id="abc", app_secret="xyz", nonce="407313d23c3f7", clock=lambda: 1542951251.9)
    assert query == (("app_id", "abc"), ("nonce", "407313d23c3f7"), ("timestamp", "1542951251"), ("sign", "sha256"),
                     ("signature", Y1_SIGNATURE))


# --------------------------------------------------------------------------- the request

def config(**overrides: object) -> YoushuConfig:
    return YoushuConfig(**{"app_id": "bi0123456789abcdef", "app_secret": SECRET,
                           "base_url": "https://zhls.example.com"} | overrides)


def forwarder(handler: object = None, **overrides: object) -> YoushuForwarder:
    transport = httpx.MockTransport(handler or (lambda req: httpx.Response(200, json={"code": 0, "msg": "ok"})))  # type: ignore[arg-type]
    return YoushuForwarder(config(**overrides), httpx.AsyncClient(transport=transport), clock=lambda: 1_764_000_000.7,
                           nonce=lambda: NONCE)


PAGE = ForwardEvent(event_id="ev_1", name="$pageview", kind="page_view", user_key="dk_a1", logged_in=False,
                    ts_ms=1_763_999_999_000, page="/pages/goods/detail", platform="wechat",
                    properties={"scene": 1037, "sku": "A1"})
CART = ForwardEvent(event_id="ev_2", name="add_to_cart", kind="event", user_key="uk_b2", logged_in=True,
                    ts_ms=1_763_999_999_500, page="pages/goods/detail",
                    properties={"qty": 2, "time": "evening", "$coupon": "C1", "gift": False})


def test_the_signed_request_is_exactly_youshus() -> None:
    request = forwarder().build_forward([PAGE, CART])
    url = urlsplit(str(request.url))
    assert (url.scheme, url.netloc, url.path) == ("https", "zhls.example.com", "/api/v1/safe-report")
    con = f"app_id=bi0123456789abcdef&nonce={NONCE}&sign=sha256&timestamp=1764000000"
    expected_sig = hmac.new(SECRET.encode(), con.encode(), hashlib.sha256).hexdigest()
    assert parse_qsl(url.query) == [("app_id", "bi0123456789abcdef"), ("nonce", NONCE), ("timestamp", "1764000000"),
                                    ("sign", "sha256"), ("signature", expected_sig)]
    assert request.headers["content-type"] == "application/json"
    assert json.loads(request.content) == [
        {"type": "browse_wxapp_page", "from": "sr-sdk-wxapp", "tracking_id": "ev_1",
         "props": {"sku": "A1", "time": 1_763_999_999_000, "wx_user": {"local_id": "dk_a1"},
                   "page": "pages/goods/detail", "chan": {"chan_wxapp_scene": 1037}}},
        {"type": "add_to_cart", "from": "sr-sdk-wxapp", "tracking_id": "ev_2",
         "props": {"qty": 2, "mg_time": "evening", "mg_coupon": "C1", "gift": False, "time": 1_763_999_999_500,
                   "wx_user": {"user_id": "uk_b2"}, "page": "pages/goods/detail"}},
    ]


def test_the_secret_is_never_on_the_wire() -> None:
    request = forwarder().build_forward([PAGE, CART])
    assert SECRET not in str(request.url) and SECRET.encode() not in request.content
    assert all(SECRET not in value for value in request.headers.values())


def test_items_follow_the_configuration() -> None:
    fwd = forwarder(source="minigate-shop", wxapp_id="wx0123456789abcdef", custom_event_type="custom",
                    custom_event_name_prop="event_key", event_names={"add_to_cart": "cart_add"},
                    logged_in_user_fields=("user_id", "open_id"), anonymous_user_fields=("local_id",),
                    scene_property=None, name_prefix="x_")
    cart, page = fwd.wire_item(CART), fwd.wire_item(PAGE)
    assert cart["type"] == "custom" and cart["from"] == "minigate-shop"
    assert cart["props"]["event_key"] == "cart_add" and cart["props"]["x_time"] == "evening"
    assert cart["props"]["wx_user"] == {"app_id": "wx0123456789abcdef", "user_id": "uk_b2", "open_id": "uk_b2"}
    assert page["type"] == "browse_wxapp_page" and "event_key" not in page["props"]
    assert page["props"]["scene"] == 1037 and "chan" not in page["props"]
    paid = ForwardEvent(event_id="ev_3", name="$payment_verified", kind="server", user_key="uk", logged_in=True,
                        ts_ms=5, properties={"scene": "not-a-number"})
    item = forwarder().wire_item(paid)
    assert item["type"] == "mg_payment_verified" and item["props"] == {"scene": "not-a-number", "time": 5,
                                                                        "wx_user": {"user_id": "uk"}}
    assert forwarder().wire_name(paid) == "mg_payment_verified" and forwarder().wire_name(PAGE) == "browse_wxapp_page"


# --------------------------------------------------------------------------- answers

def parse(status: int, body: object = None, *, mapper: ErrorMapper | None = None) -> object:
    fwd = forwarder() if mapper is None else YoushuForwarder(config(), httpx.AsyncClient(), error_mapper=mapper)
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return fwd.parse_forward(httpx.Response(status, content=content), 4)


def test_code_zero_is_success() -> None:
    result = parse(200, {"code": 0, "msg": "success"})
    assert result.ok and result.value == 4  # type: ignore[attr-defined]


@pytest.mark.parametrize(("status", "body", "code", "provider_code"), [
    (200, {"code": 40003, "msg": "signature mismatch"}, StandardCode.AUTH_FAILED, "40003"),
    (200, {"code": 40002, "msg": "unknown app_id"}, StandardCode.AUTH_FAILED, "40002"),
    (200, {"code": "40004", "msg": "timestamp expired"}, StandardCode.AUTH_FAILED, "40004"),
    (200, {"code": 40008, "msg": "invalid body"}, StandardCode.INVALID_REQUEST, "40008"),
    (400, {"code": 40001, "msg": "missing parameter"}, StandardCode.INVALID_REQUEST, "40001"),
    (200, {"code": 42900, "msg": "too many requests"}, StandardCode.RATE_LIMITED, "42900"),
    (200, {"code": 12345, "msg": "something else"}, StandardCode.DECLINED, "12345"),
    (429, None, StandardCode.RATE_LIMITED, "429"),
    (401, b"<html>denied</html>", StandardCode.AUTH_FAILED, "401"),
    (403, b"", StandardCode.AUTH_FAILED, "403"),
    (400, b"bad", StandardCode.INVALID_REQUEST, "400"),
])
def test_refusals_are_declines(status: int, body: object, code: StandardCode, provider_code: str) -> None:
    result = parse(status, body)
    assert not result.ok and result.code is code and result.provider_code == provider_code  # type: ignore[attr-defined]


def test_the_code_table_is_data() -> None:
    mapper = ErrorMapper(codes={12345: StandardCode.RATE_LIMITED}, unknown_outcome_codes=frozenset({40008}))
    assert parse(200, {"code": 12345, "msg": "x"}, mapper=mapper).code is StandardCode.RATE_LIMITED  # type: ignore[attr-defined]
    with pytest.raises(ProviderUnavailable):
        parse(200, {"code": 40008, "msg": "x"}, mapper=mapper)


@pytest.mark.parametrize(("status", "body"), [
    (200, {"code": 50000, "msg": "internal error"}), (500, {"code": 0}), (502, b""), (504, b"<html/>"),
    (200, b"not json"), (200, {"msg": "no code"}), (200, [1, 2]), (200, {"code": True}), (302, b""),
    (400, {"code": 0, "msg": "odd"}),
])
def test_lost_or_unverifiable_answers_are_unknown_outcomes(status: int, body: object) -> None:
    with pytest.raises(ProviderUnavailable):
        parse(status, body)


async def test_an_empty_batch_sends_nothing_and_a_large_one_is_refused() -> None:
    sent: list[httpx.Request] = []
    fwd = forwarder(lambda req: sent.append(req) or httpx.Response(200, json={"code": 0, "msg": "ok"}))
    assert (await fwd.forward([])).value == 0 and sent == []
    with pytest.raises(ValueError, match="at most 100"):
        await fwd.forward([PAGE] * 101)
    assert sent == []
    assert (await fwd.forward([PAGE] * 100)).value == 100 and len(sent) == 1


async def test_a_timeout_is_an_unknown_outcome() -> None:
    def slow(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("slow")

    with pytest.raises(ProviderTimeout) as caught:
        await forwarder(slow).forward([PAGE])
    assert isinstance(caught.value, OutcomeUnknown)


# --------------------------------------------------------------------------- configuration

def test_configuration_is_checked_and_hides_the_secret() -> None:
    cfg = config()
    assert SECRET not in repr(cfg) and SECRET not in str(cfg.model_dump())
    with pytest.raises(ValidationError, match="wx_user field"):
        config(logged_in_user_fields=("phone",))
    with pytest.raises(ValidationError):
        config(anonymous_user_fields=())
    with pytest.raises(ValidationError):
        config(sign="md5")
    assert config(wxapp_id="wx0123456789abcdef").problems() == []
    assert config(app_secret="", base_url="http://zhls.example.com").problems() == [
        "app_secret is empty", "base_url must be https:// in live mode",
        "wxapp_id (the mini-program's AppID) is not set: Youshu marks wx_user.app_id required"]

"""The batch validator: shape, limits, clock correction and the personal-data rule (pure code)."""

from __future__ import annotations

from typing import Any

import pytest

from minigate.analytics.ingest import BatchError, Limits, find_personal_data, parse_batch

NOW = 1_800_000_000_000


def ev(**over: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"id": "evt-00000001", "type": "event", "name": "view_product", "ts": NOW - 1000,
                            "distinct_id": "dev-1", "properties": {"sku": "A1"}}
    base.update(over)
    return base


def parse(events: list[Any], limits: Limits | None = None, **body: Any) -> Any:
    return parse_batch({"sent_at": NOW, "events": events, **body}, app_id="app_1", mode="test",
                       received_ms=NOW, limits=limits or Limits())


def test_a_good_event_becomes_a_journal_record() -> None:
    parsed = parse([ev(user_id="u-1", page="pages/a/a", properties={"order_id": "ord_1", "n": 2, "ok": True})],
                   context={"platform": "alipay"})
    assert parsed.rejected == []
    assert parsed.records == [{
        "event_id": "evt-00000001", "name": "view_product", "kind": "event", "distinct_id": "dev-1",
        "user_id": "u-1", "session_id": None, "page": "pages/a/a", "order_id": "ord_1",
        "properties": {"order_id": "ord_1", "n": 2, "ok": True}, "app_id": "app_1", "mode": "test",
        "ts": NOW - 1000, "received_at": NOW, "platform": "alipay"}]


def test_page_views_are_named_by_default() -> None:
    [record] = parse([ev(type="page_view", name=None, page="pages/x/x")]).records
    assert record["name"] == "$pageview" and record["kind"] == "page_view"


@pytest.mark.parametrize("body, param", [
    ([], None), ({"events": []}, "events"), ({"events": "x"}, "events"),
    ({"events": [{}] * 501}, "events"), ({"events": [{}], "sent_at": "now"}, "sent_at"),
    ({"events": [{}], "context": []}, "context"), ({"events": [{}], "context": {"platform": "ios"}}, "context.platform"),
])
def test_what_is_not_a_batch(body: Any, param: str | None) -> None:
    with pytest.raises(BatchError) as err:
        parse_batch(body, app_id="a", mode="test", received_ms=NOW, limits=Limits())
    assert err.value.param == param


@pytest.mark.parametrize("event, code", [
    ("x", "invalid_event"), (ev(id="short"), "invalid_event"), (ev(type="click"), "invalid_event"),
    (ev(name="9lives"), "invalid_event_name"), (ev(name="a" * 101), "invalid_event_name"),
    (ev(ts="yesterday"), "invalid_event"), (ev(ts=True), "invalid_event"), (ev(distinct_id=""), "invalid_event"),
    (ev(distinct_id="a b"), "invalid_event"), (ev(user_id=5), "invalid_event"), (ev(session_id="s" * 65), "invalid_event"),
    (ev(page=3), "invalid_event"), (ev(properties=[1]), "invalid_properties"),
    (ev(properties={f"k{i}": i for i in range(51)}), "invalid_properties"),
    (ev(properties={"bad key": 1}), "invalid_properties"), (ev(properties={"k": [1]}), "invalid_properties"),
    (ev(properties={"k": "v" * 1001}), "invalid_properties"),
    (ev(ts=NOW - 31 * 86_400_000), "event_too_old"),
])
def test_each_bad_event_has_its_code(event: Any, code: str) -> None:
    parsed = parse([ev(id="evt-good-0001"), event])
    assert [r["event_id"] for r in parsed.records] == ["evt-good-0001"]
    assert [(r["index"], r["code"]) for r in parsed.rejected] == [(1, code)]


def test_clock_offset_moves_every_event_and_future_is_clamped() -> None:
    skewed = parse([ev(ts=NOW - 7_200_000 - 500), ev(id="evt-00000002", ts=NOW)], sent_at=NOW - 7_200_000)
    assert skewed.clock_offset_ms == 7_200_000
    assert [r["ts"] for r in skewed.records] == [NOW - 500, NOW]     # the second would be 2 h ahead: clamped
    fast = parse([ev(ts=NOW + 600_000)], sent_at=NOW + 600_000)       # phone 10 min ahead
    assert fast.records[0]["ts"] == NOW
    unsent = parse_batch({"events": [ev(ts=NOW + 3_600_000)]}, app_id="a", mode="t", received_ms=NOW,
                         limits=Limits())
    assert unsent.records[0]["ts"] == NOW                            # no sent_at: only the future clamp applies


@pytest.mark.parametrize("value, kind", [
    ("13812345678", "phone"), ("+86 138 1234 5678", "phone"), ("call 8613812345678 now", "phone"),
    ("11010519491231002X", "id_number"), ("id:440524188001010014.", "id_number"),
    ("110105194912310021", None),          # wrong check character: not an ID number
    ("12812345678", None), ("order 138123456789", None), ("A1", None),
])
def test_personal_data_detection(value: str, kind: str | None) -> None:
    assert find_personal_data(value) == kind


def test_personal_data_rejected_by_default_and_dropped_on_request() -> None:
    events = [ev(properties={"手机号": "x"}), ev(id="evt-00000002", properties={"note": "13812345678"}),
              ev(id="evt-00000003", user_id="13812345678"), ev(id="evt-00000004", distinct_id="13812345678"),
              ev(id="evt-00000005", properties={"Real_Name": "x", "plan": "gold"}),
              ev(id="evt-00000006", page="pages/u?mobile=13812345678")]
    rejected = parse(events)
    assert [r["code"] for r in rejected.rejected] == ["pii_in_properties", "pii_in_properties", "pii_in_user_id",
                                                      "pii_in_user_id", "pii_in_properties", "pii_in_properties"]
    dropped = parse(events, Limits(personal_data="drop"))
    # a device id that is a phone number cannot be dropped without losing the event's identity: refused anyway
    assert [r["code"] for r in dropped.rejected] == ["pii_in_user_id"]
    assert [(r["properties"], r["user_id"], r["page"]) for r in dropped.records] == [
        ({}, None, None), ({}, None, None), ({"sku": "A1"}, None, None), ({"plan": "gold"}, None, None),
        ({"sku": "A1"}, None, None)]
    assert dropped.dropped_fields == 5


def test_an_app_can_name_more_personal_keys() -> None:
    limits = Limits(personal_keys=frozenset({"wechatnick"}))
    assert parse([ev(properties={"wechat_nick": "x"})], limits).rejected[0]["code"] == "pii_in_properties"
    assert parse([ev(properties={"wechat_nick": "x"})]).rejected == []


@pytest.mark.parametrize("value", [
    "18586460814fbe902208fb6c8efc5fa4",      # a random hex device id that happens to hold 11 digits
    "SKU13812345678X", "u-1381234567890", "a13812345678",
])
def test_ids_and_codes_that_merely_contain_digits_are_not_personal_data(value: str) -> None:
    parsed = parse([ev(distinct_id=value, user_id=value, properties={"ref": value})])
    assert parsed.rejected == [] and parsed.records[0]["user_id"] == value

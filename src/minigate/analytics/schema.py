"""The analytics store's tables (DuckDB SQL; the ClickHouse equivalents are in docs/analytics.md).

``events`` holds every accepted event, one row each, appended in load order (``seq``). Times are UTC
``TIMESTAMP`` (naive): ``ts`` is the event time corrected for the client's clock, ``received_at`` when the
gateway took it. ``distinct_id`` is the device's anonymous id, ``user_id`` the app's own login id once the SDK
bound it; a person is ``user_id`` when any event of the device carried one, else ``distinct_id`` (see
``queries.PERSONS``). ``order_id`` is copied out of ``properties.order_id`` so the payment funnel can join events
to the ledger without parsing JSON. ``properties`` is a JSON object of strings, numbers and booleans.

``external_metrics`` holds numbers pulled from third parties (WeChat datacube, Umeng+), one row per
(source, app, mode, metric, date, dimension, key); a re-pull of a day replaces that day's rows.

``loaded_segments`` names every journal segment already loaded, written in the same transaction as its rows,
so a crash between loading a segment and deleting its file never loads it twice.
"""

from __future__ import annotations

__all__ = ["DDL", "EVENT_COLUMNS", "JOURNAL_COLUMNS"]

#: column -> DuckDB type, in table order (``seq`` is assigned by the loader)
EVENT_COLUMNS: dict[str, str] = {
    "seq": "BIGINT",
    "app_id": "VARCHAR",
    "mode": "VARCHAR",
    "event_id": "VARCHAR",
    "name": "VARCHAR",
    "kind": "VARCHAR",
    "distinct_id": "VARCHAR",
    "user_id": "VARCHAR",
    "session_id": "VARCHAR",
    "ts": "TIMESTAMP",
    "received_at": "TIMESTAMP",
    "page": "VARCHAR",
    "platform": "VARCHAR",
    "order_id": "VARCHAR",
    "properties": "JSON",
}

#: what one journal line carries (every event column but ``seq``; times as epoch milliseconds)
JOURNAL_COLUMNS: dict[str, str] = {
    "app_id": "VARCHAR", "mode": "VARCHAR", "event_id": "VARCHAR", "name": "VARCHAR", "kind": "VARCHAR",
    "distinct_id": "VARCHAR", "user_id": "VARCHAR", "session_id": "VARCHAR", "ts": "BIGINT",
    "received_at": "BIGINT", "page": "VARCHAR", "platform": "VARCHAR", "order_id": "VARCHAR", "properties": "JSON",
}

DDL: tuple[str, ...] = (
    "CREATE TABLE IF NOT EXISTS events ("
    + ", ".join(f"{name} {type_}" for name, type_ in EVENT_COLUMNS.items()) + ")",
    "CREATE TABLE IF NOT EXISTS external_metrics (source VARCHAR, app_id VARCHAR, mode VARCHAR, metric VARCHAR, "
    "ref_date DATE, dimension VARCHAR, key VARCHAR, value DOUBLE, pulled_at TIMESTAMP)",
    "CREATE TABLE IF NOT EXISTS loaded_segments (name VARCHAR PRIMARY KEY, events BIGINT, loaded_at TIMESTAMP)",
)

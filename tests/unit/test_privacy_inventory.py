"""C-1: every column that may hold personal information is declared in the data inventory."""

from __future__ import annotations

import json

from sqlalchemy import Column, MetaData, String, Table
from typer.testing import CliRunner

from minigate.cli import app as cli
from minigate.privacy import INVENTORY, undeclared_columns
from minigate.store.tables import Base


def test_every_personal_column_is_declared() -> None:
    assert undeclared_columns(Base.metadata) == []
    tables = {t.name: {c.name for c in t.columns} for t in Base.metadata.sorted_tables}
    for field in INVENTORY:                       # and the inventory names only real columns
        assert field.column in tables.get(field.table, set()), f"{field.table}.{field.column} does not exist"


def test_a_new_undeclared_personal_column_fails() -> None:
    extra = MetaData()
    Table("customers", extra, Column("id", String), Column("email", String), Column("mobile_phone", String))
    assert undeclared_columns(extra) == ["customers.email", "customers.mobile_phone"]


def test_cli_prints_the_inventory() -> None:
    result = CliRunner().invoke(cli, ["privacy", "inventory", "--json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.output)
    assert {(r["table"], r["column"]) for r in rows} == {(f.table, f.column) for f in INVENTORY}
    assert {r["data_class"] for r in rows} == {"pi", "sensitive_pi", "pseudonymous"}

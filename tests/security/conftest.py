"""The attack suites count what they tried; the totals are printed at the end of the run (`make test` shows
how many cases each suite tried)."""

from __future__ import annotations

from collections import Counter
from typing import Any

#: suite name -> number of attack cases tried (requests sent, routes probed, lines scanned, …)
TRIED: Counter[str] = Counter()


def record(suite: str, n: int = 1) -> None:
    TRIED[suite] += n


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not TRIED:
        return
    terminalreporter.section("attacks tried (tests/security)")
    for suite, n in sorted(TRIED.items()):
        terminalreporter.write_line(f"{suite}: {n}")

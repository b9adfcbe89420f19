"""Fixtures shared by the real-process tests: every process started is killed, also on failure."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.harness import Processes, Receiver, ThreadedServer


@pytest.fixture
def procs(tmp_path: Path) -> Iterator[Processes]:
    processes = Processes(tmp_path / "run")
    yield processes
    processes.kill_all()


@pytest.fixture
def receiver() -> Iterator[tuple[Receiver, ThreadedServer]]:
    rec = Receiver()
    server = ThreadedServer(rec.app)
    server.start()
    yield rec, server
    server.stop()

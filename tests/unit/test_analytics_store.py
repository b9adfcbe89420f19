"""The journal and the loader: group commit, exactly-once loading, orphaned and torn segments, locks."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from minigate.analytics.store import AnalyticsStore, StoreBusy, journal_line

NOW = int(time.time() * 1000)


def line(i: int, *, app: str = "app_1", event_id: str | None = None) -> bytes:
    return journal_line({"app_id": app, "mode": "test", "event_id": event_id or f"evt-{i:08d}", "name": "e",
                         "kind": "event", "distinct_id": f"d{i % 7}", "user_id": None, "session_id": None,
                         "ts": NOW + i, "received_at": NOW, "page": None, "platform": "wechat", "order_id": None,
                         "properties": {"i": i}})


def count(store: AnalyticsStore) -> int:
    row = store.read_sync(lambda con: con.execute("SELECT count(*) FROM events").fetchone())
    return int(row[0])


async def test_concurrent_appends_share_fsyncs_and_all_land_once(tmp_path: Path, monkeypatch: Any) -> None:
    store = AnalyticsStore(tmp_path)
    fsyncs = 0
    real = os.fsync

    def counting(fd: int) -> None:
        nonlocal fsyncs
        fsyncs += 1
        real(fd)

    monkeypatch.setattr(os, "fsync", counting)
    await asyncio.gather(*(store.append([line(j * 10 + k) for k in range(10)]) for j in range(200)))
    assert fsyncs < 200          # 200 concurrent requests, far fewer fsyncs: group commit
    assert await store.flush() == 2000
    assert count(store) == 2000
    seqs = store.read_sync(lambda con: con.execute("SELECT min(seq), max(seq), count(DISTINCT seq) FROM events")
                           .fetchone())
    assert seqs == (1, 2000, 2000)
    assert list(store.journal_dir.iterdir()) == []


async def test_duplicates_within_and_across_loads_are_dropped(tmp_path: Path) -> None:
    store = AnalyticsStore(tmp_path)
    await store.append([line(1), line(1), line(2)])
    assert await store.flush() == 2
    await store.append([line(2), line(3)])
    assert await store.flush() == 1
    # the same id in another app is another event
    await store.append([line(3, app="app_2")])
    assert await store.flush() == 1
    assert count(store) == 4


async def test_a_segment_already_loaded_is_never_loaded_again(tmp_path: Path) -> None:
    store = AnalyticsStore(tmp_path)
    await store.append([line(1), line(2)])
    await store.flush()
    # a crash after the commit, before the file was deleted: the file is back, with ids that are new too
    name = store.read_sync(lambda con: con.execute("SELECT name FROM loaded_segments").fetchone())[0]
    (store.journal_dir / name).write_bytes(line(1) + b"\n" + line(99, event_id="evt-never-seen") + b"\n")
    assert await store.load() == 0
    assert count(store) == 2 and not (store.journal_dir / name).exists()


async def test_an_orphaned_segment_is_loaded_without_its_torn_tail(tmp_path: Path) -> None:
    store = AnalyticsStore(tmp_path)
    # a gateway process on this host died mid-write: its pid no longer exists
    dead = (await asyncio.to_thread(subprocess.run, [sys.executable, "-c", "import os; print(os.getpid())"],
                                    capture_output=True, text=True, check=True)).stdout.strip()
    orphan = store.journal_dir / f"{socket.gethostname()}-{dead}-1-00000001.open"
    orphan.write_bytes(line(1) + b"\n" + line(2) + b"\n" + b'{"app_id": "app_1", "mode": "te')
    assert await store.load() == 2
    assert count(store) == 2 and list(store.journal_dir.iterdir()) == []


async def test_a_live_processes_open_segment_is_left_alone(tmp_path: Path) -> None:
    store = AnalyticsStore(tmp_path)
    other = store.journal_dir / f"{socket.gethostname()}-{os.getppid()}-1-00000001.open"
    other.write_bytes(line(1) + b"\n")
    assert await store.load() == 0 and other.exists()
    old = time.time() - 3600                      # but one untouched for long is taken (another host's crash)
    os.utime(other, (old, old))
    assert await store.load() == 1


async def test_segments_rotate_by_size_and_age(tmp_path: Path) -> None:
    store = AnalyticsStore(tmp_path, segment_bytes=2000, segment_seconds=3600)
    for i in range(20):
        await store.append([line(i)])
    sealed = list(store.journal_dir.glob("*.ndjson"))
    assert len(sealed) >= 2                       # ~200 bytes a line: several sealed segments
    by_tick = await store.tick()                  # the sealed ones; the open one is not due yet
    assert 0 < by_tick < 20
    assert by_tick + await store.flush() == 20
    assert count(store) == 20


async def test_readers_wait_for_the_writer_and_give_up_loudly(tmp_path: Path) -> None:
    store = AnalyticsStore(tmp_path, lock_timeout=0.2)
    await store.append([line(1)])
    await store.flush()
    with store._locked(exclusive=True):
        with pytest.raises(StoreBusy):
            store.read_sync(lambda con: con.execute("SELECT 1").fetchone())
    assert count(store) == 1


async def test_another_process_can_read_while_this_one_appends(tmp_path: Path) -> None:
    store = AnalyticsStore(tmp_path)
    await store.append([line(i) for i in range(10)])
    await store.flush()
    code = ("import sys; from pathlib import Path; from minigate.analytics.store import AnalyticsStore;"
            "s = AnalyticsStore(Path(sys.argv[1]));"
            "print(s.read_sync(lambda c: c.execute('SELECT count(*) FROM events').fetchone()[0]))")
    await store.append([line(i) for i in range(10, 20)])      # journalled, not loaded yet
    out = await asyncio.to_thread(subprocess.run, [sys.executable, "-c", code, str(tmp_path)], capture_output=True,
                                  text=True, check=True)
    assert json.loads(out.stdout) == 10
    await store.flush()
    out = await asyncio.to_thread(subprocess.run, [sys.executable, "-c", code, str(tmp_path)], capture_output=True,
                                  text=True, check=True)
    assert json.loads(out.stdout) == 20

"""Official provider SDKs against ``minigate sandbox serve --only <provider>`` running as a real process."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def sandbox_process(provider: str, state_dir: Path) -> Iterator[str]:
    """Start one simulator at the root path on a free loopback port; yield its base URL; stop it."""
    port = free_port()
    command = [sys.executable, "-m", "minigate.cli", "sandbox", "serve", "--only", provider,
               "--host", "127.0.0.1", "--port", str(port), "--state-dir", str(state_dir)]
    proc = subprocess.Popen(command, env=os.environ | {"MINIGATE_SANDBOX_TIME_SCALE": "0.001"},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, proc.communicate()[1].decode()
            try:
                if httpx.get(base + "/_sandbox/faults", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "sandbox did not start"
            time.sleep(0.1)
        yield base
    finally:
        proc.terminate()
        try:
            proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()

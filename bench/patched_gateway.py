"""``minigate serve`` with proposed hot-path fixes applied as monkeypatches, to measure them before they land.

Nothing in ``src/`` is changed. Run a scenario against it with::

    BENCH_GATEWAY_WRAPPER=".venv/bin/python bench/patched_gateway.py" BENCH_PATCHES=specs \
        .venv/bin/python -m bench checkout --db sqlite --system minigate

Patches (comma-separated in ``BENCH_PATCHES``):

- ``specs``: cache ``minigate.providers.registry.payment_specs()`` (today it rescans every installed
  distribution's entry points on every call: ~2.2 ms CPU and ~5 ms of blocked event loop, 2 calls per
  order and 2 per notification).
"""

from __future__ import annotations

import functools
import os
import sys

patches = {p for p in os.environ.get("BENCH_PATCHES", "").split(",") if p}
if "specs" in patches:
    from minigate.providers import registry

    registry.payment_specs = functools.cache(registry.payment_specs)  # type: ignore[assignment]

sys.argv = ["minigate", "serve"]
from minigate.cli import main  # noqa: E402

main()

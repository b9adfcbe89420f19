"""The simulation in CI: a fixed set of seeds on SQLite and PostgreSQL, every invariant after every step.

Each seed's report (orders, faults injected per kind, notifications, invariant checks, violations) is written to
the terminal whatever ``-s`` says, so the CI log shows it. Long runs: ``make simulate SEEDS=n``.
"""

from __future__ import annotations

import pytest

from tests.conftest import Gateway
from tests.simulation.harness import Report, fresh_gateway, run_seed

#: chosen so the simulation adds well under a minute to ``make test`` (both backends)
CI_SEEDS = (1, 2, 3)
CI_STEPS = 80
DETERMINISM_SEED, DETERMINISM_STEPS = 4, 60


def show(capsys: pytest.CaptureFixture[str], text: str) -> None:
    with capsys.disabled():
        print("\n" + text)


@pytest.mark.parametrize("seed", CI_SEEDS)
async def test_simulation(gateway: Gateway, seed: int, capsys: pytest.CaptureFixture[str]) -> None:
    report = await run_seed(gateway, seed, steps=CI_STEPS)
    show(capsys, report.render())
    assert report.orders["created"] > 0 and sum(report.faults.values()) > 0
    assert sum(report.checks.values()) > 1000
    assert report.violations == [], report.render()


async def test_same_seed_same_steps_same_report(tmp_path, sandbox_dir, capsys: pytest.CaptureFixture[str]) -> None:
    """Two runs of one seed on two fresh gateways: the same steps and the same report."""
    reports: list[Report] = []
    for run in range(2):
        url = f"sqlite+aiosqlite:///{tmp_path / f'run{run}.db'}"
        async with fresh_gateway(url, tmp_path / f"data{run}", sandbox_dir) as gw:
            reports.append(await run_seed(gw, DETERMINISM_SEED, steps=DETERMINISM_STEPS))
    first, second = reports
    show(capsys, f"determinism: seed {DETERMINISM_SEED} twice -> steps {first.step_digest[:12]} / "
                 f"{second.step_digest[:12]}, {sum(first.checks.values())} / {sum(second.checks.values())} checks")
    assert first.step_digest == second.step_digest
    assert first.deterministic() == second.deterministic()


"""The real layer of the chaos campaign, small: lease_guard candidates as processes behind
fault-injecting proxies, one schedule with every fault kind (API-server restart included).

The full side-by-side run with client-go is ``python -m tests.reliability.real`` (nox -s chaos).
"""

from __future__ import annotations

import random
from typing import TYPE_CHECKING

import pytest

from tests.reliability import real

if TYPE_CHECKING:  # mypy names the file by its path (tests/ is a package); pytest imports it as top-level
    from tests.integration import kube_harness
else:
    import kube_harness  # on sys.path: conftest.py puts it there


@pytest.mark.parametrize(
    "lease_guard_args",
    [[], ["--shared-watch-from", "1"]],
    ids=["a watch of its own", "the namespace's shared watch"],
)
async def test_lease_guard_survives_every_fault_kind(
    restartable_kube: kube_harness.KubeServer, lease_guard_args: list[str]
) -> None:
    rng = random.Random(7)

    def schedules(n: int) -> list[real.Fault] | None:
        return real.covering_schedule(rng, 3, ["lease-guard"]) if n == 0 else None

    report = await real.run_campaign(
        restartable_kube, impls=["lease-guard"], schedules=schedules, candidates=3, lease_guard_args=lease_guard_args
    )
    table = real.summary(report)
    result = report.results["lease-guard"]
    assert result.schedules == 1, table
    assert set(result.faults) == set(real.KINDS), table  # every kind was injected (on a live candidate)
    assert result.overlap_pairs == 0, table
    assert result.liveness_failures == 0, table
    assert not result.unclosed, table
    assert not result.lease_flags, table
    assert result.takeovers["all"], table  # leadership did move under the faults

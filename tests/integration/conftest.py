"""Fixtures for the integration tests against a real kube-apiserver.

See kube_harness.py. All tests in this folder get the `integration` marker;
deselect them with `-m "not integration"`.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))  # works with any --import-mode

if TYPE_CHECKING:  # mypy names the file by its path (tests/ is a package); pytest imports it as top-level
    from tests.integration import kube_harness
else:
    import kube_harness

_HERE = Path(__file__).resolve().parent


def _in_ci() -> bool:
    return os.environ.get("CI", "").lower() not in ("", "0", "false", "no")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "integration: needs a real kube-apiserver (tests/integration/kube_harness.py)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if _HERE in Path(str(item.fspath)).resolve().parents:
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def kube() -> Iterator[kube_harness.KubeServer]:
    """A running kube-apiserver with namespace, least-privilege RBAC and kubeconfigs."""
    gen = kube_harness.kube_server()
    problem: str | None = None
    try:
        server = next(gen)
    except kube_harness.HarnessUnavailable as e:
        problem = f"integration harness unavailable: {e}"
    except kube_harness.HarnessBuildError as e:
        problem = f"{e}\n({kube_harness.ENABLE_HINT})"
    if problem is not None:  # outside `except`: no chained traceback
        if _in_ci():
            pytest.fail(problem, pytrace=False)
        pytest.skip(problem)
    try:
        yield server
    finally:
        gen.close()  # runs the generator's finally: kill processes, remove temp dir


@pytest.fixture
def restartable_kube(kube: kube_harness.KubeServer) -> kube_harness.KubeServer:
    """`kube`, skipping the test if the API server can't be stopped/started
    (LEASE_GUARD_KUBECONFIG). Use this rather than skipping inside a trio test:
    a skip raised inside trio loses its message."""
    if not kube.can_restart:
        pytest.skip("needs the local harness: stop/start of the API server is unavailable with LEASE_GUARD_KUBECONFIG")
    return kube

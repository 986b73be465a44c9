"""Fixtures for the integration tests against a real kube-apiserver.

See kube_harness.py. All tests in this folder get the `integration` marker;
deselect them with `-m "not integration"`.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))  # works with any --import-mode

import kube_harness
from kube_harness import HarnessBuildError, HarnessUnavailable, KubeServer

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
def kube() -> KubeServer:
    """A running kube-apiserver with namespace, least-privilege RBAC and kubeconfigs."""
    gen = kube_harness.kube_server()
    problem = None
    try:
        server = next(gen)
    except HarnessUnavailable as e:
        problem = f"integration harness unavailable: {e}"
    except HarnessBuildError as e:
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
def restartable_kube(kube: KubeServer) -> KubeServer:
    """`kube`, skipping the test if the API server can't be stopped/started
    (LEASE_GUARD_KUBECONFIG). Use this rather than skipping inside a trio test:
    a skip raised inside trio loses its message."""
    if not kube.can_restart:
        pytest.skip("needs the local harness: stop/start of the API server is unavailable with LEASE_GUARD_KUBECONFIG")
    return kube

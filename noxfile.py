"""Developer tasks. Plain ``nox`` runs what CI runs: tests (unit and integration), lint, typecheck."""

from __future__ import annotations

import nox

nox.options.sessions = ["tests", "lint", "typecheck"]
nox.options.reuse_existing_virtualenvs = True

SOURCES = ["lease_guard", "tests", "examples", "benchmarks", "noxfile.py"]


@nox.session
def tests(session: nox.Session) -> None:
    """Unit, property and integration tests (the integration tests build a real kube-apiserver)."""
    session.install("-e", ".[test]")
    session.run("pytest", *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    """ruff: lint and formatting."""
    session.install("ruff")
    session.run("ruff", "check", *SOURCES)
    session.run("ruff", "format", "--check", *SOURCES)


@nox.session
def chaos(session: nox.Session) -> None:
    """Bounded chaos campaign (under 10 minutes): thousands of deterministic fault schedules, then
    the real layer (candidate processes of lease_guard and client-go behind fault-injecting proxies,
    real kube-apiserver; needs Go), each with a summary table."""
    session.install("-e", ".[test]")
    session.run("python", "-m", "tests.reliability.campaign", "--schedules", "1000", "--seed", "1")
    session.run("pytest", "tests/reliability", "-q", env={"HYPOTHESIS_PROFILE": "chaos"})
    session.run(
        "python", "-m", "tests.reliability.real", "--minutes", "5", "--seed", "1", "--impl", "lease-guard,client-go"
    )


@nox.session
def bench(session: nox.Session) -> None:
    """Benchmarks beside client-go, the official Python client and kube-leader-election on a real
    kube-apiserver; writes BENCHMARKS.md and benchmarks/results/. Needs Go and cargo.
    ``nox -s bench -- --quick`` takes about 10 minutes; the full run hours."""
    session.install("-e", ".[test]", "matplotlib>=3.8")
    session.run("python", "benchmarks/run.py", *session.posargs)


@nox.session
def docs(session: nox.Session) -> None:
    """The API reference, generated from the docstrings into docs/_build/api."""
    session.install("-e", ".[cli,metrics]", "pdoc")
    modules = ["lease_guard", "lease_guard.stores", "lease_guard.testing", "lease_guard.health"]
    session.run("pdoc", *modules, "lease_guard.metrics", "lease_guard.cli", "-o", "docs/_build/api")


@nox.session
def typecheck(session: nox.Session) -> None:
    """mypy --strict over the package, tests and examples."""
    session.install("-e", ".[test]", "mypy", "nox", "types-PyYAML")
    session.run("mypy", "--strict", *session.posargs)

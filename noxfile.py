"""Developer tasks. Plain ``nox`` runs what CI runs: tests (unit and integration), lint, typecheck."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import nox

nox.options.sessions = ["tests", "lint", "typecheck"]
nox.options.reuse_existing_virtualenvs = True

SOURCES = ["lease_guard", "tests", "examples", "benchmarks", "noxfile.py"]

#: The modules that hold the safety rules, mutated by ``nox -s mutants`` (those that exist).
MUTATED_MODULES = [
    "lease_guard/_lease_view.py",
    "lease_guard/_tenure.py",
    "lease_guard/_campaign.py",
    "lease_guard/_job.py",
]
#: What in tests/ does not exercise MUTATED_MODULES as unit tests (real servers, campaigns,
#: the stores' own tests, the docs and examples run as programs): left out of mutation runs.
NOT_UNIT_TESTS = [
    "integration",
    "reliability",
    "apiserver",
    "stores",
    "test_docs.py",
    "test_examples.py",
    "test_bench_render.py",  # loads benchmarks/run.py, which the mutants copy leaves out
]


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


@nox.session
def mutants(session: nox.Session) -> None:
    """Mutation testing (mutmut) of MUTATED_MODULES against the unit tests, in a copy of the
    sources under .nox/mutants/tmp (mutmut rewrites what it mutates). Lists the surviving
    mutants at the end; ``mutmut show NAME`` there shows one. Every mutant runs only the tests
    that cover its function, forked from one warm process, as many at once as there are CPUs
    (694 mutants of the pre-rewrite _campaign.py: about 17 minutes on 2 cores).
    ``nox -s mutants -- 'lease_guard._campaign.x_release*'`` runs the mutants of one function."""
    session.install("-e", ".[test]", "mutmut>=3.8")
    modules = [module for module in MUTATED_MODULES if Path(module).exists()]
    if not modules:
        session.error(f"none of {MUTATED_MODULES} exists")
    work = Path(session.create_tmp()) / "mutants-src"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir()
    shutil.copytree("lease_guard", work / "lease_guard")
    shutil.copytree("tests", work / "tests", ignore=shutil.ignore_patterns(*NOT_UNIT_TESTS))
    shutil.copy("pyproject.toml", work / "pyproject.toml")
    (work / "setup.cfg").write_text(
        "[mutmut]\nsource_paths = lease_guard\n"
        + _cfg_list("only_mutate", modules)
        + _cfg_list("pytest_add_cli_args_test_selection", ["tests"])
        + _cfg_list("pytest_add_cli_args", ["-m", "not integration", "-p", "no:cacheprovider"])
    )
    with session.chdir(work):
        session.run("mutmut", "run", "--max-children", str(os.cpu_count() or 1), *session.posargs)
        session.run("mutmut", "export-cicd-stats")
        session.run("mutmut", "results")
        session.log(f"counts: {work / 'mutants' / 'mutmut-cicd-stats.json'}")


def _cfg_list(key: str, values: list[str]) -> str:
    """A setup.cfg list option: one value a line."""
    return f"{key} =\n" + "".join(f"    {value}\n" for value in values)

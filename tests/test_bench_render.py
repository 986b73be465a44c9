"""benchmarks/run.py rewrites only the generated region of BENCHMARKS.md (merge_report: pure, no server)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

RUN_PY = Path(__file__).resolve().parents[1] / "benchmarks" / "run.py"


def _load_run() -> ModuleType:
    # benchmarks/ is not a package: load run.py by path, as its own module, without running main().
    spec = importlib.util.spec_from_file_location("lease_guard_bench_run", RUN_PY)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    saved = list(sys.path)
    try:
        spec.loader.exec_module(module)
    finally:
        sys.path[:] = saved  # run.py puts tests/integration on sys.path for its own imports
    return module


run = _load_run()
BEGIN: str = run.GENERATED_BEGIN
END: str = run.GENERATED_END


def merge(existing: str | None, generated: str) -> str:
    out: str = run.merge_report(existing, generated)
    return out


def test_only_the_region_between_the_markers_is_replaced() -> None:
    existing = (
        "# lease_guard benchmarks\n\n## Recorded by hand\n\nfigures people wrote\n\n"
        f"{BEGIN}\n\n## old tables\n\nold\n\n{END}\n\n## Also by hand, after\n\nmore\n"
    )
    out = merge(existing, "## new tables\n\nnew\n")
    assert out == (
        "# lease_guard benchmarks\n\n## Recorded by hand\n\nfigures people wrote\n\n"
        f"{BEGIN}\n\n## new tables\n\nnew\n\n{END}\n\n## Also by hand, after\n\nmore\n"
    )


def test_rendering_twice_gives_the_same_file() -> None:
    existing = f"# t\n\nby hand\n\n{BEGIN}\n\nold\n\n{END}\n"
    once = merge(existing, "new")
    assert merge(once, "new") == once


def test_a_file_without_markers_keeps_everything_and_gets_the_region_appended() -> None:
    existing = "# lease_guard benchmarks\n\n## Recorded by hand\n\nkeep me\n"
    out = merge(existing, "generated")
    assert out.startswith(existing.rstrip())
    assert out.endswith(f"{BEGIN}\n\ngenerated\n\n{END}\n")
    assert merge(out, "again") == f"{existing.rstrip()}\n\n{BEGIN}\n\nagain\n\n{END}\n"


@pytest.mark.parametrize("existing", [None, "", "\n  \n"])
def test_no_file_becomes_the_title_and_the_region(existing: str | None) -> None:
    assert merge(existing, "tables") == f"{run.REPORT_TITLE}\n\n{BEGIN}\n\ntables\n\n{END}\n"


@pytest.mark.parametrize(
    "existing",
    [
        f"by hand\n{BEGIN}\nold\n",  # no end
        f"by hand\n{END}\nold\n",  # no begin
        f"{END}\nold\n{BEGIN}\n",  # out of order
        f"{BEGIN}\na\n{END}\n{BEGIN}\nb\n{END}\n",  # two regions
    ],
)
def test_markers_that_do_not_make_one_region_are_refused(existing: str) -> None:
    with pytest.raises(ValueError, match="markers"):
        merge(existing, "new")


def test_the_committed_report_has_one_generated_region() -> None:
    report = (RUN_PY.parents[1] / "BENCHMARKS.md").read_text()
    assert report.count(BEGIN) == report.count(END) == 1
    out = merge(report, "replaced")
    assert out.startswith(report.partition(BEGIN)[0])
    assert out.endswith(report.partition(END)[2])


@pytest.mark.parametrize("partial", [True, False])
def test_a_partial_run_writes_its_results_but_leaves_the_report_alone(
    partial: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    report = tmp_path / "BENCHMARKS.md"
    report.write_text(f"# by hand\n\n{BEGIN}\nold tables\n{END}\n")
    monkeypatch.setattr(run, "REPO", tmp_path)
    monkeypatch.setattr(run, "render", lambda res, name: "new tables\n")
    monkeypatch.setattr(run, "charts", lambda res, stem: [])
    monkeypatch.setattr(run, "check_targets", lambda res: [])
    monkeypatch.setattr(run, "print_table", lambda res: None)
    results = tmp_path / "results-x.json"
    run.finish({"impls": []}, results, partial=partial)
    assert results.exists()
    assert ("old tables" in report.read_text()) is partial
    assert ("new tables" in report.read_text()) is not partial


def test_scale_results_of_several_runs_merge_with_the_later_run_winning_for_the_same_k() -> None:
    first = {"scale": {"10": {"cpu_ms_per_renewal": 1.3}, "1000": {"cpu_ms_per_renewal": 1.7}}, "scale_client_go": {}}
    second = {"scale": {"1000": {"cpu_ms_per_renewal": 1.2}}, "scale_client_go": {"1000": {"cpu_ms_per_renewal": 0.4}}}
    third: dict[str, Any] = {"latency": {}}  # a run without scale results adds nothing
    assert run.merge_scale([first, second, third]) == {
        "scale": {"10": {"cpu_ms_per_renewal": 1.3}, "1000": {"cpu_ms_per_renewal": 1.2}},
        "scale_client_go": {"1000": {"cpu_ms_per_renewal": 0.4}},
    }

"""The runnable examples, run as a user runs them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"

UNREACHABLE = """
apiVersion: v1
kind: Config
current-context: nowhere
clusters: [{name: nowhere, cluster: {server: "https://127.0.0.1:9", insecure-skip-tls-verify: true}}]
users: [{name: nowhere, user: {token: unused}}]
contexts: [{name: nowhere, context: {cluster: nowhere, user: nowhere}}]
"""


def run_example(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=120)


def test_structured_app_hands_over_on_the_in_memory_store() -> None:
    done = run_example(str(EXAMPLES / "structured_app.py"))
    assert done.returncode == 0, done.stderr
    assert "replica-a: reconciling (fencing token 0)" in done.stdout
    assert "replica-b: reconciling (fencing token 1)" in done.stdout


def test_structured_app_exits_non_zero_when_the_cluster_is_unreachable(tmp_path: Path) -> None:
    kubeconfig = tmp_path / "config"
    kubeconfig.write_text(UNREACHABLE)
    done = run_example(str(EXAMPLES / "structured_app.py"), "--kubeconfig", str(kubeconfig))
    assert done.returncode == 1
    assert "reconciling" not in done.stdout
    assert done.stderr.strip().endswith(
        "no replica led before its shutdown: is the cluster reachable, and is RBAC in place?"
    )


def test_periodic_job_runs_each_tick_on_one_replica() -> None:
    done = run_example(str(EXAMPLES / "periodic_job.py"))
    assert done.returncode == 0, done.stderr
    ran = [line for line in done.stdout.splitlines() if "removed 42 rows" in line]
    skipped = [line for line in done.stdout.splitlines() if "skipped" in line]
    assert (len(ran), len(skipped)) == (4, 4), done.stdout


def test_fencing_token_refuses_the_late_write_of_an_old_term() -> None:
    done = run_example(str(EXAMPLES / "fencing_token.py"))
    assert done.returncode == 0, done.stderr
    assert "refused: term 0 < 1: a newer leader exists" in done.stdout

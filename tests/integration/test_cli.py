"""The lease-guard CLI against the real API server, as a shell user runs it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import yaml
from click.testing import CliRunner
from lightkube.models.coordination_v1 import LeaseSpec
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.coordination_v1 import Lease

from lease_guard.cli import EXIT_LEADERSHIP_LOST, main

if TYPE_CHECKING:
    from tests.integration.kube_harness import KubeServer


def cli(kube: KubeServer, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, ["--kubeconfig", str(kube.admin_kubeconfig), "-n", kube.namespace, *args])
    return result.exit_code, result.output


def put_lease(kube: KubeServer, name: str, holder: str, transitions: int = 4) -> None:
    with kube.sync_admin_client() as client:
        lease = Lease(
            metadata=ObjectMeta(name=name, namespace=kube.namespace),
            spec=LeaseSpec(holderIdentity=holder, leaseDurationSeconds=60, leaseTransitions=transitions),
        )
        try:
            client.create(lease)
        except Exception:
            current = client.get(Lease, name, namespace=kube.namespace)
            assert current.metadata is not None
            lease.metadata.resourceVersion = current.metadata.resourceVersion  # type: ignore[union-attr]
            client.replace(lease)


def holder_of(kube: KubeServer, name: str) -> str | None:
    with kube.sync_admin_client() as client:
        spec = client.get(Lease, name, namespace=kube.namespace).spec
        return spec.holderIdentity if spec else None


def test_status_shows_holder_and_term(kube: KubeServer) -> None:
    put_lease(kube, "cli-status", "replica-7", transitions=4)
    code, output = cli(kube, "status", "cli-status", "--json")
    assert code == 0, output
    info = json.loads(output)
    assert (info["holder"], info["term"], info["lease_duration_seconds"]) == ("replica-7", 4, 60)
    code, output = cli(kube, "status", "cli-status")
    assert code == 0
    assert "HOLDER      replica-7" in output


def test_status_of_a_missing_lease_says_so(kube: KubeServer) -> None:
    code, output = cli(kube, "status", "no-such-lease")
    assert code == 1
    assert output == (
        f"lease-guard: error: lease {kube.namespace}/no-such-lease does not exist: "
        "check the name and the namespace (-n)\n"
    )


def test_cluster_options_after_the_subcommand_and_output_formats(kube: KubeServer) -> None:
    put_lease(kube, "cli-options", "replica-3", transitions=2)
    after = ["--kubeconfig", str(kube.admin_kubeconfig), "-n", kube.namespace]
    result = CliRunner().invoke(main, ["status", "cli-options", *after, "-o", "yaml"])
    assert result.exit_code == 0, result.output
    info = yaml.safe_load(result.output)
    assert (info["holder"], info["term"], info["namespace"]) == ("replica-3", 2, kube.namespace)
    result = CliRunner().invoke(main, ["status", "cli-options", "-o", "wide", *after])
    assert result.exit_code == 0, result.output
    assert "DURATION    60s" in result.output
    code, output = cli(kube, "status", "cli-options", "-o", "json")
    assert code == 0, output
    assert json.loads(output)["holder"] == "replica-3"


def test_release_needs_force_and_then_clears_the_holder(kube: KubeServer) -> None:
    put_lease(kube, "cli-release", "replica-1")
    code, output = cli(kube, "release", "cli-release")
    assert code == 2
    assert "--force" in output
    code, output = cli(kube, "release", "cli-release", "--force")
    assert code == 0, output
    assert "(was replica-1). Waiting candidates take over about 60 s (leaseDurationSeconds) after" in output
    assert "not at once" in output
    assert not holder_of(kube, "cli-release")
    # a foreign clear is no release proof: only the holder itself can vouch that its code stopped
    code, output = cli(kube, "status", "cli-release", "-o", "json")
    info = json.loads(output)
    assert (info["released_by"], info["lease_duration_seconds"], info["term"]) == (None, 60, 4)


def test_bad_input_is_explained_in_plain_words(kube: KubeServer, tmp_path: Path) -> None:
    code, output = cli(kube, "status", "Not_A_Lease")
    assert code == 2
    assert "DNS-1123" in output
    result = CliRunner().invoke(main, ["--kubeconfig", str(tmp_path / "missing"), "status", "x"])
    assert result.exit_code == 1
    assert result.output == f"lease-guard: error: kubeconfig '{tmp_path / 'missing'}' does not exist: check the path\n"


def lease_guard_cmd(kube: KubeServer, *args: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "lease_guard.cli",
        "--kubeconfig",
        str(kube.admin_kubeconfig),
        "-n",
        kube.namespace,
        *args,
    ]


def test_run_passes_the_exit_code_and_releases(kube: KubeServer) -> None:
    done = subprocess.run(
        lease_guard_cmd(kube, "run", "cli-run", "--", sys.executable, "-c", "import sys; sys.exit(7)"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 7, done.stderr
    assert not holder_of(kube, "cli-run")


def test_run_stops_the_command_when_leadership_is_lost(kube: KubeServer, tmp_path: Path) -> None:
    marker = tmp_path / "terminated"
    script = (
        "import signal, sys, time, pathlib\n"
        f"signal.signal(signal.SIGTERM, lambda *a: (pathlib.Path({str(marker)!r}).touch(), sys.exit(0)))\n"
        "print('started', flush=True)\n"
        "time.sleep(60)\n"
    )
    process = subprocess.Popen(
        lease_guard_cmd(kube, "run", "cli-loss", "--identity", "runner", "--", sys.executable, "-c", script),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert process.stdout is not None
        assert process.stdout.readline().strip() == "started"
        assert holder_of(kube, "cli-loss") == "runner"
        stolen = time.monotonic()
        put_lease(kube, "cli-loss", "operator")
        code = process.wait(timeout=30)
        assert time.monotonic() - stolen < 5
    finally:
        process.kill()
    assert code == EXIT_LEADERSHIP_LOST
    assert marker.exists(), "the command got SIGTERM"
    assert holder_of(kube, "cli-loss") == "operator"


@pytest.mark.parametrize(("sig", "exit_code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_run_stops_and_releases_on_sigterm_and_sigint(kube: KubeServer, sig: int, exit_code: int) -> None:
    process = subprocess.Popen(
        lease_guard_cmd(
            kube,
            "run",
            "cli-sigterm",
            "--identity",
            "runner",
            "--",
            sys.executable,
            "-c",
            "import time; print('started', flush=True); time.sleep(60)",
        ),
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        assert process.stdout.readline().strip() == "started"
        process.send_signal(sig)
        code = process.wait(timeout=30)
    finally:
        process.kill()
    assert code == exit_code
    assert not holder_of(kube, "cli-sigterm")


def test_run_stops_what_a_shell_command_started_when_leadership_is_lost(kube: KubeServer, tmp_path: Path) -> None:
    pid_file = tmp_path / "sleep.pid"
    script = f"sleep 47 & echo $! > {pid_file}; echo started; wait"
    process = subprocess.Popen(
        lease_guard_cmd(kube, "run", "cli-loss-shell", "--identity", "runner", "--", "sh", "-c", script),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        assert process.stdout.readline().strip() == "started"
        grandchild = int(pid_file.read_text())
        assert alive(grandchild)
        put_lease(kube, "cli-loss-shell", "operator")
        code = process.wait(timeout=30)
    finally:
        process.kill()
    assert code == EXIT_LEADERSHIP_LOST
    assert not alive(grandchild), "the shell's child outlived lease-guard"


def test_run_kills_a_command_that_ignores_sigterm_after_the_grace(kube: KubeServer) -> None:
    script = "trap '' TERM; echo started; while :; do sleep 1; done"
    process = subprocess.Popen(
        lease_guard_cmd(
            kube, "run", "cli-stubborn", "--identity", "runner", "--grace", "1.5", "--", "sh", "-c", script
        ),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        assert process.stdout.readline().strip() == "started"
        stolen = time.monotonic()
        put_lease(kube, "cli-stubborn", "operator")
        code = process.wait(timeout=30)
        stopped_after = time.monotonic() - stolen
    finally:
        process.kill()
    assert code == EXIT_LEADERSHIP_LOST
    assert 1.5 <= stopped_after < 10, stopped_after


def alive(pid: int) -> bool:
    """Whether the process exists and is not a zombie (dead, waiting for its parent to reap it)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def test_watch_of_a_lease_that_never_existed_says_so(kube: KubeServer) -> None:
    process = subprocess.Popen(
        lease_guard_cmd(kube, "watch", "cli-never"), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        assert process.stdout is not None
        assert process.stdout.readline().endswith(
            f"lease {kube.namespace}/cli-never does not exist yet; waiting for it\n"
        )
        put_lease(kube, "cli-never", "first")
        assert "holder=first" in process.stdout.readline()
    finally:
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=30)
    assert (process.returncode, stderr) == (130, "")


def test_demo_on_the_cluster_reports_a_missing_namespace_in_one_line(kube: KubeServer) -> None:
    done = subprocess.run(
        lease_guard_cmd(kube, "demo", "--cluster", "--seconds", "30", "-n", "no-such-namespace"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1, done.stderr
    assert done.stderr.startswith("lease-guard: error: ")
    assert "no-such-namespace" in done.stderr
    assert done.stderr.count("\n") == 1, done.stderr


def test_watch_streams_holder_changes(kube: KubeServer) -> None:
    put_lease(kube, "cli-watch", "first")
    process = subprocess.Popen(lease_guard_cmd(kube, "watch", "cli-watch"), stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        assert "holder=first" in process.stdout.readline()
        put_lease(kube, "cli-watch", "second", transitions=5)
        assert "holder=second  term=5" in process.stdout.readline()
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_demo_runs_on_the_in_memory_store() -> None:
    result = CliRunner().invoke(main, ["demo", "--seconds", "1.2", "--candidates", "2"])
    assert result.exit_code == 0, result.output
    assert "LEADING (term 0)" in result.output

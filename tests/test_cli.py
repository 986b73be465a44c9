"""The lease-guard CLI without a cluster: usage errors, one-line errors, signals. How ``run``
stops what it started is in test_process_group.py; the commands against the real API server
are in tests/integration/test_cli.py."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from lease_guard._shell import EXIT_NOT_FOUND
from lease_guard.cli import main

LEASE_GUARD = [sys.executable, "-m", "lease_guard.cli"]


def invoke(*args: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args), env=env)
    return result.exit_code, result.output


# -- usage errors exit 2, in one line -------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "problem"),
    [
        (["run", "x", "--grace", "nan", "--", "true"], "'--grace'"),
        (["run", "x", "--grace", "-1", "--", "true"], "'--grace'"),
        (["run", "x", "--grace", "5", "--", "true"], "less than lease_duration - renew_deadline (5 s)"),
        (["run", "x", "--lease-duration", "-1", "--", "true"], "lease_duration must be a positive number"),
        (["run", "x", "--identity", "", "--", "true"], "identity"),
        (["run", "Not_A_Lease", "--", "true"], "DNS-1123"),
        (["status", "x", "-n", "Bad_Namespace"], "not a valid namespace name"),
        (["-n", "Bad_Namespace", "status", "x"], "not a valid namespace name"),
        (["status", "x", "-o", "table"], "'json', 'yaml', 'wide'"),
        (["demo", "--seconds", "-1"], "'--seconds'"),
        (["demo", "--seconds", "nan"], "'--seconds'"),
        (["demo", "--candidates", "0"], "'--candidates'"),
        (["no-such-command"], "No such command"),
    ],
)
def test_usage_errors_exit_2_with_one_line(args: list[str], problem: str) -> None:
    code, output = invoke(*args)
    assert code == 2, output
    assert problem in output
    assert output.count("\n") == 1, output


def test_version() -> None:
    code, output = invoke("--version")
    assert code == 0
    assert output.startswith("lease-guard, version ")


@pytest.mark.parametrize("content", ["", "clusters: [\n  - {", "- a list\n"])
@pytest.mark.parametrize(
    "command", [["status", "x"], ["watch", "x"], ["release", "x", "--force"], ["run", "x", "--", "true"]]
)
def test_a_bad_kubeconfig_is_one_line_exit_1(tmp_path: Path, content: str, command: list[str]) -> None:
    kubeconfig = tmp_path / "config"
    kubeconfig.write_text(content)
    code, output = invoke(command[0], "--kubeconfig", str(kubeconfig), *command[1:])
    assert code == 1, output
    assert output.startswith(f"lease-guard: error: kubeconfig '{kubeconfig}'")
    assert output.count("\n") == 1, output
    assert "MemoryLeaseStore" not in output and "Traceback" not in output


def test_cluster_options_are_accepted_after_the_subcommand(tmp_path: Path) -> None:
    missing = str(tmp_path / "missing")
    for args in (["--kubeconfig", missing, "status", "x"], ["status", "x", "--kubeconfig", missing, "-n", "ops"]):
        code, output = invoke(*args)
        assert (code, output) == (1, f"lease-guard: error: kubeconfig '{missing}' does not exist: check the path\n")


def test_kubeconfig_is_a_list_in_the_environment(tmp_path: Path) -> None:
    missing = [str(tmp_path / "a"), str(tmp_path / "b")]
    code, output = invoke("status", "x", env={"KUBECONFIG": os.pathsep.join(missing), "KUBERNETES_SERVICE_HOST": ""})
    assert code == 1
    assert f"looked for '{missing[0]}', '{missing[1]}'" in output


def test_run_of_a_command_that_does_not_exist_exits_127_like_a_shell(tmp_path: Path) -> None:
    done = subprocess.run(
        [*LEASE_GUARD, "--kubeconfig", str(tmp_path / "unused"), "run", "x", "--", "/nonexistent/cmd"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == EXIT_NOT_FOUND
    assert done.stderr == "lease-guard: /nonexistent/cmd: command not found\n"


# -- Ctrl-C exits 130, quietly -------------------------------------------------------------------


@pytest.mark.parametrize(
    "argv",
    [[*LEASE_GUARD, "demo"], [sys.executable, "-m", "lease_guard.demo", "--seconds", "inf"]],
    ids=["lease-guard demo", "python -m lease_guard.demo"],
)
def test_ctrl_c_on_the_demo_exits_130_quietly(argv: list[str]) -> None:
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert process.stdout is not None
    while "replica-0" not in process.stdout.readline():
        pass
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=30)
    assert process.returncode == 130
    assert stderr == ""


def test_demo_errors_are_one_line() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "lease_guard.demo", "--kubeconfig", "/nonexistent/config"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1
    assert done.stderr == (
        "python -m lease_guard.demo: error: kubeconfig '/nonexistent/config' does not exist: check the path\n"
    )

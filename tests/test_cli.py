"""The lease-guard CLI without a cluster: usage errors, one-line errors, signals, and stopping
everything ``run`` started. The same commands against the real API server are in
tests/integration/test_cli.py."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio
from click.testing import CliRunner

from lease_guard.cli import EXIT_NOT_FOUND, main, run_in_group

LEASE_GUARD = [sys.executable, "-m", "lease_guard.cli"]


def invoke(*args: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args), env=env)
    return result.exit_code, result.output


def alive(pid: int) -> bool:
    """Whether the process exists and is not a zombie (dead, waiting for its parent to reap it)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def read_pid(path: Path) -> int | None:
    text = path.read_text().strip() if path.exists() else ""
    return int(text) if text else None


async def wait_for_pid(path: Path) -> int:
    """The pid the command under test wrote to ``path``, once it is there."""
    while (pid := read_pid(path)) is None:  # noqa: ASYNC110 - a file written by another process
        await trio.sleep(0.02)
    return pid


@pytest.fixture
def pid_file(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "grandchild.pid"
    yield path
    pid = read_pid(path)
    if pid is not None and alive(pid):
        os.kill(pid, signal.SIGKILL)


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


# -- run stops the whole process group -----------------------------------------------------------


async def test_cancelling_run_stops_a_shell_grandchild(pid_file: Path) -> None:
    script = f"sleep 47 & echo $! > {pid_file}; wait"
    with trio.move_on_after(30) as timeout:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(run_in_group, ["sh", "-c", script], 2.0)
            pid = await wait_for_pid(pid_file)
            nursery.cancel_scope.cancel()
    assert not timeout.cancelled_caught
    assert not alive(pid)


async def test_a_command_that_ignores_sigterm_is_killed_after_the_grace(pid_file: Path) -> None:
    script = f"trap '' TERM; sleep 47 & echo $! > {pid_file}; wait"
    async with trio.open_nursery() as nursery:
        nursery.start_soon(run_in_group, ["sh", "-c", script], 0.5)
        pid = await wait_for_pid(pid_file)
        cancelled_at = trio.current_time()
        nursery.cancel_scope.cancel()
    assert 0.5 <= trio.current_time() - cancelled_at < 20
    assert not alive(pid)


async def test_what_the_command_left_running_is_stopped_when_it_exits(pid_file: Path) -> None:
    code = await run_in_group(["sh", "-c", f"sleep 47 & echo $! > {pid_file}; exit 5"], 2.0)
    assert code == 5
    pid = read_pid(pid_file)
    assert pid is not None
    assert not alive(pid)


async def test_death_by_signal_is_reported_as_a_shell_does() -> None:
    assert await run_in_group(["sh", "-c", "kill -TERM $$"], 1.0) == 128 + signal.SIGTERM

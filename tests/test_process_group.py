"""Running a command in a process group of its own: nothing it started outlives it."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio

from lease_guard._process_group import run_in_group


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

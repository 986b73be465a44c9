"""Run a command in a process group of its own, and stop the whole group: what ``lease-guard run``
needs so that nothing the command started (a shell's children, a wrapper's) outlives it."""

from __future__ import annotations

import os
import signal

import trio

from ._shell import EXIT_CANNOT_EXECUTE, EXIT_NOT_FOUND

#: How long to wait for SIGKILL to take effect before giving up waiting; a process killed
#: but not yet reaped by its parent (a zombie) runs no code, yet still counts as in its group.
KILL_WAIT = 1.0
#: How often to check whether the processes that were signalled are gone.
GROUP_POLL_INTERVAL = 0.05


def _signal_group(pgid: int, signum: int) -> bool:
    """Send ``signum`` to the process group; False if it has no process left."""
    try:
        os.killpg(pgid, signum)
    except ProcessLookupError:
        return False
    return True


async def _group_gone(pgid: int) -> None:
    # The kernel tells no one when the last process of a group exits: poll.
    while _signal_group(pgid, 0):  # noqa: ASYNC110
        await trio.sleep(GROUP_POLL_INTERVAL)


async def stop_process_group(process: trio.Process, grace: float) -> None:
    """Stop ``process`` and everything in its process group: SIGTERM, then SIGKILL after ``grace``.

    Returns once the command itself has exited and been reaped; the group is empty by then
    unless a process in it ignored SIGKILL's delivery (a zombie waiting for its parent).
    """
    pgid = process.pid
    if _signal_group(pgid, signal.SIGTERM):
        with trio.move_on_after(grace):
            await process.wait()
            await _group_gone(pgid)
            return
        _signal_group(pgid, signal.SIGKILL)
        await process.wait()
        with trio.move_on_after(KILL_WAIT):
            await _group_gone(pgid)
    await process.wait()


async def run_in_group(command: list[str], grace: float) -> int:
    """Run ``command`` in a session of its own and return its exit status as a shell reports it.

    Whatever ends this call (the command exiting, cancellation, an error), nothing the
    command started is left running: the whole group is stopped by :func:`stop_process_group`.
    """
    try:
        process = await trio.lowlevel.open_process(command, start_new_session=True)
    except FileNotFoundError:
        return EXIT_NOT_FOUND
    except PermissionError:
        return EXIT_CANNOT_EXECUTE
    try:
        await process.wait()
    finally:
        with trio.CancelScope(shield=True):
            await stop_process_group(process, grace)
    code = process.returncode
    assert code is not None
    return 128 - code if code < 0 else code

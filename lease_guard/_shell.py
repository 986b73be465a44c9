"""What a program started from a shell owes it: stop cleanly on SIGINT/SIGTERM and report it
in the exit code the way a shell does (128 + the signal's number: 130 for Ctrl-C), and turn
errors into one line instead of a traceback. Used by the CLI and ``python -m lease_guard.demo``."""

from __future__ import annotations

import signal
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

import trio

from ._errors import LeaseGuardError

T = TypeVar("T")

#: Ctrl-C, as a shell reports it: 128 + SIGINT.
EXIT_INTERRUPTED = 128 + signal.SIGINT
#: A command that was found but cannot be executed, as a shell reports it.
EXIT_CANNOT_EXECUTE = 126
#: A command that was not found, as a shell reports it.
EXIT_NOT_FOUND = 127


@dataclass
class Outcome(Generic[T]):
    """How ``run_until_signal`` ended: the function's result, or the signal that stopped it."""

    result: T | None = None
    signal: int | None = None

    @property
    def exit_code(self) -> int | None:
        """128 + the signal's number when a signal stopped the run, else None."""
        return None if self.signal is None else 128 + self.signal


def run_until_signal(main: Callable[[], Awaitable[T]]) -> Outcome[T]:
    """Run ``main`` under trio until it returns or SIGINT/SIGTERM arrives.

    A signal cancels ``main`` (its ``finally`` blocks and shielded cleanup run: the Lease is
    released, a child process is stopped) and is reported in :attr:`Outcome.signal`.
    An exception from ``main`` propagates as itself, not wrapped in an exception group,
    when it is the only one.
    """
    outcome: Outcome[T] = Outcome()

    async def supervised() -> None:
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async with trio.open_nursery() as nursery:

                async def stop_on_signal() -> None:
                    async for signum in signals:
                        outcome.signal = signum
                        nursery.cancel_scope.cancel()
                        return

                nursery.start_soon(stop_on_signal)
                outcome.result = await main()
                nursery.cancel_scope.cancel()

    try:
        trio.run(supervised)
    except KeyboardInterrupt:  # before the signal receiver was installed, or after it was removed
        outcome.signal = signal.SIGINT
    except BaseExceptionGroup as group:
        raise only_error(group) from None
    return outcome


def only_error(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The error to report from an exception group: its one leaf, else its first LeaseGuardError."""
    leaves: list[BaseException] = []

    def collect(exc: BaseException) -> None:
        if isinstance(exc, BaseExceptionGroup):
            for inner in exc.exceptions:
                collect(inner)
        else:
            leaves.append(exc)

    collect(group)
    if len(leaves) == 1:
        return leaves[0]
    return next((leaf for leaf in leaves if isinstance(leaf, LeaseGuardError)), group)

"""Watch a Lease change hands: several candidates in one process, with a live view.

Run it::

    python -m lease_guard.demo                         # in-memory store, 20 seconds
    python -m lease_guard.demo --kubeconfig admin.kubeconfig --namespace lease-guard-test

Each candidate leads for a few seconds, then releases (a follower takes over at once);
now and then the leader "crashes" without releasing, and the others wait for the lease
to expire. Timings are fast (lease_duration 4 s, renew_deadline 3 s, retry_period 1 s).
Against a cluster, follow along with ``kubectl get lease lease-guard-demo -w``.

The board shows what is true at each instant: a candidate is LEADING only while its
guarded code runs. Ctrl-C stops it (exit 130); an error is one line on stderr (exit 1).
"""

from __future__ import annotations

import argparse
import math
import random
import sys
from collections.abc import Callable, Sequence

import trio

from ._errors import LeadershipLost, LeaseGuardError
from ._guards import leadership
from ._shell import run_until_signal
from .stores._protocol import LeaseStore
from .stores.memory import MemoryLeaseStore

LEASE_DURATION, RENEW_DEADLINE, RETRY_PERIOD = 4.0, 3.0, 1.0
LEASE = "lease-guard-demo"


class Board:
    """What each candidate is doing now, as the live view prints it."""

    def __init__(self) -> None:
        self.states: dict[str, str] = {}

    def set(self, name: str, state: str) -> None:
        self.states[name] = state

    def leaders(self) -> list[str]:
        """The candidates whose guarded code is running now."""
        return [name for name, state in self.states.items() if state.startswith("LEADING")]

    def line(self) -> str:
        return "  ".join(f"{name}: {state:<30}" for name, state in sorted(self.states.items()))


async def candidate(
    name: str, store: LeaseStore, namespace: str | None, board: Board, rng: random.Random | None = None
) -> None:
    """Lead, work a while, then release, or now and then crash without releasing."""
    rng = rng or random.Random()
    while True:
        board.set(name, "waiting")
        crash = rng.random() < 0.3
        try:
            async with leadership(
                LEASE,
                namespace=namespace,
                identity=name,
                store=store,
                release_on_exit=not crash,
                lease_duration=LEASE_DURATION,
                renew_deadline=RENEW_DEADLINE,
                retry_period=RETRY_PERIOD,
            ) as lead:
                board.set(name, f"LEADING (term {lead.term})")
                try:
                    await trio.sleep(rng.uniform(2, 5))
                finally:
                    # The guarded code has ended: from here on this candidate does not lead,
                    # whatever the Lease still says until the release is written.
                    board.set(name, "crashed (lease left to expire)" if crash else "releasing")
        except LeadershipLost as lost:
            board.set(name, f"lost: {lost.reason}")
        if crash:
            await trio.sleep(LEASE_DURATION + 2)
        else:
            board.set(name, "resting")
            await trio.sleep(rng.uniform(0.1, 1))


async def show(board: Board, write: Callable[[str], object] = print) -> None:
    start = trio.current_time()
    while True:
        write(f"{trio.current_time() - start:6.1f}s  {board.line()}")
        await trio.sleep(0.5)


async def run(
    store: LeaseStore,
    namespace: str | None,
    candidates: int,
    seconds: float,
    *,
    board: Board | None = None,
    rng: random.Random | None = None,
    write: Callable[[str], object] = lambda line: print(line, flush=True),
) -> None:
    """Run ``candidates`` candidates for ``seconds`` (math.inf: until cancelled), printing the board."""
    board = board or Board()
    rng = rng or random.Random()
    with trio.move_on_after(seconds):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(show, board, write)
            for n in range(candidates):
                nursery.start_soon(candidate, f"replica-{n}", store, namespace, board, rng)


def positive_seconds(text: str) -> float:
    """``--seconds``: a positive number, or ``inf``."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if math.isnan(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds (or inf), got {text!r}")
    return value


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m lease_guard.demo", description=__doc__.split("\n\n")[0])
    parser.add_argument("--kubeconfig", help="use the cluster of this kubeconfig instead of the in-memory store")
    parser.add_argument("--context", help="kubeconfig context to use")
    parser.add_argument("-n", "--namespace", help="namespace of the Lease (default: the context's)")
    parser.add_argument("--candidates", type=int, choices=range(1, 101), metavar="1..100", default=3)
    parser.add_argument("--seconds", type=positive_seconds, default=20, help="how long to run (default 20)")
    args = parser.parse_args(argv)

    def fail(message: str) -> None:
        print(f"{parser.prog}: error: {message}", file=sys.stderr)
        sys.exit(1)

    async def go() -> None:
        if args.kubeconfig:
            from .stores.kubernetes import KubernetesLeaseStore

            kube = KubernetesLeaseStore.from_kubeconfig(args.kubeconfig, context=args.context, namespace=args.namespace)
            try:
                await run(kube, args.namespace, args.candidates, args.seconds)
            finally:
                await kube.aclose()
        else:
            await run(MemoryLeaseStore(), args.namespace, args.candidates, args.seconds)

    try:
        outcome = run_until_signal(go)
    except LeaseGuardError as exc:
        fail(str(exc))
    else:
        if outcome.exit_code is not None:
            sys.exit(outcome.exit_code)


if __name__ == "__main__":
    main()

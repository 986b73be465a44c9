"""Watch a Lease change hands: several candidates in one process, with a live view.

Run it::

    python -m lease_guard.demo                         # in-memory store, 20 seconds
    python -m lease_guard.demo --kubeconfig admin.kubeconfig --namespace lease-guard-test

Each candidate leads for a few seconds, then releases (a follower takes over at once);
now and then the leader "crashes" without releasing, and the others wait for the lease
to expire. Timings are fast (lease_duration 4 s, renew_deadline 3 s, retry_period 1 s).
Against a cluster, follow along with ``kubectl get lease lease-guard-demo -w``.
"""

from __future__ import annotations

import argparse
import random
from collections.abc import Sequence

import trio

from . import LeadershipLost, LeaseStore, MemoryLeaseStore, leadership

LEASE_DURATION, RENEW_DEADLINE, RETRY_PERIOD = 4.0, 3.0, 1.0
LEASE = "lease-guard-demo"


async def candidate(name: str, store: LeaseStore, namespace: str | None, board: dict[str, str]) -> None:
    """Lead, work a while, then release, or now and then crash without releasing."""
    while True:
        board[name] = "waiting"
        crash = random.random() < 0.3
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
                board[name] = f"LEADING (term {lead.term})"
                await trio.sleep(random.uniform(2, 5))
        except LeadershipLost as lost:
            board[name] = f"lost: {lost.reason}"
        if crash:
            board[name] = "crashed (lease left to expire)"
            await trio.sleep(LEASE_DURATION + 2)
        else:
            await trio.sleep(random.uniform(0.1, 1))


async def show(board: dict[str, str]) -> None:
    start = trio.current_time()
    while True:
        line = "  ".join(f"{name}: {state:<30}" for name, state in sorted(board.items()))
        print(f"{trio.current_time() - start:6.1f}s  {line}", flush=True)
        await trio.sleep(0.5)


async def run(store: LeaseStore, namespace: str | None, candidates: int, seconds: float) -> None:
    board: dict[str, str] = {}
    with trio.move_on_after(seconds):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(show, board)
            for n in range(candidates):
                nursery.start_soon(candidate, f"replica-{n}", store, namespace, board)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m lease_guard.demo", description=__doc__.split("\n\n")[0])
    parser.add_argument("--kubeconfig", help="use the cluster of this kubeconfig instead of the in-memory store")
    parser.add_argument("--context", help="kubeconfig context to use")
    parser.add_argument("-n", "--namespace", help="namespace of the Lease (default: the context's)")
    parser.add_argument("--candidates", type=int, default=3, help="how many candidates (default 3)")
    parser.add_argument("--seconds", type=float, default=20, help="how long to run (default 20)")
    args = parser.parse_args(argv)

    async def go() -> None:
        store: LeaseStore
        if args.kubeconfig:
            from .stores.kubernetes import KubernetesLeaseStore

            store = KubernetesLeaseStore.from_kubeconfig(
                args.kubeconfig, context=args.context, namespace=args.namespace
            )
        else:
            store = MemoryLeaseStore()
        await run(store, args.namespace, args.candidates, args.seconds)

    trio.run(go)


if __name__ == "__main__":
    main()

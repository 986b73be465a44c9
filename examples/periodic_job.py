"""A periodic job scheduled on every replica that runs only on the leader.

    python examples/periodic_job.py                        # in-memory store, two replicas
    python examples/periodic_job.py --kubeconfig ~/.kube/config -n default

Both replicas call ``cleanup()`` every 2 seconds, offset by half a second. The first to
run keeps the Lease between calls, so the other skips every tick (returns None) instead
of running the same tick a second time.
"""

from __future__ import annotations

import argparse

import trio

from lease_guard import LeaseStore, MemoryLeaseStore, only_when_leading


def make_replica(name: str, store: LeaseStore, namespace: str | None):  # type: ignore[no-untyped-def]
    @only_when_leading(
        lease="nightly-cleanup",
        namespace=namespace,
        store=store,
        lease_duration=4,
        renew_deadline=3,
        retry_period=1,
    )
    async def cleanup() -> int:
        await trio.sleep(0.2)  # stand-in for the real work
        return 42

    async def schedule(offset: float, ticks: int) -> None:
        await trio.sleep(offset)
        for tick in range(ticks):
            removed = await cleanup()
            print(
                f"{name} tick {tick}: "
                + ("skipped, another replica leads" if removed is None else f"removed {removed} rows")
            )
            await trio.sleep(2)

    return schedule


async def main(store: LeaseStore, namespace: str | None) -> None:
    async with trio.open_nursery() as nursery:
        nursery.start_soon(make_replica("replica-a", store, namespace), 0, 4)
        nursery.start_soon(make_replica("replica-b", store, namespace), 0.5, 4)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kubeconfig", help="run against this cluster instead of the in-memory store")
    parser.add_argument("-n", "--namespace")
    args = parser.parse_args()
    chosen: LeaseStore
    if args.kubeconfig:
        from lease_guard import KubernetesLeaseStore

        chosen = KubernetesLeaseStore.from_kubeconfig(args.kubeconfig, namespace=args.namespace)
    else:
        chosen = MemoryLeaseStore()
    trio.run(main, chosen, args.namespace)

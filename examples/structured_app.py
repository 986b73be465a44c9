"""A structured-concurrency app: a controller that runs only while this replica leads.

    python examples/structured_app.py                      # in-memory store, two replicas
    python examples/structured_app.py --kubeconfig ~/.kube/config -n default

Two replicas campaign for the same Lease. The leader's controller runs inside the guarded
scope; after a few seconds the leader is told to shut down (as on SIGTERM), releases the
Lease, and the other replica takes over at once.

``leadership()`` waits as long as it takes, through API-server outages too: each replica
bounds its own run, and the program exits 1 if neither ever led (a cluster it cannot
reach, say), 0 otherwise.
"""

from __future__ import annotations

import argparse
import logging
import sys

import trio

from lease_guard import LeadershipLost, LeaseGuardError, LeaseStore, MemoryLeaseStore, leadership


async def run_controller(name: str, term: int) -> None:
    """Stand-in for the real work: reconcile every second, tagging writes with the term."""
    while True:
        print(f"{name}: reconciling (fencing token {term})")
        await trio.sleep(1)


async def replica(name: str, store: LeaseStore, namespace: str | None, run_for: float, led: list[str]) -> None:
    with trio.move_on_after(run_for):  # a shutdown request, as SIGTERM would give
        try:
            async with leadership("structured-app", namespace=namespace, identity=name, store=store) as lead:
                led.append(name)
                await run_controller(name, lead.term)
        except LeadershipLost as lost:
            print(f"{name}: stopped, {lost.reason}")  # restart the campaign, or exit and let the pod restart
    print(f"{name}: exiting")


async def main(store: LeaseStore, namespace: str | None) -> list[str]:
    """Run both replicas; return the names of those that led."""
    led: list[str] = []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(replica, "replica-a", store, namespace, 3.5, led)
        await trio.sleep(0.1)
        nursery.start_soon(replica, "replica-b", store, namespace, 6, led)
    return led


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kubeconfig", help="run against this cluster instead of the in-memory store")
    parser.add_argument("-n", "--namespace")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    chosen: LeaseStore
    try:
        if args.kubeconfig:
            from lease_guard import KubernetesLeaseStore

            chosen = KubernetesLeaseStore.from_kubeconfig(args.kubeconfig, namespace=args.namespace)
        else:
            chosen = MemoryLeaseStore()
        leaders = trio.run(main, chosen, args.namespace)
    except* LeaseGuardError as group:
        sys.exit(f"structured_app: {group.exceptions[0]}")
    if not leaders:
        sys.exit("structured_app: no replica led before its shutdown: is the cluster reachable, and is RBAC in place?")

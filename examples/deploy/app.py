"""The replica program of the example Deployment: lead, work, and hand over fast on SIGTERM.

Graceful shutdown recipe: Kubernetes sends SIGTERM to the pod being stopped (a rollout, a
scale-down, a node drain). trio turns it into cancellation of the whole program; the
``leadership()`` block is cancelled, then the Lease is released on the way out, and a
follower that watches the Lease takes over within tens of milliseconds instead of waiting
out the lease duration.

    python examples/deploy/app.py --kubeconfig admin.kubeconfig -n lease-guard-test

In a pod no flags are needed: the in-cluster service account and namespace are used.
It prints one JSON line per event (with ``time.monotonic()``), serves /healthz on
``--health-port`` and Prometheus metrics on ``--metrics-port`` when prometheus_client
is installed.
"""

from __future__ import annotations

import argparse
import json
import signal
import time

import trio

from lease_guard import Elector, KubernetesLeaseStore, LeadershipLost
from lease_guard.health import serve_health


def say(event: str, **fields: object) -> None:
    print(json.dumps({"event": event, "t": time.monotonic(), **fields}), flush=True)


async def work(term: int) -> None:
    """The singleton work; every write it makes downstream carries the fencing token."""
    await trio.sleep_forever()


async def main(args: argparse.Namespace) -> None:
    store = KubernetesLeaseStore.from_kubeconfig(args.kubeconfig, namespace=args.namespace)
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async with (
            Elector(args.lease, namespace=args.namespace, identity=args.identity, store=store) as elector,
            trio.open_nursery() as nursery,
        ):

            async def stop_on_signal() -> None:
                async for signum in signals:
                    say("signal", signal=signal.Signals(signum).name)
                    nursery.cancel_scope.cancel()

            nursery.start_soon(stop_on_signal)
            await nursery.start(serve_health, elector, args.health_port)
            if args.metrics_port:
                from prometheus_client import start_http_server

                from lease_guard.metrics import instrument

                start_http_server(args.metrics_port)
                nursery.start_soon(instrument, elector)
            say("ready", identity=elector.identity)
            while True:
                try:
                    async with elector.leading() as lead:
                        say("started", term=lead.term)
                        try:
                            await work(lead.term)
                        finally:
                            say("stopped", term=lead.term)
                except LeadershipLost as lost:
                    say("lost", reason=lost.reason)
    say("exit")  # the Lease was released when the Elector exited


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kubeconfig", help="default: in-cluster config, then $KUBECONFIG or ~/.kube/config")
    parser.add_argument("-n", "--namespace", help="default: the service account's or the context's")
    parser.add_argument("--lease", default="lease-guard-demo")
    parser.add_argument("--identity", help="default: the pod name plus a random suffix")
    parser.add_argument("--health-port", type=int, default=8080)
    parser.add_argument("--metrics-port", type=int, default=0)
    trio.run(main, parser.parse_args())

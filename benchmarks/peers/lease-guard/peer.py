"""Benchmark peer for lease_guard itself, speaking the common peer protocol.

    python benchmarks/peers/lease-guard/peer.py --kubeconfig PATH --namespace NS --lease NAME \
        --identity ID --lease-duration S --renew-deadline S --retry-period S [--count-requests]

stdout: JSON lines {"event": "ready"|"started"|"stopped"|"exit", "t": CLOCK_MONOTONIC seconds}
(``time.monotonic()`` is CLOCK_MONOTONIC on Linux, the clock the other peers print).
SIGTERM/SIGINT cancel everything; the Elector releases the Lease on its way out.

--count-requests counts every HTTP request the store's client sends (an httpx request
hook: GETs, PUTs, POSTs and each watch (re)open), and prints
{"event": "requests", "counts": {...}} on SIGUSR1 and at exit. Client-side counting,
because the API server harness has no way yet to enable an audit log.
"""

from __future__ import annotations

import argparse
import collections
import json
import logging
import signal
import sys
import time
from typing import Any

import trio

from lease_guard import Elector, KubernetesLeaseStore, LeadershipLost
from lease_guard.stores.kubernetes import SHARED_WATCH_FROM, _http_client


def say(event: str, **fields: object) -> None:
    print(json.dumps({"event": event, "t": time.monotonic(), **fields}), flush=True)


def install_counter(store: KubernetesLeaseStore) -> collections.Counter[str]:
    counts: collections.Counter[str] = collections.Counter()
    http: Any = _http_client(store._client)

    async def on_request(request: Any) -> None:
        kind = request.method
        if request.method == "GET" and "watch" in request.url.params:
            kind = "WATCH"
        counts[kind] += 1
        counts["total"] += 1

    hooks = dict(http.event_hooks)
    hooks["request"] = [*hooks.get("request", []), on_request]
    http.event_hooks = hooks
    return counts


async def main(args: argparse.Namespace) -> None:
    store = KubernetesLeaseStore.from_kubeconfig(
        args.kubeconfig, namespace=args.namespace, shared_watch_from=args.shared_watch_from
    )
    counts = install_counter(store) if args.count_requests else None

    def report() -> None:
        if counts is not None:
            # Renewals of the lean path do not pass httpx's hooks: add them.
            lean = store._lean.http.sent if store._lean is not None else collections.Counter()
            total = counts + lean
            total["total"] = counts["total"] + sum(lean.values())
            say("requests", counts=dict(total))

    try:
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGUSR1) as signals:
            async with (
                Elector(
                    args.lease,
                    namespace=args.namespace,
                    identity=args.identity,
                    lease_duration=args.lease_duration,
                    renew_deadline=args.renew_deadline,
                    retry_period=args.retry_period,
                    store=store,
                ) as elector,
                trio.open_nursery() as nursery,
            ):

                async def on_signals() -> None:
                    async for signum in signals:
                        if signum == signal.SIGUSR1:
                            report()
                        else:
                            nursery.cancel_scope.cancel()

                nursery.start_soon(on_signals)
                say("ready", identity=elector.identity)
                while True:
                    try:
                        async with elector.leading() as lead:
                            say("started", term=lead.term)
                            try:
                                await trio.sleep_forever()
                            finally:
                                say("stopped", term=lead.term)
                    except LeadershipLost as lost:
                        print(f"lost: {lost}", file=sys.stderr, flush=True)
    finally:
        await store.aclose()
    report()
    say("exit")


if __name__ == "__main__":
    # lease_guard's own log (acquired, released, renewal failures) to stderr: the run's evidence.
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(asctime)s %(levelname)s %(message)s")
    logging.getLogger("lease_guard").setLevel(logging.INFO)
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--kubeconfig", required=True)
    p.add_argument("--namespace", required=True)
    p.add_argument("--lease", required=True)
    p.add_argument("--identity", required=True)
    p.add_argument("--lease-duration", type=float, default=15.0)
    p.add_argument("--renew-deadline", type=float, default=10.0)
    p.add_argument("--retry-period", type=float, default=2.0)
    p.add_argument("--count-requests", action="store_true")
    p.add_argument(
        "--shared-watch-from",
        type=int,
        default=SHARED_WATCH_FROM,
        help="KubernetesLeaseStore's shared_watch_from: 1 follows the Lease through the namespace's shared watch",
    )
    trio.run(main, p.parse_args())

"""Benchmark peer: the official `kubernetes` Python client's asyncio leader election.

Drives kubernetes.aio.leaderelection (LeaderElection, electionconfig.Config,
resourcelock.leaselock.LeaseLock) shipped inside the official `kubernetes`
package since v37 (kubernetes.aio, a port of the separate kubernetes_asyncio
project). See README.md for the protocol and for shutdown behaviour.

(Named aio.py, not asyncio.py: a script called asyncio.py would shadow the
standard library's asyncio module for everything it imports.)

    python aio.py --kubeconfig PATH --namespace NS --lease NAME --identity ID \
        --lease-duration S --renew-deadline S --retry-period S
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import signal
import sys
import time

from kubernetes.aio import config
from kubernetes.aio.leaderelection import electionconfig, leaderelection
from kubernetes.aio.leaderelection.resourcelock.leaselock import LeaseLock

log = logging.getLogger("peer")


def emit(event: str) -> None:
    sys.stdout.write(json.dumps({"event": event, "t": time.monotonic()}) + "\n")
    sys.stdout.flush()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--kubeconfig", required=True)
    p.add_argument("--namespace", required=True)
    p.add_argument("--lease", required=True)
    p.add_argument("--identity", required=True)
    p.add_argument("--lease-duration", type=float, required=True)
    p.add_argument("--renew-deadline", type=float, required=True)
    p.add_argument("--retry-period", type=float, required=True)
    a = p.parse_args(argv)
    # The lock does int(str(lease_duration)): int("15.0") raises ValueError.
    if not a.lease_duration.is_integer():
        p.error("--lease-duration must be whole seconds for this library")
    a.lease_duration = int(a.lease_duration)
    return a


async def amain(args: argparse.Namespace) -> int:
    loop = asyncio.get_running_loop()
    terminate = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, terminate.set)

    leading = False

    async def onstarted_leading() -> None:
        # Run by the library as a task, cancelled when the lease is lost.
        nonlocal leading
        leading = True
        emit("started")
        try:
            await asyncio.Event().wait()  # the guarded work
        finally:
            log.info("onstarted_leading task ended (guarded work ends)")

    async def onstopped_leading() -> None:
        nonlocal leading
        if leading:
            leading = False
            emit("stopped")

    api_client = await config.new_client_from_config(config_file=args.kubeconfig)
    async with api_client:

        async def elect_forever() -> None:
            while True:
                lock = LeaseLock(args.lease, args.namespace, args.identity, api_client)
                cfg = electionconfig.Config(
                    lock,
                    lease_duration=args.lease_duration,
                    renew_deadline=args.renew_deadline,
                    retry_period=args.retry_period,
                    onstarted_leading=onstarted_leading,
                    onstopped_leading=onstopped_leading,
                )
                try:
                    # Returns only after leadership was acquired and then lost.
                    await leaderelection.LeaderElection(cfg).run()
                    log.info("LeaderElection.run() returned (leadership lost); re-entering")
                except Exception:
                    # Connection errors (aiohttp.ClientError) are not ApiException
                    # and end run(); the peer logs and re-enters instead of dying.
                    log.exception("LeaderElection.run() raised; re-entering after retry_period")
                    await onstopped_leading()
                    await asyncio.sleep(args.retry_period)

        emit("ready")
        election = asyncio.create_task(elect_forever())
        stop = asyncio.create_task(terminate.wait())
        await asyncio.wait({election, stop}, return_when=asyncio.FIRST_COMPLETED)
        # No release in this library; cancelling run() also skips its own
        # cleanup (the onstarted_leading task is not cancelled by the library
        # and onstopped_leading is not called), so the peer stops the work.
        election.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await election
        if leading:
            leading = False
            emit("stopped")
        for t in asyncio.all_tasks() - {asyncio.current_task(), stop}:
            t.cancel()
    emit("exit")
    return 0


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    return asyncio.run(amain(parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())

"""Benchmark peer: the official `kubernetes` Python client's threaded leader election.

Drives kubernetes.leaderelection.leaderelection.LeaderElection with
electionconfig.Config and resourcelock.leaselock.LeaseLock, as the package's own
kubernetes/leaderelection/example.py does. See README.md for the protocol and
for what this library does (and does not do) on shutdown.

    python threaded.py --kubeconfig PATH --namespace NS --lease NAME --identity ID \
        --lease-duration S --renew-deadline S --retry-period S
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
import time

from kubernetes import config
from kubernetes.leaderelection import electionconfig, leaderelection
from kubernetes.leaderelection.resourcelock.leaselock import LeaseLock

log = logging.getLogger("peer")
_out_lock = threading.RLock()  # re-entrant: the signal handler may interrupt emit()


def emit(event: str) -> None:
    line = json.dumps({"event": event, "t": time.monotonic()})
    with _out_lock:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()


class Terminate(BaseException):
    """Raised in the main thread by the SIGTERM/SIGINT handler."""


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
    # The library writes str(lease_duration) into its record and later does
    # int() on it: int("15.0") raises ValueError, so only whole seconds work.
    if not a.lease_duration.is_integer():
        p.error("--lease-duration must be whole seconds for this library")
    a.lease_duration = int(a.lease_duration)
    return a


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    args = parse_args(argv)

    def on_signal(signum, frame):
        raise Terminate(signum)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    # Sets the default configuration used by client.CoordinationV1Api() in LeaseLock.
    config.load_kube_config(config_file=args.kubeconfig)

    state = {"leading": False}
    state_lock = threading.RLock()
    work_done = threading.Event()

    def onstarted_leading() -> None:
        # Runs in a daemon thread started by the library; the library gives
        # it no way to learn that leadership ended except onstopped_leading.
        with state_lock:
            state["leading"] = True
            emit("started")
        work_done.wait()

    def onstopped_leading() -> None:
        with state_lock:
            if state["leading"]:
                state["leading"] = False
                emit("stopped")
        work_done.set()

    def stop_work() -> None:
        onstopped_leading()

    emit("ready")
    try:
        while True:
            work_done.clear()
            lock = LeaseLock(args.lease, args.namespace, args.identity)
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
                leaderelection.LeaderElection(cfg).run()
                log.info("LeaderElection.run() returned (leadership lost); re-entering")
            except Exception:
                # E.g. urllib3 connection errors are not caught by the library
                # (only ApiException is) and end run(); a real operator would
                # crash and be restarted. The peer logs and re-enters instead.
                log.exception("LeaderElection.run() raised; re-entering after retry_period")
                stop_work()
                time.sleep(args.retry_period)
    except Terminate:
        # No release in this library: the lease stays held by this identity
        # until it expires; the guarded work just stops with the process.
        stop_work()
        emit("exit")
        sys.stdout.flush()
        os._exit(0)  # daemon threads may be blocked in HTTP calls
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Scale benchmark: K leases in ONE trio process, one lease_guard Elector per lease.

    python benchmarks/scale.py --kubeconfig PATH --namespace NS --leases K [--seconds S]
        [--retry-period 2] [--leases-per-client N] [--prefix NAME]

Prints one JSON object (last line of stdout) with, over a steady window of S seconds
once every Elector leads:
    cpu_fraction     (utime+stime of this process) / wall time: 1.0 = one core
    cpu_ms_per_renewal  CPU of the window / renewals in it (contention disturbs it less than wall time)
    held_fraction    Electors leading at the end / K (held_min, held_mean: over the window)
    declined_acquisitions  acquisitions the store refused for want of headroom (AcquisitionGate)
                     during the window (declined_total: since the start)
    acquisitions     writes that took a Lease (a create, or a new holder or term) in the window
    requests_per_s   HTTP requests sent by the clients (httpx request hook), by method
    lateness_*       renewal lateness of the leases held: for each renewal (a write that keeps
                     the holder and term of the tenure it renews), (time its store.update was
                     called) - (previous write's call time + retry_period), the time the
                     Elector schedules it for; max, p99, median over all renewals. Acquisition
                     attempts of leases not held are not renewals and not in it.
    renewal_rtt_*    of the same renewals: from store.update called to its answer (queue + PUT)
    renewals_per_held  renewals / (held_mean * window / retry_period): 1.0 = every held lease
                     renewed every retry_period
    renewals_per_s_5s_*  renewals answered per second over 5-second stretches of the window: min, median
    lost_at_s        when each lost tenure ended, seconds into the window
    lost             tenures that ended during the window (should be 0)
    rss_peak_mb      VmHWM of this process
    server_cpu_fraction  with --server-pids: CPU of those processes (kube-apiserver, etcd) over
                     the window, by PID, from /proc/PID/stat

One KubernetesLeaseStore serves all K Electors, as an application would use it: the store
keeps watches (one HTTP/1.1 connection each) and requests in separate connection pools.
``--leases-per-client n`` spreads the Electors over ceil(K / n) stores instead.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import resource
import statistics
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import trio

from lease_guard import Elector, KubernetesLeaseStore, LeadershipLost, LeaseRecord, LeaseSpec, StoreUnavailable
from lease_guard.stores.kubernetes import MAX_IN_FLIGHT, Priority, _http_client, write_priority


class TimedStore:
    """Delegates to a KubernetesLeaseStore; records when each Lease write was called."""

    def __init__(self, inner: KubernetesLeaseStore, bench: Bench) -> None:
        self.inner, self.bench = inner, bench

    @property
    def default_namespace(self) -> str:
        return self.inner.default_namespace

    async def get(self, namespace: str, name: str) -> LeaseRecord | None:
        return await self.inner.get(namespace, name)

    async def create(self, namespace: str, name: str, spec: LeaseSpec) -> LeaseRecord:
        self.bench.wrote(name, renewal=False)
        return await self.inner.create(namespace, name, spec)

    async def update(self, current: LeaseRecord, spec: LeaseSpec) -> LeaseRecord:
        # A renewal keeps the holder and term of the tenure it renews; anything else (taking
        # the Lease, a release) is not a renewal and starts no lateness count of its own.
        renewal = bool(spec.holder) and write_priority(current, spec) is Priority.RENEWAL
        called = self.bench.wrote(current.name, renewal=renewal)
        record = await self.inner.update(current, spec)
        if renewal and self.bench.measuring:
            self.bench.renewal_rtt.append(time.monotonic() - called)
        return record

    def watch(self, namespace: str, name: str) -> AsyncIterator[LeaseRecord | None]:
        return self.inner.watch(namespace, name)

    def admits_acquisition(self) -> bool:
        return self.inner.admits_acquisition()


class Bench:
    def __init__(self, retry_period: float) -> None:
        self.retry_period = retry_period
        self.last_write: dict[str, float] = {}
        self.lateness: list[float] = []
        self.renewal_rtt: list[float] = []
        self.acquisitions = 0
        self.lost_at: list[float] = []
        self.measuring = False
        self.requests: Counter[str] = Counter()
        self.leading = 0
        self.lost = 0
        self.entry_retries = 0
        self.all_leading = trio.Event()

    def wrote(self, name: str, *, renewal: bool) -> float:
        """Note a write of Lease `name` called now; a renewal's lateness counts from the previous write."""
        now = time.monotonic()
        prev = self.last_write.get(name)
        if self.measuring:
            if renewal and prev is not None:
                self.lateness.append(now - (prev + self.retry_period))
            elif not renewal:
                self.acquisitions += 1
        self.last_write[name] = now
        return now


def quantiles(xs: list[float]) -> tuple[float | None, float | None, float | None]:
    """Median, p99, max."""
    if not xs:
        return None, None, None
    s = sorted(xs)
    return statistics.median(s), s[min(len(s) - 1, int(0.99 * len(s)))], s[-1]


def process_cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def count_requests(store: KubernetesLeaseStore, bench: Bench) -> None:
    http: Any = _http_client(store._client)

    async def on_request(request: Any) -> None:
        if bench.measuring:
            kind = "WATCH" if request.method == "GET" and "watch" in request.url.params else request.method
            bench.requests[kind] += 1

    hooks = dict(http.event_hooks)
    hooks["request"] = [*hooks.get("request", []), on_request]
    http.event_hooks = hooks


def cpu_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def vm_hwm_mb() -> float:
    with open(f"/proc/{os.getpid()}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


async def main(args: argparse.Namespace) -> dict[str, Any]:
    k = args.leases
    bench = Bench(args.retry_period)
    per = args.leases_per_client or k
    n_clients = math.ceil(k / per)
    stores = [
        KubernetesLeaseStore.from_kubeconfig(
            args.kubeconfig, namespace=args.namespace, max_in_flight=args.max_in_flight
        )
        for _ in range(n_clients)
    ]
    for s in stores:
        count_requests(s, bench)
    t_start = time.monotonic()

    # Enter at most --startup-concurrency Electors at a time: entering does the first read,
    # and a burst of 1000 concurrent GETs gets 429s from kube-apiserver (max-requests-inflight),
    # which an Elector's first read does not retry.
    entering = trio.CapacityLimiter(args.startup_concurrency)

    async def candidate(i: int) -> None:
        store = TimedStore(stores[i // per], bench)
        while True:
            try:
                async with contextlib.AsyncExitStack() as stack:
                    async with entering:
                        elector = await stack.enter_async_context(
                            Elector(
                                f"{args.prefix}-{i}",
                                namespace=args.namespace,
                                identity=f"scale-{i}",
                                lease_duration=args.lease_duration,
                                renew_deadline=args.renew_deadline,
                                retry_period=args.retry_period,
                                store=store,
                            )
                        )
                    await lead_forever(elector)
            except StoreUnavailable:
                # An Elector whose entry gave up on an overloaded server: enter again, as an
                # application's retry loop would (entries that wait through it need no loop).
                bench.entry_retries += 1

    async def lead_forever(elector: Elector) -> None:
        while True:
            try:
                async with elector.leading():
                    bench.leading += 1
                    if bench.leading == k:
                        bench.all_leading.set()
                    try:
                        await trio.sleep_forever()
                    finally:
                        bench.leading -= 1
            except LeadershipLost:
                bench.lost += 1
                if bench.measuring:
                    bench.lost_at.append(time.monotonic())

    result: dict[str, Any] = {"leases": k, "clients": n_clients, "retry_period": args.retry_period}
    try:
        async with trio.open_nursery() as nursery:
            for i in range(k):
                nursery.start_soon(candidate, i)
            with trio.move_on_after(args.startup_timeout) as startup:
                await bench.all_leading.wait()
            result["startup_s"] = time.monotonic() - t_start
            if startup.cancelled_caught:
                result["error"] = f"only {bench.leading}/{k} leading after {args.startup_timeout}s"
            # one full renewal cycle before measuring, so every Lease has a previous write
            await trio.sleep(args.retry_period * 1.5)
            lost0 = bench.lost
            declined0 = sum(s.declined_acquisitions for s in stores)
            bench.measuring = True
            lean0 = {id(s): Counter(s._lean.http.sent) if s._lean is not None else Counter() for s in stores}
            server0 = {pid: process_cpu_seconds(pid) for pid in args.server_pids}
            c0, w0 = cpu_seconds(), time.monotonic()
            held: list[int] = []
            answered: list[int] = []  # renewals answered by the end of each second of the window
            with trio.move_on_after(args.seconds):
                while True:
                    held.append(bench.leading)
                    answered.append(len(bench.renewal_rtt))
                    await trio.sleep(1.0)
            c1, w1 = cpu_seconds(), time.monotonic()
            server1 = {pid: process_cpu_seconds(pid) for pid in args.server_pids}
            bench.measuring = False
            for s in stores:  # renewals of the lean path do not pass httpx's hooks
                if s._lean is not None:
                    bench.requests.update({m: n - lean0[id(s)][m] for m, n in s._lean.http.sent.items()})
            wall = w1 - w0
            late = sorted(bench.lateness)
            held_mean = statistics.fmean(held) if held else float(bench.leading)
            rtt = quantiles(bench.renewal_rtt)
            # Renewals answered per second, over 5-second stretches: the throughput the held leases got.
            per_5s = [(b - a) / 5 for a, b in zip(answered, answered[5:], strict=False)]
            result.update(
                window_s=wall,
                cpu_fraction=(c1 - c0) / wall,
                requests_per_s=sum(bench.requests.values()) / wall,
                requests_by_method={m: n / wall for m, n in bench.requests.items()},
                renewals=len(late),
                expected_renewals=k * wall / args.retry_period,
                expected_renewals_held=held_mean * wall / args.retry_period,
                lateness_max=late[-1] if late else None,
                lateness_p99=late[min(len(late) - 1, int(0.99 * len(late)))] if late else None,
                lateness_median=statistics.median(late) if late else None,
                cpu_ms_per_renewal=(c1 - c0) / len(late) * 1000 if late else None,
                renewal_rtt_median=rtt[0],
                renewal_rtt_p99=rtt[1],
                renewal_rtt_max=rtt[2],
                renewals_per_held=len(late) / (held_mean * wall / args.retry_period) if held_mean else None,
                renewals_per_s_5s_min=min(per_5s, default=None),
                renewals_per_s_5s_median=statistics.median(per_5s) if per_5s else None,
                lost=bench.lost - lost0,
                lost_at_s=[round(t - w0, 1) for t in bench.lost_at],
                leading_at_end=bench.leading,
                held_fraction=bench.leading / k,
                held_min=min(held, default=bench.leading),
                held_mean=held_mean,
                acquisitions=bench.acquisitions,
                entry_retries=bench.entry_retries,
                declined_acquisitions=sum(s.declined_acquisitions for s in stores) - declined0,
                declined_total=sum(s.declined_acquisitions for s in stores),
                server_cpu_fraction={str(pid): (server1[pid] - server0[pid]) / wall for pid in args.server_pids},
                load_average=os.getloadavg(),
                rss_peak_mb=vm_hwm_mb(),
            )
            nursery.cancel_scope.cancel()
    finally:
        for s in stores:
            await s.aclose()
    return result


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--kubeconfig", required=True)
    p.add_argument("--namespace", required=True)
    p.add_argument("--leases", type=int, required=True)
    p.add_argument("--seconds", type=float, default=60.0)
    p.add_argument("--lease-duration", type=float, default=15.0)
    p.add_argument("--renew-deadline", type=float, default=10.0)
    p.add_argument("--retry-period", type=float, default=2.0)
    p.add_argument("--leases-per-client", type=int, default=0)
    p.add_argument("--startup-timeout", type=float, default=300.0)
    p.add_argument("--startup-concurrency", type=int, default=50)
    p.add_argument("--prefix", default=f"scale-{os.getpid()}")
    p.add_argument("--max-in-flight", type=int, default=MAX_IN_FLIGHT, help="requests on the wire per store")
    p.add_argument(
        "--server-pids",
        type=lambda v: [int(x) for x in v.split(",") if x],
        default=[],
        help="comma-separated PIDs (kube-apiserver, etcd) whose CPU over the window to report",
    )
    out = trio.run(main, p.parse_args())
    print(json.dumps(out), flush=True)
    sys.exit(0)

"""Benchmark lease_guard against other leader-election libraries on a real kube-apiserver.

    python benchmarks/run.py --quick                 # ~15 min: see QUICK_COVERS
    python benchmarks/run.py                         # full: both profiles, 20 trials, 10 min steady state
    python benchmarks/run.py --profile default --trials 5 --steady-seconds 60 --only lease-guard,client-go
    python benchmarks/run.py --render benchmarks/results/results-XXXX.json   # re-render BENCHMARKS.md

Starts etcd + kube-apiserver with tests/integration/kube_harness.py (watch timeout 30-60 min as
in a default cluster, and an audit log of Lease requests, so each peer's requests are counted
at the server under its own ServiceAccount), builds the peers
(benchmarks/peers/*/build.sh) and runs them as subprocesses that print JSON lines with
CLOCK_MONOTONIC timestamps; this script timestamps its own actions with time.monotonic()
(the same clock). Raw results go to benchmarks/results/results-<stamp>.json, charts to
benchmarks/results/*.png, the report to BENCHMARKS.md: only between its GENERATED_BEGIN and
GENERATED_END markers, so the sections written there by hand stay (see merge_report); a
partial run (--only, --skip) writes its JSON only, for --render to merge with others.

The latency trials of every (implementation, profile) pair run side by side, each pair on its
own Leases and in its own thread, and so do the request-count windows. The steady-state
windows (CPU, memory, CPU per renewal) run one implementation at a time, each alone; so do
the scale runs, last: K leases in one lease_guard process (benchmarks/scale.py), then K
LeaderElectors in one client-go process, for each K.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import functools
import itertools
import json
import os
import platform
import random
import shlex
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
BENCH = REPO / "benchmarks"
RESULTS = BENCH / "results"
#: What the figures mean, written by people; BENCHMARKS.md quotes it below the tables.
FINDINGS = BENCH / "findings.md"
sys.path.insert(0, str(REPO / "tests" / "integration"))

PROFILES = {"default": (15.0, 10.0, 2.0), "fast": (4.0, 3.0, 1.0)}
IMPLS = ["lease-guard", "client-go", "python-threaded", "python-asyncio", "kube-leader-election"]
LATENCY_METRICS = {
    "handover": "handover (follower started - leader stopped)",
    "handover_from_sigterm": "handover from SIGTERM",
    "failover": "failover after SIGKILL",
    "failover_excess": "failover - lease_duration",
    # The headline: from the admin's PUT being sent. Its answer and the watch event that tells
    # the leader are two deliveries of the same commit, so "from PUT returned" is ~0 by construction.
    "loss_detection_from_sent": "loss detection (from PUT sent)",
    "loss_detection": "loss detection (from PUT returned)",
}

#: What ``--quick`` measures, printed when it starts and written into the report.
QUICK_COVERS = (
    "--quick covers: profile fast only, 5 trials per metric, every implementation: the floor, handover, "
    "handover from SIGTERM, failover after SIGKILL (and its excess over lease_duration), loss detection "
    "(from PUT sent, and returned); the scale runs K = 1, 10, 100 (30 s windows; lease_guard, then client-go "
    "with K LeaderElectors in one process, each alone) and CPU per Lease PUT (benchmarks/put_cost.py). "
    "It skips requests per minute, the steady windows "
    "(CPU, RSS and CPU per renewal of one leader: benchmarks/steady_cpu.py measures that alone), the default "
    "profile's latencies and K >= 250."
)

#: K of the scale runs (leases in one process), by default and with --quick.
SCALE_K = [1, 10, 100, 250, 500, 1000, 2000]
SCALE_K_QUICK = [1, 10, 100]

_COND = threading.Condition()
_SAVE = threading.Lock()

# Every Lease request of the peers' ServiceAccounts, when it arrives and (for watches) when it
# ends; nothing from the scale runs (hundreds of requests a second) or the admin.
AUDIT_POLICY = """\
apiVersion: audit.k8s.io/v1
kind: Policy
rules:
- level: None
  users: ["system:serviceaccount:{ns}:bench-scale"]
- level: Metadata
  userGroups: ["system:serviceaccounts"]
  resources: [{{group: "coordination.k8s.io", resources: ["leases"]}}]
  omitStages: ["ResponseStarted", "Panic"]
- level: None
"""


class Audit:
    """Reads kube-apiserver's JSON audit log: Lease requests per ServiceAccount."""

    def __init__(self, namespace: str) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="lease-guard-bench-audit-"))
        self.policy = self.dir / "policy.yaml"
        self.policy.write_text(AUDIT_POLICY.format(ns=namespace))
        self.path = self.dir / "audit.log"
        self.ns = namespace
        self._lock = threading.Lock()
        self._offset = 0
        self._events: dict[str, list[tuple[float, str, str]]] = {}  # user -> [(wall time, verb, stage)]

    def apiserver_args(self) -> list[str]:
        return [
            f"--audit-policy-file={self.policy}",
            f"--audit-log-path={self.path}",
            "--audit-log-format=json",
            "--audit-log-maxsize=0",
            "--audit-log-mode=blocking",
            # Watches last 30-60 min, as with kube-apiserver's default (the tests use 5 s).
            "--min-request-timeout=1800",
        ]

    def _read(self) -> None:
        if not self.path.exists():
            return
        with self.path.open("rb") as f:
            f.seek(self._offset)
            data = f.read()
        end = data.rfind(b"\n") + 1
        self._offset += end
        for line in data[:end].splitlines():
            ev = json.loads(line)
            t = datetime.datetime.fromisoformat(ev["requestReceivedTimestamp"].replace("Z", "+00:00")).timestamp()
            self._events.setdefault(ev["user"]["username"], []).append((t, ev["verb"], ev["stage"]))

    def counts(self, account: str, t0: float, t1: float) -> dict[str, int]:
        """Requests of ServiceAccount `account` received in [t0, t1) (wall clock), by verb.

        Complete once t1 has passed: in blocking mode kube-apiserver writes a request's
        RequestReceived event before it handles the request."""
        with self._lock:
            self._read()
            evs = self._events.get(f"system:serviceaccount:{self.ns}:{account}", [])
        out: dict[str, int] = {}
        for t, verb, stage in evs:
            if stage == "RequestReceived" and t0 <= t < t1:
                out[verb] = out.get(verb, 0) + 1
        return out

    def open_watches(self, account: str, since: float) -> int:
        """Watches of `account` opened since `since` and not yet ended."""
        with self._lock:
            self._read()
            evs = self._events.get(f"system:serviceaccount:{self.ns}:{account}", [])
        opened = sum(1 for t, v, s in evs if v == "watch" and s == "RequestReceived" and t >= since)
        ended = sum(1 for t, v, s in evs if v == "watch" and s == "ResponseComplete" and t >= since)
        return opened - ended


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------
# Peers


def build_peers(only: list[str]) -> tuple[dict[str, list[str]], dict[str, str]]:
    """argv prefix per implementation, and the reason for each that failed to build."""
    argv: dict[str, list[str]] = {}
    failed: dict[str, str] = {}

    def build(script: str) -> str:
        proc = subprocess.run(["bash", str(BENCH / "peers" / script / "build.sh")], capture_output=True, text=True)
        lines = proc.stdout.strip().splitlines()
        if proc.returncode != 0 or not lines or not Path(lines[-1]).exists():
            tail = (proc.stdout + proc.stderr).strip().splitlines()[-5:]
            raise RuntimeError(f"build.sh exit {proc.returncode}: " + " | ".join(tail))
        return lines[-1]

    for impl in only:
        try:
            if impl == "lease-guard":
                argv[impl] = [sys.executable, str(BENCH / "peers" / "lease-guard" / "peer.py")]
            elif impl == "client-go":
                argv[impl] = [build("client-go")]
            elif impl in ("python-threaded", "python-asyncio"):
                py = build("python-kubernetes")
                script = "threaded.py" if impl == "python-threaded" else "aio.py"
                argv[impl] = [py, str(BENCH / "peers" / "python-kubernetes" / script)]
            elif impl == "kube-leader-election":
                argv[impl] = [build("kube-leader-election")]
            else:
                raise RuntimeError(f"unknown implementation {impl!r}")
        except Exception as e:  # reported; the run goes on without it
            failed[impl] = str(e)
            log(f"SKIP {impl}: build failed: {e}")
    return argv, failed


class Peer:
    def __init__(self, impl: str, argv: list[str], log_path: Path, env: dict[str, str]) -> None:
        self.impl = impl
        self.events: list[dict[str, Any]] = []
        self.identity = argv[argv.index("--identity") + 1]
        self._err = log_path.open("ab")
        self._err.write(f"\n==== {shlex.join(argv)}\n".encode())
        self._err.flush()
        self.proc = subprocess.Popen(
            argv, stdout=subprocess.PIPE, stderr=self._err, stdin=subprocess.DEVNULL, env=env, start_new_session=True
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            try:
                ev = json.loads(raw)
            except ValueError:
                continue
            ev["_recv"] = time.monotonic()
            with _COND:
                self.events.append(ev)
                _COND.notify_all()
        with _COND:
            self.events.append({"event": "_eof", "t": time.monotonic()})
            _COND.notify_all()

    def find(self, event: str, start: int = 0) -> dict[str, Any] | None:
        return next((e for e in self.events[start:] if e["event"] == event), None)

    def signal(self, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.proc.pid, sig)

    def stop(self, timeout: float = 20.0) -> None:
        if self.proc.poll() is None:
            self.signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.signal(signal.SIGKILL)
                self.proc.wait(10)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self._reader.join(5)
        self._err.close()

    def proc_stats(self) -> dict[str, float]:
        """CPU seconds (utime+stime) and VmHWM (MB) from /proc."""
        with open(f"/proc/{self.proc.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        ticks = os.sysconf("SC_CLK_TCK")
        cpu = (int(fields[11]) + int(fields[12])) / ticks
        hwm = float("nan")
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    hwm = int(line.split()[1]) / 1024
        return {"cpu_s": cpu, "rss_peak_mb": hwm}


def _proc_cpu(pid: int) -> float:
    """CPU seconds (utime+stime) of a process, from /proc/PID/stat."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _quantiles(xs: list[float]) -> tuple[float | None, float | None, float | None]:
    """Median, p99, max."""
    if not xs:
        return None, None, None
    s = sorted(xs)
    return statistics.median(s), s[min(len(s) - 1, int(0.99 * len(s)))], s[-1]


class LeaseCounter:
    """Renewals of the Leases PREFIX-* by `identity`, seen at the server on one watch of the namespace.

    A renewal is an event of a Lease that keeps the previous event's holder (`identity`) and
    leaseTransitions; its lateness here is the time since the previous one's event minus
    retry_period (what the server saw, so it includes the round trips' jitter)."""

    def __init__(self, kube: Any, namespace: str, prefix: str, identity: str, retry_period: float) -> None:
        self.prefix, self.identity, self.retry_period = f"{prefix}-", identity, retry_period
        self.client = kube.sync_admin_client()
        self.ns = namespace
        self._lock = threading.Lock()
        self._last: dict[str, tuple[str | None, int | None, float]] = {}  # name -> holder, term, seen
        self._measuring = False
        self._renewals = 0
        self._lateness: list[float] = []
        self._stop = False
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        from lightkube.resources.coordination_v1 import Lease

        with contextlib.suppress(Exception):
            for _, lease in self.client.watch(Lease, namespace=self.ns):
                if self._stop:
                    return
                name = lease.metadata.name
                if not name.startswith(self.prefix):
                    continue
                now = time.monotonic()
                holder, term = lease.spec.holderIdentity, lease.spec.leaseTransitions
                with self._lock:
                    prev = self._last.get(name)
                    if self._measuring and prev and prev[0] == holder == self.identity and prev[1] == term:
                        self._renewals += 1
                        self._lateness.append(now - prev[2] - self.retry_period)
                    self._last[name] = (holder, term, now)

    def held(self, lease_duration: float) -> int:
        """Leases whose last event names `identity` as holder, seen within lease_duration."""
        now = time.monotonic()
        with self._lock:
            return sum(1 for h, _, t in self._last.values() if h == self.identity and now - t < lease_duration)

    def start_window(self) -> None:
        with self._lock:
            self._measuring, self._renewals, self._lateness = True, 0, []

    def end_window(self) -> tuple[int, list[float]]:
        with self._lock:
            self._measuring = False
            return self._renewals, list(self._lateness)

    def close(self) -> None:
        self._stop = True
        with contextlib.suppress(Exception):
            self.client.close()


def wait_for(pred: Callable[[], Any], timeout: float) -> Any:
    """Wait (on peer output) until pred() returns something truthy; None on timeout."""
    deadline = time.monotonic() + timeout
    with _COND:
        while True:
            got = pred()
            if got:
                return got
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            _COND.wait(min(left, 0.5))


class TrialError(Exception):
    pass


# --------------------------------------------------------------------------------------
# The bench context


class Bench:
    def __init__(self, kube: Any, args: argparse.Namespace, argv: dict[str, list[str]], audit: Audit) -> None:
        from lightkube.models.rbac_v1 import PolicyRule

        self.kube, self.args, self.argv, self.audit = kube, args, argv, audit
        self.ns = kube.namespace
        self._local = threading.local()
        self.watch_client = kube.sync_admin_client()
        # One ServiceAccount per implementation (its requests are counted at the server under
        # it) and one for the scale runs: any Lease in the namespace, nothing else.
        rules = [
            PolicyRule(
                apiGroups=["coordination.k8s.io"],
                resources=["leases"],
                verbs=["get", "list", "watch", "create", "update", "patch"],
            )
        ]
        self.kubeconfigs = {impl: kube.kubeconfig_for_rules(self.account(impl), rules) for impl in [*argv, "scale"]}
        self.env = dict(os.environ, NO_PROXY="127.0.0.1,localhost", no_proxy="127.0.0.1,localhost", TZ="UTC")
        self.logdir = RESULTS / "logs"
        self.logdir.mkdir(parents=True, exist_ok=True)
        self._seq = itertools.count(1)
        self.stamp = time.strftime("%Y%m%d-%H%M%S")

    @staticmethod
    def account(impl: str) -> str:
        return f"bench-{impl}"

    @property
    def admin(self) -> Any:
        """The admin's lightkube Client, one per thread."""
        client = getattr(self._local, "admin", None)
        if client is None:
            client = self._local.admin = self.kube.sync_admin_client()
        return client

    def lease_name(self, what: str) -> str:
        return f"b{self.stamp[-6:]}-{what}-{next(self._seq)}"

    def spawn(self, impl: str, profile: str, lease: str, identity: str, *extra: str) -> Peer:
        ld, rd, rp = PROFILES[profile]
        argv = [
            *self.argv[impl],
            "--kubeconfig", str(self.kubeconfigs[impl]),
            "--namespace", self.ns,
            "--lease", lease,
            "--identity", identity,
            "--lease-duration", f"{ld:g}",
            "--renew-deadline", f"{rd:g}",
            "--retry-period", f"{rp:g}",
            *extra,
        ]  # fmt: skip
        return Peer(impl, argv, self.logdir / f"{impl}.log", self.env)

    # admin-side Lease operations -----------------------------------------------------

    def create_lease(self, name: str, holder: str | None = None, duration: int | None = None) -> Any:
        from lightkube.models.coordination_v1 import LeaseSpec
        from lightkube.models.meta_v1 import ObjectMeta
        from lightkube.resources.coordination_v1 import Lease

        spec = LeaseSpec()
        if holder is not None:
            now = datetime.datetime.now(datetime.UTC)
            spec = LeaseSpec(
                holderIdentity=holder,
                leaseDurationSeconds=duration,
                acquireTime=now,
                renewTime=now,
                leaseTransitions=0,
            )
        return self.admin.create(Lease(metadata=ObjectMeta(name=name, namespace=self.ns), spec=spec))

    def steal(self, name: str) -> tuple[float, float]:
        """PUT holderIdentity=admin-steal with a resourceVersion precondition; (sent, returned)."""
        from lightkube import ApiError
        from lightkube.resources.coordination_v1 import Lease

        for _ in range(50):
            obj = self.admin.get(Lease, name, namespace=self.ns)
            now = datetime.datetime.now(datetime.UTC)
            obj.spec.holderIdentity = "admin-steal"
            obj.spec.leaseDurationSeconds = 3600
            obj.spec.acquireTime = now
            obj.spec.renewTime = now
            obj.spec.leaseTransitions = (obj.spec.leaseTransitions or 0) + 1
            t0 = time.monotonic()
            try:
                self.admin.replace(obj)
            except ApiError as e:
                if e.status.code == 409:
                    continue
                raise
            return t0, time.monotonic()
        raise TrialError("steal: 50 conflicts in a row")

    def delete_lease(self, name: str) -> None:
        from lightkube.resources.coordination_v1 import Lease

        with contextlib.suppress(Exception):
            self.admin.delete(Lease, name, namespace=self.ns)

    # pairs -------------------------------------------------------------------------------

    @contextlib.contextmanager
    def candidates(self, impl: str, profile: str, what: str, n: int) -> Iterator[tuple[str, list[Peer]]]:
        lease = self.lease_name(what)
        if impl == "python-asyncio":
            self.create_lease(lease)  # aio.py cannot create a Lease (kubernetes 37.0.2 bug)
        peers: list[Peer] = []
        try:
            for i in range(n):
                peers.append(self.spawn(impl, profile, lease, f"{lease}-{'ab'[i]}"))
            if not wait_for(lambda: all(p.find("ready") for p in peers), 90):
                raise TrialError("peers not ready within 90 s")
            yield lease, peers
        finally:
            for p in peers:
                p.stop()
            self.delete_lease(lease)

    def wait_leader(self, peers: list[Peer], profile: str) -> tuple[Peer, int]:
        ld, _, _ = PROFILES[profile]
        leader = wait_for(lambda: next((p for p in peers if p.find("started")), None), 2 * ld + 60)
        if leader is None:
            raise TrialError("nobody started leading")
        # Steady state: a couple of renewals observed by the follower before acting, plus a
        # random fraction of retry_period, so the action does not land at a fixed phase of the
        # renewal/poll cycle (a fixed 0.5 s made polling peers' numbers constant).
        rp = PROFILES[profile][2]
        time.sleep(rp * 2 + 0.5 + random.uniform(0, rp))
        if leader.find("stopped"):
            raise TrialError("leader stopped on its own before the action")
        return leader, len(leader.events)

    # metrics -----------------------------------------------------------------------------

    def trial_handover(self, impl: str, profile: str) -> dict[str, float]:
        ld = PROFILES[profile][0]
        with self.candidates(impl, profile, "ho", 2) as (_, peers):
            leader, _ = self.wait_leader(peers, profile)
            follower = next(p for p in peers if p is not leader)
            start = len(follower.events)
            t_term = time.monotonic()
            leader.signal(signal.SIGTERM)
            got = wait_for(lambda: follower.find("started", start), 2 * ld + 30)
            stopped = wait_for(lambda: leader.find("stopped"), 30)
            if not got:
                raise TrialError("follower did not take over")
            if not stopped:
                raise TrialError("leader printed no 'stopped'")
            return {"handover": got["t"] - stopped["t"], "handover_from_sigterm": got["t"] - t_term}

    def trial_failover(self, impl: str, profile: str) -> dict[str, float]:
        ld = PROFILES[profile][0]
        with self.candidates(impl, profile, "fo", 2) as (_, peers):
            leader, _ = self.wait_leader(peers, profile)
            follower = next(p for p in peers if p is not leader)
            start = len(follower.events)
            t_kill = time.monotonic()
            leader.signal(signal.SIGKILL)
            got = wait_for(lambda: follower.find("started", start), 3 * ld + 30)
            if not got:
                raise TrialError("follower did not take over")
            return {"failover": got["t"] - t_kill, "failover_excess": got["t"] - t_kill - ld}

    def trial_loss(self, impl: str, profile: str) -> dict[str, float]:
        ld, rd, _ = PROFILES[profile]
        with self.candidates(impl, profile, "loss", 1) as (lease, peers):
            leader, start = self.wait_leader(peers, profile)
            t_sent, t_ret = self.steal(lease)
            got = wait_for(lambda: leader.find("stopped", start), ld + rd + 30)
            if not got:
                raise TrialError("leader did not notice the steal")
            return {"loss_detection": got["t"] - t_ret, "loss_detection_from_sent": got["t"] - t_sent}

    def floor(self, n: int) -> dict[str, list[float]]:
        """Raw PUT round trip (admin) and watch delivery to a second bare lightkube client."""
        from lightkube.resources.coordination_v1 import Lease

        name = self.lease_name("floor")
        obj = self.create_lease(name, "floor", 15)
        seen: dict[str, float] = {}

        def watch() -> None:
            with contextlib.suppress(Exception):
                for _, lease in self.watch_client.watch(
                    Lease,
                    namespace=self.ns,
                    fields={"metadata.name": name},
                    resource_version=obj.metadata.resourceVersion,
                ):
                    t = time.monotonic()
                    with _COND:
                        seen[lease.metadata.resourceVersion] = t
                        _COND.notify_all()

        threading.Thread(target=watch, daemon=True).start()
        time.sleep(1.0)  # let the watch open
        put, delivery = [], []
        cur = self.admin.get(Lease, name, namespace=self.ns)
        for _ in range(n):
            cur.spec.renewTime = datetime.datetime.now(datetime.UTC)
            t0 = time.monotonic()
            cur = self.admin.replace(cur)
            t1 = time.monotonic()
            rv = cur.metadata.resourceVersion
            t2 = wait_for(functools.partial(seen.get, rv), 10)
            put.append(t1 - t0)
            if t2:
                delivery.append(t2 - t0)
            time.sleep(0.2)
        self.delete_lease(name)
        return {"put_rtt": put, "watch_delivery": delivery}

    # server-side request counting (the audit log) ---------------------------------------

    def requests_window(self, impl: str, profile: str, role: str, seconds: float) -> dict[str, Any]:
        """Requests of ONE process over `seconds`, counted at the server under its own
        ServiceAccount: as leader, or as follower of a Lease the admin holds and renews every
        retry_period (the admin's requests are not in the count)."""
        from lightkube import ApiError
        from lightkube.resources.coordination_v1 import Lease

        ld, _, rp = PROFILES[profile]
        lease = self.lease_name("req")
        stop = threading.Event()
        if role == "follower":
            self.create_lease(lease, "admin-holder", int(ld))

            def renew() -> None:
                admin = self.kube.sync_admin_client()
                cur = admin.get(Lease, lease, namespace=self.ns)
                while not stop.wait(rp):
                    cur.spec.renewTime = datetime.datetime.now(datetime.UTC)
                    try:
                        cur = admin.replace(cur)
                    except ApiError:
                        cur = admin.get(Lease, lease, namespace=self.ns)
                admin.close()

            threading.Thread(target=renew, daemon=True).start()
        elif impl == "python-asyncio":
            self.create_lease(lease)
        extra = ("--count-requests",) if impl == "lease-guard" else ()
        spawned = time.time()
        peer = self.spawn(impl, profile, lease, f"{lease}-{role}", *extra)
        try:
            if not wait_for(lambda: peer.find("ready"), 90):
                raise TrialError("peer not ready")
            if role == "leader" and not wait_for(lambda: peer.find("started"), 2 * ld + 60):
                raise TrialError("did not lead")
            time.sleep(rp * 2 + 0.5)
            if role == "follower" and peer.find("started"):
                raise TrialError("follower took the admin-held Lease")
            n0 = len(peer.events)
            if impl == "lease-guard":
                peer.signal(signal.SIGUSR1)
            t0 = time.time()
            time.sleep(seconds)
            t1 = time.time()
            if impl == "lease-guard":
                peer.signal(signal.SIGUSR1)
            if role == "follower" and peer.find("started"):
                raise TrialError("follower took the admin-held Lease during the window")
            minutes = (t1 - t0) / 60
            counts = self.audit.counts(self.account(impl), t0, t1)
            server = {verb: round(n / minutes, 2) for verb, n in sorted(counts.items())}
            res: dict[str, Any] = {
                "server_per_min": server,
                "server_total_per_min": round(sum(counts.values()) / minutes, 2),
                "open_watches": self.audit.open_watches(self.account(impl), spawned),
                "window_s": round(t1 - t0, 1),
            }
            if impl == "lease-guard":

                def two_snaps() -> list[dict[str, Any]] | None:
                    snaps = [e for e in peer.events[n0:] if e["event"] == "requests"]
                    return snaps[:2] if len(snaps) >= 2 else None

                snaps = wait_for(two_snaps, 10)
                if snaps:
                    a, b = snaps[0]["counts"], snaps[1]["counts"]
                    mins = (snaps[1]["t"] - snaps[0]["t"]) / 60
                    res["client_per_min"] = {
                        k: round((b.get(k, 0) - a.get(k, 0)) / mins, 2) for k in b if b.get(k, 0) != a.get(k, 0)
                    }
            return res
        finally:
            stop.set()
            peer.stop()
            self.delete_lease(lease)

    def steady(self, impl: str, profile: str, seconds: float) -> dict[str, Any]:
        """CPU and memory of a leader and its follower over `seconds`, and the leader's renewals
        counted at the server: distinct resourceVersions of the Lease with the leader as holder
        in one term, from a GET every quarter of retry_period (as benchmarks/steady_cpu.py)."""
        from lightkube.resources.coordination_v1 import Lease

        rp = PROFILES[profile][2]
        with self.candidates(impl, profile, "steady", 2) as (lease, peers):
            leader, _ = self.wait_leader(peers, profile)
            follower = next(p for p in peers if p is not leader)
            versions: set[str] = set()
            terms: set[int | None] = set()
            s0 = {p.identity: p.proc_stats() for p in peers}
            t0 = time.monotonic()
            while time.monotonic() - t0 < seconds:
                with contextlib.suppress(Exception):
                    obj = self.admin.get(Lease, lease, namespace=self.ns)
                    if obj.spec.holderIdentity == leader.identity and obj.metadata.resourceVersion:
                        versions.add(obj.metadata.resourceVersion)
                        terms.add(obj.spec.leaseTransitions)
                time.sleep(min(rp / 4, max(0.0, seconds - (time.monotonic() - t0))))
            wall = time.monotonic() - t0
            s1 = {p.identity: p.proc_stats() for p in peers}
            out: dict[str, Any] = {}
            for role, p in (("leader", leader), ("follower", follower)):
                cpu = s1[p.identity]["cpu_s"] - s0[p.identity]["cpu_s"]
                out[role] = {
                    "cpu_s": round(cpu, 3),
                    "cpu_s_per_min": round(cpu / wall * 60, 4),
                    "rss_peak_mb": round(s1[p.identity]["rss_peak_mb"], 1),
                }
            out["window_s"] = round(wall, 1)
            out["still_leading"] = not leader.find("stopped")
            renewals = max(0, len(versions) - 1)
            out["renewals"] = renewals
            out["expected_renewals"] = round(wall / rp)
            out["terms"] = len(terms)
            if renewals:
                out["cpu_ms_per_renewal"] = round(out["leader"]["cpu_s"] / renewals * 1000, 3)
            out["loadavg"] = Path("/proc/loadavg").read_text().split()[0]
            return out

    def _script(self, name: str, *args: str, timeout: float) -> dict[str, Any]:
        """Run benchmarks/<name> as the scale ServiceAccount; its last stdout line is JSON."""
        kubeconfig = str(self.kubeconfigs["scale"])
        argv = [sys.executable, str(BENCH / name), "--kubeconfig", kubeconfig, "--namespace", self.ns]
        with (self.logdir / "scale.log").open("ab") as err:
            proc = subprocess.run(
                [*argv, *args], stdout=subprocess.PIPE, stderr=err, text=True, env=self.env, timeout=timeout
            )
        lines = proc.stdout.strip().splitlines()
        if proc.returncode != 0 or not lines:
            raise TrialError(f"{name} exit {proc.returncode}")
        result: dict[str, Any] = json.loads(lines[-1])
        return result

    def put_cost(self, requests: int = 1000) -> dict[str, Any]:
        """CPU per Lease PUT by Python HTTP stack (benchmarks/put_cost.py)."""
        return self._script(
            "put_cost.py", "--requests", str(requests), "--lease", self.lease_name("putcost"), timeout=600
        )

    def scale_client_go(self, k: int, seconds: float, startup_timeout: float = 300.0) -> dict[str, Any]:
        """K LeaderElectors of client-go in one Go process (benchmarks/peers/client-go --leases K),
        the same profile (default) and server as scale.py; renewals counted at the server from
        one watch of the namespace's Leases."""
        ld, _, rp = PROFILES["default"]
        prefix = self.lease_name(f"goscale{k}")
        identity = f"{prefix}-holder"
        counter = LeaseCounter(self.kube, self.ns, prefix, identity, rp)
        argv = [
            *self.argv["client-go"],
            *("--kubeconfig", str(self.kubeconfigs["scale"]), "--namespace", self.ns),
            *("--lease", prefix, "--identity", identity, "--leases", str(k)),
            *("--lease-duration", f"{ld:g}", "--renew-deadline", f"{PROFILES['default'][1]:g}"),
            *("--retry-period", f"{rp:g}"),
        ]
        peer = Peer("client-go", argv, self.logdir / "client-go-scale.log", self.env)
        out: dict[str, Any] = {"leases": k, "clients": 1, "retry_period": rp}
        try:
            t_start = time.monotonic()

            def started() -> int:
                return sum(1 for e in peer.events if e["event"] == "started")

            if not wait_for(lambda: started() >= k or peer.find("_eof"), startup_timeout) or peer.find("_eof"):
                out["error"] = f"only {counter.held(ld)}/{k} held after {startup_timeout:g} s"
            out["startup_s"] = time.monotonic() - t_start
            time.sleep(rp * 1.5)
            pids = self.server_pids()
            stopped0 = sum(1 for e in peer.events if e["event"] == "stopped")
            server0 = {name: _proc_cpu(pid) for name, pid in pids.items()}
            c0, w0 = peer.proc_stats()["cpu_s"], time.monotonic()
            counter.start_window()
            held: list[int] = []
            while time.monotonic() - w0 < seconds:
                held.append(counter.held(ld))
                time.sleep(min(1.0, max(0.0, seconds - (time.monotonic() - w0))))
            stats = peer.proc_stats()
            c1, w1 = stats["cpu_s"], time.monotonic()
            server1 = {name: _proc_cpu(pid) for name, pid in pids.items()}
            renewals, late = counter.end_window()
            wall = w1 - w0
            held_mean = statistics.fmean(held) if held else 0.0
            q = _quantiles(late)
            out.update(
                window_s=wall,
                cpu_fraction=(c1 - c0) / wall,
                renewals=renewals,
                expected_renewals=k * wall / rp,
                expected_renewals_held=held_mean * wall / rp,
                cpu_ms_per_renewal=(c1 - c0) / renewals * 1000 if renewals else None,
                lateness_median=q[0],
                lateness_p99=q[1],
                lateness_max=q[2],
                lateness_seen_at="server (watch): interval between renewals - retry_period",
                lost=sum(1 for e in peer.events if e["event"] == "stopped") - stopped0,
                leading_at_end=counter.held(ld),
                held_fraction=counter.held(ld) / k,
                held_min=min(held, default=0),
                held_mean=held_mean,
                rss_peak_mb=stats["rss_peak_mb"],
                server_cpu_fraction={name: (server1[name] - server0[name]) / wall for name in pids},
                load_average=os.getloadavg(),
            )
            return out
        finally:
            peer.stop()
            counter.close()

    def server_pids(self) -> dict[str, int]:
        """PIDs of the local kube-apiserver and etcd (none with LEASE_GUARD_KUBECONFIG)."""
        local = self.kube.local
        if local is None:
            return {}
        procs = {"kube-apiserver": local.apiserver.popen, "etcd": local.etcd.popen}
        return {name: p.pid for name, p in procs.items() if p is not None}

    def scale(self, k: int, seconds: float) -> dict[str, Any]:
        pids = self.server_pids()
        r = self._script(
            "scale.py",
            *("--leases", str(k), "--seconds", f"{seconds:g}", "--prefix", self.lease_name(f"scale{k}")),
            *("--server-pids", ",".join(str(p) for p in pids.values())),
            timeout=3600,
        )
        by_pid = r.pop("server_cpu_fraction", {})
        r["server_cpu_fraction"] = {name: by_pid.get(str(pid)) for name, pid in pids.items()}
        return r


# --------------------------------------------------------------------------------------
# Statistics, table, charts, report


def _order(impl: str) -> int:
    """Report rows in the order of IMPLS."""
    return IMPLS.index(impl) if impl in IMPLS else len(IMPLS)


def summarize(xs: list[float]) -> dict[str, float] | None:
    if not xs:
        return None
    s = sorted(xs)
    p95 = s[min(len(s) - 1, max(0, round(0.95 * (len(s) - 1))))]
    return {"n": len(s), "median": statistics.median(s), "p95": p95, "min": s[0], "max": s[-1]}


def ms(x: float | None) -> str:
    return "—" if x is None else f"{x * 1000:.0f}"


def row_floor(res: dict[str, Any], profile: str, impl: str) -> float | None:
    """The floor measured in the run that measured this row."""
    by_row: dict[str, float | None] = res.get("floor_by_row", {})
    return by_row.get(f"{profile} {impl}") or res.get("floor_by_profile", {}).get(profile) or res.get("floor_s")


def latency_table(res: dict[str, Any], profile: str) -> str:
    impls = [i for i in res["impls"] if res["latency"].get(profile, {}).get(i)]
    if not impls:
        return ""
    cols = [m for m in LATENCY_METRICS if any(res["latency"][profile][i].get(m) for i in impls)]
    head = "| implementation | " + " | ".join(f"{LATENCY_METRICS[m]}: median / p95 [min, max] ms" for m in cols)
    lines = [head + " | failed trials |", "|" + "---|" * (len(cols) + 2)]
    for i in impls:
        row = res["latency"][profile][i]
        floor = row_floor(res, profile, i)
        cells = []
        for m in cols:
            s = summarize(row.get(m, []))
            if s is None:
                cells.append("—")
                continue
            cell = f"{ms(s['median'])} / {ms(s['p95'])} [{ms(s['min'])}, {ms(s['max'])}] n={s['n']}"
            if floor and m in ("handover", "loss_detection_from_sent"):
                cell += f" = {s['median'] / floor:.1f}x floor"
            cells.append(cell)
        fails = sum(len(v) for v in res["errors"].get(profile, {}).get(i, {}).values())
        lines.append(f"| {i} | " + " | ".join(cells) + f" | {fails} |")
    return "\n".join(lines)


def requests_table(res: dict[str, Any], profile: str) -> str:
    data = res.get("requests", {}).get(profile, {})
    if not data:
        return ""
    lines = [
        "| implementation | role | Lease requests/min at the server, by verb (audit log, this process only) | total/min | watches open | lease_guard client-side count/min |",  # noqa: E501
        "|---|---|---|---|---|---|",
    ]
    for impl, roles in sorted(data.items(), key=lambda kv: _order(kv[0])):
        for role, r in sorted(roles.items()):
            if "error" in r:
                lines.append(f"| {impl} | {role} | error: {r['error']} | | | |")
                continue
            verbs = ", ".join(f"{v} {x:g}" for v, x in sorted(r["server_per_min"].items()))
            lines.append(
                f"| {impl} | {role} | {verbs} | {r['server_total_per_min']:g} | {r['open_watches']:g} | {r.get('client_per_min', '')} |"  # noqa: E501
            )
    return "\n".join(lines)


def steady_table(res: dict[str, Any], profile: str) -> str:
    data = res.get("steady", {}).get(profile, {})
    if not data:
        return ""
    lines = [
        "| implementation | window s | leader CPU ms per renewal (renewals) | leader CPU s/min | leader peak RSS MB | follower CPU s/min | follower peak RSS MB | load |",  # noqa: E501
        "|---|---|---|---|---|---|---|---|",
    ]
    for impl, r in sorted(data.items(), key=lambda kv: _order(kv[0])):
        if "error" in r:
            lines.append(f"| {impl} | error: {r['error']} | | | | | | |")
            continue
        L, F = r["leader"], r["follower"]
        per = f"{r['cpu_ms_per_renewal']:.2f} ({r['renewals']})" if r.get("cpu_ms_per_renewal") else "—"
        lines.append(
            f"| {impl} | {r['window_s']:g} | {per} | {L['cpu_s_per_min']:.3f} | {L['rss_peak_mb']:.1f} | {F['cpu_s_per_min']:.3f} | {F['rss_peak_mb']:.1f} | {r.get('loadavg', '—')} |"  # noqa: E501
        )
    return "\n".join(lines)


def _scale_rows(res: dict[str, Any]) -> list[tuple[int, str, dict[str, Any]]]:
    """(K, implementation, result) of the scale runs, by K, lease_guard first."""
    rows = [(int(k), "lease-guard", r) for k, r in res.get("scale", {}).items()]
    rows += [(int(k), "client-go", r) for k, r in res.get("scale_client_go", {}).items()]
    return sorted(rows, key=lambda row: (row[0], _order(row[1])))


def scale_table(res: dict[str, Any]) -> str:
    rows = _scale_rows(res)
    if not rows:
        return ""
    lines = [
        "| K | implementation | held/K at end (min over window) | CPU ms per renewal | renewals / expected of held | "
        "lateness of held leases p50 / p99 / max ms | tenures lost | declined acquisitions | "
        "process CPU (1.0 = a core) | kube-apiserver / etcd CPU | startup s | peak RSS MB | load |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for k, impl, r in rows:
        if "cpu_fraction" not in r:
            lines.append(f"| {k} | {impl} | error: {r.get('error')} |" + " |" * 11)
            continue
        held = r.get("leading_at_end", round(r.get("held_fraction", 0) * k))
        held_min = f" ({r['held_min']})" if "held_min" in r else ""
        cpu = r.get("cpu_ms_per_renewal")
        if cpu is None and r.get("renewals") and r.get("window_s"):  # results from before that field
            cpu = r["cpu_fraction"] * r["window_s"] / r["renewals"] * 1000
        expected = r.get("expected_renewals_held", r["expected_renewals"])
        server = r.get("server_cpu_fraction") or {}
        server_cell = " / ".join(
            "—" if server.get(n) is None else f"{server[n]:.2f}" for n in ("kube-apiserver", "etcd")
        )
        declined = r.get("declined_acquisitions", "—") if impl == "lease-guard" else "—"
        load = r.get("load_average")
        lines.append(
            f"| {k} | {impl} | {held}/{k}{held_min} | {'—' if cpu is None else f'{cpu:.2f}'} | "
            f"{r['renewals']} / {expected:.0f} | "
            f"{ms(r['lateness_median'])} / {ms(r['lateness_p99'])} / {ms(r['lateness_max'])} | "
            f"{r['lost']} | {declined} | {r['cpu_fraction']:.2f} | {server_cell} | {r.get('startup_s', 0):.0f} | "
            f"{r.get('rss_peak_mb', float('nan')):.0f} | {'—' if not load else f'{load[0]:.1f}'} |"
            + (f" {r['error']}" if r.get("error") else "")
        )
    return "\n".join(lines)


def put_cost_text(res: dict[str, Any]) -> str:
    c = res.get("put_cost")
    if not c or "error" in c:
        return f"CPU per PUT: not measured ({c['error']})" if c else ""
    rows = [
        ("lease_guard's store.update (lightkube, httpx, trio)", c["store_update"]),
        ("bare httpx AsyncClient under trio, body pre-serialized", c["httpx_trio"]),
        ("bare httpx Client, blocking sockets", c["httpx_sync"]),
    ]
    lines = [
        f"CPU per Lease PUT, {c['requests']} sequential PUTs (`benchmarks/put_cost.py`); 500 PUT/s "
        "(1000 leases at retry_period 2 s) take 500 x this of a core:",
        "",
        "| HTTP stack | CPU ms per PUT | wall ms per PUT | share of a core at 500 PUT/s |",
        "|---|---|---|---|",
    ]
    for name, r in rows:
        lines.append(f"| {name} | {r['cpu_ms']:.2f} | {r['wall_ms']:.2f} | {r['cpu_ms'] * 0.5:.2f} |")
    return "\n".join(lines)


def floor_text(res: dict[str, Any]) -> str:
    f = res.get("floor")
    if not f:
        return ""
    a, b = summarize(f["put_rtt"]), summarize(f["watch_delivery"])
    if not a or not b:
        return "floor: not measured"
    return (
        f"Floor (n={a['n']}): raw PUT round trip median {a['median'] * 1000:.1f} ms (p95 {a['p95'] * 1000:.1f}); "
        f"watch delivery (PUT sent → event on a second bare lightkube client) median {b['median'] * 1000:.1f} ms "
        f"(p95 {b['p95'] * 1000:.1f}); **floor = PUT RTT + watch delivery = {res['floor_s'] * 1000:.1f} ms** (medians)."
    )


def charts(res: dict[str, Any], stamp: str) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    files = []
    for profile, by_impl in res["latency"].items():
        for m, title in LATENCY_METRICS.items():
            data = [(i, by_impl[i].get(m, [])) for i in res["impls"] if by_impl.get(i, {}).get(m)]
            if not data:
                continue
            fig, ax = plt.subplots(figsize=(8, 0.6 * len(data) + 1.5))
            ax.boxplot(
                [[x * 1000 for x in d] for _, d in data], orientation="horizontal", whis=(5, 95), showfliers=False
            )
            for y, (_, d) in enumerate(data, start=1):
                ax.scatter([x * 1000 for x in d], [y] * len(d), s=12, alpha=0.6, color="tab:red", zorder=3)
            ax.set_yticks(range(1, len(data) + 1), [i for i, _ in data])
            ax.set_xlabel("ms")
            floor = res.get("floor_by_profile", {}).get(profile) or res.get("floor_s")
            if m in ("handover", "loss_detection_from_sent") and floor:
                ax.axvline(floor * 1000 * 3, ls="--", color="gray", label="3x floor")
                ax.legend(loc="best")
            lo = min(min(d) for _, d in data) * 1000
            hi = max(max(d) for _, d in data) * 1000
            if lo > 0 and hi / lo > 50:
                ax.set_xscale("log")
            ax.set_title(f"{title} — profile {profile} {PROFILES[profile]}")
            fig.tight_layout()
            path = RESULTS / f"{stamp}-{profile}-{m}.png"
            fig.savefig(path, dpi=90)
            plt.close(fig)
            files.append(path.name)
    scale_png = scale_chart(res, stamp, plt)
    if scale_png:
        files.append(scale_png.name)
    return files


def scale_chart(res: dict[str, Any], stamp: str, plt: Any) -> Path | None:
    """CPU ms per renewal and leases held / K against K, one line per implementation."""
    rows = [(k, impl, r) for k, impl, r in _scale_rows(res) if r.get("cpu_ms_per_renewal")]
    if not rows:
        return None
    series = {
        impl: [(k, r["cpu_ms_per_renewal"], r.get("leading_at_end", 0) / k) for k, i, r in rows if i == impl]
        for impl in sorted({impl for _, impl, _ in rows}, key=_order)
    }
    return draw_scale(series, RESULTS / f"{stamp}-scale.png", plt)


def draw_scale(series: dict[str, list[tuple[int, float, float]]], path: Path, plt: Any) -> Path:
    """The scale chart: for each implementation, (K, CPU ms per renewal, held / K) points. Also
    used by benchmarks/scale_chart.py for the hand-recorded store-performance runs."""
    fig, (cpu, held) = plt.subplots(1, 2, figsize=(11, 4))
    for impl, points in series.items():
        ks = [k for k, _, _ in points]
        cpu.plot(ks, [c for _, c, _ in points], marker="o", label=impl)
        held.plot(ks, [h for _, _, h in points], marker="o", label=impl)
    for axis, title in ((cpu, "CPU ms per renewal"), (held, "leases held / K (end of window)")):
        axis.set_xscale("log")
        axis.set_xlabel("K leases in one process (retry_period 2 s)")
        axis.set_title(title)
        axis.grid(True, alpha=0.3)
        axis.legend()
    cpu.set_ylim(bottom=0)
    held.set_ylim(0, 1.05)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def merge_scale(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The scale results of several runs in one (a later run wins for the same K and implementation)."""
    merged: dict[str, Any] = {"scale": {}, "scale_client_go": {}}
    for run in runs:
        for key in merged:
            merged[key].update(run.get(key) or {})
    return merged


def merged_scale_chart(runs: list[dict[str, Any]]) -> Path | None:
    """The scale chart of several runs' scale results (see merge_scale)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return scale_chart(merge_scale(runs), f"{time.strftime('%Y%m%d-%H%M%S')}-merged", plt)


def machine_info() -> dict[str, str]:
    def run(*cmd: str) -> str:
        try:
            return subprocess.run(cmd, capture_output=True, text=True, timeout=30).stdout.strip().splitlines()[0]
        except Exception:
            return "?"

    cpu = "?"
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        cpu = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), "?")
    mem = "?"
    with contextlib.suppress(OSError), open("/proc/meminfo") as f:
        mem = f"{int(f.readline().split()[1]) / 1024 / 1024:.1f} GiB"
    from importlib.metadata import version

    libs = {}
    for pkg in ("lease_guard", "trio", "lightkube", "httpx2"):
        with contextlib.suppress(Exception):
            libs[pkg] = version(pkg.replace("_", "-"))
    return {
        "nproc": str(os.cpu_count()),
        "cpu": cpu,
        "memory": mem,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "go": run("go", "version"),
        "rust": run("rustc", "--version"),
        "libraries": ", ".join(f"{k} {v}" for k, v in libs.items())
        + "; peers: client-go v0.37.2, kubernetes (Python) 37.0.2, kube-leader-election 0.44.0 (kube 4.2.0)",
        "loadavg_start": Path("/proc/loadavg").read_text().strip(),
    }


NOTES = """\
### Peer behaviour and known bugs

- **python-threaded / python-asyncio** (official `kubernetes` 37.0.2): neither library can release
  the Lease or stop `run()` on SIGTERM, so "handover" after a graceful stop is really a failover
  (~lease_duration). `--lease-duration` must be whole seconds; retry_period >= 1.
- **python-asyncio**: `LeaseLock.create` passes `pretty=True` where pydantic wants a string, so it
  never creates a missing Lease: the bench creates an empty Lease before starting it (the other
  implementations start on a missing Lease). It also writes local wall-clock time with a `Z`
  suffix (with `TZ=Asia/Tokyo` renewTime lands 9 h in the future); the bench runs peers with TZ=UTC.
- **client-go** prints `stopped` in `OnStoppedLeading`, which runs *after* the release, so the
  follower can print `started` before the old leader prints `stopped`: its handover can be negative;
  "handover from SIGTERM" is the comparable number.
- **kube-leader-election** (Rust 0.44.0) polls `try_acquire_or_renew()` every retry_period and has
  no renew deadline; errors leave the last state unchanged (a leader that cannot reach the API
  keeps believing it leads). It compares renewTime with its own wall clock.
- **lease_guard** prints `stopped` when the guarded block is cancelled; the Elector then releases
  the Lease (one PUT) and the follower, which watches the Lease, acquires it (one PUT).

### Method

Handover/failover: two candidates of one implementation on a fresh Lease; once one leads and
2xretry_period + 0.5 s + uniform(0, retry_period) have passed (steady state, random phase),
SIGTERM (handover) or SIGKILL (failover) it.
Times are the peers' own CLOCK_MONOTONIC stamps (`started`/`stopped`) and the runner's
`time.monotonic()` just before `os.kill`. Loss detection: one candidate; the admin GETs the Lease
and PUTs holderIdentity=admin-steal (resourceVersion precondition, leaseDurationSeconds 3600).
Requests: ONE process over the window (leader; or follower of a Lease that the runner
holds and renews every retry_period), counted at the server from kube-apiserver's audit log
(stage RequestReceived) under the implementation's own ServiceAccount, by verb; "watches open"
is watches that process opened and the server has not ended. kube-apiserver runs with
`--min-request-timeout=1800` here (watches last 30-60 min, the default), so watch re-opens are
rare. lease_guard's client-side count (httpx request hook in the peer) is shown beside it.
CPU/RSS: leader + follower over the steady window, /proc/<pid>/stat utime+stime and VmHWM.

All (implementation, profile) pairs run their latency trials at the same time, each on its
own Leases (the trials of one pair interleave handover, failover and loss), so every
implementation meets the same load. The steady windows run one pair at a time, alone, so
that CPU per renewal is each implementation's own (renewals counted at the server: distinct
resourceVersions of the leader's Lease in its term, from a GET every quarter of
retry_period). The scale runs come last, one process at a time: lease_guard's
(benchmarks/scale.py: lateness and renewals are those of leases held, from the Electors'
store calls; "declined" are acquisitions the store refused for want of headroom), then
client-go's K LeaderElectors (renewals and lateness seen at the server on a watch).
"""


#: BENCHMARKS.md keeps what people wrote; run.py rewrites only what lies between these lines.
GENERATED_BEGIN = "<!-- generated by benchmarks/run.py: begin -->"
GENERATED_END = "<!-- generated by benchmarks/run.py: end -->"
REPORT_TITLE = "# lease_guard benchmarks"


def merge_report(existing: str | None, generated: str) -> str:
    """The report file with `generated` as its generated region, everything else as it was.

    The region is what lies between GENERATED_BEGIN and GENERATED_END (the marker lines
    stay). A file without markers keeps all it says and gets the region appended; no file
    (None or blank) becomes the title and the region. Markers that do not make one region
    (one missing, repeated, or out of order) raise ValueError: fix the file by hand rather
    than let a guess overwrite what people wrote.
    """
    region = f"{GENERATED_BEGIN}\n\n{generated.strip()}\n\n{GENERATED_END}"
    if existing is None or not existing.strip():
        return f"{REPORT_TITLE}\n\n{region}\n"
    begins, ends = existing.count(GENERATED_BEGIN), existing.count(GENERATED_END)
    if begins == ends == 0:
        return f"{existing.rstrip()}\n\n{region}\n"
    start, stop = existing.find(GENERATED_BEGIN), existing.find(GENERATED_END)
    if begins != 1 or ends != 1 or stop < start:
        raise ValueError(
            f"the report has {begins} begin and {ends} end markers of the generated region"
            + (", the end first" if begins == ends == 1 else "")
            + f": expected one of each, in order ({GENERATED_BEGIN!r} ... {GENERATED_END!r})"
        )
    return existing[:start] + region + existing[stop + len(GENERATED_END) :]


def write_report(path: Path, generated: str) -> None:
    """Replace the generated region of the report at `path` (see merge_report)."""
    existing = path.read_text() if path.exists() else None
    path.write_text(merge_report(existing, generated))


def render(res: dict[str, Any], json_name: str) -> str:
    """The generated region of BENCHMARKS.md: the tables of one run (or of merged runs)."""
    m = res["machine"]
    out = [
        f"## Generated report: `benchmarks/run.py`, {res['date']}",
        "",
        f"Produced by `{res['command']}` on {res['date']} (wall time {res.get('elapsed_s', 0) / 60:.1f} min).",
        f"Raw results: [benchmarks/results/{json_name}](benchmarks/results/{json_name}).",
        "",
        "## Machine",
        "",
        f"- {m['nproc']} CPUs: {m['cpu']}; memory {m['memory']}; kernel {m['kernel']}",
        f"- Python {m['python']}; {m['go']}; {m['rust']}",
        f"- {m['libraries']}",
        f"- /proc/loadavg at start: `{m['loadavg_start']}`, at end: `{res.get('loadavg_end', '?')}`. "
        "The machine is shared with other work (builds, tests), so tails are noisy; "
        "kube-apiserver + etcd run on the same 2 cores.",
        "",
    ]
    if res.get("skipped"):
        out += ["Skipped implementations: " + "; ".join(f"**{k}**: {v}" for k, v in res["skipped"].items()), ""]
    out += ["## Floor", "", floor_text(res), ""]
    for r in res.get("runs", [])[1:]:
        if r.get("floor_s"):
            out += [
                f"Floor of the run `{r['command']}` ({r['date']}): {r['floor_s'] * 1000:.1f} ms; "
                "the rows that come from that run are compared with it.",
                "",
            ]
    for profile in res["latency"]:
        ld, rd, rp = PROFILES[profile]
        out += [
            f"## Latencies — profile `{profile}` (lease_duration {ld:g} s, renew_deadline {rd:g} s, retry_period {rp:g} s)",  # noqa: E501
            "",
            latency_table(res, profile),
            "",
        ]
        for key, n in res.get("latency_from", {}).items():
            pr, impl = key.split(" ", 1)
            if pr == profile:
                run = res["runs"][n]
                f = res.get("floor_by_row", {}).get(key)
                floor = f" (its floor: {f * 1000:.1f} ms, the ratios use it)" if f else ""
                out += [f"Row {impl}: from the later run `{run['command']}` ({run['date']}){floor}.", ""]
        errs = res["errors"].get(profile, {})
        for impl, by_metric in errs.items():
            for metric, msgs in by_metric.items():
                if msgs:
                    out.append(f"- failed trials, {impl} {metric}: " + "; ".join(sorted(set(msgs))))
        out.append("")
        for f in res.get("charts", []):
            if f"-{profile}-" in f:
                out.append(f"![{f}](benchmarks/results/{f})")
        out.append("")
    for profile in PROFILES:
        t = requests_table(res, profile)
        if t:
            out += [f"## API requests per minute — profile `{profile}`", "", t, ""]
        t = steady_table(res, profile)
        if t:
            out += [f"## CPU and memory in steady leadership — profile `{profile}`", "", t, ""]
    t = scale_table(res)
    if t:
        out += [
            "## Scale: K leases in one process (retry_period 2 s, lease_duration 15 s)",
            "",
            "Each row one process alone: lease_guard's K Electors on one store (`benchmarks/scale.py`), "
            "client-go's K LeaderElectors on one clientset. Held/K at the end of the steady window (its "
            "minimum in brackets); lateness and renewals are those of leases held (client-go's seen at the "
            "server); declined: acquisitions lease_guard's store refused for want of headroom in the window.",
            "",
            t,
            "",
        ]
        out += [f"![{f}](benchmarks/results/{f})" for f in res.get("charts", []) if f.endswith("-scale.png")]
        out.append("")
        if res.get("put_cost"):
            out += [put_cost_text(res), ""]
    out += ["## Targets", "", *res.get("targets", []), ""]
    out += [NOTES, ""]
    if res.get("not_measured"):
        out += ["### Not measured in this run", "", *[f"- {x}" for x in res["not_measured"]], ""]
    findings = FINDINGS.read_text().strip() if FINDINGS.exists() else res.get("extra_notes")
    if findings:
        out += ["### Findings", "", findings, ""]
    return "\n".join(out)


def check_targets(res: dict[str, Any]) -> list[str]:
    out = []
    for profile, by_impl in res["latency"].items():
        floor = row_floor(res, profile, "lease-guard")
        lg = by_impl.get("lease-guard", {})
        for m, name in (("handover", "handover"), ("loss_detection_from_sent", "loss detection from PUT sent")):
            s = summarize(lg.get(m, []))
            if s and floor:
                ok = s["median"] <= 3 * floor
                ok95 = s["p95"] <= 3 * floor
                out.append(
                    f"- [{profile}] {name} within 3x floor ({3 * floor * 1000:.0f} ms): median {s['median'] * 1000:.0f} ms "  # noqa: E501
                    f"{'OK' if ok else 'MISSED'}, p95 {s['p95'] * 1000:.0f} ms {'OK' if ok95 else 'MISSED'}"
                )
        s = summarize(lg.get("failover_excess", []))
        if s:
            out.append(
                f"- [{profile}] failover within lease_duration + 100 ms: excess median {s['median'] * 1000:.0f} ms "
                f"{'OK' if s['median'] <= 0.1 else 'MISSED'}, max {s['max'] * 1000:.0f} ms {'OK' if s['max'] <= 0.1 else 'MISSED'}"  # noqa: E501
            )
    for profile, by_impl in res.get("requests", {}).items():
        f = by_impl.get("lease-guard", {}).get("follower")
        if f and "error" not in f:
            counts = f["server_per_min"]
            extra = {v: x for v, x in counts.items() if v.lower() not in ("watch", "total")}
            out.append(
                f"- [{profile}] idle follower makes no requests beyond its watch (audit log): "
                f"{extra or 'none besides watch'} "
                f"({'OK' if not any(x > 0.5 for x in extra.values()) else 'MISSED'}); "
                f"watch (re)opens/min {counts.get('watch', 0):g}, watches open {f.get('open_watches', '?')}"
            )
    big = res.get("scale", {}).get("1000")
    if big and "cpu_fraction" in big:
        held = big.get("leading_at_end", 0)
        p99 = big.get("lateness_p99")
        checks = {
            f"all held ({held}/1000)": held == 1000 and not big.get("error"),
            f"0 tenures lost ({big['lost']})": big["lost"] == 0,
            f"p99 lateness < 500 ms ({ms(p99)} ms)": p99 is not None and p99 < 0.5,
            f"at most one core ({big['cpu_fraction']:.2f})": big["cpu_fraction"] <= 1.0,
        }
        ok = all(checks.values())
        out.append(
            f"- 1000 leases at retry_period 2 s over {big['window_s']:.0f} s: "
            + ", ".join(f"{name} {'OK' if good else 'MISSED'}" for name, good in checks.items())
            + f": {'OK' if ok else 'MISSED'}"
        )
    elif res.get("scale"):
        out.append("- 1000 leases: not measured in this run (see Scale)")
    return out


def print_table(res: dict[str, Any]) -> None:
    print()
    print(floor_text(res))
    for profile in res["latency"]:
        print(f"\n== profile {profile} {PROFILES[profile]}")
        print(latency_table(res, profile))
    for profile in PROFILES:
        for t in (requests_table(res, profile), steady_table(res, profile)):
            if t:
                print(f"\n== {profile}\n{t}")
    if res.get("scale") or res.get("scale_client_go"):
        print("\n== scale\n" + scale_table(res))
        print(put_cost_text(res))
    print("\n== targets")
    print("\n".join(res.get("targets", [])))


def finish(res: dict[str, Any], json_path: Path, *, partial: bool = False) -> None:
    """Write the results JSON and, unless the run left metrics or peers out, BENCHMARKS.md's tables.

    A partial run (``--only``, ``--skip``) would replace the tables of a whole run with its
    few rows: its results go to the JSON only; ``--render`` merges it with others.
    """
    res["targets"] = check_targets(res)
    with contextlib.suppress(Exception):
        res["charts"] = charts(res, json_path.stem.removeprefix("results-"))
    json_path.write_text(json.dumps(res, indent=1))
    print_table(res)
    if partial:
        log(
            f"wrote {json_path}; a partial run (--only/--skip) leaves BENCHMARKS.md as it is: "
            f"merge it in with --render RESULTS.json [MORE.json ...]"
        )
        return
    write_report(REPO / "BENCHMARKS.md", render(res, json_path.name))
    log(f"wrote {json_path} and {REPO / 'BENCHMARKS.md'}")


# --------------------------------------------------------------------------------------


def merge(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """One report from several runs: later runs add profiles, metrics and scale points.
    Each profile keeps the floor measured in the run that measured it."""
    res: dict[str, Any] = json.loads(json.dumps(runs[0]))
    res.setdefault("floor_by_profile", {pr: res.get("floor_s") for pr in res["latency"]})
    if len(runs) > 1:
        res["command"] = " ; ".join(r["command"] for r in runs)
        res["elapsed_s"] = sum(r.get("elapsed_s", 0) for r in runs)
    res.setdefault("latency_from", {})
    for n, r in enumerate(runs[1:], start=1):
        for pr, by_impl in r["latency"].items():
            # A later run replaces the implementations it measured, and only those.
            for impl, lat in by_impl.items():
                if any(lat.values()):
                    res["latency"].setdefault(pr, {})[impl] = lat
                    res["errors"].setdefault(pr, {})[impl] = r["errors"].get(pr, {}).get(impl, {})
                    res["latency_from"][f"{pr} {impl}"] = n
                    res.setdefault("floor_by_row", {})[f"{pr} {impl}"] = r.get("floor_s")
        for key in ("requests", "steady"):
            for pr, v in r.get(key, {}).items():
                res[key].setdefault(pr, {}).update(v)
        res["scale"].update(r.get("scale", {}))
        res.setdefault("scale_client_go", {}).update(r.get("scale_client_go", {}))
        if r.get("put_cost"):
            res["put_cost"] = r["put_cost"]
        res["impls"] += [i for i in r["impls"] if i not in res["impls"]]
        res["skipped"].update(r.get("skipped", {}))
        res["not_measured"] = sorted(set(res["not_measured"]) | set(r.get("not_measured", [])))
        res["loadavg_end"] = r.get("loadavg_end")
    res["runs"] = [{"command": r["command"], "date": r["date"], "floor_s": r.get("floor_s")} for r in runs]
    return res


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help=QUICK_COVERS.removeprefix("--quick covers: "))
    p.add_argument("--trials", type=int)
    p.add_argument("--profile", choices=["default", "fast", "both"])
    p.add_argument("--only", help="comma-separated implementations: " + ",".join(IMPLS))
    p.add_argument("--steady-seconds", type=float, default=600.0)
    p.add_argument("--request-seconds", type=float, default=60.0)
    p.add_argument("--scale-seconds", type=float, help="steady window of each scale run (default 60, quick 30)")
    p.add_argument(
        "--scale-k", help=f"comma-separated K values (default {','.join(map(str, SCALE_K))}; quick 1,10,100)"
    )
    p.add_argument("--floor-samples", type=int, default=30)
    p.add_argument("--skip", default="", help="comma-separated metric groups to skip: latency,requests,steady,scale")
    p.add_argument(
        "--render",
        type=Path,
        nargs="+",
        help="re-render BENCHMARKS.md from results JSON(s) and exit; several are merged into one report",
    )
    p.add_argument(
        "--scale-chart",
        type=Path,
        nargs="+",
        metavar="RESULTS",
        help="draw the scale chart (CPU per renewal, held/K against K) of several runs' scale results and exit; "
        "a later file's K replaces an earlier one's",
    )
    args = p.parse_args()

    if args.scale_chart:
        print(merged_scale_chart([json.loads(f.read_text()) for f in args.scale_chart]))
        return 0

    if args.render:
        merged = merge([json.loads(f.read_text()) for f in args.render])
        out = (
            args.render[0]
            if len(args.render) == 1
            else RESULTS / f"results-merged-{time.strftime('%Y%m%d-%H%M%S')}.json"
        )
        finish(merged, out)
        return 0

    trials = args.trials or (5 if args.quick else 20)
    profiles = {"default": ["default"], "fast": ["fast"], "both": ["default", "fast"], None: None}[args.profile]
    profiles = profiles or (["fast"] if args.quick else ["default", "fast"])
    only = args.only.split(",") if args.only else list(IMPLS)
    skip = set(filter(None, args.skip.split(",")))
    if args.quick:
        skip |= {"requests", "steady"}
    scale_k = [int(k) for k in args.scale_k.split(",")] if args.scale_k else SCALE_K_QUICK if args.quick else SCALE_K
    scale_s = args.scale_seconds or (30.0 if args.quick else 60.0)

    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    json_path = RESULTS / f"results-{stamp}.json"
    cmd = "python benchmarks/run.py " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    if os.environ.get("NOX_CURRENT_SESSION"):
        cmd = "nox -s bench -- " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    res: dict[str, Any] = {
        "command": cmd.strip(),
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": machine_info(),
        "profiles": profiles,
        "trials": trials,
        "latency": {pr: {} for pr in profiles},
        "errors": {pr: {} for pr in profiles},
        "requests": {},
        "steady": {},
        "scale": {},
        "scale_client_go": {},
        "not_measured": [],
    }
    if args.quick:
        log(QUICK_COVERS)
        res["not_measured"].append(QUICK_COVERS)
    t_begin = time.monotonic()

    import kube_harness  # type: ignore[import-not-found]  # tests/integration, on sys.path

    argv, failed = build_peers(only)
    res["skipped"] = {k: f"build failed: {v}" for k, v in failed.items()}
    res["impls"] = [i for i in only if i in argv]
    os.environ.setdefault("NO_PROXY", "127.0.0.1,localhost")
    log("starting kube-apiserver + etcd ...")
    audit = Audit(kube_harness.NAMESPACE)
    res["audit_log"] = str(audit.path)

    def save() -> None:
        with _SAVE:
            res["elapsed_s"] = time.monotonic() - t_begin
            json_path.write_text(json.dumps(res, indent=1))

    def side_by_side(jobs: list[tuple[str, Callable[[], None]]]) -> None:
        """Run the jobs at the same time, one thread each; a crash is logged, not fatal."""

        def guarded(name: str, job: Callable[[], None]) -> None:
            try:
                job()
            except Exception:
                log(f"{name}: crashed")
                traceback.print_exc()

        threads = [threading.Thread(target=guarded, args=job, name=job[0], daemon=True) for job in jobs]
        for t in threads:
            t.start()
        for t in threads:
            while t.is_alive():
                t.join(1.0)  # wake up for KeyboardInterrupt

    try:
        with contextlib.contextmanager(kube_harness.kube_server)(audit.apiserver_args()) as kube:
            bench = Bench(kube, args, argv, audit)
            log("measuring the floor")
            res["floor"] = bench.floor(args.floor_samples)
            a, b = summarize(res["floor"]["put_rtt"]), summarize(res["floor"]["watch_delivery"])
            res["floor_s"] = (a["median"] + b["median"]) if a and b else None
            log(floor_text(res))

            def latency(profile: str, impl: str) -> None:
                lat = res["latency"][profile].setdefault(impl, {})
                err = res["errors"][profile].setdefault(impl, {})
                for n in range(trials):
                    for name, fn in (
                        ("handover", bench.trial_handover),
                        ("failover", bench.trial_failover),
                        ("loss", bench.trial_loss),
                    ):
                        try:
                            trial = fn(impl, profile)
                        except Exception as e:  # a failed trial is a result
                            err.setdefault(name, []).append(f"{type(e).__name__}: {e}")
                            log(f"{profile} {impl} {name} #{n + 1}: FAILED {e}")
                            if not isinstance(e, TrialError):
                                traceback.print_exc()
                            continue
                        for key, v in trial.items():
                            lat.setdefault(key, []).append(v)
                        log(
                            f"{profile} {impl} {name} #{n + 1}: "
                            + ", ".join(f"{k}={v * 1000:.0f}ms" for k, v in trial.items())
                        )
                    save()

            def requests(impl: str) -> None:
                for profile in profiles:
                    for role in ("follower", "leader"):
                        r: dict[str, Any]
                        try:
                            r = bench.requests_window(impl, profile, role, args.request_seconds)
                        except Exception as e:
                            r = {"error": f"{type(e).__name__}: {e}"}
                        res["requests"].setdefault(profile, {}).setdefault(impl, {})[role] = r
                        log(f"{profile} {impl} requests {role}: {r}")
                        save()

            def steady(profile: str, impl: str) -> None:
                r: dict[str, Any]
                try:
                    r = bench.steady(impl, profile, args.steady_seconds)
                except Exception as e:
                    r = {"error": f"{type(e).__name__}: {e}"}
                res["steady"].setdefault(profile, {})[impl] = r
                log(f"{profile} {impl} steady: {r}")
                save()

            pairs = [(profile, impl) for profile in profiles for impl in res["impls"]]
            if "latency" not in skip:
                log(f"latency trials: {trials} per metric, {len(pairs)} pairs side by side")
                side_by_side([(f"{pr} {i}", functools.partial(latency, pr, i)) for pr, i in pairs])
            if "requests" not in skip:
                log(f"requests: {args.request_seconds:g} s windows, implementations side by side")
                side_by_side([(i, functools.partial(requests, i)) for i in res["impls"]])
            if "steady" not in skip:
                log(f"steady state: {args.steady_seconds:g} s, each pair alone, one after another")
                for pr, i in pairs:
                    steady(pr, i)
            if "scale" not in skip and "lease-guard" in res["impls"]:
                try:
                    res["put_cost"] = bench.put_cost()
                except Exception as e:
                    res["put_cost"] = {"error": f"{type(e).__name__}: {e}"}
                log(f"CPU per PUT: {res['put_cost']}")
            if "scale" not in skip:
                for k in scale_k:
                    for impl, key, run_one in (
                        ("lease-guard", "scale", bench.scale),
                        ("client-go", "scale_client_go", bench.scale_client_go),
                    ):
                        if impl not in res["impls"]:
                            continue
                        r: dict[str, Any]
                        try:
                            r = run_one(k, scale_s)
                        except Exception as e:
                            r = {"error": f"{type(e).__name__}: {e}"}
                        res[key][str(k)] = r
                        log(f"scale {impl} K={k}: {r}")
                        save()
            bench.admin.close()
            bench.watch_client.close()
    except KeyboardInterrupt:
        log("interrupted: writing what was measured")
        res["not_measured"].append("the run was interrupted; later metrics are missing")
    res["elapsed_s"] = time.monotonic() - t_begin
    res["loadavg_end"] = Path("/proc/loadavg").read_text().strip()
    finish(res, json_path, partial=bool(args.only or skip))
    return 0


if __name__ == "__main__":
    sys.exit(main())

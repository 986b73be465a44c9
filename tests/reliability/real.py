"""The real layer of the chaos campaign: candidate processes, a real kube-apiserver, faults.

    python -m tests.reliability.real --minutes 5 --seed 1 [--impl lease-guard,client-go] [--candidates 3]

Starts the harness of tests/integration/kube_harness.py (etcd + kube-apiserver), creates a
token identity allowed to create/get/update/watch Leases, builds the client-go peer, then
runs random fault schedules until the minutes are used up. In each schedule every
implementation runs at the same time, with its own Lease and N candidate processes (the
peers of benchmarks/peers/), each candidate behind its own fault-injecting proxy
(tests/reliability/proxy.py). The same fault events hit candidate i of every implementation
at the same instant; API-server restarts hit all. After the faults, a quiet period: a leader
must be in place at its end (liveness).

The checker works on the peers' CLOCK_MONOTONIC timestamps (``time.monotonic()`` here is the
same clock): guarded intervals are started→stopped for lease_guard and started→work_done for
client-go (the end of its OnStartedLeading context; "stopped" comes after the release). A
SIGKILLed candidate's interval ends when it was killed. Prints a summary table; exits 1 if
lease_guard shows an overlap or a liveness failure. Per-run logs (peer stderr, schedules,
intervals) are kept under .cache/reliability-real/.
"""

from __future__ import annotations

import argparse
import base64
import collections
import contextlib
import dataclasses
import json
import random
import re
import signal
import ssl
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import urlsplit

import trio
from lightkube import ApiError, AsyncClient
from lightkube.models.rbac_v1 import PolicyRule
from lightkube.resources.coordination_v1 import Lease

from .proxy import ERROR_MODES, FaultProxy, server_ssl_context, upstream_ssl_context

if TYPE_CHECKING:
    from tests.integration.kube_harness import KubeServer

REPO: Final = Path(__file__).resolve().parents[2]
LOG_ROOT: Final = REPO / ".cache" / "reliability-real"
LEASE_GUARD_PEER: Final = REPO / "benchmarks" / "peers" / "lease-guard" / "peer.py"
CLIENT_GO_BUILD: Final = REPO / "benchmarks" / "peers" / "client-go" / "build.sh"

#: The timing profile of both implementations (see RELIABILITY.md, "Real layer").
LEASE_DURATION: Final = 8.0
RENEW_DEADLINE: Final = 5.0
RETRY_PERIOD: Final = 1.0
#: Faults start within this many seconds of a schedule's start.
FAULT_WINDOW: Final = 50.0
#: After the last fault: lease_duration + renew_deadline (the liveness bound), plus time for
#: restarted processes to start and for client-go followers to observe the Lease once.
QUIET: Final = 25.0
#: How long a SIGTERMed candidate may take to exit before it is SIGKILLed; 2 x renew_deadline
#: covers client-go's release (renew_deadline) after its renew loop gave up (renew_deadline).
TERM_GRACE: Final = 2 * RENEW_DEADLINE + 2.0

IMPLS: Final = ("lease-guard", "client-go")
COLUMN: Final = {"lease-guard": "lease_guard", "client-go": "client-go"}
KINDS: Final = (
    "late-answer-then-partition",
    "delay",
    "latency",
    "black-hole",
    "reset",
    "errors",
    "sigkill",
    "sigterm",
    "apiserver-restart",
    "external-delete",
    "force-release",
)
#: The release proof lease_guard writes with an empty holder; a forced release leaves it out.
RELEASED_BY: Final = "lease-guard.io/released-by"
#: The RBAC of the candidates' token identity ("list" for lease_guard's shared watch, when asked for).
RULES: Final = [
    PolicyRule(
        apiGroups=["coordination.k8s.io"], resources=["leases"], verbs=["create", "get", "list", "update", "watch"]
    )
]


# --------------------------------------------------------------------------
# Schedules


@dataclass(frozen=True)
class Fault:
    """One fault event. `at` is seconds after the schedule's start; `candidate` None is the
    API server. `length`: how long it lasts (the pause before a restart for sigkill/sigterm;
    the delay phase for late-answer-then-partition, followed by `partition` seconds of black
    hole; for external-delete and force-release, how long the leader is cut off first, 0 for
    not at all). `value`: the latency or answer delay in seconds; `mode`: the error mode.
    `target`: if set (an implementation's name), the fault hits the candidate that leads that
    implementation's Lease when the fault starts (the same index in every implementation),
    `candidate` only if nobody leads it then."""

    at: float
    kind: str
    candidate: int | None
    length: float = 0.0
    value: float = 0.0
    mode: str = ""
    partition: float = 0.0
    target: str = ""

    @property
    def end(self) -> float:
        """Nominal end of the fault (an API-server restart takes as long as it takes)."""
        return self.at + self.length + self.partition

    def describe(self) -> str:
        who = "api-server" if self.candidate is None else f"c{self.candidate}"
        if self.target:
            who = f"{self.target}'s leader (else c{self.candidate})"
        detail = {
            "late-answer-then-partition": (
                f"D={self.value:.1f}s for {self.length:.1f}s, then partition {self.partition:.1f}s"
            ),
            "delay": f"D={self.value:.1f}s for {self.length:.1f}s",
            "latency": f"{self.value:.2f}s for {self.length:.1f}s",
            "black-hole": f"{self.length:.1f}s",
            "errors": f"{self.mode} for {self.length:.1f}s",
            "sigkill": f"restart after {self.length:.1f}s",
            "sigterm": f"restart after {self.length:.1f}s",
            "external-delete": f"leader cut off for {self.length:.1f}s" if self.length else "leader connected",
            "force-release": f"leader cut off for {self.length:.1f}s" if self.length else "leader connected",
        }.get(self.kind, "")
        return f"{self.kind} {who} at +{self.at:.1f}s" + (f" ({detail})" if detail else "")


def random_fault(
    rng: random.Random, kind: str, at: float, candidates: int, impls: Sequence[str], *, short: bool = False
) -> Fault:
    """A fault of `kind` at `at`; `short` keeps lengths small (the CI schedule). Two faults in
    three aim at the current leader of one of `impls` (chosen at random), the others at a
    random candidate: faults on followers alone rarely move leadership."""
    fault = _random_fault(rng, kind, at, candidates, 0.6 if short else 1.0)
    if fault.candidate is not None and impls and rng.random() < 2 / 3:
        fault = dataclasses.replace(fault, target=rng.choice(list(impls)))
    return fault


def _random_fault(rng: random.Random, kind: str, at: float, candidates: int, top: float) -> Fault:
    c = rng.randrange(candidates)
    if kind == "late-answer-then-partition":
        d = round(rng.uniform(0.5, RENEW_DEADLINE - 0.2), 2)
        # The delay phase covers at least one renew cycle, so an accepted answer lands late.
        phase = round(d + RETRY_PERIOD + rng.uniform(0.5, 3.0), 2)
        partition = round(rng.uniform(LEASE_DURATION + 2, LEASE_DURATION + 2 + 10 * top), 2)
        return Fault(at, kind, c, length=phase, value=d, partition=partition)
    if kind == "delay":
        return Fault(at, kind, c, length=round(rng.uniform(3, 3 + 9 * top), 2), value=round(rng.uniform(0.5, 4.8), 2))
    if kind == "latency":
        return Fault(at, kind, c, length=round(rng.uniform(3, 3 + 9 * top), 2), value=round(rng.uniform(0.1, 2.0), 2))
    if kind == "black-hole":
        return Fault(at, kind, c, length=round(rng.uniform(2, 2 + 18 * top), 2))
    if kind == "reset":
        return Fault(at, kind, c)
    if kind == "errors":
        return Fault(at, kind, c, length=round(rng.uniform(2, 2 + 8 * top), 2), mode=rng.choice(ERROR_MODES))
    if kind in ("sigkill", "sigterm"):
        return Fault(at, kind, c, length=round(rng.uniform(1, 1 + 9 * top), 2))
    if kind == "apiserver-restart":
        return Fault(at, kind, None)
    if kind in ("external-delete", "force-release"):
        # Half of them while the leader is cut off (it cannot see the write): the hazard.
        cut_off = round(rng.uniform(2, 2 + 12 * top), 2) if rng.random() < 0.5 else 0.0
        return Fault(at, kind, c, length=cut_off)
    raise ValueError(f"unknown fault kind {kind!r}; expected one of {KINDS}")


def random_schedule(
    rng: random.Random, candidates: int, impls: Sequence[str] = IMPLS, *, restarts: bool = True
) -> list[Fault]:
    """4 to 7 random faults within FAULT_WINDOW (at most one API-server restart)."""
    kinds = [k for k in KINDS if restarts or k != "apiserver-restart"]
    faults: list[Fault] = []
    for _ in range(rng.randint(4, 7)):
        kind = rng.choice(kinds)
        if kind == "apiserver-restart" and any(f.kind == kind for f in faults):
            kind = "late-answer-then-partition"
        faults.append(random_fault(rng, kind, round(rng.uniform(2, FAULT_WINDOW), 2), candidates, impls))
    return sorted(faults, key=lambda f: f.at)


def covering_schedule(
    rng: random.Random, candidates: int, impls: Sequence[str] = IMPLS, *, restarts: bool = True
) -> list[Fault]:
    """Every fault kind once, in random order, 4.5 s apart, with short lengths (the CI run)."""
    kinds = [k for k in KINDS if restarts or k != "apiserver-restart"]
    rng.shuffle(kinds)
    return [random_fault(rng, k, 2 + 4.5 * i, candidates, impls, short=True) for i, k in enumerate(kinds)]


# --------------------------------------------------------------------------
# Records


@dataclass
class Interval:
    """One guarded interval of one candidate process (CLOCK_MONOTONIC seconds)."""

    candidate: int
    incarnation: int
    start: float
    end: float | None = None
    how: str = ""  # stopped, work_done, sigkill, exit (closed by the process's exit), teardown

    @property
    def who(self) -> str:
        return f"c{self.candidate}.{self.incarnation}"


@dataclass
class Candidate:
    """One candidate slot of one implementation: its proxy and its successive processes."""

    impl: str
    index: int
    proxy: FaultProxy
    kubeconfig: Path
    incarnation: int = 0
    proc: trio.Process | None = None
    identity: str = ""
    killed_at: float | None = None
    termed_at: float | None = None
    starting: bool = False
    done: trio.Event = field(default_factory=trio.Event)

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.returncode is None and not self.done.is_set()


@dataclass
class ImplResult:
    """What one implementation did over a whole run."""

    schedules: int = 0
    faults: collections.Counter[str] = field(default_factory=collections.Counter)
    overlap_pairs: int = 0
    schedules_with_overlap: int = 0
    worst_overlap_ms: float = 0.0
    overlap_causes: list[str] = field(default_factory=list)
    takeovers: dict[str, list[float]] = field(default_factory=lambda: collections.defaultdict(list))
    liveness_failures: int = 0
    leader_after_quiet: list[float] = field(default_factory=list)
    unclosed: list[str] = field(default_factory=list)
    hung_sigterm: int = 0
    own_exits: list[str] = field(default_factory=list)
    lease_flags: list[str] = field(default_factory=list)
    lease_states: list[str] = field(default_factory=list)


@dataclass
class Report:
    impls: list[str]
    results: dict[str, ImplResult]
    schedules: list[list[Fault]] = field(default_factory=list)
    seconds: float = 0.0
    log_dir: Path | None = None

    @property
    def ok(self) -> bool:
        """lease_guard showed no overlap and no liveness failure."""
        r = self.results.get("lease-guard")
        return r is None or (r.overlap_pairs == 0 and r.liveness_failures == 0)


# --------------------------------------------------------------------------
# Running one schedule


_ERROR_LINE: Final = re.compile(r"^[\s|]*([\w.]+(?:Error|Denied|Unavailable|Exception|Lost)\b.*)")


def _last_line(path: Path) -> str:
    """The last exception line of a (small) log file, else its last line, shortened."""
    lines = [ln.strip() for ln in path.read_text(errors="replace").splitlines() if ln.strip()]
    errors = [m.group(1) for ln in lines if (m := _ERROR_LINE.match(ln))]
    last = errors[-1] if errors else lines[-1] if lines else "(no stderr)"
    return last[:240]


def _kubeconfig(path: Path, url: str, ca: Path, token: str, namespace: str) -> Path:
    """A token kubeconfig for `url` (a candidate's proxy), trusting the harness CA."""

    conf = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "c",
                "cluster": {"server": url, "certificate-authority-data": base64.b64encode(ca.read_bytes()).decode()},
            }
        ],
        "users": [{"name": "u", "user": {"token": token}}],
        "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u", "namespace": namespace}}],
        "current-context": "c",
    }
    path.write_text(json.dumps(conf, indent=2) + "\n")
    path.chmod(0o600)
    return path


class ScheduleRun:
    """One schedule: proxies, candidates of every implementation, faults, checks."""

    def __init__(
        self,
        kube: KubeServer,
        token: str,
        peers: dict[str, list[str]],
        schedule: list[Fault],
        number: int,
        candidates: int,
        log_dir: Path,
    ) -> None:
        self.kube, self.token, self.peers = kube, token, peers
        self.schedule, self.number, self.n = schedule, number, candidates
        self.log_dir = log_dir
        self.leases = {impl: f"chaos-{impl}-{number}-{uuid.uuid4().hex[:6]}" for impl in peers}
        self.slots: dict[str, list[Candidate]] = {}
        self.intervals: dict[str, list[Interval]] = {impl: [] for impl in peers}
        self.faults: dict[str, collections.Counter[str]] = {impl: collections.Counter() for impl in peers}
        self.hung: dict[str, int] = dict.fromkeys(peers, 0)
        self.unclosed: dict[str, list[str]] = {impl: [] for impl in peers}
        self.own_exits: dict[str, list[str]] = {impl: [] for impl in peers}
        #: Every process: identity, launched, ready, exited (monotonic), exit code, how it ended.
        self.processes: list[dict[str, Any]] = []
        self.stopping = False
        #: The candidate index whose guarded code runs now, per implementation.
        self.leading: dict[str, int | None] = dict.fromkeys(peers)
        self._nursery: trio.Nursery | None = None
        self._admin: AsyncClient | None = None
        self.external_misses: dict[str, list[str]] = collections.defaultdict(list)
        self.deletes: collections.Counter[str] = collections.Counter()
        self._deletes_seen: collections.Counter[str] = collections.Counter()
        self.transitions_down: dict[str, list[str]] = {impl: [] for impl in peers}
        #: (candidate or None, start, end, kind) of applied faults, monotonic seconds.
        self.windows: list[tuple[int | None, float, float, str, str]] = []
        self.t0 = 0.0
        self.quiet_at = 0.0
        self.check_at = 0.0
        self._knobs: dict[int, dict[str, dict[int, Any]]] = {}
        #: Identities of the processes alive at the check point.
        self.alive_identities: set[str] = set()

    # -- processes ---------------------------------------------------------------

    async def start(self, slot: Candidate, nursery: trio.Nursery) -> None:
        """Start the next process of a slot (a new identity, as a new Pod would have)."""
        if slot.alive or slot.starting:
            return
        slot.starting = True
        slot.incarnation += 1
        slot.identity = f"{slot.impl}-c{slot.index}-{slot.incarnation}"
        slot.killed_at = slot.termed_at = None
        slot.done = trio.Event()
        argv = [
            *self.peers[slot.impl],
            "--kubeconfig",
            str(slot.kubeconfig),
            "--namespace",
            self.kube.namespace,
            "--lease",
            self.leases[slot.impl],
            "--identity",
            slot.identity,
            "--lease-duration",
            str(LEASE_DURATION),
            "--renew-deadline",
            str(RENEW_DEADLINE),
            "--retry-period",
            str(RETRY_PERIOD),
        ]
        log = self.log_dir / f"s{self.number}-{slot.identity}.log"
        record: dict[str, Any] = {"identity": slot.identity, "launched": time.monotonic()}
        self.processes.append(record)
        try:
            with log.open("ab") as err:
                slot.proc = await trio.lowlevel.open_process(
                    argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=err, start_new_session=True
                )
        finally:
            slot.starting = False
        nursery.start_soon(self._follow, slot, slot.proc, slot.incarnation, slot.done, record, log)

    async def _follow(
        self,
        slot: Candidate,
        proc: trio.Process,
        incarnation: int,
        done: trio.Event,
        record: dict[str, Any],
        log: Path,
    ) -> None:
        """Read one process's protocol lines into intervals until it exits; a process that
        exits on its own is restarted a second later, as a Deployment would."""
        assert proc.stdout is not None
        intervals = self.intervals[slot.impl]
        open_: Interval | None = None
        closed: Interval | None = None
        buf = b""
        try:
            while chunk := await proc.stdout.receive_some(65536):
                buf += chunk
                *lines, buf = buf.split(b"\n")
                for line in lines:
                    try:
                        msg = json.loads(line)
                    except ValueError:
                        continue
                    event, t = msg.get("event"), float(msg.get("t", 0.0))
                    if event == "ready":
                        record["ready"] = t
                    elif event == "started" and open_ is None:
                        open_ = Interval(slot.index, incarnation, t)
                        intervals.append(open_)
                        self.leading[slot.impl] = slot.index
                    elif open_ is not None and (event == "work_done" or event == "stopped"):
                        # client-go: work_done ends the guarded work. Its stopped comes after the
                        # release, but can be printed a few microseconds before a work_done that
                        # was due first (OnStartedLeading's goroutine not yet scheduled): then
                        # the work_done that follows corrects the end.
                        open_.end, open_.how = t, event
                        closed, open_ = open_, None
                        if self.leading[slot.impl] == slot.index:
                            self.leading[slot.impl] = None
                    elif event == "work_done" and closed is not None and closed.how == "stopped":
                        closed.end, closed.how = t, event
            await proc.wait()
        finally:
            record["exited"], record["code"] = time.monotonic(), proc.returncode
            record["how"] = "sigkill" if slot.killed_at else "sigterm" if slot.termed_at else "own"
            if record["how"] == "own" and not self.stopping:
                last = _last_line(log)
                self.own_exits[slot.impl].append(
                    f"s{self.number} {slot.identity} exited on its own at {record['exited'] - self.t0:+.1f}s "
                    f"(code {proc.returncode}): {last}"
                )
                if self._nursery is not None:
                    self._nursery.start_soon(self._restart_later, slot, proc)
            if open_ is not None:
                if slot.killed_at is not None:
                    open_.end, open_.how = slot.killed_at, "sigkill"
                else:
                    open_.end, open_.how = time.monotonic(), "exit"
                    self.unclosed[slot.impl].append(
                        f"s{self.number} {slot.identity} exited (code {proc.returncode}) inside its interval"
                    )
            if self.leading[slot.impl] == slot.index and open_ is not None:
                self.leading[slot.impl] = None
            done.set()

    async def _restart_later(self, slot: Candidate, proc: trio.Process) -> None:
        await trio.sleep(1.0)
        if slot.proc is proc and not self.stopping and self._nursery is not None:
            await self.start(slot, self._nursery)

    async def kill(self, slot: Candidate) -> None:
        if slot.proc is None or not slot.alive:
            return
        slot.killed_at = time.monotonic()
        with contextlib.suppress(ProcessLookupError):
            slot.proc.send_signal(signal.SIGKILL)
        await slot.done.wait()

    async def stop(self, slot: Candidate, grace: float) -> bool:
        """SIGTERM, then SIGKILL after `grace` s. Returns whether it exited in time."""
        if slot.proc is None or not slot.alive:
            return True
        slot.termed_at = time.monotonic()
        with contextlib.suppress(ProcessLookupError):
            slot.proc.send_signal(signal.SIGTERM)
        with trio.move_on_after(grace):
            await slot.done.wait()
            return True
        await self.kill(slot)
        return False

    # -- faults ------------------------------------------------------------------

    def _apply_knobs(self, index: int) -> None:
        knobs = self._knobs.setdefault(index, {})
        latency = max(knobs.get("latency", {}).values(), default=0.0)
        delay = max(knobs.get("delay", {}).values(), default=0.0)
        hole = bool(knobs.get("black-hole"))
        errors = knobs.get("errors", {})
        mode = errors[max(errors)] if errors else None
        for impl in self.slots:
            proxy = self.slots[impl][index].proxy
            proxy.set_latency(latency)
            proxy.set_delay(delay)
            proxy.set_errors(mode)
            proxy.set_black_hole(hole)

    def _knob(self, index: int, knob: str, fid: int, value: Any | None) -> None:
        values = self._knobs.setdefault(index, {}).setdefault(knob, {})
        if value is None:
            values.pop(fid, None)
        else:
            values[fid] = value
        self._apply_knobs(index)

    def _count(self, kind: str, impls: Sequence[str] | None = None) -> None:
        for impl in impls if impls is not None else self.slots:
            self.faults[impl][kind] += 1

    async def _sleep_to(self, t: float) -> None:
        await trio.sleep(max(0.0, t - time.monotonic()))

    async def inject(self, fid: int, fault: Fault, nursery: trio.Nursery) -> None:
        await self._sleep_to(self.t0 + fault.at)
        start = time.monotonic()
        c = fault.candidate
        if fault.target in self.leading and self.leading[fault.target] is not None:
            c = self.leading[fault.target]
        kind = fault.kind
        if c is None:  # apiserver-restart
            self._count(kind)
            await trio.to_thread.run_sync(self.kube.stop_apiserver)
            await trio.to_thread.run_sync(self.kube.start_apiserver)
        elif kind in ("sigkill", "sigterm"):
            slots = [self.slots[impl][c] for impl in self.slots]
            hit = [s.impl for s in slots if s.alive]
            self._count(kind, hit)

            async def hit_one(slot: Candidate) -> None:
                if not slot.alive:
                    return
                if kind == "sigkill":
                    await self.kill(slot)
                elif not await self.stop(slot, fault.length + TERM_GRACE):
                    self.hung[slot.impl] += 1
                await self._sleep_to(start + fault.length)
                if not slot.alive:
                    await self.start(slot, nursery)

            async with trio.open_nursery() as inner:
                for slot in slots:
                    inner.start_soon(hit_one, slot)
        elif kind == "reset":
            self._count(kind)
            for impl in self.slots:
                self.slots[impl][c].proxy.reset()
        elif kind in ("external-delete", "force-release"):
            self._count(kind)
            if fault.length:
                self._knob(c, "black-hole", fid, True)
                await self._sleep_to(start + 0.5)
            for impl, name in self.leases.items():
                await self._external_write(kind, impl, name)
            if fault.length:
                await self._sleep_to(start + fault.length)
                self._knob(c, "black-hole", fid, None)
        elif kind == "late-answer-then-partition":
            self._count(kind)
            self._knob(c, "delay", fid, fault.value)
            await self._sleep_to(start + fault.length)
            self._knob(c, "black-hole", fid, True)
            self._knob(c, "delay", fid, None)
            await self._sleep_to(start + fault.length + fault.partition)
            self._knob(c, "black-hole", fid, None)
        else:
            self._count(kind)
            knob, value = {
                "delay": ("delay", fault.value),
                "latency": ("latency", fault.value),
                "black-hole": ("black-hole", True),
                "errors": ("errors", fault.mode),
            }[kind]
            self._knob(c, knob, fid, value)
            await self._sleep_to(start + fault.length)
            self._knob(c, knob, fid, None)
        self.windows.append(
            (c, start, time.monotonic(), kind, fault.describe() + (f" -> c{c}" if fault.target else ""))
        )

    async def _external_write(self, kind: str, impl: str, name: str) -> None:
        """``kubectl delete lease``, or ``lease-guard release --force``: an empty holder, with
        leaseDurationSeconds 1 and without the release proof, conditioned on the version read."""
        assert self._admin is not None
        namespace = self.kube.namespace
        try:
            if kind == "external-delete":
                self.deletes[impl] += 1
                await self._admin.delete(Lease, name, namespace=namespace)
                return
            lease = await self._admin.get(Lease, name, namespace=namespace)
            assert lease.spec is not None and lease.metadata is not None
            lease.spec.holderIdentity = ""
            lease.spec.leaseDurationSeconds = 1
            if lease.metadata.annotations:
                lease.metadata.annotations.pop(RELEASED_BY, None)
            await self._admin.replace(lease)
        except ApiError as exc:  # absent (404) or written meanwhile (409): nothing was done
            self.external_misses[impl].append(f"s{self.number}: {kind} of {name}: {exc.status.code}")

    # -- the Lease -----------------------------------------------------------------

    async def _read_leases(self, client: AsyncClient) -> dict[str, tuple[str | None, int | None]]:
        out: dict[str, tuple[str | None, int | None]] = {}
        for impl, name in self.leases.items():
            with contextlib.suppress(Exception):
                lease = await client.get(Lease, name, namespace=self.kube.namespace)
                spec = lease.spec
                out[impl] = (spec.holderIdentity, spec.leaseTransitions) if spec is not None else (None, None)
        return out

    async def _monitor(self, client: AsyncClient) -> None:
        """Poll the Leases (admin, past the proxies): leaseTransitions must never go down,
        except across an external delete (a re-created Lease counts from the start)."""
        last: dict[str, int] = {}
        while True:
            with trio.move_on_after(5):
                deletes = dict(self.deletes)
                leases = await self._read_leases(client)
                for impl, (_, transitions) in leases.items():
                    if self.deletes[impl] != deletes.get(impl, 0) or self.deletes[impl] != self._deletes_seen[impl]:
                        self._deletes_seen[impl] = self.deletes[impl]
                        last.pop(impl, None)
                        continue
                    if transitions is not None:
                        if transitions < last.get(impl, 0):
                            self.transitions_down[impl].append(
                                f"s{self.number}: leaseTransitions went from {last[impl]} down to {transitions}"
                            )
                        last[impl] = transitions
            await trio.sleep(1.0)

    # -- the whole schedule ----------------------------------------------------------

    async def run(self) -> dict[str, tuple[str | None, int | None]]:
        local = self.kube.local
        assert local is not None and self.kube.ca_path is not None
        up = urlsplit(self.kube.url)
        assert up.hostname is not None and up.port is not None
        server_ctx = server_ssl_context(local.certs.serving_cert, local.certs.serving_key)
        upstream_ctx = upstream_ssl_context(self.kube.ca_path)
        try:
            return await self._run(server_ctx, upstream_ctx, up.hostname, up.port)
        finally:
            for slots in self.slots.values():  # a failed run leaves no process behind
                for slot in slots:
                    if slot.proc is not None and slot.proc.returncode is None:
                        with contextlib.suppress(ProcessLookupError):
                            slot.proc.kill()

    async def _run(
        self, server_ctx: ssl.SSLContext, upstream_ctx: ssl.SSLContext, host: str, port: int
    ) -> dict[str, tuple[str | None, int | None]]:
        assert self.kube.ca_path is not None
        async with trio.open_nursery() as nursery, self.kube.admin_client() as admin:
            self._nursery = nursery
            self._admin = admin
            for impl in self.peers:
                slots = []
                for i in range(self.n):
                    proxy = FaultProxy(
                        host,
                        port,
                        server_context=server_ctx,
                        upstream_context=upstream_ctx,
                        name=f"{impl}-c{i}",
                    )
                    await nursery.start(proxy.serve)
                    kubeconfig = _kubeconfig(
                        self.log_dir / f"s{self.number}-{impl}-c{i}.kubeconfig",
                        proxy.url,
                        self.kube.ca_path,
                        self.token,
                        self.kube.namespace,
                    )
                    slots.append(Candidate(impl, i, proxy, kubeconfig))
                self.slots[impl] = slots
            nursery.start_soon(self._monitor, admin)
            # Candidate 0 of each implementation starts first, so it tends to lead in both.
            for i in range(self.n):
                for impl in self.peers:
                    await self.start(self.slots[impl][i], nursery)
                await trio.sleep(0.5)
            self.t0 = time.monotonic()
            async with trio.open_nursery() as faults:
                for fid, fault in enumerate(self.schedule):
                    faults.start_soon(self.inject, fid, fault, nursery)
            self.quiet_at = time.monotonic()
            for index in self._knobs:
                self._knobs[index].clear()
                self._apply_knobs(index)
            for impl in self.slots:  # nobody left dead: every candidate takes part in the quiet period
                for slot in self.slots[impl]:
                    if not slot.alive:
                        await self.start(slot, nursery)
            await self._sleep_to(self.quiet_at + QUIET)
            self.check_at = time.monotonic()
            final = await self._read_leases(admin)
            self.alive_identities = {s.identity for impl in self.slots for s in self.slots[impl] if s.alive}
            self.stopping = True
            async with trio.open_nursery() as teardown:
                for impl in self.slots:
                    for slot in self.slots[impl]:
                        teardown.start_soon(self.stop, slot, TERM_GRACE)
            nursery.cancel_scope.cancel()
        for impl in self.intervals:
            for iv in self.intervals[impl]:
                if iv.end is not None and iv.end > self.check_at and iv.how not in ("sigkill",):
                    iv.how = f"teardown/{iv.how}"
        return final


# --------------------------------------------------------------------------
# Checking


def overlaps(intervals: Sequence[Interval]) -> Iterator[tuple[Interval, Interval, float]]:
    """Pairs (earlier, later, seconds) of intervals of different processes that overlap."""
    spans = sorted(intervals, key=lambda i: i.start)
    for a_i, a in enumerate(spans):
        for b in spans[a_i + 1 :]:
            if (a.candidate, a.incarnation) == (b.candidate, b.incarnation):
                continue
            a_end = a.end if a.end is not None else float("inf")
            b_end = b.end if b.end is not None else float("inf")
            overlap = min(a_end, b_end) - b.start
            if overlap > 0:
                yield a, b, overlap


def _end_cause(run: ScheduleRun, iv: Interval) -> str:
    """Why an interval ended, for the takeover categories."""
    assert iv.end is not None
    if iv.how == "sigkill":
        return "sigkill"
    slot_faults = [w for w in run.windows if w[0] in (iv.candidate, None) and w[1] <= iv.end + 0.5]
    recent = [w for w in slot_faults if w[2] >= iv.end - RENEW_DEADLINE - 2]
    if any(w[3] == "sigterm" and w[1] <= iv.end for w in recent):
        return "sigterm"
    if any(w[3] in ("external-delete", "force-release") for w in recent):
        return "external"
    if any(w[3] in ("black-hole", "late-answer-then-partition") for w in recent):
        return "partition"
    return "other"


def check(run: ScheduleRun, final: dict[str, tuple[str | None, int | None]], results: dict[str, ImplResult]) -> None:
    """Fold one schedule's records into the per-implementation results."""
    for impl, intervals in run.intervals.items():
        r = results[impl]
        r.schedules += 1
        r.faults.update(run.faults[impl])
        r.hung_sigterm += run.hung[impl]
        r.unclosed.extend(run.unclosed[impl])
        r.own_exits.extend(run.own_exits[impl])
        found = list(overlaps(intervals))
        if found:
            r.schedules_with_overlap += 1
        for a, b, seconds in found:
            r.overlap_pairs += 1
            r.worst_overlap_ms = max(r.worst_overlap_ms, seconds * 1000)
            r.overlap_causes.append(_overlap_cause(run, a, b, seconds))
        # Takeovers: a leader's interval ended -> the next start, before the check point.
        for iv in intervals:
            if iv.end is None or iv.end > run.check_at:
                continue
            nxt = min((o.start for o in intervals if o.start >= iv.end and o is not iv), default=None)
            if nxt is None or nxt > run.check_at:
                continue
            cause = _end_cause(run, iv)
            r.takeovers["all"].append(nxt - iv.end)
            r.takeovers[cause].append(nxt - iv.end)
        # Liveness: a leader at the end of the quiet period.
        leading = [iv for iv in intervals if iv.start <= run.check_at and (iv.end is None or iv.end > run.check_at)]
        if not leading:
            r.liveness_failures += 1
        else:
            first = min(leading, key=lambda iv: iv.start)
            r.leader_after_quiet.append(max(0.0, first.start - run.quiet_at))
        holder, transitions = final.get(impl, (None, None))
        r.lease_states.append(f"s{run.number}: holder={holder} leaseTransitions={transitions}")
        if holder not in run.alive_identities:
            r.lease_flags.append(f"s{run.number}: holder {holder!r} is not a live candidate")
        elif leading and holder not in {f"{impl}-c{iv.candidate}-{iv.incarnation}" for iv in leading}:
            r.lease_flags.append(f"s{run.number}: holder {holder!r} is not the candidate that runs its guarded code")
        r.lease_flags.extend(run.transitions_down[impl])


def _overlap_cause(run: ScheduleRun, a: Interval, b: Interval, seconds: float) -> str:
    """The earlier leader's faults that can explain an overlap, with the timings."""
    t0 = run.t0
    window = (b.start - LEASE_DURATION - 2 * RENEW_DEADLINE - 2, a.end if a.end is not None else b.start)
    seen = [w[4] for w in run.windows if w[0] in (a.candidate, None) and w[2] >= window[0] and w[1] <= window[1]]
    end = f"{a.end - t0:+.1f}s ({a.how})" if a.end is not None else "never"
    return (
        f"s{run.number}: {a.who} led from {a.start - t0:+.1f}s to {end}, {b.who} started at {b.start - t0:+.1f}s, "
        f"overlap {seconds * 1000:.0f} ms; faults on {a.who}: {'; '.join(seen) or 'none'}"
    )


# --------------------------------------------------------------------------
# Whole runs


def build_peers(impls: Sequence[str]) -> dict[str, list[str]]:
    """Command line prefix of each implementation's peer (builds the client-go one)."""
    peers: dict[str, list[str]] = {}
    for impl in impls:
        if impl == "lease-guard":
            peers[impl] = [sys.executable, str(LEASE_GUARD_PEER)]
        elif impl == "client-go":
            proc = subprocess.run(["bash", str(CLIENT_GO_BUILD)], capture_output=True, text=True, check=False)
            lines = proc.stdout.strip().splitlines()
            if proc.returncode != 0 or not lines:
                raise RuntimeError(f"{CLIENT_GO_BUILD} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
            peers[impl] = [lines[-1]]
        else:
            raise ValueError(f"unknown implementation {impl!r}; expected some of {IMPLS}")
    return peers


def candidate_token(kube: KubeServer) -> str:
    """A ServiceAccount token allowed to create/get/update/watch Leases (blocking)."""
    conf = json.loads(kube.kubeconfig_for_rules("chaos-candidate", RULES).read_text())
    token: str = conf["users"][0]["user"]["token"]
    return token


async def run_campaign(
    kube: KubeServer,
    *,
    impls: Sequence[str],
    schedules: Callable[[int], list[Fault] | None],
    candidates: int = 3,
    log_dir: Path | None = None,
    progress: Callable[[str], None] = lambda line: None,
    lease_guard_args: Sequence[str] = (),
) -> Report:
    """Run schedules (``schedules(n)`` returns the n-th one, or None to stop) on `kube`.

    `lease_guard_args` go to every lease_guard candidate (benchmarks/peers/lease-guard/peer.py).
    """
    if kube.local is None:
        raise RuntimeError("the real layer needs the local harness (its certificates, API-server restarts)")
    log_dir = log_dir or LOG_ROOT / time.strftime("%Y%m%d-%H%M%S")
    log_dir.mkdir(parents=True, exist_ok=True)
    peers = await trio.to_thread.run_sync(build_peers, impls)
    if "lease-guard" in peers:
        peers["lease-guard"] = [*peers["lease-guard"], *lease_guard_args]
    token = await trio.to_thread.run_sync(candidate_token, kube)
    report = Report(list(impls), {impl: ImplResult() for impl in impls}, log_dir=log_dir)
    started = time.monotonic()
    number = 0
    while (schedule := schedules(number)) is not None:
        run = ScheduleRun(kube, token, peers, schedule, number, candidates, log_dir)
        progress(f"schedule {number}: {len(schedule)} faults: " + "; ".join(f.describe() for f in schedule))
        final = await run.run()
        check(run, final, report.results)
        report.schedules.append(schedule)
        dump = {
            "schedule": [asdict(f) for f in schedule],
            "t0": run.t0,
            "quiet_at": run.quiet_at,
            "check_at": run.check_at,
            "windows": run.windows,
            "intervals": {impl: [asdict(iv) for iv in ivs] for impl, ivs in run.intervals.items()},
            "processes": run.processes,
            "proxies": {impl: [dict(s.proxy.counts) for s in slots] for impl, slots in run.slots.items()},
            "lease": final,
            "external_writes_not_done": run.external_misses,
        }
        (log_dir / f"s{number}.json").write_text(json.dumps(dump, indent=1) + "\n")
        progress(
            f"schedule {number} done ({time.monotonic() - run.t0:.0f} s): "
            + ", ".join(
                f"{COLUMN[i]} {len(run.intervals[i])} intervals, {sum(1 for _ in overlaps(run.intervals[i]))} overlaps"
                for i in impls
            )
        )
        number += 1
    report.seconds = time.monotonic() - started
    return report


def _ms(values: Sequence[float]) -> str:
    if not values:
        return "-"
    return f"{statistics.median(values) * 1000:.0f} / {max(values) * 1000:.0f}"


def summary(report: Report) -> str:
    """The side-by-side table (one column per implementation), then the details."""
    res = report.results
    impls = report.impls
    kinds = sorted(set().union(*(res[i].faults for i in impls)))
    rows: list[tuple[str, Sequence[object]]] = [
        ("schedules run", [res[i].schedules for i in impls]),
        *((f"faults: {k}", [res[i].faults.get(k, 0) for i in impls]) for k in kinds),
        ("overlapping pairs", [res[i].overlap_pairs for i in impls]),
        ("schedules with an overlap", [res[i].schedules_with_overlap for i in impls]),
        ("worst overlap (ms)", [f"{res[i].worst_overlap_ms:.0f}" for i in impls]),
        ("takeover median / worst (ms)", [_ms(res[i].takeovers["all"]) for i in impls]),
        ("  after SIGTERM / release", [_ms(res[i].takeovers["sigterm"]) for i in impls]),
        ("  after SIGKILL", [_ms(res[i].takeovers["sigkill"]) for i in impls]),
        ("  after partition", [_ms(res[i].takeovers["partition"]) for i in impls]),
        ("  after delete / forced release", [_ms(res[i].takeovers["external"]) for i in impls]),
        ("  after other faults", [_ms(res[i].takeovers["other"]) for i in impls]),
        ("liveness failures", [res[i].liveness_failures for i in impls]),
        ("worst leader after quiet (s)", [f"{max(res[i].leader_after_quiet, default=0):.1f}" for i in impls]),
        ("exits inside an interval", [len(res[i].unclosed) for i in impls]),
        ("exits on their own (restarted)", [len(res[i].own_exits) for i in impls]),
        ("SIGTERM not exited in time", [res[i].hung_sigterm for i in impls]),
        ("Lease flags", [len(res[i].lease_flags) for i in impls]),
    ]
    lines = [f"real layer, {len(report.schedules)} schedules, {report.seconds:.0f} s, logs in {report.log_dir}"]
    lines.append(f"{'':34}" + "".join(f" {COLUMN[i]:>14}" for i in impls))
    lines.extend(f"{name:34}" + "".join(f" {v!s:>14}" for v in values) for name, values in rows)
    for i in impls:
        r = res[i]
        details = [*r.overlap_causes, *r.unclosed, *r.lease_flags]
        if details or r.lease_states:
            lines.append(f"\n{COLUMN[i]}:")
            lines.extend(f"  overlap: {c}" for c in r.overlap_causes)
            lines.extend(f"  exit inside an interval: {c}" for c in r.unclosed)
            lines.extend(f"  exit on its own: {c}" for c in r.own_exits)
            lines.extend(f"  lease flag: {c}" for c in r.lease_flags)
            lines.extend(f"  lease after {c}" for c in r.lease_states)
    return "\n".join(lines)


def main() -> int:
    from tests.integration.kube_harness import kube_server

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=5.0, help="stop starting schedules after this long")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--impl", default="lease-guard,client-go", help=f"comma-separated, of {','.join(IMPLS)}")
    parser.add_argument("--candidates", type=int, default=3)
    parser.add_argument(
        "--shared-watch",
        action="store_true",
        help="lease_guard candidates follow their Lease through the shared watch of the namespace's Leases",
    )
    args = parser.parse_args()
    impls = [i.strip() for i in args.impl.split(",") if i.strip()]
    unknown = [i for i in impls if i not in IMPLS]
    if unknown or not impls:
        parser.error(f"--impl: unknown {unknown}; expected some of {','.join(IMPLS)}")
    if args.candidates < 2:
        parser.error("--candidates: at least 2")
    rng = random.Random(args.seed)
    budget = args.minutes * 60
    started = time.monotonic()
    # A schedule takes about FAULT_WINDOW + its longest fault + QUIET + start/stop: ~1.5 min.
    typical = FAULT_WINDOW + 20 + QUIET + 10

    def schedules(n: int) -> list[Fault] | None:
        if n > 0 and time.monotonic() - started + typical > budget:
            return None
        return random_schedule(rng, args.candidates, impls)

    print("starting etcd + kube-apiserver ...", flush=True)
    with contextlib.contextmanager(kube_server)() as kube:
        report = trio.run(
            lambda: run_campaign(
                kube,
                impls=impls,
                schedules=schedules,
                candidates=args.candidates,
                progress=lambda line: print(line, flush=True),
                lease_guard_args=["--shared-watch-from", "1"] if args.shared_watch else [],
            )
        )
    print()
    print(summary(report))
    return 0 if report.ok else 1


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        raise SystemExit(main())

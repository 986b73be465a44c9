"""CPU per renewal of ONE steady leader, each implementation measured alone.

    python benchmarks/steady_cpu.py --kubeconfig PATH --namespace NS --impl lease-guard|client-go
        [--seconds 120] [--retry-period 2] [--leases K]

Starts the implementation's benchmark peer (benchmarks/peers/<impl>) as the only candidate
of a fresh Lease (client-go with ``--leases K``: K Leases in its one process; for lease_guard
with K Leases see benchmarks/scale.py), waits until it leads, then over ``--seconds`` reads
the peer process's CPU time (/proc/PID/stat utime + stime) and counts its renewals at the
server: distinct resourceVersions of its Lease(s) with it as holder and the same
leaseTransitions, from a GET every quarter of retry_period. Prints one JSON object:
cpu_s, renewals, cpu_ms_per_renewal, the load average before and after.

One process at a time, so that the figure is the implementation's own, not the machine's
contention; CPU time is what contention disturbs least, but the load average is reported
beside it because a busy machine still costs more CPU per unit of work (cache misses).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from lightkube import Client, KubeConfig
from lightkube.resources.coordination_v1 import Lease

HERE = Path(__file__).resolve().parent


def peer_command(impl: str, peers: Path) -> list[str]:
    if impl == "lease-guard":
        return [sys.executable, str(peers / "lease-guard" / "peer.py")]
    if impl == "client-go":
        built = subprocess.run(
            ["bash", str(HERE / "peers" / "client-go" / "build.sh")], check=True, capture_output=True, text=True
        )
        return [built.stdout.strip().splitlines()[-1]]
    raise SystemExit(f"unknown --impl {impl!r}: lease-guard or client-go")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main(args: argparse.Namespace) -> dict[str, Any]:
    name = f"steady-{args.impl}-{os.getpid()}"
    names = [name] if args.leases == 1 else [f"{name}-{i}" for i in range(args.leases)]
    identity = f"steady-{args.impl}"
    command = [
        *peer_command(args.impl, args.peers),
        *("--kubeconfig", args.kubeconfig, "--namespace", args.namespace, "--lease", name),
        *("--identity", identity, "--retry-period", str(args.retry_period)),
        *("--lease-duration", str(args.lease_duration), "--renew-deadline", str(args.renew_deadline)),
    ]
    if args.leases > 1:
        command += ["--leases", str(args.leases)]
    client = Client(KubeConfig.from_file(args.kubeconfig), namespace=args.namespace, trust_env=False)
    with contextlib.ExitStack() as files:
        log = files.enter_context(Path(args.peer_log).open("wb")) if args.peer_log else subprocess.DEVNULL
        peer = subprocess.Popen(command, stdout=log, stderr=log)
    try:

        def holders() -> dict[str, tuple[str, int | None]]:
            seen = {}
            for lease_name in names:
                try:
                    lease = client.get(Lease, lease_name)
                except Exception:  # not created yet
                    continue
                assert lease.spec is not None
                assert lease.metadata is not None
                if lease.spec.holderIdentity == identity and lease.metadata.resourceVersion:
                    seen[lease_name] = (lease.metadata.resourceVersion, lease.spec.leaseTransitions)
            return seen

        deadline = time.monotonic() + 300
        while len(holders()) < len(names):
            if time.monotonic() > deadline or peer.poll() is not None:
                raise SystemExit(f"{args.impl} did not lead all {len(names)} Leases")
            time.sleep(0.5)
        time.sleep(2 * args.retry_period)  # past the first renewals
        load_before = os.getloadavg()
        versions: dict[str, set[str]] = {n: set() for n in names}
        terms: dict[str, set[int | None]] = {n: set() for n in names}
        cpu0, t0 = cpu_seconds(peer.pid), time.monotonic()
        while time.monotonic() - t0 < args.seconds:
            for lease_name, (version, term) in holders().items():
                versions[lease_name].add(version)
                terms[lease_name].add(term)
            time.sleep(args.retry_period / 4)
        cpu1, t1 = cpu_seconds(peer.pid), time.monotonic()
        renewals = sum(len(v) - 1 for v in versions.values())
        changed_term = [n for n, t in terms.items() if len(t) > 1]
        return {
            "impl": args.impl,
            "leases": len(names),
            "window_s": round(t1 - t0, 1),
            "cpu_s": round(cpu1 - cpu0, 3),
            "renewals": renewals,
            "expected_renewals": round(len(names) * (t1 - t0) / args.retry_period),
            "cpu_ms_per_renewal": round((cpu1 - cpu0) / renewals * 1000, 3) if renewals else None,
            "terms_changed": len(changed_term),
            "load_before": load_before,
            "load_after": os.getloadavg(),
        }
    finally:
        peer.terminate()
        try:
            peer.wait(30)
        except subprocess.TimeoutExpired:
            peer.kill()
        client.close()


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--kubeconfig", required=True)
    p.add_argument("--namespace", required=True)
    p.add_argument("--impl", required=True)
    p.add_argument("--seconds", type=float, default=120.0)
    p.add_argument("--retry-period", type=float, default=2.0)
    p.add_argument("--lease-duration", type=float, default=15.0)
    p.add_argument("--renew-deadline", type=float, default=10.0)
    p.add_argument("--leases", type=int, default=1)
    p.add_argument("--peers", type=Path, default=HERE / "peers", help="the peers' folder (another checkout's)")
    p.add_argument("--peer-log", help="write the peer's stdout and stderr to this file")
    print(json.dumps(main(p.parse_args())), flush=True)

"""CPU cost of one Lease PUT from Python, by HTTP stack: the floor under the scale benchmark.

    python benchmarks/put_cost.py --kubeconfig PATH --namespace NS [--requests 1000] [--lease NAME]

Sends `--requests` sequential renewals (PUTs with a new renewTime and the resourceVersion of
the previous answer, each checked to have changed the Lease) to one Lease and prints one JSON
object (last line of stdout) with the CPU seconds (utime+stime of this process) and wall
time per PUT for:

    store_update   lease_guard's KubernetesLeaseStore.update (lightkube AsyncClient, httpx, trio)
    httpx_trio     a bare httpx AsyncClient PUT under trio: pre-serialized body, no lightkube
    httpx_sync     a bare httpx Client PUT (blocking sockets, no event loop)

1000 leases renewed every 2 s are 500 PUTs a second; 500 x (CPU per PUT) is the share of
a core they take before any leader-election logic runs.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import resource
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

import trio
from lightkube import Client, KubeConfig

from lease_guard import KubernetesLeaseStore, LeaseSpec
from lease_guard._record import micro_time
from lease_guard.stores.kubernetes import _http_client


def cpu_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def body(namespace: str, name: str, rv: str) -> bytes:
    lease = {
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {"name": name, "namespace": namespace, "resourceVersion": rv},
        "spec": {"holderIdentity": "put-cost", "leaseDurationSeconds": 15, "renewTime": micro_time()},
    }
    return json.dumps(lease).encode()


def per_put(n: int, cpu: float, wall: float) -> dict[str, float]:
    return {"cpu_ms": round(cpu / n * 1000, 3), "wall_ms": round(wall / n * 1000, 3)}


async def async_stacks(args: argparse.Namespace) -> dict[str, dict[str, float]]:
    n, ns, name = args.requests, args.namespace, args.lease
    store = KubernetesLeaseStore.from_kubeconfig(args.kubeconfig, namespace=ns)
    out: dict[str, dict[str, float]] = {}
    try:
        spec = LeaseSpec("put-cost", 15, micro_time(), micro_time(), 0)
        current = await store.get(ns, name) or await store.create(ns, name, spec)

        async def timed(label: str, one: Callable[[], Awaitable[None]]) -> None:
            for _ in range(20):  # warm the connection and the code paths
                await one()
            c0, t0 = cpu_seconds(), time.monotonic()
            for _ in range(n):
                await one()
            out[label] = per_put(n, cpu_seconds() - c0, time.monotonic() - t0)

        async def via_store() -> None:
            # A real renewal: a new renewTime each time, so the server writes a new version
            # (an unchanged spec would be a no-op for it: same resourceVersion, no watch event).
            nonlocal current
            renewed = await store.update(current, dataclasses.replace(spec, renew_time=micro_time()))
            if renewed.resource_version == current.resource_version:
                raise RuntimeError("the PUT changed nothing on the server: not a renewal")
            current = renewed

        await timed("store_update", via_store)

        http: Any = _http_client(store._client)
        url = f"/apis/coordination.k8s.io/v1/namespaces/{ns}/leases/{name}"
        rv = current.resource_version

        async def bare() -> None:
            nonlocal rv
            r = await http.put(url, content=body(ns, name, rv), headers={"content-type": "application/json"})
            r.raise_for_status()
            new_rv = r.json()["metadata"]["resourceVersion"]
            if new_rv == rv:
                raise RuntimeError("the PUT changed nothing on the server: not a renewal")
            rv = new_rv

        await timed("httpx_trio", bare)
    finally:
        await store.aclose()
    return out


def sync_stack(args: argparse.Namespace) -> dict[str, float]:
    n, ns, name = args.requests, args.namespace, args.lease
    with Client(KubeConfig.from_file(args.kubeconfig), namespace=ns) as client:
        http: Any = client._client._client  # the sync client: _http_client() finds the async one only
        url = f"/apis/coordination.k8s.io/v1/namespaces/{ns}/leases/{name}"
        rv = http.get(url).json()["metadata"]["resourceVersion"]

        def one() -> None:
            nonlocal rv
            r = http.put(url, content=body(ns, name, rv), headers={"content-type": "application/json"})
            r.raise_for_status()
            rv = r.json()["metadata"]["resourceVersion"]

        for _ in range(20):
            one()
        c0, t0 = cpu_seconds(), time.monotonic()
        for _ in range(n):
            one()
        return per_put(n, cpu_seconds() - c0, time.monotonic() - t0)


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--kubeconfig", required=True)
    p.add_argument("--namespace", required=True)
    p.add_argument("--requests", type=int, default=1000)
    p.add_argument("--lease", default="put-cost")
    a = p.parse_args()
    result: dict[str, Any] = trio.run(async_stacks, a)
    result["httpx_sync"] = sync_stack(a)
    result["requests"] = a.requests
    print(json.dumps(result), flush=True)
    sys.exit(0)

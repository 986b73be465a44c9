"""The fault-injecting proxy of the real reliability layer (tests/reliability/proxy.py)
against the real kube-apiserver: it passes requests and watches through, and every fault
has its observable effect."""

from __future__ import annotations

import json
import ssl
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import httpx2
import pytest
import trio
from lightkube.models.rbac_v1 import PolicyRule

from tests.reliability.proxy import ERROR_MODES, FaultProxy, server_ssl_context, upstream_ssl_context

if TYPE_CHECKING:  # mypy names the file by its path (tests/ is a package); pytest imports it as top-level
    from tests.integration import kube_harness
else:
    import kube_harness  # on sys.path: conftest.py puts it there

pytestmark = pytest.mark.integration

LEASES = "/apis/coordination.k8s.io/v1/namespaces/{ns}/leases"
TIMEOUT = 30.0  # generous: conditions are waited for, never slept on


@pytest.fixture(scope="module")
def token(kube: kube_harness.KubeServer) -> str:
    """A bearer token allowed to create, get, update and watch Leases."""
    rules = [
        PolicyRule(apiGroups=["coordination.k8s.io"], resources=["leases"], verbs=["create", "get", "update", "watch"])
    ]
    conf = json.loads(kube.kubeconfig_for_rules("proxy-test", rules).read_text())
    value: str = conf["users"][0]["user"]["token"]
    return value


@pytest.fixture
async def proxy(kube: kube_harness.KubeServer, nursery: trio.Nursery) -> FaultProxy:
    if kube.local is None or kube.ca_path is None:
        pytest.skip("the proxy needs the local harness (its serving certificate and CA)")
    certs = kube.local.certs
    up = urlsplit(kube.url)
    assert up.hostname is not None and up.port is not None
    p = FaultProxy(
        up.hostname,
        up.port,
        server_context=server_ssl_context(certs.serving_cert, certs.serving_key),
        upstream_context=upstream_ssl_context(kube.ca_path),
    )
    await nursery.start(p.serve)
    return p


def _client(url: str, ca: Path, token: str, timeout: float = TIMEOUT) -> httpx2.AsyncClient:
    return httpx2.AsyncClient(
        base_url=url,
        verify=ssl.create_default_context(cafile=str(ca)),
        headers={"Authorization": f"Bearer {token}"},
        timeout=timeout,
        trust_env=False,
    )


def _admin(kube: kube_harness.KubeServer) -> httpx2.AsyncClient:
    """Straight to the API server, with the admin client certificate."""
    assert kube.local is not None and kube.ca_path is not None
    ctx = ssl.create_default_context(cafile=str(kube.ca_path))
    ctx.load_cert_chain(str(kube.local.certs.admin_cert), str(kube.local.certs.admin_key))
    return httpx2.AsyncClient(base_url=kube.url, verify=ctx, timeout=TIMEOUT, trust_env=False)


@pytest.fixture
async def lease(kube: kube_harness.KubeServer) -> AsyncIterator[str]:
    """A fresh Lease (created by the admin); yields its path."""
    name = f"proxy-{uuid.uuid4().hex[:8]}"
    path = LEASES.format(ns=kube.namespace)
    async with _admin(kube) as admin:
        body = {"metadata": {"name": name}, "spec": {"holderIdentity": "nobody", "leaseDurationSeconds": 5}}
        r = await admin.post(path, json=body)
        assert r.status_code == 201, r.text
        yield f"{path}/{name}"


async def _holder(kube: kube_harness.KubeServer, lease: str) -> str | None:
    async with _admin(kube) as admin:
        r = await admin.get(lease)
        r.raise_for_status()
        holder: str | None = r.json()["spec"].get("holderIdentity")
        return holder


async def _set_holder(client: httpx2.AsyncClient, lease: str, holder: str) -> httpx2.Response:
    """GET then PUT the Lease with a new holder (optimistic concurrency, as electors do)."""
    current = (await client.get(lease)).json()
    current["spec"]["holderIdentity"] = holder
    return await client.put(lease, json=current)


async def _eventually(what: str, check: Callable[[], Awaitable[bool]]) -> None:
    """Poll `check` until true; fail after TIMEOUT."""
    with trio.move_on_after(TIMEOUT):
        while not await check():  # noqa: ASYNC110 - polling the API server, nothing to wait on
            await trio.sleep(0.05)
        return
    raise AssertionError(f"timed out after {TIMEOUT} s waiting for {what}")


async def test_passes_requests_and_streams_watches(
    kube: kube_harness.KubeServer, proxy: FaultProxy, token: str, lease: str
) -> None:
    assert kube.ca_path is not None
    # ALPN: a client offering h2 gets HTTP/1.1.
    ctx = ssl.create_default_context(cafile=str(kube.ca_path))
    ctx.set_alpn_protocols(["h2", "http/1.1"])
    stream = await trio.open_ssl_over_tcp_stream("127.0.0.1", proxy.port, ssl_context=ctx)
    await stream.do_handshake()
    assert stream.selected_alpn_protocol() == "http/1.1"
    await stream.aclose()

    name = lease.rsplit("/", 1)[1]
    events: list[dict[str, Any]] = []
    async with _client(proxy.url, kube.ca_path, token) as client:
        r = await client.get(lease)
        assert r.status_code == 200 and r.json()["spec"]["holderIdentity"] == "nobody"
        watch = LEASES.format(ns=kube.namespace)
        params = {
            "watch": "true",
            "fieldSelector": f"metadata.name={name}",
            "resourceVersion": r.json()["metadata"]["resourceVersion"],
        }
        async with trio.open_nursery() as nursery:

            async def follow() -> None:
                async with client.stream("GET", watch, params=params) as resp:
                    assert resp.status_code == 200
                    async for line in resp.aiter_lines():
                        events.append(json.loads(line))

            nursery.start_soon(follow)
            for holder in ("a", "b"):
                async with _admin(kube) as admin:
                    assert (await _set_holder(admin, lease, holder)).status_code == 200

                async def seen(holder: str = holder) -> bool:
                    return any(e["object"]["spec"].get("holderIdentity") == holder for e in events)

                await _eventually(f"watch event for holder {holder}", seen)
            nursery.cancel_scope.cancel()
    assert proxy.counts["requests"] >= 2


async def test_latency_delays_each_request(
    kube: kube_harness.KubeServer, proxy: FaultProxy, token: str, lease: str
) -> None:
    assert kube.ca_path is not None
    proxy.set_latency(0.6)
    async with _client(proxy.url, kube.ca_path, token) as client:
        t0 = time.monotonic()
        assert (await client.get(lease)).status_code == 200
        assert time.monotonic() - t0 >= 0.6
    assert proxy.counts["latency"] == 1


async def test_delayed_answer_takes_effect_at_once(
    kube: kube_harness.KubeServer, proxy: FaultProxy, token: str, lease: str
) -> None:
    assert kube.ca_path is not None
    async with _client(proxy.url, kube.ca_path, token) as client:
        current = (await client.get(lease)).json()
        current["spec"]["holderIdentity"] = "late"
        proxy.set_delay(2.0)
        answered: list[float] = []
        async with trio.open_nursery() as nursery:

            async def put() -> None:
                t0 = time.monotonic()
                r = await client.put(lease, json=current)
                assert r.status_code == 200
                answered.append(time.monotonic() - t0)

            nursery.start_soon(put)

            async def took_effect() -> bool:
                return await _holder(kube, lease) == "late"

            await _eventually("the delayed write to take effect", took_effect)
            assert not answered, "the answer came back before the delay"
        assert answered[0] >= 2.0
    assert proxy.counts["delayed answers"] == 1


async def test_black_hole_hangs_existing_and_new_connections_until_healed(
    kube: kube_harness.KubeServer, proxy: FaultProxy, token: str, lease: str
) -> None:
    assert kube.ca_path is not None
    async with _client(proxy.url, kube.ca_path, token, timeout=1.0) as client:
        assert (await client.get(lease)).status_code == 200  # an open keep-alive connection
        proxy.set_black_hole(True)
        with pytest.raises(httpx2.TimeoutException):
            await client.get(lease)
        async with _client(proxy.url, kube.ca_path, token, timeout=1.0) as fresh:
            with pytest.raises(httpx2.TimeoutException):
                await fresh.get(lease)
        proxy.set_black_hole(False)
        assert (await client.get(lease)).status_code == 200
    assert proxy.counts["black-hole"] == 1
    assert proxy.counts["black-holed connections"] + proxy.counts["black-holed requests"] >= 2


async def test_reset_aborts_watches_and_requests(
    kube: kube_harness.KubeServer, proxy: FaultProxy, token: str, lease: str
) -> None:
    assert kube.ca_path is not None
    name = lease.rsplit("/", 1)[1]
    params = {"watch": "true", "fieldSelector": f"metadata.name={name}"}
    async with _client(proxy.url, kube.ca_path, token) as client:
        with pytest.raises(httpx2.TransportError):
            async with client.stream("GET", LEASES.format(ns=kube.namespace), params=params) as resp:
                assert resp.status_code == 200
                assert proxy.reset() >= 1
                async for _ in resp.aiter_lines():
                    pass
    assert proxy.counts["reset connections"] >= 1


@pytest.mark.parametrize("mode", ERROR_MODES)
async def test_errors(kube: kube_harness.KubeServer, proxy: FaultProxy, token: str, lease: str, mode: str) -> None:
    assert kube.ca_path is not None
    holder = f"h-{mode}"
    async with _client(proxy.url, kube.ca_path, token) as client:
        current = (await client.get(lease)).json()
        current["spec"]["holderIdentity"] = holder
        proxy.set_errors(mode)
        r = await client.put(lease, json=current)
        proxy.set_errors(None)
    expected = {"503": 503, "429": 429, "500": 500, "500-after-effect": 500, "timeout-after-effect": 504}[mode]
    assert r.status_code == expected
    assert r.json()["kind"] == "Status" and r.json()["code"] == expected
    assert ("retry-after" in r.headers) == (expected in (503, 429))
    took_effect = await _holder(kube, lease) == holder
    assert took_effect == mode.endswith("after-effect")
    assert proxy.counts[f"error {mode}"] == 1

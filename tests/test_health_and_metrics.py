"""Liveness health and Prometheus metrics of an Elector."""

from __future__ import annotations

import trio
import trio.testing
from prometheus_client import CollectorRegistry

from lease_guard import Elector, MemoryLeaseStore
from lease_guard.health import health_status, serve_health
from lease_guard.metrics import Metrics, instrument

LEASE = "jobs"


async def test_health_is_ok_while_following_and_while_renewing(autojump_clock: trio.testing.MockClock) -> None:
    store = MemoryLeaseStore()
    store.steal(LEASE, "other")
    async with Elector(LEASE, store=store) as elector:
        assert health_status(elector) == (200, "ok: following\n")
        await elector.wait_leading()
        await trio.sleep(100)
        assert health_status(elector) == (200, "ok: leading\n")


async def test_health_fails_when_the_campaign_is_wedged(autojump_clock: trio.testing.MockClock) -> None:
    async with Elector(LEASE, store=MemoryLeaseStore()) as elector:
        await elector.wait_leading()
        tenure = elector._running().tenure
        assert tenure is not None
        tenure.sent_at -= 26  # as if no renewal had been sent for 26 s while still leading
        assert health_status(elector, tolerance=10)[0] == 503
        assert health_status(elector, tolerance=12)[0] == 200


async def test_health_endpoint_answers_http() -> None:
    async with Elector(LEASE, store=MemoryLeaseStore()) as elector, trio.open_nursery() as nursery:
        await elector.wait_leading()
        listeners = await nursery.start(serve_health, elector, 0, "127.0.0.1")
        port = listeners[0].socket.getsockname()[1]
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        await stream.send_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        reply = b""
        while chunk := await stream.receive_some():
            reply += chunk
        assert reply.startswith(b"HTTP/1.1 200 OK")
        assert reply.endswith(b"ok: leading\n")
        nursery.cancel_scope.cancel()


async def test_metrics_follow_leadership(autojump_clock: trio.testing.MockClock) -> None:
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    store = MemoryLeaseStore()
    store.steal(LEASE, "previous")  # held for 15 s: leadership starts after instrument does

    def sample(name: str, **labels: str) -> float | None:
        return registry.get_sample_value(name, {"name": LEASE, **labels})

    async with Elector(LEASE, store=store) as elector, trio.open_nursery() as nursery:
        nursery.start_soon(instrument, elector, metrics)
        await trio.sleep(1)
        assert sample("leader_election_master_status") == 0
        await elector.wait_leading()
        await trio.sleep(5)
        assert sample("leader_election_master_status") == 1
        assert sample("lease_guard_leadership_transitions_total", kind="started") == 1
        assert sample("lease_guard_renewal_seconds_count") == 2
        store.steal(LEASE, "other")
        await trio.sleep(1)
        assert sample("leader_election_master_status") == 0
        assert sample("lease_guard_leadership_transitions_total", kind="stopped") == 1
        nursery.cancel_scope.cancel()

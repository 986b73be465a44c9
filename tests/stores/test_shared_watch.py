"""KubernetesLeaseStore's shared watch: many Leases of a namespace followed through one LIST and one watch.

The scripted fake API server of test_kubernetes.py answers the requests in turn; watch
bodies that never end stand for a live stream, and a gated body holds its events until
the test has every follower in place.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

import httpx2 as httpx
import pytest
import trio
import trio.testing
from lightkube import AsyncClient, KubeConfig

from lease_guard import ConfigurationError, KubernetesLeaseStore, LeaseRecord, LeaseStoreError, StoreUnavailable
from tests.stores.test_kubernetes import (
    COLLECTION,
    GET,
    NAME,
    NS,
    FakeApiServer,
    Silent,
    failure,
    kubeconfig,
    lease,
    ok,
    status,
    stream,
    watch,
)

LIST: tuple[str, str, dict[str, str]] = ("GET", COLLECTION, {})


def named(name: str, rv: str, holder: str = "a") -> dict[str, Any]:
    body = lease(rv, holder)
    body["metadata"]["name"] = name
    return body


def listing(rv: str, *leases: dict[str, Any]) -> httpx.Response:
    body: dict[str, Any] = {
        "kind": "LeaseList",
        "apiVersion": "coordination.k8s.io/v1",
        "metadata": {"resourceVersion": rv},
    }
    if leases:  # the server leaves out the items of an empty list
        body["items"] = list(leases)
    return ok(body)


def namespace_watch(rv: str) -> tuple[str, str, dict[str, str]]:
    return ("GET", COLLECTION, {"watch": "true", "resourceVersion": rv, "allowWatchBookmarks": "true"})


class Gated(Silent):
    """A live watch body that sends its events only once `gate` is set."""

    def __init__(self, *events: tuple[str, dict[str, Any]]) -> None:
        super().__init__(*events)
        self.gate = trio.Event()

    async def __aiter__(self) -> AsyncIterator[bytes]:
        await self.gate.wait()
        async for chunk in super().__aiter__():
            yield chunk


@contextlib.asynccontextmanager
async def store_for(server: FakeApiServer, shared_watch_from: int | None = 1) -> AsyncIterator[KubernetesLeaseStore]:
    client = AsyncClient(KubeConfig.from_dict(kubeconfig()), namespace=NS, transport=httpx.MockTransport(server))
    try:
        yield KubernetesLeaseStore(client, shared_watch_from=shared_watch_from)
    finally:
        await client.close()


def states(values: list[LeaseRecord | None]) -> list[tuple[str, str | None] | None]:
    return [None if v is None else (v.resource_version, v.holder) for v in values]


class Followers:
    """watch() of several Leases of NS on one store, each in a task of its own, recording what each yields."""

    def __init__(self, store: KubernetesLeaseStore, nursery: trio.Nursery) -> None:
        self.store = store
        self.nursery = nursery
        self.seen: dict[str, list[LeaseRecord | None]] = {}
        self.failures: dict[str, BaseException] = {}
        self._changed = trio.Event()

    def start(self, name: str) -> None:
        self.seen[name] = []
        self.nursery.start_soon(self._follow, name)

    async def _follow(self, name: str) -> None:
        iterator = self.store.watch(NS, name)
        try:
            async with contextlib.aclosing(iterator):  # type: ignore[type-var]
                async for value in iterator:
                    self.seen[name].append(value)
                    self._changed.set()
        except LeaseStoreError as exc:
            self.failures[name] = exc

    async def until(self, **counts: int) -> None:
        """Wait (in virtual time) until each named follower has yielded that many values."""
        with trio.fail_after(60):
            while any(len(self.seen[name]) < n for name, n in counts.items()):
                await self._changed.wait()
                self._changed = trio.Event()


async def test_followers_of_many_leases_share_one_list_and_one_watch_and_each_sees_only_its_own(
    autojump_clock: trio.testing.MockClock,
) -> None:
    server = FakeApiServer()
    events = Gated(
        ("MODIFIED", named("a", "101", "x")),
        ("MODIFIED", named("unfollowed", "102")),
        ("DELETED", named("b", "103")),
        ("ADDED", named("c", "104", "y")),
        ("MODIFIED", named("a", "105", "z")),
    )
    server.replies += [
        listing("100", named("a", "90"), named("b", "95"), named("unfollowed", "96")),
        stream(body=events),
    ]
    async with store_for(server) as store, trio.open_nursery() as nursery:
        followers = Followers(store, nursery)
        for name in "abc":
            followers.start(name)
        await followers.until(a=1, b=1, c=1)
        # Each first state comes from the one list; c is not in it: absent.
        assert {k: states(v) for k, v in followers.seen.items()} == {
            "a": [("90", "a")],
            "b": [("95", "a")],
            "c": [None],
        }
        events.gate.set()
        await followers.until(a=3, b=2, c=2)
        await trio.testing.wait_all_tasks_blocked()
        assert {k: states(v) for k, v in followers.seen.items()} == {
            "a": [("90", "a"), ("101", "x"), ("105", "z")],
            "b": [("95", "a"), None],
            "c": [None, ("104", "y")],
        }
        nursery.cancel_scope.cancel()
    await trio.testing.wait_all_tasks_blocked()
    assert server.seen() == [LIST, namespace_watch("100")]
    assert events.closed  # the last follower gone, the shared watch closed its stream


async def test_a_follower_that_joins_later_starts_from_the_shared_watchs_latest_state(
    autojump_clock: trio.testing.MockClock,
) -> None:
    server = FakeApiServer()
    server.replies += [listing("100", named("a", "90")), stream(body=Silent(("MODIFIED", named("b", "101", "x"))))]
    async with store_for(server) as store, trio.open_nursery() as nursery:
        followers = Followers(store, nursery)
        followers.start("a")
        await followers.until(a=1)
        await trio.testing.wait_all_tasks_blocked()  # the event about b is in
        followers.start("b")
        await followers.until(b=1)
        assert states(followers.seen["b"]) == [("101", "x")]
        nursery.cancel_scope.cancel()
    assert server.seen() == [LIST, namespace_watch("100")]  # b made no request of its own


async def test_after_a_gap_the_shared_watch_relists_and_passes_on_only_what_changed(
    autojump_clock: trio.testing.MockClock,
) -> None:
    server = FakeApiServer()
    server.replies += [
        listing("100", named("a", "90"), named("b", "95")),
        stream(("ERROR", status(410, "Expired", "too old resource version"))),
        listing("200", named("a", "150", "x"), named("b", "95")),
        stream(body=Silent(("MODIFIED", named("a", "201")))),
    ]
    async with store_for(server) as store, trio.open_nursery() as nursery:
        followers = Followers(store, nursery)
        followers.start("a")
        followers.start("b")
        await followers.until(a=3, b=1)
        await trio.testing.wait_all_tasks_blocked()
        assert states(followers.seen["a"]) == [("90", "a"), ("150", "x"), ("201", "a")]
        assert states(followers.seen["b"]) == [("95", "a")]  # unchanged by the re-list: not repeated
        nursery.cancel_scope.cancel()
    assert server.seen() == [LIST, namespace_watch("100"), LIST, namespace_watch("200")]


async def test_leases_get_watches_of_their_own_until_shared_watch_from_are_followed(
    autojump_clock: trio.testing.MockClock,
) -> None:
    server = FakeApiServer()
    server.replies += [ok(lease("10")), stream(body=Silent()), listing("20", named("b", "15")), stream(body=Silent())]
    async with store_for(server, shared_watch_from=2) as store, trio.open_nursery() as nursery:
        followers = Followers(store, nursery)
        followers.start(NAME)
        await followers.until(**{NAME: 1})
        await trio.testing.wait_all_tasks_blocked()
        assert len(server.requests) == 2  # its own watch is open
        followers.start("b")  # the second Lease followed: through a shared watch
        await followers.until(b=1)
        await trio.testing.wait_all_tasks_blocked()
        nursery.cancel_scope.cancel()
    assert server.seen() == [GET, watch("10"), LIST, namespace_watch("20")]


async def test_shared_watch_from_none_gives_every_lease_a_watch_of_its_own(
    autojump_clock: trio.testing.MockClock,
) -> None:
    server = FakeApiServer()
    server.replies += [ok(lease("10")), stream(body=Silent())]
    async with store_for(server, shared_watch_from=None) as store, trio.open_nursery() as nursery:
        followers = Followers(store, nursery)
        followers.start(NAME)
        await followers.until(**{NAME: 1})
        await trio.testing.wait_all_tasks_blocked()
        nursery.cancel_scope.cancel()
    assert server.seen() == [GET, watch("10")]


async def test_a_refused_shared_watch_falls_back_to_a_watch_per_lease_and_says_so_once(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    server = FakeApiServer()
    server.replies += [
        failure(403, "Forbidden", 'leases.coordination.k8s.io is forbidden: User "me" cannot list resource "leases"'),
        ok(lease("10")),
        stream(body=Silent(("MODIFIED", lease("11", "b")))),
        ok(lease("11", "b")),
        stream(body=Silent()),
    ]
    caplog.set_level(logging.INFO, logger="lease_guard")
    async with store_for(server) as store, trio.open_nursery() as nursery:
        followers = Followers(store, nursery)
        followers.start(NAME)
        await followers.until(**{NAME: 2})
        assert states(followers.seen[NAME]) == [("10", "a"), ("11", "b")]
        # A later follower of the namespace goes straight to a watch of its own: no list again.
        second = Followers(store, nursery)
        second.start(NAME)
        await second.until(**{NAME: 1})
        await trio.testing.wait_all_tasks_blocked()
        nursery.cancel_scope.cancel()
    assert server.seen() == [LIST, GET, watch("10"), GET, watch("11")]
    said = [r.getMessage() for r in caplog.records if "through a watch of its own" in r.getMessage()]
    assert said == [
        f"leases of namespace {NS}: following each through a watch of its own, as listing and watching all the "
        f"namespace's Leases was refused (the API server refused to list lease {NS}/* (403): "
        'leases.coordination.k8s.io is forbidden: User "me" cannot list resource "leases"). Grant list and watch '
        "on leases in the namespace to follow them through one watch."
    ]


async def test_a_failed_first_list_is_raised_by_its_followers_and_the_next_watch_lists_again(
    autojump_clock: trio.testing.MockClock,
) -> None:
    server = FakeApiServer()
    server.replies += [failure(503, "ServiceUnavailable"), listing("20", named(NAME, "15")), stream(body=Silent())]
    async with store_for(server) as store:
        iterator = store.watch(NS, NAME)
        with pytest.raises(StoreUnavailable, match=r"could not list lease ops/\* \(503\)"):
            async with contextlib.aclosing(iterator):  # type: ignore[type-var]
                await anext(iterator)
        async with trio.open_nursery() as nursery:
            followers = Followers(store, nursery)
            followers.start(NAME)
            await followers.until(**{NAME: 1})
            await trio.testing.wait_all_tasks_blocked()
            nursery.cancel_scope.cancel()
    assert server.seen() == [LIST, LIST, namespace_watch("20")]


async def test_the_last_follower_leaving_stops_the_shared_watch_and_the_next_one_lists_again(
    autojump_clock: trio.testing.MockClock,
) -> None:
    server = FakeApiServer()
    first_stream = Silent(("MODIFIED", named(NAME, "11")))
    server.replies += [listing("10", named(NAME, "10")), stream(body=first_stream)]
    server.replies += [listing("30", named(NAME, "30")), stream(body=Silent())]
    async with store_for(server) as store:
        iterator = store.watch(NS, NAME)
        async with contextlib.aclosing(iterator):  # type: ignore[type-var]
            assert states([await anext(iterator), await anext(iterator)]) == [("10", "a"), ("11", "a")]
        await trio.testing.wait_all_tasks_blocked()
        assert first_stream.closed
        iterator = store.watch(NS, NAME)
        async with contextlib.aclosing(iterator):  # type: ignore[type-var]
            assert states([await anext(iterator)]) == [("30", "a")]
    assert server.seen() == [LIST, namespace_watch("10"), LIST, namespace_watch("30")]


async def test_closing_the_store_ends_its_shared_watches_followers_with_an_error(
    autojump_clock: trio.testing.MockClock,
) -> None:
    server = FakeApiServer()
    server.replies += [listing("10", named(NAME, "10")), stream(body=Silent())]
    async with store_for(server) as store, trio.open_nursery() as nursery:
        followers = Followers(store, nursery)
        followers.start(NAME)
        await followers.until(**{NAME: 1})
        await store.aclose()
    assert "the lease store was closed" in str(followers.failures[NAME])


@pytest.mark.parametrize("value", [0, -3, True])
def test_shared_watch_from_must_be_a_positive_count_or_none(value: Any) -> None:
    client = AsyncClient(
        KubeConfig.from_dict(kubeconfig()), namespace=NS, transport=httpx.MockTransport(FakeApiServer())
    )
    with pytest.raises(ConfigurationError, match=r"shared_watch_from must be a number of Leases, at least 1, or None"):
        KubernetesLeaseStore(client, shared_watch_from=value)

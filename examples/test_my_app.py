"""How to test code that uses lease_guard: pytest-trio, virtual time, the in-memory store.

    pip install pytest-trio && pytest examples/test_my_app.py

The tests are marked ``@pytest.mark.trio``, so they run wherever pytest-trio is installed.
To leave the marks out, turn trio mode on for the whole project instead, in pyproject.toml::

    [tool.pytest.ini_options]
    trio_mode = true

The app under test takes its store as a parameter; tests hand it a MemoryLeaseStore and
drive leadership with its controls. The autojump clock makes lease timeouts instant.
"""

from __future__ import annotations

import pytest
import trio
import trio.testing

from lease_guard import LeadershipLost, LeaseStore, MemoryLeaseStore, leadership


async def my_app(store: LeaseStore, done: list[int]) -> None:
    """The code under test: process items while leading."""
    async with leadership("my-app", identity="me", store=store):
        for item in range(100):
            done.append(item)
            await trio.sleep(1)


@pytest.mark.trio
async def test_app_works_while_leading(autojump_clock: trio.testing.MockClock) -> None:
    store = MemoryLeaseStore()
    done: list[int] = []
    await my_app(store, done)
    assert done == list(range(100))
    assert store.holder("my-app") is None  # released on exit


@pytest.mark.trio
async def test_app_stops_when_the_lease_is_taken(autojump_clock: trio.testing.MockClock) -> None:
    store = MemoryLeaseStore()
    done: list[int] = []

    async def operator_takes_over() -> None:
        await trio.sleep(4.5)
        store.steal("my-app", "other-replica")

    async with trio.open_nursery() as nursery:
        nursery.start_soon(operator_takes_over)
        with pytest.raises(LeadershipLost):
            await my_app(store, done)
    assert done == [0, 1, 2, 3, 4]


@pytest.mark.trio
async def test_app_stops_at_the_deadline_when_the_api_server_is_down(autojump_clock: trio.testing.MockClock) -> None:
    store = MemoryLeaseStore()
    done: list[int] = []

    async def outage() -> None:
        await trio.sleep(0.5)
        with store.outage():
            await trio.sleep(60)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(outage)
        with pytest.raises(LeadershipLost, match="renew_deadline"):
            await my_app(store, done)
    assert len(done) == 10  # the default renew_deadline, counted from the send at 0

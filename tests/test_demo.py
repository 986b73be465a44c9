"""The demo's board shows what is true at each instant: never two leaders."""

from __future__ import annotations

import random

import trio
import trio.testing

from lease_guard import MemoryLeaseStore
from lease_guard.demo import LEASE, Board, run


class CheckedBoard(Board):
    """A board that checks, at every change, that it shows at most one leader, and that the
    one it shows holds the Lease."""

    def __init__(self, store: MemoryLeaseStore) -> None:
        super().__init__()
        self.store = store
        self.changes = 0
        self.tenures = 0

    def set(self, name: str, state: str) -> None:
        super().set(name, state)
        self.changes += 1
        self.tenures += state.startswith("LEADING")
        self.check()

    def check(self) -> None:
        leaders = self.leaders()
        assert len(leaders) <= 1, self.line()
        for leader in leaders:
            assert self.store.holder(LEASE) == leader, self.line()


async def test_the_board_never_shows_two_leaders(autojump_clock: trio.testing.MockClock) -> None:
    store = MemoryLeaseStore()
    board = CheckedBoard(store)
    lines: list[str] = []

    async def sample() -> None:
        while True:
            board.check()
            await trio.sleep(0.05)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(sample)
        await run(store, None, 4, 300, board=board, rng=random.Random(7), write=lines.append)
        nursery.cancel_scope.cancel()
    assert board.tenures > 30  # releases and crashes both happened many times
    assert any("crashed" in line for line in lines)
    assert sum("LEADING" in line for line in lines) > 0.5 * len(lines)

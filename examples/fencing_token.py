"""Fencing tokens: a downstream store refuses writes from a leader older than one it has seen.

    python examples/fencing_token.py

The exporter writes each batch with its tenure's term (``lead.term``). Another replica
takes the Lease and writes with a higher term; a late write from the first tenure (as from
a leader that overran its deadline, blocked in a thread or paused) is then refused by the
warehouse instead of corrupting it. The code of ``export`` is the one in docs/concepts.md.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import trio

from lease_guard import Elector, MemoryLeaseStore, leadership


class StaleLeader(Exception):
    """A write carried a smaller term than one the warehouse has already seen."""


class Warehouse:
    """Stand-in for a database that keeps the largest term it has seen, as in
    ``UPDATE ... SET term = $2 WHERE id = 1 AND term <= $2``."""

    def __init__(self) -> None:
        self.term = -1
        self.rows: list[str] = []

    async def write(self, batch: list[str], *, fencing_token: int) -> None:
        await trio.lowlevel.checkpoint()
        if fencing_token < self.term:
            raise StaleLeader(f"term {fencing_token} < {self.term}: a newer leader exists")
        self.term = fencing_token
        self.rows += batch


async def export(warehouse: Warehouse, batches: Callable[[], AsyncIterator[list[str]]]) -> None:
    async with leadership("billing-exporter") as lead:
        async for batch in batches():
            await warehouse.write(batch, fencing_token=lead.term)


def batches_of(name: str) -> Callable[[], AsyncIterator[list[str]]]:
    async def batches() -> AsyncIterator[list[str]]:
        for n in range(2):
            yield [f"{name}-{n}"]

    return batches


async def main() -> None:
    store = MemoryLeaseStore()
    warehouse = Warehouse()
    for replica in ("exporter-a", "exporter-b"):
        async with Elector("billing-exporter", identity=replica, store=store):  # leadership() reuses it
            await export(warehouse, batches_of(replica))
        print(f"{replica} exported; the warehouse has seen term {warehouse.term}")
    try:
        await warehouse.write(["late-write-of-term-0"], fencing_token=0)
    except StaleLeader as refused:
        print(f"refused: {refused}")
    print(f"rows: {warehouse.rows}")


if __name__ == "__main__":
    trio.run(main)

"""Fault injection around a LeaseStore, for one candidate's view of the API server."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import trio

from lease_guard import LeaseRecord, LeaseSpec, LeaseStore


@dataclass
class FaultyStore:
    """Wraps a store as one candidate's network path to it.

    - ``stall()`` / ``heal()``: requests and the watch hang (a partition) until every
      stall is healed (stalls nest: one fault's heal does not end another's stall);
    - ``answer_delay``: a request takes effect at once, its answer arrives this much later;
    - ``watch_held``: the watch delivers nothing until it is cleared (then what it held);
    - ``errors``: exceptions raised by the next requests, in order, before they take effect;
    - ``write_errors``: exceptions raised by the next writes before they take effect (409s);
    - ``errors_after_effect``: exceptions raised by the next writes *after* they took effect
      (a timeout or a dropped connection once the server had applied the write).
    """

    inner: LeaseStore
    stalls: int = 0
    answer_delay: float = 0.0
    watch_held: bool = False
    errors: list[Exception] = field(default_factory=list)
    write_errors: list[Exception] = field(default_factory=list)
    errors_after_effect: list[Exception] = field(default_factory=list)
    requests: list[tuple[float, str]] = field(default_factory=list)
    _healed: trio.Event = field(default_factory=trio.Event)

    @property
    def default_namespace(self) -> str:
        return self.inner.default_namespace

    @property
    def stalled(self) -> bool:
        return self.stalls > 0

    def stall(self) -> None:
        if not self.stalled:
            self._healed = trio.Event()
        self.stalls += 1

    def heal(self) -> None:
        self.stalls = max(0, self.stalls - 1)
        if not self.stalled:
            self._healed.set()

    async def _before(self, verb: str) -> None:
        self.requests.append((trio.current_time(), verb))
        while self.stalled:
            await self._healed.wait()
        if self.errors:
            raise self.errors.pop(0)
        if verb in ("create", "update") and self.write_errors:
            raise self.write_errors.pop(0)

    async def _after(self, write: bool = True) -> None:
        if write and self.errors_after_effect:
            raise self.errors_after_effect.pop(0)
        # A partition that starts later does not swallow an answer already on its way.
        if self.answer_delay:
            await trio.sleep(self.answer_delay)

    async def get(self, namespace: str, name: str) -> LeaseRecord | None:
        await self._before("get")
        result = await self.inner.get(namespace, name)
        await self._after(write=False)
        return result

    async def create(self, namespace: str, name: str, spec: LeaseSpec) -> LeaseRecord:
        await self._before("create")
        result = await self.inner.create(namespace, name, spec)
        await self._after()
        return result

    async def update(self, current: LeaseRecord, spec: LeaseSpec) -> LeaseRecord:
        await self._before("update")
        result = await self.inner.update(current, spec)
        await self._after()
        return result

    async def watch(self, namespace: str, name: str) -> AsyncIterator[LeaseRecord | None]:
        await self._before("watch")
        async for record in self.inner.watch(namespace, name):
            while self.stalled or self.watch_held:
                if self.stalled:
                    await self._healed.wait()
                else:
                    await trio.sleep(0.01)
            yield record


@dataclass
class Intervals:
    """Records when each candidate's guarded code runs, to check that no two overlap."""

    spans: list[tuple[str, float, float]] = field(default_factory=list)
    open: dict[str, float] = field(default_factory=dict)

    def start(self, who: str) -> None:
        if self.open:
            raise AssertionError(f"{who} started leading at {trio.current_time()} while {self.open} lead")
        self.open[who] = trio.current_time()

    def stop(self, who: str) -> None:
        self.spans.append((who, self.open.pop(who), trio.current_time()))

    def closed(self) -> list[tuple[str, float, float]]:
        now = trio.current_time()
        return self.spans + [(who, since, now) for who, since in self.open.items()]

    def assert_disjoint(self) -> None:
        ordered = sorted(self.closed(), key=lambda span: span[1])
        for (who_a, _, end_a), (who_b, start_b, _) in itertools.pairwise(ordered):
            assert end_a <= start_b, f"{who_a} led until {end_a} but {who_b} started at {start_b}"

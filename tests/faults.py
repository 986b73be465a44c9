"""Fault injection around a LeaseStore, for one candidate's view of the API server."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import trio

from lease_guard import LeaseRecord, LeaseSpec, LeaseStore


class DriftingClock:
    """A candidate's clock running at ``rate`` times trio's, for ``Elector._clock``.

    The Elector keeps every time (observations, deadlines, pauses) on this clock and asks
    ``at`` for the trio time to sleep until. Rates far enough apart break the safety bound
    (``lease_duration / renew_deadline``); inside it the checker must find nothing.
    """

    def __init__(self, rate: float = 1.0) -> None:
        self.rate = rate

    def now(self) -> float:
        return trio.current_time() * self.rate

    def at(self, local: float) -> float:
        """The trio time at which ``now()`` reaches ``local`` (never a rounding error early,
        or a timer would fire while ``now()`` still reads less and a loop would spin)."""
        if self.rate == 1.0 or not math.isfinite(local):
            return local
        moment = local / self.rate
        while moment * self.rate < local:
            moment = math.nextafter(moment, math.inf)
        return moment


class AnswerCountedClock(DriftingClock):
    """A deliberately broken clock: it reads a request's send time as the moment its answer
    will arrive, so an Elector using it counts its renew deadline from answers (client-go's
    rule) instead of sends. ``now()`` runs ahead by the store's current answer delay; ``at``
    is the honest clock's, so a deadline taken from ``now()`` lands that delay late.
    """

    def __init__(self, store: FaultyStore, rate: float = 1.0) -> None:
        super().__init__(rate)
        self.store = store

    def now(self) -> float:
        return super().now() + self.store.answer_delay * self.rate


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
      (a timeout or a dropped connection once the server had applied the write);
    - ``after_write``: called with each record a write produced, right after it took effect
      and before its answer leaves (another client racing in between, say).
    """

    inner: LeaseStore
    stalls: int = 0
    answer_delay: float = 0.0
    watch_held: bool = False
    errors: list[Exception] = field(default_factory=list)
    write_errors: list[Exception] = field(default_factory=list)
    errors_after_effect: list[Exception] = field(default_factory=list)
    requests: list[tuple[float, str]] = field(default_factory=list)
    after_write: Callable[[LeaseRecord], None] | None = None
    first_answer_at: float | None = None
    """When this candidate first received anything from the store (an answer or a watch event)."""
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
        self._answered()

    def _answered(self) -> None:
        if self.first_answer_at is None:
            self.first_answer_at = trio.current_time()

    async def get(self, namespace: str, name: str) -> LeaseRecord | None:
        await self._before("get")
        result = await self.inner.get(namespace, name)
        await self._after(write=False)
        return result

    async def create(self, namespace: str, name: str, spec: LeaseSpec) -> LeaseRecord:
        await self._before("create")
        result = await self.inner.create(namespace, name, spec)
        if self.after_write is not None:
            self.after_write(result)
        await self._after()
        return result

    async def update(self, current: LeaseRecord, spec: LeaseSpec) -> LeaseRecord:
        await self._before("update")
        result = await self.inner.update(current, spec)
        if self.after_write is not None:
            self.after_write(result)
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
            self._answered()
            yield record


Excuse = Callable[[str, float, str], bool]
"""Whether an overlap is allowed: (earlier owner, when its span started, later owner)."""


@dataclass
class Intervals:
    """Records when guarded code runs, to check that no two owners' code overlaps.

    An owner is whatever may run guarded code under one tenure at a time (an Elector, one
    call of a decorated job); several tasks of one owner may run guarded code at once, each
    recording its own span (``start``/``stop`` in the same task). Spans of different owners
    must not overlap, unless ``excuse`` says the semantics allow it.
    """

    spans: list[tuple[str, float, float]] = field(default_factory=list)
    open: dict[tuple[str, trio.lowlevel.Task], float] = field(default_factory=dict)
    excuse: Excuse | None = None

    def _excused(self, earlier: str, since: float, later: str) -> bool:
        return self.excuse is not None and self.excuse(earlier, since, later)

    def start(self, who: str) -> None:
        now = trio.current_time()
        others = {
            owner: since
            for (owner, _), since in self.open.items()
            if owner != who and not self._excused(owner, since, who)
        }
        if others:
            raise AssertionError(f"{who} started leading at {now} while {others} lead")
        self.open[(who, trio.lowlevel.current_task())] = now

    def stop(self, who: str) -> None:
        since = self.open.pop((who, trio.lowlevel.current_task()))
        self.spans.append((who, since, trio.current_time()))

    def closed(self) -> list[tuple[str, float, float]]:
        now = trio.current_time()
        return self.spans + [(who, since, now) for (who, _), since in self.open.items()]

    def assert_disjoint(self) -> None:
        ordered = sorted(self.closed(), key=lambda span: span[1])
        for i, (who_a, start_a, end_a) in enumerate(ordered):
            for who_b, start_b, _ in ordered[i + 1 :]:
                if start_b >= end_a:
                    break
                if who_b != who_a and not self._excused(who_a, start_a, who_b):
                    raise AssertionError(f"{who_a} led until {end_a} but {who_b} started at {start_b}")


def first_violation(group: BaseExceptionGroup[BaseException]) -> AssertionError | None:
    """The first AssertionError in a (nested) exception group: a checker's verdict."""
    for exc in group.exceptions:
        if isinstance(exc, AssertionError):
            return exc
        if isinstance(exc, BaseExceptionGroup):
            found = first_violation(exc)
            if found is not None:
                return found
    return None

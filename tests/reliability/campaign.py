"""A bounded chaos campaign on the deterministic layer, with a summary table.

    python -m tests.reliability.campaign --schedules 500 --seed 1 [--kinds delete,race]

Runs random fault schedules (the same generator for every column) against lease_guard's
elector and against the same elector with one rule changed, the renew deadline counted
from when an answer *arrived* (client-go's rule), and prints schedules run, faults injected
by kind, overlaps, liveness failures and hangs found, and the worst takeover time after the
faults stopped. ``--kinds`` draws faults from those kinds only (default: all of
``test_safety.FAULT_KINDS``; ``network`` and ``usage`` name the two groups). Exits 1 if
lease_guard shows an overlap, a liveness failure or a hang.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import random
import time
from dataclasses import dataclass, field

import trio
import trio.testing

from ..faults import Intervals, first_violation
from . import test_safety as safety


def random_schedule(rng: random.Random, kinds: list[str]) -> tuple[int, list[safety.Fault], list[float], list[float]]:
    candidates = rng.randint(2, 4)
    schedule = [
        safety.Fault(
            at=round(rng.uniform(0, 120), 2),
            candidate=rng.randint(0, 3),
            kind=rng.choice(kinds),
            length=round(rng.uniform(0.1, 25), 2),
        )
        for _ in range(rng.randint(0, 12))
    ]
    work = [round(rng.uniform(0.5, 40), 2) for _ in range(rng.randint(1, 4))]
    rates = [rng.uniform(1 / safety.SAFE_DRIFT, safety.SAFE_DRIFT) for _ in range(rng.randint(1, 4))]
    return candidates, schedule, work, rates


def takeover_after_quiet(intervals: Intervals, schedule: list[safety.Fault]) -> float:
    quiet = max((f.end for f in schedule), default=0)
    spans = intervals.spans
    if any(start <= quiet < end for _, start, end in spans):
        return 0.0
    return min((start - quiet for _, start, _ in spans if start > quiet), default=float("inf"))


@dataclass
class Column:
    overlaps: int = 0
    liveness: int = 0
    hangs: int = 0
    worst: float = 0.0
    faults: dict[str, int] = field(default_factory=dict)


def run_column(schedules: list[tuple[int, list[safety.Fault], list[float], list[float]]]) -> Column:
    column = Column()
    safety.faults_injected.clear()
    for candidates, schedule, work, rates in schedules:
        try:
            intervals = trio.run(
                safety.scenario, candidates, schedule, work, rates, clock=trio.testing.MockClock(autojump_threshold=0)
            )
            column.worst = max(column.worst, takeover_after_quiet(intervals, schedule))
        except BaseExceptionGroup as group:
            failure = first_violation(group)
            if failure is None:
                raise
            count(column, failure)
        except AssertionError as failure:
            count(column, failure)
    column.faults = dict(safety.faults_injected)
    return column


def count(column: Column, failure: AssertionError) -> None:
    message = str(failure)
    if message.startswith("liveness"):
        column.liveness += 1
    elif message.startswith("hang"):
        column.hangs += 1
    else:
        column.overlaps += 1


def kinds_from(text: str) -> list[str]:
    groups = {"all": safety.FAULT_KINDS, "network": safety.NETWORK_KINDS, "usage": safety.USAGE_KINDS}
    kinds = [kind for name in text.split(",") for kind in groups.get(name, [name])]
    unknown = sorted(set(kinds) - set(safety.FAULT_KINDS))
    if unknown:
        raise SystemExit(f"unknown fault kinds {unknown}; known: {safety.FAULT_KINDS}")
    return kinds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--schedules", type=int, default=500)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--kinds", default="all", help="comma-separated fault kinds, or all, network, usage")
    args = parser.parse_args()
    kinds = kinds_from(args.kinds)
    logging.disable(logging.CRITICAL)
    rng = random.Random(args.seed)
    schedules = [random_schedule(rng, kinds) for _ in range(args.schedules)]
    started = time.monotonic()
    ours = run_column(schedules)
    with safety.deadline_counted_from_the_answer():
        answer_counted = run_column(schedules)
    elapsed = time.monotonic() - started
    kinds = sorted(set(ours.faults) | set(answer_counted.faults))
    rows: list[tuple[str, object, object]] = [
        ("schedules run", args.schedules, args.schedules),
        *((f"faults: {kind}", ours.faults.get(kind, 0), answer_counted.faults.get(kind, 0)) for kind in kinds),
        ("overlaps found (schedules)", ours.overlaps, answer_counted.overlaps),
        ("liveness failures", ours.liveness, answer_counted.liveness),
        ("hangs", ours.hangs, answer_counted.hangs),
        ("worst takeover after faults (s)", f"{ours.worst:.2f}", f"{answer_counted.worst:.2f}"),
    ]
    print(f"deterministic layer, seed {args.seed}, kinds {args.kinds}, {elapsed:.0f} s")
    print(f"{'':40} {'lease_guard':>12} {'deadline from answer':>22}")
    for name, left, right in rows:
        print(f"{name:40} {left!s:>12} {right!s:>22}")
    return 1 if ours.overlaps or ours.liveness or ours.hangs else 0


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        raise SystemExit(main())

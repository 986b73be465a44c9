"""A decorated job's call: decide once (lead now, or return None), never wait for leadership.

A call of an ``@only_when_leading(lease=...)`` function, when no running Elector serves it:

1. If another call of the same job is still running in this process, return None at once
   (a scheduler firing the next tick early must not run the job twice at once).
2. Read the Lease (through transient failures). If :meth:`LeaseView.takeable_at` says
   not now, return None.
3. Write ourselves in (a lost race returns None). Reading and writing together take at
   most renew_deadline; past it, StoreUnavailable. If the tenure ended before the
   function could start (the Lease taken right after), return None. A Lease we re-created
   after a deletion returns None too, and later calls lead it only renew_deadline after
   the create, as an Elector does.
4. Run the function guarded by the tenure, renewed in the background; a loss cancels it
   and raises LeadershipLost.
5. End the tenure; release the Lease if ``release_on_exit`` (bounded by retry_period).

So a call returns None, its result, or raises within ``renew_deadline + retry_period``
plus the function's own run time.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import ParamSpec, TypeVar

import trio

from ._campaign import Campaign, seen_leases
from ._clock import TrioClock
from ._elector import Elector, guard
from ._errors import StoreUnavailable
from ._groups import Background, note_campaign_failure, raise_single
from ._lease_view import LeaseView
from ._options import ElectionOptions
from .stores._protocol import LeaseStore

P = ParamSpec("P")
R = TypeVar("R")

logger = logging.getLogger("lease_guard")


class Job:
    """One decorated function's candidacy: its identity, store, and what it saw across calls."""

    def __init__(self, options: ElectionOptions, store: LeaseStore | None) -> None:
        self.options = options
        self.store = store
        self.running = False
        self._run: object = None
        self._view: LeaseView | None = None
        self._where = f"lease {options.lease}"
        """The Lease as the running call names it (``Campaign.where``), once that call knows its namespace."""
        self._pause_until: float
        """Until when, on this run's clock, the job must not try to take the Lease (after it
        re-created the Lease: renew_deadline, see ``Campaign.acquire``). Set with each view."""

    def view(self, store: LeaseStore, namespace: str) -> LeaseView:
        """What this job has seen of the Lease across its calls in this ``trio.run``, and its
        pause (each run's clock has its own origin, so monotonic times from another run mean
        nothing)."""
        run = trio.lowlevel.current_root_task()
        if self._view is None or run is not self._run:
            self._run = run
            self._view = LeaseView(
                self.options.identity,
                self.options.lease_duration,
                seen_before=seen_leases.seen(store, namespace, self.options.lease),
            )
            self._pause_until = -math.inf
        return self._view

    @contextlib.asynccontextmanager
    async def _store(self) -> AsyncIterator[LeaseStore]:
        if self.store is not None:
            yield self.store
            return
        from .stores.kubernetes import shared_store

        async with shared_store() as store:
            yield store

    async def call(
        self, elector: Elector | None, fn: Callable[P, Awaitable[R]], *args: P.args, **kwargs: P.kwargs
    ) -> R | None:
        """Run ``fn`` if this replica leads now (through ``elector`` when one serves the job)."""
        if self.running:
            logger.info(
                "%s: %s is still running from an earlier call; this call is skipped",
                self._where,
                getattr(fn, "__qualname__", fn),
            )
            return None
        self.running = True
        try:
            if elector is not None:
                self._where = elector._running().where
                return await call_in_elector(elector, self, fn, *args, **kwargs)
            async with self._store() as store:
                return await self._decide_and_run(store, fn, *args, **kwargs)
        finally:
            self.running = False

    async def _decide_and_run(
        self, store: LeaseStore, fn: Callable[P, Awaitable[R]], *args: P.args, **kwargs: P.kwargs
    ) -> R | None:
        options = self.options
        clock = TrioClock()
        namespace = options.namespace or store.default_namespace
        campaign = Campaign(store, options, namespace, view=self.view(store, namespace), clock=clock)
        self._where = campaign.where
        campaign.pause_until = self._pause_until
        background = Background()
        result: R | None = None
        # The function's own exception is held outside the nursery, as in Elector._run.
        error: Exception | None = None
        try:
            async with trio.open_nursery() as nursery:
                try:
                    decide_by = clock.now() + options.renew_deadline
                    await nursery.start(self._follow, campaign, background)
                    if clock.now() < campaign.chance_at() or not campaign.admitted():
                        leader = campaign.view.leader or "nobody"
                        logger.debug("%s: not taking it now (leader: %s); not waiting", campaign.where, leader)
                        return None
                    try:
                        with trio.move_on_at(clock.at(decide_by)) as deciding:
                            tenure = await campaign.acquire()
                    finally:
                        self._pause_until = campaign.pause_until
                    if deciding.cancelled_caught:
                        raise StoreUnavailable(
                            f"could not decide whether to run: no answer to a write of {campaign.where} "
                            f"within renew_deadline ({options.renew_deadline:g}s) of the call"
                        )
                    if tenure is None or tenure.over:
                        return None
                    nursery.start_soon(background.run, functools.partial(campaign.hold, tenure))
                    try:
                        async with guard(tenure):
                            result = await fn(*args, **kwargs)
                    except Exception as exc:
                        error = exc
                    finally:
                        campaign.end(tenure, "the call returned", lost=False)
                        await campaign.wind_down(tenure, release=options.release_on_exit)
                finally:
                    background.cancel()
        except BaseExceptionGroup as group:
            if error is None:
                raise_single(group)
            note_campaign_failure(error, group, campaign.where)
        if error is not None:
            raise error
        return result

    async def _follow(
        self,
        campaign: Campaign,
        background: Background,
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        with background.scope():
            await campaign.follow(give_up_after=self.options.renew_deadline, task_status=task_status)


async def call_in_elector(
    elector: Elector, key: object, fn: Callable[P, Awaitable[R]], *args: P.args, **kwargs: P.kwargs
) -> R | None:
    """Run ``fn`` guarded by ``elector``'s current tenure if it leads; else None. No API call.

    At most one call per ``key`` (a decorated function) runs at a time under one Elector.
    """
    tenure = elector._running().leading
    if tenure is None or key in elector._jobs_running:
        return None
    elector._jobs_running.add(key)
    try:
        async with guard(tenure):
            return await fn(*args, **kwargs)
    finally:
        elector._jobs_running.discard(key)

"""The pytest plugin's fixtures, used the way users' tests use them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import trio
import trio.testing

from lease_guard import Elector, LeadershipLost, MemoryLeaseStore, leadership, only_when_leading
from lease_guard.testing import LeaseKit

LEASE = "my-operator"


def test_fixtures_are_registered(lease_store: MemoryLeaseStore, lease_kit: LeaseKit) -> None:
    assert lease_kit.store is lease_store
    assert lease_store.holder(LEASE) is None


async def test_take_cancels_the_leader_and_holders_tell_the_story(
    lease_kit: LeaseKit, autojump_clock: trio.testing.MockClock
) -> None:
    async with Elector(LEASE, identity="me", store=lease_kit.store) as elector:
        assert await lease_kit.wait_holder(LEASE, "me") == "me"
        with pytest.raises(LeadershipLost, match="'other-replica' took the lease"):
            async with elector.leading():
                lease_kit.take(LEASE)
                await trio.sleep_forever()
        # the other replica never renews: after 15 s of silence we lead again
        await elector.wait_leading()
        assert trio.current_time() == 15
    assert lease_kit.holders(LEASE) == ["me", "other-replica", "me"]


async def test_free_lets_a_waiting_replica_lead_at_once(
    lease_kit: LeaseKit, autojump_clock: trio.testing.MockClock
) -> None:
    lease_kit.take(LEASE, "someone", lease_duration=3600)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_lead_once, lease_kit.store)
        await trio.sleep(10)
        assert lease_kit.holder(LEASE) == "someone"
        lease_kit.free(LEASE)
        assert await lease_kit.wait_holder(LEASE, "me") == "me"
        assert trio.current_time() == 10


async def _lead_once(store: MemoryLeaseStore) -> None:
    async with leadership(LEASE, identity="me", store=store):
        pass


async def test_outage_cancels_guarded_work_at_the_deadline(
    lease_kit: LeaseKit, autojump_clock: trio.testing.MockClock
) -> None:
    with pytest.raises(LeadershipLost, match="renew_deadline"):
        async with leadership(LEASE, identity="me", store=lease_kit.store):
            await trio.sleep(5)  # renewals at 2 and 4
            with lease_kit.outage():
                await trio.sleep(60)
    # cancelled at 4 + 10; leaving the block ended the outage, so the release went through at once
    assert trio.current_time() == 4 + 10
    assert lease_kit.holder(LEASE) is None


async def test_the_kit_reaches_a_lease_in_any_namespace(
    lease_kit: LeaseKit, autojump_clock: trio.testing.MockClock
) -> None:
    async with Elector(LEASE, namespace="ops", identity="me", store=lease_kit.store) as elector:
        assert await lease_kit.wait_holder(LEASE, "me") == "me"
        assert lease_kit.holder(LEASE) == "me"
        with pytest.raises(LeadershipLost, match="'other-replica' took the lease"):
            async with elector.leading():
                lease_kit.take(LEASE)
                await trio.sleep_forever()
    assert lease_kit.store.record(LEASE, "default") is None
    assert lease_kit.holders(LEASE) == ["me", "other-replica"]
    assert lease_kit.holders(LEASE, namespace="ops") == ["me", "other-replica"]


def test_a_name_in_two_namespaces_needs_the_namespace(lease_kit: LeaseKit) -> None:
    lease_kit.take(LEASE, "a", namespace="ops")
    lease_kit.take(LEASE, "b", namespace="dev")
    with pytest.raises(ValueError, match=r"exists in namespaces \['dev', 'ops'\]: pass namespace="):
        lease_kit.holder(LEASE)
    assert (lease_kit.holder(LEASE, namespace="ops"), lease_kit.holder(LEASE, namespace="dev")) == ("a", "b")


async def test_holders_lists_a_holder_again_only_after_someone_else(
    lease_kit: LeaseKit, autojump_clock: trio.testing.MockClock
) -> None:
    @only_when_leading(lease=LEASE, identity="me", store=lease_kit.store, release_on_exit=True)
    async def job() -> None:
        await trio.sleep(1)

    for _ in range(3):  # each call is a new tenure with a new term
        await job()
    lease_kit.take(LEASE)
    assert [term for _identity, term, _at in lease_kit.store.tenures(LEASE)] == [0, 1, 2, 3]
    assert lease_kit.holders(LEASE) == ["me", "other-replica"]


def test_free_is_the_holders_own_release_and_clear_is_not(lease_kit: LeaseKit) -> None:
    lease_kit.take(LEASE, "someone", lease_duration=30)
    lease_kit.free(LEASE)
    record = lease_kit.store.record(LEASE)
    assert record is not None
    assert (record.holder, record.spec.released_by, record.spec.lease_duration_seconds) == (None, "someone", 30)
    lease_kit.take(LEASE, "someone")
    lease_kit.clear(LEASE)
    record = lease_kit.store.record(LEASE)
    assert record is not None
    assert (record.holder, record.spec.released_by, record.transitions) == (None, None, 1)


def test_the_plugin_does_not_import_the_kubernetes_client(tmp_path: Path) -> None:
    """Every pytest start of a project that installs lease_guard loads the plugin: it must stay light."""
    (tmp_path / "test_light.py").write_text(
        "import sys\n\n"
        "def test_light(lease_kit):\n"
        "    assert lease_kit.holder('x') is None\n"
        "    heavy = sorted(m for m in ('lightkube', 'httpx', 'httpx2', 'yaml') if m in sys.modules)\n"
        "    assert heavy == [], heavy\n"
    )
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_light.py"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr

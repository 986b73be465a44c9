"""KubernetesLeaseStore against a real kube-apiserver and etcd (tests/apiserver).

Real time, fast timings (lease_duration 4 s, renew_deadline 3 s, retry_period 1 s), and
conditions waited on with generous timeouts, never fixed sleeps.
"""

from __future__ import annotations

import itertools
import json
import re
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import httpx2 as httpx
import pytest
import trio
from lightkube import AsyncClient
from lightkube.models.rbac_v1 import PolicyRule
from lightkube.resources.coordination_v1 import Lease
from lightkube.resources.core_v1 import Event

from lease_guard import (
    Elector,
    KubernetesLeaseStore,
    LeadershipLost,
    NamespaceNotFound,
    PermissionDenied,
    leadership,
)

FAST: dict[str, Any] = {"lease_duration": 4, "renew_deadline": 3, "retry_period": 1}
MICRO_TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")
_names = itertools.count()

if TYPE_CHECKING:
    from tests.integration.kube_harness import KubeServer


def fresh_lease() -> str:
    return f"it-{trio.current_time():.0f}-{next(_names)}".replace(".", "-")


@pytest.fixture
async def admin(kube: KubeServer) -> AsyncIterator[AsyncClient]:
    client = kube.admin_client(namespace=kube.namespace)
    yield client
    await client.close()


def store_for(kube: KubeServer, kubeconfig: Any = None) -> KubernetesLeaseStore:
    return KubernetesLeaseStore.from_kubeconfig(str(kubeconfig or kube.admin_kubeconfig), namespace=kube.namespace)


async def raw_lease(kube: KubeServer, name: str) -> dict[str, Any]:
    """The Lease as the server serialises it, bypassing every client-side model."""
    client = kube.admin_client(namespace=kube.namespace)
    try:
        http = client._client._client
        response = await http.get(f"apis/coordination.k8s.io/v1/namespaces/{kube.namespace}/leases/{name}")
        response.raise_for_status()
        return json.loads(response.content)  # type: ignore[no-any-return]
    finally:
        await client.close()


async def put_raw_lease(kube: KubeServer, name: str, spec: dict[str, Any]) -> httpx.Response:
    """Create or replace a Lease with exactly this JSON spec, as another client might write it."""
    client = kube.admin_client(namespace=kube.namespace)
    try:
        http = client._client._client
        base = f"apis/coordination.k8s.io/v1/namespaces/{kube.namespace}/leases"
        metadata: dict[str, str] = {"name": name}
        body = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": metadata, "spec": spec}
        existing: httpx.Response = await http.get(f"{base}/{name}")
        response: httpx.Response
        if existing.status_code == 200:
            metadata["resourceVersion"] = json.loads(existing.content)["metadata"]["resourceVersion"]
            response = await http.put(f"{base}/{name}", content=json.dumps(body))
        else:
            response = await http.post(base, content=json.dumps(body))
        return response
    finally:
        await client.close()


async def test_creates_the_lease_and_writes_what_the_server_accepts(kube: KubeServer) -> None:
    name = fresh_lease()
    async with leadership(name, identity="a", store=store_for(kube), **FAST) as lead:
        assert lead.term == 0
        await trio.sleep(2.5)  # let two renewals happen
        lease = await raw_lease(kube, name)
    spec = lease["spec"]
    assert spec["holderIdentity"] == "a"
    assert spec["leaseDurationSeconds"] == 4
    assert spec["leaseTransitions"] == 0
    assert MICRO_TIME.match(spec["renewTime"]), spec["renewTime"]
    assert MICRO_TIME.match(spec["acquireTime"]), spec["acquireTime"]
    assert spec["renewTime"] > spec["acquireTime"]
    released = (await raw_lease(kube, name))["spec"]
    assert released.get("holderIdentity", "") == ""
    assert released["leaseTransitions"] == 0


async def test_concurrent_candidates_exactly_one_leads_at_a_time(kube: KubeServer) -> None:
    name = fresh_lease()
    active: set[str] = set()
    terms: list[int] = []

    async def candidate(identity: str) -> None:
        async with leadership(name, identity=identity, store=store_for(kube), **FAST) as lead:
            assert not active, f"{identity} leads while {active} do"
            active.add(identity)
            terms.append(lead.term)
            await trio.sleep(0.3)
            active.discard(identity)

    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            for n in range(5):
                nursery.start_soon(candidate, f"c{n}")
    assert terms == sorted(terms)
    assert len(set(terms)) == 5


async def test_release_is_taken_over_within_100ms(kube: KubeServer) -> None:
    name = fresh_lease()
    released_at: list[float] = []
    started_at: list[float] = []

    async def first() -> None:
        async with leadership(name, identity="a", store=store_for(kube), **FAST):
            await trio.sleep(1.5)
        released_at.append(trio.current_time())

    async def second(task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with Elector(name, identity="b", store=store_for(kube), **FAST) as elector:
            task_status.started()
            async with elector.leading():
                started_at.append(trio.current_time())

    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(first)
            await trio.sleep(0.5)
            await nursery.start(second)
    takeover = started_at[0] - released_at[0]
    # released_at is taken after the release write returned, so it can be after b started.
    assert takeover < 0.1, takeover


async def test_expired_lease_is_taken_over_within_100ms_of_its_expiry(kube: KubeServer) -> None:
    name = fresh_lease()
    async with leadership(name, identity="crashed", store=store_for(kube), release_on_exit=False, **FAST):
        pass
    async with Elector(name, identity="b", store=store_for(kube), **FAST) as follower:
        # b has read the Lease by now: its expiry timer runs from that read (or slightly before).
        seen_by = trio.current_time()
        async with follower.leading() as lead:
            waited = trio.current_time() - seen_by
            assert lead.term == 1
    assert FAST["lease_duration"] - 0.05 <= waited < FAST["lease_duration"] + 0.1, waited


async def test_a_steal_by_the_admin_cancels_the_block_promptly(kube: KubeServer) -> None:
    name = fresh_lease()
    cancelled_at: list[float] = []
    with pytest.raises(LeadershipLost, match="'operator' took the lease"):
        async with leadership(name, identity="a", store=store_for(kube), **FAST):
            await trio.sleep(0.5)
            stolen_at = trio.current_time()
            try:
                async with trio.open_nursery() as nursery:
                    # the admin's write runs beside the block, which it cancels
                    nursery.start_soon(put_raw_lease, kube, name, {"holderIdentity": "operator"})
                    await trio.sleep(30)
            finally:
                cancelled_at.append(trio.current_time())
    assert cancelled_at[0] - stolen_at < 0.5


async def test_api_server_outage_cancels_by_deadline_and_history_survives(kube: KubeServer) -> None:
    if not kube.can_restart:
        pytest.skip("needs the local harness to stop the API server")
    name = fresh_lease()
    # Two tenures first, so the term history in etcd is worth checking.
    for identity in ("a", "b"):
        async with leadership(name, identity=identity, store=store_for(kube), **FAST):
            pass
    cancelled_after: list[float] = []
    with pytest.raises(LeadershipLost, match="renew_deadline"):
        async with leadership(name, identity="c", store=store_for(kube), **FAST) as lead:
            assert lead.term == 2
            await trio.to_thread.run_sync(kube.stop_apiserver)
            stopped_at = trio.current_time()
            try:
                await trio.sleep(60)
            finally:
                cancelled_after.append(trio.current_time() - stopped_at)
    assert cancelled_after[0] <= FAST["renew_deadline"]
    await trio.to_thread.run_sync(kube.start_apiserver)
    async with leadership(name, identity="d", store=store_for(kube), **FAST) as lead:
        assert lead.term == 3


async def test_followers_watch_survives_an_api_server_restart(kube: KubeServer) -> None:
    if not kube.can_restart:
        pytest.skip("needs the local harness to stop the API server")
    name = fresh_lease()
    await put_raw_lease(kube, name, {"holderIdentity": "before-restart", "leaseDurationSeconds": 600})
    async with Elector(name, identity="b", store=store_for(kube), **FAST) as follower:
        events = follower.events()
        with trio.fail_after(60):
            assert (await events.__anext__()).leader == "before-restart"
            await trio.to_thread.run_sync(kube.stop_apiserver)
            await trio.to_thread.run_sync(kube.start_apiserver)
            response = await put_raw_lease(kube, name, {"holderIdentity": "after-restart", "leaseDurationSeconds": 600})
            assert response.status_code == 200, response.text
            async for event in events:
                if event.leader == "after-restart":
                    break


async def test_least_privilege_identity_works_end_to_end(kube: KubeServer) -> None:
    store = store_for(kube, kube.user_kubeconfig)
    async with (
        Elector(kube.lease_name, identity="least-privilege", store=store, **FAST) as elector,
        elector.leading() as lead,
    ):
        await trio.sleep(2.5)  # renewals
        assert elector.is_leader
        assert lead.identity == "least-privilege"


async def test_a_missing_verb_gives_the_rbac_rule_to_add(kube: KubeServer) -> None:
    name = fresh_lease()
    response = await put_raw_lease(kube, name, {"holderIdentity": "", "leaseDurationSeconds": 1})
    assert response.status_code == 201, response.text
    rules = [
        PolicyRule(apiGroups=["coordination.k8s.io"], resources=["leases"], verbs=["create"]),
        PolicyRule(
            apiGroups=["coordination.k8s.io"], resources=["leases"], resourceNames=[name], verbs=["get", "watch"]
        ),
    ]
    kubeconfig = await trio.to_thread.run_sync(kube.kubeconfig_for_rules, f"no-update-{name}", rules)
    with pytest.raises(PermissionDenied) as denied:
        async with leadership(name, store=store_for(kube, kubeconfig), **FAST):
            raise AssertionError("must not lead")
    message = str(denied.value)
    assert "update" in message
    assert f"resourceNames: [{name}]" in message
    assert "verbs: [update]" in message


async def test_a_missing_namespace_is_a_clear_error(kube: KubeServer) -> None:
    with pytest.raises(NamespaceNotFound, match='namespace "no-such-namespace" does not exist'):
        async with leadership(fresh_lease(), namespace="no-such-namespace", store=store_for(kube), **FAST):
            raise AssertionError("must not lead")


@pytest.mark.parametrize(
    ("spec", "takeover"),
    [
        pytest.param({}, "now", id="no-spec-fields"),
        pytest.param({"holderIdentity": ""}, "now", id="empty-holder"),
        pytest.param({"holderIdentity": "ghost"}, "ours", id="holder-without-duration"),
        pytest.param({"holderIdentity": "ghost", "leaseDurationSeconds": 2}, "theirs", id="their-duration"),
        pytest.param({"holderIdentity": "ghost", "leaseDurationSeconds": 2147483647}, "never", id="int32-max-duration"),
        pytest.param({"holderIdentity": "", "leaseTransitions": 2147483646}, "now", id="last-possible-term"),
        pytest.param({"holderIdentity": "", "leaseTransitions": 2147483647}, "never", id="exhausted-term"),
        pytest.param(
            {"holderIdentity": "go-client", "leaseDurationSeconds": 2, "renewTime": "2020-01-01T00:00:00.000000Z"},
            "theirs",
            id="stale-renew-time-is-not-trusted",
        ),
    ],
)
async def test_leases_with_odd_contents(kube: KubeServer, spec: dict[str, Any], takeover: str) -> None:
    name = fresh_lease()
    response = await put_raw_lease(kube, name, spec)
    assert response.status_code == 201, response.text
    written_at = trio.current_time()
    # Expiry counts from when b first saw the Lease, never from the times written in it.
    lower, limit = {"now": (0, 1.0), "theirs": (2, 2.5), "ours": (4, 4.5), "never": (0, 6.0)}[takeover]
    with trio.move_on_after(limit + 1) as waited:
        async with leadership(name, identity="b", store=store_for(kube), **FAST) as lead:
            took = trio.current_time() - written_at
            assert lead.term == spec.get("leaseTransitions", 0) + 1
    if takeover == "never":
        assert waited.cancelled_caught
    else:
        assert not waited.cancelled_caught
        assert lower <= took < limit


@pytest.mark.parametrize(
    "time_text",
    ["2026-01-01T00:00:00Z", "2026-01-01T00:00:00.5Z", "2026-01-01T00:00:00.000000+02:00", "yesterday"],
)
async def test_which_time_formats_the_server_accepts(kube: KubeServer, time_text: str) -> None:
    """Only six-digit UTC MicroTime round-trips; lease_guard never writes anything else."""
    response = await put_raw_lease(kube, fresh_lease(), {"holderIdentity": "x", "renewTime": time_text})
    if time_text == "yesterday":
        assert response.status_code == 400
    else:
        # Record what this server version does with the other layouts.
        assert response.status_code in (201, 400), response.text
        if response.status_code == 201:
            assert MICRO_TIME.match(json.loads(response.content)["spec"]["renewTime"])


async def test_lightkube_typed_read_of_leases_other_clients_wrote(kube: KubeServer, admin: AsyncClient) -> None:
    name = fresh_lease()
    await put_raw_lease(kube, name, {"holderIdentity": "x", "leaseTransitions": 0, "leaseDurationSeconds": 1})
    lease = await admin.get(Lease, name, namespace=kube.namespace)
    assert lease.spec is not None
    assert lease.spec.holderIdentity == "x"


async def test_kubernetes_events_are_recorded_on_the_lease(kube: KubeServer, admin: AsyncClient) -> None:
    store = store_for(kube, kube.user_kubeconfig)  # the least-privilege identity, with the events Role
    async with Elector(kube.lease_name, identity="eventful", store=store, record_events=True, **FAST) as elector:
        async with elector.leading():
            pass
        elector.step_down()
    with trio.fail_after(30):
        while True:
            events = [
                event
                async for event in admin.list(
                    Event, namespace=kube.namespace, fields={"involvedObject.name": kube.lease_name}
                )
                if event.reportingInstance == "eventful"
            ]
            if len(events) >= 2:
                break
            await trio.sleep(0.1)
    messages = sorted(event.message or "" for event in events)
    assert messages[0] == "eventful became leader"
    assert messages[1].startswith("eventful stopped leading")
    assert {event.reason for event in events} == {"LeaderElection"}
    assert {event.involvedObject.kind for event in events} == {"Lease"}


async def test_a_follower_keeps_seeing_changes_across_server_side_watch_timeouts(kube: KubeServer) -> None:
    """The harness runs kube-apiserver with --min-request-timeout=5: watches end every 5-10 s."""
    name = fresh_lease()
    await put_raw_lease(kube, name, {"holderIdentity": "h0", "leaseDurationSeconds": 600})
    async with Elector(name, identity="b", store=store_for(kube), **FAST) as follower:
        events = follower.events()
        with trio.fail_after(60):
            assert (await events.__anext__()).leader == "h0"
            for n in range(1, 4):
                await trio.sleep(7)  # outlive at least one server-side watch timeout
                await put_raw_lease(kube, name, {"holderIdentity": f"h{n}", "leaseDurationSeconds": 600})
                written_at = trio.current_time()
                event = await events.__anext__()
                assert event.leader == f"h{n}"
                assert trio.current_time() - written_at < 1


async def test_one_store_serves_many_electors_without_starving_renewals(kube: KubeServer) -> None:
    """150 Electors on one store: 150 open watches plus their renewals.

    Watches and requests share no connection pool: in one pool of lightkube's 100
    connections the watches alone would fill it and renewals would wait for a free one.
    Default timings (150 renewals every 2 s): CI's two cores also run the API server."""
    count = 150
    timing: dict[str, Any] = {"lease_duration": 15, "renew_deadline": 10, "retry_period": 2}
    store = KubernetesLeaseStore.from_kubeconfig(str(kube.admin_kubeconfig), namespace=kube.namespace)
    prefix = fresh_lease()
    leading = 0
    all_leading = trio.Event()
    lost: list[LeadershipLost] = []

    async def candidate(i: int) -> None:
        nonlocal leading
        async with Elector(f"{prefix}-{i}", identity=f"many-{i}", store=store, **timing) as elector:
            try:
                async with elector.leading():
                    leading += 1
                    if leading == count:
                        all_leading.set()
                    await trio.sleep_forever()
            except LeadershipLost as exc:
                lost.append(exc)

    try:
        async with trio.open_nursery() as nursery:
            for i in range(count):
                nursery.start_soon(candidate, i)
            with trio.fail_after(120):
                await all_leading.wait()
            # Three renewal periods more: every Elector keeps renewing, none is cut off.
            await trio.sleep(3 * timing["retry_period"])
            nursery.cancel_scope.cancel()
    finally:
        await store.aclose()
    assert lost == []

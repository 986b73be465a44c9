"""KubernetesLeaseStore against a real kube-apiserver and etcd (tests/apiserver).

Real time, fast timings (lease_duration 4 s, renew_deadline 3 s, retry_period 1 s), and
conditions waited on with generous timeouts, never fixed sleeps.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import itertools
import json
import logging
import re
from collections.abc import AsyncIterator, Iterator
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import httpx2 as httpx
import pytest
import trio
from lightkube import AsyncClient
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.models.rbac_v1 import PolicyRule
from lightkube.resources.coordination_v1 import Lease
from lightkube.resources.core_v1 import ConfigMap, Event

from lease_guard import (
    Elector,
    KubernetesLeaseStore,
    LeadershipLost,
    LeaseSpec,
    NamespaceNotFound,
    PermissionDenied,
    leadership,
)
from lease_guard._record import micro_time
from lease_guard.stores.kubernetes import (
    RELEASED_BY_ANNOTATION,
    WATCH_GRACE,
    WATCH_RETRY_DELAY,
    _http_client,
    shared_store,
)
from tests.reliability.proxy import FaultProxy, server_ssl_context, upstream_ssl_context

FAST: dict[str, Any] = {"lease_duration": 4, "renew_deadline": 3, "retry_period": 1}
MICRO_TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")
_names = itertools.count()

if TYPE_CHECKING:  # mypy names the file by its path (tests/ is a package); pytest imports it as top-level
    from tests.integration import kube_harness
    from tests.integration.kube_harness import KubeServer
else:
    import kube_harness  # on sys.path: conftest.py puts it there


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
        http = _http_client(client)
        response = await http.get(f"apis/coordination.k8s.io/v1/namespaces/{kube.namespace}/leases/{name}")
        response.raise_for_status()
        return json.loads(response.content)  # type: ignore[no-any-return]
    finally:
        await client.close()


async def put_raw_lease(
    kube: KubeServer,
    name: str,
    spec: dict[str, Any],
    metadata: dict[str, Any] | None = None,
    sent_at: list[float] | None = None,
) -> httpx.Response:
    """Create or replace a Lease with exactly this JSON spec (and metadata), as another client might write it.

    `sent_at` gets the time the write was sent (after the client's setup and its read).
    """
    client = kube.admin_client(namespace=kube.namespace)
    try:
        http = _http_client(client)
        base = f"apis/coordination.k8s.io/v1/namespaces/{kube.namespace}/leases"
        meta: dict[str, Any] = (metadata or {}) | {"name": name}
        body = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": meta, "spec": spec}
        existing: httpx.Response = await http.get(f"{base}/{name}")
        response: httpx.Response
        if existing.status_code == 200:
            meta["resourceVersion"] = json.loads(existing.content)["metadata"]["resourceVersion"]
            if sent_at is not None:
                sent_at.append(trio.current_time())
            response = await http.put(f"{base}/{name}", content=json.dumps(body))
        else:
            response = await http.post(base, content=json.dumps(body))
        return response
    finally:
        await client.close()


async def renewals_seen(kube: KubeServer, name: str, holder: str, count: int) -> list[dict[str, Any]]:
    """Wait until the server has `count` distinct versions of the Lease held by `holder` in one term.

    A renewal is a write that changes the resourceVersion while the holder and the term
    (leaseTransitions) stay: the acquire alone cannot pass for one.
    """
    seen: dict[str, dict[str, Any]] = {}
    with trio.fail_after(30 + 2 * count * FAST["retry_period"]):
        while True:
            lease = await raw_lease(kube, name)
            spec = lease["spec"]
            if spec.get("holderIdentity") == holder:
                seen[lease["metadata"]["resourceVersion"]] = lease
                terms = {v["spec"].get("leaseTransitions") for v in seen.values()}
                assert len(terms) == 1, f"the term changed under one holder: {terms}"
                if len(seen) > count:  # the acquire, then `count` renewals
                    return list(seen.values())
            await trio.sleep(0.2)


async def test_creates_the_lease_and_writes_what_the_server_accepts(kube: KubeServer) -> None:
    name = fresh_lease()
    store = store_for(kube)
    async with leadership(name, identity="a", store=store, **FAST) as lead:
        assert lead.term == 0
        versions = await renewals_seen(kube, name, "a", 2)
    assert store._lean is not None
    assert store._lean.http.sent["PUT"] >= 2  # the renewals took the lean path
    renew_times = [v["spec"]["renewTime"] for v in versions]
    assert renew_times == sorted(renew_times) and len(set(renew_times)) == len(renew_times)
    spec = versions[-1]["spec"]
    assert spec["holderIdentity"] == "a"
    assert spec["leaseDurationSeconds"] == 4
    assert spec["leaseTransitions"] == 0
    assert {v["spec"]["acquireTime"] for v in versions} == {spec["acquireTime"]}  # renewals keep it
    assert MICRO_TIME.match(spec["renewTime"]), spec["renewTime"]
    assert MICRO_TIME.match(spec["acquireTime"]), spec["acquireTime"]
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
    exited_at: list[float] = []
    started_at: list[float] = []

    async def first() -> None:
        async with leadership(name, identity="a", store=store_for(kube), **FAST):
            await trio.sleep(1.5)
            exited_at.append(trio.current_time())  # a's block ends here; the release follows

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
    takeover = started_at[0] - exited_at[0]
    # Negative: b's block started while a's still ran (an overlap). Over 0.1 s: a slow handover.
    assert 0 <= takeover < 0.1, takeover


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
    stolen_at: list[float] = []
    with pytest.raises(LeadershipLost, match="'operator' took the lease"):
        async with leadership(name, identity="a", store=store_for(kube), **FAST):
            await trio.sleep(0.5)
            try:
                async with trio.open_nursery() as nursery:
                    # the admin's write runs beside the block, which it cancels
                    nursery.start_soon(put_raw_lease, kube, name, {"holderIdentity": "operator"}, None, stolen_at)
                    await trio.sleep(30)
            finally:
                cancelled_at.append(trio.current_time())
    # Cancelled after the steal was sent (never before), and promptly: the watch delivers it.
    assert 0 <= cancelled_at[0] - stolen_at[0] < 0.5, cancelled_at[0] - stolen_at[0]


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
    store = store_for(kube, kube.user_kubeconfig)  # a bearer token: the lean renewal path sends it too
    async with (
        Elector(kube.lease_name, identity="least-privilege", store=store, **FAST) as elector,
        elector.leading() as lead,
    ):
        # Three renewals written under its own identity: with update refused there would be none.
        await renewals_seen(kube, kube.lease_name, "least-privilege", 3)
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
        # No holder and no release proof: whoever cleared it, lease_duration of silence first.
        pytest.param({}, "ours", id="no-spec-fields"),
        pytest.param({"holderIdentity": ""}, "ours", id="empty-holder"),
        pytest.param({"holderIdentity": "ghost"}, "ours", id="holder-without-duration"),
        pytest.param({"holderIdentity": "ghost", "leaseDurationSeconds": 2}, "theirs", id="their-duration"),
        pytest.param({"holderIdentity": "ghost", "leaseDurationSeconds": 2147483647}, "never", id="int32-max-duration"),
        pytest.param({"holderIdentity": "", "leaseTransitions": 2147483646}, "ours", id="last-possible-term"),
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
    lower, limit = {"theirs": (2, 2.5), "ours": (4, 4.5), "never": (0, 6.0)}[takeover]
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
    ("time_text", "accepted_as"),
    [
        ("2026-01-01T00:00:00.000000Z", "2026-01-01T00:00:00.000000Z"),
        ("2026-01-01T00:00:00Z", None),
        ("2026-01-01T00:00:00.5Z", None),
        ("2026-01-01T00:00:00.000000+02:00", "2025-12-31T22:00:00.000000Z"),  # six digits: converted to UTC
        ("yesterday", None),
    ],
)
async def test_which_time_formats_the_server_accepts(kube: KubeServer, time_text: str, accepted_as: str | None) -> None:
    """Only six fraction digits are accepted (a zone offset is converted to UTC); the rest is a 400.

    lease_guard writes six-digit UTC MicroTime, the one layout that round-trips unchanged."""
    response = await put_raw_lease(kube, fresh_lease(), {"holderIdentity": "x", "renewTime": time_text})
    if accepted_as is None:
        assert response.status_code == 400, response.text
    else:
        assert response.status_code == 201, response.text
        assert json.loads(response.content)["spec"]["renewTime"] == accepted_as


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


# --- writes keep what is not ours ---------------------------------------------------------------

#: preferredHolder and strategy are kept by the server only with coordinated leader election on.
COORDINATED_LEADER_ELECTION = (
    "--feature-gates=CoordinatedLeaderElection=true",
    "--runtime-config=coordination.k8s.io/v1beta1=true",
)


@pytest.fixture(scope="module")
def coordinated_kube(kube: KubeServer) -> Iterator[KubeServer]:
    """A second local API server, with the coordinated leader election feature gate on."""
    if kube.local is None:
        pytest.skip("needs the local harness, to start a server with a feature gate")
    servers = kube_harness.kube_server(COORDINATED_LEADER_ELECTION)
    try:
        yield next(servers)
    finally:
        servers.close()


FOREIGN_METADATA: dict[str, Any] = {
    "labels": {"team": "ops", "app.kubernetes.io/part-of": "billing"},
    "annotations": {"example.com/owner": "ops@example.com"},
    "finalizers": ["example.com/keep"],
}


async def test_acquire_renewals_and_release_keep_what_lease_guard_does_not_own(coordinated_kube: KubeServer) -> None:
    kube = coordinated_kube
    admin = kube.admin_client(namespace=kube.namespace)
    name = fresh_lease()
    owner = await admin.create(ConfigMap(metadata=ObjectMeta(name=f"{name}-owner", namespace=kube.namespace)))
    assert owner.metadata is not None
    owner_ref = {"apiVersion": "v1", "kind": "ConfigMap", "name": f"{name}-owner", "uid": owner.metadata.uid}
    foreign_spec = {"preferredHolder": "someone", "strategy": "OldestEmulationVersion"}
    response = await put_raw_lease(
        kube, name, {"holderIdentity": "", **foreign_spec}, metadata=FOREIGN_METADATA | {"ownerReferences": [owner_ref]}
    )
    assert response.status_code == 201, response.text
    written = json.loads(response.content)
    kept_spec = {key: written["spec"][key] for key in foreign_spec if key in written["spec"]}

    def assert_kept(lease: dict[str, Any]) -> None:
        metadata = lease["metadata"]
        assert metadata["labels"] == FOREIGN_METADATA["labels"]
        annotations = {k: v for k, v in metadata["annotations"].items() if k != RELEASED_BY_ANNOTATION}
        assert annotations == FOREIGN_METADATA["annotations"]
        assert metadata["finalizers"] == FOREIGN_METADATA["finalizers"]
        assert metadata["ownerReferences"] == [owner_ref]
        assert {key: lease["spec"].get(key) for key in kept_spec} == kept_spec

    # The server keeps them on create (or this test would prove nothing about lease_guard).
    assert kept_spec == foreign_spec, f"the server dropped spec fields on create: {written['spec']}"
    async with leadership(name, identity="keeper", store=store_for(kube), **FAST):
        for version in await renewals_seen(kube, name, "keeper", 2):
            assert_kept(version)
            assert RELEASED_BY_ANNOTATION not in version["metadata"]["annotations"]
    released = await raw_lease(kube, name)
    assert released["spec"].get("holderIdentity", "") == ""
    assert_kept(released)
    await admin.patch(Lease, name, {"metadata": {"finalizers": None}}, namespace=kube.namespace)
    await admin.close()


async def test_the_release_proof_is_an_annotation_set_and_removed_on_the_server(kube: KubeServer) -> None:
    name = fresh_lease()
    response = await put_raw_lease(
        kube, name, {"holderIdentity": "a", "leaseDurationSeconds": 4}, metadata={"annotations": {"keep": "me"}}
    )
    assert response.status_code == 201, response.text
    store = store_for(kube)
    try:
        current = await store.get(kube.namespace, name)
        assert current is not None
        assert current.spec.released_by is None
        release = LeaseSpec(
            holder=None, lease_duration_seconds=4, acquire_time=None, renew_time=micro_time(), lease_transitions=0
        )
        released = await store.update(current, dataclasses.replace(release, released_by="a"))
        annotations = (await raw_lease(kube, name))["metadata"]["annotations"]
        assert annotations == {"keep": "me", RELEASED_BY_ANNOTATION: "a"}
        assert released.spec.released_by == "a"
        reread = await store.get(kube.namespace, name)
        assert reread is not None and reread.spec.released_by == "a"  # read back from the server
        now = micro_time()
        acquire = LeaseSpec(holder="b", lease_duration_seconds=4, acquire_time=now, renew_time=now, lease_transitions=1)
        acquired = await store.update(reread, acquire)
        assert (await raw_lease(kube, name))["metadata"]["annotations"] == {"keep": "me"}
        assert acquired.spec.released_by is None
    finally:
        await store.aclose()


# --- dead watches -------------------------------------------------------------------------------


@pytest.fixture
async def proxy(kube: KubeServer, nursery: trio.Nursery) -> FaultProxy:
    if kube.local is None or kube.ca_path is None:
        pytest.skip("the proxy needs the local harness (its serving certificate and CA)")
    certs = kube.local.certs
    up = urlsplit(kube.url)
    assert up.hostname is not None and up.port is not None
    fault_proxy = FaultProxy(
        up.hostname,
        up.port,
        server_context=server_ssl_context(certs.serving_cert, certs.serving_key),
        upstream_context=upstream_ssl_context(kube.ca_path),
    )
    await nursery.start(fault_proxy.serve)
    return fault_proxy


async def test_a_black_holed_watch_is_noticed_and_a_later_change_seen_within_the_bound(
    kube: KubeServer, proxy: FaultProxy
) -> None:
    """Only the watch goes through the proxy: the black hole leaves it half-open, silent, not closed."""
    rules = [
        PolicyRule(apiGroups=["coordination.k8s.io"], resources=["leases"], verbs=["create", "get", "update", "watch"])
    ]
    direct = await trio.to_thread.run_sync(kube.kubeconfig_for_rules, "dead-watch", rules)
    through_proxy = json.loads(direct.read_text())
    through_proxy["clusters"][0]["cluster"]["server"] = proxy.url
    proxied = kube.workdir / "dead-watch-proxied.kubeconfig"
    proxied.write_text(json.dumps(through_proxy))
    watch_timeout = 2.0
    # Dropped WATCH_GRACE after its requested end, one backoff pause, then the re-read.
    bound = 2 * watch_timeout + WATCH_GRACE + WATCH_RETRY_DELAY + 1.0
    name = fresh_lease()
    await put_raw_lease(kube, name, {"holderIdentity": "h0", "leaseDurationSeconds": 600})
    client = kube.client_for(direct, namespace=kube.namespace)
    watch_client = kube.client_for(proxied, namespace=kube.namespace)
    store = KubernetesLeaseStore(client, watch_client=watch_client, watch_timeout=watch_timeout)
    try:
        watch = store.watch(kube.namespace, name)
        async with contextlib.aclosing(watch):  # type: ignore[type-var]
            with trio.fail_after(60):
                first = await anext(watch)
                assert first is not None and first.holder == "h0"
                # The watch works through the proxy: a change arrives by it.
                await put_raw_lease(kube, name, {"holderIdentity": "h1", "leaseDurationSeconds": 600})
                while (value := await anext(watch)) is None or value.holder != "h1":
                    pass
                proxy.set_black_hole(True)
                await put_raw_lease(kube, name, {"holderIdentity": "h2", "leaseDurationSeconds": 600})
                changed_at = trio.current_time()
                while (value := await anext(watch)) is None or value.holder != "h2":
                    pass
                seen_after = trio.current_time() - changed_at
    finally:
        proxy.set_black_hole(False)
        await store.aclose()
        await client.close()
        await watch_client.close()
    # One request went through the proxy, the watch, and it was black-holed; the re-read went around it.
    assert (proxy.counts["requests"], proxy.counts["black-hole"]) == (1, 1), proxy.counts
    assert seen_after < bound, seen_after


async def test_the_shared_store_reads_the_environments_kubeconfig(
    kube: KubeServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KUBECONFIG", str(kube.admin_kubeconfig))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    name = fresh_lease()
    async with shared_store() as store, shared_store() as same:
        assert same is store
        assert store.default_namespace == kube.namespace
        async with leadership(name, identity="shared", store=store, **FAST):
            await renewals_seen(kube, name, "shared", 1)
    assert _http_client(store._client).is_closed


async def test_a_watch_of_a_missing_lease_sees_its_creation_and_every_change_after(kube: KubeServer) -> None:
    """Opened without a resourceVersion; with bookmarks asked, kube-apiserver 1.37 sent nothing after its first."""
    name = fresh_lease()
    store = store_for(kube)
    try:
        watch = store.watch(kube.namespace, name)
        async with contextlib.aclosing(watch):  # type: ignore[type-var]
            with trio.fail_after(30):
                assert await anext(watch) is None
                for n in range(4):
                    await put_raw_lease(kube, name, {"holderIdentity": f"h{n}", "leaseDurationSeconds": 600})
                    while (value := await anext(watch)) is None or value.holder != f"h{n}":
                        pass
    finally:
        await store.aclose()


# --- the shared watch of a namespace's Leases ---------------------------------------------------


async def open_lease_watches(kube: KubeServer) -> float:
    """Watches of Leases the API server has open now, from its own metrics (apiserver_longrunning_requests)."""
    client = kube.admin_client(namespace=kube.namespace)
    try:
        response = await _http_client(client).get("/metrics")
        response.raise_for_status()
    finally:
        await client.close()
    total = 0.0
    for line in response.text.splitlines():
        if (
            line.startswith("apiserver_longrunning_requests{")
            and 'resource="leases"' in line
            and 'verb="WATCH"' in line
        ):
            total += float(line.rsplit(" ", 1)[1])
    return total


async def test_electors_of_many_leases_share_one_watch_and_a_steal_or_deletion_ends_only_its_own(
    kube: KubeServer,
) -> None:
    """Ten Electors of one namespace on one store: the first follows its Lease through a watch of
    its own, the other nine through one shared watch (shared_watch_from=2). Another client's
    steal and deletion still cut off the holder they hit at once, and no other."""
    count = 10
    prefix = fresh_lease()
    store = KubernetesLeaseStore.from_kubeconfig(
        str(kube.admin_kubeconfig), namespace=kube.namespace, shared_watch_from=2
    )
    leading: set[int] = set()
    all_leading = trio.Event()
    ended: dict[int, tuple[float, str]] = {}
    both_ended = trio.Event()
    watches_before = await open_lease_watches(kube)

    async def candidate(i: int) -> None:
        try:
            async with leadership(f"{prefix}-{i}", identity=f"shared-{i}", store=store, **FAST):
                leading.add(i)
                if len(leading) == count:
                    all_leading.set()
                await trio.sleep_forever()
        except LeadershipLost as exc:
            ended[i] = (trio.current_time(), str(exc))
            if len(ended) == 2:
                both_ended.set()

    try:
        async with trio.open_nursery() as nursery:
            for i in range(count):
                nursery.start_soon(candidate, i)
            with trio.fail_after(60):
                await all_leading.wait()
            # Two watches for ten Leases: one of its own (the first Lease), one shared.
            assert await open_lease_watches(kube) - watches_before <= 2
            stolen_at: list[float] = []
            await put_raw_lease(kube, f"{prefix}-3", {"holderIdentity": "operator"}, None, stolen_at)
            admin = kube.admin_client(namespace=kube.namespace)
            try:
                deleted_at = trio.current_time()
                await admin.delete(Lease, f"{prefix}-6")
            finally:
                await admin.close()
            with trio.fail_after(10):
                await both_ended.wait()
            # Two more renewal periods: the others keep leading.
            await trio.sleep(2 * FAST["retry_period"])
            nursery.cancel_scope.cancel()
    finally:
        await store.aclose()
    assert set(ended) == {3, 6}, ended
    assert "'operator' took the lease" in ended[3][1]
    assert ended[3][0] - stolen_at[0] < 0.5, ended[3][0] - stolen_at[0]
    assert "the Lease was deleted" in ended[6][1]
    assert ended[6][0] - deleted_at < 0.5, ended[6][0] - deleted_at


async def test_an_identity_allowed_only_its_leases_by_name_falls_back_to_a_watch_per_lease(
    kube: KubeServer, caplog: pytest.LogCaptureFixture
) -> None:
    """The least-privilege Role of examples/deploy/rbac.yaml, for several Leases: no list, and
    watch only by name. The shared watch is refused (403), said once; every Lease is led."""
    count = 4
    prefix = fresh_lease()
    names = [f"{prefix}-{i}" for i in range(count)]
    rules = [
        PolicyRule(apiGroups=["coordination.k8s.io"], resources=["leases"], verbs=["create"]),
        PolicyRule(
            apiGroups=["coordination.k8s.io"],
            resources=["leases"],
            resourceNames=names,
            verbs=["get", "update", "watch"],
        ),
    ]
    kubeconfig = await trio.to_thread.run_sync(kube.kubeconfig_for_rules, f"by-name-{prefix}", rules)
    store = KubernetesLeaseStore.from_kubeconfig(str(kubeconfig), namespace=kube.namespace, shared_watch_from=1)
    caplog.set_level(logging.INFO, logger="lease_guard")
    try:
        async with trio.open_nursery() as nursery:
            for i, name in enumerate(names):
                nursery.start_soon(functools.partial(renewals_of, kube, store, name, f"by-name-{i}"))
    finally:
        await store.aclose()
    fallbacks = [r.getMessage() for r in caplog.records if "through a watch of its own" in r.getMessage()]
    assert len(fallbacks) == 1, fallbacks
    assert "(403)" in fallbacks[0]


async def renewals_of(kube: KubeServer, store: KubernetesLeaseStore, name: str, identity: str) -> None:
    async with leadership(name, identity=identity, store=store, **FAST):
        await renewals_seen(kube, name, identity, 2)

"""The harness works, and examples/deploy/rbac.yaml is the least privilege
lease_guard needs, proven with plain lightkube AsyncClient under trio."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncGenerator, AsyncIterable, AsyncIterator, Awaitable
from typing import TYPE_CHECKING, TypeVar

import httpx2
import pytest
import trio
from lightkube import ApiError, AsyncClient
from lightkube.models.coordination_v1 import LeaseSpec
from lightkube.models.core_v1 import ObjectReference
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.models.rbac_v1 import PolicyRule
from lightkube.resources.coordination_v1 import Lease
from lightkube.resources.core_v1 import Event, Namespace
from lightkube.resources.rbac_authorization_v1 import Role

if TYPE_CHECKING:  # mypy names the file by its path (tests/ is a package); pytest imports it as top-level
    from tests.integration import kube_harness
else:
    import kube_harness  # on sys.path: conftest.py puts it there

KubeServer = kube_harness.KubeServer
T = TypeVar("T")

pytestmark = pytest.mark.integration

OTHER_NS = "lease-guard-other"


def _lease(name: str, namespace: str, holder: str = "a") -> Lease:
    # The namespace goes in the object: lightkube's AsyncClient.create overloads take no `namespace`.
    return Lease(
        metadata=ObjectMeta(name=name, namespace=namespace),
        spec=LeaseSpec(holderIdentity=holder, leaseDurationSeconds=15),
    )


def _meta(obj: Lease | Event) -> ObjectMeta:
    assert obj.metadata is not None
    return obj.metadata


def _spec(lease: Lease) -> LeaseSpec:
    assert lease.spec is not None
    return lease.spec


async def _forbidden(coro: Awaitable[object]) -> None:
    # lightkube raises ApiError for plain requests, but a failed watch request
    # surfaces as the bare httpx2.HTTPStatusError (ApiError's base class).
    with pytest.raises(httpx2.HTTPStatusError) as ei:
        await coro
    assert ei.value.response.status_code == 403, ei.value


async def _first(aiterable: AsyncIterable[T]) -> T | None:
    async for item in aiterable:
        return item
    return None


async def _delete_if_exists(client: AsyncClient, name: str, namespace: str) -> None:
    with contextlib.suppress(ApiError):
        await client.delete(Lease, name, namespace=namespace)


@contextlib.asynccontextmanager
async def _clients(*clients: AsyncClient) -> AsyncIterator[tuple[AsyncClient, ...]]:
    try:
        yield clients
    finally:
        for c in clients:
            await c.close()


@pytest.mark.trio
async def test_admin_can_create_lease(kube: KubeServer) -> None:
    name = f"admin-{uuid.uuid4().hex[:8]}"
    async with _clients(kube.admin_client()) as (admin,):
        created = await admin.create(_lease(name, kube.namespace, "admin"))
        got = await admin.get(Lease, name, namespace=kube.namespace)
        assert _spec(got).holderIdentity == "admin"
        assert _meta(got).uid == _meta(created).uid
        await admin.delete(Lease, name, namespace=kube.namespace)


def test_lease_name_comes_from_rbac_yaml(kube: KubeServer) -> None:
    assert kube.lease_name == "lease-guard-demo"
    assert kube.namespace == "lease-guard-test"


@pytest.mark.trio
async def test_user_can_create_get_update_watch_its_lease(kube: KubeServer) -> None:
    ns, name = kube.namespace, kube.lease_name
    async with _clients(kube.admin_client(), kube.user_client()) as (admin, user):
        await _delete_if_exists(admin, name, ns)
        try:
            await user.create(_lease(name, ns, "pod-1"))
            lease = await user.get(Lease, name, namespace=ns)  # default namespace also works
            assert _spec(lease).holderIdentity == "pod-1"
            assert _meta(await user.get(Lease, name)).uid == _meta(lease).uid

            rv = _meta(lease).resourceVersion
            _spec(lease).holderIdentity = "pod-2"
            updated = await user.replace(lease)
            assert _meta(updated).resourceVersion != rv

            # Optimistic concurrency: a stale resourceVersion is a 409, not a 403.
            _spec(lease).holderIdentity = "pod-3"
            with pytest.raises(ApiError) as ei:
                await user.replace(lease)
            assert ei.value.status.code == 409

            # Watch from the old resourceVersion: sees the update. The user has
            # no "list" verb: watch + resourceNames is enough with this selector.
            # lightkube annotates watch() as an AsyncIterable; it is an async generator (aclose()).
            events: AsyncGenerator[tuple[str, Lease], None] = user.watch(  # type: ignore[assignment]
                Lease, namespace=ns, fields={"metadata.name": name}, resource_version=rv
            )
            with trio.fail_after(15):
                async with contextlib.aclosing(events):
                    async for kind, obj in events:
                        assert _meta(obj).name == name
                        if kind == "MODIFIED" and _spec(obj).holderIdentity == "pod-2":
                            break
        finally:
            await _delete_if_exists(admin, name, ns)


@pytest.mark.trio
async def test_user_is_forbidden_everything_else(kube: KubeServer) -> None:
    ns, name = kube.namespace, kube.lease_name
    other = f"other-{uuid.uuid4().hex[:8]}"
    async with _clients(kube.admin_client(), kube.user_client()) as (admin, user):
        await admin.create(_lease(other, ns))
        await _delete_if_exists(admin, name, ns)
        await admin.create(_lease(name, ns))
        try:
            # Another lease name in the namespace.
            await _forbidden(user.get(Lease, other, namespace=ns))
            got = await admin.get(Lease, other, namespace=ns)
            await _forbidden(user.replace(got))
            await _forbidden(user.patch(Lease, other, {"spec": {"holderIdentity": "x"}}, namespace=ns))
            # Verbs not granted even on its own lease.
            await _forbidden(user.delete(Lease, name, namespace=ns))
            await _forbidden(user.patch(Lease, name, {"spec": {"holderIdentity": "x"}}, namespace=ns))
            # list, and watch without the metadata.name field selector.
            await _forbidden(_first(user.list(Lease, namespace=ns)))
            await _forbidden(_first(user.watch(Lease, namespace=ns)))
            await _forbidden(_first(user.watch(Lease, namespace=ns, fields={"metadata.name": other})))

            # Another namespace, same lease name.
            with contextlib.suppress(ApiError):
                await admin.create(Namespace(metadata=ObjectMeta(name=OTHER_NS)))
            await _delete_if_exists(admin, name, OTHER_NS)
            await admin.create(_lease(name, OTHER_NS))
            await _forbidden(user.get(Lease, name, namespace=OTHER_NS))
            await _forbidden(user.create(_lease("new-one", OTHER_NS)))
            await _forbidden(_first(user.watch(Lease, namespace=OTHER_NS, fields={"metadata.name": name})))
        finally:
            await _delete_if_exists(admin, other, ns)
            await _delete_if_exists(admin, name, ns)
            await _delete_if_exists(admin, name, OTHER_NS)


@pytest.mark.trio
async def test_user_can_emit_events(kube: KubeServer) -> None:
    """The separate lease-guard-events Role allows core/v1 Events."""
    async with _clients(kube.user_client()) as (user,):
        ev = Event(
            metadata=ObjectMeta(generateName="lease-guard-", namespace=kube.namespace),
            involvedObject=ObjectReference(
                apiVersion="coordination.k8s.io/v1", kind="Lease", name=kube.lease_name, namespace=kube.namespace
            ),
            reason="LeaderElected",
            message="pod-1 became leader",
            type="Normal",
        )
        created = await user.create(ev)
        event_name = _meta(created).name
        assert event_name is not None
        await _forbidden(user.get(Event, event_name, namespace=kube.namespace))


@pytest.mark.trio
async def test_kubeconfig_for_rules_missing_verb_gives_403(kube: KubeServer) -> None:
    """Role lease-guard from rbac.yaml minus "update": get works, update is 403.
    The identity has no events Role: creating an Event is 403."""
    role = next(
        o
        for o in kube_harness.load_rbac()  # the same file the fixture applied
        if isinstance(o, Role) and o.metadata is not None and o.metadata.name == "lease-guard"
    )
    rules = [
        PolicyRule(
            apiGroups=r.apiGroups,
            resources=r.resources,
            resourceNames=r.resourceNames,
            verbs=[v for v in r.verbs if v != "update"],
        )
        for r in role.rules or ()
    ]
    cfg = kube.kubeconfig_for_rules("no-update", rules)
    ns, name = kube.namespace, kube.lease_name
    async with _clients(kube.admin_client(), kube.client_for(cfg)) as (admin, limited):
        await _delete_if_exists(admin, name, ns)
        try:
            await limited.create(_lease(name, ns))
            lease = await limited.get(Lease, name, namespace=ns)
            _spec(lease).holderIdentity = "b"
            await _forbidden(limited.replace(lease))
            await _forbidden(
                limited.create(
                    Event(
                        metadata=ObjectMeta(generateName="x-", namespace=ns), involvedObject=ObjectReference(name=name)
                    )
                )
            )
        finally:
            await _delete_if_exists(admin, name, ns)


@pytest.mark.trio
async def test_apiserver_restart_keeps_data(restartable_kube: KubeServer) -> None:
    kube = restartable_kube
    name = f"restart-{uuid.uuid4().hex[:8]}"
    async with _clients(kube.admin_client()) as (admin,):
        before = await admin.create(_lease(name, kube.namespace, "survivor"))

    await trio.to_thread.run_sync(kube.stop_apiserver)
    async with _clients(kube.admin_client()) as (admin,):
        with pytest.raises(httpx2.ConnectError):  # connection refused while it is down
            await admin.get(Lease, name, namespace=kube.namespace)
    await trio.to_thread.run_sync(kube.start_apiserver)

    async with _clients(kube.admin_client()) as (admin,):
        after = await admin.get(Lease, name, namespace=kube.namespace)
        assert _meta(after).uid == _meta(before).uid
        assert _meta(after).resourceVersion == _meta(before).resourceVersion
        assert _spec(after).holderIdentity == "survivor"
        await admin.delete(Lease, name, namespace=kube.namespace)

"""KubernetesLeaseStore through a real lightkube AsyncClient whose HTTP transport is an in-process fake.

Fast and deterministic: a scripted fake API server answers each request in turn and records
what it saw; the watch tests run on trio's autojump clock, so retry sleeps are instant.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import sys
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx2 as httpx
import pytest
import trio
import trio.testing
from lightkube import AsyncClient, KubeConfig

from lease_guard import (
    KubernetesLeaseStore,
    LeaseConflict,
    LeaseNotFound,
    LeaseRecord,
    LeaseSpec,
    LeaseStoreError,
    NamespaceNotFound,
    PermissionDenied,
    StoreUnavailable,
)
from lease_guard.stores.kubernetes import WATCH_RETRY_DELAY

NS, NAME = "ops", "jobs"
COLLECTION = f"/apis/coordination.k8s.io/v1/namespaces/{NS}/leases"
ONE = f"{COLLECTION}/{NAME}"
T0, T1 = "2026-01-02T03:04:05.000000Z", "2026-01-02T03:04:06.250000Z"
SPEC = LeaseSpec(holder="a", lease_duration_seconds=15, acquire_time=T0, renew_time=T1, lease_transitions=2)
CURRENT = LeaseRecord(namespace=NS, name=NAME, resource_version="7", spec=SPEC)


def kubeconfig(user: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "fake", "cluster": {"server": "https://fake.invalid"}}],
        "users": [{"name": "me", "user": user or {"token": "static"}}],
        "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "me", "namespace": NS}}],
        "current-context": "fake",
    }


def lease(rv: str, holder: str = "a") -> dict[str, Any]:
    return {
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {"name": NAME, "namespace": NS, "resourceVersion": rv},
        "spec": {
            "holderIdentity": holder,
            "leaseDurationSeconds": 15,
            "acquireTime": T0,
            "renewTime": T1,
            "leaseTransitions": 2,
        },
    }


def status(code: int, reason: str, message: str = "") -> dict[str, Any]:
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message or f'leases.coordination.k8s.io "{NAME}": {reason}',
        "reason": reason,
        "details": {"name": NAME, "group": "coordination.k8s.io", "kind": "leases"},
        "code": code,
    }


def ok(body: dict[str, Any], code: int = 200) -> httpx.Response:
    return httpx.Response(code, content=json.dumps(body), headers={"Content-Type": "application/json"})


def failure(code: int, reason: str, message: str = "", headers: dict[str, str] | None = None) -> httpx.Response:
    response = ok(status(code, reason, message), code)
    response.headers.update(headers or {})
    return response


class Events(httpx.AsyncByteStream):
    """A watch response body: one newline-delimited event per chunk, then the end of the stream."""

    def __init__(self, *events: tuple[str, dict[str, Any]]) -> None:
        self.chunks = [json.dumps({"type": kind, "object": obj}).encode() + b"\n" for kind, obj in events]
        self.closed = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for chunk in self.chunks:
            yield chunk

    async def aclose(self) -> None:
        self.closed = True


def stream(*events: tuple[str, dict[str, Any]], body: Events | None = None) -> httpx.Response:
    """A watch response with these events, or this body."""
    return httpx.Response(200, stream=body or Events(*events), headers={"Content-Type": "application/json"})


class FakeApiServer:
    """Answers each request with the next scripted reply (raising it if it is an exception)."""

    def __init__(self) -> None:
        self.replies: list[httpx.Response | Exception] = []
        self.requests: list[httpx.Request] = []
        self.tokens: list[str | None] = []  # as sent: an auth flow re-sends the same Request object

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        self.tokens.append(request.headers.get("Authorization"))
        assert self.replies, f"unscripted request {request.method} {request.url}"
        reply = self.replies.pop(0)
        if isinstance(reply, Exception):
            raise reply
        return reply

    def seen(self) -> list[tuple[str, str, dict[str, str]]]:
        return [(r.method, r.url.path, dict(r.url.params)) for r in self.requests]

    def body(self, index: int = -1) -> Any:
        return json.loads(self.requests[index].content)


GET: tuple[str, str, dict[str, str]] = ("GET", ONE, {})


def watch(rv: str | None) -> tuple[str, str, dict[str, str]]:
    params = {"watch": "true", "fieldSelector": f"metadata.name={NAME}"}
    return ("GET", COLLECTION, params if rv is None else params | {"resourceVersion": rv})


@contextlib.asynccontextmanager
async def store_for(server: FakeApiServer, kubeconfig: KubeConfig) -> AsyncIterator[KubernetesLeaseStore]:
    client = AsyncClient(kubeconfig, namespace=NS, transport=httpx.MockTransport(server))
    try:
        yield KubernetesLeaseStore(client)
    finally:
        await client.close()


@pytest.fixture
def server() -> FakeApiServer:
    return FakeApiServer()


@pytest.fixture
async def store(server: FakeApiServer) -> AsyncIterator[KubernetesLeaseStore]:
    async with store_for(server, KubeConfig.from_dict(kubeconfig())) as store:
        yield store


# --- get / create / update ----------------------------------------------------------------------

CALLS: dict[str, Callable[[KubernetesLeaseStore], Awaitable[object]]] = {
    "get": lambda store: store.get(NS, NAME),
    "create": lambda store: store.create(NS, NAME, SPEC),
    "update": lambda store: store.update(CURRENT, SPEC),
}


async def test_get_reads_the_lease_with_times_in_microtime_form(
    server: FakeApiServer, store: KubernetesLeaseStore
) -> None:
    server.replies.append(ok(lease("42", holder="b")))
    record = await store.get(NS, NAME)
    assert record == LeaseRecord(
        namespace=NS, name=NAME, resource_version="42", spec=dataclasses.replace(SPEC, holder="b")
    )
    assert server.seen() == [GET]
    assert server.tokens == ["Bearer static"]


async def test_get_of_a_missing_lease_is_none(server: FakeApiServer, store: KubernetesLeaseStore) -> None:
    server.replies.append(failure(404, "NotFound"))
    assert await store.get(NS, NAME) is None


@pytest.mark.parametrize(
    ("verb", "reply", "error"),
    [
        ("create", failure(404, "NotFound", 'namespaces "ops" not found'), NamespaceNotFound),
        ("update", failure(404, "NotFound"), LeaseNotFound),
        ("create", failure(409, "AlreadyExists"), LeaseConflict),
        ("update", failure(409, "Conflict", "the object has been modified"), LeaseConflict),
        ("get", failure(500, "InternalError"), StoreUnavailable),
        ("create", failure(503, "ServiceUnavailable"), StoreUnavailable),
        ("update", failure(503, "ServiceUnavailable"), StoreUnavailable),
        ("create", failure(422, "Invalid", "spec.renewTime: Invalid value"), LeaseStoreError),
        ("update", failure(422, "Invalid", "spec.renewTime: Invalid value"), LeaseStoreError),
        ("get", httpx.ConnectError("boom"), StoreUnavailable),
        ("create", httpx.ConnectError("boom"), StoreUnavailable),
        ("update", httpx.ConnectError("boom"), StoreUnavailable),
    ],
)
async def test_failures_become_library_errors(
    server: FakeApiServer,
    store: KubernetesLeaseStore,
    verb: str,
    reply: httpx.Response | Exception,
    error: type[LeaseStoreError],
) -> None:
    server.replies.append(reply)
    with pytest.raises(LeaseStoreError) as raised:
        await CALLS[verb](store)
    assert type(raised.value) is error  # exactly: a 422 must not pass for retryable StoreUnavailable
    assert f"{NS}/{NAME}" in str(raised.value)


@pytest.mark.parametrize("verb", ["get", "create", "update"])
async def test_forbidden_names_the_verb_and_the_rbac_rule(
    server: FakeApiServer, store: KubernetesLeaseStore, verb: str
) -> None:
    message = f'leases.coordination.k8s.io "{NAME}" is forbidden: User "u" cannot {verb} resource "leases"'
    server.replies.append(failure(403, "Forbidden", message))
    with pytest.raises(PermissionDenied) as raised:
        await CALLS[verb](store)
    text = str(raised.value)
    rule = ("apiGroups: [coordination.k8s.io]", "resources: [leases]", f"verbs: [{verb}]")
    for part in (f"refused to {verb} lease {NS}/{NAME} (403)", message, *rule):
        assert part in text
    # A create cannot be limited to a resourceName: the rule must not suggest it.
    assert ("resourceNames:" in text) is (verb != "create")
    if verb != "create":
        assert f"resourceNames: [{NAME}]" in text


@pytest.mark.parametrize("verb", ["get", "update"])
async def test_too_many_requests_is_unavailable_with_retry_after(
    server: FakeApiServer, store: KubernetesLeaseStore, verb: str
) -> None:
    server.replies.append(failure(429, "TooManyRequests", headers={"Retry-After": "3"}))
    with pytest.raises(StoreUnavailable) as raised:
        await CALLS[verb](store)
    assert raised.value.retry_after == 3.0


# --- the wire format of writes ------------------------------------------------------------------


def expected_body(spec: LeaseSpec, resource_version: str | None = None) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": NAME, "namespace": NS}
    if resource_version is not None:
        metadata["resourceVersion"] = resource_version
    return {
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": metadata,
        "spec": {
            "holderIdentity": spec.holder,
            "leaseDurationSeconds": spec.lease_duration_seconds,
            "acquireTime": spec.acquire_time,
            "renewTime": spec.renew_time,
            "leaseTransitions": spec.lease_transitions,
        },
    }


async def test_create_posts_the_times_exactly_as_given(server: FakeApiServer, store: KubernetesLeaseStore) -> None:
    server.replies.append(ok(lease("1"), 201))
    record = await store.create(NS, NAME, SPEC)
    assert server.seen() == [("POST", COLLECTION, {})]
    assert server.requests[0].headers["Content-Type"] == "application/json"
    body = server.body()
    assert body == expected_body(SPEC)
    assert body["spec"]["acquireTime"] == "2026-01-02T03:04:05.000000Z"  # six digits, even when zero
    assert record == LeaseRecord(namespace=NS, name=NAME, resource_version="1", spec=SPEC)


async def test_update_puts_with_the_read_resource_version(server: FakeApiServer, store: KubernetesLeaseStore) -> None:
    new = LeaseSpec(holder="b", lease_duration_seconds=15, acquire_time=T1, renew_time=T1, lease_transitions=3)
    server.replies.append(ok(lease("8", holder="b")))
    record = await store.update(CURRENT, new)
    assert server.seen() == [("PUT", ONE, {})]
    assert server.body() == expected_body(new, resource_version="7")
    assert record.resource_version == "8"


async def test_release_leaves_out_absent_fields(server: FakeApiServer, store: KubernetesLeaseStore) -> None:
    released = LeaseSpec(holder=None, lease_duration_seconds=1, acquire_time=None, renew_time=T0, lease_transitions=2)
    server.replies.append(ok(lease("8")))
    await store.update(CURRENT, released)
    spec = server.body()["spec"]
    assert spec == {"leaseDurationSeconds": 1, "renewTime": T0, "leaseTransitions": 2}


# --- the watch ----------------------------------------------------------------------------------


def summary(values: list[LeaseRecord | None]) -> list[tuple[str, str | None] | None]:
    return [None if value is None else (value.resource_version, value.holder) for value in values]


async def first(n: int, store: KubernetesLeaseStore) -> list[LeaseRecord | None]:
    """The first n values of the store's watch of NS/NAME; the watch is closed afterwards."""
    values: list[LeaseRecord | None] = []
    iterator = store.watch(NS, NAME)
    assert isinstance(iterator, AsyncGenerator)
    with trio.fail_after(60):
        async with contextlib.aclosing(iterator):
            async for value in iterator:
                values.append(value)
                if len(values) == n:
                    break
    return values


async def test_watch_resumes_from_the_latest_version_when_the_server_ends_the_stream(
    autojump_clock: trio.testing.MockClock, server: FakeApiServer, store: KubernetesLeaseStore
) -> None:
    server.replies += [ok(lease("10")), stream(("MODIFIED", lease("11", "b"))), stream(("MODIFIED", lease("12")))]
    assert summary(await first(3, store)) == [("10", "a"), ("11", "b"), ("12", "a")]
    # lightkube re-opens an ended stream itself, from the last version seen: nothing missed, nothing re-read.
    assert server.seen() == [GET, watch("10"), watch("11")]


async def test_watches_go_through_the_watch_client_and_requests_through_the_other(
    autojump_clock: trio.testing.MockClock,
) -> None:
    requests, watches = FakeApiServer(), FakeApiServer()
    config = KubeConfig.from_dict(kubeconfig())
    async with (
        AsyncClient(config, namespace=NS, transport=httpx.MockTransport(requests)) as client,
        AsyncClient(config, namespace=NS, transport=httpx.MockTransport(watches)) as watch_client,
    ):
        store = KubernetesLeaseStore(client, watch_client=watch_client)
        requests.replies += [ok(lease("10")), ok(lease("11"))]
        watches.replies += [stream(("MODIFIED", lease("12", "b")))]
        assert summary(await first(2, store)) == [("10", "a"), ("12", "b")]
        await store.update(CURRENT, SPEC)
    assert requests.seen() == [GET, ("PUT", ONE, {})]
    assert watches.seen() == [watch("10")]


async def test_a_store_made_from_a_kubeconfig_owns_two_pools_and_closes_both(tmp_path: Path) -> None:
    path = tmp_path / "config"
    path.write_text(json.dumps(kubeconfig()))
    store = KubernetesLeaseStore.from_kubeconfig(str(path))
    clients = {id(store._client), id(store._watch_client)}
    assert len(clients) == 2
    await store.aclose()
    assert store._client._client._client.is_closed
    assert store._watch_client._client._client.is_closed


async def test_watch_rereads_after_410_gone_and_resumes_from_the_fresh_version(
    autojump_clock: trio.testing.MockClock, server: FakeApiServer, store: KubernetesLeaseStore
) -> None:
    server.replies += [
        ok(lease("10")),
        stream(("MODIFIED", lease("11", "b")), ("ERROR", status(410, "Expired", "too old resource version"))),
        ok(lease("20", "c")),
        stream(("MODIFIED", lease("21", "d"))),
    ]
    start = trio.current_time()
    assert summary(await first(4, store)) == [("10", "a"), ("11", "b"), ("20", "c"), ("21", "d")]
    assert server.seen() == [GET, watch("10"), GET, watch("20")]
    assert trio.current_time() == start  # an expired version is re-read at once, with no pause


async def test_watch_yields_none_when_the_lease_is_deleted(
    autojump_clock: trio.testing.MockClock, server: FakeApiServer, store: KubernetesLeaseStore
) -> None:
    server.replies += [ok(lease("10")), stream(("DELETED", lease("11")), ("ADDED", lease("12", "b")))]
    assert summary(await first(3, store)) == [("10", "a"), None, ("12", "b")]
    assert server.seen() == [GET, watch("10")]


async def test_watch_of_a_missing_lease_starts_with_none_and_watches_from_now(
    autojump_clock: trio.testing.MockClock, server: FakeApiServer, store: KubernetesLeaseStore
) -> None:
    server.replies += [failure(404, "NotFound"), stream(("ADDED", lease("5")))]
    assert summary(await first(2, store)) == [None, ("5", "a")]
    assert server.seen() == [GET, watch(None)]


@pytest.mark.parametrize(
    "outage",
    [
        httpx.Response(503, text="unavailable"),
        failure(503, "ServiceUnavailable"),
        stream(("ERROR", status(500, "InternalError"))),
        httpx.ConnectError("boom"),
    ],
    ids=["503-text", "503-status", "error-event", "connect-error"],
)
async def test_watch_retries_transient_failures_after_a_pause(
    autojump_clock: trio.testing.MockClock,
    server: FakeApiServer,
    store: KubernetesLeaseStore,
    outage: httpx.Response | Exception,
) -> None:
    server.replies += [
        ok(lease("10")),
        outage,
        failure(503, "ServiceUnavailable"),  # the re-read fails too: retried
        ok(lease("13", "b")),
        stream(("MODIFIED", lease("14"))),
    ]
    start = trio.current_time()
    assert summary(await first(3, store)) == [("10", "a"), ("13", "b"), ("14", "a")]
    assert server.seen() == [GET, watch("10"), GET, GET, watch("13")]
    assert trio.current_time() - start == pytest.approx(2 * WATCH_RETRY_DELAY)


async def test_watch_raises_permission_denied_on_403(
    autojump_clock: trio.testing.MockClock, server: FakeApiServer, store: KubernetesLeaseStore
) -> None:
    server.replies += [ok(lease("10")), failure(403, "Forbidden", "cannot watch resource leases")]
    with pytest.raises(PermissionDenied, match=r"(?s)refused to watch lease ops/jobs.*verbs: \[watch\]"):
        await first(2, store)
    assert server.seen() == [GET, watch("10")]


async def test_closing_the_watch_closes_its_response_at_once(
    autojump_clock: trio.testing.MockClock, server: FakeApiServer, store: KubernetesLeaseStore
) -> None:
    events = Events(("MODIFIED", lease("11")), ("MODIFIED", lease("12")))
    server.replies += [ok(lease("10")), stream(body=events)]
    await first(2, store)
    assert events.closed


# --- exec credential plugins (EKS, GKE, AKS) ----------------------------------------------------

PLUGIN = """
import json, pathlib, sys
calls = pathlib.Path(sys.argv[1])
calls.write_text(calls.read_text() + "x" if calls.exists() else "x")
token = ["tok-123", "tok-456"][len(calls.read_text()) - 1]
credential = {"apiVersion": "client.authentication.k8s.io/v1beta1", "kind": "ExecCredential"}
print(json.dumps(credential | {"status": {"token": token}}))
"""


def exec_kubeconfig(tmp_path: Path, command: str, args: list[str]) -> KubeConfig:
    user = {"exec": {"apiVersion": "client.authentication.k8s.io/v1beta1", "command": command, "args": args}}
    path = tmp_path / "kubeconfig"
    path.write_text(json.dumps(kubeconfig(user)))  # JSON is YAML
    return KubeConfig.from_file(path)


async def test_exec_plugin_runs_under_trio_and_its_token_is_reused_until_a_401(
    server: FakeApiServer, tmp_path: Path
) -> None:
    calls = tmp_path / "calls"
    config = exec_kubeconfig(tmp_path, sys.executable, ["-c", PLUGIN, str(calls)])
    server.replies += [ok(lease("1")), ok(lease("2")), httpx.Response(401), ok(lease("3"))]
    async with store_for(server, config) as store:
        for version in "123":
            record = await store.get(NS, NAME)
            assert record is not None
            assert record.resource_version == version
    assert server.tokens == ["Bearer tok-123", "Bearer tok-123", "Bearer tok-123", "Bearer tok-456"]
    assert calls.read_text() == "xx"  # run once, then again only when the server refused its token


async def test_exec_plugin_failure_is_permission_denied(server: FakeApiServer, tmp_path: Path) -> None:
    script = "import sys; sys.exit('aws: the SSO session has expired')"
    config = exec_kubeconfig(tmp_path, sys.executable, ["-c", script])
    async with store_for(server, config) as store:
        with pytest.raises(PermissionDenied, match=r"exec credential plugin .* exited with 1: aws: the SSO session"):
            await store.get(NS, NAME)
    assert server.requests == []


async def test_missing_exec_plugin_is_not_mistaken_for_an_unreachable_server(
    server: FakeApiServer, tmp_path: Path
) -> None:
    config = exec_kubeconfig(tmp_path, str(tmp_path / "no-such-plugin"), [])
    async with store_for(server, config) as store:
        with pytest.raises(PermissionDenied, match="no-such-plugin"):
            await store.get(NS, NAME)
    assert server.requests == []

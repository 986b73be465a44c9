"""KubernetesLeaseStore through a real lightkube AsyncClient whose HTTP transport is an in-process fake.

Fast and deterministic: a scripted fake API server answers each request in turn and records
what it saw; the watch tests run on trio's autojump clock, so retry sleeps are instant.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import sys
import threading
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx2 as httpx
import pytest
import trio
import trio.testing
from lightkube import AsyncClient, KubeConfig

from lease_guard import (
    ConfigurationError,
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
from lease_guard.stores import AcquisitionGate
from lease_guard.stores._http1 import Http1Client
from lease_guard.stores.kubernetes import (
    ADMISSION_LATENCY,
    ADMISSION_SETTLE,
    RELEASED_BY_ANNOTATION,
    UNRENEWED_EXPIRY,
    WATCH_GRACE,
    WATCH_RETRY_DELAY,
    WATCH_TIMEOUT,
    Priority,
    _http_client,
    _RequestQueue,
    shared_store,
    watch_backoff,
)
from tests.stores.test_http1 import Server as Http1Server

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
        """Method, path and query of each request; a watch's jittered timeoutSeconds is checked, then left out."""
        seen = []
        for r in self.requests:
            params = dict(r.url.params)
            if "timeoutSeconds" in params:
                assert WATCH_TIMEOUT <= int(params.pop("timeoutSeconds")) < 2 * WATCH_TIMEOUT
            seen.append((r.method, r.url.path, params))
        return seen

    def body(self, index: int = -1) -> Any:
        return json.loads(self.requests[index].content)


GET: tuple[str, str, dict[str, str]] = ("GET", ONE, {})


def watch(rv: str | None) -> tuple[str, str, dict[str, str]]:
    params = {"watch": "true", "fieldSelector": f"metadata.name={NAME}"}
    return (
        "GET",
        COLLECTION,
        params if rv is None else params | {"resourceVersion": rv, "allowWatchBookmarks": "true"},
    )


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
    # A pause after the watch failed, a longer one after the re-read failed too.
    assert 1.5 * WATCH_RETRY_DELAY <= trio.current_time() - start < 3 * WATCH_RETRY_DELAY


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


# --- dead watches and backoff -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("failures", "draw", "delay"),
    [(1, 0.0, 0.25), (1, 0.5, 0.375), (2, 0.0, 0.5), (3, 0.999, 1.999), (7, 0.0, 15.0), (50, 0.0, 15.0)],
)
def test_watch_backoff_doubles_with_half_of_it_jittered_up_to_a_cap(failures: int, draw: float, delay: float) -> None:
    assert watch_backoff(failures, draw) == pytest.approx(delay)


async def test_repeated_watch_failures_back_off_longer_each_time(
    autojump_clock: trio.testing.MockClock, server: FakeApiServer, store: KubernetesLeaseStore
) -> None:
    server.replies.append(ok(lease("10")))
    for _ in range(5):
        server.replies += [failure(503, "ServiceUnavailable"), ok(lease("10"))]
    server.replies.append(stream(("MODIFIED", lease("11", "b"))))
    start = trio.current_time()
    values = await first(7, store)
    assert summary(values)[-1] == ("11", "b")
    waited = trio.current_time() - start
    # 0.25-0.5, 0.5-1, 1-2, 2-4, 4-8 s: a constant pause would wait 2.5 s in all.
    assert 7.75 <= waited < 15.5, waited


class Silent(Events):
    """A watch body that sends its events, then nothing, never ending: a half-open connection."""

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for chunk in self.chunks:
            yield chunk
        await trio.sleep_forever()
        yield b""  # pragma: no cover


async def test_a_silent_watch_is_called_dead_after_its_server_timeout_and_the_lease_reread(
    autojump_clock: trio.testing.MockClock, server: FakeApiServer, store: KubernetesLeaseStore
) -> None:
    dead = Silent(("MODIFIED", lease("11", "b")))
    server.replies += [ok(lease("10")), stream(body=dead), ok(lease("15", "c")), stream(("MODIFIED", lease("16")))]
    values: list[LeaseRecord | None] = []
    times: list[float] = []
    iterator = store.watch(NS, NAME)
    async with contextlib.aclosing(iterator):  # type: ignore[type-var]
        async for value in iterator:
            values.append(value)
            times.append(trio.current_time())
            if len(values) == 4:
                break
    assert summary(values) == [("10", "a"), ("11", "b"), ("15", "c"), ("16", "a")]
    assert server.seen() == [GET, watch("10"), GET, watch("15")]
    timeout = int(server.requests[1].url.params["timeoutSeconds"])
    silent_for = times[2] - times[1]
    # Dropped WATCH_GRACE after the end it asked of the server, then one backoff pause.
    assert timeout + WATCH_GRACE <= silent_for <= timeout + WATCH_GRACE + WATCH_RETRY_DELAY
    assert silent_for <= 2 * WATCH_TIMEOUT + WATCH_GRACE + WATCH_RETRY_DELAY  # the documented bound
    assert dead.closed


async def test_bookmarks_advance_the_version_without_a_value(
    autojump_clock: trio.testing.MockClock, server: FakeApiServer, store: KubernetesLeaseStore
) -> None:
    bookmark = {"kind": "Lease", "apiVersion": "coordination.k8s.io/v1", "metadata": {"resourceVersion": "30"}}
    server.replies += [ok(lease("10")), stream(("BOOKMARK", bookmark)), stream(("MODIFIED", lease("31", "b")))]
    assert summary(await first(2, store)) == [("10", "a"), ("31", "b")]
    assert server.seen() == [GET, watch("10"), watch("30")]


# --- writes keep what is not ours ---------------------------------------------------------------


def foreign_lease(rv: str, annotations: dict[str, str] | None = None) -> dict[str, Any]:
    """A Lease with everything lease_guard does not own set, as an operator or a controller might."""
    body = lease(rv)
    body["metadata"] |= {
        "uid": "0b9c-uid",
        "labels": {"team": "ops"},
        "annotations": {"owner": "ops@example.com"} | (annotations or {}),
        "ownerReferences": [{"apiVersion": "v1", "kind": "ConfigMap", "name": "cm", "uid": "cm-uid"}],
        "finalizers": ["example.com/keep"],
    }
    body["spec"] |= {"preferredHolder": "b", "strategy": "OldestEmulationVersion"}
    return body


async def test_update_edits_the_lease_that_was_read(server: FakeApiServer, store: KubernetesLeaseStore) -> None:
    server.replies += [ok(foreign_lease("7")), ok(foreign_lease("8"))]
    current = await store.get(NS, NAME)
    assert current is not None
    renewed = LeaseSpec(holder="a", lease_duration_seconds=15, acquire_time=T0, renew_time=T1, lease_transitions=2)
    await store.update(current, renewed)
    sent = server.body()
    read = foreign_lease("7")
    assert sent["metadata"] == read["metadata"]
    assert sent["spec"] == read["spec"] | {"renewTime": T1}
    assert current.source.metadata.labels == {"team": "ops"}  # the record read is not changed


async def test_release_proof_is_written_as_an_annotation_and_removed_by_the_next_write(
    server: FakeApiServer, store: KubernetesLeaseStore
) -> None:
    proof = {RELEASED_BY_ANNOTATION: "a"}
    server.replies += [ok(foreign_lease("7")), ok(foreign_lease("8", proof)), ok(foreign_lease("9"))]
    current = await store.get(NS, NAME)
    assert current is not None
    assert current.spec.released_by is None
    release = LeaseSpec(holder=None, lease_duration_seconds=1, acquire_time=None, renew_time=T1, lease_transitions=2)
    released = await store.update(current, dataclasses.replace(release, released_by="a"))
    assert server.body()["metadata"]["annotations"] == {"owner": "ops@example.com", RELEASED_BY_ANNOTATION: "a"}
    assert "holderIdentity" not in server.body()["spec"]
    assert released.spec.released_by == "a"  # read back from the annotation
    acquire = LeaseSpec(holder="b", lease_duration_seconds=15, acquire_time=T1, renew_time=T1, lease_transitions=3)
    await store.update(released, acquire)
    assert server.body()["metadata"]["annotations"] == {"owner": "ops@example.com"}
    assert server.body()["metadata"]["labels"] == {"team": "ops"}


async def test_create_writes_the_release_proof_only_when_given(
    server: FakeApiServer, store: KubernetesLeaseStore
) -> None:
    server.replies += [ok(lease("1"), 201), ok(lease("1"), 201)]
    await store.create(NS, NAME, SPEC)
    assert "annotations" not in server.body()["metadata"]
    await store.create(NS, NAME, dataclasses.replace(SPEC, holder=None, released_by="x"))
    assert server.body()["metadata"]["annotations"] == {RELEASED_BY_ANNOTATION: "x"}


# --- lightkube's internals, in one place ---------------------------------------------------------


async def test_the_http_client_found_inside_lightkube_is_the_one_it_sends_with(server: FakeApiServer) -> None:
    sent: list[str] = []

    async def hook(request: httpx.Request) -> None:
        sent.append(request.method)

    async with AsyncClient(
        KubeConfig.from_dict(kubeconfig()), namespace=NS, transport=httpx.MockTransport(server)
    ) as client:
        http = _http_client(client)
        http.event_hooks["request"].append(hook)
        server.replies.append(ok(lease("1")))
        await KubernetesLeaseStore(client).get(NS, NAME)
    assert sent == ["GET"]


# --- closing ------------------------------------------------------------------------------------


class SlowToClose(httpx.AsyncBaseTransport):
    """A transport whose close takes a while (closing TLS connections does)."""

    def __init__(self) -> None:
        self.closed = False

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        raise AssertionError("no requests expected")

    async def aclose(self) -> None:
        await trio.sleep(0.1)
        self.closed = True


async def test_aclose_closes_both_clients_even_when_cancelled(autojump_clock: trio.testing.MockClock) -> None:
    config = KubeConfig.from_dict(kubeconfig())
    transports = [SlowToClose(), SlowToClose()]
    client, watch_client = (AsyncClient(config, namespace=NS, transport=t) for t in transports)
    store = KubernetesLeaseStore(client, watch_client=watch_client)
    store._owned = [client, watch_client]
    with trio.CancelScope() as scope:
        scope.cancel()
        await store.aclose()
    assert scope.cancelled_caught  # the cancellation is still delivered, after the closes
    assert [t.closed for t in transports] == [True, True]


# --- the shared default store -------------------------------------------------------------------


@pytest.fixture
def environment_kubeconfig(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "config"
    path.write_text(json.dumps(kubeconfig()))
    monkeypatch.setenv("KUBECONFIG", str(path))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    return path


async def test_shared_store_is_one_store_until_the_last_user_exits(
    environment_kubeconfig: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    made_in: list[int] = []
    real_init = KubernetesLeaseStore.__init__

    def init(self: KubernetesLeaseStore, *args: Any, **kwargs: Any) -> None:
        made_in.append(threading.get_ident())
        real_init(self, *args, **kwargs)

    monkeypatch.setattr(KubernetesLeaseStore, "__init__", init)
    async with shared_store() as one, shared_store() as two:
        assert one is two
        async with shared_store() as three:
            assert three is one
        assert not _http_client(one._client).is_closed  # two users left
    assert _http_client(one._client).is_closed
    assert _http_client(one._watch_client).is_closed
    assert made_in != [] and threading.get_ident() not in made_in  # made once, in a worker thread
    assert len(made_in) == 1
    async with shared_store() as fresh:  # after the last user: a new one
        assert fresh is not one
    assert len(made_in) == 2


async def test_shared_store_is_per_configuration_source(
    environment_kubeconfig: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with shared_store() as first_store:
        other = tmp_path / "other"
        other.write_bytes(environment_kubeconfig.read_bytes())  # noqa: ASYNC240
        monkeypatch.setenv("KUBECONFIG", str(other))
        async with shared_store() as second_store:
            assert second_store is not first_store


async def test_shared_store_is_closed_when_its_users_are_cancelled(environment_kubeconfig: Path) -> None:
    with trio.CancelScope() as scope:
        async with shared_store() as store:
            scope.cancel()
            await trio.sleep_forever()
    assert _http_client(store._client).is_closed
    assert _http_client(store._watch_client).is_closed


async def test_shared_store_reports_a_bad_configuration_to_each_user(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "missing"))
    for _ in range(2):
        with pytest.raises(ConfigurationError, match="no kubeconfig found"):
            async with shared_store():
                raise AssertionError("unreachable")


# --- many leases: the request queue and admission ------------------------------------------------


async def test_requests_in_flight_are_bounded_and_renewals_go_first() -> None:
    queue = _RequestQueue(1)
    order: list[str] = []
    release = trio.Event()

    async def request(label: str, priority: Priority) -> None:
        async with queue.slot(priority):
            order.append(label)
            assert queue.in_flight == 1
            await release.wait()

    async with trio.open_nursery() as nursery:
        for label, priority in [
            ("held", Priority.READ),
            ("acquire", Priority.ACQUISITION),
            ("read", Priority.READ),
            ("renew", Priority.RENEWAL),
            ("read-2", Priority.READ),
        ]:
            nursery.start_soon(request, label, priority)
            await trio.testing.wait_all_tasks_blocked()
        assert order == ["held"]
        assert [queue.waiting(p) for p in Priority] == [1, 2, 1]
        release.set()
    assert order == ["held", "renew", "read", "read-2", "acquire"]
    assert queue.in_flight == 0


async def test_a_waiter_cancelled_as_it_is_handed_a_slot_passes_it_on() -> None:
    queue = _RequestQueue(1)
    got: list[str] = []
    cancelled = trio.CancelScope()

    async def waiter(scope: trio.CancelScope, label: str) -> None:
        with scope:
            async with queue.slot(Priority.READ):
                got.append(label)

    async with trio.open_nursery() as nursery, queue.slot(Priority.READ):
        nursery.start_soon(waiter, cancelled, "cancelled")
        await trio.testing.wait_all_tasks_blocked()
        nursery.start_soon(waiter, trio.CancelScope(), "next")
        await trio.testing.wait_all_tasks_blocked()
        # Cancelled, then handed the slot before it runs again: it must pass the slot on.
        cancelled.cancel()
    assert got == ["next"]
    assert queue.in_flight == 0


async def test_the_store_declines_acquisitions_while_renewals_wait_and_counts_them(
    autojump_clock: trio.testing.MockClock, server: FakeApiServer, caplog: pytest.LogCaptureFixture
) -> None:
    config = KubeConfig.from_dict(kubeconfig())
    async with AsyncClient(config, namespace=NS, transport=httpx.MockTransport(server)) as client:
        store = KubernetesLeaseStore(client, max_in_flight=1)
        assert isinstance(store, AcquisitionGate)
        assert store.admits_acquisition()
        release = trio.Event()
        async with trio.open_nursery() as nursery, store._queue.slot(Priority.READ):
            server.replies.append(ok(lease("8")))
            nursery.start_soon(store.update, CURRENT, SPEC)  # a renewal, now waiting for the slot
            await trio.testing.wait_all_tasks_blocked()
            assert not store.admits_acquisition()
            assert not store.admits_acquisition()
            release.set()
        assert store.admits_acquisition()  # the renewal went out: none waits now
    assert store.declined_acquisitions == 2
    warnings = [r for r in caplog.records if "declining new acquisitions" in r.getMessage()]
    assert len(warnings) == 1  # once per episode
    assert "1 renewals wait" in warnings[0].getMessage()


async def test_the_store_declines_acquisitions_while_renewals_are_slow(
    autojump_clock: trio.testing.MockClock, server: FakeApiServer, store: KubernetesLeaseStore
) -> None:
    delay = [4 * ADMISSION_LATENCY]  # a saturated event loop answers late

    async def slow_answer(request: httpx.Request) -> httpx.Response:
        await trio.sleep(delay[0])
        return ok(lease("8"))

    async with AsyncClient(
        KubeConfig.from_dict(kubeconfig()), namespace=NS, transport=httpx.MockTransport(slow_answer)
    ) as client:
        slow = KubernetesLeaseStore(client)
        for _ in range(3):
            await slow.update(CURRENT, SPEC)
        assert slow.renewal_latency > ADMISSION_LATENCY
        assert not slow.admits_acquisition()
        await trio.sleep(60)  # no renewals since: the old measurement no longer counts
        assert slow.admits_acquisition()
        for _ in range(3):
            await slow.update(CURRENT, SPEC)
        assert not slow.admits_acquisition()
        slow_seen_at = trio.current_time()
        delay[0] = 0.0  # renewals fast again: the running mean drops
        while slow.renewal_latency > ADMISSION_LATENCY:
            await slow.update(CURRENT, SPEC)
        # A moment of fast renewals is no headroom: admitted only ADMISSION_SETTLE after the last slow look.
        assert not slow.admits_acquisition()
        await trio.sleep_until(slow_seen_at + ADMISSION_SETTLE - 0.1)
        assert not slow.admits_acquisition()
        await trio.sleep_until(slow_seen_at + ADMISSION_SETTLE)
        assert slow.admits_acquisition()
    assert store.admits_acquisition()  # fast renewals (none yet) leave room


async def test_the_store_declines_acquisitions_while_tenures_it_took_are_not_renewed_yet(
    autojump_clock: trio.testing.MockClock, server: FakeApiServer, caplog: pytest.LogCaptureFixture
) -> None:
    # A new tenure costs nothing until its first renewal: half as many unrenewed tenures as
    # there are request slots stop admission until their renewals show what they cost.
    async with AsyncClient(
        KubeConfig.from_dict(kubeconfig()), namespace=NS, transport=httpx.MockTransport(server)
    ) as client:
        store = KubernetesLeaseStore(client, max_in_flight=4)
        other = LeaseRecord(NS, "other", "3", dataclasses.replace(SPEC, holder="b", lease_transitions=1))
        server.replies += [ok(lease("8")), ok(lease("9"))]
        await store.create(NS, NAME, SPEC)
        assert store.unrenewed_tenures == 1
        assert store.admits_acquisition()
        await store.update(other, SPEC)  # taken from "b": a new holder, so a new tenure
        assert store.unrenewed_tenures == 2
        assert not store.admits_acquisition()
        assert "2 tenures it took or is taking have not been renewed yet" in caplog.records[-1].getMessage()
        server.replies.append(ok(lease("10")))
        await store.update(CURRENT, SPEC)  # the renewal of the first: its cost is now measured
        assert store.unrenewed_tenures == 1
        assert store.admits_acquisition()
        server.replies.append(ok(lease("11")))
        await store.create(NS, "third", SPEC)
        assert not store.admits_acquisition()
        await trio.sleep(UNRENEWED_EXPIRY + 1)  # never renewed: those tenures ended, they count no more
        assert store.unrenewed_tenures == 0
        assert store.admits_acquisition()
    assert store.declined_acquisitions == 2


async def test_acquisitions_not_yet_answered_count_against_admission() -> None:
    # Candidates admitted at the same moment each see the others' writes, answered or not.
    answer = trio.Event()

    async def held_answer(request: httpx.Request) -> httpx.Response:
        await answer.wait()
        return failure(409, "AlreadyExists")

    async with AsyncClient(
        KubeConfig.from_dict(kubeconfig()), namespace=NS, transport=httpx.MockTransport(held_answer)
    ) as client:
        store = KubernetesLeaseStore(client, max_in_flight=2)
        taken = LeaseRecord(NS, "other", "3", dataclasses.replace(SPEC, holder="b", lease_transitions=1))

        async def lose(write: Callable[[], Awaitable[object]]) -> None:
            with pytest.raises(LeaseConflict):
                await write()

        async with trio.open_nursery() as nursery:
            assert store.admits_acquisition()
            nursery.start_soon(lose, lambda: store.create(NS, NAME, SPEC))
            await trio.testing.wait_all_tasks_blocked()  # the create is sent, its answer held back
            assert store.unrenewed_tenures == 1
            assert not store.admits_acquisition()
            nursery.start_soon(lose, lambda: store.update(taken, SPEC))
            await trio.testing.wait_all_tasks_blocked()
            assert store.unrenewed_tenures == 2
            answer.set()
        assert store.unrenewed_tenures == 0  # both lost their race: nothing taken
        assert store.admits_acquisition()


async def test_a_release_or_a_failed_acquisition_leaves_nothing_unrenewed(
    server: FakeApiServer, store: KubernetesLeaseStore
) -> None:
    server.replies += [failure(409, "AlreadyExists"), ok(lease("8")), ok(lease("9", holder=""))]
    with pytest.raises(LeaseConflict):
        await store.create(NS, NAME, SPEC)
    assert store.unrenewed_tenures == 0
    await store.create(NS, NAME, SPEC)
    assert store.unrenewed_tenures == 1
    await store.update(CURRENT, dataclasses.replace(SPEC, holder=None, released_by="a"))
    assert store.unrenewed_tenures == 0


# --- the lean renewal path ----------------------------------------------------------------------


@pytest.fixture
async def lean_store(
    tmp_path: Path, nursery: trio.Nursery, server: FakeApiServer
) -> AsyncIterator[tuple[KubernetesLeaseStore, Http1Server]]:
    """A store made from a kubeconfig (so renewals take the lean path) whose two paths both go to fakes."""
    path = tmp_path / "config"
    path.write_text(json.dumps(kubeconfig()))
    store = KubernetesLeaseStore.from_kubeconfig(str(path))
    lean = store._lean
    assert lean is not None
    h1 = Http1Server(nursery)
    lean.http = Http1Client("fake.invalid", h1.connect, lean._authorization, max_idle=4)
    await store._client.close()
    store._client = AsyncClient(KubeConfig.from_dict(kubeconfig()), namespace=NS, transport=httpx.MockTransport(server))
    store._owned = [store._client, store._watch_client]
    try:
        yield store, h1
    finally:
        await store.aclose()


RENEWAL = dataclasses.replace(SPEC, renew_time=T0)


async def test_renewals_take_the_lean_path_with_the_clients_credentials(
    lean_store: tuple[KubernetesLeaseStore, Http1Server], server: FakeApiServer
) -> None:
    store, h1 = lean_store
    h1.script.append((200, json.dumps(lease("8")).encode(), []))
    record = await store.update(CURRENT, RENEWAL)
    assert record.resource_version == "8"
    method, target, headers, body = h1.requests[0]
    assert (method, target) == (b"PUT", ONE.encode())
    assert headers[b"authorization"] == b"Bearer static"
    assert json.loads(body) == expected_body(RENEWAL, resource_version="7")
    assert server.requests == []  # nothing through lightkube


async def test_an_acquisition_goes_through_lightkube(
    lean_store: tuple[KubernetesLeaseStore, Http1Server], server: FakeApiServer
) -> None:
    store, h1 = lean_store
    server.replies.append(ok(lease("8", holder="b")))
    await store.update(CURRENT, dataclasses.replace(SPEC, holder="b", lease_transitions=3))
    assert server.seen() == [("PUT", ONE, {})]
    assert h1.requests == []


async def test_a_lean_renewal_refused_with_401_is_sent_again_through_lightkube(
    lean_store: tuple[KubernetesLeaseStore, Http1Server], server: FakeApiServer
) -> None:
    store, h1 = lean_store
    h1.script.append((401, b"{}", []))
    server.replies.append(ok(lease("8")))
    assert (await store.update(CURRENT, RENEWAL)).resource_version == "8"
    assert len(h1.requests) == 1
    assert server.seen() == [("PUT", ONE, {})]


@pytest.mark.parametrize(
    ("reply", "error"),
    [
        ((409, json.dumps(status(409, "Conflict")).encode(), []), LeaseConflict),
        ((404, json.dumps(status(404, "NotFound")).encode(), []), LeaseNotFound),
        ((503, b"unavailable", [(b"Retry-After", b"2")]), StoreUnavailable),
        ("hang up", StoreUnavailable),
    ],
)
async def test_lean_renewal_failures_become_the_same_library_errors(
    lean_store: tuple[KubernetesLeaseStore, Http1Server], reply: Any, error: type[LeaseStoreError]
) -> None:
    store, h1 = lean_store
    h1.script.append(reply)
    with pytest.raises(LeaseStoreError) as raised:
        await store.update(CURRENT, RENEWAL)
    assert type(raised.value) is error
    if isinstance(raised.value, StoreUnavailable) and reply != "hang up":
        assert raised.value.retry_after == 2.0

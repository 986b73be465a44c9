"""KubernetesLeaseStore: Leases (coordination.k8s.io/v1) through lightkube's AsyncClient, under trio.

lightkube runs on httpx2 (its HTTP client, a declared dependency of ours too), whose trio
support covers plain requests and streaming, but two of lightkube's paths assume asyncio;
this module stays off both:

- its watch retries with ``asyncio.sleep``, and can neither ask for bookmarks nor bound a
  silent stream: the store runs the watch request itself on the client's HTTP connection
  pool (see :meth:`KubernetesLeaseStore.watch`);
- its exec credential plugin auth (``users[].user.exec`` in a kubeconfig: EKS, GKE, AKS)
  runs the plugin with ``asyncio.create_subprocess_exec``: we swap in an auth that runs it
  with ``trio.run_process``.

Both need the httpx2 client inside lightkube's AsyncClient, which lightkube does not
expose: :func:`_http_client` is the one place that reaches for it (a unit test fails when
lightkube moves it).

Writes edit the Lease that was read (``LeaseRecord.source``), as client-go does: labels,
annotations, ownerReferences, finalizers and the spec fields lease_guard does not own
(preferredHolder, strategy) are sent back unchanged. lease_guard owns holderIdentity,
leaseDurationSeconds, acquireTime, renewTime, leaseTransitions and the release-proof
annotation ``lease-guard.io/released-by``.

Watches and requests use separate connection pools. On HTTP/1.1 each open watch holds a
connection for as long as it runs; in one shared pool a process with many Leases would
have its renewals queue behind watches for a free connection. A store made from a
kubeconfig or the environment therefore makes two clients: one for requests, one (without
a connection limit) for watches. Requests are bounded per store (``max_in_flight``) and
queued by priority: renewals and releases first, then reads, then acquisitions; the
request pool keeps exactly that many connections alive, so a burst never opens new TLS
connections nor makes the pool scan hundreds of waiters.

Once a store follows ``shared_watch_from`` (8) Leases of one namespace, it follows further
ones there through one shared watch of all the namespace's Leases (one LIST, then one
watch: :class:`_SharedWatch`) rather than one watch (one connection, one task, one TLS
session) per Lease; where listing the namespace's Leases is refused it keeps to one each.

Renewals of a store that made its own clients take a leaner path: a PUT over h11 and
trio's TLS on kept-alive connections (``_http1``), with the request client's TLS settings
and credentials; everything else, and renewals through a client passed in, go through
lightkube.

Times are written as strings in the server's MicroTime layout (always six fraction
digits); lightkube's encoder would drop a zero fraction, which the server rejects.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import datetime
import enum
import json
import logging
import os
import random
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any, cast

import httpx2 as httpx
import msgspec
import trio
from lightkube import ApiError, AsyncClient, ConfigError
from lightkube.config.client_adapter import ExecAuth, verify_cluster
from lightkube.config.kubeconfig import SingleConfig
from lightkube.models.coordination_v1 import LeaseSpec as K8sLeaseSpec
from lightkube.models.core_v1 import EventSource, ObjectReference
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.coordination_v1 import Lease
from lightkube.resources.core_v1 import Event

from .._errors import (
    ConfigurationError,
    LeaseConflict,
    LeaseNotFound,
    LeaseStoreError,
    NamespaceNotFound,
    PermissionDenied,
    StoreUnavailable,
)
from .._record import LeaseRecord, LeaseSpec
from ._http1 import Http1Client, tls_connector
from ._kubeconfig import load_kubeconfig

logger = logging.getLogger("lease_guard")

#: The annotation that carries ``LeaseSpec.released_by``, the release proof.
RELEASED_BY_ANNOTATION = "lease-guard.io/released-by"

#: A watch asks the server to end it after uniform(WATCH_TIMEOUT, 2 * WATCH_TIMEOUT) seconds
#: (client-go's reflector does the same with 5 minutes), spreading the re-opens of many watches.
WATCH_TIMEOUT = 60.0
#: How much later than its requested end a watch may still be running before the store calls
#: its connection dead: the server ends watches on time, so silence past that is a half-open
#: connection (a NAT or load balancer that dropped it, a partition).
WATCH_GRACE = 5.0
#: Pauses between attempts to re-open a failing watch: jittered, doubling from the first to the last.
WATCH_RETRY_DELAY = 0.5
WATCH_RETRY_MAX_DELAY = 30.0

#: A store that follows this many Leases of a namespace follows further ones through one shared watch.
SHARED_WATCH_FROM = 8
#: Requests one store has on the wire at once; the rest wait in its priority queue.
MAX_IN_FLIGHT = 64
#: A store declines new acquisitions while its renewals take longer than this from queue to answer.
ADMISSION_LATENCY = 0.25
#: After its renewals were seen slow (over ADMISSION_LATENCY), a store declines acquisitions
#: until that has not been seen for this long (seconds): a saturated process has moments in
#: which its renewals look fast, and admitting in each of them creeps past capacity. Renewals
#: waiting for a slot decline only while they wait: leases taken together renew together, so
#: short queues come and go far below capacity.
ADMISSION_SETTLE = 10.0
#: Weight of the newest renewal in the running mean of renewal latency.
_LATENCY_WEIGHT = 0.2
#: A tenure this store took and has not seen renewed counts against admission for at most this
#: long (seconds): one that goes unrenewed for longer has ended, or renews too rarely to matter.
UNRENEWED_EXPIRY = 30.0
#: Bound on closing one client in :meth:`KubernetesLeaseStore.aclose`, even when cancelled.
CLOSE_TIMEOUT = 5.0


def watch_backoff(failures: int, draw: float) -> float:
    """Seconds to wait before re-opening a watch after `failures` consecutive failures.

    Doubles from WATCH_RETRY_DELAY up to WATCH_RETRY_MAX_DELAY, with "equal jitter": half of
    it fixed, half drawn (`draw` is uniform in [0, 1)), so that many watches cut by one
    outage do not come back in lockstep.

    >>> [watch_backoff(n, 0.0) for n in (1, 2, 3)], watch_backoff(1, 0.999) < 0.5
    ([0.25, 0.5, 1.0], True)
    >>> watch_backoff(20, 0.0)
    15.0
    """
    delay = min(WATCH_RETRY_MAX_DELAY, WATCH_RETRY_DELAY * 2.0 ** (max(failures, 1) - 1))
    return delay / 2 + delay / 2 * draw


class _TrioExecAuth(ExecAuth):
    """lightkube's exec-plugin auth, with the plugin run by trio instead of asyncio."""

    async def async_auth_flow(self, request: httpx.Request) -> AsyncGenerator[httpx.Request, httpx.Response]:
        if self._last_bearer:
            request.headers["Authorization"] = self._last_bearer
            response = yield request
            if response.status_code != 401:
                return
        command, env = self._prepare()
        try:
            result = await trio.run_process(command, env=env, capture_stdout=True, capture_stderr=True, check=False)
        except OSError as exc:
            raise PermissionDenied(f"cannot run the kubeconfig's exec credential plugin {command[0]!r}: {exc}") from exc
        if result.returncode != 0:
            raise PermissionDenied(
                f"the kubeconfig's exec credential plugin {command[0]!r} exited with {result.returncode}: "
                f"{result.stderr.decode(errors='replace').strip()}"
            )
        try:
            token = json.loads(result.stdout)["status"]["token"]
        except (ValueError, KeyError, TypeError) as exc:
            raise PermissionDenied(
                f"the kubeconfig's exec credential plugin {command[0]!r} printed no ExecCredential with a "
                f"status.token (client certificates from plugins are not supported): {exc!r}"
            ) from exc
        request.headers["Authorization"] = self._last_bearer = f"Bearer {token}"
        yield request


def _http_client(client: AsyncClient) -> httpx.AsyncClient:
    """The httpx2 client inside a lightkube AsyncClient.

    lightkube has no public accessor for it; this is the only place that reaches into its
    private attributes (tests/stores/test_kubernetes.py checks it still finds the client
    lightkube sends requests with).
    """
    http = getattr(getattr(client, "_client", None), "_client", None)
    if not isinstance(http, httpx.AsyncClient):
        raise ConfigurationError(
            f"cannot find the HTTP client inside lightkube's AsyncClient (lightkube {_lightkube_version()}): "
            "this lightkube version is not supported; install the version pinned in lease_guard's requirements"
        )
    return http


def _lightkube_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("lightkube")
    except PackageNotFoundError:
        return "unknown"


def _make_trio_safe(client: AsyncClient) -> AsyncClient:
    http = _http_client(client)
    auth = http.auth
    if isinstance(auth, ExecAuth) and not isinstance(auth, _TrioExecAuth):
        http.auth = _TrioExecAuth(auth._exec)
    return client


#: Pool of the client for watches: one connection per open watch, no cap.
WATCH_LIMITS = httpx.Limits(max_connections=None, max_keepalive_connections=None, keepalive_expiry=30.0)


def _load_config(path: str | None, context: str | None) -> SingleConfig:
    config = load_kubeconfig(path)  # raises ConfigurationError naming the file
    try:
        single = config.get(context_name=context)
        if single is None:
            raise ConfigError("no current context")
        return single
    except (ConfigError, OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        where = f"kubeconfig {str(config.fname)!r}" if config.fname else "the in-cluster config"
        raise ConfigurationError(
            f"cannot make a Kubernetes client from {where}: {type(exc).__name__}: {exc}. "
            "Name an existing context, or set current-context in the kubeconfig."
        ) from exc


def _make_client(config: SingleConfig, namespace: str | None, limits: httpx.Limits) -> AsyncClient:
    """A lightkube AsyncClient for `config` whose connection pool has `limits`."""
    if config.user is None:
        raise ConfigurationError(f"the kubeconfig context for {config.cluster.server} names no user")
    try:
        verify = verify_cluster(config.cluster, config.user, config.abs_file)
    except (ConfigError, OSError, ValueError, AttributeError, TypeError) as exc:
        raise ConfigurationError(
            f"cannot set up TLS for {config.cluster.server}: {type(exc).__name__}: {exc}. "
            "Check certificate-authority and client-certificate in the kubeconfig."
        ) from exc
    return AsyncClient(config, namespace=namespace, transport=httpx.AsyncHTTPTransport(verify=verify, limits=limits))


#: Bound on one request of the lean renewal path (httpx's default in lightkube: 10 s).
LEAN_REQUEST_TIMEOUT = 10.0
_PROXY_VARIABLES = ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")


class _LeanRenewals:
    """Renewal PUTs over :class:`Http1Client`, with the request client's own TLS setup and credentials.

    The Authorization header comes from the request client's auth flow (token, token file,
    exec plugin), computed once and again after a 401, when the renewal goes through the
    request client instead, which refreshes the credentials its own way.
    """

    def __init__(self, config: SingleConfig, client: AsyncClient, max_idle: int) -> None:
        url = httpx.URL(config.cluster.server)
        assert config.user is not None
        assert url.host
        context = verify_cluster(config.cluster, config.user, config.abs_file)
        self._prefix = url.path.rstrip("/")
        self._url = url
        self._auth = _http_client(client).auth
        self._header: str | None = None
        self._header_known = False
        self.http = Http1Client(
            url.netloc.decode("ascii"),  # the Host header: host, and port when it is not 443
            tls_connector(url.host, url.port or 443, context),
            self._authorization,
            max_idle=max_idle,
        )

    @staticmethod
    def usable(config: SingleConfig) -> bool:
        """Only for a plain https:// server reached directly: the lean path knows no proxies."""
        url = httpx.URL(config.cluster.server)
        return url.scheme == "https" and bool(url.host) and not any(os.environ.get(v) for v in _PROXY_VARIABLES)

    async def _authorization(self) -> str | None:
        if self._auth is None:
            return None
        if not self._header_known:
            flow = self._auth.async_auth_flow(httpx.Request("GET", self._url))
            try:
                request = await anext(flow)
            finally:
                await flow.aclose()
            self._header, self._header_known = request.headers.get("Authorization"), True
        return self._header

    async def put(self, lease: Lease) -> Lease | None:
        """PUT the Lease; None after a 401 (the caller sends it the usual way, which refreshes credentials)."""
        assert lease.metadata is not None
        target = (
            f"{self._prefix}/apis/coordination.k8s.io/v1/namespaces/{lease.metadata.namespace}"
            f"/leases/{lease.metadata.name}"
        )
        with trio.move_on_after(LEAN_REQUEST_TIMEOUT) as timeout:
            answer = await self.http.request("PUT", target, msgspec.json.encode(lease))
        if timeout.cancelled_caught:
            raise httpx.ReadTimeout(f"no answer to PUT {target} within {LEAN_REQUEST_TIMEOUT} s")
        if answer.status == 401:
            self._header_known = False
            return None
        if answer.status >= 400:
            request = httpx.Request("PUT", self._url.join(target))
            response = httpx.Response(answer.status, headers=answer.headers, content=answer.body, request=request)
            raise httpx.HTTPStatusError(f"PUT {target}: {answer.status}", request=request, response=response)
        return _decode_lease(answer.body)


def _retry_after(response: httpx.Response | None) -> float | None:
    if response is None:
        return None
    try:
        return float(response.headers.get("Retry-After", ""))
    except ValueError:
        return None


def _rbac_hint(verb: str, namespace: str, name: str) -> str:
    names = "" if verb == "create" else f"\n    resourceNames: [{name}]"
    return (
        f"Grant it with a Role in namespace {namespace!r} bound to this identity (see examples/deploy/rbac.yaml):\n"
        f"  - apiGroups: [coordination.k8s.io]\n    resources: [leases]{names}\n    verbs: [{verb}]"
    )


def _status(exc: httpx.HTTPStatusError) -> tuple[int | None, str, str | None]:
    """HTTP code, server message and ``details.kind`` of a failed response.

    lightkube makes an ApiError only for ``Content-Type: application/json`` exactly; a
    watch, a proxy's text/plain answer or ``application/json; charset=utf-8`` arrive as a
    bare HTTPStatusError, whose body we read when it is there.
    """
    if isinstance(exc, ApiError) and exc.status is not None:
        status = exc.status
        code = status.code or (exc.response.status_code if exc.response is not None else None)
        return code, status.message or "", status.details.kind if status.details is not None else None
    response = exc.response
    try:
        body = json.loads(response.content)
    except (httpx.ResponseNotRead, ValueError, TypeError):
        body = None
    if isinstance(body, dict) and body.get("kind") == "Status":
        kind = (body.get("details") or {}).get("kind")
        return response.status_code, str(body.get("message") or ""), kind
    return response.status_code, "", None


def translate(exc: BaseException, *, verb: str, namespace: str, name: str) -> LeaseStoreError:
    """Turn a lightkube/httpx failure into the library error that says what to do."""
    where = f"lease {namespace}/{name}"
    if isinstance(exc, httpx.HTTPStatusError):
        code, message, kind = _status(exc)
        said = f" ({code}): {message}" if message else f" ({code})"
        if code in (401, 403):
            return PermissionDenied(
                f"the API server refused to {verb} {where}{said}\n" + _rbac_hint(verb, namespace, name)
            )
        if code == 404:
            if verb == "create" or kind == "namespaces":
                return NamespaceNotFound(
                    f'cannot {verb} {where}: namespace "{namespace}" does not exist. Create it '
                    f"(kubectl create namespace {namespace}) or pass another namespace."
                )
            return LeaseNotFound(f"{where} was not found{said}")
        if code == 409:
            return LeaseConflict(f"{where} changed since it was read{said}")
        if code == 410:
            return LeaseStoreError(f"the watch of {where} expired (410 Gone){said}")
        if code == 429 or (code is not None and code >= 500):
            return StoreUnavailable(
                f"the API server could not {verb} {where}{said}", retry_after=_retry_after(exc.response)
            )
        return LeaseStoreError(f"the API server refused to {verb} {where}{said}")
    if isinstance(exc, (httpx.TransportError, OSError, trio.BrokenResourceError)):
        return StoreUnavailable(f"cannot reach the API server to {verb} {where}: {type(exc).__name__}: {exc}")
    return LeaseStoreError(f"unexpected failure to {verb} {where}: {type(exc).__name__}: {exc}")


def _text(value: Any) -> str | None:
    # lightkube decodes MicroTime into datetime; we keep the server's string form.
    if value is None:
        return None
    if isinstance(value, str):
        return value
    return cast(str, value.isoformat(timespec="microseconds").replace("+00:00", "Z"))


def _record(lease: Lease) -> LeaseRecord:
    metadata = lease.metadata
    assert metadata is not None
    assert metadata.name
    assert metadata.resourceVersion
    spec = lease.spec or K8sLeaseSpec()
    return LeaseRecord(
        namespace=metadata.namespace or "",
        name=metadata.name,
        resource_version=metadata.resourceVersion,
        spec=LeaseSpec(
            holder=spec.holderIdentity,
            lease_duration_seconds=spec.leaseDurationSeconds,
            acquire_time=_text(spec.acquireTime),
            renew_time=_text(spec.renewTime),
            lease_transitions=spec.leaseTransitions,
            released_by=(metadata.annotations or {}).get(RELEASED_BY_ANNOTATION),
        ),
        source=lease,
    )


def _annotations(existing: dict[str, str] | None, spec: LeaseSpec) -> dict[str, str] | None:
    """The Lease's annotations with the release proof set from `spec` (removed when it has none)."""
    annotations = dict(existing or {})
    if spec.released_by is None:
        annotations.pop(RELEASED_BY_ANNOTATION, None)
    else:
        annotations[RELEASED_BY_ANNOTATION] = spec.released_by
    return annotations or None


def _owned_spec(spec: LeaseSpec, base: K8sLeaseSpec | None = None) -> K8sLeaseSpec:
    """`base` (the spec that was read) with the fields lease_guard owns replaced by `spec`'s."""
    return msgspec.structs.replace(
        base or K8sLeaseSpec(),
        holderIdentity=spec.holder,
        leaseDurationSeconds=spec.lease_duration_seconds,
        # Strings in MicroTime layout, see the module docstring.
        acquireTime=cast(Any, spec.acquire_time),
        renewTime=cast(Any, spec.renew_time),
        leaseTransitions=spec.lease_transitions,
    )


def _new_lease(namespace: str, name: str, spec: LeaseSpec) -> Lease:
    return Lease(
        metadata=ObjectMeta(name=name, namespace=namespace, annotations=_annotations(None, spec)),
        spec=_owned_spec(spec),
    )


def _edited_lease(current: LeaseRecord, spec: LeaseSpec) -> Lease:
    """The Lease `current` was read from, with lease_guard's fields set from `spec`.

    Everything else is sent back as it was read. The read object itself is left unchanged
    (msgspec's replace copies what is edited), since a campaign may still hold `current`.
    """
    read = current.source
    if not isinstance(read, Lease) or read.metadata is None:
        # A record made by hand (tests, another store): nothing of the server's to keep.
        lease = _new_lease(current.namespace, current.name, spec)
        assert lease.metadata is not None
        lease.metadata.resourceVersion = current.resource_version
        return lease
    metadata = msgspec.structs.replace(
        read.metadata,
        resourceVersion=current.resource_version,
        annotations=_annotations(read.metadata.annotations, spec),
    )
    return msgspec.structs.replace(read, metadata=metadata, spec=_owned_spec(spec, read.spec))


class Priority(enum.IntEnum):
    """The order in which a store's queued requests go out: keeping tenures before taking new ones."""

    RENEWAL = 0
    """An update that keeps the holder and term (a renewal), or gives the Lease up (a release)."""
    READ = 1
    """A GET: a watch's re-read, a campaign's look before it writes."""
    ACQUISITION = 2
    """A create, or an update that changes the holder to someone or starts a new term; and Events."""


def write_priority(current: LeaseRecord | None, spec: LeaseSpec) -> Priority:
    """How urgent a write of `spec` over `current` (None: a create) is.

    >>> a = LeaseSpec("a", 15, None, None, 3)
    >>> rec = LeaseRecord("ns", "n", "1", a)
    >>> [write_priority(None, a).name, write_priority(rec, a).name]
    ['ACQUISITION', 'RENEWAL']
    >>> write_priority(rec, LeaseSpec("b", 15, None, None, 4)).name
    'ACQUISITION'
    >>> write_priority(rec, LeaseSpec(None, 1, None, None, 3, released_by="a")).name
    'RENEWAL'
    """
    if current is None:
        return Priority.ACQUISITION
    if not spec.holder:
        return Priority.RENEWAL
    same_tenure = spec.holder == current.spec.holder and spec.lease_transitions == current.spec.lease_transitions
    return Priority.RENEWAL if same_tenure else Priority.ACQUISITION


class _RequestQueue:
    """At most `limit` requests in flight; the others wait, served by priority, then in order.

    A finished request hands its slot straight to the first waiter, so a waiter is never
    overtaken by a newcomer of the same priority.
    """

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ConfigurationError(f"max_in_flight must be at least 1, got {limit}")
        self.limit = limit
        self.in_flight = 0
        self._waiting: tuple[collections.deque[trio.Event], ...] = tuple(collections.deque() for _ in Priority)

    def waiting(self, priority: Priority) -> int:
        return len(self._waiting[priority])

    @contextlib.asynccontextmanager
    async def slot(self, priority: Priority) -> AsyncIterator[None]:
        if self.in_flight < self.limit and not any(self._waiting):
            self.in_flight += 1
            try:
                await trio.lowlevel.checkpoint()
            except BaseException:
                self._release()
                raise
        else:
            handed = trio.Event()
            queue = self._waiting[priority]
            queue.append(handed)
            try:
                await handed.wait()
            except BaseException:
                if handed.is_set():
                    self._release()  # the slot was handed over as we were cancelled: pass it on
                else:
                    queue.remove(handed)
                raise
        try:
            yield
        finally:
            self._release()

    def _release(self) -> None:
        for queue in self._waiting:
            if queue:
                queue.popleft().set()  # the slot goes to the waiter: in_flight stays
                return
        self.in_flight -= 1


class _WatchEvent(msgspec.Struct):
    """One line of a watch stream; `object` is decoded once its type is known (a Lease or a Status)."""

    type: str
    object: msgspec.Raw


_decode_event = msgspec.json.Decoder(_WatchEvent).decode
_decode_lease = msgspec.json.Decoder(Lease).decode


class _Silent(Exception):
    """A watch that neither sent anything nor ended by the time the server should have ended it."""


_END_OF_STREAM: Any = object()


def _watch_error(request: httpx.Request, status: Any) -> httpx.HTTPStatusError:
    """An ERROR event of a watch (a Status object) as the HTTP error it stands for."""
    if not isinstance(status, dict):
        status = {"message": repr(status)}
    code = status.get("code") if isinstance(status.get("code"), int) else 500
    response = httpx.Response(cast(int, code), content=json.dumps(status).encode(), request=request)
    return httpx.HTTPStatusError(f"watch error event: {status.get('message', '')}", request=request, response=response)


class KubernetesLeaseStore:
    """Leases on a Kubernetes API server, through lightkube's AsyncClient.

    Creates the Lease when it is missing. Errors become library errors that say what to
    do: :class:`PermissionDenied` names the verb and the RBAC rule to add,
    :class:`NamespaceNotFound` the namespace to create; 429 and 5xx become
    :class:`StoreUnavailable`, which the campaign retries within its timing budget. The
    watch re-reads and resumes after stream timeouts, 410 Gone, transient failures and
    dead connections.

    Many Leases, one store: at most `max_in_flight` requests are on the wire at once; the
    others queue with renewals (and releases) first, then reads, then acquisitions. The
    store is an :class:`~lease_guard.stores.AcquisitionGate`: while renewals wait for a slot
    or take longer than ADMISSION_LATENCY from queue to answer, or while half as many
    tenures as there are slots were taken and not yet renewed, it declines new acquisitions
    (counted in :attr:`declined_acquisitions`, logged at WARNING when it starts declining),
    so a process with more Leases than its CPU can renew keeps the ones it holds.

    Example::

        client = lightkube.AsyncClient(lightkube.KubeConfig.from_file("~/.kube/config"), namespace="ops")
        async with leadership("my-operator", store=KubernetesLeaseStore(client)):
            ...

    Args:
        client: the client for requests; by default one made from the environment
            (in-cluster service account, else ``$KUBECONFIG`` or ``~/.kube/config``),
            closed by :meth:`aclose`. Its namespace is the default namespace of Leases.
            Prefer :func:`shared_store` to making one per call: the default store reads the
            kubeconfig and sets up TLS, blocking, in the constructor.
        watch_client: the client for watches. By default: a second client made like the
            first when the store makes its own, else `client` itself. Each open watch holds
            one of its connections (HTTP/1.1), and lightkube's clients allow 100; so when
            you pass your own `client` and one store serves more than about 50 Electors,
            pass a `watch_client` too, or renewals will wait for a free connection.
        max_in_flight: requests on the wire at once (the request pool keeps as many alive).
        watch_timeout: each watch asks the server to end it after uniform(watch_timeout,
            2 * watch_timeout) seconds, and is called dead when it is still silent
            WATCH_GRACE seconds after that: a dead (half-open) watch goes unnoticed for at
            most ``2 * watch_timeout + WATCH_GRACE`` seconds (125 s by default); the store
            then re-reads the Lease and re-opens the watch. A follower whose watch is dead
            misses changes until then, but never anything that would make it unsafe: its
            expiry timer runs on silence.
        shared_watch_from: once the store follows this many Leases of one namespace, it
            follows further ones through one watch of all the namespace's Leases (a LIST,
            then one watch), instead of one watch (one connection) each: far less work for
            this process and for the API server when a process holds many Leases. That
            needs ``list`` and ``watch`` on leases in the namespace, not limited by
            resourceNames; without them (403) each Lease keeps a watch of its own, logged
            once. None: always one watch per Lease. Leave it above the number of Leases
            you elect in a namespace whose other Leases change often (kube-node-lease,
            kube-system): the shared watch reads their changes too.

    Raises:
        ConfigurationError: no client was given and none can be made from the environment.
    """

    def __init__(
        self,
        client: AsyncClient | None = None,
        *,
        watch_client: AsyncClient | None = None,
        max_in_flight: int = MAX_IN_FLIGHT,
        watch_timeout: float = WATCH_TIMEOUT,
        shared_watch_from: int | None = SHARED_WATCH_FROM,
    ) -> None:
        if watch_timeout < 1:
            raise ConfigurationError(f"watch_timeout must be at least 1 second, got {watch_timeout}")
        if shared_watch_from is not None and (isinstance(shared_watch_from, bool) or shared_watch_from < 1):
            raise ConfigurationError(
                f"shared_watch_from must be a number of Leases, at least 1, or None, got {shared_watch_from!r}"
            )
        self._shared_watch_from = shared_watch_from
        #: Watches of one Lease each, by namespace; the shared watch of a namespace; namespaces refusing one.
        self._followers: collections.Counter[str] = collections.Counter()
        self._shared: dict[str, _SharedWatch] = {}
        self._shared_refused: set[str] = set()
        self._queue = _RequestQueue(max_in_flight)
        self._watch_timeout = watch_timeout
        self._owned: list[AsyncClient] = []
        self._lean: _LeanRenewals | None = None
        if client is None:
            config = _load_config(None, None)
            client = _make_client(config, None, _request_limits(max_in_flight))
            self._owned.append(client)
            if watch_client is None:
                watch_client = _make_client(config, None, WATCH_LIMITS)
                self._owned.append(watch_client)
        self._client = _make_trio_safe(client)
        self._watch_client = _make_trio_safe(watch_client) if watch_client is not None else self._client
        if self._owned and _LeanRenewals.usable(self._client.config):
            # Only when the store made its own client: a client given to it may carry a
            # transport or settings (a proxy, HTTP/2, a test double) that renewals must honour.
            self._lean = _LeanRenewals(self._client.config, self._client, max_in_flight)
        #: Acquisitions this store declined for want of headroom (see :meth:`admits_acquisition`).
        self.declined_acquisitions = 0
        self._declining = False
        self._renewal_latency = 0.0
        self._renewal_measured_at = -float("inf")
        #: Tenures taken through this store and not renewed since: (namespace, name) -> when taken.
        self._unrenewed: dict[tuple[str, str], float] = {}
        #: Writes that would take a Lease, sent or queued and not answered yet.
        self._acquiring = 0
        #: When admission last saw renewals slow (see ADMISSION_SETTLE).
        self._behind_at = -float("inf")

    @classmethod
    def from_kubeconfig(
        cls,
        path: str | None = None,
        *,
        context: str | None = None,
        namespace: str | None = None,
        max_in_flight: int = MAX_IN_FLIGHT,
        watch_timeout: float = WATCH_TIMEOUT,
        shared_watch_from: int | None = SHARED_WATCH_FROM,
    ) -> KubernetesLeaseStore:
        """A store for the cluster of a kubeconfig file, as kubectl's ``--kubeconfig``,
        ``--context`` and ``--namespace`` would pick it. Blocks while it reads the file.

        Example::

            store = KubernetesLeaseStore.from_kubeconfig("~/.kube/config", context="prod", namespace="ops")

        Raises:
            ConfigurationError: the file is missing or not a valid kubeconfig, or has no such context.
        """
        config = _load_config(path, context)
        store = cls(
            _make_client(config, namespace, _request_limits(max_in_flight)),
            watch_client=_make_client(config, namespace, WATCH_LIMITS),
            max_in_flight=max_in_flight,
            watch_timeout=watch_timeout,
            shared_watch_from=shared_watch_from,
        )
        store._owned = [store._client, store._watch_client]
        if _LeanRenewals.usable(config):
            store._lean = _LeanRenewals(config, store._client, max_in_flight)
        return store

    @property
    def default_namespace(self) -> str:
        """The client's namespace: the in-cluster service account's, else the kubeconfig context's, else "default"."""
        return str(self._client.namespace or "default")

    async def aclose(self) -> None:
        """Close the clients this store made.

        Each is closed even when the caller is cancelled (shielded), for at most
        CLOSE_TIMEOUT seconds each; cancellation is delivered after. Shared watches stop;
        their followers raise LeaseStoreError.
        """
        for shared in list(self._shared.values()):
            shared._end(LeaseStoreError(f"the lease store was closed while following leases of {shared.namespace}"))
        for client in self._owned:
            with trio.CancelScope(shield=True, deadline=trio.current_time() + CLOSE_TIMEOUT):
                await client.close()
        if self._lean is not None:
            with trio.CancelScope(shield=True, deadline=trio.current_time() + CLOSE_TIMEOUT):
                await self._lean.http.aclose()
        await trio.lowlevel.checkpoint_if_cancelled()

    # -- admission -----------------------------------------------------------------------------

    @property
    def renewal_latency(self) -> float:
        """Running mean of seconds from a renewal entering the queue to its answer (0 when idle)."""
        if trio.current_time() - self._renewal_measured_at > 5 * ADMISSION_LATENCY / _LATENCY_WEIGHT:
            return 0.0  # no renewals lately: an old measurement says nothing about now
        return self._renewal_latency

    @property
    def unrenewed_tenures(self) -> int:
        """Tenures this store is taking (writes not answered yet) or took (within UNRENEWED_EXPIRY)
        whose Lease it has not renewed since."""
        now = trio.current_time()
        for key in [key for key, taken in self._unrenewed.items() if now - taken > UNRENEWED_EXPIRY]:
            del self._unrenewed[key]
        return self._acquiring + len(self._unrenewed)

    def admits_acquisition(self) -> bool:
        """True when this process has headroom for one more tenure (the AcquisitionGate protocol).

        False while renewals wait for a request slot, or take longer than
        ADMISSION_LATENCY from queue to answer (CPU or event-loop saturation shows there
        first), and for ADMISSION_SETTLE seconds after they were last seen slow; or when as
        many acquisitions already wait as there are slots; or while half as many tenures
        as there are slots are being taken, or were taken and not renewed since: a new
        tenure costs nothing until its first renewal, a retry_period later, so without that
        bound a burst of acquisitions passes before the renewal latency can show what it
        costs. Never waits; counts and logs what it declines.
        """
        reason: str | None = None
        now = trio.current_time()
        if waiting := self._queue.waiting(Priority.RENEWAL):
            reason = f"{waiting} renewals wait for one of its {self._queue.limit} request slots"
        elif (latency := self.renewal_latency) > ADMISSION_LATENCY:
            self._behind_at = now
            reason = (
                f"its renewals take {latency * 1000:.0f} ms from queue to answer "
                f"(over {ADMISSION_LATENCY * 1000:.0f} ms)"
            )
        elif now - self._behind_at < ADMISSION_SETTLE:
            reason = (
                f"its renewals were slow {now - self._behind_at:.1f} s ago; it admits again once they "
                f"have been fast for {ADMISSION_SETTLE:g} s"
            )
        elif (waiting := self._queue.waiting(Priority.ACQUISITION)) >= self._queue.limit:
            reason = f"{waiting} acquisitions already wait for a request slot"
        elif (unrenewed := self.unrenewed_tenures) >= max(1, self._queue.limit // 2):
            reason = f"{unrenewed} tenures it took or is taking have not been renewed yet (their cost is not known yet)"
        if reason is None:
            if self._declining:
                logger.info("lease store has headroom again: admitting acquisitions")
                self._declining = False
            return True
        self.declined_acquisitions += 1
        if not self._declining:
            logger.warning(
                "lease store at capacity, declining new acquisitions (leases held keep renewing): %s. "
                "Spread the leases over more processes, or raise retry_period.",
                reason,
            )
            self._declining = True
        return False

    # -- requests ------------------------------------------------------------------------------

    async def get(self, namespace: str, name: str) -> LeaseRecord | None:
        """Read the Lease; None if it does not exist."""
        try:
            async with self._queue.slot(Priority.READ):
                return _record(await self._client.get(Lease, name, namespace=namespace))
        except (httpx.HTTPError, OSError) as exc:
            failure = translate(exc, verb="get", namespace=namespace, name=name)
            if isinstance(failure, LeaseNotFound):
                return None
            raise failure from exc

    async def create(self, namespace: str, name: str, spec: LeaseSpec) -> LeaseRecord:
        """Create the Lease; LeaseConflict if it exists."""
        # Counted before the first checkpoint: candidates admitted at the same moment each see the others.
        self._acquiring += 1
        try:
            async with self._queue.slot(Priority.ACQUISITION):
                record = _record(await self._client.create(_new_lease(namespace, name, spec)))
        except (httpx.HTTPError, OSError) as exc:
            raise translate(exc, verb="create", namespace=namespace, name=name) from exc
        finally:
            self._acquiring -= 1
        if spec.holder:
            self._unrenewed[namespace, name] = trio.current_time()
        return record

    async def update(self, current: LeaseRecord, spec: LeaseSpec) -> LeaseRecord:
        """Write `spec` into the Lease `current` was read from, if it is still at ``current.resource_version``.

        A PUT with that precondition of the object that was read, with only lease_guard's
        fields changed (see the module docstring). ``spec.released_by`` sets the
        release-proof annotation; None removes it.
        """
        priority = write_priority(current, spec)
        lease = _edited_lease(current, spec)
        queued_at = trio.current_time()
        acquiring = priority is Priority.ACQUISITION and bool(spec.holder)
        self._acquiring += acquiring  # before the first checkpoint, as in create()
        try:
            async with self._queue.slot(priority):
                written = None
                if priority is Priority.RENEWAL and self._lean is not None:
                    written = await self._lean.put(lease)
                if written is None:
                    written = await self._client.replace(lease)
        except (httpx.HTTPError, OSError, trio.BrokenResourceError) as exc:
            raise translate(exc, verb="update", namespace=current.namespace, name=current.name) from exc
        finally:
            self._acquiring -= acquiring
        now = trio.current_time()
        if priority is Priority.RENEWAL:
            self._renewal_latency += _LATENCY_WEIGHT * (now - queued_at - self._renewal_latency)
            self._renewal_measured_at = now
            self._unrenewed.pop((current.namespace, current.name), None)
        elif spec.holder:
            self._unrenewed[current.namespace, current.name] = now
        return _record(written)

    async def record_event(self, namespace: str, name: str, *, reason: str, message: str, identity: str) -> None:
        """Create a core/v1 Event about the Lease, as client-go's leader election does.

        Needs ``create`` on ``events`` in the namespace (the optional Role in
        examples/deploy/rbac.yaml). Queued behind renewals and reads.
        """
        now = datetime.datetime.now(datetime.UTC)
        event = Event(
            metadata=ObjectMeta(generateName=f"{name}.", namespace=namespace),
            involvedObject=ObjectReference(
                apiVersion="coordination.k8s.io/v1", kind="Lease", name=name, namespace=namespace
            ),
            reason=reason,
            message=message,
            type="Normal",
            source=EventSource(component="lease-guard"),
            reportingComponent="lease-guard",
            reportingInstance=identity[:128],
            firstTimestamp=now,
            lastTimestamp=now,
            count=1,
        )
        try:
            async with self._queue.slot(Priority.ACQUISITION):
                await self._client.create(event)
        except (httpx.HTTPError, OSError) as exc:
            failure = translate(exc, verb="create", namespace=namespace, name=name)
            if isinstance(failure, PermissionDenied):
                raise PermissionDenied(
                    f"cannot record a Kubernetes Event about lease {namespace}/{name}: grant create on events "
                    "(see the lease-guard-events Role in examples/deploy/rbac.yaml), or turn record_events off"
                ) from exc
            raise failure from exc

    # -- the watch -----------------------------------------------------------------------------

    async def watch(self, namespace: str, name: str) -> AsyncIterator[LeaseRecord | None]:
        """The Lease now, then each change; resumes across timeouts, 410 Gone, transient errors and dead watches.

        Each watch request asks the server for bookmarks (when it resumes from a version) and to end it after
        uniform(watch_timeout, 2 * watch_timeout) seconds; a stream the server ended is
        re-opened at once from the last version seen. A stream still silent WATCH_GRACE
        seconds after its requested end is a dead connection: it is dropped, the Lease is
        re-read and the watch re-opened. Failures are retried after watch_backoff() pauses
        (jittered, doubling up to WATCH_RETRY_MAX_DELAY); 410 Gone is re-read at once.

        Once this store follows `shared_watch_from` Leases of a namespace, further ones are
        followed through one watch of all the namespace's Leases (see :class:`_SharedWatch`);
        the values yielded are the same.
        """
        shared = self._shared_watch(namespace)
        if shared is not None:
            async with contextlib.aclosing(shared.follow(name)) as values:
                async for value in values:
                    yield value
            # The shared watch was refused (no list/watch on the namespace's Leases): one of our own.
        self._followers[namespace] += 1
        try:
            async with contextlib.aclosing(self._resumable_watch(namespace, name)) as changes:
                async for change in changes:
                    if isinstance(change, _Reread):
                        yield change.records.get(name)
                    else:
                        yield None if change.type == "DELETED" else _record(change.lease)
        finally:
            self._followers[namespace] -= 1

    def _shared_watch(self, namespace: str) -> _SharedWatch | None:
        """The shared watch of the namespace's Leases to join: None for a watch of one's own."""
        shared = self._shared.get(namespace)
        if shared is not None:
            return shared
        if (
            self._shared_watch_from is None
            or namespace in self._shared_refused
            or self._followers[namespace] + 1 < self._shared_watch_from
        ):
            return None
        shared = self._shared[namespace] = _SharedWatch(self, namespace)
        trio.lowlevel.spawn_system_task(shared.run, name=f"lease_guard shared watch of namespace {namespace}")
        return shared

    async def _read(self, namespace: str, name: str | None) -> tuple[dict[str, LeaseRecord], str | None]:
        """The Lease `name` (or all the namespace's Leases, for None) by name, and the version read at."""
        if name is not None:
            record = await self.get(namespace, name)
            return ({name: record} if record else {}), (record.resource_version if record else None)
        http = _http_client(self._client)
        try:
            async with self._queue.slot(Priority.READ):
                response = await http.get(f"apis/coordination.k8s.io/v1/namespaces/{namespace}/leases")
                response.raise_for_status()
            leases = _decode_lease_list(response.content)
        except (httpx.HTTPError, OSError, msgspec.DecodeError) as exc:
            raise translate(exc, verb="list", namespace=namespace, name="*") from exc
        records = {record.name: record for record in map(_record, leases.items or ())}
        return records, leases.metadata.resourceVersion

    async def _resumable_watch(self, namespace: str, name: str | None) -> AsyncGenerator[_Reread | _Change, None]:
        """Read, then watch from the version read: a `_Reread` first and after every gap, `_Change`s between.

        `name` None watches all the namespace's Leases. The first read's failures are
        raised; later ones are retried (see :meth:`watch`). PermissionDenied and
        NamespaceNotFound are raised whenever they come.
        """
        where = f"lease {namespace}/{name}" if name is not None else f"the shared watch of namespace {namespace}"
        records, version = await self._read(namespace, name)
        yield _Reread(records)
        http = _http_client(self._watch_client)
        path = f"apis/coordination.k8s.io/v1/namespaces/{namespace}/leases"
        failures = 0
        while True:
            server_timeout = int(self._watch_timeout * (1 + random.random()))
            params = {"watch": "true", "timeoutSeconds": str(server_timeout)}
            if name is not None:
                params["fieldSelector"] = f"metadata.name={name}"
            if version is not None:
                # Bookmarks only when resuming from a version: kube-apiserver 1.37 sends a watch
                # opened without one, with bookmarks, its first bookmark and then nothing more.
                params["resourceVersion"] = version
                params["allowWatchBookmarks"] = "true"
            deadline = trio.current_time() + server_timeout + WATCH_GRACE
            request = http.build_request(
                "GET", path, params=params, timeout=httpx.Timeout(10.0, read=server_timeout + WATCH_GRACE)
            )
            response: httpx.Response | None = None
            try:
                with trio.move_on_at(deadline):
                    response = await http.send(request, stream=True)
                if response is None:
                    raise _Silent
                if response.status_code >= 400:
                    await response.aread()
                    response.raise_for_status()
                failures = 0
                lines = response.aiter_lines()
                while True:
                    line: Any = None
                    with trio.move_on_at(deadline):
                        line = await anext(lines, _END_OF_STREAM)
                    if line is None:
                        raise _Silent
                    if line is _END_OF_STREAM:
                        break  # the server ended it (its timeout): resume from the last version seen
                    if not line.strip():
                        continue
                    event = _decode_event(line)
                    if event.type == "ERROR":
                        raise _watch_error(request, msgspec.json.decode(event.object))
                    lease = _decode_lease(event.object)
                    version = (lease.metadata.resourceVersion if lease.metadata else None) or version
                    if event.type in ("ADDED", "MODIFIED", "DELETED"):
                        yield _Change(event.type, lease)
                    # BOOKMARK: only its resourceVersion, taken above.
                continue
            except _Silent:
                logger.info(
                    "%s: the watch stayed silent %.0f s past the end it asked of the server: "
                    "its connection is presumed dead; re-reading",
                    where,
                    WATCH_GRACE,
                )
                failures += 1
            except (httpx.HTTPError, OSError, trio.BrokenResourceError, msgspec.DecodeError) as exc:
                failure = translate(exc, verb="watch", namespace=namespace, name=name or "*")
                if isinstance(exc, httpx.HTTPStatusError) and _status(exc)[0] == 410:
                    logger.debug("%s: watch expired (410 Gone); re-reading", where)
                elif isinstance(failure, (PermissionDenied, NamespaceNotFound)):
                    raise failure from exc
                else:
                    logger.info("%s: watch interrupted, resuming: %s", where, failure)
                    failures += 1
            finally:
                if response is not None:
                    with trio.CancelScope(shield=True, deadline=trio.current_time() + CLOSE_TIMEOUT):
                        await response.aclose()
            if failures:
                await trio.sleep(watch_backoff(failures, random.random()))
            # Re-read, so nothing that happened while the watch was down is missed.
            while True:
                try:
                    records, version = await self._read(namespace, name)
                    break
                except StoreUnavailable as exc:
                    failures += 1
                    logger.info("%s: cannot re-read yet: %s", where, exc)
                    await trio.sleep(watch_backoff(failures, random.random()))
            yield _Reread(records)


@dataclasses.dataclass(frozen=True)
class _Reread:
    """The watched Leases as just read, by name: a watch's start, and its restart after a gap."""

    records: dict[str, LeaseRecord]


@dataclasses.dataclass(frozen=True)
class _Change:
    """One ADDED, MODIFIED or DELETED event of a watch."""

    type: str
    lease: Lease


class _LeaseListMeta(msgspec.Struct):
    resourceVersion: str | None = None


class _LeaseList(msgspec.Struct):
    metadata: _LeaseListMeta
    items: list[Lease] | None = None  # the server leaves out an empty list's items


_decode_lease_list = msgspec.json.Decoder(_LeaseList).decode


class _Follower:
    """One ``watch()`` of a Lease fed by a shared watch: the states to yield, in order."""

    __slots__ = ("ended", "failure", "pending", "wakeup")

    def __init__(self) -> None:
        self.pending: collections.deque[LeaseRecord | None] = collections.deque()
        self.wakeup = trio.Event()
        self.ended = False
        self.failure: LeaseStoreError | None = None

    def put(self, record: LeaseRecord | None) -> None:
        self.pending.append(record)
        self.wakeup.set()


class _SharedWatch:
    """All the Leases of one namespace followed through one watch, for every ``watch()`` of one of them.

    A process that holds many Leases of a namespace would otherwise keep one watch (one
    HTTP/1.1 connection, one TLS session, one task reading it) per Lease, and the API
    server would offer every Lease's change to every one of those watches. This is one
    LIST, then one watch from the version listed, resumed as :meth:`KubernetesLeaseStore.watch`
    resumes its own, and re-listed after a gap; each follower of a Lease gets its state
    from the last list or event, then every change of it, in order. Its first state comes
    from what the shared watch has seen, not from a read of its own: as fresh as the
    stream (a watch of one's own is as stale from its second state on).

    It runs in a trio system task (a store has no nursery of its own) from its first
    follower to its last, and never lets an exception out: a failure of its first list is
    handed to the followers waiting for it, who raise it as their own first read would; a
    refusal (403: no list or watch on the namespace's Leases, e.g. RBAC rules limited by
    resourceNames) makes them, and the store from then on, fall back to a watch of each
    Lease, and is logged once.
    """

    def __init__(self, store: KubernetesLeaseStore, namespace: str) -> None:
        self.store = store
        self.namespace = namespace
        self.records: dict[str, LeaseRecord] = {}
        self.listed = False
        self.followers: dict[str, list[_Follower]] = collections.defaultdict(list)
        self.count = 0
        self.scope = trio.CancelScope()

    async def follow(self, name: str) -> AsyncGenerator[LeaseRecord | None, None]:
        """The Lease's state, then its changes; returns if the shared watch is refused (fall back)."""
        follower = _Follower()
        self.followers[name].append(follower)
        self.count += 1
        if self.listed:
            follower.put(self.records.get(name))
        try:
            while True:
                while follower.pending:
                    yield follower.pending.popleft()
                if follower.failure is not None:
                    raise follower.failure
                if follower.ended:
                    return
                await follower.wakeup.wait()
                follower.wakeup = trio.Event()
        finally:
            self._leave(name, follower)

    def _leave(self, name: str, follower: _Follower) -> None:
        followers = self.followers[name]
        followers.remove(follower)
        if not followers:
            del self.followers[name]
        self.count -= 1
        if self.count == 0:
            self._stop()

    def _stop(self) -> None:
        self.scope.cancel()
        if self.store._shared.get(self.namespace) is self:
            del self.store._shared[self.namespace]

    async def run(self) -> None:
        with self.scope:
            try:
                async with contextlib.aclosing(self.store._resumable_watch(self.namespace, None)) as changes:
                    async for change in changes:
                        if isinstance(change, _Reread):
                            self._reread(change.records)
                        else:
                            self._change(change)
            except PermissionDenied as exc:
                if self.namespace not in self.store._shared_refused:
                    self.store._shared_refused.add(self.namespace)
                    logger.info(
                        "leases of namespace %s: following each through a watch of its own, as listing and "
                        "watching all the namespace's Leases was refused (%s). Grant list and watch on leases "
                        "in the namespace to follow them through one watch.",
                        self.namespace,
                        str(exc).splitlines()[0],
                    )
                self._end(None)
            except LeaseStoreError as exc:
                self._end(exc)
            except Exception as exc:  # never out of a system task: that would crash the whole trio run
                self._end(LeaseStoreError(f"the shared watch of namespace {self.namespace} failed: {exc!r}"))
        self._end(None)

    def _end(self, failure: LeaseStoreError | None) -> None:
        self._stop()
        for followers in self.followers.values():
            for follower in followers:
                if not follower.ended:
                    follower.ended, follower.failure = True, failure
                    follower.wakeup.set()

    def _reread(self, records: dict[str, LeaseRecord]) -> None:
        before, self.records = self.records, records
        first, self.listed = not self.listed, True
        for name, followers in self.followers.items():
            record = records.get(name)
            old = before.get(name)
            if first or (record.resource_version if record else None) != (old.resource_version if old else None):
                for follower in followers:
                    follower.put(record)

    def _change(self, change: _Change) -> None:
        metadata = change.lease.metadata
        name = metadata.name if metadata is not None else None
        if not name:
            return
        record: LeaseRecord | None
        if change.type == "DELETED":
            self.records.pop(name, None)
            record = None
        else:
            record = self.records[name] = _record(change.lease)
        for follower in self.followers.get(name, ()):
            follower.put(record)


def _request_limits(max_in_flight: int) -> httpx.Limits:
    return httpx.Limits(max_connections=max_in_flight, max_keepalive_connections=max_in_flight, keepalive_expiry=30.0)


# -- one store per process and kubeconfig ---------------------------------------------------------


@dataclasses.dataclass
class _Shared:
    store: KubernetesLeaseStore
    users: int = 0


_SHARED: trio.lowlevel.RunVar[tuple[trio.Lock, dict[tuple[str | None, ...], _Shared]]] = trio.lowlevel.RunVar(
    "lease_guard_shared_stores"
)


def _config_source() -> tuple[str | None, ...]:
    """What KubeConfig.from_env() would read: the in-cluster service account, else $KUBECONFIG, else ~/.kube/config."""
    return (os.environ.get("KUBERNETES_SERVICE_HOST"), os.environ.get("KUBECONFIG"), os.path.expanduser("~"))


@contextlib.asynccontextmanager
async def shared_store() -> AsyncIterator[KubernetesLeaseStore]:
    """The process's KubernetesLeaseStore for the environment's cluster, shared by every user.

    One store per trio run and per configuration source (in-cluster service account,
    ``$KUBECONFIG``, ``~/.kube/config``): the first user makes it, reading the kubeconfig
    and setting up TLS in a worker thread (``trio.to_thread.run_sync``), so the event loop
    never blocks; later users wait for it and share it. It is closed when the last user
    exits (see :meth:`KubernetesLeaseStore.aclose`, which finishes even when cancelled).
    This is what ``leadership()`` and ``only_when_leading`` use when given no store.

    Example::

        async with shared_store() as store:
            async with leadership("my-operator", store=store):
                ...

    Raises:
        ConfigurationError: no client can be made from the environment (raised to every
            user that asks while it is so; the next one tries again).
    """
    try:
        lock, stores = _SHARED.get()
    except LookupError:
        lock, stores = trio.Lock(), {}
        _SHARED.set((lock, stores))
    key = _config_source()
    async with lock:
        shared = stores.get(key)
        if shared is None:
            store = await trio.to_thread.run_sync(KubernetesLeaseStore)
            shared = stores[key] = _Shared(store)
        shared.users += 1
    try:
        yield shared.store
    finally:
        shared.users -= 1
        if shared.users == 0:
            if stores.get(key) is shared:
                del stores[key]
            await shared.store.aclose()

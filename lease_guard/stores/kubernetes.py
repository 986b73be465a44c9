"""KubernetesLeaseStore: Leases (coordination.k8s.io/v1) through lightkube's AsyncClient, under trio.

lightkube runs on httpx, whose trio support covers plain requests and streaming, but two
of lightkube's paths assume asyncio; this module stays off both:

- its watch retry sleeps with ``asyncio.sleep``: we call ``watch`` with the default
  ``on_error_raise`` and do the retrying here, with ``trio.sleep``;
- its exec credential plugin auth (``users[].user.exec`` in a kubeconfig: EKS, GKE, AKS)
  runs the plugin with ``asyncio.create_subprocess_exec``: we swap in an auth that runs it
  with ``trio.run_process``.

Watches and requests use separate connection pools. On HTTP/1.1 each open watch holds a
connection for as long as it runs; in one shared pool (httpx's limit is 100 connections)
a process with many Leases would have its renewals queue behind watches for a free
connection, and every request would scan all of them. A store made from a kubeconfig or
the environment therefore makes two clients: one for requests, one (without a connection
limit) for watches.

Times are written as strings in the server's MicroTime layout (always six fraction
digits); lightkube's encoder would drop a zero fraction, which the server rejects.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import logging
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any, cast

import httpx2 as httpx
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
from ._kubeconfig import load_kubeconfig

logger = logging.getLogger("lease_guard")

#: Pause between attempts to re-open a failed watch: short, since followers rely on it.
WATCH_RETRY_DELAY = 0.5


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


def _make_trio_safe(client: AsyncClient) -> AsyncClient:
    http = client._client._client
    auth = http.auth
    if isinstance(auth, ExecAuth) and not isinstance(auth, _TrioExecAuth):
        http.auth = _TrioExecAuth(auth._exec)
    return client


#: Pool of the client for requests (GET, PUT, POST): renewals reuse warm connections.
REQUEST_LIMITS = httpx.Limits(max_connections=None, max_keepalive_connections=32, keepalive_expiry=30.0)
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


def _record(lease: Lease) -> LeaseRecord:
    metadata = lease.metadata
    assert metadata is not None
    assert metadata.name
    assert metadata.resourceVersion
    spec = lease.spec or K8sLeaseSpec()

    def text(value: Any) -> str | None:
        # lightkube decodes MicroTime into datetime; we keep the server's string form.
        if value is None:
            return None
        if isinstance(value, str):
            return value
        return cast(str, value.isoformat(timespec="microseconds").replace("+00:00", "Z"))

    return LeaseRecord(
        namespace=metadata.namespace or "",
        name=metadata.name,
        resource_version=metadata.resourceVersion,
        spec=LeaseSpec(
            holder=spec.holderIdentity,
            lease_duration_seconds=spec.leaseDurationSeconds,
            acquire_time=text(spec.acquireTime),
            renew_time=text(spec.renewTime),
            lease_transitions=spec.leaseTransitions,
        ),
    )


def _lease(namespace: str, name: str, spec: LeaseSpec, resource_version: str | None = None) -> Lease:
    return Lease(
        metadata=ObjectMeta(name=name, namespace=namespace, resourceVersion=resource_version),
        spec=K8sLeaseSpec(
            holderIdentity=spec.holder,
            leaseDurationSeconds=spec.lease_duration_seconds,
            # Strings in MicroTime layout, see the module docstring.
            acquireTime=cast(Any, spec.acquire_time),
            renewTime=cast(Any, spec.renew_time),
            leaseTransitions=spec.lease_transitions,
        ),
    )


class KubernetesLeaseStore:
    """Leases on a Kubernetes API server, through lightkube's AsyncClient.

    Creates the Lease when it is missing. Errors become library errors that say what to
    do: :class:`PermissionDenied` names the verb and the RBAC rule to add,
    :class:`NamespaceNotFound` the namespace to create; 429 and 5xx become
    :class:`StoreUnavailable`, which the campaign retries within its timing budget. The
    watch re-reads and resumes after stream timeouts, 410 Gone and transient failures.

    Example::

        client = lightkube.AsyncClient(lightkube.KubeConfig.from_file("~/.kube/config"), namespace="ops")
        async with leadership("my-operator", store=KubernetesLeaseStore(client)):
            ...

    Args:
        client: the client for requests; by default one made from the environment
            (in-cluster service account, else ``$KUBECONFIG`` or ``~/.kube/config``),
            closed by :meth:`aclose`. Its namespace is the default namespace of Leases.
        watch_client: the client for watches. By default: a second client made like the
            first when the store makes its own, else `client` itself. Each open watch holds
            one of its connections (lightkube speaks HTTP/1.1), and lightkube's clients
            allow 100; so when you pass your own `client` and one store serves more than
            about 50 Electors, pass a `watch_client` too, or renewals will wait for a
            free connection.

    Raises:
        ConfigurationError: no client was given and none can be made from the environment.
    """

    def __init__(self, client: AsyncClient | None = None, *, watch_client: AsyncClient | None = None) -> None:
        self._owned: list[AsyncClient] = []
        if client is None:
            config = _load_config(None, None)
            client = _make_client(config, None, REQUEST_LIMITS)
            self._owned.append(client)
            if watch_client is None:
                watch_client = _make_client(config, None, WATCH_LIMITS)
                self._owned.append(watch_client)
        self._client = _make_trio_safe(client)
        self._watch_client = _make_trio_safe(watch_client) if watch_client is not None else self._client

    @classmethod
    def from_kubeconfig(
        cls, path: str | None = None, *, context: str | None = None, namespace: str | None = None
    ) -> KubernetesLeaseStore:
        """A store for the cluster of a kubeconfig file, as kubectl's ``--kubeconfig``,
        ``--context`` and ``--namespace`` would pick it.

        Example::

            store = KubernetesLeaseStore.from_kubeconfig("~/.kube/config", context="prod", namespace="ops")

        Raises:
            ConfigurationError: the file is missing or not a valid kubeconfig, or has no such context.
        """
        config = _load_config(path, context)
        store = cls(
            _make_client(config, namespace, REQUEST_LIMITS), watch_client=_make_client(config, namespace, WATCH_LIMITS)
        )
        store._owned = [store._client, store._watch_client]
        return store

    @property
    def default_namespace(self) -> str:
        """The client's namespace: the in-cluster service account's, else the kubeconfig context's, else "default"."""
        return str(self._client.namespace or "default")

    async def aclose(self) -> None:
        """Close the clients this store made."""
        for client in self._owned:
            await client.close()

    async def get(self, namespace: str, name: str) -> LeaseRecord | None:
        """Read the Lease; None if it does not exist."""
        try:
            return _record(await self._client.get(Lease, name, namespace=namespace))
        except (httpx.HTTPError, OSError) as exc:
            failure = translate(exc, verb="get", namespace=namespace, name=name)
            if isinstance(failure, LeaseNotFound):
                return None
            raise failure from exc

    async def create(self, namespace: str, name: str, spec: LeaseSpec) -> LeaseRecord:
        """Create the Lease; LeaseConflict if it exists."""
        try:
            return _record(await self._client.create(_lease(namespace, name, spec)))
        except (httpx.HTTPError, OSError) as exc:
            raise translate(exc, verb="create", namespace=namespace, name=name) from exc

    async def update(self, current: LeaseRecord, spec: LeaseSpec) -> LeaseRecord:
        """Replace the Lease if it still has ``current.resource_version`` (a PUT with a precondition)."""
        lease = _lease(current.namespace, current.name, spec, current.resource_version)
        try:
            return _record(await self._client.replace(lease))
        except (httpx.HTTPError, OSError) as exc:
            raise translate(exc, verb="update", namespace=current.namespace, name=current.name) from exc

    async def record_event(self, namespace: str, name: str, *, reason: str, message: str, identity: str) -> None:
        """Create a core/v1 Event about the Lease, as client-go's leader election does.

        Needs ``create`` on ``events`` in the namespace (the optional Role in
        examples/deploy/rbac.yaml).
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
            await self._client.create(event)
        except (httpx.HTTPError, OSError) as exc:
            failure = translate(exc, verb="create", namespace=namespace, name=name)
            if isinstance(failure, PermissionDenied):
                raise PermissionDenied(
                    f"cannot record a Kubernetes Event about lease {namespace}/{name}: grant create on events "
                    "(see the lease-guard-events Role in examples/deploy/rbac.yaml), or turn record_events off"
                ) from exc
            raise failure from exc

    async def watch(self, namespace: str, name: str) -> AsyncIterator[LeaseRecord | None]:
        """The Lease now, then each change; resumes across timeouts, 410 Gone and transient errors."""
        record = await self.get(namespace, name)
        yield record
        version = record.resource_version if record else None
        while True:
            # lightkube's watch re-opens a stream the server ended (its watch timeout) from the
            # last version it saw; we only come back here on a failure.
            events: AsyncGenerator[tuple[str, Lease]] = self._watch_client.watch(  # type: ignore[assignment]
                Lease, namespace=namespace, fields={"metadata.name": name}, resource_version=version
            )
            try:
                async with contextlib.aclosing(events):
                    async for kind, lease in events:
                        if kind == "DELETED":
                            yield None
                        elif kind in ("ADDED", "MODIFIED"):
                            current = _record(lease)
                            version = current.resource_version
                            yield current
            except (httpx.HTTPError, OSError, trio.BrokenResourceError) as exc:
                failure = translate(exc, verb="watch", namespace=namespace, name=name)
                if isinstance(exc, httpx.HTTPStatusError) and _status(exc)[0] == 410:
                    logger.debug("lease %s/%s: watch expired (410 Gone); re-reading", namespace, name)
                elif isinstance(failure, (PermissionDenied, NamespaceNotFound)):
                    raise failure from exc
                else:
                    logger.info("lease %s/%s: watch interrupted, resuming: %s", namespace, name, failure)
                    await trio.sleep(WATCH_RETRY_DELAY)
            # Re-read, so nothing that happened while the watch was down is missed.
            while True:
                try:
                    record = await self.get(namespace, name)
                    break
                except StoreUnavailable as exc:
                    logger.info("lease %s/%s: cannot re-read yet: %s", namespace, name, exc)
                    await trio.sleep(WATCH_RETRY_DELAY)
            version = record.resource_version if record else None
            yield record


@contextlib.asynccontextmanager
async def shared_store() -> AsyncIterator[KubernetesLeaseStore]:
    """The default store, made from the environment."""
    store = KubernetesLeaseStore()
    try:
        yield store
    finally:
        await store.aclose()

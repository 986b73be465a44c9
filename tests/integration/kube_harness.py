"""A real etcd + kube-apiserver for the lease_guard integration tests.

The server is the Go program in tests/apiserver/ (built once by
tests/apiserver/build.sh into <repo>/.cache/apiserver/<hash>/harness). It runs
as two processes of the same binary, so that the API server can be stopped and
restarted while etcd keeps its data:

    harness etcd --data-dir D --listen-client URL --listen-peer URL
    harness apiserver <kube-apiserver flags>

Everything listens on 127.0.0.1 only, on free ports, with TLS certificates
generated here. The least-privilege identity gets exactly the RBAC of
examples/deploy/rbac.yaml.

Environment:
    LEASE_GUARD_KUBECONFIG  use this existing cluster (as admin) instead of
                            building/starting one; stop/start are unavailable.
    LEASE_GUARD_HARNESS_BIN use this prebuilt harness binary.
    CI                      if set, a failed build fails instead of skipping.
"""

from __future__ import annotations

import atexit
import base64
import concurrent.futures
import contextlib
import datetime
import ipaddress
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Generator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from lightkube import ApiError, AsyncClient, Client, KubeConfig
from lightkube.codecs import load_all_yaml
from lightkube.models.authentication_v1 import TokenRequestSpec
from lightkube.models.authorization_v1 import ResourceAttributes, SubjectAccessReviewSpec
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.models.rbac_v1 import PolicyRule, RoleRef, Subject
from lightkube.resources.authorization_v1 import SubjectAccessReview
from lightkube.resources.core_v1 import Namespace, ServiceAccount
from lightkube.resources.rbac_authorization_v1 import Role, RoleBinding

REPO = Path(__file__).resolve().parents[2]
BUILD_SCRIPT = REPO / "tests" / "apiserver" / "build.sh"
RBAC_YAML = REPO / "examples" / "deploy" / "rbac.yaml"
NAMESPACE = "lease-guard-test"
SERVICE_ACCOUNT = "lease-guard"
FIELD_MANAGER = "lease-guard-tests"
TOKEN_SECONDS = 24 * 3600
READY_TIMEOUT = 120.0  # generous for slow CI; a warm start takes a few seconds

ENABLE_HINT = (
    "install Go >= 1.26 with access to the Go module proxy (the test harness "
    "builds etcd + kube-apiserver from tests/apiserver/), or set "
    "LEASE_GUARD_KUBECONFIG to the kubeconfig of an existing cluster (admin)"
)


class HarnessUnavailable(Exception):
    """The harness cannot run here (reason in the message): skip the tests."""


class HarnessBuildError(Exception):
    """`go` is there but the build failed (message: tail of the build output)."""


# --------------------------------------------------------------------------
# RBAC file


def load_rbac() -> list[Any]:
    """Objects of examples/deploy/rbac.yaml (no namespace set)."""
    with RBAC_YAML.open() as f:
        return load_all_yaml(f)


def lease_name_from_rbac(objs: Sequence[Any] | None = None) -> str:
    """The one Lease name that Role `lease-guard` grants in rbac.yaml."""
    for obj in objs if objs is not None else load_rbac():
        if isinstance(obj, Role) and obj.metadata is not None and obj.metadata.name == SERVICE_ACCOUNT:
            names = {n for r in obj.rules or () if "leases" in (r.resources or ()) for n in r.resourceNames or ()}
            if len(names) == 1:
                return names.pop()
            raise ValueError(f"{RBAC_YAML}: expected one lease resourceName, found {names}")
    raise ValueError(f"{RBAC_YAML}: no Role {SERVICE_ACCOUNT!r}")


# --------------------------------------------------------------------------
# Build


def build_harness() -> Path:
    """Build (or reuse) the harness binary and return its path."""
    env_bin = os.environ.get("LEASE_GUARD_HARNESS_BIN")
    if env_bin:
        return Path(env_bin)
    if shutil.which("go") is None:
        raise HarnessUnavailable(f"'go' not found on PATH: {ENABLE_HINT}")
    proc = subprocess.run(
        ["bash", str(BUILD_SCRIPT)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        stdin=subprocess.DEVNULL,
    )
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines or not Path(lines[-1]).is_file():
        tail = "\n".join(lines[-40:])
        raise HarnessBuildError(f"{BUILD_SCRIPT} failed (exit {proc.returncode}):\n{tail}")
    return Path(lines[-1])


# --------------------------------------------------------------------------
# TLS


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    # "EC PRIVATE KEY" (SEC1): the format kube-apiserver's key file readers accept.
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
    )
    path.chmod(0o600)


def _cert(
    subject: x509.Name,
    key: ec.EllipticCurvePrivateKey,
    issuer: x509.Name,
    issuer_key: ec.EllipticCurvePrivateKey,
    *,
    ca: bool,
    ext: Sequence[x509.ExtensionType] = (),
) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    b = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    for e in ext:
        b = b.add_extension(e, critical=False)
    return b.sign(issuer_key, hashes.SHA256())


@dataclass
class Certs:
    ca: Path
    serving_cert: Path
    serving_key: Path
    admin_cert: Path
    admin_key: Path
    sa_key: Path  # service account token signing key (private)
    sa_pub: Path  # its public key, to verify tokens


def generate_certs(d: Path) -> Certs:
    """CA, serving cert for 127.0.0.1/localhost, admin client cert (system:masters)."""
    d.mkdir(parents=True, exist_ok=True)

    def name(cn: str, org: str | None = None) -> x509.Name:
        attrs = [x509.NameAttribute(NameOID.COMMON_NAME, cn)]
        if org:
            attrs.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, org))
        return x509.Name(attrs)

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = name("lease-guard-test-ca")
    ca = _cert(ca_name, ca_key, ca_name, ca_key, ca=True)

    srv_key = ec.generate_private_key(ec.SECP256R1())
    srv = _cert(
        name("kube-apiserver"),
        srv_key,
        ca_name,
        ca_key,
        ca=False,
        ext=[
            x509.SubjectAlternativeName(
                [
                    x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                    x509.DNSName("localhost"),
                    x509.DNSName("kubernetes.default.svc"),
                ]
            ),
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]),
        ],
    )
    adm_key = ec.generate_private_key(ec.SECP256R1())
    adm = _cert(
        name("lease-guard-admin", "system:masters"),
        adm_key,
        ca_name,
        ca_key,
        ca=False,
        ext=[x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH])],
    )
    certs = Certs(
        d / "ca.crt",
        d / "apiserver.crt",
        d / "apiserver.key",
        d / "admin.crt",
        d / "admin.key",
        d / "sa.key",
        d / "sa.pub",
    )
    pem = serialization.Encoding.PEM
    certs.ca.write_bytes(ca.public_bytes(pem))
    certs.serving_cert.write_bytes(srv.public_bytes(pem))
    certs.admin_cert.write_bytes(adm.public_bytes(pem))
    _write_key(certs.serving_key, srv_key)
    _write_key(certs.admin_key, adm_key)
    sa_key = ec.generate_private_key(ec.SECP256R1())
    _write_key(certs.sa_key, sa_key)
    certs.sa_pub.write_bytes(sa_key.public_key().public_bytes(pem, serialization.PublicFormat.SubjectPublicKeyInfo))
    return certs


# --------------------------------------------------------------------------
# Kubeconfig files


def _b64(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode()


def write_kubeconfig(path: Path, cluster: Mapping[str, object], user: Mapping[str, object], namespace: str) -> Path:
    """Write a one-context kubeconfig; `cluster` / `user` are kubeconfig dicts.

    Written as JSON, which is YAML too: kubectl and lightkube read it as usual."""
    conf = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "harness", "cluster": cluster}],
        "users": [{"name": "harness", "user": user}],
        "contexts": [{"name": "harness", "context": {"cluster": "harness", "user": "harness", "namespace": namespace}}],
        "current-context": "harness",
    }
    path.write_text(json.dumps(conf, indent=2) + "\n")
    path.chmod(0o600)
    return path


def _cluster_entry(admin_kubeconfig: Path) -> dict[str, str | bool]:
    """Cluster dict (server + CA, embedded) of the current context of a kubeconfig."""
    sc = KubeConfig.from_file(admin_kubeconfig).get()
    if sc is None:
        raise ValueError(f"{admin_kubeconfig}: no current context")
    c = sc.cluster
    entry: dict[str, str | bool] = {"server": c.server}
    if c.certificate_auth_data:
        entry["certificate-authority-data"] = c.certificate_auth_data
    elif c.certificate_auth:
        entry["certificate-authority-data"] = _b64(Path(sc.abs_file(c.certificate_auth)))
    if c.insecure:
        entry["insecure-skip-tls-verify"] = True
    return entry


# --------------------------------------------------------------------------
# Processes

_LIVE: set[_Proc] = set()


def _kill_live() -> None:
    for p in list(_LIVE):
        p.stop(timeout=5)


atexit.register(_kill_live)


def _pdeathsig() -> None:  # pragma: no cover - runs in the child
    """Kill the child if the test process dies without cleaning up (Linux).

    The kernel sends the signal when the *thread* that forked the child exits,
    so children are only ever spawned from _SPAWNER's one long-lived thread:
    a child spawned from e.g. a trio.to_thread worker would be killed as soon
    as that worker thread idles out."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except Exception:
        pass


_SPAWNER = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="kube-harness-spawner")


class _Proc:
    """A child process in its own process group, output to a log file."""

    def __init__(self, name: str, argv: list[str], log: Path):
        self.name, self.argv, self.log = name, argv, log
        self.popen: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        if self.popen is not None:
            self.stop(timeout=5)  # reap a process that died on its own
        with self.log.open("ab") as out:
            self.popen = _SPAWNER.submit(
                subprocess.Popen,
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_pdeathsig if sys.platform == "linux" else None,
            ).result()
        _LIVE.add(self)

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def tail(self, n: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM the process group, SIGKILL it after `timeout` seconds."""
        p = self.popen
        if p is None:
            return
        try:
            for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 10.0)):
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(p.pid, sig)
                try:
                    p.wait(wait)
                    break
                except subprocess.TimeoutExpired:
                    continue
            # Reap anything left in the group (nothing expected).
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(p.pid, signal.SIGKILL)
        finally:
            self.popen = None
            _LIVE.discard(self)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _wait(what: str, proc: _Proc, check: Callable[[], bool], timeout: float) -> float:
    """Poll check() until true; fail early if proc died. Returns seconds waited."""
    t0 = time.monotonic()
    last = "no attempt"
    while time.monotonic() - t0 < timeout:
        if not proc.alive():
            raise RuntimeError(f"{proc.name} exited while waiting for {what}:\n{proc.tail()}")
        try:
            if check():
                return time.monotonic() - t0
            last = "not ready"
        except (OSError, urllib.error.URLError) as e:
            last = repr(e)
        time.sleep(0.1)
    raise RuntimeError(f"timeout ({timeout}s) waiting for {what} ({last}):\n{proc.tail()}")


class LocalCluster:
    """etcd + kube-apiserver processes of the harness binary in `workdir`."""

    def __init__(self, binary: Path, workdir: Path, extra_apiserver_args: Sequence[str] = ()):
        self.binary, self.workdir = binary, workdir
        self.certs = generate_certs(workdir / "pki")
        self.etcd_url = f"http://127.0.0.1:{free_port()}"
        self.port = free_port()
        self.url = f"https://127.0.0.1:{self.port}"
        self.etcd = _Proc(
            "etcd",
            [
                str(binary),
                "etcd",
                "--data-dir",
                str(workdir / "etcd"),
                "--listen-client",
                self.etcd_url,
                "--listen-peer",
                f"http://127.0.0.1:{free_port()}",
                "--unsafe-no-fsync",
            ],
            workdir / "etcd.log",
        )
        c = self.certs
        self.apiserver = _Proc(
            "kube-apiserver",
            [
                str(binary),
                "apiserver",
                "--etcd-servers",
                self.etcd_url,
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                f"--secure-port={self.port}",
                "--authorization-mode=RBAC",
                f"--client-ca-file={c.ca}",
                f"--tls-cert-file={c.serving_cert}",
                f"--tls-private-key-file={c.serving_key}",
                "--service-account-issuer=https://kubernetes.default.svc",
                f"--service-account-key-file={c.sa_pub}",
                f"--service-account-signing-key-file={c.sa_key}",
                "--service-cluster-ip-range=10.0.0.0/24",
                # No controller-manager/nodes here: skip what only they would use.
                "--endpoint-reconciler-type=none",
                "--enable-priority-and-fairness=false",
                "--profiling=false",
                # Close every watch after 5-10 s (default: 30-60 min), so the tests exercise
                # resuming after server-side watch timeouts all the time.
                "--min-request-timeout=5",
                # Later flags win: benchmarks pass an audit policy and a longer watch timeout.
                *extra_apiserver_args,
            ],
            workdir / "apiserver.log",
        )
        ctx = ssl.create_default_context(cafile=str(c.ca))
        ctx.load_cert_chain(str(c.admin_cert), str(c.admin_key))
        self._opener = urllib.request.build_opener(
            urllib.request.ProxyHandler({}), urllib.request.HTTPSHandler(context=ctx)
        )
        self.timings: dict[str, float] = {}

    def _ok(self, url: str) -> bool:
        with self._opener.open(url, timeout=5) as r:
            status: int = r.status
            return status == 200

    def start_etcd(self) -> None:
        self.etcd.start()
        self.timings["etcd_ready"] = _wait(
            "etcd /health", self.etcd, lambda: self._ok(self.etcd_url + "/health"), READY_TIMEOUT
        )

    def start_apiserver(self) -> None:
        if self.apiserver.alive():
            return
        self.apiserver.start()
        self.timings["apiserver_ready"] = _wait(
            "kube-apiserver /readyz", self.apiserver, lambda: self._ok(self.url + "/readyz"), READY_TIMEOUT
        )

    def stop_apiserver(self, timeout: float = 30.0) -> None:
        self.apiserver.stop(timeout)

    def close(self) -> None:
        self.apiserver.stop(15)
        self.etcd.stop(15)


# --------------------------------------------------------------------------
# Fixture object


@dataclass
class KubeServer:
    admin_kubeconfig: Path
    user_kubeconfig: Path
    namespace: str
    lease_name: str
    url: str
    ca_path: Path | None
    workdir: Path
    local: LocalCluster | None = field(default=None, repr=False)

    # Clients --------------------------------------------------------------

    def client_for(self, kubeconfig: Path, **kwargs: Any) -> AsyncClient:
        """An AsyncClient (works under trio) for a kubeconfig; caller closes it."""
        # Never send the local server's 127.0.0.1 traffic through an env proxy.
        kwargs.setdefault("trust_env", self.local is None)
        return AsyncClient(KubeConfig.from_file(kubeconfig), **kwargs)

    def admin_client(self, **kwargs: Any) -> AsyncClient:
        return self.client_for(self.admin_kubeconfig, **kwargs)

    def user_client(self, **kwargs: Any) -> AsyncClient:
        return self.client_for(self.user_kubeconfig, **kwargs)

    def sync_admin_client(self) -> Client:
        return Client(
            KubeConfig.from_file(self.admin_kubeconfig),
            namespace=self.namespace,
            field_manager=FIELD_MANAGER,
            trust_env=self.local is None,
        )

    # API server restarts ---------------------------------------------------

    @property
    def can_restart(self) -> bool:
        return self.local is not None

    def _need_local(self) -> LocalCluster:
        if self.local is None:
            import pytest

            pytest.skip(
                "stop/start of the API server needs the local harness (unavailable with LEASE_GUARD_KUBECONFIG)"
            )
        return self.local

    def stop_apiserver(self, timeout: float = 30.0) -> None:
        """SIGTERM kube-apiserver, SIGKILL after `timeout`; etcd keeps running."""
        self._need_local().stop_apiserver(timeout)

    def start_apiserver(self) -> None:
        """Start kube-apiserver again (same port and etcd) and wait for /readyz."""
        self._need_local().start_apiserver()

    # Extra identities --------------------------------------------------------

    def kubeconfig_for_rules(self, name: str, rules: Sequence[PolicyRule], namespace: str | None = None) -> Path:
        """ServiceAccount + Role(rules) + RoleBinding `name`; returns its kubeconfig.

        Blocking (sync client); fine to call from a trio test."""
        ns = namespace or self.namespace
        with self.sync_admin_client() as c:
            _apply(c, ServiceAccount(metadata=ObjectMeta(name=name)), ns)
            _apply(c, Role(metadata=ObjectMeta(name=name), rules=list(rules)), ns)
            _apply(
                c,
                RoleBinding(
                    metadata=ObjectMeta(name=name),
                    roleRef=RoleRef(apiGroup="rbac.authorization.k8s.io", kind="Role", name=name),
                    subjects=[Subject(kind="ServiceAccount", name=name, namespace=ns)],
                ),
                ns,
            )
            token = _request_token(c, name, ns)
            _wait_rbac(c, ns, name, rules)
        return write_kubeconfig(
            self.workdir / f"{name}.kubeconfig", _cluster_entry(self.admin_kubeconfig), {"token": token}, ns
        )


def _apply(c: Client, obj: Any, namespace: str) -> None:
    """Server-side apply (forced) of a namespaced object into `namespace`."""
    # lightkube's Client.apply overload for namespaced resources omits the `namespace`
    # keyword that its implementation accepts (and the other methods' overloads have).
    c.apply(obj, namespace=namespace, force=True)  # type: ignore[call-overload]


def _pick(values: Sequence[str] | None, default: str | None) -> str | None:
    """First non-wildcard entry of a PolicyRule list, else `default`."""
    return next((v for v in values or () if v != "*"), default)


def _wait_rbac(c: Client, ns: str, sa: str, rules: Sequence[PolicyRule], timeout: float = 30.0) -> None:
    """Wait until the authorizer (informer-fed, so slightly behind) applies the
    first resource rule to the ServiceAccount, so tests don't see stale 403s."""
    rule = next((r for r in rules if r.resources and r.verbs), None)
    if rule is None:
        return
    sar = SubjectAccessReview(
        metadata=ObjectMeta(),
        spec=SubjectAccessReviewSpec(
            user=f"system:serviceaccount:{ns}:{sa}",
            groups=["system:serviceaccounts", f"system:serviceaccounts:{ns}", "system:authenticated"],
            resourceAttributes=ResourceAttributes(
                namespace=ns,
                verb=_pick(rule.verbs, "get"),
                group=_pick(rule.apiGroups, ""),
                resource=_pick(rule.resources, "leases"),
                name=_pick(rule.resourceNames, None),
            ),
        ),
    )
    deadline = time.monotonic() + timeout
    while True:
        # A review without a status is an answer we can't trust: not allowed (yet).
        status = c.create(sar).status
        if status is not None and status.allowed:
            return
        if time.monotonic() > deadline:
            detail = "no status in the SubjectAccessReview" if status is None else f"reason: {status.reason!r}"
            raise RuntimeError(f"RBAC for {ns}/{sa} not effective after {timeout}s ({detail})")
        time.sleep(0.05)


def _request_token(c: Client, sa: str, ns: str) -> str:
    tr = c.create(
        ServiceAccount.Token(
            metadata=ObjectMeta(), spec=TokenRequestSpec(audiences=[], expirationSeconds=TOKEN_SECONDS)
        ),
        sa,
        namespace=ns,
    )
    if tr.status is None or not tr.status.token:
        raise RuntimeError(f"TokenRequest for ServiceAccount {ns}/{sa} returned no token")
    return tr.status.token


def _setup_identities(server: KubeServer) -> bool:
    """Namespace, rbac.yaml objects, token kubeconfig for the lease-guard SA.

    Returns whether the namespace was created (False: it existed)."""
    created = True
    with server.sync_admin_client() as c:
        try:
            c.create(Namespace(metadata=ObjectMeta(name=server.namespace)))
        except ApiError as e:
            if e.status.code != 409:
                raise
            created = False
        rbac = load_rbac()
        for obj in rbac:
            _apply(c, obj, server.namespace)
        token = _request_token(c, SERVICE_ACCOUNT, server.namespace)
        for obj in rbac:
            if isinstance(obj, Role):
                _wait_rbac(c, server.namespace, SERVICE_ACCOUNT, obj.rules or ())
    write_kubeconfig(
        server.user_kubeconfig, _cluster_entry(server.admin_kubeconfig), {"token": token}, server.namespace
    )
    return created


def kube_server(extra_apiserver_args: Sequence[str] = ()) -> Generator[KubeServer, None, None]:
    """Generator behind the session fixture: start (or attach), yield, tear down.

    `extra_apiserver_args` are appended to kube-apiserver's command line (local harness only;
    later flags override earlier ones, e.g. ``--min-request-timeout=1800``).
    Raises HarnessUnavailable (skip) or HarnessBuildError (skip, or fail in CI)."""
    workdir = Path(tempfile.mkdtemp(prefix="lease-guard-kube-"))
    local: LocalCluster | None = None
    server: KubeServer | None = None
    created_ns = False
    try:
        external = os.environ.get("LEASE_GUARD_KUBECONFIG")
        if external:
            admin = Path(external).expanduser().resolve()
            cluster = _cluster_entry(admin)
            ca_path = None
            ca_data = cluster.get("certificate-authority-data")
            if isinstance(ca_data, str):
                ca_path = workdir / "ca.crt"
                ca_path.write_bytes(base64.b64decode(ca_data))
            server = KubeServer(
                admin_kubeconfig=admin,
                user_kubeconfig=workdir / "user.kubeconfig",
                namespace=NAMESPACE,
                lease_name=lease_name_from_rbac(),
                url=str(cluster["server"]),
                ca_path=ca_path,
                workdir=workdir,
            )
        else:
            binary = build_harness()
            local = LocalCluster(binary, workdir, extra_apiserver_args)
            local.start_etcd()
            local.start_apiserver()
            certs = local.certs
            admin = write_kubeconfig(
                workdir / "admin.kubeconfig",
                {"server": local.url, "certificate-authority-data": _b64(certs.ca)},
                {"client-certificate-data": _b64(certs.admin_cert), "client-key-data": _b64(certs.admin_key)},
                NAMESPACE,
            )
            server = KubeServer(
                admin_kubeconfig=admin,
                user_kubeconfig=workdir / "user.kubeconfig",
                namespace=NAMESPACE,
                lease_name=lease_name_from_rbac(),
                url=local.url,
                ca_path=certs.ca,
                workdir=workdir,
                local=local,
            )
        created_ns = _setup_identities(server)
        yield server
    finally:
        if local is not None:
            local.close()
        elif server is not None and created_ns:
            # Existing cluster: remove what we created (best effort).
            with contextlib.suppress(Exception), server.sync_admin_client() as client:
                client.delete(Namespace, server.namespace)
        shutil.rmtree(workdir, ignore_errors=True)


# --------------------------------------------------------------------------
# python tests/integration/kube_harness.py: a server to try lease_guard against


def main() -> int:
    """Start the harness, print how to use it, serve until Ctrl-C / SIGTERM, tear down."""

    def interrupt(signum: int, frame: FrameType | None) -> None:
        # Once: a second Ctrl-C must not cut the teardown short.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, interrupt)
    signal.signal(signal.SIGTERM, interrupt)
    print("starting etcd + kube-apiserver (the first run builds them, which takes a while) ...", flush=True)
    try:
        with contextlib.contextmanager(kube_server)() as kube:
            admin, user, ns = kube.admin_kubeconfig, kube.user_kubeconfig, kube.namespace
            print(
                f"""
kube-apiserver               {kube.url}   (work folder {kube.workdir})
admin kubeconfig             {admin}
least-privilege kubeconfig   {user}   (examples/deploy/rbac.yaml)
namespace                    {ns}
lease                        {kube.lease_name}

Run the demo, and watch the Lease from another terminal once the demo has created it:
  python -m lease_guard.demo --kubeconfig {user} -n {ns}
  kubectl --kubeconfig {admin} -n {ns} get lease {kube.lease_name} -w

Ctrl-C (or SIGTERM) stops the server and removes {kube.workdir}.""",
                flush=True,
            )
            while True:
                time.sleep(3600)
    except KeyboardInterrupt:
        print("stopped", flush=True)
    except (HarnessUnavailable, HarnessBuildError) as e:
        print(f"error: {e}\n({ENABLE_HINT})", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

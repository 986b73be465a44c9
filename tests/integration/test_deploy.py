"""examples/deploy/ against the real API server: the manifests are accepted, and the
graceful-shutdown recipe hands over within tens of milliseconds with least privilege."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import pytest
from lightkube import ApiError, codecs
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.apps_v1 import Deployment
from lightkube.resources.core_v1 import Namespace, Pod
from lightkube.resources.policy_v1 import PodDisruptionBudget

DEPLOY = Path(__file__).resolve().parents[2] / "examples" / "deploy"

if TYPE_CHECKING:  # mypy names the file by its path (tests/ is a package); pytest imports it as top-level
    from tests.integration import kube_harness
    from tests.integration.kube_harness import KubeServer
else:
    import kube_harness  # on sys.path: conftest.py puts it there

RESTRICTED = {
    "pod-security.kubernetes.io/enforce": "restricted",
    "pod-security.kubernetes.io/enforce-version": "latest",
}


def test_the_manifests_are_accepted_in_a_namespace_that_enforces_pod_security_restricted(kube: KubeServer) -> None:
    namespace = f"lease-guard-restricted-{uuid.uuid4().hex[:6]}"
    with kube.sync_admin_client() as client, open(DEPLOY / "deployment.yaml") as manifest:
        client.create(Namespace(metadata=ObjectMeta(name=namespace, labels=RESTRICTED)))
        try:
            for obj in kube_harness.load_rbac():
                kube_harness._apply(client, obj, namespace)
            objects = codecs.load_all_yaml(manifest)
            assert sorted(type(obj).__name__ for obj in objects) == ["Deployment", "PodDisruptionBudget"]
            for obj in objects:
                assert obj.metadata is not None
                obj.metadata.namespace = namespace
                client.create(obj)
            deployment = client.get(Deployment, "lease-guard-demo", namespace=namespace)
            assert deployment.spec is not None
            template = deployment.spec.template
            assert template.spec is not None
            assert template.spec.serviceAccountName == "lease-guard"
            pdb = client.get(PodDisruptionBudget, "lease-guard-demo", namespace=namespace)
            assert pdb.spec is not None and pdb.spec.maxUnavailable == 1
            # This API server runs no controllers, so no ReplicaSet makes the Deployment's pods:
            # create one from its template, as the ReplicaSet would (Pod Security admits Pods).
            assert template.metadata is not None
            pod = Pod(
                metadata=ObjectMeta(name="lease-guard-demo-0", labels=template.metadata.labels), spec=template.spec
            )
            client.create(pod, namespace=namespace, dry_run=True)
            # The control: without its security context the same pod is refused there.
            template.spec.securityContext = None
            for container in template.spec.containers:
                container.securityContext = None
            with pytest.raises(ApiError, match='violates PodSecurity "restricted:latest"'):
                client.create(pod, namespace=namespace, dry_run=True)
        finally:
            client.delete(Namespace, namespace)


def start_replica(kube: KubeServer, identity: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [
            sys.executable,
            str(DEPLOY / "app.py"),
            "--kubeconfig",
            str(kube.user_kubeconfig),
            "-n",
            kube.namespace,
            "--lease",
            kube.lease_name,
            "--identity",
            identity,
            "--health-port",
            "0",
        ],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


def next_event(stream: IO[str] | None, *wanted: str) -> dict[str, Any]:
    assert stream is not None
    for line in stream:
        event: dict[str, Any] = json.loads(line)
        if event["event"] in wanted:
            return event
    raise AssertionError(f"the replica exited before printing {wanted}")


def test_sigterm_hands_over_within_tens_of_milliseconds(kube: KubeServer) -> None:
    first = start_replica(kube, "replica-a")
    second = None
    try:
        assert next_event(first.stdout, "started")["term"] >= 0
        second = start_replica(kube, "replica-b")
        next_event(second.stdout, "ready")
        first.send_signal(signal.SIGTERM)
        stopped = next_event(first.stdout, "stopped")
        taken = next_event(second.stdout, "started")
        assert first.wait(timeout=30) == 0
        handover = taken["t"] - stopped["t"]
        print(f"handover after SIGTERM: {handover * 1000:.1f} ms")
        assert 0 <= handover < 0.5, handover
    finally:
        for process in (first, second):
            if process is not None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    process.kill()

"""examples/deploy/ against the real API server: the manifests are accepted, and the
graceful-shutdown recipe hands over within tens of milliseconds with least privilege."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from lightkube import codecs
from lightkube.resources.apps_v1 import Deployment

DEPLOY = Path(__file__).resolve().parents[2] / "examples" / "deploy"

if TYPE_CHECKING:
    from tests.integration.kube_harness import KubeServer


def test_the_deployment_manifest_is_accepted_and_uses_the_shared_service_account(kube: KubeServer) -> None:
    with kube.sync_admin_client() as client, open(DEPLOY / "deployment.yaml") as manifest:
        for obj in codecs.load_all_yaml(manifest):
            assert isinstance(obj, Deployment)
            obj.metadata.namespace = kube.namespace
            created = client.create(obj, dry_run=True)
            assert created.spec is not None
            assert created.spec.template.spec is not None
            assert created.spec.template.spec.serviceAccountName == "lease-guard"


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

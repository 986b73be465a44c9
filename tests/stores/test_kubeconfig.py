"""Kubeconfig files as kubectl reads them: errors that name the file, and $KUBECONFIG lists merged."""

from __future__ import annotations

import doctest
import os
from pathlib import Path

import pytest

from lease_guard import ConfigurationError, KubernetesLeaseStore
from lease_guard.stores import _kubeconfig
from lease_guard.stores._kubeconfig import load_kubeconfig

CLUSTER = """
clusters:
- name: c
  cluster: {server: "https://127.0.0.1:6443", certificate-authority: ca.crt}
users:
- name: u
  user: {token: secret}
"""
CONTEXT = """
current-context: ops
contexts:
- name: ops
  context: {cluster: c, user: u, namespace: ops}
"""


@pytest.fixture(autouse=True)
def _no_in_cluster_config(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)


def test_doctests() -> None:
    assert doctest.testmod(_kubeconfig).failed == 0


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        ("", "is empty"),
        ("   \n# nothing but a comment\n", "is empty"),
        ("clusters: [\n  - oops: {", "is not valid YAML at line"),
        ("- just\n- a list\n", "is not a kubeconfig"),
        ("clusters: 3\ncontexts: []\n", "clusters must be a list"),
        ("apiVersion: v1\nkind: Config\n", "defines no cluster or no context"),
    ],
)
def test_a_bad_kubeconfig_is_one_sentence_naming_the_file(tmp_path: Path, content: str, problem: str) -> None:
    path = tmp_path / "config"
    path.write_text(content)
    with pytest.raises(ConfigurationError, match=problem) as raised:
        KubernetesLeaseStore.from_kubeconfig(str(path))
    message = str(raised.value)
    assert str(path) in message
    assert "\n" not in message
    assert "MemoryLeaseStore" not in message


def test_a_missing_kubeconfig_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="does not exist"):
        KubernetesLeaseStore.from_kubeconfig(str(tmp_path / "missing"))


def test_kubeconfig_list_is_merged_as_kubectl_does(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "clusters").mkdir()
    (tmp_path / "clusters" / "config").write_text(CLUSTER)
    (tmp_path / "context").write_text(CONTEXT)
    listed = [tmp_path / "context", tmp_path / "not-there", tmp_path / "clusters" / "config"]
    monkeypatch.setenv("KUBECONFIG", os.pathsep.join(str(p) for p in listed))
    single = load_kubeconfig().get()
    assert single is not None
    assert (single.context_name, single.namespace, single.cluster.server) == ("ops", "ops", "https://127.0.0.1:6443")
    assert single.user is not None and single.user.token == "secret"
    # relative paths are relative to the file that holds them, not to the first file
    assert single.cluster.certificate_auth == str(tmp_path / "clusters" / "ca.crt")


def test_first_file_to_set_a_name_wins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "a").write_text(CLUSTER + CONTEXT)
    (tmp_path / "b").write_text(
        CLUSTER.replace("6443", "9999") + CONTEXT.replace("current-context: ops", "current-context: other")
    )
    monkeypatch.setenv("KUBECONFIG", f"{tmp_path / 'a'}{os.pathsep}{tmp_path / 'b'}")
    single = load_kubeconfig().get()
    assert single is not None
    assert (single.context_name, single.cluster.server) == ("ops", "https://127.0.0.1:6443")


def test_no_kubeconfig_at_all_says_where_it_looked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "nothing-here"))
    with pytest.raises(ConfigurationError, match=r"no kubeconfig found .*nothing-here"):
        KubernetesLeaseStore.from_kubeconfig()

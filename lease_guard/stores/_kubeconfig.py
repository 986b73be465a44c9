"""Reading kubeconfig files as kubectl does, with errors that name the file and what is wrong.

kubectl's rules, followed here: ``$KUBECONFIG`` is a list of files separated by ``:``
(``;`` on Windows); files that do not exist are skipped; the files are merged, and for
every cluster, user and context name, and for ``current-context``, the first file that
sets it wins. Relative paths inside a file (certificates, keys, token files) are relative
to that file.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml
from lightkube import ConfigError, KubeConfig

from .._errors import ConfigurationError

DEFAULT_KUBECONFIG = "~/.kube/config"

#: Fields holding file paths, per section, that kubectl resolves relative to the file.
_PATH_FIELDS = {
    "clusters": ("certificate-authority",),
    "users": ("client-certificate", "client-key", "tokenFile"),
}


def kubeconfig_paths(path: str | None = None) -> list[Path]:
    """The files to read: ``path`` if given, else those listed in ``$KUBECONFIG``, else ~/.kube/config.

    >>> [str(p) for p in kubeconfig_paths("/etc/kube/admin.conf")]
    ['/etc/kube/admin.conf']
    """
    if path:
        return [Path(path).expanduser()]
    listed = os.environ.get("KUBECONFIG", "")
    if listed:
        return [Path(entry).expanduser() for entry in listed.split(os.pathsep) if entry]
    return [Path(DEFAULT_KUBECONFIG).expanduser()]


def _read(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigurationError(f"cannot read kubeconfig {str(path)!r}: {exc.strerror or exc}") from exc
    try:
        content = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or type(exc).__name__
        raise ConfigurationError(
            f"kubeconfig {str(path)!r} is not valid YAML{where} ({problem}): fix the file or point to another"
        ) from exc
    if content is None:
        raise ConfigurationError(f"kubeconfig {str(path)!r} is empty: point to one with a cluster and a context")
    if not isinstance(content, dict):
        raise ConfigurationError(
            f"kubeconfig {str(path)!r} is not a kubeconfig (a YAML mapping with clusters, users and contexts)"
        )
    for section in ("clusters", "users", "contexts"):
        entries = content.get(section) or []
        if not isinstance(entries, list) or not all(isinstance(e, dict) and e.get("name") for e in entries):
            raise ConfigurationError(f"kubeconfig {str(path)!r}: {section} must be a list of entries with a name")
    _resolve_relative_paths(content, path.parent)
    return content


def _resolve_relative_paths(content: dict[str, Any], base: Path) -> None:
    for section, fields in _PATH_FIELDS.items():
        for entry in content.get(section) or []:
            body = entry.get(section[:-1])
            if not isinstance(body, dict):
                continue
            for field in fields:
                value = body.get(field)
                if isinstance(value, str) and value and not os.path.isabs(os.path.expanduser(value)):
                    body[field] = str(base / value)


def merge(contents: list[dict[str, Any]]) -> dict[str, Any]:
    """Merge kubeconfig contents as kubectl does: the first to set a name (or current-context) wins.

    >>> a = {"current-context": "a", "contexts": [{"name": "a", "context": {"cluster": "x"}}]}
    >>> b = {"current-context": "b", "contexts": [{"name": "a", "context": {}}, {"name": "b", "context": {}}]}
    >>> merged = merge([a, b])
    >>> merged["current-context"], [c["name"] for c in merged["contexts"]], merged["contexts"][0]["context"]
    ('a', ['a', 'b'], {'cluster': 'x'})
    """
    merged: dict[str, Any] = {"clusters": [], "users": [], "contexts": []}
    for content in contents:
        if merged.get("current-context") is None and content.get("current-context"):
            merged["current-context"] = content["current-context"]
        for section in ("clusters", "users", "contexts"):
            seen = {entry["name"] for entry in merged[section]}
            merged[section] += [entry for entry in content.get(section) or [] if entry["name"] not in seen]
    return merged


def load_kubeconfig(path: str | None = None) -> KubeConfig:
    """The kubeconfig at ``path``; without one, the in-cluster service account's, else the merge
    of ``$KUBECONFIG``'s files, else ~/.kube/config.

    Raises:
        ConfigurationError: no file exists, or one is unreadable, empty or malformed; the
            message names the file.
    """
    if not path:
        try:
            return KubeConfig.from_service_account()
        except (ConfigError, KeyError):  # not in a pod: no token file, or no KUBERNETES_SERVICE_HOST
            pass
    paths = kubeconfig_paths(path)
    existing = [p for p in paths if p.exists()]
    if not existing:
        if path:
            raise ConfigurationError(f"kubeconfig {path!r} does not exist: check the path")
        listed = ", ".join(repr(str(p)) for p in paths)
        raise ConfigurationError(
            f"no kubeconfig found (looked for {listed}) and not running in a cluster: "
            "set KUBECONFIG or name a kubeconfig file"
        )
    contents = [_read(p) for p in existing]
    merged = merge(contents)
    if not merged["clusters"] or not merged["contexts"]:
        names = ", ".join(repr(str(p)) for p in existing)
        raise ConfigurationError(f"kubeconfig {names} defines no cluster or no context: it cannot reach a cluster")
    return KubeConfig.from_dict(merged, fname=existing[0])

"""``lease-guard``: inspect and drive Leases from a shell (optional extra: ``pip install lease-guard[cli]``).

It follows kubectl's conventions: ``--kubeconfig``, ``--context`` and ``-n/--namespace``
before or after the subcommand, ``-o json|yaml|wide``, ``$KUBECONFIG`` as a list of files.

Exit codes:

- 0: success;
- 1: an error (the API server refused, the kubeconfig is invalid, the Lease does not exist), one line on stderr;
- 2: bad usage (an invalid option, lease or namespace name);
- 3: ``run`` only: leadership was lost and the command was stopped;
- 126, 127: ``run`` only: the command cannot be executed, or was not found (as a shell reports it);
- 128 + N: stopped by signal N (130 for Ctrl-C, 143 for SIGTERM); for ``run``, also the
  command's own death by signal N;
- otherwise, for ``run``: the command's own exit code.
"""

from __future__ import annotations

import datetime
import json
import logging
import math
import os
import shutil
import sys
from collections.abc import Awaitable, Callable
from typing import Any, NoReturn, TypeVar

import click

from ._elector import Elector
from ._errors import ConfigurationError, LeadershipLost, LeaseGuardError
from ._options import LEASE_DURATION, RENEW_DEADLINE, RETRY_PERIOD, check_lease_name, check_namespace
from ._process_group import run_in_group
from ._record import LeaseRecord, LeaseSpec, parse_time
from ._shell import EXIT_CANNOT_EXECUTE, EXIT_NOT_FOUND, run_until_signal
from .stores._protocol import LeaseStore

T = TypeVar("T")

#: ``run`` exits with this when leadership was lost and the command stopped.
EXIT_LEADERSHIP_LOST = 3


class Context:
    """The cluster options, set before the subcommand or after it (the later wins)."""

    def __init__(self) -> None:
        self.kubeconfig: str | None = None
        self.context: str | None = None
        self.namespace: str | None = None

    def store(self) -> LeaseStore:
        from .stores.kubernetes import KubernetesLeaseStore

        return KubernetesLeaseStore.from_kubeconfig(self.kubeconfig, context=self.context, namespace=self.namespace)


def _fail(message: str) -> NoReturn:
    raise click.ClickException(message)


def _run(main: Callable[[], Awaitable[T]]) -> T:
    """Run ``main`` under trio; a signal exits 128 + its number, an error is one line (exit 1)."""
    try:
        outcome = run_until_signal(main)
    except LeaseGuardError as exc:
        _fail(str(exc))
    if outcome.exit_code is not None:
        sys.exit(outcome.exit_code)
    return outcome.result  # type: ignore[return-value]


def describe(record: LeaseRecord | None, now: datetime.datetime) -> dict[str, Any]:
    """What ``status`` shows. Ages come from the wall-clock times in the Lease: for people only."""
    if record is None:
        return {"exists": False}
    renewed = parse_time(record.spec.renew_time)
    age = (now - renewed).total_seconds() if renewed else None
    duration = record.spec.lease_duration_seconds
    return {
        "exists": True,
        "namespace": record.namespace,
        "lease": record.name,
        "holder": record.holder,
        "term": record.transitions,
        "lease_duration_seconds": duration,
        "acquire_time": record.spec.acquire_time,
        "renew_time": record.spec.renew_time,
        "renewed_seconds_ago": round(age, 3) if age is not None else None,
        "expires_in_seconds": round(duration - age, 3) if age is not None and duration and record.holder else None,
        "released_by": record.spec.released_by,
        "resource_version": record.resource_version,
    }


# -- options shared by kubectl-style commands ------------------------------------------------


def _set_cluster_option(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    if value is not None and param.name is not None:
        if param.name == "namespace":
            try:
                check_namespace(value)
            except ConfigurationError as exc:
                raise click.BadParameter(str(exc), ctx=ctx, param=param) from exc
        setattr(ctx.ensure_object(Context), param.name, value)
    return value


def cluster_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """``--kubeconfig``, ``--context`` and ``-n/--namespace``, accepted where kubectl accepts them."""
    shared: dict[str, Any] = {"expose_value": False, "callback": _set_cluster_option, "is_eager": True}
    for option in (
        click.option(
            "-n", "--namespace", metavar="NAME", help="Namespace of the Lease (default: the context's).", **shared
        ),
        click.option("--context", metavar="NAME", help="The kubeconfig context to use.", **shared),
        click.option(
            "--kubeconfig",
            metavar="PATH",
            help="Path to the kubeconfig file (default: in-cluster, then $KUBECONFIG, a ':'-separated "
            "list merged as kubectl does, then ~/.kube/config).",
            **shared,
        ),
    ):
        command = option(command)
    return command


def output_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """``-o json|yaml|wide`` as in kubectl, and ``--json`` (the same as ``-o json``)."""
    command = click.option("--json", "as_json", is_flag=True, hidden=True, help="The same as -o json.")(command)
    return click.option(
        "-o",
        "--output",
        type=click.Choice(["json", "yaml", "wide"]),
        help="Output format (default: a table for people).",
    )(command)


def _format(as_json: bool, output: str | None) -> str | None:
    return "json" if as_json else output


def _dump_yaml(info: dict[str, Any]) -> str:
    import yaml  # lightkube's dependency: always installed

    return str(yaml.safe_dump(info, sort_keys=False))


class _Group(click.Group):
    """click's group, with every error on one line: ``lease-guard: error: ...``."""

    def main(self, *args: Any, **kwargs: Any) -> NoReturn:
        kwargs["standalone_mode"] = False
        try:
            result = super().main(*args, **kwargs)
        except click.UsageError as exc:
            hint = f" (see '{exc.ctx.command_path} --help')" if exc.ctx is not None else ""
            click.echo(f"lease-guard: error: {exc.format_message()}{hint}", err=True)
            sys.exit(exc.exit_code)
        except click.ClickException as exc:
            click.echo(f"lease-guard: error: {exc.format_message()}", err=True)
            sys.exit(exc.exit_code)
        except click.Abort:
            sys.exit(1)
        sys.exit(result if isinstance(result, int) else 0)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@cluster_options
@click.version_option(package_name="lease-guard", prog_name="lease-guard")
@click.pass_context
def main(ctx: click.Context) -> None:
    """Kubernetes leader election for trio: inspect, watch, release Leases; run a command only while leading."""
    ctx.ensure_object(Context)
    # The campaign's warnings (a watch retrying, a renewal refused) are news for the person at the shell.
    logging.basicConfig(format="lease-guard: %(levelname)s: %(message)s", level=logging.WARNING)


def _lease_arg(_ctx: click.Context, _param: click.Parameter, value: str) -> str:
    try:
        return check_lease_name(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from exc


lease_argument = click.argument("lease", callback=_lease_arg)


async def _read(obj: Context, lease: str) -> tuple[str, LeaseRecord | None]:
    store = obj.store()
    try:
        namespace = obj.namespace or store.default_namespace
        return namespace, await store.get(namespace, lease)
    finally:
        await store.aclose()  # type: ignore[attr-defined]


@main.command()
@lease_argument
@cluster_options
@output_options
@click.pass_obj
def status(obj: Context, lease: str, output: str | None, as_json: bool) -> None:
    """Show the holder, term, age of the last renewal and time to expiry of LEASE.

    Exits 1 if LEASE does not exist.
    """
    namespace, record = _run(lambda: _read(obj, lease))
    if record is None:
        _fail(f"lease {namespace}/{lease} does not exist: check the name and the namespace (-n)")
    info = describe(record, datetime.datetime.now(datetime.UTC))
    form = _format(as_json, output)
    if form == "json":
        click.echo(json.dumps(info, indent=2))
        return
    if form == "yaml":
        click.echo(_dump_yaml(info), nl=False)
        return
    rows: list[tuple[str, object]] = [
        ("LEASE", f"{info['namespace']}/{info['lease']}"),
        ("HOLDER", info["holder"] or "<none>"),
        ("TERM", info["term"]),
        ("RENEWED", "unknown" if info["renewed_seconds_ago"] is None else f"{info['renewed_seconds_ago']:.1f}s ago"),
        ("EXPIRES IN", "-" if info["expires_in_seconds"] is None else f"{info['expires_in_seconds']:.1f}s"),
    ]
    if form == "wide":
        rows += [
            ("DURATION", "-" if info["lease_duration_seconds"] is None else f"{info['lease_duration_seconds']}s"),
            ("ACQUIRED", info["acquire_time"] or "-"),
            ("RELEASED BY", info["released_by"] or "-"),
            ("VERSION", info["resource_version"]),
        ]
    for key, value in rows:
        click.echo(f"{key:<11} {value}")


@main.command()
@lease_argument
@cluster_options
@output_options
@click.pass_obj
def watch(obj: Context, lease: str, output: str | None, as_json: bool) -> None:
    """Print each change of holder of LEASE as it happens, until interrupted (Ctrl-C exits 130).

    A Lease that does not exist yet is reported once, then watched until it is created.
    """
    form = _format(as_json, output)

    def emit(info: dict[str, Any], text: str) -> None:
        stamp = datetime.datetime.now().strftime("%H:%M:%S.%f")[:-3]
        if form == "json":
            click.echo(json.dumps({"time": stamp, **info}))
        elif form == "yaml":
            click.echo("---\n" + _dump_yaml({"time": stamp, **info}), nl=False)
        else:
            click.echo(f"{stamp}  {text}")

    async def go() -> None:
        store = obj.store()
        namespace = obj.namespace or store.default_namespace
        last: object = object()
        seen = False
        try:
            async for record in store.watch(namespace, lease):
                key = (record.holder, record.transitions) if record else None
                if key == last:
                    continue
                last = key
                info = describe(record, datetime.datetime.now(datetime.UTC))
                if record is None:
                    emit(info, "(deleted)" if seen else f"lease {namespace}/{lease} does not exist yet; waiting for it")
                    continue
                seen = True
                text = f"holder={record.holder or '<none>'}  term={record.transitions}"
                if form == "wide":
                    text += (
                        f"  duration={record.spec.lease_duration_seconds}s  renewed={record.spec.renew_time}"
                        f"  version={record.resource_version}"
                    )
                emit(info, text)
        finally:
            await store.aclose()  # type: ignore[attr-defined]

    _run(go)


def _default_grace(lease_duration: float, renew_deadline: float) -> float:
    """Half the margin between the deadline and the earliest takeover (see docs/operations.md)."""
    return (lease_duration - renew_deadline) / 2


def _check_command(program: str) -> None:
    """Fail as a shell would, before campaigning, when ``program`` cannot be run."""
    path = shutil.which(program) if os.sep not in program else program
    if path is None or not os.path.exists(path):
        click.echo(f"lease-guard: {program}: command not found", err=True)
        sys.exit(EXIT_NOT_FOUND)
    if os.path.isdir(path) or not os.access(path, os.X_OK):
        click.echo(f"lease-guard: {program}: permission denied (not an executable file)", err=True)
        sys.exit(EXIT_CANNOT_EXECUTE)


@main.command(context_settings={"ignore_unknown_options": True})
@lease_argument
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
@cluster_options
@click.option("--identity", help="Holder identity (default: host name plus a random suffix).")
@click.option("--lease-duration", type=float, default=LEASE_DURATION, show_default=True)
@click.option("--renew-deadline", type=float, default=RENEW_DEADLINE, show_default=True)
@click.option("--retry-period", type=float, default=RETRY_PERIOD, show_default=True)
@click.option(
    "--grace",
    type=float,
    default=None,
    help="Seconds between SIGTERM and SIGKILL when the command must stop. Default: half of "
    "lease_duration - renew_deadline (2.5 s with the defaults); it must be less than that difference.",
)
@click.pass_obj
def run(
    obj: Context,
    lease: str,
    command: tuple[str, ...],
    identity: str | None,
    lease_duration: float,
    renew_deadline: float,
    retry_period: float,
    grace: float | None,
) -> None:
    """Run COMMAND only while holding LEASE: start it on acquisition; on loss stop it and
    everything it started (SIGTERM to its process group, then SIGKILL after --grace).

    Exits with COMMAND's exit code, 3 if leadership was lost, 127 if COMMAND was not found.
    SIGTERM or SIGINT to lease-guard stops COMMAND the same way, releases the Lease, and
    exits 143 or 130.

    Example: lease-guard run my-cron -n ops -- python cleanup.py
    """

    def elector(store: LeaseStore | None) -> Elector:
        return Elector(
            lease,
            namespace=obj.namespace,
            identity=identity,
            lease_duration=lease_duration,
            renew_deadline=renew_deadline,
            retry_period=retry_period,
            store=store,
        )

    try:
        elector(None)  # validates the options; runs nothing
    except ConfigurationError as exc:
        raise click.UsageError(str(exc)) from exc
    margin = lease_duration - renew_deadline
    grace_s = _default_grace(lease_duration, renew_deadline) if grace is None else grace
    if not (math.isfinite(grace_s) and 0 <= grace_s < margin):
        raise click.BadParameter(
            f"must be at least 0 and less than lease_duration - renew_deadline ({margin:g} s), so the command "
            f"is dead before another replica can take over; got {grace_s:g}",
            param_hint="'--grace'",
        )
    _check_command(command[0])

    async def go() -> int:
        async with elector(obj.store()) as running:
            try:
                async with running.leading():
                    click.echo(f"lease-guard: leading {lease} as {running.identity}; starting {command[0]}", err=True)
                    code = await run_in_group(list(command), grace_s)
            except LeadershipLost as lost:
                click.echo(f"lease-guard: {lost}; stopped {command[0]}", err=True)
                return EXIT_LEADERSHIP_LOST
            if code == EXIT_NOT_FOUND:
                click.echo(f"lease-guard: {command[0]}: command not found", err=True)
            elif code == EXIT_CANNOT_EXECUTE:
                click.echo(f"lease-guard: {command[0]}: permission denied", err=True)
            return code

    sys.exit(_run(go))


@main.command()
@lease_argument
@cluster_options
@click.option("--force", is_flag=True, help="Required: clear the holder even though it is someone else.")
@click.pass_obj
def release(obj: Context, lease: str, force: bool) -> None:
    """Clear the holder of LEASE, as ``kubectl`` or another client would.

    This is not the holder's own release: the holder's guarded code may still be running
    until its own deadline, so waiting candidates take over only after the Lease's
    leaseDurationSeconds of silence after they see this write, not at once. The
    holder stops when it sees the change; the next holder's term is one higher.
    """
    if not force:
        raise click.UsageError("release clears another process's leadership: pass --force to do it")

    async def go() -> tuple[str, LeaseRecord | None]:
        store = obj.store()
        try:
            namespace = obj.namespace or store.default_namespace
            record = await store.get(namespace, lease)
            if record is None:
                _fail(f"lease {namespace}/{lease} does not exist: check the name and the namespace (-n)")
            if record.holder is None:
                return namespace, record
            spec = record.spec
            # No release proof (released_by): only the holder itself can vouch that its code has stopped.
            cleared = LeaseSpec(
                "", spec.lease_duration_seconds, spec.acquire_time, spec.renew_time, spec.lease_transitions
            )
            await store.update(record, cleared)
            return namespace, record
        finally:
            await store.aclose()  # type: ignore[attr-defined]

    namespace, record = _run(go)
    assert record is not None
    if record.holder is None:
        click.echo(f"lease {namespace}/{lease} has no holder; nothing to release")
        return
    duration = record.spec.lease_duration_seconds
    wait = f"about {duration} s" if duration else "about the lease duration"
    click.echo(
        f"cleared the holder of {namespace}/{lease} (was {record.holder}). Waiting candidates take over "
        f"{wait} (leaseDurationSeconds) after they see this write, not at once: {record.holder}'s guarded "
        "code may run until its own deadline."
    )


@main.command()
@cluster_options
@click.option("--candidates", type=click.IntRange(1, 100), default=3, show_default=True)
@click.option("--seconds", type=float, default=math.inf, help="Stop after this long (default: until Ctrl-C).")
@click.option("--cluster", is_flag=True, help="Use the cluster (--kubeconfig/--context/-n) instead of memory.")
@click.pass_obj
def demo(obj: Context, candidates: int, seconds: float, cluster: bool) -> None:
    """Several in-process candidates hand a Lease around, with a live view (Ctrl-C exits 130)."""
    from . import demo as demo_module

    if math.isnan(seconds) or seconds <= 0:
        raise click.BadParameter(
            f"must be a positive number of seconds (or inf), got {seconds:g}", param_hint="'--seconds'"
        )

    async def go() -> None:
        store = obj.store() if cluster else None
        if store is None:
            from .stores.memory import MemoryLeaseStore

            await demo_module.run(MemoryLeaseStore(), None, candidates, seconds)
            return
        try:
            await demo_module.run(store, obj.namespace, candidates, seconds)
        finally:
            await store.aclose()  # type: ignore[attr-defined]

    _run(go)


if __name__ == "__main__":
    main()

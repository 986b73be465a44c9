"""``lease-guard``: inspect and drive Leases from a shell (optional extra: ``pip install lease-guard[cli]``).

Exit codes: 0 success; 1 an error (message on stderr); 2 bad usage; for ``run``, the
command's own exit code when it ends by itself, or 3 when leadership was lost and the
command was stopped.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import math
import signal
import sys
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import click
import trio

from . import demo as demo_module
from ._elector import Elector
from ._errors import LeadershipLost, LeaseGuardError
from ._options import LEASE_DURATION, RENEW_DEADLINE, RETRY_PERIOD, check_lease_name
from ._record import LeaseRecord, LeaseSpec, micro_time, parse_time
from .stores.kubernetes import KubernetesLeaseStore

T = TypeVar("T")

#: ``run`` exits with this when leadership was lost and the command stopped.
EXIT_LEADERSHIP_LOST = 3


class Context:
    def __init__(self, kubeconfig: str | None, context: str | None, namespace: str | None) -> None:
        self.kubeconfig, self.context, self.namespace = kubeconfig, context, namespace

    def store(self) -> KubernetesLeaseStore:
        return KubernetesLeaseStore.from_kubeconfig(self.kubeconfig, context=self.context, namespace=self.namespace)


def _run(main: Callable[[], Awaitable[T]]) -> T:
    try:
        return trio.run(main)
    except LeaseGuardError as exc:
        raise click.ClickException(str(exc)) from exc


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
        "renew_time": record.spec.renew_time,
        "renewed_seconds_ago": round(age, 3) if age is not None else None,
        "expires_in_seconds": round(duration - age, 3) if age is not None and duration and record.holder else None,
        "resource_version": record.resource_version,
    }


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--kubeconfig",
    envvar="KUBECONFIG",
    help="Path to the kubeconfig file (default: $KUBECONFIG, ~/.kube/config, in-cluster).",
)
@click.option("--context", "kube_context", help="The kubeconfig context to use.")
@click.option("-n", "--namespace", help="Namespace of the Lease (default: the context's).")
@click.pass_context
def main(ctx: click.Context, kubeconfig: str | None, kube_context: str | None, namespace: str | None) -> None:
    """Kubernetes leader election for trio: inspect, watch, release Leases; run a command only while leading."""
    ctx.obj = Context(kubeconfig, kube_context, namespace)


def _lease_arg(_ctx: click.Context, _param: click.Parameter, value: str) -> str:
    try:
        return check_lease_name(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from exc


lease_argument = click.argument("lease", callback=_lease_arg)


@main.command()
@lease_argument
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@click.pass_obj
def status(obj: Context, lease: str, as_json: bool) -> None:
    """Show the holder, term, age of the last renewal and time to expiry of LEASE."""

    async def go() -> dict[str, Any]:
        store = obj.store()
        try:
            record = await store.get(obj.namespace or store.default_namespace, lease)
        finally:
            await store.aclose()
        return describe(record, datetime.datetime.now(datetime.UTC))

    info = _run(go)
    if as_json:
        click.echo(json.dumps(info, indent=2))
        return
    if not info["exists"]:
        raise click.ClickException(f"lease {lease!r} does not exist")
    rows = [
        ("LEASE", f"{info['namespace']}/{info['lease']}"),
        ("HOLDER", info["holder"] or "<none>"),
        ("TERM", info["term"]),
        ("RENEWED", "unknown" if info["renewed_seconds_ago"] is None else f"{info['renewed_seconds_ago']:.1f}s ago"),
        ("EXPIRES IN", "-" if info["expires_in_seconds"] is None else f"{info['expires_in_seconds']:.1f}s"),
    ]
    for key, value in rows:
        click.echo(f"{key:<11} {value}")


@main.command()
@lease_argument
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
@click.pass_obj
def watch(obj: Context, lease: str, as_json: bool) -> None:
    """Print each change of holder of LEASE as it happens, until interrupted."""

    async def go() -> None:
        store = obj.store()
        last: object = object()
        try:
            async for record in store.watch(obj.namespace or store.default_namespace, lease):
                key = (record.holder, record.transitions) if record else None
                if key == last:
                    continue
                last = key
                info = describe(record, datetime.datetime.now(datetime.UTC))
                stamp = datetime.datetime.now().strftime("%H:%M:%S.%f")[:-3]
                if as_json:
                    click.echo(json.dumps({"time": stamp, **info}))
                elif record is None:
                    click.echo(f"{stamp}  (deleted)")
                else:
                    click.echo(f"{stamp}  holder={record.holder or '<none>'}  term={record.transitions}")
        finally:
            await store.aclose()

    with contextlib.suppress(KeyboardInterrupt):
        _run(go)


@main.command(context_settings={"ignore_unknown_options": True})
@lease_argument
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
@click.option("--identity", help="Holder identity (default: host name plus a random suffix).")
@click.option("--lease-duration", type=float, default=LEASE_DURATION, show_default=True)
@click.option("--renew-deadline", type=float, default=RENEW_DEADLINE, show_default=True)
@click.option("--retry-period", type=float, default=RETRY_PERIOD, show_default=True)
@click.option(
    "--grace",
    type=float,
    default=None,
    help="Seconds between SIGTERM and SIGKILL on loss (default: lease_duration - renew_deadline, "
    "the longest that keeps two leaders from overlapping).",
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
    """Run COMMAND only while holding LEASE: start it on acquisition; on loss send SIGTERM,
    then SIGKILL after --grace; release the Lease when it exits.

    Exits with COMMAND's exit code, or 3 if leadership was lost. SIGTERM or SIGINT to
    lease-guard stops the command the same way and releases the Lease.

    Example: lease-guard -n ops run my-cron -- python cleanup.py
    """
    grace_s = lease_duration - renew_deadline if grace is None else grace

    async def stop(process: trio.Process) -> None:
        process.send_signal(signal.SIGTERM)
        with trio.move_on_after(grace_s):
            await process.wait()
            return
        process.kill()

    async def go() -> int:
        async with Elector(
            lease,
            namespace=obj.namespace,
            identity=identity,
            lease_duration=lease_duration,
            renew_deadline=renew_deadline,
            retry_period=retry_period,
            store=obj.store(),
        ) as elector:
            with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
                async with trio.open_nursery() as nursery:

                    async def stop_on_signal() -> None:
                        async for _ in signals:
                            nursery.cancel_scope.cancel()

                    nursery.start_soon(stop_on_signal)
                    try:
                        async with elector.leading():
                            click.echo(
                                f"lease-guard: leading {lease} as {elector.identity}; starting {command[0]}", err=True
                            )
                            result = await trio.run_process(list(command), check=False, deliver_cancel=stop)
                            nursery.cancel_scope.cancel()
                            return result.returncode
                    except LeadershipLost as lost:
                        click.echo(f"lease-guard: {lost}; stopped {command[0]}", err=True)
                        nursery.cancel_scope.cancel()
                        return EXIT_LEADERSHIP_LOST
        return 128 + signal.SIGTERM

    sys.exit(_run(go))


@main.command()
@lease_argument
@click.option("--force", is_flag=True, help="Required: clear the holder even though it is someone else.")
@click.pass_obj
def release(obj: Context, lease: str, force: bool) -> None:
    """Clear the holder of LEASE, so a waiting candidate takes over at once.

    The current holder's guarded code is cancelled as soon as it sees the change; the
    term is kept, the next holder's is one higher.
    """
    if not force:
        raise click.UsageError("release clears another process's leadership: pass --force to do it")

    async def go() -> str | None:
        store = obj.store()
        try:
            namespace = obj.namespace or store.default_namespace
            record = await store.get(namespace, lease)
            if record is None:
                raise click.ClickException(f"lease {namespace}/{lease} does not exist")
            now = micro_time()
            await store.update(record, LeaseSpec("", 1, now, now, record.spec.lease_transitions))
            return record.holder
        finally:
            await store.aclose()

    previous = _run(go)
    click.echo(f"released {lease} (was held by {previous or 'nobody'})")


@main.command()
@click.option("--candidates", type=int, default=3, show_default=True)
@click.option("--seconds", type=float, default=math.inf, help="Stop after this long (default: until interrupted).")
@click.option("--cluster", is_flag=True, help="Use the cluster (--kubeconfig/--context/-n) instead of memory.")
@click.pass_obj
def demo(obj: Context, candidates: int, seconds: float, cluster: bool) -> None:
    """Several in-process candidates hand a Lease around, with a live view."""
    argv = ["--candidates", str(candidates), "--seconds", str(seconds)]
    if cluster:
        argv += ["--kubeconfig", obj.kubeconfig or "~/.kube/config"]
        if obj.context:
            argv += ["--context", obj.context]
        if obj.namespace:
            argv += ["--namespace", obj.namespace]
    with contextlib.suppress(KeyboardInterrupt):
        demo_module.main(argv)


if __name__ == "__main__":
    main()

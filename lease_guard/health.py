"""A liveness endpoint for an Elector: HTTP 200 while it campaigns, 503 once it has stopped.

What it proves when it answers 200: the process's trio event loop is responsive (a loop
blocked by synchronous code cannot answer, and the probe times out), and the Elector is
still a candidate. It answers 503 once the Elector has stopped, say after a permanent
store error that the application caught and carried on from: that replica would never
lead again, and a restart is the cure. It deliberately does *not* fail while the API
server is unreachable: every replica would then be restarted at once during a control-
plane outage, which cures nothing. (client-go's HealthzAdaptor checks that a leader has
renewed within its lease duration; here the hard deadline already ends such a tenure.)

Plain trio sockets, no dependencies. Point the Pod's livenessProbe at it::

    async with Elector("my-operator") as elector, trio.open_nursery() as nursery:
        nursery.start_soon(serve_health, elector, 8080)
        ...

    livenessProbe:
      httpGet: {path: /healthz, port: 8080}
"""

from __future__ import annotations

import trio

from ._elector import Elector

#: How long a client may take to send its request line before we answer anyway.
_READ_TIMEOUT = 5.0


def health_status(elector: Elector) -> tuple[int, str]:
    """The HTTP status and body the endpoint answers with, right now: 200 ``ok: leading`` or
    ``ok: following`` while the Elector runs, else 503 with the reason.

    Example::

        status, body = health_status(elector)
    """
    if not elector.running:
        return 503, f"unhealthy: the Elector for lease {elector.namespace}/{elector.lease} is not running\n"
    return 200, "ok: leading\n" if elector.is_leader else "ok: following\n"


async def serve_health(
    elector: Elector,
    port: int,
    host: str = "0.0.0.0",
    *,
    task_status: trio.TaskStatus[list[trio.SocketListener]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Answer every HTTP request on ``host:port`` with :func:`health_status`; runs until cancelled.

    Use ``await nursery.start(serve_health, elector, 0)`` to learn the listeners (and so
    the port chosen for port 0).
    """

    async def answer(stream: trio.SocketStream) -> None:
        with trio.move_on_after(_READ_TIMEOUT):
            await stream.receive_some(4096)
        status, body = health_status(elector)
        reason = "OK" if status == 200 else "Service Unavailable"
        payload = body.encode()
        head = (
            f"HTTP/1.1 {status} {reason}\r\nContent-Type: text/plain\r\n"
            f"Content-Length: {len(payload)}\r\nConnection: close\r\n\r\n"
        )
        try:
            await stream.send_all(head.encode() + payload)
        except trio.BrokenResourceError:
            pass
        finally:
            await stream.aclose()

    await trio.serve_tcp(answer, port, host=host, task_status=task_status)

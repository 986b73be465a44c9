"""A liveness endpoint for an Elector: HTTP 200 while healthy, 503 when the campaign is wedged.

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


def health_status(elector: Elector, tolerance: float = 10.0) -> tuple[int, str]:
    """The HTTP status and body the endpoint answers with, right now.

    >>> # 200 "ok: leading" / "ok: following", or 503 with the reason
    """
    if not elector.healthy(tolerance):
        return 503, "unhealthy: leading, but the last renewal is older than lease_duration + tolerance\n"
    return 200, "ok: leading\n" if elector.is_leader else "ok: following\n"


async def serve_health(
    elector: Elector,
    port: int,
    host: str = "0.0.0.0",
    tolerance: float = 10.0,
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
        status, body = health_status(elector, tolerance)
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

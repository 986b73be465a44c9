"""A fault-injecting HTTPS proxy in front of the kube-apiserver, one per candidate.

The real layer of the reliability campaign (tests/reliability/real.py) puts each candidate
process behind its own `FaultProxy` on 127.0.0.1 and switches faults on and off at run time,
from the same trio run that serves the proxies.

TLS: the proxy terminates TLS with the API server's own serving certificate and key (valid
for 127.0.0.1 and signed by the harness CA), so a candidate's kubeconfig only changes its
``server:`` URL. Upstream it opens its own TLS connection, verifying the harness CA, without
a client certificate: candidates authenticate with a bearer token, and the Authorization
header passes through unchanged.

HTTP/1.1 only: the proxy offers just ``http/1.1`` in ALPN, so Go clients (client-go) fall
back from HTTP/2. What that changes for client-go: every in-flight request has its own TCP
connection instead of sharing one multiplexed connection, and there are no HTTP/2 PING health
checks (client-go's ``ReadIdleTimeout``/``PingTimeout``): a request on a black-holed
connection is only ever ended by its context's deadline, or not at all when it has none.
Requests are parsed with h11; long-lived chunked watch responses are streamed event by event.

Faults (each switchable at run time and counted in `FaultProxy.counts`):

``latency``
    every request waits this long before it is forwarded.
``delay``
    a request is forwarded at once (so it takes effect), but every byte of its answer (head,
    body, and the events of a watch) reaches the client this much later.
``black hole``
    nothing enters the proxy in either direction: requests on existing connections are not
    forwarded, answers and watch events from the server are not passed on, new connections
    are accepted but not even TLS-handshaken, until healed; requests hang. Bytes that had
    already entered the ``delay`` line before the black hole started still arrive (they were
    on the wire): a late answer followed by a partition.
``reset``
    every current connection, client side and server side, is aborted with a TCP RST
    (SO_LINGER 0).
``errors``
    ``503`` (with Retry-After), ``429`` (with Retry-After) and ``500`` answer without
    forwarding; ``500-after-effect`` and ``timeout-after-effect`` forward a write, wait for
    the server's answer, then answer 500 or 504 (the API server's own "Timeout" Status), so
    the write took effect but the client sees a failure. Reads (GET, including watches) get
    the error without being forwarded in the after-effect modes: a read has no effect.
"""

from __future__ import annotations

import collections
import contextlib
import json
import math
import socket
import ssl
import struct
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final, TypeAlias

import h11
import trio

#: The error modes `FaultProxy.set_errors` accepts.
ERROR_MODES: Final = ("503", "429", "500", "500-after-effect", "timeout-after-effect")
_AFTER_EFFECT: Final = {"500-after-effect": 500, "timeout-after-effect": 504}
_REASONS: Final = {
    503: ("ServiceUnavailable", "injected: the server is currently unable to handle the request"),
    429: ("TooManyRequests", "injected: too many requests, please try again later"),
    500: ("InternalError", "injected: an error on the server prevented the request from succeeding"),
    504: ("Timeout", "injected: request did not complete within the allotted timeout"),
}
RETRY_AFTER_SECONDS: Final = 1

# An item of a connection's delay line: when to send, and what (None: close the connection).
_Item: TypeAlias = tuple[float, bytes | None]


def server_ssl_context(cert: Path, key: Path) -> ssl.SSLContext:
    """TLS context for the client side of the proxy: the API server's cert, HTTP/1.1 only."""
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(str(cert), str(key))
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx


def upstream_ssl_context(ca: Path) -> ssl.SSLContext:
    """TLS context towards the API server: verify the harness CA, no client certificate."""
    ctx = ssl.create_default_context(cafile=str(ca))
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx


def _abort(stream: trio.SocketStream | None) -> None:
    """Make the next close of this socket send a TCP RST instead of a FIN."""
    if stream is None:
        return
    with contextlib.suppress(OSError):
        stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


#: What ends one connection (either side went away, or did not speak HTTP/1.1), not the proxy.
_GONE: Final = (trio.BrokenResourceError, trio.ClosedResourceError, ssl.SSLError, OSError, h11.ProtocolError)


class _ClientGone(Exception):
    """The client closed its connection while its request waited."""


@dataclass(eq=False)
class _Connection:
    """One client connection and its upstream twin."""

    client_tcp: trio.SocketStream
    scope: trio.CancelScope = field(default_factory=trio.CancelScope)
    upstream_tcp: trio.SocketStream | None = None

    def reset(self) -> None:
        _abort(self.client_tcp)
        _abort(self.upstream_tcp)
        self.scope.cancel()


class FaultProxy:
    """An HTTPS proxy from 127.0.0.1:`port` to the API server, with switchable faults.

    Run it with ``await nursery.start(proxy.serve)``; then `port` / `url` are set. All the
    ``set_*`` methods and `reset` must be called from the same trio run."""

    def __init__(
        self,
        upstream_host: str,
        upstream_port: int,
        *,
        server_context: ssl.SSLContext,
        upstream_context: ssl.SSLContext,
        name: str = "proxy",
    ) -> None:
        self.name = name
        self.upstream_host, self.upstream_port = upstream_host, upstream_port
        self._server_context, self._upstream_context = server_context, upstream_context
        self.port = 0
        #: Faults injected and requests seen, by kind.
        self.counts: collections.Counter[str] = collections.Counter()
        self._latency = 0.0
        self._delay = 0.0
        self._errors: str | None = None
        self._healed = trio.Event()
        self._healed.set()
        self._connections: set[_Connection] = set()

    # -- control ---------------------------------------------------------------

    @property
    def url(self) -> str:
        if not self.port:
            raise RuntimeError(f"{self.name}: not serving yet (start serve() with nursery.start)")
        return f"https://127.0.0.1:{self.port}"

    @property
    def black_holed(self) -> bool:
        return not self._healed.is_set()

    def set_latency(self, seconds: float) -> None:
        """Delay every request's forwarding by `seconds` (0: off)."""
        self._latency = max(0.0, seconds)

    def set_delay(self, seconds: float) -> None:
        """Hold every answer byte back `seconds` after the server sent it (0: off)."""
        self._delay = max(0.0, seconds)

    def set_errors(self, mode: str | None) -> None:
        """Answer errors (one of `ERROR_MODES`), or stop (None)."""
        if mode is not None and mode not in ERROR_MODES:
            raise ValueError(f"{self.name}: unknown error mode {mode!r}; expected one of {ERROR_MODES}")
        self._errors = mode

    def set_black_hole(self, on: bool) -> None:
        """Start (True) or heal (False) a black hole."""
        if on and not self.black_holed:
            self._healed = trio.Event()
            self.counts["black-hole"] += 1
        elif not on:
            self._healed.set()

    def reset(self) -> int:
        """Abort every current connection with a TCP RST; returns how many."""
        connections = list(self._connections)
        for c in connections:
            c.reset()
        self.counts["reset connections"] += len(connections)
        return len(connections)

    def heal(self) -> None:
        """Switch every fault off."""
        self.set_latency(0)
        self.set_delay(0)
        self.set_errors(None)
        self.set_black_hole(False)

    # -- serving ---------------------------------------------------------------

    async def serve(self, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        """Listen on 127.0.0.1 (a free port), report the port, serve until cancelled."""
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        self.port = listeners[0].socket.getsockname()[1]
        async with trio.open_nursery() as nursery:
            await nursery.start(trio.serve_listeners, self._handle, listeners)
            task_status.started(self.port)

    async def _until_healed(self) -> None:
        while self.black_holed:
            await self._healed.wait()

    async def _handle(self, client_tcp: trio.SocketStream) -> None:
        conn = _Connection(client_tcp)
        self._connections.add(conn)
        try:
            with conn.scope:
                if self.black_holed:
                    self.counts["black-holed connections"] += 1
                    await self._until_healed()
                try:
                    conn.upstream_tcp = await trio.open_tcp_stream(self.upstream_host, self.upstream_port)
                except OSError:
                    _abort(client_tcp)  # the server is down: the client sees a reset, as if refused
                    self.counts["upstream refused"] += 1
                    return
                client = trio.SSLStream(client_tcp, self._server_context, server_side=True)
                upstream = trio.SSLStream(conn.upstream_tcp, self._upstream_context, server_hostname=self.upstream_host)
                await client.do_handshake()
                await upstream.do_handshake()
                await self._relay(client, upstream)
        except* _GONE:
            pass  # either side went away, or spoke something else than HTTP/1.1: drop the connection
        finally:
            self._connections.discard(conn)
            await trio.aclose_forcefully(client_tcp)
            if conn.upstream_tcp is not None:
                await trio.aclose_forcefully(conn.upstream_tcp)

    async def _relay(
        self, client: trio.SSLStream[trio.SocketStream], upstream: trio.SSLStream[trio.SocketStream]
    ) -> None:
        down = h11.Connection(h11.SERVER)
        up = h11.Connection(h11.CLIENT)
        send, receive = trio.open_memory_channel[_Item](math.inf)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._delay_line, client, receive, nursery.cancel_scope)

            def queue(*events: h11.Event | None, delay: float = 0.0) -> None:
                due = time.monotonic() + delay
                for event in events:
                    if event is None:
                        send.send_nowait((due, None))
                    else:
                        data = down.send(event)
                        if data:
                            send.send_nowait((due, data))

            try:
                while True:
                    request = await _next(down, client)
                    if not isinstance(request, h11.Request):
                        break  # ConnectionClosed: the client is done
                    body = bytearray()
                    while isinstance(event := await _next(down, client), h11.Data):
                        body += event.data
                    self.counts["requests"] += 1
                    if self.black_holed:
                        self.counts["black-holed requests"] += 1
                        await self._wait_healed_or_gone(down, client)
                    if self._latency > 0:
                        self.counts["latency"] += 1
                        await trio.sleep(self._latency)
                    mode = self._errors
                    status = _AFTER_EFFECT.get(mode or "")
                    if mode is not None and (status is None or request.method == b"GET"):
                        self.counts[f"error {mode}"] += 1
                        queue(*_error_events(status or int(mode)), delay=self._delay)
                    else:
                        await upstream.send_all(
                            up.send(h11.Request(method=request.method, target=request.target, headers=request.headers))
                            + (up.send(h11.Data(data=bytes(body))) if body else b"")
                            + up.send(h11.EndOfMessage())
                        )
                        if status is not None:
                            self.counts[f"error {mode}"] += 1
                        elif self._delay > 0:
                            self.counts["delayed answers"] += 1
                        while True:
                            event = await _next(up, upstream)
                            if self.black_holed:
                                await self._until_healed()
                            if isinstance(event, h11.ConnectionClosed):
                                queue(None)
                                return
                            if status is None:
                                queue(event, delay=self._delay)
                            if isinstance(event, h11.EndOfMessage):
                                break
                        if status is not None:  # the write took effect; the client sees an error
                            queue(*_error_events(status), delay=self._delay)
                    if up.our_state is h11.MUST_CLOSE or up.their_state is h11.MUST_CLOSE:
                        break
                    if up.our_state is h11.DONE:  # (an error answered here never went upstream)
                        up.start_next_cycle()
                    if down.our_state is h11.MUST_CLOSE or down.their_state is h11.MUST_CLOSE:
                        break
                    down.start_next_cycle()
            except _ClientGone:
                pass
            queue(None)  # close after everything queued has been sent

    async def _delay_line(
        self,
        client: trio.SSLStream[trio.SocketStream],
        receive: trio.MemoryReceiveChannel[_Item],
        scope: trio.CancelScope,
    ) -> None:
        """Send queued bytes to the client, each at its due time, in order; close on None."""
        try:
            async for due, data in receive:
                wait = due - time.monotonic()
                if wait > 0:
                    await trio.sleep(wait)
                if data is None:
                    break
                await client.send_all(data)
        except _GONE:
            pass
        finally:
            scope.cancel()

    async def _wait_healed_or_gone(self, down: h11.Connection, client: trio.SSLStream[trio.SocketStream]) -> None:
        """Wait for the black hole to heal; raise _ClientGone if the client hangs up meanwhile
        (an abandoned request must not reach the server after the heal)."""
        gone = False
        async with trio.open_nursery() as nursery:

            async def watch() -> None:
                nonlocal gone
                try:
                    data = await client.receive_some(65536)
                except _GONE:
                    data = b""
                down.receive_data(bytes(data))
                if not data:
                    gone = True
                    nursery.cancel_scope.cancel()

            nursery.start_soon(watch)
            await self._until_healed()
            nursery.cancel_scope.cancel()
        if gone:
            raise _ClientGone


async def _next(conn: h11.Connection, stream: trio.SSLStream[trio.SocketStream]) -> h11.Event:
    """The next h11 event of `conn`, reading from `stream` as needed."""
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            try:
                data = await stream.receive_some(65536)
            except (trio.BrokenResourceError, ssl.SSLError):
                data = b""
            conn.receive_data(bytes(data))
            continue
        if event is h11.PAUSED:
            raise h11.LocalProtocolError("pipelined request: not supported by this proxy")
        assert not isinstance(event, type)
        return event


def _error_events(status: int) -> Iterable[h11.Event]:
    """Response events of a Kubernetes Status error."""
    reason, message = _REASONS[status]
    body = json.dumps(
        {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": message,
            "reason": reason,
            "code": status,
        }
    ).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if status in (503, 429):
        headers.append((b"retry-after", str(RETRY_AFTER_SECONDS).encode()))
    return (h11.Response(status_code=status, headers=headers), h11.Data(data=body), h11.EndOfMessage())

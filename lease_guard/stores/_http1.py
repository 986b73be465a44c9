"""A lean HTTP/1.1 client for the renewal hot path: h11 over trio's TLS, kept-alive connections.

A steady leader's only regular request is its renewal, a PUT of one small Lease. Through
httpx, each costs ~2.5 ms of CPU, most of it in layers a single request on a warm
connection does not need (httpx's and httpcore's request models, the pool's bookkeeping,
anyio's stream wrappers). This client sends it with h11, the HTTP/1.1 state machine httpx
itself parses with, over ``trio.SSLStream``: one ``send_all`` per request, one h11 event
loop per answer, and a connection back into a LIFO of idle ones. It is not a general HTTP
client: no redirects, proxies, HTTP/2 or retries; callers use it only where those cannot
occur, and fall back to httpx for everything else.
"""

from __future__ import annotations

import collections
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import h11
import trio

#: How long an idle connection is kept for reuse (the API server keeps them longer).
KEEPALIVE_EXPIRY = 30.0
_READ_SIZE = 65536


class ProtocolError(OSError):
    """The server's answer broke HTTP/1.1 (or the connection ended mid-answer)."""


@dataclass(frozen=True)
class Answer:
    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes


class _Connection:
    def __init__(self, stream: trio.abc.Stream) -> None:
        self.stream = stream
        self.h11 = h11.Connection(our_role=h11.CLIENT)
        self.idle_since = 0.0

    async def exchange(self, request: h11.Request, body: bytes) -> Answer:
        h = self.h11
        out = h.send(request) or b""
        if body:
            out += h.send(h11.Data(data=body)) or b""
        out += h.send(h11.EndOfMessage()) or b""
        await self.stream.send_all(out)
        response: h11.Response | None = None
        chunks: list[bytes] = []
        while True:
            try:
                event = h.next_event()
            except h11.RemoteProtocolError as exc:
                raise ProtocolError(f"invalid HTTP/1.1 answer: {exc}") from exc
            if event is h11.NEED_DATA:
                data = await self.stream.receive_some(_READ_SIZE)
                if not data:
                    raise ProtocolError("the server closed the connection before its answer was complete")
                h.receive_data(bytes(data))
            elif isinstance(event, h11.Response):
                response = event
            elif isinstance(event, h11.Data):
                chunks.append(bytes(event.data))
            elif isinstance(event, h11.EndOfMessage):
                assert response is not None
                return Answer(response.status_code, list(response.headers), b"".join(chunks))
            elif isinstance(event, h11.ConnectionClosed):
                raise ProtocolError("the server closed the connection before its answer was complete")

    @property
    def reusable(self) -> bool:
        return self.h11.our_state is h11.DONE and self.h11.their_state is h11.DONE

    async def aclose(self) -> None:
        with trio.CancelScope(shield=True, deadline=trio.current_time() + 1.0):
            await trio.aclose_forcefully(self.stream)


class Http1Client:
    """Requests to one server over kept-alive HTTP/1.1 connections; at most one request per connection.

    `host` is the Host header (``host:port``); `connect` opens a new byte stream to the
    server (TLS in production, a memory stream in tests); `authorization` gives the value
    of the Authorization header (None for none). Any failure closes the connection it happened on; nothing is retried.
    """

    def __init__(
        self,
        host: str,
        connect: Callable[[], Awaitable[trio.abc.Stream]],
        authorization: Callable[[], Awaitable[str | None]],
        *,
        max_idle: int,
    ) -> None:
        self._host = host.encode()
        self._connect = connect
        self._authorization = authorization
        self._idle: collections.deque[_Connection] = collections.deque()
        self._max_idle = max_idle
        self._closed = False
        #: Requests sent, by method (httpx's event hooks do not see this client).
        self.sent: collections.Counter[str] = collections.Counter()

    async def request(self, method: str, target: str, body: bytes, content_type: str = "application/json") -> Answer:
        connection = self._idle_connection()
        if connection is None:
            connection = _Connection(await self._connect())
        headers = [
            (b"Host", self._host),
            (b"Accept", b"application/json"),
            (b"User-Agent", b"lease-guard"),
            (b"Content-Type", content_type.encode()),
            (b"Content-Length", str(len(body)).encode()),
        ]
        token = await self._authorization()
        if token is not None:
            headers.append((b"Authorization", token.encode()))
        self.sent[method] += 1
        try:
            answer = await connection.exchange(h11.Request(method=method, target=target, headers=headers), body)
        except BaseException:
            await connection.aclose()
            raise
        if connection.reusable and not self._closed and len(self._idle) < self._max_idle:
            connection.h11.start_next_cycle()
            connection.idle_since = trio.current_time()
            self._idle.append(connection)
        else:
            await connection.aclose()
        return answer

    def _idle_connection(self) -> _Connection | None:
        expired_before = trio.current_time() - KEEPALIVE_EXPIRY
        while self._idle and self._idle[0].idle_since < expired_before:  # the oldest are at the left
            _abandon(self._idle.popleft())
        # The most recently used: the least likely to have been closed by the server.
        return self._idle.pop() if self._idle else None

    async def aclose(self) -> None:
        self._closed = True
        while self._idle:
            await self._idle.pop().aclose()


def _abandon(connection: _Connection) -> None:
    """Drop an expired idle connection without waiting: close its socket."""
    stream = connection.stream
    while isinstance(stream, trio.SSLStream):
        stream = stream.transport_stream
    if isinstance(stream, trio.SocketStream):
        stream.socket.close()


def tls_connector(host: str, port: int, context: ssl.SSLContext) -> Callable[[], Awaitable[trio.abc.Stream]]:
    """Open a TCP connection and its TLS session (ALPN http/1.1) to host:port."""

    async def connect() -> trio.abc.Stream:
        tcp = await trio.open_tcp_stream(host, port)
        tls = trio.SSLStream(tcp, context, server_hostname=host, https_compatible=True)
        try:
            await tls.do_handshake()
        except BaseException:
            await trio.aclose_forcefully(tls)
            raise
        return tls

    return connect

"""The lean HTTP/1.1 client of the renewal path, against an h11 server on in-memory streams."""

from __future__ import annotations

import h11
import pytest
import trio
import trio.testing

from lease_guard.stores._http1 import KEEPALIVE_EXPIRY, Http1Client, ProtocolError


class Server:
    """Serves each connection the client opens; answers each request with the next script entry."""

    def __init__(self, nursery: trio.Nursery) -> None:
        self.nursery = nursery
        self.connections = 0
        self.requests: list[tuple[bytes, bytes, dict[bytes, bytes], bytes]] = []
        self.script: list[tuple[int, bytes, list[tuple[bytes, bytes]]] | str] = []

    async def connect(self) -> trio.abc.Stream:
        client, server = trio.testing.memory_stream_pair()
        self.connections += 1
        self.nursery.start_soon(self.serve, server)
        return client

    async def serve(self, stream: trio.abc.Stream) -> None:
        conn = h11.Connection(our_role=h11.SERVER)
        while True:
            request: h11.Request | None = None
            body = b""
            while True:
                event = conn.next_event()
                if event is h11.NEED_DATA:
                    data = await stream.receive_some(65536)
                    if not data:
                        return
                    conn.receive_data(bytes(data))
                elif isinstance(event, h11.Request):
                    request = event
                elif isinstance(event, h11.Data):
                    body += event.data
                elif isinstance(event, h11.EndOfMessage):
                    break
                elif isinstance(event, h11.ConnectionClosed):
                    return
            assert request is not None
            self.requests.append((request.method, request.target, dict(request.headers), body))
            reply = self.script.pop(0)
            if reply == "hang up":
                await stream.send_all(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhalf")
                await stream.aclose()
                return
            assert not isinstance(reply, str)
            status, content, extra = reply
            headers = [(b"Content-Type", b"application/json"), (b"Content-Length", str(len(content)).encode()), *extra]
            out = conn.send(h11.Response(status_code=status, headers=headers)) or b""
            out += conn.send(h11.Data(data=content)) or b""
            out += conn.send(h11.EndOfMessage()) or b""
            await stream.send_all(out)
            if conn.our_state is h11.MUST_CLOSE:
                await stream.aclose()
                return
            conn.start_next_cycle()


async def token() -> str | None:
    return "Bearer t0k"


async def test_requests_reuse_one_kept_alive_connection_and_carry_the_headers(nursery: trio.Nursery) -> None:
    server = Server(nursery)
    server.script += [(200, b'{"n":1}', []), (409, b'{"n":2}', []), (200, b'{"n":3}', [])]
    client = Http1Client("kube.example:6443", server.connect, token, max_idle=4)
    answers = [await client.request("PUT", f"/leases/{n}", b'{"x":1}') for n in range(3)]
    assert [(a.status, a.body) for a in answers] == [(200, b'{"n":1}'), (409, b'{"n":2}'), (200, b'{"n":3}')]
    assert server.connections == 1
    method, target, headers, body = server.requests[0]
    assert (method, target, body) == (b"PUT", b"/leases/0", b'{"x":1}')
    assert headers[b"host"] == b"kube.example:6443"
    assert headers[b"authorization"] == b"Bearer t0k"
    assert headers[b"content-type"] == b"application/json"
    await client.aclose()


async def test_a_connection_the_server_closes_is_not_reused(nursery: trio.Nursery) -> None:
    server = Server(nursery)
    server.script += [(200, b"{}", [(b"Connection", b"close")]), (200, b"{}", [])]
    client = Http1Client("h", server.connect, token, max_idle=4)
    await client.request("PUT", "/a", b"{}")
    await client.request("PUT", "/a", b"{}")
    assert server.connections == 2


async def test_an_answer_cut_short_is_a_protocol_error_and_its_connection_dropped(nursery: trio.Nursery) -> None:
    server = Server(nursery)
    server.script += ["hang up", (200, b"{}", [])]
    client = Http1Client("h", server.connect, token, max_idle=4)
    with pytest.raises(ProtocolError, match="closed the connection"):
        await client.request("PUT", "/a", b"{}")
    assert (await client.request("PUT", "/a", b"{}")).status == 200
    assert server.connections == 2


async def test_idle_connections_expire(autojump_clock: trio.testing.MockClock, nursery: trio.Nursery) -> None:
    server = Server(nursery)
    server.script += [(200, b"{}", []), (200, b"{}", []), (200, b"{}", [])]
    client = Http1Client("h", server.connect, token, max_idle=4)
    await client.request("PUT", "/a", b"{}")
    await trio.sleep(KEEPALIVE_EXPIRY / 2)
    await client.request("PUT", "/a", b"{}")
    assert server.connections == 1
    await trio.sleep(KEEPALIVE_EXPIRY + 1)
    await client.request("PUT", "/a", b"{}")
    assert server.connections == 2


async def test_concurrent_requests_each_get_a_connection_and_at_most_max_idle_are_kept(
    nursery: trio.Nursery,
) -> None:
    server = Server(nursery)
    server.script += [(200, b"{}", [])] * 6
    client = Http1Client("h", server.connect, token, max_idle=2)
    async with trio.open_nursery() as requests:
        for _ in range(3):
            requests.start_soon(client.request, "PUT", "/a", b"{}")
    assert server.connections == 3
    async with trio.open_nursery() as requests:
        for _ in range(3):
            requests.start_soon(client.request, "PUT", "/a", b"{}")
    assert server.connections == 4  # two kept alive, one new

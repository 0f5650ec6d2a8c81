"""The lean HTTP client (net/httpclient.py) against real servers on loopback: aiohttp's server for the common
answers and TLS, and raw asyncio servers for the framings and faults aiohttp's server does not produce."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
from aiohttp import web

from eventferry.net.httpclient import HttpClient, HttpError
from tests.support.certs import authority, server_context

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@pytest.fixture
async def client() -> AsyncIterator[HttpClient]:
    client = HttpClient(per_host=4, total=8, keepalive=30)
    yield client
    await client.close()


async def aiohttp_server(routes: list[web.RouteDef], ssl_context: ssl.SSLContext | None = None,
                         ) -> tuple[web.AppRunner, int]:
    app = web.Application()
    app.add_routes(routes)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ssl_context)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    return runner, port


async def raw_server(handler: Handler) -> tuple[asyncio.Server, int]:
    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


async def read_request(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                  if line.lower().startswith(b"content-length"))
    return head, await reader.readexactly(length)


async def test_posts_headers_and_body_and_reuses_the_connection(client: HttpClient) -> None:
    seen: list[tuple[str, dict[str, str], bytes, object]] = []

    async def handle(request: web.Request) -> web.Response:
        seen.append((request.path_qs, dict(request.headers), await request.read(),
                     request.transport.get_extra_info("peername") if request.transport else None))
        return web.Response(status=202, headers={"ce-id": "reply"}, body=b"answer")

    runner, port = await aiohttp_server([web.post("/{tail:.*}", handle)])
    try:
        for i in range(3):
            answer = await client.post(f"http://127.0.0.1:{port}/a b?x=1", f"body {i}".encode(),
                                       {"ce-id": str(i), "ce-type": "t"}, timeout=5)
            assert (answer.status, answer.body, answer.headers["ce-id"], answer.truncated) == (
                202, b"answer", "reply", False)
    finally:
        await runner.cleanup()
    assert [s[2] for s in seen] == [b"body 0", b"body 1", b"body 2"]
    assert seen[0][0] == "/a%20b?x=1"
    assert seen[0][1]["ce-id"] == "0" and "Content-Type" not in seen[0][1]  # none made up
    assert len({s[3] for s in seen}) == 1, "each request opened a new connection"


async def test_chunked_and_close_framed_answers_and_interim_answers(client: HttpClient) -> None:
    answers = [
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nX-Trailer: 1\r\n\r\n",
        b"HTTP/1.0 200 OK\r\n\r\nuntil the end",
    ]

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        answer = answers.pop(0)
        for i in range(0, len(answer), 7):  # in small pieces, as a slow network would
            writer.write(answer[i:i + 7])
            await writer.drain()
        if not answers or b"HTTP/1.0" in answer:
            writer.close()
            return
        await read_request(reader)  # the next request arrives on the kept connection
        writer.write(answers.pop(0))
        writer.close()

    server, port = await raw_server(handle)
    async with server:
        first = await client.post(f"http://127.0.0.1:{port}/", b"x", {}, timeout=5)
        second = await client.post(f"http://127.0.0.1:{port}/", b"x", {}, timeout=5)
    assert (first.status, first.body) == (200, b"hello world")
    assert (second.status, second.body) == (200, b"until the end")


async def test_a_body_past_the_limit_is_cut_and_its_connection_not_reused(client: HttpClient) -> None:
    connections = 0

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        while True:
            try:
                await read_request(reader)
            except (asyncio.IncompleteReadError, ConnectionError):
                return
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n" + b"z" * 100000)
            await writer.drain()

    server, port = await raw_server(handle)
    async with server:
        for _ in range(2):
            answer = await client.post(f"http://127.0.0.1:{port}/", b"x", {}, timeout=5, max_body=1000)
            assert (answer.status, len(answer.body), answer.truncated) == (200, 1000, True)
    assert connections == 2


async def test_a_kept_connection_the_server_closed_is_replaced_without_failing_the_request(
        client: HttpClient) -> None:
    requests = 0

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal requests
        await read_request(reader)
        requests += 1
        # Keep-alive promised, then the server closes the idle connection (its keep-alive timeout).
        writer.write(b"HTTP/1.1 202 Accepted\r\nContent-Length: 0\r\n\r\n")
        await writer.drain()
        writer.close()

    server, port = await raw_server(handle)
    async with server:
        for _ in range(3):
            await asyncio.sleep(0.05)
            assert (await client.post(f"http://127.0.0.1:{port}/", b"x", {}, timeout=5)).status == 202
    assert requests == 3


async def test_faults_are_errors_not_answers(client: HttpClient) -> None:
    async def garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"SMTP ready\r\n\r\n")
        await writer.drain()

    async def cut(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 50\r\n\r\nonly some")
        writer.close()

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        await asyncio.sleep(10)

    for handler, raised in ((garbage, HttpError), (cut, HttpError), (silent, TimeoutError)):
        server, port = await raw_server(handler)
        async with server:
            with pytest.raises(raised):
                await client.post(f"http://127.0.0.1:{port}/", b"x", {}, timeout=0.5)
    with pytest.raises(OSError):  # nothing listens
        server, port = await raw_server(garbage)
        server.close()
        await server.wait_closed()
        await client.post(f"http://127.0.0.1:{port}/", b"x", {}, timeout=2)
    with pytest.raises(ValueError, match="line break"):
        await client.post("http://127.0.0.1:1/", b"x", {"ce-id": "a\r\nInjected: 1"}, timeout=2)


async def test_https_verifies_the_server_with_the_given_trust(client: HttpClient, tmp_path: Path) -> None:
    ca = authority(tmp_path, "subscribers")
    cert, key = ca.issue(tmp_path / "server")

    async def handle(request: web.Request) -> web.Response:
        return web.Response(status=202, body=await request.read())

    runner, port = await aiohttp_server([web.post("/", handle)], server_context(cert, key))
    try:
        answer = await client.post(f"https://localhost:{port}/", b"secret", {}, timeout=5,
                                   ssl_context=ca.client_context())
        assert (answer.status, answer.body) == (202, b"secret")
        with pytest.raises(ssl.SSLCertVerificationError):  # the system's CAs do not know this one
            await client.post(f"https://localhost:{port}/", b"x", {}, timeout=5)
    finally:
        await runner.cleanup()


async def test_requests_beyond_the_per_destination_bound_wait_for_a_slot(client: HttpClient) -> None:
    in_flight = peak = 0

    async def handle(request: web.Request) -> web.Response:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        await asyncio.sleep(0.05)
        in_flight -= 1
        return web.Response(status=200)

    runner, port = await aiohttp_server([web.post("/", handle)])
    try:
        answers = await asyncio.gather(*(client.post(f"http://127.0.0.1:{port}/", b"x", {}, timeout=5)
                                         for _ in range(20)))
    finally:
        await runner.cleanup()
    assert [a.status for a in answers] == [200] * 20
    assert peak == 4  # per_host


async def test_idle_connections_past_keepalive_are_closed_and_their_destination_forgotten() -> None:
    closed: list[str] = []

    def server_for(name: str) -> Handler:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            while True:
                try:
                    await read_request(reader)
                except (asyncio.IncompleteReadError, ConnectionError):
                    closed.append(name)  # the client closed it (this server never closes a kept connection)
                    return
                writer.write(b"HTTP/1.1 202 Accepted\r\nContent-Length: 0\r\n\r\n")
                await writer.drain()
        return handle

    client = HttpClient(per_host=4, total=8, keepalive=0.2)
    old, old_port = await raw_server(server_for("old"))
    new, new_port = await raw_server(server_for("new"))
    try:
        async with old, new:
            assert (await client.post(f"http://127.0.0.1:{old_port}/", b"x", {}, timeout=5)).status == 202
            await asyncio.sleep(0.3)  # past keepalive, with nothing sent to the old destination since
            assert (await client.post(f"http://127.0.0.1:{new_port}/", b"x", {}, timeout=5)).status == 202
            for _ in range(50):
                if closed:
                    break
                await asyncio.sleep(0.01)
            assert closed == ["old"]
            assert [key[2] for key in client._per_destination] == [new_port]  # nothing kept of the old one
    finally:
        await client.close()

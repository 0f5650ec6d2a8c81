"""kube-proxy's part for one Service, on loopback: a TCP proxy in front of the Service's ready endpoints.

No kube-proxy (and no cluster IP) runs here. ``ServiceProxy`` listens on 127.0.0.1 and a free port, the
stand-in for the Service's address; each accepted connection goes to the next endpoint round-robin (per
connection, as kube-proxy balances) and bytes are copied both ways until the connection ends. With no
endpoints an accepted connection is reset at once, so a client sees a connection error, as it does when a
Service has no ready endpoints.

It runs on the event loop that awaits ``start()``; ``set_endpoints`` may be called from any thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import socket
import struct

from tests.env.ports import LOOPBACK, free_port

CHUNK = 64 * 1024


class ServiceProxy:
    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self._endpoints: tuple[tuple[str, int], ...] = ()
        self._turn = itertools.count()
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Task[None]] = set()
        self.accepted = 0
        self.refused = 0  # connections reset because there was no endpoint

    @property
    def endpoints(self) -> list[tuple[str, int]]:
        return list(self._endpoints)

    def set_endpoints(self, endpoints: list[tuple[str, int]]) -> None:
        """The ready endpoints (host, port); new connections only, those open stay where they are."""
        self._endpoints = tuple(endpoints)  # one assignment: a connection sees the old list or the new

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accepted, LOOPBACK, self.port)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        for task in list(self._connections):
            task.cancel()
        await asyncio.gather(*self._connections, return_exceptions=True)

    def _accepted(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        task = asyncio.get_running_loop().create_task(self._connect(client_reader, client_writer))
        self._connections.add(task)
        task.add_done_callback(self._connections.discard)

    async def _connect(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        endpoints = self._endpoints
        if not endpoints:
            self.refused += 1
            reset(client_writer)
            return
        host, port = endpoints[next(self._turn) % len(endpoints)]
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(host, port)
        except OSError:
            reset(client_writer)  # the endpoint went away since it was listed: the client's connection fails
            return
        try:
            await asyncio.gather(copy(client_reader, upstream_writer), copy(upstream_reader, client_writer))
        finally:
            for writer in (client_writer, upstream_writer):
                writer.close()
            for writer in (client_writer, upstream_writer):
                with contextlib.suppress(OSError, asyncio.CancelledError):
                    await writer.wait_closed()


async def copy(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Bytes from one side to the other; the end of one direction is passed on as a half-close."""
    try:
        while chunk := await reader.read(CHUNK):
            writer.write(chunk)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
    except OSError:
        # A side reset: the other one is closed too (by the caller), as a dropped connection would be.
        writer.close()


def reset(writer: asyncio.StreamWriter) -> None:
    """Closes with a TCP reset rather than a clean end, so the client sees a connection error."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.close()

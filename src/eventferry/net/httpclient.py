"""A lean HTTP/1.1 client for one kind of request: a POST with a body in memory, its answer read up to a limit.

Every delivery, reply and adapter send is one such request, so its cost is paid per event: aiohttp's
client spent about 85 µs of CPU on each (request object, header multidicts, URL objects, response
stream), a quarter of the broker's time at saturation. Here a request is one write of pre-joined bytes
on a pooled keep-alive connection, and the answer is parsed from a buffer in ``data_received``; about a
quarter of that CPU (``python -m benchmarks --only broker`` measures the broker with it).

What it does, and no more:
- ``http`` and ``https`` (the caller's SSL context, the URL's host as SNI and for verification);
- keep-alive connections per (scheme, host, port, SSL context), idle ones closed after ``keepalive``
  seconds (checked as requests come: a destination no longer used leaves no socket or state behind);
  at most ``per_host`` requests at once per destination and ``total`` in all (callers beyond wait for a
  free slot: back-pressure, not an unbounded queue of connections);
- answers framed by ``Content-Length``, ``Transfer-Encoding: chunked``, or the end of the connection;
  1xx interim answers skipped; ``Connection: close`` and HTTP/1.0 honoured;
- a body over ``max_body`` is cut (``truncated``) and its connection closed rather than drained;
- a request on a reused connection that the server had closed meanwhile (no byte of an answer came) is
  sent once more on a new connection, as browsers and urllib3 do: the server never saw it, or saw it and
  answered nothing, and at-least-once delivery allows the duplicate of the second case.
No redirects, no proxies (as the aiohttp session before it, which did not trust the environment), no
compression (bodies go and come as they are).
"""

from __future__ import annotations

import asyncio
import base64
import collections
import functools
import ssl
import time
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import quote, unquote, urlsplit

from eventferry.net.tls import system_context

MAX_HEAD_BYTES = 64 * 1024  # status line and headers of an answer
_PATH_SAFE = "".join(chr(code) for code in range(0x21, 0x7F))  # printable ASCII stays; spaces and the rest: %XX
USER_AGENT = "eventferry"


class HttpError(OSError):
    """The exchange failed below HTTP semantics: a malformed answer, or the connection ended before one."""


@dataclass(slots=True)
class Answer:
    status: int
    headers: dict[str, str]  # names in lower case; repeated headers joined with ", "
    body: bytes
    truncated: bool


@dataclass(frozen=True, slots=True)
class _Target:
    scheme: str
    host: str
    port: int
    head: bytes  # "POST <path> HTTP/1.1\r\nHost: ...\r\n" plus the URL's credentials, if any


@functools.lru_cache(maxsize=4096)
def _target(url: str) -> _Target:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise ValueError(f"not an http or https URL: {url!r}")
    host = parts.hostname
    if not host:
        raise ValueError(f"no host in the URL {url!r}")
    port = parts.port or (443 if parts.scheme == "https" else 80)
    path = quote(parts.path or "/", safe=_PATH_SAFE)
    if parts.query:
        path = f"{path}?{quote(parts.query, safe=_PATH_SAFE)}"
    authority = f"[{host}]" if ":" in host else host
    if parts.port is not None:
        authority = f"{authority}:{parts.port}"
    head = f"POST {path} HTTP/1.1\r\nHost: {authority}\r\nUser-Agent: {USER_AGENT}\r\n"
    if parts.username is not None:
        credentials = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
        head += f"Authorization: Basic {base64.b64encode(credentials.encode()).decode()}\r\n"
    return _Target(parts.scheme, host, port, head.encode("utf-8"))


class _Exchange:
    """Parses one answer as its bytes arrive."""

    __slots__ = ("body", "chunk_left", "framing", "headers", "keep_alive", "length", "max_body", "size", "status",
                 "truncated")

    def __init__(self, max_body: int) -> None:
        self.max_body = max_body
        self.status = 0
        self.headers: dict[str, str] = {}
        self.keep_alive = True
        self.framing = ""  # "" until the head is read, then "length", "chunked" or "close"
        self.length = 0
        self.chunk_left = -1  # chunked: bytes left of the current chunk (+2 for its CRLF); -1 reads a size line
        self.body: list[bytes] = []
        self.size = 0
        self.truncated = False

    def feed(self, buffer: bytearray) -> bool:
        """Consumes what it can of ``buffer``; whether the answer is complete."""
        while not self.framing:
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                if len(buffer) > MAX_HEAD_BYTES:
                    raise HttpError(f"the answer's headers exceed {MAX_HEAD_BYTES} bytes")
                return False
            head = bytes(buffer[:end]).decode("latin-1")
            del buffer[:end + 4]
            self._head(head)
        if self.framing == "length":
            self._take(buffer, self.length - self.size)
            return self.truncated or self.size >= self.length
        if self.framing == "chunked":
            return self._chunks(buffer)
        self._take(buffer, len(buffer))  # until the connection ends
        return self.truncated

    def _head(self, head: str) -> None:
        lines = head.split("\r\n")
        version, _, rest = lines[0].partition(" ")
        code = rest[:3]
        if not version.startswith("HTTP/1.") or not code.isdigit():
            raise HttpError(f"not an HTTP/1.x answer: {lines[0][:100]!r}")
        status = int(code)
        if 100 <= status < 200:  # an interim answer (100 Continue, 103 Early Hints): the real one follows
            return
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, colon, value = line.partition(":")
            if not colon:
                raise HttpError(f"a malformed header line in the answer: {line[:100]!r}")
            name, value = name.strip().lower(), value.strip()
            headers[name] = f"{headers[name]}, {value}" if name in headers else value
        self.status, self.headers = status, headers
        connection = headers.get("connection", "").lower()
        self.keep_alive = "close" not in connection if version == "HTTP/1.1" else "keep-alive" in connection
        if status in (204, 304):
            self.framing, self.length = "length", 0
        elif "chunked" in headers.get("transfer-encoding", "").lower():
            self.framing = "chunked"
        elif "content-length" in headers:
            try:
                self.length = int(headers["content-length"])
            except ValueError:
                raise HttpError(f"a malformed Content-Length: {headers['content-length'][:40]!r}") from None
            self.framing = "length"
        else:
            self.framing, self.keep_alive = "close", False

    def _take(self, buffer: bytearray, count: int) -> None:
        """Moves up to ``count`` bytes of the buffer into the body, and cuts it past ``max_body``."""
        if count <= 0 or not buffer:
            return
        piece = bytes(buffer[:count])
        del buffer[:count]
        room = self.max_body - self.size
        if len(piece) > room:
            self.body.append(piece[:room])
            self.size += room
            self.truncated, self.keep_alive = True, False
            return
        self.body.append(piece)
        self.size += len(piece)

    def _chunks(self, buffer: bytearray) -> bool:
        while True:
            if self.truncated:
                return True
            if self.chunk_left < 0:
                end = buffer.find(b"\r\n")
                if end < 0:
                    return False
                line = bytes(buffer[:end]).split(b";", 1)[0].strip()
                del buffer[:end + 2]
                try:
                    size = int(line, 16)
                except ValueError:
                    raise HttpError(f"a malformed chunk size: {line[:40]!r}") from None
                if size == 0:
                    self.framing = "trailer"
                    self.chunk_left = 0
                else:
                    self.chunk_left = size + 2
            if self.framing == "trailer":  # optional trailer fields, then an empty line
                end = buffer.find(b"\r\n")
                while end > 0:
                    del buffer[:end + 2]
                    end = buffer.find(b"\r\n")
                if end < 0:
                    return False
                del buffer[:2]
                return True
            data = min(self.chunk_left - 2, len(buffer))
            if data > 0:
                self._take(buffer, data)
                self.chunk_left -= data
                if self.truncated:
                    return True
            if self.chunk_left > 2:
                return False
            if len(buffer) < self.chunk_left:  # the CRLF after the chunk
                return False
            del buffer[:self.chunk_left]
            self.chunk_left = -1

    def answer(self) -> Answer:
        return Answer(self.status, self.headers, b"".join(self.body), self.truncated)


class _Connection(asyncio.Protocol):
    __slots__ = ("buffer", "exchange", "idle_since", "lost", "received", "reusable", "transport", "waiter")

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.exchange: _Exchange | None = None
        self.waiter: asyncio.Future[Answer] | None = None
        self.received = False  # a byte of the current answer came
        self.lost = False
        self.reusable = False  # the last answer ended cleanly and the server keeps the connection
        self.idle_since = 0.0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def send(self, data: bytes, exchange: _Exchange) -> asyncio.Future[Answer]:
        assert self.transport is not None
        self.exchange, self.received, self.reusable = exchange, False, False
        self.waiter = asyncio.get_running_loop().create_future()
        self.transport.write(data)
        return self.waiter

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        exchange, waiter = self.exchange, self.waiter
        if exchange is None or waiter is None or waiter.done():
            self.close()  # bytes nobody asked for: the connection's state is unknown
            return
        self.received = True
        try:
            complete = exchange.feed(self.buffer)
        except HttpError as error:
            self.close()
            waiter.set_exception(error)
            return
        if complete:
            self.exchange = None
            self.reusable = exchange.keep_alive and not self.buffer  # more than the answer: state unknown
            waiter.set_result(exchange.answer())

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        exchange, waiter = self.exchange, self.waiter
        if exchange is None or waiter is None or waiter.done():
            return
        if exchange.framing == "close":  # the end of the connection ends this answer
            waiter.set_result(exchange.answer())
        else:
            waiter.set_exception(HttpError(f"the server closed the connection before its answer was complete"
                                           f"{f' ({exc})' if exc else ''}"))

    def usable(self) -> bool:
        return not self.lost and self.transport is not None and not self.transport.is_closing()

    def close(self) -> None:
        self.lost = True
        if self.transport is not None:
            self.transport.abort()


# A destination: scheme, host, port, and the SSL context that verifies it (None for http).
_Key = tuple[str, str, int, ssl.SSLContext | None]


class HttpClient:
    def __init__(self, per_host: int = 100, total: int = 1000, keepalive: float = 30.0) -> None:
        self.per_host = per_host
        self.keepalive = keepalive
        self._total = asyncio.Semaphore(total)
        self._per_destination: dict[_Key, asyncio.Semaphore] = {}
        self._busy: collections.Counter[_Key] = collections.Counter()  # requests under way, per destination
        self._idle: dict[_Key, collections.deque[_Connection]] = {}
        self._swept = time.monotonic()
        self._closed = False

    async def post(self, url: str, body: bytes, headers: Mapping[str, str], *, timeout: float,
                   ssl_context: ssl.SSLContext | None = None, max_body: int = 4 * 1024 * 1024) -> Answer:
        """POSTs ``body``; raises OSError (HttpError) when no answer came, TimeoutError after ``timeout``,
        ValueError for a request that cannot be written (a bad URL, a line break in a header)."""
        if self._closed:
            raise HttpError("the HTTP client is closed")
        target = _target(url)
        context = ssl_context if target.scheme == "https" else None
        if target.scheme == "https" and context is None:
            context = system_context()
        block = "".join([f"{name}: {value}\r\n" for name, value in headers.items()])
        if block.count("\n") != len(headers) or block.count("\r") != len(headers):
            raise ValueError("a header name or value holds a line break")
        request = b"".join((target.head, block.encode("utf-8"), b"Content-Length: ", str(len(body)).encode(),
                            b"\r\n\r\n", body))
        self._sweep()
        key = (target.scheme, target.host, target.port, context)
        slots = self._per_destination.get(key)
        if slots is None:
            slots = self._per_destination[key] = asyncio.Semaphore(self.per_host)
        self._busy[key] += 1
        try:
            return await self._exchange(key, target, context, slots, request, timeout, max_body)
        finally:
            self._busy[key] -= 1

    async def _exchange(self, key: _Key, target: _Target, context: ssl.SSLContext | None, slots: asyncio.Semaphore,
                        request: bytes, timeout: float, max_body: int) -> Answer:
        async with asyncio.timeout(timeout), self._total, slots:
            for _ in range(2):
                connection, reused = await self._connection(key, target, context)
                try:
                    answer = await connection.send(request, _Exchange(max_body))
                except HttpError:
                    connection.close()
                    if reused and not connection.received:
                        continue  # the server had closed it while it was idle: once more, on a new one
                    raise
                except BaseException:  # timed out or cancelled mid-exchange: its state is unknown
                    connection.close()
                    raise
                self._release(key, connection)
                return answer
        raise HttpError("unreachable")  # pragma: no cover: the loop returns or raises

    async def _connection(self, key: _Key, target: _Target,
                          context: ssl.SSLContext | None) -> tuple[_Connection, bool]:
        idle = self._idle.get(key)
        now = time.monotonic()
        while idle:
            connection = idle.pop()  # the most recently used: the least likely to have timed out
            if connection.usable() and now - connection.idle_since < self.keepalive:
                return connection, True
            connection.close()
        loop = asyncio.get_running_loop()
        _transport, connection = await loop.create_connection(
            _Connection, target.host, target.port, ssl=context,
            server_hostname=target.host if context is not None else None)
        return connection, False

    def _release(self, key: _Key, connection: _Connection) -> None:
        if not connection.reusable or not connection.usable() or self._closed:
            connection.close()
            return
        connection.idle_since = time.monotonic()
        connection.waiter = None
        idle = self._idle.get(key)
        if idle is None:
            idle = self._idle[key] = collections.deque()
        idle.append(connection)
        if len(idle) > self.per_host:
            idle.popleft().close()

    def _sweep(self) -> None:
        """Closes the idle connections past ``keepalive``, and forgets destinations with nothing under way or kept;
        at most twice per ``keepalive``."""
        now = time.monotonic()
        if now - self._swept < self.keepalive / 2:
            return
        self._swept = now
        for key in list(self._per_destination):
            idle = self._idle.get(key)
            while idle and (not idle[0].usable() or now - idle[0].idle_since >= self.keepalive):
                idle.popleft().close()  # the oldest first: the deque is in the order they were released
            if not idle and self._busy[key] <= 0:
                self._idle.pop(key, None)
                self._busy.pop(key, None)
                del self._per_destination[key]

    async def close(self) -> None:
        self._closed = True
        for idle in self._idle.values():
            while idle:
                idle.pop().close()
        self._idle.clear()
        await asyncio.sleep(0)  # let the transports' close callbacks run


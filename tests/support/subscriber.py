"""A real HTTP subscriber for tests: records what it receives and answers as the test scripts it."""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from types import TracebackType

from aiohttp import web

from eventferry.events import CloudEvent
from eventferry.events.http import from_http


@dataclass
class Received:
    event: CloudEvent
    headers: dict[str, str]
    path: str
    at: float


@dataclass
class Answer:
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    delay: float = 0.0


# Decides the answer for a request: (received, how many requests this path has seen before) -> Answer.
Script = Callable[[Received, int], Answer]


class Subscriber:
    """Listens on 127.0.0.1 on a free port; every path is accepted."""

    def __init__(self, script: Script | None = None) -> None:
        self.script = script or (lambda received, count: Answer())
        self.received: list[Received] = []  # requests answered 2xx
        self.requests: list[Received] = []  # every request, whatever the answer
        self.counts: dict[str, int] = {}
        self._runner: web.AppRunner | None = None
        self.port = 0
        self.tls: ssl.SSLContext | None = None
        self._arrived = asyncio.Condition()

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"

    async def start(self, port: int = 0, tls: ssl.SSLContext | None = None) -> Subscriber:
        """``tls``: serve HTTPS with this server context."""
        self.tls = tls
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", port, ssl_context=tls)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        headers = {k.lower(): v for k, v in request.headers.items()}
        event = from_http(request.headers, body)[0]
        received = Received(event, headers, request.path, time.monotonic())
        count = self.counts.get(request.path, 0)
        self.counts[request.path] = count + 1
        self.requests.append(received)
        answer = self.script(received, count)
        if answer.delay:
            await asyncio.sleep(answer.delay)
        if 200 <= answer.status <= 299:
            async with self._arrived:
                self.received.append(received)
                self._arrived.notify_all()
        return web.Response(status=answer.status, headers=answer.headers, body=answer.body)

    def at(self, path: str) -> list[Received]:
        return [r for r in self.received if r.path == path]

    async def wait_for(self, count: int, path: str | None = None, timeout: float = 20.0) -> list[Received]:
        """Waits until ``count`` events were accepted (at ``path``, if given); returns them."""

        def enough() -> bool:
            return len(self.at(path) if path else self.received) >= count

        async with self._arrived:
            try:
                await asyncio.wait_for(self._arrived.wait_for(enough), timeout)
            except TimeoutError:
                got = len(self.at(path) if path else self.received)
                raise AssertionError(f"expected {count} events at {path or 'any path'}, got {got} "
                                     f"within {timeout}s") from None
        return self.at(path) if path else list(self.received)


class Subscribers:
    """Starts Subscribers and stops them all at the end: ``await subscribers(script)`` starts one and returns it.

    The ``subscribers`` fixture (tests/conftest.py) is one, stopped after the test; elsewhere (code that is not a
    test) ``async with Subscribers() as subscribers:`` stops them on leaving the block.
    """

    def __init__(self) -> None:
        self.started: list[Subscriber] = []

    async def __call__(self, script: Script | None = None, *, port: int = 0,
                       tls: ssl.SSLContext | None = None) -> Subscriber:
        """A Subscriber answering as ``script`` (None: 200 to everything), listening on ``port`` (0: a free one),
        over HTTPS with ``tls``."""
        subscriber = Subscriber(script)
        self.started.append(subscriber)  # before start: a half-started one is cleaned up too
        return await subscriber.start(port, tls)

    async def stop(self) -> None:
        """Stops every Subscriber started so far, in the order they were started."""
        while self.started:
            await self.started.pop(0).stop()

    async def __aenter__(self) -> Subscribers:
        return self

    async def __aexit__(self, kind: type[BaseException] | None, error: BaseException | None,
                        traceback: TracebackType | None) -> None:
        await self.stop()

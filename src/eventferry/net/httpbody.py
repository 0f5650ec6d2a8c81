"""Reading a whole HTTP body up to a limit, from an aiohttp stream (a request's: the ingress).

``StreamReader.read(n)`` returns what happens to be buffered, not n bytes: a body larger than one
network read would be cut short. Every body the project reads goes through ``read_body``.
"""

from __future__ import annotations

from aiohttp import StreamReader


class BodyTooLarge(Exception):
    """The body passed the limit; ``received`` bytes had arrived when reading stopped."""

    def __init__(self, limit: int, received: int) -> None:
        super().__init__(f"body exceeds the limit of {limit} bytes")
        self.limit = limit
        self.received = received


async def read_body(stream: StreamReader, limit: int) -> bytes:
    """All of the body, chunked or not; raises BodyTooLarge as soon as more than ``limit`` bytes arrived."""
    chunks: list[bytes] = []
    size = 0
    while True:
        chunk = await stream.readany()
        if not chunk:
            return b"".join(chunks)
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge(limit, size)
        chunks.append(chunk)

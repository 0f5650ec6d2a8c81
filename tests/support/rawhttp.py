"""HTTP/1.1 written by hand over a socket, for what a client library will not send: bytes that are not
UTF-8 in headers, bodies in many small pieces or paused, half-sent requests, oversized headers."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass


@dataclass
class RawAnswer:
    status: int
    headers: dict[str, str]
    body: bytes


async def read_answer(reader: asyncio.StreamReader, timeout: float = 30) -> RawAnswer:
    async with asyncio.timeout(timeout):
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ")[1])
        headers = {}
        for line in lines[1:]:
            if ":" in line:
                key, _, value = line.partition(":")
                headers[key.strip().lower()] = value.strip()
        length = int(headers.get("content-length", "0"))
        body = await reader.readexactly(length) if length else b""
    return RawAnswer(status, headers, body)


def request_head(path: str, headers: list[tuple[bytes, bytes]], *, chunked: bool = False,
                 length: int | None = None) -> bytes:
    lines = [f"POST {path} HTTP/1.1".encode(), b"Host: 127.0.0.1"]
    lines += [key + b": " + value for key, value in headers]
    if chunked:
        lines.append(b"Transfer-Encoding: chunked")
    elif length is not None:
        lines.append(f"Content-Length: {length}".encode())
    return b"\r\n".join(lines) + b"\r\n\r\n"


async def send_raw(port: int, path: str, headers: list[tuple[bytes, bytes]], body: bytes, *, chunk: int = 0,
                   pause: float = 0.0, chunked: bool = False, timeout: float = 60) -> RawAnswer:
    """POSTs ``body``; with ``chunk``, in pieces of that size (``pause`` seconds apart), as chunked encoding
    when ``chunked``, else under one Content-Length.

    The answer is read while the request is still being written: a server that refuses early (413, 431,
    400) answers and closes, and the write that fails next must not lose that answer. Status 0 means the
    server closed the connection before any answer could be read."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    answer = asyncio.ensure_future(read_answer(reader, timeout))
    try:
        step = chunk or max(1, len(body))
        try:
            writer.write(request_head(path, headers, chunked=chunked, length=None if chunked else len(body)))
            for start in range(0, len(body), step):
                if answer.done():
                    break  # answered already (refused): the rest is not wanted
                piece = body[start:start + step]
                writer.write(f"{len(piece):x}\r\n".encode() + piece + b"\r\n" if chunked else piece)
                await writer.drain()
                if pause:
                    await asyncio.sleep(pause)
            if chunked and not answer.done():
                writer.write(b"0\r\n\r\n")
            await writer.drain()
        except ConnectionError:
            pass  # the server answered early (413, 408) and closed: its answer is read below
        try:
            return await answer
        except (ConnectionError, asyncio.IncompleteReadError):
            return RawAnswer(0, {}, b"")
    finally:
        answer.cancel()
        writer.close()

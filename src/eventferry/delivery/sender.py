"""One HTTP attempt: a CloudEvent POSTed to a URL, over a pooled keep-alive client (net/httpclient.py)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from eventferry.events import CloudEvent
from eventferry.events.http import to_batch, to_binary, to_structured
from eventferry.net.httpclient import HttpClient
from eventferry.net.tls import Trust

# Bytes of a response body kept for replies and for ``knativeerrordata``.
MAX_RESPONSE_BYTES = 4 * 1024 * 1024


@dataclass(slots=True)
class Attempt:
    status: int | None  # None when no answer came (transport error or timeout)
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    error: str | None = None
    truncated: bool = False  # the answer's body held more than MAX_RESPONSE_BYTES; ``body`` is its start

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status <= 299


# url -> the Authorization header to send there, or None.
Authorization = Callable[[str], Awaitable[str | None]]


class Sender:
    """Owns the connection pool; one per process component. Bounded per target host.

    ``authorization``: the ``Authorization`` header of a request to a URL (an adapter's token, for its sink
    only; the data plane's, for the destinations with an audience: a token for one audience goes to no other
    destination), asked for each request so that a renewed token is used at once; None sends none."""

    def __init__(self, per_host: int = 100, total: int = 1000,
                 authorization: Authorization | None = None) -> None:
        self._per_host = per_host
        self._total = total
        self.authorization = authorization
        self.trust = Trust()
        """Which CA certificates verify an https destination: the system's, plus its own (``Trust.set``)."""
        self._client: HttpClient | None = None

    async def start(self) -> None:
        if self._client is None:
            self._client = HttpClient(per_host=self._per_host, total=self._total, keepalive=30)

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None

    async def send(self, url: str, event: CloudEvent, *, timeout: float, structured: bool = False,
                   headers: dict[str, str] | None = None) -> Attempt:
        try:
            wire_headers, body = to_structured(event) if structured else to_binary(event)
        except Exception as error:  # an event that cannot be encoded is a failed attempt, as any other fault
            return Attempt(None, error=f"the request could not be made: {type(error).__name__}: {error}")
        return await self._post(url, body, wire_headers, headers, timeout)

    async def send_batch(self, url: str, events: list[CloudEvent], *, timeout: float) -> Attempt:
        """One request with every event of ``events`` (a CloudEvents JSON batch): all are taken or none."""
        try:
            wire_headers, body = to_batch(events)
        except Exception as error:
            return Attempt(None, error=f"the request could not be made: {type(error).__name__}: {error}")
        return await self._post(url, body, wire_headers, None, timeout)

    async def _post(self, url: str, body: bytes, wire_headers: dict[str, str], headers: dict[str, str] | None,
                    timeout: float) -> Attempt:
        if self._client is None:
            await self.start()
        assert self._client is not None
        try:
            if headers:
                wire_headers.update(headers)
            if self.authorization is not None:
                credentials = await self.authorization(url)
                if credentials:
                    wire_headers["Authorization"] = credentials
            # An event without datacontenttype goes without Content-Type (the client adds none): one made up
            # here would reach the receiver as the event's datacontenttype.
            context = self.trust.context_for(url) if url.startswith("https:") else None
            answer = await self._client.post(url, body, wire_headers, timeout=timeout, ssl_context=context,
                                             max_body=MAX_RESPONSE_BYTES)
            return Attempt(answer.status, answer.body, answer.headers, truncated=answer.truncated)
        except TimeoutError:
            return Attempt(None, error=f"timed out after {timeout:g}s")
        except OSError as error:
            return Attempt(None, error=f"{type(error).__name__}: {error}")
        except Exception as error:  # any fault of one attempt is a failed attempt, retried by policy
            return Attempt(None, error=f"the request could not be made: {type(error).__name__}: {error}")

"""A RocketMQ consumer group's backlog, read over RocketMQ's remoting protocol: known while no adapter runs.

The gRPC API of the RocketMQ 5 proxy, which the adapter uses, has no call for offsets; the remoting
protocol has, and both a name server and the proxy's remoting port answer it (``spec.remotingEndpoints``):

1. ``GET_ROUTEINFO_BY_TOPIC`` (105): the topic's queues per broker, and where each broker is reached;
2. per queue, ``GET_MAX_OFFSET`` (30) and the group's ``QUERY_CONSUMER_OFFSET`` (14).

Backlog = the sum over the queues of max offset - consumer offset (a queue the group never consumed
counts whole: a new group starts at the first message it can read). A message popped and not yet
acknowledged counts as consumed: it is in flight, not waiting.

A frame is ``length (4) | 0 (JSON) and header length (4) | header JSON | body``, big-endian; a response
echoes the request's ``opaque``. The route body is fastjson, whose maps with numeric keys carry
unquoted keys (``{0:"host:port"}``): they are quoted before parsing.

With the source's access and secret keys, requests are signed as RocketMQ's ACL clients sign them
(``AclClientRPCHook``), which a broker with ACL (1.0 or 2.0) requires: the header fields gain
``AccessKey``, and ``Signature`` = base64(HMAC-SHA1(secret key, the fields' values in the order of
their names, then the body)).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import itertools
import json
import re
import struct
from dataclasses import dataclass, field
from typing import Any

from eventferry.apis.rocketmqsource import RocketMQSourceSpec, split_endpoints
from eventferry.kafka.connection import SecretLookup, secret_value
from eventferry.resources.scaling import Lag

GET_ROUTEINFO_BY_TOPIC = 105
GET_MAX_OFFSET = 30
QUERY_CONSUMER_OFFSET = 14
SUCCESS = 0
QUERY_NOT_FOUND = 22
TOPIC_NOT_EXIST = 17
RESPONSE_FLAG = 1
TIMEOUT = 10.0
VERSION = 473  # the RocketMQ 5.x client version a request claims; the server only reads it for compatibility
_NUMERIC_KEY = re.compile(r'([{,])\s*(-?\d+)\s*:')


class RemotingError(RuntimeError):
    """A remoting request failed; the message says which and what the server answered."""


@dataclass(frozen=True)
class Credentials:
    access_key: str
    secret_key: str = field(repr=False)


def credentials_of(spec: RocketMQSourceSpec, secrets: SecretLookup) -> Credentials | None:
    """The source's keys (``spec.accessKey``, ``spec.secretKey``), or None when it has none."""
    access_key = secret_value(secrets, spec.access_key, "spec.accessKey")
    secret_key = secret_value(secrets, spec.secret_key, "spec.secretKey")
    if not access_key or secret_key is None:
        return None
    return Credentials(access_key.strip(), secret_key.strip())


def sign(fields: dict[str, str], credentials: Credentials, body: bytes = b"") -> dict[str, str]:
    """The header fields of a request signed with ``credentials`` (RocketMQ's AclClientRPCHook)."""
    signed = {**fields, "AccessKey": credentials.access_key}
    content = "".join(signed[name] for name in sorted(signed)).encode("utf-8") + body
    digest = hmac.new(credentials.secret_key.encode("utf-8"), content, hashlib.sha1).digest()
    return {**signed, "Signature": base64.b64encode(digest).decode("ascii")}


def encode(code: int, opaque: int, fields: dict[str, str], body: bytes = b"") -> bytes:
    header = json.dumps({"code": code, "language": "PYTHON", "version": VERSION, "opaque": opaque, "flag": 0,
                         "extFields": fields, "serializeTypeCurrentRPC": "JSON"}).encode()
    return struct.pack(">II", 4 + len(header) + len(body), len(header)) + header + body


def decode(frame: bytes) -> tuple[dict[str, Any], bytes]:
    """A frame without its leading length -> (header, body)."""
    (mark,) = struct.unpack(">I", frame[:4])
    if mark >> 24 != 0:
        raise RemotingError("the server answered in RocketMQ's binary header format, not JSON")
    length = mark & 0xFFFFFF
    header: dict[str, Any] = json.loads(frame[4:4 + length])
    return header, frame[4 + length:]


def parse_route(body: bytes) -> dict[str, Any]:
    text = _NUMERIC_KEY.sub(r'\1"\2":', body.decode("utf-8"))
    route: dict[str, Any] = json.loads(text)
    return route


class Connection:
    """One TCP connection to a remoting server; requests one at a time (the reader is simple)."""

    def __init__(self, address: str, credentials: Credentials | None = None) -> None:
        self.address = address
        self.credentials = credentials
        self._streams: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        self._opaque = itertools.count(1)
        self._lock = asyncio.Lock()

    async def request(self, code: int, fields: dict[str, str]) -> tuple[dict[str, Any], bytes]:
        async with self._lock, asyncio.timeout(TIMEOUT):
            if self._streams is None:
                host, _, port = self.address.rpartition(":")
                self._streams = await asyncio.open_connection(host, int(port))
            reader, writer = self._streams
            opaque = next(self._opaque)
            try:
                if self.credentials is not None:
                    fields = sign(fields, self.credentials)
                writer.write(encode(code, opaque, fields))
                await writer.drain()
                while True:
                    (length,) = struct.unpack(">I", await reader.readexactly(4))
                    header, body = decode(await reader.readexactly(length))
                    if header.get("opaque") == opaque and int(header.get("flag", 0)) & RESPONSE_FLAG:
                        return header, body
            except BaseException:
                await self.close()
                raise

    async def close(self) -> None:
        streams, self._streams = self._streams, None
        if streams is not None:
            streams[1].close()
            with contextlib.suppress(Exception):
                await streams[1].wait_closed()


class BacklogReader:
    """Reads a group's backlog on a topic through the first of ``endpoints`` that answers."""

    def __init__(self, endpoints: str, topic: str, group: str, namespace: str | None = None,
                 credentials: Credentials | None = None) -> None:
        self.endpoints = split_endpoints(endpoints)
        self.credentials = credentials
        # A RocketMQ namespace prefixes the resource names on the wire (``ns%topic``), as the clients do.
        self.topic = f"{namespace}%{topic}" if namespace else topic
        self.group = f"{namespace}%{group}" if namespace else group
        self._connections: dict[str, Connection] = {}

    def _connection(self, address: str) -> Connection:
        if address not in self._connections:
            self._connections[address] = Connection(address, self.credentials)
        return self._connections[address]

    async def read(self) -> Lag:
        errors = []
        for endpoint in self.endpoints:
            try:
                return await self._read(endpoint)
            except (OSError, TimeoutError, RemotingError, ValueError, asyncio.IncompleteReadError) as error:
                errors.append(f"{endpoint}: {error or type(error).__name__}")
        raise RemotingError("; ".join(errors))

    async def _read(self, endpoint: str) -> Lag:
        header, body = await self._connection(endpoint).request(GET_ROUTEINFO_BY_TOPIC, {"topic": self.topic})
        if header.get("code") == TOPIC_NOT_EXIST:
            return Lag(0, 0)
        _check(header, f"route of topic {self.topic}")
        route = parse_route(body)
        addresses = {broker["brokerName"]: _master(broker) for broker in route.get("brokerDatas") or ()}
        total = queues = 0
        for queue_data in route.get("queueDatas") or ():
            broker = str(queue_data["brokerName"])
            address = addresses.get(broker)
            if address is None:
                continue
            connection = self._connection(address)
            for queue_id in range(int(queue_data.get("readQueueNums", 0))):
                fields = {"topic": self.topic, "queueId": str(queue_id), "bname": broker, "brokerName": broker}
                header, _ = await connection.request(GET_MAX_OFFSET, fields)
                _check(header, f"max offset of {self.topic} queue {queue_id} on {broker}")
                maximum = int(header["extFields"]["offset"])
                header, _ = await connection.request(QUERY_CONSUMER_OFFSET, {**fields, "consumerGroup": self.group})
                if header.get("code") == QUERY_NOT_FOUND:
                    consumed = 0
                else:
                    _check(header, f"offset of group {self.group} on {self.topic} queue {queue_id}")
                    consumed = int(header["extFields"]["offset"])
                total += max(0, maximum - consumed)
                queues += 1
        return Lag(total, queues)

    async def close(self) -> None:
        for connection in self._connections.values():
            await connection.close()
        self._connections.clear()


def _master(broker: dict[str, Any]) -> str | None:
    addresses = broker.get("brokerAddrs") or {}
    return addresses.get("0") or next(iter(addresses.values()), None)


def _check(header: dict[str, Any], what: str) -> None:
    if header.get("code") == SUCCESS:
        return
    remark = str(header.get("remark") or "no remark")
    advice = ""
    if "no permission" in remark:
        advice = " (reading offsets is RocketMQ's Get action: grant the source's user Get on the topic and the group)"
    elif "signature" in remark or "username cannot be null" in remark or (
            "user" in remark.lower() and "not found" in remark.lower()):
        advice = " (the broker checks keys: see spec.accessKey and spec.secretKey)"
    raise RemotingError(f"{what}: code {header.get('code')}: {remark}{advice}")

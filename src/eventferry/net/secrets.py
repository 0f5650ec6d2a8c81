"""Reading the Secrets the contract names (a Kafka-class Broker's credentials): by name, values kept in memory.

The contract holds Secret names only, so that no Secret value sits in a ConfigMap; the component that
connects reads the values itself: the data plane in a cluster through the API (``api_secret_reader``), the
embedded mode from the Secret manifests among its files (``Embedded.read_secret``).
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from eventferry.net.kubeconn import ApiError

# (namespace, name) -> the Secret's values (decoded), or None when there is no such Secret.
SecretReader = Callable[[str, str], Awaitable[Mapping[str, str] | None]]


def secret_values(secret: Mapping[str, Any]) -> dict[str, str]:
    """A Secret object's ``data``, decoded (a value that is not text reads as empty: no credential is binary)."""
    values: dict[str, str] = {}
    for key, encoded in (secret.get("data") or {}).items():
        try:
            values[str(key)] = base64.b64decode(str(encoded), validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            values[str(key)] = ""
    return values


def api_secret_reader(request: Callable[..., Awaitable[Any]]) -> SecretReader:
    """Through the API server (``request(method, path)`` with the replica's credentials: get on secrets)."""

    async def read(namespace: str, name: str) -> Mapping[str, str] | None:
        try:
            secret = await request("GET", f"/api/v1/namespaces/{namespace}/secrets/{name}")
        except ApiError as error:
            if error.status == 404:
                return None
            raise
        return secret_values(secret)

    return read

"""Tokens the data plane presents to the destinations that ask for one (a subscriber's ``audience``, a Broker
that checks senders): its own ServiceAccount's, for each audience, from the TokenRequest API.

A token is requested once per audience and used until 80 % of its life has passed, then replaced: a
subscriber sees one request to the API server per audience per ~48 minutes, not one per delivery. Which
ServiceAccount: the replica's (``--service-account``, in the chart the pod's own), which needs
``create`` on its own ``serviceaccounts/token``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

TOKEN_SECONDS = 3600
RENEW_AT = 0.8  # of the token's life


class ServiceAccountTokens:
    def __init__(self, request: Callable[..., Awaitable[Any]], namespace: str, name: str,
                 seconds: int = TOKEN_SECONDS, clock: Callable[[], float] = time.monotonic) -> None:
        self._request = request
        self.namespace, self.name = namespace, name
        self._seconds = seconds
        self._clock = clock
        self._tokens: dict[str, tuple[str, float]] = {}  # audience -> (token, renew after)
        self._locks: dict[str, asyncio.Lock] = {}
        self.requests = 0

    @property
    def subject(self) -> str:
        return f"system:serviceaccount:{self.namespace}:{self.name}"

    async def token(self, audience: str) -> str:
        held = self._tokens.get(audience)
        if held is not None and self._clock() < held[1]:
            return held[0]
        lock = self._locks.setdefault(audience, asyncio.Lock())
        async with lock:  # one request per audience, however many deliveries wait for it
            held = self._tokens.get(audience)
            if held is not None and self._clock() < held[1]:
                return held[0]
            asked = self._clock()
            answer = await self._request(
                "POST", f"/api/v1/namespaces/{self.namespace}/serviceaccounts/{self.name}/token",
                body={"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
                      "spec": {"audiences": [audience], "expirationSeconds": self._seconds}})
            self.requests += 1
            token = str(answer["status"]["token"])
            self._tokens[audience] = (token, asked + self._seconds * RENEW_AT)
            return token

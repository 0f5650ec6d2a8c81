"""Where the Kubernetes API server is and how to authenticate, for the async clients of the operator
and the data plane (each keeps its own few calls; neither imports the other)."""

from __future__ import annotations

import ssl
from collections.abc import Callable
from dataclasses import dataclass


class ApiError(Exception):
    """The API server answered a request with an error status (``reason`` as in its Status, when it gave one)."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(f"HTTP {status} {reason}: {message}" if reason else f"HTTP {status}: {message}")
        self.status = status
        self.reason = reason
        self.message = message


@dataclass
class ApiConnection:
    """Where the API server is and how to authenticate: enough for a few requests and one watch."""

    server: str
    ssl_context: ssl.SSLContext | None
    authorization: Callable[[], str | None]

    @classmethod
    def from_environment(cls) -> ApiConnection:
        """In a pod: its service account (the token file is read again as the kubelet rotates it).
        Elsewhere: KUBECONFIG (or ~/.kube/config). Raises KubeConfigError (an OSError) saying what to set."""
        from eventferry.net.kubeconfig import cluster_access

        access = cluster_access()
        return cls(access.server, access.ssl_context(), access.authorization)

"""Where the Kubernetes API server is and how to authenticate, for the async clients of the operator
and the data plane (each keeps its own few calls; neither imports the other)."""

from __future__ import annotations

import os
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
        """In a pod: its service account (the token file is re-read as the kubelet rotates it).
        Elsewhere: KUBECONFIG (or ~/.kube/config)."""
        from kubernetes import client, config

        configuration = client.Configuration()
        try:
            config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
        except config.ConfigException:
            # KUBECONFIG read now, not when the kubernetes package was imported (its default is fixed then).
            config.load_kube_config(config_file=os.environ.get("KUBECONFIG") or None,  # type: ignore[no-untyped-call]
                                    client_configuration=configuration)
        context: ssl.SSLContext | None = None
        if configuration.host.startswith("https"):
            context = ssl.create_default_context(cafile=configuration.ssl_ca_cert or None)
            if configuration.cert_file:
                context.load_cert_chain(configuration.cert_file, configuration.key_file)
            if not configuration.verify_ssl:
                context.check_hostname = False
                context.verify_mode = ssl.CERT_NONE

        def authorization() -> str | None:
            # Called per request: the loader's refresh hook reads a rotated token file again. The key is
            # "BearerToken" since kubernetes 36, "authorization" before.
            value = (configuration.get_api_key_with_prefix("BearerToken")
                     or configuration.get_api_key_with_prefix("authorization"))
            return str(value) if value else None

        return cls(configuration.host.rstrip("/"), context, authorization)

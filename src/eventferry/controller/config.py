"""The operator's own settings (flags or environment variables of ``eventferry operator``)."""

from __future__ import annotations

import os
import socket
import uuid
from dataclasses import dataclass, field
from typing import Literal

from eventferry import __version__
from eventferry.contract.senders import DEFAULT_AUTHORIZATION_MODE, AuthorizationMode
from eventferry.resources.adapter import AdapterSettings
from eventferry.resources.names import INGRESS_SERVICE, OPERATOR_LEASE, SYSTEM_NAMESPACE

DEFAULT_ADAPTER_IMAGE = f"ghcr.io/eventferry/eventferry:{__version__}"


def default_identity() -> str:
    """This replica in the Lease and in Events: the pod name, unique per process outside a cluster."""
    return os.environ.get("POD_NAME") or f"{socket.gethostname()}-{uuid.uuid4().hex[:8]}"


@dataclass(frozen=True)
class OperatorConfig:
    system_namespace: str = SYSTEM_NAMESPACE
    """Where the contract, the data plane status and the Lease live, and the ingress Service runs."""
    ingress_service: str = INGRESS_SERVICE
    adapter: AdapterSettings = field(default_factory=lambda: AdapterSettings(image=DEFAULT_ADAPTER_IMAGE))
    default_kafka_bootstrap: tuple[str, ...] = ()
    """For Kafka-class Brokers whose config ConfigMap names no bootstrap.servers."""
    debounce: float = 0.3
    """Seconds of quiet before the contract is compiled again after a change..."""
    debounce_max: float = 2.0
    """...but no longer than this after the first change, however busy the API is."""
    retry_interval: float = 10.0
    """Seconds between retries of what waits on something else (a Secret, a sink, a Kafka topic)."""
    report_stale_after: float = 30.0
    """A data plane replica whose heartbeat is older than this is no longer waited for."""
    load_wait: float = 1.0
    """After writing a contract, how long a pass waits for the data plane to load it before writing
    statuses (a fresh contract is usually loaded well within it: one status write instead of two)."""
    status_concurrency: int = 32
    """Status patches in flight at once."""
    metrics_host: str = "0.0.0.0"
    metrics_port: int = 8080
    lease_name: str = OPERATOR_LEASE
    lease_duration: float = 15.0
    identity: str = field(default_factory=default_identity)
    watch_timeout: int = 300
    """The server ends each watch after this many seconds (kopf then re-lists): a stalled stream heals."""
    backlog_url: str | None = None
    """Where KEDA reaches this operator's probe server (its ``/backlog/...`` endpoint, for RocketMQSources
    of class keda), e.g. ``http://eventferry-operator.eventferry-system.svc.cluster.local:9090``."""
    authentication: Literal["disabled", "required"] = "disabled"
    """``required``: Brokers take events only from senders with a ServiceAccount token for their audience
    (``status.address.audience``) whom an EventPolicy, or else ``authorization_mode``, allows."""
    authorization_mode: AuthorizationMode = DEFAULT_AUTHORIZATION_MODE
    """For Brokers that no EventPolicy selects (Knative's default-authorization-mode)."""
    transport_encryption: Literal["disabled", "permissive", "strict"] = "disabled"
    """Knative's modes: ``permissive``, Brokers also have an https address (the http one stays their address);
    ``strict``, their address is https only (the data plane runs with ``--https-only``)."""
    ingress_ca_certs: str | None = None
    """PEM CA certificates that verify the ingress's certificate: Brokers' ``address.CACerts``."""
    unload_timeout: float = 30.0
    """How long a deleted Kafka Broker waits for the data plane to drop it before its topics go."""

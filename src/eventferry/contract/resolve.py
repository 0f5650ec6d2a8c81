"""Destination resolution as Knative's: a uri, a ref to a Service or a Broker, or a uri relative to a ref."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import urljoin

from eventferry.apis.broker import broker_audience
from eventferry.apis.duck import Destination, KReference

# (namespace, name) -> URL, or None when that object is unknown or has no address yet.
Lookup = Callable[[str, str], str | None]


class Unresolvable(ValueError):
    """A destination that cannot be turned into a URL; ``reason`` is a CamelCase condition reason."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def cluster_service_url(namespace: str, name: str) -> str:
    return f"http://{name}.{namespace}.svc.cluster.local"


@dataclass
class Resolver:
    """Resolves destinations with lookups supplied by the caller (the API server, or local options)."""

    broker_url: Lookup
    service_url: Lookup = field(default=lambda namespace, name: cluster_service_url(namespace, name))
    # Other addressables by (apiVersion group, kind) -> lookup, e.g. Knative Services.
    others: dict[tuple[str, str], Lookup] = field(default_factory=dict)
    # Whether EventFerry Brokers check senders' tokens (they then have an audience).
    broker_audiences: bool = False
    # A Broker's address CACerts (its https ingress's CA), when it has them.
    broker_ca_certs: Lookup = field(default=lambda namespace, name: None)

    def ca_certs(self, destination: Destination, namespace: str) -> str | None:
        """The CA certificates to verify ``destination`` with, besides the system's: its own ``CACerts``, else
        those of the Broker it refers to (as Knative's addressable resolution returns them)."""
        if destination.ca_certs:
            return destination.ca_certs
        ref = destination.ref
        if ref is not None and ref.kind == "Broker" and ref.api_version.split("/")[0] == "eventferry.dev":
            return self.broker_ca_certs(ref.namespace or namespace, ref.name)
        return None

    def audience(self, destination: Destination, namespace: str) -> str | None:
        """The audience of the token to present to ``destination``: its own ``audience``, else an EventFerry
        Broker's when Brokers check tokens, else None (send no token)."""
        if destination.audience:
            return destination.audience
        ref = destination.ref
        if self.broker_audiences and ref is not None and ref.kind == "Broker" \
                and ref.api_version.split("/")[0] == "eventferry.dev":
            return broker_audience(ref.namespace or namespace, ref.name)
        return None

    def resolve(self, destination: Destination, namespace: str) -> str:
        if destination.ref is None:
            assert destination.uri is not None  # the model requires one of the two
            return destination.uri
        base = self._resolve_ref(destination.ref, namespace)
        if destination.uri:
            return urljoin(base if base.endswith("/") else base + "/", destination.uri.lstrip("/"))
        return base

    def _resolve_ref(self, ref: KReference, namespace: str) -> str:
        ns = ref.namespace or namespace
        group = ref.api_version.split("/")[0] if "/" in ref.api_version else ""
        if ref.kind == "Service" and group == "":
            url = self.service_url(ns, ref.name)
            if url is None:
                raise Unresolvable("ServiceNotFound", f"Service {ns}/{ref.name} does not exist")
            return url
        if ref.kind == "Broker" and group in ("eventferry.dev", "eventing.knative.dev"):
            url = self.broker_url(ns, ref.name)
            if url is None:
                raise Unresolvable("BrokerNotAddressable", f"Broker {ns}/{ref.name} does not exist or has no address")
            return url
        lookup = self.others.get((group, ref.kind))
        if lookup is None:
            raise Unresolvable("UnsupportedReference", f"cannot resolve a {ref.kind} ({ref.api_version}): refer to a "
                                                       "Service or a Broker, or give a uri")
        url = lookup(ns, ref.name)
        if url is None:
            raise Unresolvable("NotAddressable", f"{ref.kind} {ns}/{ref.name} does not exist or has no address")
        return url

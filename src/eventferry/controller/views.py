"""What the operator knows of the cluster: kopf's in-memory indices, read through typed accessors.

kopf keeps each index up to date from its watches and runs no handler before every index is fully
listed, so a handler (and the contract loop, started by the first one) never sees a partial cluster.
Index values are slimmed bodies (``slim``), so that a thousand Triggers cost little memory.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from eventferry.apis.broker import BROKER_CLASS_ANNOTATION, KNATIVE_BROKER_CLASS_ANNOTATION
from eventferry.apis.trigger import DELIVERY_ORDER_ANNOTATION, KNATIVE_DELIVERY_ORDER_ANNOTATION
from eventferry.contract.compile import AUTH_SECRET_KEY, BOOTSTRAP_KEY, PARTITIONS_KEY, REPLICATION_KEY
from eventferry.contract.resolve import Resolver, cluster_service_url
from eventferry.resources.names import TOPIC_RETAIN_ANNOTATION
from eventferry.resources.readiness import Report, parse_reports

Key = tuple[str, str]
KopfIndex = Mapping[Any, Iterable[Any]]
KAFKA_CONFIG_KEYS = (BOOTSTRAP_KEY, PARTITIONS_KEY, REPLICATION_KEY, AUTH_SECRET_KEY)
KOPF_PREFIX = "operator.eventferry.dev"
"""Prefix of kopf's progress and diff-base annotations (kept apart from the API's eventferry.dev/ ones)."""
_DROPPED_ANNOTATIONS = ("kubectl.kubernetes.io/last-applied-configuration",)

INDICES = ("broker_index", "trigger_index", "service_index", "configmap_index", "dataplane_index",
           "kafkasource_index", "rocketmqsource_index", "endpointslice_index", "eventpolicy_index")


def slim(body: Mapping[str, Any]) -> dict[str, Any]:
    """What the operator reads of a custom object: no managedFields, no kopf or kubectl annotations."""
    metadata = body.get("metadata") or {}
    annotations = {k: v for k, v in (metadata.get("annotations") or {}).items()
                   if not k.startswith(KOPF_PREFIX) and k not in _DROPPED_ANNOTATIONS}
    kept = {k: metadata.get(k) for k in ("name", "namespace", "uid", "generation", "resourceVersion",
                                         "deletionTimestamp", "labels") if metadata.get(k) is not None}
    if annotations:
        kept["annotations"] = annotations
    return {"apiVersion": body.get("apiVersion"), "kind": body.get("kind"), "metadata": kept,
            "spec": dict(body.get("spec") or {}), "status": dict(body.get("status") or {})}


def _annotations(body: Mapping[str, Any], *names: str) -> tuple[str | None, ...]:
    annotations = (body.get("metadata") or {}).get("annotations") or {}
    return tuple(annotations.get(name) for name in names)


def broker_fingerprint(body: Mapping[str, Any]) -> tuple[Any, ...]:
    """What of a Broker changes the contract or the resolution of other objects (not its conditions)."""
    metadata = body.get("metadata") or {}
    address = (body.get("status") or {}).get("address") or {}
    # Labels: an EventPolicy may select the Broker by them.
    labels = tuple(sorted((metadata.get("labels") or {}).items()))
    return (metadata.get("uid"), metadata.get("generation"), metadata.get("deletionTimestamp") is not None,
            labels, address.get("url"), address.get("CACerts"),
            *_annotations(body, BROKER_CLASS_ANNOTATION, KNATIVE_BROKER_CLASS_ANNOTATION, TOPIC_RETAIN_ANNOTATION))


def trigger_fingerprint(body: Mapping[str, Any]) -> tuple[Any, ...]:
    metadata = body.get("metadata") or {}
    return (metadata.get("uid"), metadata.get("generation"), metadata.get("deletionTimestamp") is not None,
            *_annotations(body, DELIVERY_ORDER_ANNOTATION, KNATIVE_DELIVERY_ORDER_ANNOTATION))


def kafka_config(data: Mapping[str, str] | None) -> dict[str, str]:
    return {k: v for k, v in (data or {}).items() if k in KAFKA_CONFIG_KEYS}


def deleting(body: Mapping[str, Any]) -> bool:
    return (body.get("metadata") or {}).get("deletionTimestamp") is not None


class Views:
    def __init__(self) -> None:
        self._indices: dict[str, KopfIndex] = {name: {} for name in INDICES}

    def attach(self, indices: Mapping[str, Any]) -> None:
        """Keeps kopf's live index objects (passed to the startup handler by their function names)."""
        for name in INDICES:
            self._indices[name] = indices[name]

    def _one(self, index: str, key: Any) -> Any:
        store = self._indices[index].get(key)
        return next(iter(store), None) if store is not None else None

    def _all(self, index: str) -> Iterator[Any]:
        for store in list(self._indices[index].values()):
            yield from store

    def brokers(self) -> list[dict[str, Any]]:
        return list(self._all("broker_index"))

    def broker(self, namespace: str, name: str) -> dict[str, Any] | None:
        found: dict[str, Any] | None = self._one("broker_index", (namespace, name))
        return found

    def triggers(self) -> list[dict[str, Any]]:
        return list(self._all("trigger_index"))

    def trigger(self, namespace: str, name: str) -> dict[str, Any] | None:
        found: dict[str, Any] | None = self._one("trigger_index", (namespace, name))
        return found

    def eventpolicies(self) -> list[dict[str, Any]]:
        return list(self._all("eventpolicy_index"))

    def source(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        index = {"KafkaSource": "kafkasource_index", "RocketMQSource": "rocketmqsource_index"}[kind]
        found: dict[str, Any] | None = self._one(index, (namespace, name))
        return found

    def sources(self, kind: str) -> list[dict[str, Any]]:
        return list(self._all({"KafkaSource": "kafkasource_index", "RocketMQSource": "rocketmqsource_index"}[kind]))

    def service_exists(self, namespace: str, name: str) -> bool:
        return (namespace, name) in self._indices["service_index"]

    def service_selector(self, namespace: str, name: str) -> dict[str, str] | None:
        """The Service's selector ({} when it has none), None when there is no such Service."""
        found: dict[str, str] | None = self._one("service_index", (namespace, name))
        return None if found is None else dict(found)

    def ready_endpoints(self, namespace: str, service: str) -> int:
        """Ready endpoints of a Service, over its EndpointSlices (each indexed with its own count)."""
        return sum(count for _, count in self._indices["endpointslice_index"].get((namespace, service), ()))

    def config_maps(self) -> dict[Key, dict[str, str]]:
        """The Kafka settings of every watched ConfigMap (the keys compile_contract reads), by (namespace, name):
        the operator's own and the Brokers' configs (labelled ``WATCHED``)."""
        return {key: next(iter(store)) for key, store in list(self._indices["configmap_index"].items())}

    def reports(self) -> dict[str, Report]:
        data: dict[str, str] | None = next(self._all("dataplane_index"), None)
        return parse_reports(data)

    def broker_address(self, namespace: str, name: str) -> str | None:
        """A Broker's ``status.address.url``, as Knative resolves a ref to a Broker."""
        body = self.broker(namespace, name)
        if body is None or deleting(body):
            return None
        url = ((body.get("status") or {}).get("address") or {}).get("url")
        return str(url) if url else None

    def broker_ca_certs(self, namespace: str, name: str) -> str | None:
        """A Broker's ``status.address.CACerts``: the CA of its https ingress."""
        body = self.broker(namespace, name)
        found = (((body or {}).get("status") or {}).get("address") or {}).get("CACerts")
        return str(found) if found else None

    def resolver(self, broker_audiences: bool = False) -> Resolver:
        """``broker_audiences``: Brokers check senders' tokens (then a ref to a Broker has an audience)."""
        def service_url(namespace: str, name: str) -> str | None:
            return cluster_service_url(namespace, name) if self.service_exists(namespace, name) else None

        return Resolver(broker_url=self.broker_address, service_url=service_url, broker_audiences=broker_audiences,
                        broker_ca_certs=self.broker_ca_certs)

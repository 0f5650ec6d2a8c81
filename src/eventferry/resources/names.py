"""Names, labels and annotations that the operator, the data plane and the adapters agree on."""

from __future__ import annotations

SYSTEM_NAMESPACE = "eventferry-system"
INGRESS_SERVICE = "eventferry-broker-ingress"

CONTRACT_CONFIGMAP = "eventferry-contract"
CONTRACT_KEY = "contract.json"
CONTRACT_GZIP_KEY = "contract.json.gz"  # binaryData, when the JSON is large (resources/contract.py)
# Each data plane replica writes the contract generation it has loaded here, under its pod name.
DATAPLANE_STATUS_CONFIGMAP = "eventferry-dataplane-status"

OPERATOR_LEASE = "eventferry-operator"
FIELD_MANAGER = "eventferry-operator"

PART_OF = {"app.kubernetes.io/part-of": "eventferry"}
WATCHED_LABEL = "eventferry.dev/watched"
WATCHED = {WATCHED_LABEL: "true"}
"""On the ConfigMaps the operator reads: its own (the contract, the data plane's reports, the subscriber endpoints)
and each one a Broker's spec.config names (the operator labels it). The operator watches ConfigMaps with this
label only (a server-side label selector), not every ConfigMap of the cluster."""
MANAGED_BY = {"app.kubernetes.io/managed-by": "eventferry-operator"}

SOURCE_LABEL = "eventferry.dev/source"
SOURCE_KIND_LABEL = "eventferry.dev/source-kind"
SOURCE_UID_LABEL = "eventferry.dev/source-uid"

TOPIC_RETAIN_ANNOTATION = "eventferry.dev/topic.retain"
"""On a Kafka-class Broker: ``"true"`` keeps its topics when the Broker is deleted."""


def broker_address(ingress_service: str, system_namespace: str, namespace: str, name: str, scheme: str = "http") -> str:
    """The URL producers POST to: the shared ingress Service (its port 80, or 443 for https), path
    ``/<namespace>/<name>``."""
    return f"{scheme}://{ingress_service}.{system_namespace}.svc.cluster.local/{namespace}/{name}"

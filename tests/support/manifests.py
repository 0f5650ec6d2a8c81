"""Manifest text for tests: a Broker of either class and its Triggers, as ``eventferry run`` reads them."""

from __future__ import annotations


def broker(name: str = "default", broker_class: str = "InMemory", bootstrap: str | None = None,
           partitions: int = 3) -> str:
    """A Broker; a Kafka one with the ConfigMap that names its bootstrap servers and partitions."""
    if broker_class != "Kafka":
        return f"""apiVersion: eventferry.dev/v1alpha1
kind: Broker
metadata: {{name: {name}}}
"""
    assert bootstrap is not None, "a Kafka broker needs bootstrap servers"
    return f"""apiVersion: v1
kind: ConfigMap
metadata: {{name: {name}-config}}
data:
  bootstrap.servers: "{bootstrap}"
  default.topic.partitions: "{partitions}"
  default.topic.replication.factor: "1"
---
apiVersion: eventferry.dev/v1alpha1
kind: Broker
metadata:
  name: {name}
  annotations: {{eventferry.dev/broker.class: Kafka}}
spec:
  config: {{apiVersion: v1, kind: ConfigMap, name: {name}-config}}
"""


def trigger(name: str, broker_name: str, uri: str, delivery: str | None = None, ordered: bool = False) -> str:
    """A Trigger to ``uri`` with no filter; ``delivery`` in flow YAML, as ``{retry: 3}``."""
    annotations = "\n  annotations: {eventferry.dev/delivery.order: ordered}" if ordered else ""
    return f"""---
apiVersion: eventferry.dev/v1alpha1
kind: Trigger
metadata:
  name: {name}{annotations}
spec:
  broker: {broker_name}
  subscriber: {{uri: "{uri}"}}
""" + (f"  delivery: {delivery}\n" if delivery else "")

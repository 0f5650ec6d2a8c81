"""The names a Kafka-class Broker uses in Kafka, in one place: the operator creates and deletes them, the
data plane writes and reads them, the embedded mode derives them the same way."""

from __future__ import annotations

import re

RETRY_TOPIC_INFIX = ".retry."


def topic_safe(text: str) -> str:
    """``text`` with every character Kafka does not allow in a name replaced by ``-``."""
    return re.sub(r"[^a-zA-Z0-9._-]", "-", text)


def broker_topic(namespace: str, name: str) -> str:
    """The Broker's topic, as Knative's Kafka broker names it."""
    return f"knative-broker-{namespace}-{name}"


def retry_topic(topic: str, trigger_namespace: str, trigger_name: str, trigger_uid: str = "") -> str:
    """A Trigger's retry topic beside its Broker's ``topic``: by uid, so a re-created Trigger starts afresh."""
    return f"{topic}{RETRY_TOPIC_INFIX}{topic_safe(trigger_uid or f'{trigger_namespace}.{trigger_name}')}"


def retry_topic_pattern(topic: str) -> str:
    """A regular expression that every retry topic of the Broker's ``topic`` matches in full."""
    return re.escape(topic + RETRY_TOPIC_INFIX) + ".+"


def group_prefix(namespace: str, name: str) -> str:
    """The start of every consumer group of the Broker (``-main``, ``-retry``, ``-trigger-<uid>``)."""
    return f"eventferry-{topic_safe(namespace)}-{topic_safe(name)}"

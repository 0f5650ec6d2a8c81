"""Kafka topics of Kafka-class Brokers: created when the Broker is, deleted with it (unless retained)."""

from __future__ import annotations

import logging
import re
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaConnectionError, TopicAlreadyExistsError

from eventferry.contract.kafka_names import retry_topic_pattern
from eventferry.contract.model import KafkaSettings
from eventferry.kafka.connection import (
    CredentialsError,
    broker_security,
    client_options,
    connection_failure,
    explain_connection_failure,
)
from eventferry.net.secrets import SecretReader

log = logging.getLogger(__name__)
TIMEOUT_MS = 10_000


class KafkaUnreachable(Exception):
    """The admin client could not connect; the message says why (refused credentials, a certificate...)."""


async def _admin(settings: KafkaSettings, read_secret: SecretReader) -> AIOKafkaAdminClient:
    """A started admin client with the Broker's credentials (its Secret read now, its values held in memory only)."""
    sasl, tls = None, None
    secret = settings.auth_secret
    where = "the Broker's config (no credentials Secret)"
    if secret is not None:
        where = f"Secret {secret.namespace}/{secret.name} (auth.secret.ref.name of the Broker's config)"
        values = await read_secret(secret.namespace, secret.name)
        if values is None:
            raise CredentialsError(f"{where} does not exist")
        sasl, tls = broker_security(values, where)
    options: dict[str, Any] = {**client_options(settings.bootstrap_servers, sasl, tls),
                               "request_timeout_ms": TIMEOUT_MS, "client_id": "eventferry-operator"}
    admin = AIOKafkaAdminClient(**options)
    try:
        await admin.start()
    except KafkaConnectionError as error:
        await admin.close()
        cause = await connection_failure(options)
        raise KafkaUnreachable(explain_connection_failure(cause or error, settings.bootstrap_servers, sasl,
                                                          where)) from None
    return admin


async def ensure_topic(settings: KafkaSettings, read_secret: SecretReader) -> bool:
    """Creates the Broker's topic with the configured partitions and replication; False if it existed.

    An existing topic is left as it is: Kafka cannot lower a partition count, and raising it would
    move keys between partitions (as Knative, the settings apply at creation only).
    """
    admin = await _admin(settings, read_secret)
    try:
        if settings.topic in await admin.list_topics():
            return False
        try:
            await admin.create_topics([NewTopic(settings.topic, settings.partitions, settings.replication_factor)])
        except TopicAlreadyExistsError:
            return False
        log.info("created topic %s (%d partitions, replication %d)", settings.topic, settings.partitions,
                 settings.replication_factor)
        return True
    finally:
        await admin.close()


def broker_topics(topic: str, existing: set[str]) -> list[str]:
    """The Broker's topic and its Triggers' retry topics (``<topic>.retry.<trigger>``) among ``existing``."""
    retry = re.compile(retry_topic_pattern(topic))
    return sorted(t for t in existing if t == topic or retry.fullmatch(t))


async def delete_topics(settings: KafkaSettings, read_secret: SecretReader) -> list[str]:
    """Deletes the Broker's topic and its retry topics; returns the names deleted."""
    admin = await _admin(settings, read_secret)
    try:
        doomed = broker_topics(settings.topic, set(await admin.list_topics()))
        if doomed:
            await admin.delete_topics(doomed)
            log.info("deleted topics %s", ", ".join(doomed))
        return doomed
    finally:
        await admin.close()

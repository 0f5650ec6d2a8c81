"""The kopf handlers: thin, each reads the object and hands it to a reconciler.

- Indices keep Brokers, Triggers, Services, ConfigMaps (their Kafka keys), the data plane reports
  and the sources in memory; kopf runs no handler before they are all listed.
- Event handlers poke the contract loop (``contracts.py``) when something it compiles from changed.
- Sources are reconciled on create, update and resume (kopf's change handlers, with their progress
  and diff-base in annotations), on changes of their Deployment, and every ``retry_interval`` while
  not Ready (``sources.py``).
- A finalizer on Kafka-class Brokers deletes their topics, unless ``eventferry.dev/topic.retain``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Any

import kopf

from eventferry.apis.broker import KAFKA, Broker
from eventferry.apis.meta import DEFAULT_NAMESPACE, GROUP, PLURALS, VERSION
from eventferry.contract.activation import BACKLOG_CONFIGMAP
from eventferry.controller import topics
from eventferry.controller.config import OperatorConfig
from eventferry.controller.context import Context
from eventferry.controller.sources import MODELS, owner_of
from eventferry.controller.views import (
    KOPF_PREFIX,
    broker_fingerprint,
    kafka_config,
    slim,
    trigger_fingerprint,
)
from eventferry.net.kubeconfig import cluster_access
from eventferry.resources.conditions import is_ready
from eventferry.resources.names import (
    DATAPLANE_STATUS_CONFIGMAP,
    SOURCE_KIND_LABEL,
    TOPIC_RETAIN_ANNOTATION,
    WATCHED,
    WATCHED_LABEL,
)
from eventferry.resources.subscriber_scaling import ready_endpoints

SERVICE_NAME_LABEL = "kubernetes.io/service-name"

log = logging.getLogger(__name__)

FINALIZER = "eventferry.dev/kafka-topics"
TOPIC_DELETE_ATTEMPTS = 6
SOURCE_PLURALS = {kind: PLURALS[kind] for kind in ("KafkaSource", "RocketMQSource")}


def configure(settings: kopf.OperatorSettings, config: OperatorConfig) -> None:
    # Progress and diff-base in annotations: the status belongs to the conditions, which kopf must
    # not overwrite, and a status subresource drops what the main endpoint writes there.
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=KOPF_PREFIX)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=KOPF_PREFIX, key="last-handled-configuration")
    settings.persistence.finalizer = FINALIZER
    # A watch that silently stalls (a half-open connection) would freeze the operator: the server
    # ends each stream after watch_timeout, the client gives up shortly after, and kopf re-lists.
    settings.watching.server_timeout = config.watch_timeout
    settings.watching.client_timeout = config.watch_timeout + 30
    settings.watching.connect_timeout = 10
    settings.networking.connect_timeout = 10
    settings.networking.request_timeout = 60
    # Only adapter Deployments are watched, filtered by the API server.
    settings.watching.label_selectors["apps", "deployments"] = SOURCE_KIND_LABEL
    # ...and only the ConfigMaps it reads (its own, the Brokers' configs: labelled WATCHED), not all of them.
    settings.watching.label_selectors["v1", "configmaps"] = f"{WATCHED_LABEL}=true"
    # Handler failures become Warning Events on the object (kubectl describe / get events).
    settings.posting.enabled = True
    settings.posting.level = logging.WARNING
    settings.posting.reporting_component = "eventferry-operator"
    settings.posting.reporting_instance = config.identity
    settings.posting.event_name_prefix = "eventferry-"
    # One active operator is chosen by the Lease (leader.py); kopf's peering would pause them all.
    settings.peering.standalone = True
    # The CRDs are installed before the operator: no watch of CRDs or namespaces (less RBAC).
    settings.scanning.disabled = True


def _retained(annotations: Mapping[str, str]) -> bool:
    return str(annotations.get(TOPIC_RETAIN_ANNOTATION, "")).lower() == "true"


def _kafka_class(annotations: Mapping[str, str]) -> bool:
    return Broker.model_validate({"metadata": {"name": "-", "annotations": dict(annotations)}}).broker_class == KAFKA


# Every handler gets the operator's Context as ``memo.ctx`` (kopf's memo, set by ``register``'s caller).


def _ctx(memo: kopf.Memo) -> Context:
    ctx: Context = memo.ctx
    return ctx


# --- lifecycle -----------------------------------------------------------------------------------------------

async def startup(settings: kopf.OperatorSettings, memo: kopf.Memo, **kwargs: Any) -> None:
    ctx = _ctx(memo)
    configure(settings, ctx.config)
    ctx.views.attach(kwargs)  # kopf passes the (still empty, live) indices by their names
    await ctx.contracts.prepare()
    ctx.spawn(ctx.contracts.run(), name="contract loop")
    ctx.spawn(ctx.subscribers.run(), name="subscriber scaling")
    ctx.spawn(_retry_sources(ctx), name="source retries")


def login(**_: Any) -> kopf.ConnectionInfo | None:
    # The same loader as the operator's own client (net/kubeconfig.py): in a pod, else KUBECONFIG. kopf
    # calls it again when the API server answers 401, so a rotated token or an expired plugin's is renewed.
    access = cluster_access()
    cert_pem, key_pem = access.client_certificate()
    return kopf.ConnectionInfo(
        server=access.server, ca_path=access.ca_file, ca_data=access.ca_pem, insecure=access.insecure or None,
        token=access.bearer_token(), username=access.username, password=access.password,
        certificate_path=None if cert_pem else access.cert_file, certificate_data=cert_pem,
        private_key_path=None if key_pem else access.key_file, private_key_data=key_pem,
        default_namespace=access.namespace)


async def cleanup(memo: kopf.Memo, **_: Any) -> None:
    await _ctx(memo).stop()


# --- indices -------------------------------------------------------------------------------------------------

async def slim_index(body: kopf.Body, namespace: str | None, name: str, **_: Any) -> Any:
    """Brokers, Triggers and sources, slimmed (``views.slim``)."""
    return {(namespace, name): slim(body)}


async def service_index(spec: kopf.Spec, namespace: str | None, name: str, **_: Any) -> Any:
    """Services by name, with their selector (how a Trigger's subscriber workload is found)."""
    return {(namespace, name): dict(spec.get("selector") or {})}


async def endpointslice_index(body: kopf.Body, labels: kopf.Labels, namespace: str | None, name: str,
                              **_: Any) -> Any:
    """Each EndpointSlice's ready endpoints, by its Service (subscribers that scale from zero wait for one)."""
    return {(namespace, labels[SERVICE_NAME_LABEL]): (name, ready_endpoints([body]))}


async def configmap_index(body: kopf.Body, namespace: str | None, name: str, **_: Any) -> Any:
    return {(namespace, name): kafka_config(body.get("data"))}


def is_dataplane_status(memo: kopf.Memo, namespace: str | None, name: str, **_: Any) -> bool:
    return namespace == _ctx(memo).config.system_namespace and name == DATAPLANE_STATUS_CONFIGMAP


async def dataplane_index(body: kopf.Body, **_: Any) -> Any:
    return {"reports": dict(body.get("data") or {})}


def is_backlog_report(memo: kopf.Memo, namespace: str | None, name: str, **_: Any) -> bool:
    return namespace == _ctx(memo).config.system_namespace and name == BACKLOG_CONFIGMAP


# --- what the contract is compiled from ----------------------------------------------------------------------

async def broker_event(memo: kopf.Memo, type: str, body: kopf.Body, namespace: str | None, name: str,
                       **_: Any) -> None:
    ctx = _ctx(memo)
    ctx.contracts.observe("Broker", (namespace, name), None if type == "DELETED" else broker_fingerprint(body))
    if type == "DELETED":
        ctx.events.recovered(body)


async def trigger_event(memo: kopf.Memo, type: str, body: kopf.Body, namespace: str | None, name: str,
                        **_: Any) -> None:
    ctx = _ctx(memo)
    ctx.contracts.observe("Trigger", (namespace, name), None if type == "DELETED" else trigger_fingerprint(body))
    ctx.subscribers.observe_trigger((namespace or DEFAULT_NAMESPACE, name), None if type == "DELETED" else body)
    if type == "DELETED":
        ctx.events.recovered(body)


async def eventpolicy_event(memo: kopf.Memo, type: str, body: kopf.Body, namespace: str | None, name: str,
                            **_: Any) -> None:
    metadata = body.get("metadata") or {}
    fingerprint = (metadata.get("uid"), metadata.get("generation"), metadata.get("deletionTimestamp") is not None)
    _ctx(memo).contracts.observe("EventPolicy", (namespace, name), None if type == "DELETED" else fingerprint)


async def service_event(memo: kopf.Memo, type: str, namespace: str | None, name: str, **_: Any) -> None:
    _ctx(memo).contracts.observe("Service", (namespace, name), None if type == "DELETED" else True)
    _ctx(memo).subscribers.poke()


async def endpointslice_event(memo: kopf.Memo, **_: Any) -> None:
    _ctx(memo).subscribers.poke()  # a subscriber endpoint got ready (or went): held events may go


async def configmap_event(memo: kopf.Memo, type: str, body: kopf.Body, namespace: str | None, name: str,
                          **_: Any) -> None:
    data = dict(body.get("data") or {})
    if is_backlog_report(memo, namespace, name):
        _ctx(memo).subscribers.on_backlog({} if type == "DELETED" else data)
        return
    # The status ConfigMap changes with every heartbeat: each one may make Triggers Ready.
    relevant = data if is_dataplane_status(memo, namespace, name) else kafka_config(data)
    fingerprint = None if type == "DELETED" else tuple(sorted(relevant.items()))
    _ctx(memo).contracts.observe("ConfigMap", (namespace, name), fingerprint)


# --- Broker deletion: its topics -----------------------------------------------------------------------------

def needs_topic_cleanup(annotations: kopf.Annotations, **_: Any) -> bool:
    return _kafka_class(annotations) and not _retained(annotations)


async def broker_deleted(memo: kopf.Memo, body: kopf.Body, namespace: str | None, name: str, retry: int,
                         logger: Any, **_: Any) -> None:
    ctx = _ctx(memo)
    config, contracts = ctx.config, ctx.contracts
    settings = contracts.kafka_settings(body)
    if settings is None:
        logger.warning("no Kafka settings are known for this Broker: its topics are left in place")
        return
    # The data plane first stops writing to the topic, else it could create it again.
    if not await contracts.wait_unloaded(str(namespace), name, config.unload_timeout):
        logger.warning(f"the data plane did not drop this Broker within {config.unload_timeout:.0f}s; "
                       "deleting its topics anyway")
    try:
        async with asyncio.timeout(60):
            deleted = await topics.delete_topics(settings, ctx.read_secret)
    except Exception as error:  # the cause goes to the log and, as a Warning, to an Event
        if retry + 1 >= TOPIC_DELETE_ATTEMPTS:
            logger.error(f"deleting topic {settings.topic} failed {TOPIC_DELETE_ATTEMPTS} times ({error}); "
                         "giving up: the topic is left in place")
            return
        raise kopf.TemporaryError(f"deleting topic {settings.topic} failed: {error}",
                                  delay=config.retry_interval) from error
    logger.info(f"deleted topics: {', '.join(deleted) or 'none existed'}")


# --- sources -------------------------------------------------------------------------------------------------

async def source_changed(memo: kopf.Memo, body: kopf.Body, **_: Any) -> None:
    await _ctx(memo).sources.reconcile(body)


async def source_event(memo: kopf.Memo, type: str, body: kopf.Body, **_: Any) -> None:
    if type == "DELETED":
        _ctx(memo).sources.forget(body)


async def deployment_event(memo: kopf.Memo, body: kopf.Body, namespace: str | None, **_: Any) -> None:
    ctx = _ctx(memo)
    owner = owner_of(body)
    source = ctx.views.source(owner[0], str(namespace), owner[1]) if owner else None
    if source is not None:
        await ctx.sources.reconcile(source)


def register(registry: kopf.OperatorRegistry | None = None) -> kopf.OperatorRegistry:
    """The handlers above, registered with kopf; run it with ``memo=kopf.Memo(ctx=...)``."""
    registry = registry or kopf.OperatorRegistry()
    on = kopf.on
    on.startup(id="startup", registry=registry)(startup)
    on.login(id="login", registry=registry)(login)
    on.cleanup(id="cleanup", registry=registry)(cleanup)
    for kind in ("Broker", "Trigger", "KafkaSource", "RocketMQSource", "EventPolicy"):
        kopf.index(GROUP, VERSION, PLURALS[kind], id=f"{kind.lower()}_index", registry=registry)(slim_index)
    kopf.index("", "v1", "services", id="service_index", registry=registry)(service_index)
    kopf.index("discovery.k8s.io", "v1", "endpointslices", labels={SERVICE_NAME_LABEL: kopf.PRESENT},
               id="endpointslice_index", registry=registry)(endpointslice_index)
    # ConfigMaps by label only (WATCHED, also selected server-side: ``configure``).
    kopf.index("", "v1", "configmaps", labels=WATCHED, id="configmap_index", registry=registry)(configmap_index)
    kopf.index("", "v1", "configmaps", labels=WATCHED, when=is_dataplane_status, id="dataplane_index",
               registry=registry)(dataplane_index)
    on.event(GROUP, VERSION, PLURALS["Broker"], id="broker_event", registry=registry)(broker_event)
    on.event(GROUP, VERSION, PLURALS["Trigger"], id="trigger_event", registry=registry)(trigger_event)
    on.event(GROUP, VERSION, PLURALS["EventPolicy"], id="eventpolicy_event", registry=registry)(eventpolicy_event)
    on.event("", "v1", "services", id="service_event", registry=registry)(service_event)
    on.event("discovery.k8s.io", "v1", "endpointslices", labels={SERVICE_NAME_LABEL: kopf.PRESENT},
             id="endpointslice_event", registry=registry)(endpointslice_event)
    on.event("", "v1", "configmaps", labels=WATCHED, id="configmap_event", registry=registry)(configmap_event)
    on.delete(GROUP, VERSION, PLURALS["Broker"], when=needs_topic_cleanup, id="broker_topics",
              registry=registry)(broker_deleted)
    for plural in SOURCE_PLURALS.values():
        on.resume(GROUP, VERSION, plural, id="source_resumed", registry=registry)(source_changed)
        on.create(GROUP, VERSION, plural, id="source_created", registry=registry)(source_changed)
        on.update(GROUP, VERSION, plural, id="source_updated", registry=registry)(source_changed)
        on.event(GROUP, VERSION, plural, id="source_event", registry=registry)(source_event)
    on.event("apps", "v1", "deployments", labels={SOURCE_KIND_LABEL: kopf.PRESENT}, id="deployment_event",
             registry=registry)(deployment_event)
    return registry


async def _retry_sources(ctx: Context) -> None:
    """Sources that are not Ready are reconciled again every ``retry_interval``: a Secret, a Service or a
    Broker created later is picked up without a watch on Secrets (which would need list/watch on all of
    them). kopf timers would do the same but put a finalizer on every source."""
    while True:
        await asyncio.sleep(ctx.config.retry_interval)
        for kind in MODELS:
            for body in ctx.views.sources(kind):
                if not is_ready(body.get("status")) and not (body.get("metadata") or {}).get("deletionTimestamp"):
                    try:
                        await ctx.sources.reconcile(body)
                    except Exception:
                        log.exception("retrying %s %s/%s failed", kind, body["metadata"].get("namespace"),
                                      body["metadata"]["name"])

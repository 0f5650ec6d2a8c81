"""The adapter Deployment of a KafkaSource or RocketMQSource: ``eventferry adapter kafka|rocketmq``.

The container is configured by the environment contract of docs/adapters.md (``K_SINK``,
``K_SOURCE_SPEC``, ...); every Secret key the spec refers to is mounted as the file
``<K_SECRETS_DIR>/<secret name>/<key>``, so that no secret value ever sits in the Deployment.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from eventferry.apis.duck import SecretKeySelector, SecretValueFromSource
from eventferry.apis.kafkasource import KafkaSource
from eventferry.apis.meta import GROUP
from eventferry.apis.rocketmqsource import RocketMQSource
from eventferry.contract.model import Delivery
from eventferry.resources.names import MANAGED_BY, PART_OF, SOURCE_KIND_LABEL, SOURCE_LABEL, SOURCE_UID_LABEL

Source = KafkaSource | RocketMQSource

ADAPTER_KIND = {"KafkaSource": "kafka", "RocketMQSource": "rocketmq"}
CONTAINER = "adapter"
METRICS_PORT_NAME = "metrics"
# Kubernetes names of labels values and volumes are at most 63 characters.
MAX_LABEL = 63
NONROOT_UID = 65532


def _default_resources() -> dict[str, dict[str, str]]:
    return {"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"memory": "512Mi"}}


@dataclass(frozen=True)
class AdapterSettings:
    image: str
    image_pull_policy: str | None = None
    secrets_dir: str = "/etc/eventferry/secrets"
    metrics_port: int = 9090
    resources: dict[str, dict[str, str]] = field(default_factory=_default_resources)
    service_account: str | None = None
    """None: the namespace's default; the adapter never calls the API, so no token is mounted."""
    image_pull_secrets: tuple[str, ...] = ()
    """Secrets (in each source's namespace) for a private registry, e.g. ACR on ACK."""
    broker_batch_size: int = 100
    """Events per request when the sink is a Broker (which takes CloudEvents batches); other sinks get one."""


def _fit(text: str, limit: int = MAX_LABEL) -> str:
    """``text``, or when longer than ``limit`` its start and a hash of the whole (still unique)."""
    if len(text) <= limit:
        return text
    digest = hashlib.sha256(text.encode()).hexdigest()[:10]
    return f"{text[:limit - 11].rstrip('-.')}-{digest}"


def adapter_name(kind: str, name: str) -> str:
    """The name of a source's adapter Deployment, and of its ServiceAccount (its identity to a Broker)."""
    return _fit(f"{kind.lower()}-{name}")


def deployment_name(source: Source) -> str:
    return adapter_name(source.kind, source.metadata.name)


def selector_labels(source: Source) -> dict[str, str]:
    if not source.metadata.uid:
        raise ValueError(f"{source.kind} {source.metadata.name} has no uid: only stored objects get a Deployment")
    return {SOURCE_UID_LABEL: source.metadata.uid}


def selector(source: Source) -> str:
    """The label selector of the adapter pods, for the scale subresource (``status.selector``)."""
    return ",".join(f"{k}={v}" for k, v in selector_labels(source).items())


def labels(source: Source) -> dict[str, str]:
    return {
        SOURCE_LABEL: _fit(source.metadata.name),
        SOURCE_KIND_LABEL: source.kind,
        **selector_labels(source),
        "app.kubernetes.io/name": "eventferry-adapter",
        "app.kubernetes.io/component": ADAPTER_KIND[source.kind] + "-adapter",
        **PART_OF,
        **MANAGED_BY,
    }


def owner_reference(source: Source) -> dict[str, Any]:
    """The same reference ``kopf.adopt`` appends: the source controls the Deployment, so the garbage
    collector deletes the Deployment with the source."""
    return {"controller": True, "blockOwnerDeletion": True, "apiVersion": source.api_version,
            "kind": source.kind, "name": source.metadata.name, "uid": source.metadata.uid}


def secret_refs(source: Source) -> list[SecretKeySelector]:
    """Every Secret key the spec refers to, in spec order."""
    refs: list[SecretValueFromSource | None]
    if isinstance(source, KafkaSource):
        net = source.spec.net
        sasl = net.sasl if net and net.sasl and net.sasl.enable else None
        tls = net.tls if net and net.tls and net.tls.enable else None
        refs = [sasl.user, sasl.password, sasl.type] if sasl else []
        refs += [tls.ca_cert, tls.cert, tls.key] if tls else []
    else:
        refs = [source.spec.access_key, source.spec.secret_key]
    return [ref.secret_key_ref for ref in refs if ref is not None]


def _secret_volumes(source: Source, settings: AdapterSettings) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    by_secret: dict[str, list[SecretKeySelector]] = {}
    for ref in secret_refs(source):
        by_secret.setdefault(ref.name, []).append(ref)
    volumes, mounts = [], []
    for secret, refs in sorted(by_secret.items()):
        volume = "secret-" + hashlib.sha256(secret.encode()).hexdigest()[:12]
        keys = sorted({ref.key for ref in refs})
        volumes.append({"name": volume, "secret": {
            "secretName": secret,
            "items": [{"key": key, "path": key} for key in keys],
            # A volume is optional only when every key read from it is: a missing required key must
            # keep the pod from starting rather than start an adapter without its credentials.
            "optional": all(ref.optional for ref in refs),
        }})
        mounts.append({"name": volume, "mountPath": f"{settings.secrets_dir}/{secret}", "readOnly": True})
    return volumes, mounts


def _env(source: Source, sink_uri: str, delivery: Delivery | None, settings: AdapterSettings,
         sink_ca_certs: str | None) -> list[dict[str, str]]:
    spec = source.spec.model_dump(mode="json", by_alias=True, exclude_none=True)
    values = {
        "K_SINK": sink_uri,
        "K_SOURCE_SPEC": json.dumps(spec, separators=(",", ":")),
        "K_SOURCE_NAME": source.metadata.name,
        "K_SOURCE_NAMESPACE": source.namespace,
        "K_SOURCE_UID": source.metadata.uid or "",
        "K_SECRETS_DIR": settings.secrets_dir,
        "K_METRICS_PORT": str(settings.metrics_port),
    }
    if isinstance(source, KafkaSource):
        values["K_KEY_TYPE"] = source.key_type
    overrides = source.spec.ce_overrides
    if overrides is not None and overrides.extensions:
        values["K_CE_OVERRIDES"] = json.dumps({"extensions": overrides.extensions}, separators=(",", ":"))
    if delivery is not None:
        values["K_DELIVERY"] = delivery.model_dump_json(by_alias=True, exclude_none=True)
    if sink_ca_certs:
        values["K_CA_CERTS"] = sink_ca_certs
    ref = source.spec.sink.ref
    if ref is not None and ref.kind == "Broker" and ref.api_version.startswith(f"{GROUP}/") \
            and settings.broker_batch_size > 1:
        # An EventFerry Broker takes a batch all or nothing; any other sink gets one event a request.
        values["K_SINK_BATCH_SIZE"] = str(settings.broker_batch_size)
    return [{"name": name, "value": value} for name, value in values.items()]


SINK_TOKEN_VOLUME = "sink-token"
SINK_TOKEN_DIR = "/var/run/secrets/eventferry.dev/sink"
SINK_TOKEN_SECONDS = 3600  # the kubelet renews a projected token at 80% of its life


def _sink_token(audience: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """A projected ServiceAccount token for the sink's audience (a Broker that checks senders): the volume and
    its mount. The pod mounts no other token: the adapter never calls the API."""
    volume = {"name": SINK_TOKEN_VOLUME, "projected": {"sources": [{"serviceAccountToken": {
        "audience": audience, "expirationSeconds": SINK_TOKEN_SECONDS, "path": "token"}}]}}
    return volume, {"name": SINK_TOKEN_VOLUME, "mountPath": SINK_TOKEN_DIR, "readOnly": True}


def _probe(path: str, period: int, failures: int) -> dict[str, Any]:
    return {"httpGet": {"path": path, "port": METRICS_PORT_NAME}, "periodSeconds": period,
            "failureThreshold": failures}


def autoscaled(source: Source) -> bool:
    """Whether an autoscaler sets the adapter's replicas: a class is set and the backlog can be read
    while no adapter runs. A KafkaSource's group lag is read from Kafka; a RocketMQSource's backlog
    from its name servers, so only with ``spec.nameServers``."""
    if isinstance(source, KafkaSource):
        return source.scaling.enabled
    return source.scaling.enabled and source.spec.name_servers is not None


def adapter_deployment(source: Source, *, sink_uri: str, delivery: Delivery | None,
                       settings: AdapterSettings, sink_audience: str | None = None,
                       sink_ca_certs: str | None = None) -> dict[str, Any]:
    """The Deployment running the adapter of ``source``; ``delivery`` is the resolved spec.delivery;
    ``sink_audience``: the sink checks senders' tokens for this audience (the adapter then presents one);
    ``sink_ca_certs``: CA certificates that verify an https sink, besides the system's.

    An autoscaled source's Deployment has no ``replicas``: the operator's server-side apply then owns
    no replica count, so it never fights the autoscaler (KEDA's HPA or the built-in one).
    """
    kind = ADAPTER_KIND[source.kind]
    volumes, mounts = _secret_volumes(source, settings)
    env = _env(source, sink_uri, delivery, settings, sink_ca_certs)
    service_account = settings.service_account
    if sink_audience:
        service_account = service_account or deployment_name(source)
        volume, mount = _sink_token(sink_audience)
        volumes.append(volume)
        mounts.append(mount)
        env.append({"name": "K_SINK_TOKEN_FILE", "value": f"{SINK_TOKEN_DIR}/token"})
    pod_labels = labels(source)
    container: dict[str, Any] = {
        "name": CONTAINER,
        "image": settings.image,
        "command": ["eventferry", "adapter", kind],
        "env": env,
        "ports": [{"name": METRICS_PORT_NAME, "containerPort": settings.metrics_port, "protocol": "TCP"}],
        "livenessProbe": _probe("/healthz", 10, 3),
        "readinessProbe": _probe("/readyz", 5, 3),
        "resources": settings.resources,
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "runAsNonRoot": True,
            "capabilities": {"drop": ["ALL"]},
        },
    }
    # Empty lists are left out: the API server drops them, and a desired list the stored object lacks
    # would make an unchanged Deployment look changed, re-applied on every pass.
    if mounts:
        container["volumeMounts"] = mounts
    if settings.image_pull_policy:
        container["imagePullPolicy"] = settings.image_pull_policy
    pod_spec: dict[str, Any] = {
        "containers": [container],
        "automountServiceAccountToken": False,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": NONROOT_UID,
            "runAsGroup": NONROOT_UID,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        # The adapter drains in-flight deliveries on SIGTERM (K_DRAIN_TIMEOUT, 10 s by default).
        "terminationGracePeriodSeconds": 30,
    }
    if volumes:
        pod_spec["volumes"] = volumes
    if service_account:
        pod_spec["serviceAccountName"] = service_account
    if settings.image_pull_secrets:
        pod_spec["imagePullSecrets"] = [{"name": name} for name in settings.image_pull_secrets]
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": deployment_name(source),
            "namespace": source.namespace,
            # The source's own labels first, as kopf.adopt would add them; ours win on a clash.
            "labels": {**(source.metadata.labels or {}), **pod_labels},
            "ownerReferences": [owner_reference(source)],
        },
        "spec": {
            **({} if autoscaled(source) else {"replicas": source.spec.consumers}),
            "selector": {"matchLabels": selector_labels(source)},
            "template": {"metadata": {"labels": pod_labels}, "spec": pod_spec},
        },
    }


def adapter_service_account(source: Source) -> dict[str, Any]:
    """The source's own ServiceAccount, its identity to a Broker that checks senders (an EventPolicy names the
    source, the operator resolves it to this); deleted with the source. It needs no permission."""
    return {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": {"name": deployment_name(source), "namespace": source.namespace, "labels": labels(source),
                     "ownerReferences": [owner_reference(source)]},
        "automountServiceAccountToken": False,
    }


def ce_attributes(source: Source) -> list[dict[str, str]]:
    """The type and source of the events the adapter makes (status.ceAttributes, for discovery)."""
    namespace, name = source.namespace, source.metadata.name
    if isinstance(source, KafkaSource):
        return [{"type": "dev.knative.kafka.event",
                 "source": f"/apis/v1/namespaces/{namespace}/kafkasources/{name}#{topic}"}
                for topic in source.spec.topics]
    return [{"type": "dev.eventferry.rocketmq.message",
             "source": f"/apis/v1/namespaces/{namespace}/rocketmqsources/{name}#{source.spec.topic}"}]

"""End to end: the chart in a real API server, the operator running, events from Kafka and RocketMQ to
the live-stream example's own services.

No kubelet runs (etcd + kube-apiserver only), so this test plays the kubelet's part for the pods that
matter: it reads the Deployments written to the API server (the chart's operator and broker data plane,
the adapter Deployments the operator writes for a KafkaSource and a RocketMQSource, and the example
services' Deployments of examples/live-stream/services, applied with kubectl), and starts each pod's
container as a local process from its command, args and env (``eventferry`` from the venv, ``python``
as the venv's interpreter):

- ``valueFrom`` is resolved as the kubelet would (downward API fields, Secret and ConfigMap keys);
- Secret volume mounts are written into a temporary directory, which K_SECRETS_DIR then points to;
- the API credentials are those of the pod's ServiceAccount (a token from the TokenRequest API), so the
  chart's RBAC is what the operator and the data plane really run with;
- what a pod network would give is mapped to loopback: URLs ``http://<svc>.<ns>.svc.cluster.local``
  in env and args are rewritten to ``http://127.0.0.1:<port>`` of the local process standing in for
  the Service, listen addresses and ports to 127.0.0.1 and free ports (``--host``/``--port`` options;
  a container without them that declares an ``http`` port, as the example services do, gets HOST and
  PORT in its environment, which they read). The subscriber URLs that the
  data plane reads from the contract ConfigMap are not in its env: for that process only, a
  ``sitecustomize`` shim (``tests/support/loopback_dns.py``) resolves exactly the mapped
  ``*.svc.cluster.local`` names to 127.0.0.1 and the local process's port (any other such name fails
  to resolve). No traffic ever goes to a cluster IP.

The example's Services are backed by the example's services (moderation with its toxicity model,
review, leaderboard, vision-inference with its digits classifier, frames-dead-letter), and what they
made of the events is read from their own HTTP endpoints. Only the two Triggers this test adds for the
adapters' plain records and messages (frame-archive, danmaku-wall: no service of the example) go to
stand-in subscribers that record what they receive.

No kube-controller-manager runs either: the test writes the Deployments' status once their processes
are ready, as the Deployment controller would, and creates the namespace's default ServiceAccount, as
its ServiceAccount controller would.
"""

from __future__ import annotations

import asyncio
import base64
import datetime
import json
import re
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from eventferry.commands.crds import render_admission_policies
from eventferry_examples.digits import TRAINING, digits
from tests.env import provision
from tests.env.ports import free_port, wait_for_port
from tests.env.process import ManagedProcess
from tests.env.servers import SCRAM_PASSWORD, SCRAM_USER, Kafka, KubeAPI, RocketMQ
from tests.support.cluster import Cluster, condition_of, http_get, make_available, service
from tests.support.loopback_dns import LoopbackServices
from tests.support.subscriber import Received, Subscriber

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "eventferry"
EXAMPLES = ROOT / "examples"
SYSTEM = "eventferry-system"
RELEASE = "eventferry"
INGRESS_HOST = f"eventferry-broker-ingress.{SYSTEM}.svc.cluster.local"
EVENTFERRY = str(Path(sys.executable).parent / "eventferry")
INTERPRETERS = {"eventferry": EVENTFERRY, "python": sys.executable}  # a container's command[0] -> the venv's
CLUSTER_URL = re.compile(r"http://([a-z0-9]([-a-z0-9.]*[a-z0-9])?\.svc\.cluster\.local)(:\d+)?")
# The example's services, from the Deployments of examples/live-stream/services.
EXAMPLE_SERVICES = ("moderation", "review", "leaderboard", "vision-inference", "frames-dead-letter")
# Stand-ins for the Services of the two Triggers the test adds (no example service behind them).
STAND_INS = ("frame-archive", "danmaku-wall")

# --- the subscribers: aiohttp servers in a thread of their own, so that the test may block ------------------

class Subscribers:
    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="subscribers", daemon=True)
        self.servers: dict[str, Subscriber] = {}

    def start(self, names: tuple[str, ...]) -> None:
        self.thread.start()
        for name in names:
            self.servers[name] = asyncio.run_coroutine_threadsafe(Subscriber().start(), self.loop).result(10)

    def stop(self) -> None:
        if not self.thread.is_alive():
            self.loop.close()
            return
        for server in self.servers.values():
            asyncio.run_coroutine_threadsafe(server.stop(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)

    def received(self, name: str) -> list[Received]:
        return list(self.servers[name].received)


# --- playing the kubelet ---------------------------------------------------------------------------------------

class Pods:
    """Starts the container of a Deployment's pod template as a local process."""

    def __init__(self, cluster: Cluster, workdir: Path) -> None:
        self.cluster = cluster
        self.workdir = workdir
        self.services: dict[str, int] = {}  # "<svc>.<ns>.svc.cluster.local" -> local port
        self.processes: list[ManagedProcess] = []
        self.loopback_dns = LoopbackServices(workdir)

    def add_service(self, host: str, port: int) -> None:
        """``host`` stands for a local process on ``port``: in rewritten URLs, and for the shim's resolver
        (also in processes already running)."""
        self.services[host] = port
        self.loopback_dns.add(host, port)

    def rewrite(self, text: str) -> str:
        def local(match: re.Match[str]) -> str:
            host = match.group(1)
            assert host in self.services, f"{host} has no local stand-in: {sorted(self.services)}"
            return f"http://127.0.0.1:{self.services[host]}"

        return CLUSTER_URL.sub(local, text)

    def kubeconfig(self, namespace: str, service_account: str | None) -> Path:
        """A kubeconfig with the ServiceAccount's token: what the pod would find mounted. None: a pod that
        mounts no token (automountServiceAccountToken: false) gets no credentials."""
        user: dict[str, str] = {}
        if service_account is not None:
            user["token"] = self.cluster.ok("create", "token", service_account, "-n", namespace,
                                            "--duration=2h").strip()
        admin = json.loads(self.cluster.kube.kubeconfig.read_text())
        admin["users"] = [{"name": service_account or "none", "user": user}]
        admin["contexts"][0]["context"].update(user=service_account or "none", namespace=namespace)
        path = self.workdir / f"kubeconfig-{namespace}-{service_account}"
        path.write_text(json.dumps(admin))
        return path

    def env(self, deployment: dict[str, Any], container: dict[str, Any], pod: str) -> dict[str, str]:
        namespace = deployment["metadata"]["namespace"]
        fields = {"metadata.name": pod, "metadata.namespace": namespace, "spec.nodeName": "e2e-node",
                  "status.podIP": "127.0.0.1", "spec.serviceAccountName":
                  deployment["spec"]["template"]["spec"].get("serviceAccountName", "default")}
        env: dict[str, str] = {}
        for item in container.get("env") or ():
            source = item.get("valueFrom")
            if source is None:
                env[item["name"]] = self.rewrite(item.get("value", ""))
            elif "fieldRef" in source:
                env[item["name"]] = fields[source["fieldRef"]["fieldPath"]]
            elif "secretKeyRef" in source:
                ref = source["secretKeyRef"]
                secret = self.cluster.get(namespace, f"secret/{ref['name']}")
                assert secret is not None, f"Secret {namespace}/{ref['name']}"
                env[item["name"]] = base64.b64decode(secret["data"][ref["key"]]).decode()
            elif "configMapKeyRef" in source:
                ref = source["configMapKeyRef"]
                config_map = self.cluster.get(namespace, f"configmap/{ref['name']}")
                assert config_map is not None, f"ConfigMap {namespace}/{ref['name']}"
                env[item["name"]] = config_map["data"][ref["key"]]
            else:
                raise AssertionError(f"unsupported valueFrom {source}")
        return env

    def secret_volumes(self, deployment: dict[str, Any], container: dict[str, Any], root: Path,
                       env: dict[str, str]) -> None:
        """Secret volumes as files; K_SECRETS_DIR (the mounts' parent in the pod) then names the copy."""
        namespace = deployment["metadata"]["namespace"]
        volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"].get("volumes") or ()}
        secrets_dir = env.get("K_SECRETS_DIR")
        for mount in container.get("volumeMounts") or ():
            volume = volumes[mount["name"]]
            if "secret" not in volume:
                continue
            assert secrets_dir and mount["mountPath"].startswith(secrets_dir + "/"), mount
            target = root / "secrets" / mount["mountPath"][len(secrets_dir) + 1:]
            target.mkdir(parents=True, exist_ok=True)
            secret = self.cluster.get(namespace, f"secret/{volume['secret']['secretName']}")
            assert secret is not None
            items = volume["secret"].get("items") or [{"key": k, "path": k} for k in secret["data"]]
            for item in items:
                (target / item["path"]).write_bytes(base64.b64decode(secret["data"][item["key"]]))
        if secrets_dir:
            env["K_SECRETS_DIR"] = str(root / "secrets")

    def start(self, namespace: str, name: str, *, overrides: dict[str, str] | None = None,
              extra_args: tuple[str, ...] = (), shim: bool = False) -> tuple[ManagedProcess, dict[str, Any]]:
        """The first replica of Deployment namespace/name, as a process: (process, facts about it)."""
        deployment = self.cluster.get(namespace, f"deployment/{name}")
        assert deployment is not None, f"Deployment {namespace}/{name}"
        pod_spec = deployment["spec"]["template"]["spec"]
        [container] = pod_spec["containers"]
        pod = f"{name}-e2e-0"
        root = self.workdir / pod
        root.mkdir(parents=True, exist_ok=True)
        env = self.env(deployment, container, pod)
        self.secret_volumes(deployment, container, root, env)
        env.update(overrides or {})
        command = [*container["command"], *(container.get("args") or ())]
        assert command[0] in INTERPRETERS, command
        # $(VAR) in args is the container's environment variable, as the kubelet expands it.
        command = [INTERPRETERS[command[0]], *(self.rewrite(re.sub(r"\$\((\w+)\)", lambda m: env.get(m[1], m[0]), arg))
                                               for arg in command[1:])]
        port = 0
        for option, value in (("--host", lambda: "127.0.0.1"), ("--port", lambda: str(free_port()))):
            for index, arg in enumerate(command):
                if arg == option:
                    command[index + 1] = value()
                elif arg.startswith(option + "="):
                    command[index] = f"{option}={value()}"
        if "--port" in command:
            port = int(command[command.index("--port") + 1])
        elif http := [p for p in container.get("ports") or () if p.get("name") == "http"]:
            # The example services serve their "http" port on HOST:PORT (0.0.0.0:8080 by default).
            assert http[0]["containerPort"] == 8080, http
            port = free_port()
            env.update(HOST="127.0.0.1", PORT=str(port))
        command += extra_args
        assert "svc.cluster.local" not in json.dumps([command, env]), "a cluster URL was left unmapped"
        process_env = {"PATH": str(Path(EVENTFERRY).parent) + ":/usr/bin:/bin", "HOME": str(root),
                       "PYTHONUNBUFFERED": "1", **env,
                       "KUBECONFIG": str(self.kubeconfig(namespace, pod_spec.get("serviceAccountName", "default")
                                                         if pod_spec.get("automountServiceAccountToken", True)
                                                         else None))}
        if shim:
            process_env.update(self.loopback_dns.env())
        process = ManagedProcess(pod, command, self.workdir / f"{pod}.log", cwd=root, env=process_env)
        self.processes.append(process)
        return process, {"deployment": deployment, "command": command, "env": env, "port": port,
                         "container": container}

    def stop(self) -> None:
        for process in reversed(self.processes):
            process.stop()

    def logs(self) -> str:
        return "\n".join(p.log_tail(30) for p in self.processes)


# --- the manifests ------------------------------------------------------------------------------------------

def live_stream_manifests(ns: str, kafka: Kafka, rocketmq: RocketMQ, kafka_topic: str,
                          rocketmq_topic: str) -> list[dict[str, Any]]:
    """examples/live-stream (its Deployments and Services too) and examples/live-stream-sources, in
    namespace ``ns`` with the test's servers, plus two Triggers for the events the adapters make from
    plain records and messages."""
    docs: list[dict[str, Any]] = []
    for path in (*sorted((EXAMPLES / "live-stream").glob("*.yaml")),
                 *sorted((EXAMPLES / "live-stream" / "services").glob("*.yaml")),
                 EXAMPLES / "live-stream-sources" / "sources.yaml"):
        docs += [d for d in yaml.safe_load_all(path.read_text()) if d]
    for doc in docs:
        doc["metadata"]["namespace"] = ns
        spec = doc["spec"]
        if doc["kind"] == "KafkaSource":
            # SASL/SCRAM through the listener that has it: the credentials travel as a Secret volume.
            spec.update(bootstrapServers=[kafka.sasl_bootstrap], topics=[kafka_topic], initialOffset="earliest",
                        consumerGroup=f"e2e-{kafka_topic}", ceOverrides={"extensions": {"stream": "live"}},
                        net={"sasl": {"enable": True,
                                      "user": {"secretKeyRef": {"name": "kafka-auth", "key": "user"}},
                                      "password": {"secretKeyRef": {"name": "kafka-auth", "key": "password"}},
                                      "type": {"secretKeyRef": {"name": "kafka-auth", "key": "mechanism"}}}})
        elif doc["kind"] == "RocketMQSource":
            spec.update(endpoints=rocketmq.endpoint, topic=rocketmq_topic, consumerGroup=f"e2e-{rocketmq_topic}")
        elif doc["kind"] == "Deployment" and doc["metadata"]["name"] == "vision-inference":
            # A busy CI machine may take more than the example's 3 s to bring a fresh frame to vision: the
            # stale ones are a minute old, so a wider window still tells them apart.
            for container in spec["template"]["spec"]["containers"]:
                for item in container.get("env") or ():
                    if item["name"] == "VISION_MAX_AGE":
                        item["value"] = str(VISION_MAX_AGE)
    service_ref = {"apiVersion": "v1", "kind": "Service"}
    docs.append({"apiVersion": "eventferry.dev/v1alpha1", "kind": "Trigger",
                 "metadata": {"name": "raw-frames-to-archive", "namespace": ns},
                 "spec": {"broker": "live-stream", "filter": {"attributes": {
                     "type": "dev.knative.kafka.event",
                     "source": f"/apis/v1/namespaces/{ns}/kafkasources/video-frames#{kafka_topic}"}},
                     "subscriber": {"ref": {**service_ref, "name": "frame-archive"}}}})
    docs.append({"apiVersion": "eventferry.dev/v1alpha1", "kind": "Trigger",
                 "metadata": {"name": "danmaku-to-wall", "namespace": ns},
                 "spec": {"broker": "live-stream", "filters": [
                     {"exact": {"type": "dev.eventferry.rocketmq.message"}},
                     {"any": [{"exact": {"rocketmqtag": "danmaku"}}, {"prefix": {"rocketmqtag": "danmaku-"}}]}],
                     "subscriber": {"ref": {**service_ref, "name": "danmaku-wall"}}}})
    return docs


# --- producing -----------------------------------------------------------------------------------------------

# Key frames (priority >= 5) that the CESQL Trigger frames-to-vision selects: sent with the time they are
# produced, vision classifies them; sent a minute old, vision answers 422 (stale) and they are dead-lettered.
FRESH_FRAMES = (2, 4)
STALE_FRAMES = (5, 6)
STALE_BY = datetime.timedelta(seconds=60)
VISION_MAX_AGE = 20  # seconds; the example's Deployment says 3
# Gifts through Kafka: (id, kind, room, user, value).
GIFTS = (("gift-1", "rose", "room-1", "ann", 1), ("gift-2", "rocket", "room-1", "bob", 100),
         ("gift-3", "heart", "room-2", "ann", 5), ("gift-4", "lion", "room-2", "cid", 50))
# Comments: (id, text, toxic): through RocketMQ, and posted to the broker ingress by hand.
ROCKETMQ_COMMENTS = (("comment-1", "you are a stupid idiot", True), ("comment-2", "buy followers here", False),
                     ("comment-3", "go away you moron", True), ("comment-4", "what a lovely stream, thanks!", False))
INGRESS_COMMENTS = (("comment-5", "you suck, idiot", True), ("comment-6", "gg, well played", False))


def frame_data(number: int) -> dict[str, Any]:
    """A frame of room-1: a held-out digit image of scikit-learn's digits, as the example's traffic sends."""
    images = digits()
    return {"room": "room-1", "camera": "main", "frame": number, "pixels": images.images[TRAINING + number],
            "truth": images.labels[TRAINING + number]}


def produce_kafka(kafka: Kafka, topic: str) -> list[Any]:
    from aiokafka import AIOKafkaProducer

    def ce(type_: str, id_: str, **extensions: str) -> list[tuple[str, bytes]]:
        headers = {"ce_specversion": "1.0", "ce_id": id_, "ce_type": type_, "ce_source": "/cameras/room-1",
                   "content-type": "application/json", **{f"ce_{k}": v for k, v in extensions.items()}}
        return [(k, v.encode()) for k, v in headers.items()]

    def keyframe(number: int, sent: datetime.datetime) -> tuple[bytes, bytes, list[tuple[str, bytes]]]:
        return (b"room-1", json.dumps(frame_data(number)).encode(),
                ce("com.live.video.frame", f"frame-{number}", keyframe="true", priority="7", time=sent.isoformat()))

    now = datetime.datetime.now(datetime.UTC)
    records = [
        # A plain record: the adapter makes the CloudEvent (design section 8).
        (b"room-1", b'{"frame": 1}', [("content-type", b"application/json"), ("X-Room-Id", b"r1")]),
        # Already CloudEvents (binary mode): passed through, routed by the example's Triggers.
        *(keyframe(number, now) for number in FRESH_FRAMES),
        (b"room-1", b'{"frame": 3}', ce("com.live.video.frame", "frame-3", keyframe="false", priority="9")),
        *(keyframe(number, now - STALE_BY) for number in STALE_FRAMES),
        *((room.encode(), json.dumps({"room": room, "user": user, "kind": kind, "value": value}).encode(),
           ce(f"com.live.gift.{kind}", id_)) for id_, kind, room, user, value in GIFTS),
    ]

    async def send() -> list[Any]:
        producer = AIOKafkaProducer(bootstrap_servers=kafka.bootstrap, acks="all")
        await producer.start()
        try:
            return [await producer.send_and_wait(topic, value, key=key, headers=headers)
                    for key, value, headers in records]
        finally:
            await producer.stop()

    return asyncio.run(send())


def produce_rocketmq(rocketmq: RocketMQ, topic: str) -> dict[str, str]:
    """Sends a gift (filtered out by the source's tag expression), a plain danmaku message and comments
    in the RocketMQ CloudEvents binding; returns their message ids by tag (by event id for the comments)."""
    from rocketmq import ClientConfiguration, Credentials, Message, Producer

    producer = Producer(ClientConfiguration(rocketmq.endpoint, Credentials(), request_timeout=10), (topic,))
    producer.startup()
    ids: dict[str, str] = {}
    try:
        for key, tag, body, properties in (
                ("gift", "gift", b"a rocket", {}),
                ("danmaku", "danmaku", b"so cool", {"room": "r1", "Viewer-Level": "5"}),
                *((id_, "comment", json.dumps({"room": "r1", "user": "dan", "text": text}).encode(),
                   {"CE_specversion": "1.0", "CE_id": id_, "CE_type": "com.live.comment", "CE_source": "/rooms/r1",
                    "CE_contenttype": "application/json"}) for id_, text, _toxic in ROCKETMQ_COMMENTS)):
            message = Message()
            message.topic = topic
            message.body = body
            message.tag = tag
            message.keys = f"key-{key}"
            for name, value in properties.items():
                message.add_property(name, value)
            ids[key] = producer.send(message).message_id
    finally:
        producer.shutdown()
    return ids


def post_to_ingress(port: int, path: str, id_: str, text: str) -> int:
    """A comment posted to the broker ingress in binary mode, as a pod in the cluster would: the answer's status."""
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}", method="POST",
        data=json.dumps({"room": "r2", "user": "eve", "text": text}).encode(),
        headers={"ce-specversion": "1.0", "ce-id": id_, "ce-type": "com.live.comment", "ce-source": "/rooms/r2",
                 "content-type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return int(response.status)


def get_json(port: int, path: str) -> Any:
    text = http_get(port, path)
    assert text is not None, f"GET {path} on port {port}"
    return json.loads(text)


def trigger_outcomes(port: int, ns: str) -> dict[str, dict[str, int]]:
    """The data plane's deliveries that ended, per Trigger of namespace ``ns`` and outcome (from /metrics)."""
    found: dict[str, dict[str, int]] = {}
    for family in text_string_to_metric_families(http_get(port, "/metrics") or ""):
        for sample in family.samples:
            if sample.name == "eventferry_trigger_events_delivered_total" and sample.labels.get("namespace") == ns:
                outcomes = found.setdefault(sample.labels["trigger"], {})
                outcomes[sample.labels["outcome"]] = outcomes.get(sample.labels["outcome"], 0) + int(sample.value)
    return found


def received_by_type(port: int, ns: str) -> dict[str, int]:
    """Events the data plane's ingress took (2xx) for namespace ``ns``, by type."""
    found: dict[str, int] = {}
    for family in text_string_to_metric_families(http_get(port, "/metrics") or ""):
        for sample in family.samples:
            labels = sample.labels
            if sample.name == "eventferry_broker_events_received_total" and labels.get("namespace") == ns \
                    and labels.get("code", "").startswith("2"):
                found[labels["event_type"]] = found.get(labels["event_type"], 0) + int(sample.value)
    return found


# --- the test ----------------------------------------------------------------------------------------------------

@pytest.fixture
def world(kube_api: KubeAPI, tmp_path: Path) -> Iterator[tuple[Cluster, Pods, Subscribers]]:
    cluster = Cluster(kube_api, tmp_path)
    pods = Pods(cluster, tmp_path / "pods")
    subscribers = Subscribers()
    try:
        yield cluster, pods, subscribers
    finally:
        pods.stop()
        subscribers.stop()


def adopt_cluster_objects(cluster: Cluster) -> None:
    """The admission policies may exist already, applied by kubectl from config/admission-policies.yaml
    (``Cluster.install`` of tests sharing the session's API server): Helm's documented adoption, its
    ownership label and annotations."""
    for policy in yaml.safe_load_all(render_admission_policies()):
        resource = f"{policy['kind'].lower()}/{policy['metadata']['name']}"
        found = cluster.get("", resource)
        if found is not None and "meta.helm.sh/release-name" not in (found["metadata"].get("annotations") or {}):
            cluster.ok("label", "--overwrite", resource, "app.kubernetes.io/managed-by=Helm")
            cluster.ok("annotate", "--overwrite", resource, f"meta.helm.sh/release-name={RELEASE}",
                       f"meta.helm.sh/release-namespace={SYSTEM}")


def wait_ready(cluster: Cluster, pods: Pods, namespace: str, resource: str, timeout: float = 60) -> dict[str, Any]:
    try:
        return cluster.wait_condition(namespace, resource, "Ready", "True", timeout=timeout)
    except AssertionError as error:
        raise AssertionError(f"{error}\n{pods.logs()}") from None


def test_live_stream_from_kafka_and_rocketmq_through_the_chart(
        world: tuple[Cluster, Pods, Subscribers], kafka: Kafka, rocketmq: RocketMQ) -> None:
    cluster, pods, subscribers = world
    started = time.monotonic()
    suffix = uuid.uuid4().hex[:8]
    ns, kafka_topic, rocketmq_topic = f"live-{suffix}", f"video-frames-{suffix}", f"live-comments-{suffix}"

    # 1. The chart, installed as a user would (CRDs from crds/, templates, RBAC, the admission policies).
    adopt_cluster_objects(cluster)
    helm = subprocess.run([
        str(provision.HELM.ensure()), "upgrade", "--install", RELEASE, str(CHART), "--namespace", SYSTEM,
        "--create-namespace", "--kubeconfig", str(cluster.kube.kubeconfig), "--set", "image.repository=eventferry",
        "--set", "image.tag=e2e", "--set", "operator.retryInterval=1", "--set", "broker.reportInterval=2",
        "--set-json", 'operator.extraArgs=["--debounce=0.1"]'], capture_output=True, text=True, timeout=180)
    assert helm.returncode == 0, helm.stderr
    cluster.ok("wait", "--for=condition=Established", "--timeout=60s",
               *(f"crd/{p}.eventferry.dev" for p in ("brokers", "triggers", "kafkasources", "rocketmqsources")))
    assert cluster.get("", "validatingadmissionpolicy/broker-class-immutable.eventferry.dev") is not None
    assert cluster.get(SYSTEM, "service/eventferry-broker-ingress") is not None
    # Least privilege, as the API server's authorizer sees it (the processes below run with these tokens).
    for account, verb, what, where, allowed in (
            ("operator", "get", "secrets", "-A", "yes"), ("operator", "list", "secrets", "-A", "no"),
            ("operator", "patch", "deployments.apps", "-A", "yes"), ("operator", "create", "pods", "-A", "no"),
            ("operator", "update", "leases.coordination.k8s.io/eventferry-operator", f"-n={SYSTEM}", "yes"),
            ("operator", "update", "leases.coordination.k8s.io/other", f"-n={SYSTEM}", "no"),
            ("broker", "watch", "configmaps/eventferry-contract", f"-n={SYSTEM}", "yes"),
            ("broker", "get", "configmaps/something-else", f"-n={SYSTEM}", "no"),
            # Kafka-class Brokers' credentials Secrets, by name (broker.readKafkaSecrets), never a listing.
            ("broker", "get", "secrets", "-A", "yes"), ("broker", "list", "secrets", "-A", "no"),
            ("broker", "watch", "secrets", "-A", "no"), ("operator", "watch", "secrets", "-A", "no")):
        answer = cluster.kubectl("auth", "can-i", verb, what, where,
                                 f"--as=system:serviceaccount:{SYSTEM}:{RELEASE}-{account}").stdout.strip()
        assert answer == allowed, f"{account} may {verb} {what} {where}: {answer}, expected {allowed}"

    # 2. Stand-ins for the Services of the test's own Triggers, and the broker ingress (its port is known
    # once started); the example's Services get their services in step 4.
    subscribers.start(STAND_INS)
    for name, server in subscribers.servers.items():
        pods.add_service(f"{name}.{ns}.svc.cluster.local", server.port)

    # 3. The broker data plane and the operator, from the chart's Deployments.
    broker, broker_facts = pods.start(SYSTEM, f"{RELEASE}-broker", shim=True)
    broker_port = broker_facts["port"]
    pods.add_service(INGRESS_HOST, broker_port)
    cluster.dataplane, cluster.dataplane_port = broker, broker_port
    assert broker_facts["command"][1:4] == ["broker", "--configmap", f"{SYSTEM}/eventferry-contract"]
    assert broker_facts["env"]["POD_NAME"] == f"{RELEASE}-broker-e2e-0"
    broker.wait_until(lambda: wait_for_port(broker_port, 0.5), 60, "listening")

    metrics_port = free_port()
    # The operator's Service (KEDA reads RocketMQ backlogs there) stands for its metrics port.
    pods.add_service(f"{RELEASE}-operator.{SYSTEM}.svc.cluster.local", metrics_port)
    operator, operator_facts = pods.start(
        SYSTEM, f"{RELEASE}-operator", extra_args=("--system-namespace", SYSTEM),
        overrides={"EVENTFERRY_METRICS_PORT": str(metrics_port), "EVENTFERRY_METRICS_HOST": "127.0.0.1"})
    cluster.operator, cluster.operator_port = operator, metrics_port
    assert operator_facts["env"]["EVENTFERRY_SYSTEM_NAMESPACE"] == SYSTEM
    assert operator_facts["env"]["EVENTFERRY_ADAPTER_IMAGE"] == "eventferry:e2e"
    operator.wait_until(lambda: http_get(metrics_port, "/readyz") == "leader: synced\n", 90, "leader and synced")
    for name in (f"{RELEASE}-broker", f"{RELEASE}-operator"):
        make_available(cluster, SYSTEM, name)

    # 4. The live-stream manifests (with the example services' Deployments and Services), applied with kubectl;
    # Services for the stand-ins; the topics.
    cluster.ok("create", "namespace", ns)
    cluster.ok("create", "serviceaccount", "default", "-n", ns)  # the ServiceAccount controller's part
    for name in STAND_INS:
        assert cluster.create(ns, service(name)).returncode == 0
    cluster.ok("create", "secret", "generic", "kafka-auth", "-n", ns, f"--from-literal=user={SCRAM_USER}",
               f"--from-literal=password={SCRAM_PASSWORD}", "--from-literal=mechanism=SCRAM-SHA-512")
    rocketmq.create_topic(rocketmq_topic)
    manifests = live_stream_manifests(ns, kafka, rocketmq, kafka_topic, rocketmq_topic)
    cluster.ok("apply", "-f", "-", stdin="\n---\n".join(yaml.safe_dump(d) for d in manifests))

    # The example services, from their Deployments, started at once (their models load meanwhile); each
    # Service's name resolves to its process, whose port stands for the Service's targetPort.
    example_pods: dict[str, tuple[ManagedProcess, dict[str, Any]]] = {}
    for name in EXAMPLE_SERVICES:
        process, facts = pods.start(ns, name)
        assert facts["command"] == [sys.executable, "-m", f"eventferry_examples.{name.replace('-', '_')}"]
        example_pods[name] = (process, facts)
        svc = cluster.get(ns, f"service/{name}")
        assert svc is not None, f"Service {name} of examples/live-stream/services"
        labels = facts["deployment"]["spec"]["template"]["metadata"]["labels"]
        assert svc["spec"]["selector"].items() <= labels.items(), (svc["spec"]["selector"], labels)
        [svc_port] = svc["spec"]["ports"]
        assert svc_port["targetPort"] == facts["container"]["ports"][0]["name"]
        pods.add_service(f"{name}.{ns}.svc.cluster.local", facts["port"])
    for name, (process, facts) in example_pods.items():
        probe = facts["container"]["readinessProbe"]["httpGet"]  # the kubelet's readiness probe
        assert probe["port"] == facts["container"]["ports"][0]["name"]
        process.wait_until(lambda p=facts["port"], path=probe["path"]: http_get(p, path) == "ok\n", 120, "ready")
        make_available(cluster, ns, name)

    broker_obj = wait_ready(cluster, pods, ns, "broker/live-stream")
    assert broker_obj["status"]["address"]["url"] == f"http://{INGRESS_HOST}/{ns}/live-stream"

    # 5. The adapters, from the Deployments the operator wrote.
    adapters = {}
    for kind, name in (("kafkasource", "video-frames"), ("rocketmqsource", "live-comments")):
        deployment_name = f"{kind}-{name}"
        cluster.wait(lambda d=deployment_name: cluster.get(ns, f"deployment/{d}"), f"Deployment {deployment_name}")
        port = free_port()
        process, facts = pods.start(ns, deployment_name, overrides={"K_METRICS_PORT": str(port)})
        adapters[kind] = (process, facts, port)
        container = facts["deployment"]["spec"]["template"]["spec"]["containers"][0]
        assert container["image"] == "eventferry:e2e"
        assert {e["name"]: e.get("value") for e in container["env"]}["K_SINK"] == \
            f"http://{INGRESS_HOST}/{ns}/live-stream"
        assert facts["env"]["K_SINK"] == f"http://127.0.0.1:{broker_port}/{ns}/live-stream"
    kafka_secrets = Path(adapters["kafkasource"][1]["env"]["K_SECRETS_DIR"]) / "kafka-auth"
    assert (kafka_secrets / "password").read_text() == SCRAM_PASSWORD
    for process, _facts, port in adapters.values():
        process.wait_until(lambda p=port: http_get(p, "/readyz") is not None and http_get(p, "/healthz") is not None,
                           90, "ready (consuming)")
    for kind, name in (("kafkasource", "video-frames"), ("rocketmqsource", "live-comments")):
        make_available(cluster, ns, f"{kind}-{name}")
        source = wait_ready(cluster, pods, ns, f"{kind}/{name}")
        assert condition_of(source, "Deployed")["reason"] == "DeploymentAvailable"  # type: ignore[index]
        assert source["status"]["sinkUri"] == f"http://{INGRESS_HOST}/{ns}/live-stream"

    # 6. Triggers Ready: only once the data plane process has reported the contract that holds them.
    triggers = [d["metadata"]["name"] for d in manifests if d["kind"] == "Trigger"]
    for trigger in triggers:
        ready = wait_ready(cluster, pods, ns, f"trigger/{trigger}")
        assert ready["status"]["subscriberUri"].startswith("http://")
        assert ".svc.cluster.local" in ready["status"]["subscriberUri"]
    assert json.loads(http_get(broker_port, "/contract") or "{}")["triggers"]
    moderation = cluster.get(ns, "trigger/comments-to-moderation")
    assert moderation is not None
    assert moderation["status"]["subscriberUri"] == f"http://moderation.{ns}.svc.cluster.local/comments"
    ready_after = time.monotonic() - started

    # 7. Events: records to Kafka, messages to RocketMQ, two comments posted to the broker ingress.
    sent = produce_kafka(kafka, kafka_topic)
    message_ids = produce_rocketmq(rocketmq, rocketmq_topic)
    for id_, text, _toxic in INGRESS_COMMENTS:
        assert post_to_ingress(broker_port, f"/{ns}/live-stream", id_, text) == 202

    def arrived(name: str, count: int, timeout: float = 60) -> list[Received]:
        try:
            return cluster.wait(lambda: (got := subscribers.received(name)) and len(got) >= count and got,
                                f"{count} event(s) at {name}", timeout)
        except AssertionError as error:
            raise AssertionError(f"{error}\n{pods.logs()}") from None

    # A plain Kafka record -> the adapter's CloudEvent (design section 8), routed by type and source.
    [raw] = arrived("frame-archive", 1)
    attrs, record = raw.event.attributes, sent[0]
    assert attrs["type"] == "dev.knative.kafka.event"
    assert attrs["source"] == f"/apis/v1/namespaces/{ns}/kafkasources/video-frames#{kafka_topic}"
    assert attrs["id"] == f"partition:{record.partition}/offset:{record.offset}"
    assert attrs["subject"] == f"partition:{record.partition}#{record.offset}"
    assert (attrs["key"], attrs["partitionkey"]) == ("room-1", "room-1")
    assert attrs["kafkaheaderxroomid"] == "r1"
    assert attrs["datacontenttype"] == "application/json"
    assert str(attrs["knativekafkapartition"]) == str(record.partition)
    assert str(attrs["knativekafkaoffset"]) == str(record.offset)
    assert attrs["stream"] == "live"  # ceOverrides
    # The same JSON (the adapter sends a Broker batches, in the CloudEvents JSON format: JSON data is embedded
    # as JSON, so its bytes may be re-serialized).
    assert json.loads(raw.event.data) == {"frame": 1}
    assert "knativebrokerttl" not in attrs

    # A plain RocketMQ message -> the adapter's CloudEvent, routed by the tag.
    [danmaku] = arrived("danmaku-wall", 1)
    attrs = danmaku.event.attributes
    assert attrs["type"] == "dev.eventferry.rocketmq.message"
    assert attrs["source"] == f"/apis/v1/namespaces/{ns}/rocketmqsources/live-comments#{rocketmq_topic}"
    assert attrs["id"] == attrs["rocketmqmsgid"] == message_ids["danmaku"]
    assert (attrs["subject"], attrs["rocketmqtag"], attrs["rocketmqtopic"]) == ("danmaku", "danmaku", rocketmq_topic)
    assert attrs["rocketmqkeys"] == "key-danmaku"
    assert (attrs["rocketmqproproom"], attrs["rocketmqpropviewerlevel"]) == ("r1", "5")
    assert str(attrs["rocketmqdeliveryattempt"]) == "1"
    assert attrs["stream"] == "live"
    assert "time" in attrs
    assert danmaku.event.data == b"so cool"

    # Every delivery ends, per Trigger, as it should: the CloudEvents on Kafka and RocketMQ pass through to
    # the example's Triggers (the non-keyframe goes nowhere; the toxic comments' flagged replies re-enter the
    # Broker and reach review; the stale key frames are dead-lettered), and nothing is lost or duplicated.
    comments = (*ROCKETMQ_COMMENTS, *INGRESS_COMMENTS)
    toxic = {id_: text for id_, text, is_toxic in comments if is_toxic}
    expected = {"comments-to-moderation": {"delivered": len(comments)},
                "flagged-to-review": {"delivered": len(toxic)},
                "gifts-to-leaderboard": {"delivered": len(GIFTS)},
                "frames-to-vision": {"delivered": len(FRESH_FRAMES), "dead_lettered": len(STALE_FRAMES)},
                "raw-frames-to-archive": {"delivered": 1}, "danmaku-to-wall": {"delivered": 1}}

    def ended() -> dict[str, dict[str, int]] | None:
        found = trigger_outcomes(broker_port, ns)
        totals = {name: sum(outcomes.values()) for name, outcomes in found.items()}
        return found if all(totals.get(name, 0) >= sum(want.values()) for name, want in expected.items()) else None

    try:
        cluster.wait(ended, "every Trigger's deliveries ended", 60)
    except AssertionError as error:
        raise AssertionError(f"{error}\n{trigger_outcomes(broker_port, ns)}\n{pods.logs()}") from None
    delivered = time.monotonic() - started
    time.sleep(2)  # nothing more comes: no duplicate, no late delivery
    assert trigger_outcomes(broker_port, ns) == expected
    assert len(subscribers.received("frame-archive")) == len(subscribers.received("danmaku-wall")) == 1
    # The gift tag was filtered out by the source: the danmaku is the only plain message the ingress took.
    assert received_by_type(broker_port, ns).get("dev.eventferry.rocketmq.message") == 1
    ports = {name: facts["port"] for name, (_process, facts) in example_pods.items()}

    # moderation scored every comment with its model and flagged the toxic ones; review got exactly those
    # replies (com.live.comment.flagged, naming the comment), through the Broker.
    assert get_json(ports["moderation"], "/stats") == {"scored": len(comments), "flagged": len(toxic),
                                                       "threshold": 0.8}
    review = get_json(ports["review"], "/flagged")
    assert review["count"] == len(toxic), review
    assert {item["data"]["comment"]: item["data"]["text"] for item in review["recent"]} == toxic, review
    assert {item["type"] for item in review["recent"]} == {"com.live.comment.flagged"}
    assert all(item["data"]["toxicity"] >= 0.8 for item in review["recent"]), review

    # The leaderboard's totals are the gifts sent.
    board = get_json(ports["leaderboard"], "/leaderboard?top=100")
    rooms: dict[str, float] = {}
    users: dict[str, float] = {}
    for _id, _kind, room, user, value in GIFTS:
        rooms[room] = rooms.get(room, 0) + value
        users[user] = users.get(user, 0) + value
    assert (board["gifts"], board["duplicates"], board["total"]) == (len(GIFTS), 0, sum(g[4] for g in GIFTS)), board
    assert {r["room"]: r["total"] for r in board["rooms"]} == rooms, board
    assert {u["user"]: u["total"] for u in board["users"]} == users, board
    assert board["kinds"] == {kind: 1 for _id, kind, *_rest in GIFTS}, board

    # vision classified the fresh key frames and answered 422 for the stale ones, which reached
    # frames-dead-letter with the broker's error attributes: the subscriber, the code, vision's reason.
    vision = get_json(ports["vision-inference"], "/stats")
    assert (vision["classified"], vision["stale"], vision["busy"]) == (len(FRESH_FRAMES), len(STALE_FRAMES), 0), \
        vision
    frames = cluster.get(ns, "trigger/frames-to-vision")
    assert frames is not None
    dead = get_json(ports["frames-dead-letter"], "/dead-letters")
    assert dead["count"] == len(STALE_FRAMES), dead
    assert sorted(item["id"] for item in dead["recent"]) == [f"frame-{n}" for n in STALE_FRAMES]
    for item in dead["recent"]:
        number = int(item["id"].removeprefix("frame-"))
        assert item["type"] == "com.live.video.frame"
        assert item["data"] == frame_data(number)  # passed through unchanged, from Kafka to the sink
        assert item["knativeerrorcode"] == "422"
        assert item["knativeerrordest"] == frames["status"]["subscriberUri"] \
            == f"http://vision-inference.{ns}.svc.cluster.local"
        assert base64.b64decode(item["knativeerrordata"]).decode() == item["error"]
        age = re.fullmatch(rf"stale frame: (\d+\.\d+)s old \(over {VISION_MAX_AGE}s\)\n", item["error"])
        assert age and float(age.group(1)) >= STALE_BY.total_seconds(), item

    metrics = http_get(broker_port, "/metrics") or ""
    assert "eventferry_" in metrics

    # No Secret value reached a log, an Event, a status or the contract: the KafkaSource's SASL password was
    # read by the operator (its autoscaler) and mounted into the adapter, and must show nowhere else.
    everywhere = "\n".join([
        *(process.log_tail(1_000_000) for process in pods.processes), metrics,
        cluster.ok("get", "events", "-n", ns, "-o", "json"),
        cluster.ok("get", "brokers,triggers,kafkasources,rocketmqsources", "-n", ns, "-o", "json"),
        cluster.ok("get", "configmaps", "-n", SYSTEM, "-o", "json")])
    for value in (SCRAM_PASSWORD, base64.b64encode(SCRAM_PASSWORD.encode()).decode()):
        assert value not in everywhere, "a Secret value leaked into a log, an Event, a status or a ConfigMap"
    print(f"\ne2e timings: everything Ready after {ready_after:.1f}s, all events delivered after {delivered:.1f}s")

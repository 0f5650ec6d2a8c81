"""Sender identity and EventPolicies against the real kube-apiserver: its ServiceAccount tokens, its keys.

The operator runs with ``--authentication=required``; the data plane (``eventferry broker --configmap``)
verifies tokens with the keys the API server publishes (service-account issuer discovery). Tokens are
issued by the API server's TokenRequest API, as a kubelet would project them.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from eventferry.apis.broker import broker_audience
from eventferry.dataplane.authentication import TokenVerifier, Unauthenticated, api_server_keys
from eventferry.dataplane.contract_configmap import ConfigMapClient
from eventferry.net.kubeconn import ApiConnection
from tests.env.ports import free_port
from tests.env.process import ManagedProcess
from tests.env.servers import Kafka, KubeAPI
from tests.support.cluster import (
    EVENTFERRY,
    SYSTEM,
    Cluster,
    condition_of,
    http_get,
    manifest,
    running,
    scratch_namespace,
    trigger,
)
from tests.support.subscriber import Subscriber, Subscribers
from tests.support.tokens import project_tokens, request_token

pytestmark = pytest.mark.integration

DATAPLANE_ACCOUNT = "eventferry-broker"
EVENT = {"ce-specversion": "1.0", "ce-source": "/tests", "ce-type": "com.example.allowed",
         "content-type": "application/json"}


@pytest.fixture(scope="module")
def cluster(kube_api: KubeAPI, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    cluster = Cluster(kube_api, tmp_path_factory.mktemp("identity"), operator_args=("--authentication=required",),
                      dataplane_args=(f"--service-account={SYSTEM}/{DATAPLANE_ACCOUNT}",))
    with running(cluster):
        if cluster.get(SYSTEM, f"serviceaccount/{DATAPLANE_ACCOUNT}") is None:
            cluster.ok("create", "serviceaccount", DATAPLANE_ACCOUNT, "-n", SYSTEM)  # its token is asked at delivery
        yield cluster


@pytest.fixture
def ns(cluster: Cluster) -> Iterator[str]:
    with scratch_namespace(cluster, "id") as name:
        yield name


@pytest.fixture
async def client() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def ready_broker(cluster: Cluster, ns: str, subscriber: Subscriber, **trigger_spec: Any) -> str:
    """A Broker with one Trigger to ``subscriber``, both Ready; the Broker's URL on loopback."""
    assert cluster.create(ns, manifest("Broker", "default", {})).returncode == 0
    assert cluster.create(ns, trigger("all", subscriber={"uri": subscriber.url + "/all"}, **trigger_spec)
                          ).returncode == 0
    await asyncio.to_thread(cluster.wait_condition, ns, "trigger/all", "Ready", "True")
    return f"http://127.0.0.1:{cluster.dataplane_port}/{ns}/default"


ACCEPTED: set[str] = set()
"""The ids of every event an ingress answered 202 in this test (each must reach the subscriber; no other may)."""


@pytest.fixture(autouse=True)
def _accepted_per_test() -> None:
    ACCEPTED.clear()


async def post(client: aiohttp.ClientSession, url: str, token: str | None, event_type: str = "com.example.allowed",
               ) -> tuple[int, str, dict[str, str]]:
    event_id = uuid.uuid4().hex
    headers = dict(EVENT, **{"ce-id": event_id, "ce-type": event_type})
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    async with client.post(url, data=b'{"n": 1}', headers=headers) as response:
        if response.status == 202:
            ACCEPTED.add(event_id)
        return response.status, await response.text(), dict(response.headers)


async def delivered_exactly_what_was_accepted(subscriber: Subscriber) -> None:
    """Every accepted event reached the subscriber, and nothing refused did."""
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and not {r.event.id for r in subscriber.at("/all")} >= ACCEPTED:
        await asyncio.sleep(0.1)
    await asyncio.sleep(0.3)  # anything refused but delivered would have arrived by now, too
    assert {r.event.id for r in subscriber.at("/all")} == ACCEPTED


def service_account(cluster: Cluster, ns: str, name: str) -> None:
    cluster.ok("create", "serviceaccount", name, "-n", ns)


async def test_a_broker_takes_only_tokens_of_its_audience_issued_by_the_api_server(
        cluster: Cluster, ns: str, subscribers: Subscribers, client: aiohttp.ClientSession) -> None:
    subscriber = await subscribers()
    url = await ready_broker(cluster, ns, subscriber)
    broker = cluster.get(ns, "broker/default")
    assert broker is not None
    audience = broker["status"]["address"]["audience"]
    assert audience == broker_audience(ns, "default") == f"eventferry.dev/broker/{ns}/default"
    policies = condition_of(broker, "EventPoliciesReady")
    assert policies is not None and policies["reason"] == "DefaultAuthorizationMode", policies
    service_account(cluster, ns, "producer")

    token = request_token(cluster.kube, ns, "producer", audience)
    status, _, _ = await post(client, url, token)
    assert status == 202
    [received] = await subscriber.wait_for(1, "/all")
    assert "authorization" not in {k.lower() for k in received.headers}  # the sender's token goes no further

    other = request_token(cluster.kube, ns, "producer", broker_audience(ns, "elsewhere"))
    status, text, headers = await post(client, url, other)
    assert status == 401 and "not for this audience" in text and audience in text
    assert headers["WWW-Authenticate"].startswith('Bearer realm="eventferry"')
    status, text, _ = await post(client, url, None)
    assert status == 401 and "no token" in text
    status, text, _ = await post(client, url, "not-a-jwt")
    assert status == 401 and "not a JWT" in text
    # A token in the Kubernetes form, signed by a key the API server does not publish.
    forged = forge_token(ns, "producer", audience)
    status, text, _ = await post(client, url, forged)
    assert status == 401 and "does not publish" in text

    # allow-same-namespace (the default mode): a ServiceAccount of another namespace is authenticated, not allowed.
    outsider_ns = f"{ns}-out"
    cluster.ok("create", "namespace", outsider_ns)
    try:
        service_account(cluster, outsider_ns, "producer")
        outsider = request_token(cluster.kube, outsider_ns, "producer", audience)
        status, text, _ = await post(client, url, outsider)
        assert status == 403 and f"system:serviceaccount:{outsider_ns}:producer may not send" in text, text
        assert "default: allow-same-namespace" in text
    finally:
        cluster.kubectl("delete", "namespace", outsider_ns, "--wait=false")
    await delivered_exactly_what_was_accepted(subscriber)


def forge_token(namespace: str, name: str, audience: str) -> str:
    import jwt
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    now = int(time.time())
    claims = {"iss": "https://kubernetes.default.svc.cluster.local", "aud": [audience], "iat": now, "nbf": now,
              "exp": now + 600, "sub": f"system:serviceaccount:{namespace}:{name}"}
    return jwt.encode(claims, key, algorithm="RS256", headers={"kid": "forged"})


async def test_the_verifier_refuses_an_expired_token_of_the_api_server(cluster: Cluster, ns: str,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """In process, with the API server's published keys: the clock moved past the token's expiry."""
    service_account(cluster, ns, "producer")
    audience = broker_audience(ns, "default")
    token = request_token(cluster.kube, ns, "producer", audience, seconds=600)
    monkeypatch.setenv("KUBECONFIG", str(cluster.kube.kubeconfig))
    api = ConfigMapClient(ApiConnection.from_environment())
    skew = [0.0]
    verifier = TokenVerifier(api_server_keys(api.request), clock=lambda: time.time() + skew[0])
    try:
        await verifier.refresh()
        caller = await verifier.verify(f"Bearer {token}", audience)
        assert caller.subject == f"system:serviceaccount:{ns}:producer" and caller.namespace == ns
        assert caller.expires - time.time() == pytest.approx(600, abs=30)
        skew[0] = 601 + 5  # past expiry and the allowed clock skew: the cached verification must not let it in
        with pytest.raises(Unauthenticated, match="expired"):
            await verifier.verify(f"Bearer {token}", audience)
    finally:
        await api.close()


async def test_an_eventpolicy_admits_one_service_account_refuses_another_and_follows_a_change(
        cluster: Cluster, ns: str, subscribers: Subscribers, client: aiohttp.ClientSession) -> None:
    subscriber = await subscribers()
    url = await ready_broker(cluster, ns, subscriber)
    audience = broker_audience(ns, "default")
    for name in ("alice", "bob"):
        service_account(cluster, ns, name)
    alice = request_token(cluster.kube, ns, "alice", audience)
    bob = request_token(cluster.kube, ns, "bob", audience)
    policy = manifest("EventPolicy", "only-alice", {
        "to": [{"ref": {"apiVersion": "eventferry.dev/v1alpha1", "kind": "Broker", "name": "default"}}],
        "from": [{"ref": {"apiVersion": "v1", "kind": "ServiceAccount", "name": "alice"}}],
        "filters": [{"prefix": {"type": "com.example."}}]})
    assert cluster.create(ns, policy).returncode == 0

    async def answers(token: str, event_type: str = "com.example.allowed") -> int:
        return (await post(client, url, token, event_type))[0]

    started = time.monotonic()
    await eventually_async(lambda: answers(bob), 403, "bob refused once the policy applies")
    applied_after = time.monotonic() - started
    assert await answers(alice) == 202
    status, text, _ = await post(client, url, alice, "org.other.type")
    assert status == 403 and "passes the filters of none" in text and "only-alice" in text

    stored = cluster.get(ns, "eventpolicy/only-alice")
    assert stored is not None and stored["status"]["from"] == [f"system:serviceaccount:{ns}:alice"]
    assert condition_of(stored, "Ready")["status"] == "True"  # type: ignore[index]
    broker = cluster.wait(lambda: (b := cluster.get(ns, "broker/default")) and b["status"].get("policies") and b,
                          "the Broker lists its policy")
    assert broker["status"]["policies"] == [{"apiVersion": "eventferry.dev/v1alpha1", "name": "only-alice"}]
    assert condition_of(broker, "EventPoliciesReady")["reason"] == "EventPoliciesReady"  # type: ignore[index]

    # The policy changes: bob in, alice out, within seconds.
    changed = {"spec": {"from": [{"sub": f"system:serviceaccount:{ns}:bob"}]}}
    assert cluster.patch(ns, "eventpolicy/only-alice", changed).returncode == 0
    started = time.monotonic()
    await eventually_async(lambda: answers(alice), 403, "alice refused after the change")
    changed_after = time.monotonic() - started
    assert await answers(bob) == 202
    print(f"\npolicy applied after {applied_after:.2f}s, change after {changed_after:.2f}s")
    assert changed_after < 10

    # The policy goes: the default mode (allow-same-namespace) lets both in again.
    cluster.ok("delete", "eventpolicy", "only-alice", "-n", ns)
    await eventually_async(lambda: answers(alice), 202, "alice allowed by the default mode")
    await delivered_exactly_what_was_accepted(subscriber)


async def test_the_default_modes_deny_all_and_allow_all(cluster: Cluster, ns: str, subscribers: Subscribers,
                                                         client: aiohttp.ClientSession) -> None:
    subscriber = await subscribers()
    url = await ready_broker(cluster, ns, subscriber)
    audience = broker_audience(ns, "default")
    service_account(cluster, ns, "producer")
    outsider_ns = f"{ns}-out"
    cluster.ok("create", "namespace", outsider_ns)
    service_account(cluster, outsider_ns, "producer")
    insider = request_token(cluster.kube, ns, "producer", audience)
    outsider = request_token(cluster.kube, outsider_ns, "producer", audience)
    try:
        await restart_operator(cluster, "--default-authorization-mode=deny-all")
        await eventually_async(lambda: post_status(client, url, insider), 403, "deny-all refuses the same namespace")
        broker = cluster.get(ns, "broker/default")
        assert "default authorization mode deny-all" in condition_of(broker, "EventPoliciesReady")["message"]  # type: ignore[index]

        await restart_operator(cluster, "--default-authorization-mode=allow-all")
        await eventually_async(lambda: post_status(client, url, outsider), 202, "allow-all lets another namespace in")
        assert await post_status(client, url, insider) == 202
    finally:
        await restart_operator(cluster)
        cluster.kubectl("delete", "namespace", outsider_ns, "--wait=false")
    await delivered_exactly_what_was_accepted(subscriber)


async def post_status(client: aiohttp.ClientSession, url: str, token: str) -> int:
    return (await post(client, url, token))[0]


async def restart_operator(cluster: Cluster, *mode: str) -> None:
    assert cluster.operator is not None
    await asyncio.to_thread(cluster.operator.stop)
    cluster.operator_args = ("--authentication=required", *mode)
    await asyncio.to_thread(cluster.run_operator)


async def eventually_async(probe: Any, expected: Any, what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = await probe()
        if last == expected:
            return
        await asyncio.sleep(0.2)
    raise AssertionError(f"{what}: still {last!r} after {timeout:g}s, wanted {expected!r}")


async def test_a_kafka_source_adapter_presents_its_own_token_and_an_eventpolicy_names_the_source(
        cluster: Cluster, ns: str, kafka: Kafka, subscribers: Subscribers, tmp_path: Path) -> None:
    from aiokafka import AIOKafkaProducer
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    subscriber = await subscribers()
    await ready_broker(cluster, ns, subscriber)
    topic = f"identity-{uuid.uuid4().hex[:8]}"
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka.bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)])
    finally:
        await admin.close()
    source = manifest("KafkaSource", "orders", {
        "bootstrapServers": [kafka.bootstrap], "topics": [topic], "initialOffset": "earliest",
        "sink": {"ref": {"apiVersion": "eventferry.dev/v1alpha1", "kind": "Broker", "name": "default"}}})
    assert cluster.create(ns, source).returncode == 0
    deployment = cluster.wait(lambda: cluster.get(ns, "deployment/kafkasource-orders"), "the adapter Deployment")
    pod = deployment["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "kafkasource-orders" and pod["automountServiceAccountToken"] is False
    [token_volume] = [v for v in pod["volumes"] if "projected" in v]
    assert token_volume["projected"]["sources"][0]["serviceAccountToken"]["audience"] == broker_audience(ns, "default")
    account = cluster.get(ns, "serviceaccount/kafkasource-orders")
    assert account is not None and account["metadata"]["ownerReferences"][0]["kind"] == "KafkaSource"
    stored = cluster.wait(lambda: (s := cluster.get(ns, "kafkasource/orders")) and s["status"].get("auth") and s,
                          "the source reports who it sends as")
    assert stored["status"]["auth"] == {"serviceAccountName": "kafkasource-orders"}
    assert stored["status"]["sinkAudience"] == broker_audience(ns, "default")

    # Only the source may send, by a policy that names it (resolved to its ServiceAccount).
    policy = manifest("EventPolicy", "only-orders", {
        "from": [{"ref": {"apiVersion": "eventferry.dev/v1alpha1", "kind": "KafkaSource", "name": "orders"}}]})
    assert cluster.create(ns, policy).returncode == 0
    cluster.wait(lambda: (p := cluster.get(ns, "eventpolicy/only-orders")) and p.get("status", {}).get("from"),
                 "the policy resolved")
    await asyncio.to_thread(cluster.wait_condition, ns, "broker/default", "Ready", "True")

    # What the kubelet would do: the projected token, then the adapter's container as a process.
    env = {item["name"]: item["value"] for item in pod["containers"][0]["env"]}
    env.update(project_tokens(cluster.kube, deployment, tmp_path / "tokens"))
    env.update(K_SINK=f"http://127.0.0.1:{cluster.dataplane_port}/{ns}/default", K_METRICS_PORT=str(free_port()),
               K_SECRETS_DIR=str(tmp_path / "secrets"), PATH=os.environ["PATH"])
    assert (await asyncio.to_thread(Path(env["K_SINK_TOKEN_FILE"]).read_text)).count(".") == 2  # a JWT
    producer = AIOKafkaProducer(bootstrap_servers=kafka.bootstrap)
    await producer.start()
    adapter = ManagedProcess("adapter", [EVENTFERRY, "adapter", "kafka"], tmp_path / "adapter.log", env=env)
    try:
        for n in range(20):
            await producer.send_and_wait(topic, json.dumps({"n": n}).encode())
        delivered = await subscriber.wait_for(20, "/all", timeout=60)
        assert sorted(json.loads(r.event.data)["n"] for r in delivered) == list(range(20))  # type: ignore[arg-type]
    finally:
        await producer.stop()
        await asyncio.to_thread(adapter.stop)
    # Every request of the adapter was let in: the ingress answered it nothing but 202.
    metrics = http_get(cluster.dataplane_port, "/metrics") or ""
    answered = {line.split('code="')[1].split('"')[0] for line in metrics.splitlines()
                if line.startswith("eventferry_broker_events_received_total") and f'namespace="{ns}"' in line}
    assert answered == {"202"}, answered


async def test_eventferry_run_can_require_tokens_and_enforce_eventpolicy_manifests(
        cluster: Cluster, ns: str, subscribers: Subscribers, client: aiohttp.ClientSession, tmp_path: Path) -> None:
    """The embedded mode, with the API server of KUBECONFIG as the token issuer: the same rules, no operator."""
    subscriber = await subscribers()
    for name in ("alice", "bob"):
        service_account(cluster, ns, name)
    documents = [manifest("Broker", "local", {}, namespace=ns),
                 manifest("Trigger", "all", {"broker": "local", "subscriber": {"uri": subscriber.url + "/all"}},
                          namespace=ns),
                 manifest("EventPolicy", "only-alice", {"from": [{"sub": f"system:serviceaccount:{ns}:alice"}]},
                          namespace=ns)]
    files = tmp_path / "manifests.yaml"
    files.write_text("\n---\n".join(json.dumps(d) for d in documents))
    port = free_port()
    env = dict(os.environ, KUBECONFIG=str(cluster.kube.kubeconfig))
    process = ManagedProcess("run", [EVENTFERRY, "run", "-f", str(files), "--port", str(port),
                                     "--authentication", "required"], tmp_path / "run.log", env=env)
    try:
        await asyncio.to_thread(process.wait_until, lambda: "ready:" in process.log_tail(20), 30, "ready")
        url = f"http://127.0.0.1:{port}/{ns}/local"
        audience = broker_audience(ns, "local")
        assert f"tokens for audience {audience}" in process.log_tail(20)
        assert (await post(client, url, request_token(cluster.kube, ns, "alice", audience)))[0] == 202
        status, text, _ = await post(client, url, request_token(cluster.kube, ns, "bob", audience))
        assert status == 403 and f"{ns}/only-alice" in text
        assert (await post(client, url, None))[0] == 401
        await delivered_exactly_what_was_accepted(subscriber)
    finally:
        await asyncio.to_thread(process.stop)

    # Sources would run in the process without a token: refused at start, saying so.
    source = manifest("KafkaSource", "orders", {"bootstrapServers": ["127.0.0.1:1"], "topics": ["t"],
                                                "sink": {"uri": "http://127.0.0.1:1/"}}, namespace=ns)
    files.write_text("\n---\n".join(json.dumps(d) for d in [*documents, source]))
    done = await asyncio.to_thread(subprocess.run, [EVENTFERRY, "run", "-f", str(files), "--port", str(free_port()),
                                                    "--authentication", "required"],
                                   capture_output=True, text=True, env=env, timeout=60)
    assert done.returncode == 2 and "sources run in this process and present no token" in done.stderr
    # Without an API server to read keys from: a clear error, not an open broker.
    files.write_text("\n---\n".join(json.dumps(d) for d in documents))
    done = await asyncio.to_thread(subprocess.run, [EVENTFERRY, "run", "-f", str(files), "--port", str(free_port()),
                                                    "--authentication", "required"], capture_output=True, text=True,
                                   env=dict(os.environ, KUBECONFIG=str(tmp_path / "none")), timeout=60)
    assert done.returncode != 0 and "KUBECONFIG" in done.stderr, done.stderr



async def test_the_data_plane_presents_its_own_token_to_a_subscriber_that_asks_for_one(
        cluster: Cluster, ns: str, subscribers: Subscribers, client: aiohttp.ClientSession,
        monkeypatch: pytest.MonkeyPatch) -> None:
    subscriber = await subscribers()
    assert cluster.create(ns, manifest("Broker", "default", {})).returncode == 0
    asks = {"uri": subscriber.url + "/checked", "audience": "inference.live"}
    assert cluster.create(ns, trigger("checked", subscriber=asks)).returncode == 0
    assert cluster.create(ns, trigger("open", subscriber={"uri": subscriber.url + "/open"})).returncode == 0
    for name in ("checked", "open"):
        await asyncio.to_thread(cluster.wait_condition, ns, f"trigger/{name}", "Ready", "True")
    [entry] = [b for b in cluster.contract()["brokers"] if (b["namespace"], b["name"]) == (ns, "default")]
    assert {t["name"]: t.get("subscriberAudience") for t in entry["triggers"]} == \
        {"checked": "inference.live", "open": None}
    service_account(cluster, ns, "producer")
    token = request_token(cluster.kube, ns, "producer", broker_audience(ns, "default"))
    url = f"http://127.0.0.1:{cluster.dataplane_port}/{ns}/default"
    for _ in range(3):
        assert (await post(client, url, token))[0] == 202
    checked = await subscriber.wait_for(3, "/checked")
    await subscriber.wait_for(3, "/open")
    assert all("authorization" not in {k.lower() for k in r.headers} for r in subscriber.at("/open"))
    presented = {next(v for k, v in r.headers.items() if k.lower() == "authorization") for r in checked}
    assert len(presented) == 1  # one token for the audience, reused, not one per delivery
    # The subscriber can verify it as any service would: the API server's keys, its own audience.
    monkeypatch.setenv("KUBECONFIG", str(cluster.kube.kubeconfig))
    api = ConfigMapClient(ApiConnection.from_environment())
    try:
        verifier = TokenVerifier(api_server_keys(api.request))
        caller = await verifier.verify(presented.pop(), "inference.live")
    finally:
        await api.close()
    assert caller.subject == f"system:serviceaccount:{SYSTEM}:{DATAPLANE_ACCOUNT}"


def test_the_api_server_refuses_an_invalid_eventpolicy_naming_the_field(cluster: Cluster, ns: str) -> None:
    """The CRD's CEL rules, run by the API server itself."""
    for spec, named in (
            ({"from": [{"sub": "system:serviceaccount:*:x"}]}, "'*' is only allowed as the last character"),
            ({"from": [{"sub": "a", "ref": {"apiVersion": "v1", "kind": "ServiceAccount", "name": "x"}}]},
             "exactly one of ref or sub"),
            ({"to": [{"ref": {"apiVersion": "eventferry.dev/v1alpha1", "kind": "Broker", "name": "b"},
                      "selector": {"apiVersion": "eventferry.dev/v1alpha1", "kind": "Broker"}}]},
             "exactly one of ref or selector"),
            ({"to": [{"selector": {"apiVersion": "eventferry.dev/v1alpha1", "kind": "Broker",
                                   "matchExpressions": [{"key": "tier", "operator": "In"}]}}]},
             "In and NotIn need values")):
        refused = cluster.create(ns, manifest("EventPolicy", f"bad-{uuid.uuid4().hex[:6]}", spec))
        assert refused.returncode != 0 and named in refused.stderr, (spec, refused.stderr)
    accepted = cluster.create(ns, manifest("EventPolicy", "fine", {"from": [{"sub": "system:serviceaccount:ops:*"}]}))
    assert accepted.returncode == 0, accepted.stderr

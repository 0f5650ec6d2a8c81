"""Sender identity and authorization, the pure parts: which policies select a Broker, what the contract
holds, what the data plane lets in, token verification rules, and the builders' output.

The verifier is exercised here with keys made in the test (signatures, algorithms, caching, key rotation);
tests/integration/test_sender_identity.py runs it against the API server's own keys and tokens.
"""

from __future__ import annotations

import time
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from eventferry.apis.broker import Broker, broker_audience
from eventferry.apis.eventpolicy import EventPolicy
from eventferry.apis.kafkasource import KafkaSource
from eventferry.apis.trigger import Trigger
from eventferry.contract.compile import compile_contract
from eventferry.contract.model import Broker as ContractBroker
from eventferry.contract.model import SenderPolicy
from eventferry.contract.resolve import Resolver
from eventferry.contract.senders import ResolvedPolicy, SenderAuthorization, Target, applying, sender_policies
from eventferry.dataplane.authentication import KeysUnavailable, TokenVerifier, Unauthenticated
from eventferry.dataplane.authorization import Forbidden, SenderPolicies
from eventferry.events import CloudEvent
from eventferry.resources.adapter import AdapterSettings, adapter_deployment, adapter_service_account
from eventferry.resources.eventpolicy import eventpolicy_status, resolve_senders
from eventferry.resources.status import BrokerFacts, broker_status, event_policies_condition

ISSUER = "https://kubernetes.default.svc.cluster.local"
AUDIENCE = "eventferry.dev/broker/live/default"


def policy(name: str, spec: dict[str, Any], namespace: str = "live") -> EventPolicy:
    return EventPolicy.model_validate({"apiVersion": "eventferry.dev/v1alpha1", "kind": "EventPolicy",
                                       "metadata": {"name": name, "namespace": namespace}, "spec": spec})


def target(name: str = "default", labels: dict[str, str] | None = None, namespace: str = "live") -> Target:
    return Target("eventferry.dev/v1alpha1", "Broker", namespace, name, labels or {})


def authorization(*policies: EventPolicy, mode: Any = "allow-same-namespace") -> SenderAuthorization:
    return SenderAuthorization(mode, tuple(ResolvedPolicy(p, resolve_senders(p).subjects) for p in policies))


# --- which policies apply ----------------------------------------------------------------------------------

def test_a_policy_selects_by_ref_by_labels_or_everything_in_its_namespace() -> None:
    by_ref = policy("by-ref", {"to": [{"ref": {"apiVersion": "eventferry.dev/v1", "kind": "Broker", "name": "a"}}]})
    by_labels = policy("by-labels", {"to": [{"selector": {
        "apiVersion": "eventferry.dev/v1alpha1", "kind": "Broker", "matchLabels": {"tier": "gold"},
        "matchExpressions": [{"key": "region", "operator": "In", "values": ["eu", "us"]},
                             {"key": "legacy", "operator": "DoesNotExist"}]}}]})
    everything = policy("everything", {})
    elsewhere = policy("elsewhere", {}, namespace="other")
    auth = authorization(by_ref, by_labels, everything, elsewhere)
    names = [p.key for p in applying(target("a"), auth)]
    assert names == ["live/by-ref", "live/everything"]  # the API version is not compared, the group is
    gold = target("b", {"tier": "gold", "region": "eu"})
    assert [p.key for p in applying(gold, auth)] == ["live/by-labels", "live/everything"]
    assert [p.key for p in applying(target("b", {"tier": "gold", "region": "asia"}), auth)] == ["live/everything"]
    assert [p.key for p in applying(target("b", {"tier": "gold", "region": "eu", "legacy": "1"}), auth)] == \
        ["live/everything"]
    trigger_kind = Target("eventferry.dev/v1alpha1", "Trigger", "live", "a", {})
    assert [p.key for p in applying(trigger_kind, auth)] == ["live/everything"]


def test_the_default_mode_applies_only_where_no_policy_selects() -> None:
    assert sender_policies(target(), authorization()) == [
        SenderPolicy(name="default: allow-same-namespace", subjects=["system:serviceaccount:live:*"])]
    assert sender_policies(target(), authorization(mode="allow-all"))[0].subjects == ["*"]
    assert sender_policies(target(), authorization(mode="deny-all")) == []
    # A policy with no `from` still applies: no one is let in, not even the namespace.
    closed = policy("closed", {})
    assert sender_policies(target(), authorization(closed)) == [SenderPolicy(name="live/closed", subjects=[])]


def test_compile_gives_each_broker_its_audience_and_policies_only_when_senders_are_checked() -> None:
    broker = Broker.model_validate({"apiVersion": "eventferry.dev/v1alpha1", "kind": "Broker",
                                    "metadata": {"name": "default", "namespace": "live", "labels": {"a": "b"}}})
    trig = Trigger.model_validate({"apiVersion": "eventferry.dev/v1alpha1", "kind": "Trigger",
                                   "metadata": {"name": "t", "namespace": "live"},
                                   "spec": {"broker": "default", "subscriber": {"uri": "http://s/"}}})
    resolver = Resolver(broker_url=lambda ns, name: None)
    open_contract = compile_contract([broker], [trig], resolver, generation=1).contract
    assert open_contract.brokers[0].audience is None and open_contract.brokers[0].policies == []
    allow = policy("gifts", {"from": [{"sub": "system:serviceaccount:live:gifts"}],
                             "filters": [{"prefix": {"type": "com.live.gift"}}]})
    checked = compile_contract([broker], [trig], resolver, generation=1, senders=authorization(allow)).contract
    [compiled] = checked.brokers
    assert compiled.audience == AUDIENCE == broker_audience("live", "default")
    assert [(p.name, p.subjects) for p in compiled.policies] == [("live/gifts", ["system:serviceaccount:live:gifts"])]
    assert compiled.policies[0].filters[0].prefix == {"type": "com.live.gift"}
    # The contract round-trips through its JSON with the policies (the data plane reads it back).
    assert type(checked).from_json(checked.to_json()) == checked


# --- what the data plane lets in ----------------------------------------------------------------------------

def event(event_type: str) -> CloudEvent:
    return CloudEvent({"specversion": "1.0", "type": event_type, "source": "/s", "id": "1"})


def contract_broker(*policies: SenderPolicy) -> ContractBroker:
    return ContractBroker(namespace="live", name="default", audience=AUDIENCE, policies=list(policies))


def test_sender_policies_match_exact_subjects_prefixes_and_filters() -> None:
    policies = SenderPolicies(contract_broker(
        SenderPolicy(name="live/gifts", subjects=["system:serviceaccount:live:gifts"],
                     filters=[{"prefix": {"type": "com.live.gift"}}]),
        SenderPolicy(name="default-ns", subjects=["system:serviceaccount:ops:*"])))
    gifts = policies.admitting("system:serviceaccount:live:gifts")
    policies.check_events("system:serviceaccount:live:gifts", gifts, [event("com.live.gift.sent")])
    with pytest.raises(Forbidden, match="passes the filters of none of the policies"):
        policies.check_events("system:serviceaccount:live:gifts", gifts, [event("com.live.gift.sent"),
                                                                          event("com.live.comment")])
    ops = policies.admitting("system:serviceaccount:ops:anyone")
    policies.check_events("system:serviceaccount:ops:anyone", ops, [event("anything")])  # no filters: all pass
    with pytest.raises(Forbidden, match="system:serviceaccount:live:gifts-2 may not send to Broker live/default"):
        policies.admitting("system:serviceaccount:live:gifts-2")  # exact means exact, not a prefix
    with pytest.raises(Forbidden, match="none: no sender is allowed"):
        SenderPolicies(contract_broker()).admitting("system:serviceaccount:live:gifts")


# --- token verification ---------------------------------------------------------------------------------------

class Issuer:
    """Signs tokens as the API server does and serves its keys (the test's stand-in for discovery)."""

    def __init__(self) -> None:
        self.keys: dict[str, Any] = {}
        self.fetches = 0
        self.rotate()

    def rotate(self) -> str:
        kid = f"key-{len(self.keys)}"
        self.keys[kid] = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        return kid

    def token(self, kid: str | None = None, **claims: Any) -> str:
        kid = kid or next(iter(self.keys))
        now = int(time.time())
        body = {"iss": ISSUER, "sub": "system:serviceaccount:live:gifts", "aud": [AUDIENCE], "iat": now, "nbf": now,
                "exp": now + 600, **claims}
        return jwt.encode(body, self.keys[kid], algorithm="RS256", headers={"kid": kid})

    async def fetch(self) -> tuple[str, dict[str, Any]]:
        self.fetches += 1
        published = []
        for kid, key in self.keys.items():
            jwk = jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key(), as_dict=True)
            published.append({**jwk, "kid": kid, "use": "sig", "alg": "RS256"})
        return ISSUER, {"keys": published}


async def test_a_valid_token_names_its_sender_and_is_verified_once() -> None:
    issuer = Issuer()
    verifier = TokenVerifier(issuer.fetch)
    await verifier.refresh()
    token = issuer.token()
    caller = await verifier.verify(f"Bearer {token}", AUDIENCE)
    assert (caller.subject, caller.namespace) == ("system:serviceaccount:live:gifts", "live")
    # The second request is answered from the cache: no signature check, but the audience still is.
    assert await verifier.verify(f"bearer  {token} ", AUDIENCE) == caller
    with pytest.raises(Unauthenticated, match="not for this audience"):
        await verifier.verify(f"Bearer {token}", "eventferry.dev/broker/live/other")


@pytest.mark.parametrize(("claims", "message"), [
    ({"exp": -60}, "expired"),  # times: seconds from now, made when the test runs (not when it is collected)
    ({"nbf": 600}, "not valid yet"),
    ({"iss": "https://someone.else"}, "another issuer"),
    ({"aud": ["other"]}, "not for this audience"),
])
async def test_a_token_outside_its_window_or_from_elsewhere_is_refused(claims: dict[str, Any], message: str) -> None:
    issuer = Issuer()
    verifier = TokenVerifier(issuer.fetch)
    await verifier.refresh()
    claims = {k: int(time.time()) + v if k in ("exp", "nbf") else v for k, v in claims.items()}
    with pytest.raises(Unauthenticated, match=message):
        await verifier.verify(f"Bearer {issuer.token(**claims)}", AUDIENCE)


async def test_tampered_symmetric_and_malformed_tokens_are_refused() -> None:
    issuer = Issuer()
    verifier = TokenVerifier(issuer.fetch)
    await verifier.refresh()
    header, _, signature = issuer.token().split(".")
    other = issuer.token(sub="system:serviceaccount:kube-system:admin").split(".")[1]
    with pytest.raises(Unauthenticated, match="invalid"):
        await verifier.verify(f"Bearer {header}.{other}.{signature}", AUDIENCE)
    # HS256 signed with the public key: the classic confusion, refused by algorithm before any key is used.
    hs = jwt.encode({"iss": ISSUER, "sub": "x", "aud": AUDIENCE, "exp": time.time() + 60},
                    "secret-key-of-32-bytes-long-xxxx", algorithm="HS256", headers={"kid": "key-0"})
    with pytest.raises(Unauthenticated, match="algorithm 'HS256' is not accepted"):
        await verifier.verify(f"Bearer {hs}", AUDIENCE)
    for authorization, message in ((None, "no token"), ("Basic abc", "must be 'Bearer"), ("Bearer ", "must be"),
                                   ("Bearer a.b", "not a JWT")):
        with pytest.raises(Unauthenticated, match=message):
            await verifier.verify(authorization, AUDIENCE)


async def test_a_rotated_key_is_fetched_once_and_a_withdrawn_key_stops_its_cached_tokens() -> None:
    issuer = Issuer()
    clock = [0.0]
    verifier = TokenVerifier(issuer.fetch, monotonic=lambda: clock[0])
    await verifier.refresh()
    old = issuer.token("key-0")
    await verifier.verify(f"Bearer {old}", AUDIENCE)
    new_kid = issuer.rotate()
    fetches = issuer.fetches
    # Tokens naming unknown keys fetch the keys at most once per interval, however many arrive.
    with pytest.raises(Unauthenticated, match="does not publish"):
        await verifier.verify(f"Bearer {issuer.token(new_kid)}", AUDIENCE)
    assert issuer.fetches == fetches
    clock[0] += 10
    await verifier.verify(f"Bearer {issuer.token(new_kid)}", AUDIENCE)  # the interval passed: fetched, known
    assert issuer.fetches == fetches + 1
    del issuer.keys["key-0"]
    await verifier.refresh()
    with pytest.raises(Unauthenticated, match="does not publish"):
        await verifier.verify(f"Bearer {old}", AUDIENCE)


async def test_without_keys_the_verifier_says_it_cannot_verify_rather_than_refusing_the_sender() -> None:
    async def unreachable() -> tuple[str, dict[str, Any]]:
        raise ConnectionError("API server unreachable")

    verifier = TokenVerifier(unreachable)
    await verifier.refresh()
    assert not verifier.loaded
    with pytest.raises(KeysUnavailable):
        await verifier.verify(f"Bearer {Issuer().token()}", AUDIENCE)


# --- builders -------------------------------------------------------------------------------------------------

def kafka_source(sink: dict[str, Any]) -> KafkaSource:
    return KafkaSource.model_validate({
        "apiVersion": "eventferry.dev/v1alpha1", "kind": "KafkaSource",
        "metadata": {"name": "orders", "namespace": "live", "uid": "u-1"},
        "spec": {"bootstrapServers": ["k:9092"], "topics": ["t"], "sink": sink}})


def test_an_adapter_sending_to_a_checking_broker_gets_its_own_account_and_a_projected_token() -> None:
    source = kafka_source({"ref": {"apiVersion": "eventferry.dev/v1alpha1", "kind": "Broker", "name": "default"}})
    resolver = Resolver(broker_url=lambda ns, name: f"http://ingress/{ns}/{name}", broker_audiences=True)
    audience = resolver.audience(source.spec.sink, "live")
    assert audience == AUDIENCE
    deployment = adapter_deployment(source, sink_uri="http://ingress/live/default", delivery=None,
                                    settings=AdapterSettings(image="i"), sink_audience=audience)
    pod = deployment["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "kafkasource-orders" and pod["automountServiceAccountToken"] is False
    [volume] = [v for v in pod["volumes"] if v["name"] == "sink-token"]
    assert volume["projected"]["sources"] == [{"serviceAccountToken": {
        "audience": AUDIENCE, "expirationSeconds": 3600, "path": "token"}}]
    env = {e["name"]: e["value"] for e in pod["containers"][0]["env"]}
    assert env["K_SINK_TOKEN_FILE"] == "/var/run/secrets/eventferry.dev/sink/token"
    account = adapter_service_account(source)
    assert account["metadata"]["name"] == "kafkasource-orders" and account["automountServiceAccountToken"] is False
    assert account["metadata"]["ownerReferences"][0]["uid"] == "u-1"
    # Without checking Brokers (or to a plain sink) nothing of it.
    plain = adapter_deployment(source, sink_uri="http://ingress/live/default", delivery=None,
                               settings=AdapterSettings(image="i"))
    assert "serviceAccountName" not in plain["spec"]["template"]["spec"]
    assert Resolver(broker_url=lambda ns, name: "u").audience(source.spec.sink, "live") is None
    uri_sink = kafka_source({"uri": "http://s/", "audience": "my-service"})
    assert resolver.audience(uri_sink.spec.sink, "live") == "my-service"  # a destination's own audience wins


def test_eventpolicy_senders_resolve_to_subjects_and_the_status_says_what_could_not() -> None:
    mixed = policy("mixed", {"from": [
        {"sub": "system:serviceaccount:ops:*"},
        {"ref": {"apiVersion": "v1", "kind": "ServiceAccount", "name": "gifts"}},
        {"ref": {"apiVersion": "eventferry.dev/v1alpha1", "kind": "RocketMQSource", "name": "comments",
                 "namespace": "ingest"}},
        {"ref": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"}}]})
    resolved = resolve_senders(mixed)
    assert resolved.subjects == ("system:serviceaccount:ops:*", "system:serviceaccount:live:gifts",
                                 "system:serviceaccount:ingest:rocketmqsource-comments")
    assert len(resolved.unresolved) == 1 and "Deployment" in resolved.unresolved[0]
    status = eventpolicy_status(resolved, True, None, 1, "2026-01-01T00:00:00Z")
    conditions = {c["type"]: c for c in status["conditions"]}
    assert conditions["SubjectsResolved"]["status"] == "False" and conditions["Ready"]["status"] == "False"
    assert status["from"] == list(resolved.subjects)
    disabled = eventpolicy_status(resolve_senders(policy("p", {})), False, None, 1, "2026-01-01T00:00:00Z")
    assert {c["type"]: c.get("reason") for c in disabled["conditions"]}["AuthenticationEnabled"] == \
        "AuthenticationDisabled"
    assert resolve_senders(mixed, adapter_service_account="adapters").subjects[2] == \
        "system:serviceaccount:ingest:adapters"


def test_the_broker_status_shows_its_audience_policies_and_why() -> None:
    facts = BrokerFacts(address="http://ingress/live/default", audience=AUDIENCE, policies=("gifts",),
                        senders=event_policies_condition(True, "allow-same-namespace", ("gifts",)))
    status = broker_status(facts, None, 1, "2026-01-01T00:00:00Z")
    assert status["address"] == {"url": "http://ingress/live/default", "audience": AUDIENCE}
    assert status["policies"] == [{"apiVersion": "eventferry.dev/v1alpha1", "name": "gifts"}]
    unenforced = event_policies_condition(False, "allow-same-namespace", ("gifts",))
    assert (unenforced.status, unenforced.reason) == ("False", "AuthenticationDisabled")
    assert "--authentication=required" in (unenforced.message or "")
    assert event_policies_condition(False, "allow-same-namespace", ()).status == "True"
    assert event_policies_condition(True, "deny-all", ()).reason == "DefaultAuthorizationMode"


async def test_an_adapter_sends_its_token_to_its_sink_and_to_no_other_destination(tmp_path: Any) -> None:
    from eventferry.adapters.config import AdapterConfig
    from eventferry.adapters.core import sink_authorization
    from eventferry.contract.model import Delivery

    token = tmp_path / "token"
    token.write_text("header.payload.signature\n")
    config = AdapterConfig("kafka", "live", "orders", "http://ingress/live/default",
                           Delivery(dead_letter_sink="http://dls/"), sink_token_file=str(token))
    authorization = sink_authorization(config)
    assert authorization is not None
    assert await authorization("http://ingress/live/default") == "Bearer header.payload.signature"
    assert await authorization("http://dls/") is None
    assert sink_authorization(AdapterConfig("kafka", "live", "orders", "http://s/", Delivery())) is None


async def test_the_verifier_fetches_nothing_while_no_broker_checks_senders() -> None:
    import asyncio

    issuer = Issuer()
    verifier = TokenVerifier(issuer.fetch)
    stop = asyncio.Event()
    needed = [False]
    running = asyncio.ensure_future(verifier.run(stop, needed=lambda: needed[0]))
    await asyncio.sleep(0.05)
    assert issuer.fetches == 0
    # A Broker starts checking: the first token fetches the keys at once, without waiting for the loop.
    needed[0] = True
    await verifier.verify(f"Bearer {issuer.token()}", AUDIENCE)
    assert issuer.fetches == 1
    stop.set()
    await running


async def test_the_data_plane_asks_for_a_token_once_per_audience_and_again_before_it_expires() -> None:
    import asyncio

    from eventferry.dataplane.tokens import ServiceAccountTokens

    asked: list[tuple[str, str, list[str]]] = []

    async def request(method: str, path: str, body: dict[str, Any]) -> dict[str, Any]:
        asked.append((method, path, body["spec"]["audiences"]))
        await asyncio.sleep(0.01)
        return {"status": {"token": f"token-{len(asked)}"}}

    clock = [0.0]
    tokens = ServiceAccountTokens(request, "eventferry-system", "eventferry-broker", seconds=3600,
                                  clock=lambda: clock[0])
    first = await asyncio.gather(*(tokens.token("inference.live") for _ in range(20)))
    assert set(first) == {"token-1"} and len(asked) == 1  # twenty deliveries waited for one request
    assert asked[0][:2] == ("POST", "/api/v1/namespaces/eventferry-system/serviceaccounts/eventferry-broker/token")
    assert await tokens.token("other") == "token-2"
    clock[0] = 3600 * 0.8 - 1
    assert await tokens.token("inference.live") == "token-1"
    clock[0] = 3600 * 0.8 + 1  # 80 % of its life: renewed before it expires
    assert await tokens.token("inference.live") == "token-3"
    assert tokens.subject == "system:serviceaccount:eventferry-system:eventferry-broker"

"""Transport encryption, the pure parts: the server certificate that follows its files, trust per destination,
the Broker's https addresses, and CA certificates from manifests to the contract.

tests/integration/test_transport_encryption.py runs the data plane over HTTPS with a rotation and verified
deliveries; certificates here are made in memory.
"""

from __future__ import annotations

import datetime
import os
import ssl
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from pydantic import ValidationError

from eventferry.apis.broker import Broker
from eventferry.apis.duck import Destination
from eventferry.apis.trigger import Trigger
from eventferry.contract.compile import compile_contract
from eventferry.contract.resolve import Resolver
from eventferry.net.tls import ServerCertificate, Trust
from eventferry.resources.status import BrokerFacts, broker_status


def certificate(common_name: str) -> tuple[bytes, bytes]:
    """A self-signed certificate and its key, PEM."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now)
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    return (cert.public_bytes(serialization.Encoding.PEM),
            key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                              serialization.NoEncryption()))


def write_pair(directory: Path, common_name: str) -> tuple[Path, Path]:
    cert, key = certificate(common_name)
    (directory / "tls.crt").write_bytes(cert)
    (directory / "tls.key").write_bytes(key)
    return directory / "tls.crt", directory / "tls.key"


def test_the_server_certificate_loads_again_when_its_files_change_and_keeps_a_good_one(tmp_path: Path) -> None:
    cert, key = write_pair(tmp_path, "first")
    served = ServerCertificate(cert, key)
    assert served.loads == 1 and served.reload() and served.loads == 1  # unchanged files: not loaded again
    write_pair(tmp_path, "second")
    os.utime(cert, (1, 1))  # a new stamp even within the file system's time resolution
    assert served.reload() and served.loads == 2
    # Half written (a key that does not match): refused, the loaded pair stays in use.
    other_cert, _ = certificate("third")
    cert.write_bytes(other_cert)
    os.utime(cert, (2, 2))
    assert served.reload() and served.loads == 2
    with pytest.raises(ssl.SSLError, match="cannot load the certificate"):
        ServerCertificate(cert, key)


def test_trust_is_per_destination_and_the_system_s_elsewhere() -> None:
    pem = certificate("subscriber-ca")[0].decode()
    trust = Trust()
    trust.set({"https://sub.example/a": pem})
    context = trust.context_for("https://sub.example/a")
    assert isinstance(context, ssl.SSLContext) and context.verify_mode == ssl.CERT_REQUIRED
    assert context.check_hostname
    assert any(c.get("subject") == ((("commonName", "subscriber-ca"),),) for c in context.get_ca_certs())
    assert trust.context_for("https://sub.example/a") is context  # made once per bundle
    system = trust.context_for("https://other.example/")
    assert system is not context and system is trust.context_for("https://third.example/")  # the system's CAs
    trust.set({"https://bad.example/": "-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n"})
    with pytest.raises(ssl.SSLError, match="not valid PEM"):
        trust.context_for("https://bad.example/")


def test_ca_certs_must_be_pem_certificates() -> None:
    with pytest.raises(ValidationError, match="CACerts must be PEM CA certificates"):
        Destination.model_validate({"uri": "https://x/", "CACerts": "not a certificate"})
    pem = certificate("ca")[0].decode()
    assert Destination.model_validate({"uri": "https://x/", "CACerts": pem}).ca_certs == pem


def test_ca_certs_reach_the_contract_from_the_destination_or_the_broker_it_refers_to() -> None:
    own, brokers = certificate("own")[0].decode(), certificate("ingress")[0].decode()
    broker = Broker.model_validate({"apiVersion": "eventferry.dev/v1alpha1", "kind": "Broker",
                                    "metadata": {"name": "default", "namespace": "live"}})
    triggers = [Trigger.model_validate({
        "apiVersion": "eventferry.dev/v1alpha1", "kind": "Trigger", "metadata": {"name": name, "namespace": "live"},
        "spec": {"broker": "default", "subscriber": subscriber,
                 "delivery": {"deadLetterSink": {"uri": "https://dls.example/", "CACerts": own}}}})
        for name, subscriber in (
            ("own", {"uri": "https://sub.example/", "CACerts": own}),
            ("to-broker", {"ref": {"apiVersion": "eventferry.dev/v1alpha1", "kind": "Broker", "name": "next"}}),
            ("system", {"uri": "https://public.example/"}))]
    resolver = Resolver(broker_url=lambda ns, name: f"https://ingress/{ns}/{name}",
                        broker_ca_certs=lambda ns, name: brokers if name == "next" else None)
    contract = compile_contract([broker], triggers, resolver, generation=1).contract
    by_name = {t.name: t for t in contract.brokers[0].triggers}
    assert by_name["own"].subscriber_ca_certs == own
    assert by_name["to-broker"].subscriber_ca_certs == brokers
    assert by_name["system"].subscriber_ca_certs is None
    assert by_name["system"].delivery.dead_letter_sink_ca_certs == own
    assert contract.ca_certs_by_url() == {"https://sub.example/": own, "https://ingress/live/next": brokers,
                                          "https://dls.example/": own}
    assert type(contract).from_json(contract.to_json()) == contract


def test_broker_addresses_under_each_transport_encryption_mode() -> None:
    http, https, ca = "http://ingress/live/default", "https://ingress/live/default", "PEM"
    plain = broker_status(BrokerFacts(address=http), None, 1, "now")
    assert plain["address"] == {"url": http} and plain["addresses"] is None
    permissive = broker_status(BrokerFacts(address=http, https_address=https, ca_certs=ca), None, 1, "now")
    assert permissive["address"] == {"url": http}
    assert permissive["addresses"] == [{"name": "http", "url": http},
                                       {"name": "https", "url": https, "CACerts": ca}]
    strict = broker_status(BrokerFacts(address=http, https_address=https, https_only=True, ca_certs=ca,
                                       audience="aud"), None, 1, "now")
    assert strict["address"] == {"url": https, "audience": "aud", "CACerts": ca}
    assert strict["addresses"] == [{"name": "https", "url": https, "audience": "aud", "CACerts": ca}]


# --- a Kafka-class Broker's credentials --------------------------------------------------------------------

def test_broker_credentials_take_knative_s_secret_keys_and_name_what_is_wrong() -> None:
    from eventferry.kafka.connection import CredentialsError, broker_security, client_options

    ca = certificate("kafka-ca")[0].decode()
    sasl, tls = broker_security({"protocol": "SASL_SSL", "sasl.mechanism": "scram-sha-512", "user": "u",
                                 "password": "p", "ca.crt": ca}, "Secret ns/creds")
    assert sasl is not None and (sasl.mechanism, sasl.username, sasl.password) == ("SCRAM-SHA-512", "u", "p")
    assert tls is not None and tls.ca_cert == ca
    options = client_options(["k:9093"], sasl, tls)
    assert options["security_protocol"] == "SASL_SSL" and isinstance(options["ssl_context"], ssl.SSLContext)
    assert broker_security({"protocol": "SSL"}, "s") == (None, broker_security({"protocol": "SSL"}, "s")[1])
    assert broker_security({"protocol": "PLAINTEXT"}, "s") == (None, None)
    for values, message in (({}, "key 'protocol' is missing"),
                            ({"protocol": "KERBEROS"}, "set one of PLAINTEXT"),
                            ({"protocol": "SASL_PLAINTEXT", "user": "u"}, "needs the keys 'user' and 'password'"),
                            ({"protocol": "SASL_SSL", "sasl.mechanism": "GSSAPI", "user": "u", "password": "pw-123"},
                             "'sasl.mechanism' is 'GSSAPI'"),
                            ({"protocol": "SSL", "user.crt": "x"}, "go together")):
        with pytest.raises(CredentialsError, match=message) as raised:
            broker_security(values, "Secret ns/creds")
        assert "Secret ns/creds" in str(raised.value) and "pw-123" not in str(raised.value)


def test_the_contract_names_the_credentials_secret_never_its_values() -> None:
    broker = Broker.model_validate({
        "apiVersion": "eventferry.dev/v1alpha1", "kind": "Broker",
        "metadata": {"name": "durable", "namespace": "live",
                     "annotations": {"eventferry.dev/broker.class": "Kafka"}},
        "spec": {"config": {"apiVersion": "v1", "kind": "ConfigMap", "name": "kafka", "namespace": "infra"}}})
    config = {("infra", "kafka"): {"bootstrap.servers": "k:9093", "auth.secret.ref.name": "kafka-credentials"}}
    contract = compile_contract([broker], [], Resolver(broker_url=lambda ns, name: None), generation=1,
                                config_maps=config).contract
    settings = contract.brokers[0].kafka
    assert settings is not None and settings.auth_secret is not None
    assert (settings.auth_secret.namespace, settings.auth_secret.name) == ("infra", "kafka-credentials")
    assert "password" not in contract.to_json()


async def test_a_broker_whose_start_failed_is_started_anew_at_the_next_apply() -> None:
    """A Kafka-class Broker whose credentials Secret was missing at first starts once it is there."""
    from eventferry.contract import model
    from eventferry.dataplane.dataplane import DataPlane

    attempts: list[int] = []

    class Flaky:
        def __init__(self, spec: model.Broker) -> None:
            self.spec = spec
            self.started = False

            class Delivery:
                def set_endpoints(self, endpoints: object) -> None:
                    return None

            self.trigger_delivery = Delivery()

        async def start(self) -> None:
            attempts.append(1)
            if len(attempts) == 1:
                raise ValueError("Secret live/kafka-credentials does not exist")
            self.started = True

        def update(self, spec: model.Broker) -> None:
            self.spec = spec

        async def stop(self) -> None:
            return None

    class Plane(DataPlane):
        def _make(self, spec: model.Broker) -> Flaky:  # type: ignore[override]
            return Flaky(spec)

    plane = Plane()
    contract = model.Contract(generation=1, brokers=[model.Broker(namespace="live", name="durable")])
    with pytest.raises(ValueError, match="does not exist"):
        await plane.apply(contract)
    assert plane.broker("live", "durable") is not None  # known meanwhile: 503, not 404
    await plane.apply(contract)  # the same contract, retried: a new runtime, started
    runtime = plane.broker("live", "durable")
    assert len(attempts) == 2 and isinstance(runtime, Flaky) and runtime.started
    await plane.apply(contract)  # started: kept, not started again
    assert len(attempts) == 2
    await plane.sender.close()

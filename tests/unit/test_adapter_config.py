"""Adapter configuration from the environment (the operator's contract) and from a manifest."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from eventferry.adapters.config import ConfigError, Limits, config_from_manifest, parse_env
from eventferry.contract.model import Delivery
from eventferry.kafka.connection import DirectorySecrets, MappingSecrets

pytestmark = pytest.mark.unit

KAFKA_SPEC = {"bootstrapServers": ["kafka:9092"], "topics": ["frames"], "consumerGroup": "frames-group",
              "sink": {"uri": "http://broker/live/default"}}
ROCKETMQ_SPEC = {"endpoints": "rmq-proxy:8081", "topic": "comments", "consumerGroup": "comments-group",
                 "sink": {"uri": "http://broker/live/default"}}


def env(spec: dict[str, object], **extra: str) -> dict[str, str]:
    values = {"K_SINK": "http://broker-ingress.eventferry.svc.cluster.local/live/default",
              "K_SOURCE_SPEC": json.dumps(spec), "K_SOURCE_NAME": "frames", "K_SOURCE_NAMESPACE": "live"}
    values.update(extra)
    return values


def secret_ref(name: str, key: str) -> dict[str, object]:
    return {"secretKeyRef": {"name": name, "key": key}}


def test_minimal_kafka_environment() -> None:
    config = parse_env("kafka", env(KAFKA_SPEC), MappingSecrets())
    assert (config.kind, config.namespace, config.name) == ("kafka", "live", "frames")
    assert config.sink == "http://broker-ingress.eventferry.svc.cluster.local/live/default"
    assert config.metrics_port == 9090
    assert config.ordering == "unordered"
    assert config.kafka is not None and config.rocketmq is None
    assert config.kafka.bootstrap_servers == ("kafka:9092",)
    assert config.kafka.consumer_group == "frames-group"
    assert config.kafka.initial_offset == "latest"
    assert config.kafka.key_type == "string"
    assert config.kafka.security_protocol == "PLAINTEXT"
    # No delivery anywhere: the default of the design (retry 10, exponential, 0.2 s).
    assert (config.delivery.retry, config.delivery.backoff_policy, config.delivery.backoff_delay) == \
        (10, "exponential", 0.2)
    assert config.limits == Limits()


def test_spec_delivery_and_overrides_are_read() -> None:
    spec = dict(KAFKA_SPEC, ordering="ordered", initialOffset="earliest",
                delivery={"retry": 3, "backoffPolicy": "linear", "backoffDelay": "PT0.5S", "timeout": "PT2S",
                          "deadLetterSink": {"uri": "http://dls.live.svc.cluster.local"}},
                ceOverrides={"extensions": {"team": "ml"}})
    config = parse_env("kafka", env(spec, K_KEY_TYPE="int", K_METRICS_PORT="0"), MappingSecrets())
    assert config.ordering == "ordered"
    assert config.kafka is not None and config.kafka.initial_offset == "earliest" and config.kafka.key_type == "int"
    assert config.delivery == Delivery(retry=3, backoff_policy="linear", backoff_delay=0.5, timeout=2.0,
                                       dead_letter_sink="http://dls.live.svc.cluster.local")
    assert config.ce_overrides == {"team": "ml"}
    assert config.metrics_port == 0


def test_operator_resolved_delivery_and_overrides_win() -> None:
    spec = dict(KAFKA_SPEC, delivery={"deadLetterSink": {"ref": {"apiVersion": "eventferry.dev/v1alpha1",
                                                                  "kind": "Broker", "name": "dlq"}}},
                ceOverrides={"extensions": {"team": "ml"}})
    delivery = {"retry": 2, "backoffPolicy": "exponential", "backoffDelay": 0.1, "timeout": 5,
                "deadLetterSink": "http://broker/live/dlq"}
    config = parse_env("kafka", env(spec, K_DELIVERY=json.dumps(delivery),
                                    K_CE_OVERRIDES='{"extensions": {"team": "ops"}}'), MappingSecrets())
    assert config.delivery.dead_letter_sink == "http://broker/live/dlq"
    assert config.delivery.retry == 2
    assert config.ce_overrides == {"team": "ops"}


def test_dead_letter_ref_to_a_broker_needs_the_operator() -> None:
    spec = dict(KAFKA_SPEC, delivery={"deadLetterSink": {"ref": {"apiVersion": "eventferry.dev/v1alpha1",
                                                                  "kind": "Broker", "name": "dlq"}}})
    with pytest.raises(ConfigError, match="K_DELIVERY"):
        parse_env("kafka", env(spec), MappingSecrets())


def test_sasl_and_tls_come_from_the_secrets() -> None:
    spec = dict(KAFKA_SPEC, net={
        "sasl": {"enable": True, "user": secret_ref("kafka-auth", "user"),
                 "password": secret_ref("kafka-auth", "password"), "type": secret_ref("kafka-auth", "mechanism")},
        "tls": {"enable": True, "caCert": secret_ref("kafka-tls", "ca.crt")}})
    secrets = MappingSecrets({("kafka-auth", "user"): "alice", ("kafka-auth", "password"): "s3cret",
                              ("kafka-auth", "mechanism"): "scram-sha-512\n", ("kafka-tls", "ca.crt"): "PEM"})
    config = parse_env("kafka", env(spec), secrets)
    assert config.kafka is not None and config.kafka.sasl is not None and config.kafka.tls is not None
    assert (config.kafka.sasl.mechanism, config.kafka.sasl.username, config.kafka.sasl.password) == \
        ("SCRAM-SHA-512", "alice", "s3cret")
    assert "s3cret" not in repr(config)
    assert config.kafka.tls.ca_cert == "PEM"
    assert config.kafka.security_protocol == "SASL_SSL"


def test_sasl_type_defaults_to_plain_and_is_checked() -> None:
    spec = dict(KAFKA_SPEC, net={"sasl": {"enable": True, "user": secret_ref("a", "u"),
                                          "password": secret_ref("a", "p")}})
    config = parse_env("kafka", env(spec), MappingSecrets({("a", "u"): "u", ("a", "p"): "p"}))
    assert config.kafka is not None and config.kafka.sasl is not None
    assert config.kafka.sasl.mechanism == "PLAIN"
    assert config.kafka.security_protocol == "SASL_PLAINTEXT"
    spec["net"]["sasl"]["type"] = secret_ref("a", "t")  # type: ignore[index]
    with pytest.raises(ConfigError, match="GSSAPI"):
        parse_env("kafka", env(spec), MappingSecrets({("a", "u"): "u", ("a", "p"): "p", ("a", "t"): "GSSAPI"}))


def test_missing_secret_names_where_it_was_looked_for(tmp_path: Path) -> None:
    spec = dict(KAFKA_SPEC, net={"sasl": {"enable": True, "user": secret_ref("kafka-auth", "user"),
                                          "password": secret_ref("kafka-auth", "password")}})
    (tmp_path / "kafka-auth").mkdir()
    (tmp_path / "kafka-auth" / "user").write_text("alice")
    with pytest.raises(ConfigError, match=r"spec\.net\.sasl\.password.*kafka-auth/password"):
        parse_env("kafka", env(spec), DirectorySecrets(tmp_path))


def test_directory_secrets_read_mounted_files(tmp_path: Path) -> None:
    (tmp_path / "rmq").mkdir()
    (tmp_path / "rmq" / "ak").write_text("AK")
    (tmp_path / "rmq" / "sk").write_text("SK\n")
    spec = dict(ROCKETMQ_SPEC, accessKey=secret_ref("rmq", "ak"), secretKey=secret_ref("rmq", "sk"),
                namespace="prod", filterExpression="a || b", ordering="ordered")
    config = parse_env("rocketmq", env(spec, K_SECRETS_DIR=str(tmp_path)), DirectorySecrets(tmp_path))
    assert config.rocketmq is not None
    assert (config.rocketmq.access_key, config.rocketmq.secret_key) == ("AK", "SK")
    assert config.rocketmq.namespace == "prod"
    assert config.rocketmq.filter_expression == "a || b" and config.rocketmq.filter_type == "tag"
    assert config.ordering == "ordered"


def test_consumer_group_defaults_to_knatives_name_from_the_uid() -> None:
    spec = {k: v for k, v in KAFKA_SPEC.items() if k != "consumerGroup"}
    config = parse_env("kafka", env(spec, K_SOURCE_UID="1234-abcd"), MappingSecrets())
    assert config.kafka is not None and config.kafka.consumer_group == "knative-kafka-source-1234-abcd"
    with pytest.raises(ConfigError, match="consumerGroup"):
        parse_env("kafka", env(spec), MappingSecrets())


@pytest.mark.parametrize(("changes", "message"), [
    ({"K_SINK": ""}, "K_SINK is not set"),
    ({"K_SINK": "broker/live"}, "absolute http"),
    ({"K_SOURCE_SPEC": "{"}, "not valid JSON"),
    ({"K_SOURCE_SPEC": json.dumps({"topics": ["x"]})}, "not a valid KafkaSource spec"),
    ({"K_SOURCE_NAMESPACE": ""}, "K_SOURCE_NAMESPACE"),
    ({"K_METRICS_PORT": "http"}, "K_METRICS_PORT must be an integer"),
    ({"K_CE_OVERRIDES": '{"extensions": {"Bad-Name": "x"}}'}, "K_CE_OVERRIDES"),
    ({"K_DELIVERY": '{"retry": -1}'}, "K_DELIVERY"),
    ({"K_KEY_TYPE": "long"}, "key type"),
    ({"K_MAX_IN_FLIGHT": "0"}, "max_in_flight must be at least 1"),
    ({"K_ROCKETMQ_INVISIBLE_DURATION": "5"}, "invisible_duration must be at least 10"),
    ({"K_DRAIN_TIMEOUT": "soon"}, "K_DRAIN_TIMEOUT must be a number"),
])
def test_errors_name_the_variable(changes: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_env("kafka", {**env(KAFKA_SPEC), **changes}, MappingSecrets())


def test_unknown_kind() -> None:
    with pytest.raises(ConfigError, match="unknown adapter kind"):
        parse_env("pulsar", env(KAFKA_SPEC), MappingSecrets())


def test_tuning_variables() -> None:
    config = parse_env("rocketmq", env(ROCKETMQ_SPEC, K_MAX_IN_FLIGHT="50", K_ROCKETMQ_INVISIBLE_DURATION="15",
                                       K_ROCKETMQ_RECEIVERS="2", K_COMMIT_INTERVAL="0.2"), MappingSecrets())
    assert (config.limits.max_in_flight, config.limits.invisible_duration, config.limits.receivers,
            config.limits.commit_interval) == (50, 15, 2, 0.2)


def test_config_from_manifest() -> None:
    manifest = {"apiVersion": "eventferry.dev/v1alpha1", "kind": "KafkaSource",
                "metadata": {"name": "frames", "namespace": "live", "uid": "u-1",
                             "labels": {"eventferry.dev/key-type": "byte-array"}},
                "spec": {k: v for k, v in KAFKA_SPEC.items() if k != "consumerGroup"}}
    config = config_from_manifest(manifest, "http://127.0.0.1:8080/live/default")
    assert config.kind == "kafka" and config.key == "live/frames"
    assert config.kafka is not None and config.kafka.key_type == "byte-array"
    assert config.kafka.consumer_group == "knative-kafka-source-u-1"
    assert config.metrics_port is None
    rocketmq = {"apiVersion": "eventferry.dev/v1alpha1", "kind": "RocketMQSource", "metadata": {"name": "c"},
                "spec": ROCKETMQ_SPEC}
    config = config_from_manifest(rocketmq, "http://127.0.0.1:8080/default/default",
                                  delivery=Delivery(retry=1, dead_letter_sink="http://127.0.0.1:9/dls"))
    assert config.kind == "rocketmq" and config.namespace == "default"
    assert config.delivery.dead_letter_sink == "http://127.0.0.1:9/dls"
    with pytest.raises(ConfigError, match="not a source manifest"):
        config_from_manifest({"kind": "Broker"}, "http://x")


def test_the_command_refuses_an_invalid_environment(monkeypatch: pytest.MonkeyPatch,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    from eventferry.adapters import logs
    from eventferry.cli import main

    monkeypatch.setattr(logs, "configure", lambda *args, **kwargs: None)  # keep pytest's logging as it is
    for name, value in env(KAFKA_SPEC, K_SINK="not a url").items():
        monkeypatch.setenv(name, value)
    assert main(["adapter", "kafka", "--log-format", "text"]) == 2
    assert "K_SINK must be an absolute http(s) URL" in capsys.readouterr().err


def test_tls_material_becomes_the_kafka_clients_ssl_context(tmp_path: Path) -> None:
    import ssl
    import subprocess

    from eventferry.adapters.config import KafkaSourceSettings
    from eventferry.kafka.connection import Sasl, Tls

    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=client",
                    "-keyout", str(tmp_path / "key.pem"), "-out", str(tmp_path / "cert.pem")],
                   check=True, capture_output=True)
    cert, key = (tmp_path / "cert.pem").read_text(), (tmp_path / "key.pem").read_text()
    settings = KafkaSourceSettings(bootstrap_servers=("kafka:9093",), topics=("t",), consumer_group="g",
                             sasl=Sasl("SCRAM-SHA-256", "u", "p"), tls=Tls(ca_cert=cert, cert=cert, key=key))
    options = settings.client_options()
    assert options["security_protocol"] == "SASL_SSL"
    assert (options["sasl_mechanism"], options["sasl_plain_username"], options["sasl_plain_password"]) == \
        ("SCRAM-SHA-256", "u", "p")
    context = options["ssl_context"]
    assert isinstance(context, ssl.SSLContext)
    assert context.verify_mode == ssl.CERT_REQUIRED
    assert any(item.get("subject") == ((("commonName", "client"),),) for item in context.get_ca_certs())
    with pytest.raises(ssl.SSLError):  # a key that does not match is refused, not ignored
        other = tmp_path / "other"
        other.mkdir()
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=x",
                        "-keyout", str(other / "key.pem"), "-out", str(other / "cert.pem")],
                       check=True, capture_output=True)
        KafkaSourceSettings(bootstrap_servers=("k:1",), topics=("t",), consumer_group="g",
                            tls=Tls(cert=cert, key=(other / "key.pem").read_text())).client_options()

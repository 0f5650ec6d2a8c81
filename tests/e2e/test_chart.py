"""The Helm chart: its CRD and policy copies match the generated ones, its values schema refuses what it
should, ``helm lint`` / ``helm template`` pass, and the optional objects (monitors, dashboard, disruption
budgets, network policies) render and select what exists."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.metrics import MetricWrapperBase

from eventferry.adapters.metrics import AdapterMetrics
from eventferry.commands.crds import ADMISSION_POLICIES_FILE, render, render_admission_policies
from eventferry.controller.metrics import OperatorMetrics
from eventferry.dataplane.metrics import BrokerMetrics
from tests.env import provision

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "eventferry"
OVERLAYS = ("values-kind.yaml", "values-ack.yaml")


def run_helm(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(provision.HELM.ensure()), *args], capture_output=True, text=True, timeout=120)


def helm(*args: str) -> str:
    done = run_helm(*args)
    assert done.returncode == 0, f"helm {' '.join(args)}:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def rendered(*args: str) -> list[dict[str, Any]]:
    text = helm("template", "ef", str(CHART), "--namespace", "eventferry-system", *args)
    return [doc for doc in yaml.safe_load_all(text) if doc]


def of_kind(docs: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


@pytest.mark.unit
def test_chart_crds_match_generated() -> None:
    crds = render()
    chart_crds = {p.name: p.read_text() for p in sorted((CHART / "crds").iterdir())}
    assert set(chart_crds) == set(crds), "charts/eventferry/crds/ must hold exactly the generated CRDs"
    for name, text in crds.items():
        assert chart_crds[name] == text, f"charts/eventferry/crds/{name} drifted: copy crds/{name} again"
        assert (ROOT / "crds" / name).read_text() == text
    assert all(yaml.safe_load(t)["kind"] == "CustomResourceDefinition" for t in chart_crds.values())
    # The admission policies are no CRDs: the chart renders them from files/, which must match too.
    assert (CHART / "files" / "admission-policies.yaml").read_text() == render_admission_policies(), \
        f"charts/eventferry/files/admission-policies.yaml drifted: copy {ADMISSION_POLICIES_FILE} again"


# --- the values schema -------------------------------------------------------------------------------------

def schema_nodes(node: dict[str, Any], path: str = "") -> list[tuple[str, dict[str, Any]]]:
    nodes = [(path, node)]
    for name, child in node.get("properties", {}).items():
        nodes += schema_nodes(child, f"{path}.{name}")
    return nodes


@pytest.mark.unit
def test_values_schema_closes_every_level_and_describes_every_default() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    for path, node in schema_nodes(schema):
        if "properties" in node:
            assert node["additionalProperties"] is False, f"{path or '.'} must refuse unknown keys"

    def check(values: Any, node: dict[str, Any], path: str) -> None:
        if isinstance(values, dict) and "properties" in node:
            assert set(values) == set(node["properties"]), f"{path}: values.yaml and the schema name other keys"
            for key, value in values.items():
                check(value, node["properties"][key], f"{path}.{key}")

    check(yaml.safe_load((CHART / "values.yaml").read_text()), schema, "")


@pytest.mark.unit
@pytest.mark.parametrize("overlay", [None, *OVERLAYS])
def test_defaults_and_overlays_pass_the_schema(overlay: str | None) -> None:
    assert rendered(*(["-f", str(CHART / overlay)] if overlay else []))


@pytest.mark.unit
@pytest.mark.parametrize(("setting", "named"), [
    ("broker.replicas=lots", r"'/broker/replicas': got string, want integer"),
    ("broker.replicaz=2", r"'/broker': additional properties 'replicaz' not allowed"),
    ("broker.role=both", r"'/broker/role': value must be one of"),
    ("image.pullPolicy=Sometimes", r"'/image/pullPolicy': value must be one of"),
    ("metrics.serviceMonitor.enabeld=true", r"'/metrics/serviceMonitor': additional properties 'enabeld'"),
    ("operator.metricsPort=0", r"'/operator/metricsPort'"),
    ("security.authentication=on", r"'/security/authentication': value must be one of"),
])
def test_a_wrong_value_fails_with_the_value_named(setting: str, named: str) -> None:
    for command in ("template", "lint"):
        args = [command, *(["ef"] if command == "template" else []), str(CHART), "--set", setting]
        done = run_helm(*args)
        assert done.returncode != 0, f"helm {command} accepted {setting}"
        assert re.search(named, done.stderr + done.stdout), done.stderr + done.stdout


# --- monitoring --------------------------------------------------------------------------------------------

def exposed_metrics() -> dict[str, set[str]]:
    """Name -> label names of every series the broker, the operator and the adapters expose, as
    Prometheus sees them (a counter's ``_total``, a histogram's ``_bucket``/``_sum``/``_count``)."""
    exposed: dict[str, set[str]] = {}
    for owner in (BrokerMetrics(), OperatorMetrics(), AdapterMetrics("kafka", "ns", "source")):
        for metric in vars(owner).values():
            if not isinstance(metric, MetricWrapperBase):
                continue
            name, kind, labels = metric._name, metric._type, set(metric._labelnames)
            suffixes = {"counter": ["_total"], "gauge": [""], "histogram": ["_bucket", "_sum", "_count"]}[kind or ""]
            for suffix in suffixes:
                exposed[name + suffix] = labels | ({"le"} if suffix == "_bucket" else set())
    return exposed


def dashboard_queries() -> list[str]:
    dashboard = json.loads((CHART / "dashboards" / "eventferry.json").read_text())
    queries = [target["expr"] for panel in dashboard["panels"] for target in panel.get("targets", [])]
    queries += [variable["definition"] for variable in dashboard["templating"]["list"] if "definition" in variable]
    return queries


# Labels Prometheus adds to every scraped series (the ServiceMonitors' and PodMonitor's targets).
TARGET_LABELS = {"pod", "instance", "job", "service", "container", "endpoint", "namespace"}


@pytest.mark.unit
def test_dashboard_queries_only_metrics_and_labels_the_code_exposes() -> None:
    exposed = exposed_metrics()
    queried: set[str] = set()
    for query in dashboard_queries():
        names = re.findall(r"\b(eventferry_[a-z0-9_]+)", query)
        assert names, query
        unknown = [name for name in names if name not in exposed]
        assert not unknown, f"the dashboard queries {unknown}, which no code exposes: {query}"
        queried.update(names)
        allowed = set().union(*(exposed[name] for name in names)) | TARGET_LABELS
        for matchers in re.findall(r"eventferry_[a-z0-9_]+\{([^}]*)\}", query):
            for label in re.findall(r"([a-z_]+)\s*=~?", matchers):
                assert label in allowed, f"{label} is no label of the metric: {query}"
        for grouping in re.findall(r"\bby \(([^)]*)\)", query):
            for label in (part.strip() for part in grouping.split(",")):
                assert label in allowed, f"grouped by {label}, which the metrics lack: {query}"
    # Every component has panels: the broker, the operator and the adapters.
    for prefix in ("eventferry_broker_", "eventferry_trigger_", "eventferry_operator_", "eventferry_adapter_"):
        assert any(name.startswith(prefix) for name in queried), prefix
    for needed in ("eventferry_trigger_dispatch_seconds_bucket", "eventferry_trigger_events_retried_total",
                   "eventferry_trigger_events_waiting", "eventferry_trigger_oldest_wait_seconds",
                   "eventferry_operator_scaling_decisions_total", "eventferry_operator_contract_bytes",
                   "eventferry_operator_subscriber_desired_replicas", "eventferry_operator_subscriber_ready_endpoints"):
        assert needed in queried, needed


@pytest.mark.unit
def test_monitoring_is_off_by_default() -> None:
    kinds = {d["kind"] for d in rendered()}
    assert not kinds & {"ServiceMonitor", "PodMonitor", "NetworkPolicy", "PodDisruptionBudget"}
    assert not [d for d in rendered() if d["kind"] == "ConfigMap"]


@pytest.mark.unit
def test_monitors_select_the_services_and_pods_that_exist() -> None:
    docs = rendered("--set", "metrics.serviceMonitor.enabled=true", "--set", "metrics.podMonitor.enabled=true",
                    "--set-json", 'metrics.serviceMonitor.labels={"release":"kube-prometheus-stack"}')
    services = of_kind(docs, "Service")
    monitors = of_kind(docs, "ServiceMonitor")
    assert set(monitors) == {"ef-eventferry-broker", "ef-eventferry-operator"}
    scraped = set()
    for monitor in monitors.values():
        assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
        assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
        assert monitor["spec"]["namespaceSelector"] == {"matchNames": ["eventferry-system"]}
        selector = monitor["spec"]["selector"]["matchLabels"]
        [service] = [s for s in services.values() if selector.items() <= s["metadata"]["labels"].items()]
        [endpoint] = monitor["spec"]["endpoints"]
        assert endpoint["path"] == "/metrics" and endpoint["honorLabels"] is True
        assert endpoint["port"] in {port["name"] for port in service["spec"]["ports"]}
        scraped.add(service["metadata"]["name"])
    assert scraped == {"eventferry-broker-ingress", "ef-eventferry-operator"}

    # The PodMonitor selects the labels and the port of the adapter Deployments the operator writes.
    from eventferry.apis.kafkasource import KafkaSource
    from eventferry.resources.adapter import AdapterSettings, adapter_deployment

    source = KafkaSource.model_validate({
        "apiVersion": "eventferry.dev/v1alpha1", "kind": "KafkaSource",
        "metadata": {"name": "frames", "namespace": "live", "uid": "0f0f"},
        "spec": {"bootstrapServers": ["kafka:9092"], "topics": ["frames"], "sink": {"uri": "http://sink"}}})
    pod = adapter_deployment(source, sink_uri="http://sink", delivery=None,
                             settings=AdapterSettings(image="eventferry"))["spec"]["template"]
    [pod_monitor] = of_kind(docs, "PodMonitor").values()
    assert pod_monitor["spec"]["namespaceSelector"] == {"any": True}
    assert pod_monitor["spec"]["selector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()
    [endpoint] = pod_monitor["spec"]["podMetricsEndpoints"]
    assert endpoint["port"] in {port["name"] for port in pod["spec"]["containers"][0]["ports"]}

    only_live = rendered("--set", "metrics.podMonitor.enabled=true", "--set", "metrics.podMonitor.namespaces={live}")
    assert next(iter(of_kind(only_live, "PodMonitor").values()))["spec"]["namespaceSelector"] == \
        {"matchNames": ["live"]}


@pytest.mark.unit
def test_the_dashboard_ships_as_a_configmap_for_grafanas_sidecar() -> None:
    docs = rendered("--set", "metrics.dashboard.enabled=true", "--set", "metrics.dashboard.namespace=monitoring")
    [config_map] = of_kind(docs, "ConfigMap").values()
    assert config_map["metadata"]["namespace"] == "monitoring"
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(config_map["data"]["eventferry.json"]) == \
        json.loads((CHART / "dashboards" / "eventferry.json").read_text())


# --- disruption budgets and network policies ---------------------------------------------------------------

@pytest.mark.unit
def test_disruption_budgets_select_their_component() -> None:
    docs = rendered("--set", "operator.podDisruptionBudget.enabled=true", "--set", "operator.replicas=2",
                    "--set", "broker.podDisruptionBudget.enabled=true",
                    "--set", "broker.podDisruptionBudget.maxUnavailable=50%")
    budgets = of_kind(docs, "PodDisruptionBudget")
    deployments = of_kind(docs, "Deployment")
    assert budgets["ef-eventferry-operator"]["spec"]["minAvailable"] == 1
    assert budgets["ef-eventferry-broker"]["spec"]["maxUnavailable"] == "50%"
    assert "minAvailable" not in budgets["ef-eventferry-broker"]["spec"]
    for component in ("operator", "broker"):
        selector = budgets[f"ef-eventferry-{component}"]["spec"]["selector"]["matchLabels"]
        matched = [name for name, d in deployments.items()
                   if selector.items() <= d["spec"]["template"]["metadata"]["labels"].items()]
        assert matched == [f"ef-eventferry-{component}"]


def port_names(deployment: dict[str, Any]) -> set[str]:
    return {port["name"] for port in deployment["spec"]["template"]["spec"]["containers"][0]["ports"]}


@pytest.mark.unit
def test_network_policies_open_only_the_ports_the_components_serve() -> None:
    docs = rendered("--set", "networkPolicy.enabled=true")
    policies = of_kind(docs, "NetworkPolicy")
    deployments = of_kind(docs, "Deployment")
    assert set(policies) == {"ef-eventferry-broker", "ef-eventferry-operator"}
    monitoring = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}
    keda = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "keda"}}}
    for component, port, peers in (("broker", "http", [{"namespaceSelector": {}}, monitoring]),
                                   ("operator", "metrics", [keda, monitoring])):
        spec = policies[f"ef-eventferry-{component}"]["spec"]
        pod_labels = deployments[f"ef-eventferry-{component}"]["spec"]["template"]["metadata"]["labels"]
        assert spec["podSelector"]["matchLabels"].items() <= pod_labels.items()
        assert spec["policyTypes"] == ["Ingress"]  # egress stays open: subscribers can be anywhere
        [rule] = spec["ingress"]
        assert rule["ports"] == [{"port": port, "protocol": "TCP"}]
        assert port in port_names(deployments[f"ef-eventferry-{component}"])
        assert rule["from"] == peers

    # Named producers only; and no peer at all means nobody, not everybody.
    producers = [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "live"}}}]
    narrowed = of_kind(rendered("--set", "networkPolicy.enabled=true", "--set-json",
                                f"networkPolicy.brokerIngressFrom={json.dumps(producers)}"), "NetworkPolicy")
    assert narrowed["ef-eventferry-broker"]["spec"]["ingress"][0]["from"] == [*producers, monitoring]
    closed = of_kind(rendered("--set-json", 'networkPolicy={"enabled":true,"operatorFrom":[],"monitoringFrom":[]}'),
                     "NetworkPolicy")
    assert closed["ef-eventferry-operator"]["spec"]["ingress"] == []


@pytest.mark.e2e
def test_helm_lint_passes_with_every_values_file() -> None:
    for values in (None, *OVERLAYS):
        out = helm("lint", "--strict", str(CHART), *(["-f", str(CHART / values)] if values else []))
        assert "0 chart(s) failed" in out


@pytest.mark.e2e
def test_helm_template_renders_the_components_with_least_privilege() -> None:
    docs = rendered()
    by_kind: dict[str, list[dict[str, Any]]] = {}
    for doc in docs:
        by_kind.setdefault(doc["kind"], []).append(doc)
    assert {d["metadata"]["name"] for d in by_kind["Deployment"]} == {"ef-eventferry-operator",
                                                                      "ef-eventferry-broker"}
    services = {s["metadata"]["name"]: s for s in by_kind["Service"]}
    assert set(services) == {"eventferry-broker-ingress", "ef-eventferry-operator"}
    service = services["eventferry-broker-ingress"]
    assert service["spec"]["ports"] == [{"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}]
    operator_service = services["ef-eventferry-operator"]
    assert operator_service["spec"]["ports"] == [{"name": "metrics", "port": 9090, "targetPort": "metrics",
                                                  "protocol": "TCP"}]
    assert {d["kind"] for d in docs} >= {"ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding"}
    assert "CustomResourceDefinition" not in by_kind  # CRDs come from crds/, installed before the templates

    deployments = {d["metadata"]["labels"]["app.kubernetes.io/component"]: d for d in by_kind["Deployment"]}
    broker = deployments["broker"]["spec"]["template"]["spec"]
    [container] = broker["containers"]
    assert container["command"] == ["eventferry", "broker"]
    assert container["args"][:6] == ["--configmap", "eventferry-system/eventferry-contract", "--host", "0.0.0.0",
                                     "--port", "8080"]
    assert container["env"][0] == {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}
    operator = deployments["operator"]["spec"]["template"]["spec"]
    env = {e["name"]: e.get("value") for e in operator["containers"][0]["env"]}
    assert env["EVENTFERRY_INGRESS_SERVICE"] == "eventferry-broker-ingress"
    assert env["EVENTFERRY_ADAPTER_IMAGE"] == "ghcr.io/eventferry/eventferry:0.1.0"
    for pod in (broker, operator):
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["containers"][0]["securityContext"]["allowPrivilegeEscalation"] is False
        assert pod["containers"][0]["resources"]["limits"]["memory"]

    # No rule grants everything, and Secrets are only read one by one.
    for role in by_kind["ClusterRole"] + by_kind["Role"]:
        for rule in role["rules"]:
            assert "*" not in rule["verbs"] and "*" not in rule["resources"], rule
            if "secrets" in rule["resources"]:
                assert rule["verbs"] == ["get"]
    [broker_role] = [r for r in by_kind["Role"] if r["metadata"]["name"] == "ef-eventferry-broker"]
    # ConfigMaps, and tokens of its own ServiceAccount only (for destinations with an audience).
    assert all(rule["resources"] == ["configmaps"] for rule in broker_role["rules"][:-1])
    assert broker_role["rules"][-1] == {"apiGroups": [""], "resources": ["serviceaccounts/token"],
                                        "resourceNames": ["ef-eventferry-broker"], "verbs": ["create"]}
    assert "--service-account=$(POD_NAMESPACE)/$(POD_SERVICE_ACCOUNT)" in container["args"]


@pytest.mark.e2e
def test_values_for_ack_set_the_registry_and_pull_secret() -> None:
    docs = rendered("-f", str(CHART / "values-ack.yaml"))
    deployments = [d for d in docs if d["kind"] == "Deployment"]
    for deployment in deployments:
        pod = deployment["spec"]["template"]["spec"]
        assert pod["imagePullSecrets"] == [{"name": "acr-pull"}]
        assert ".cr.aliyuncs.com/" in pod["containers"][0]["image"]
    kind = [d for d in rendered("-f", str(CHART / "values-kind.yaml")) if d["kind"] == "Deployment"]
    assert {d["spec"]["template"]["spec"]["containers"][0]["imagePullPolicy"] for d in kind} == {"Never"}


def test_the_broker_can_get_an_autoscaler_and_a_disruption_budget() -> None:
    assert not [d for d in rendered() if d["kind"] in ("HorizontalPodAutoscaler", "PodDisruptionBudget")]
    lag = {"type": "External", "external": {"metric": {"name": "kafka-lag"},
                                            "target": {"type": "AverageValue", "averageValue": "1000"}}}
    values = {"broker": {"autoscaling": {"enabled": True, "maxReplicas": 8, "metrics": [lag]},
                         "podDisruptionBudget": {"enabled": True}}}
    docs = rendered("--set-json", f"broker={json.dumps(values['broker'])}")
    [hpa] = [d for d in docs if d["kind"] == "HorizontalPodAutoscaler"]
    [pdb] = [d for d in docs if d["kind"] == "PodDisruptionBudget"]
    [broker] = [d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == "ef-eventferry-broker"]
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment",
                                             "name": "ef-eventferry-broker"}
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (1, 8)
    assert hpa["spec"]["metrics"][0]["resource"]["target"]["averageUtilization"] == 70
    assert hpa["spec"]["metrics"][1] == lag
    assert "replicas" not in broker["spec"]  # the autoscaler owns it
    pod_labels = broker["spec"]["template"]["metadata"]["labels"]
    assert pdb["spec"]["minAvailable"] == 1
    assert pdb["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()


@pytest.mark.unit
def test_sender_authentication_is_one_value_and_the_operator_may_make_adapter_accounts() -> None:
    def operator_env(*args: str) -> dict[str, str]:
        [deployment] = [d for d in rendered(*args) if d["kind"] == "Deployment" and "operator" in d["metadata"]["name"]]
        return {e["name"]: e.get("value") for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}

    assert operator_env()["EVENTFERRY_AUTHENTICATION"] == "disabled"
    env = operator_env("--set", "security.authentication=required", "--set",
                       "security.defaultAuthorizationMode=deny-all")
    assert (env["EVENTFERRY_AUTHENTICATION"], env["EVENTFERRY_DEFAULT_AUTHORIZATION_MODE"]) == ("required", "deny-all")
    [role] = [d for d in rendered() if d["kind"] == "ClusterRole" and d["metadata"]["name"].endswith("-operator")]
    accounts = [r for r in role["rules"] if "serviceaccounts" in r["resources"]]
    assert accounts == [{"apiGroups": [""], "resources": ["serviceaccounts"], "verbs": ["get", "create", "patch"]}]
    policies = [r for r in role["rules"] if "eventpolicies" in r["resources"]]
    assert policies and "watch" in policies[0]["verbs"]


@pytest.mark.unit
@pytest.mark.parametrize("mode", ["permissive", "strict"])
def test_tls_serves_https_from_the_secret_and_tells_the_operator(mode: str) -> None:
    docs = rendered("--set", "security.tls.enabled=true", "--set", f"security.tls.transportEncryption={mode}",
                    "--set", "networkPolicy.enabled=true")
    deployments = of_kind(docs, "Deployment")
    broker = next(d for n, d in deployments.items() if n.endswith("-broker"))["spec"]["template"]["spec"]
    args = broker["containers"][0]["args"]
    assert "--tls-cert-file=/etc/eventferry/tls/tls.crt" in args and "--tls-port=8443" in args
    assert ("--https-only" in args) == (mode == "strict")
    assert {"name": "https", "containerPort": 8443, "protocol": "TCP"} in broker["containers"][0]["ports"]
    [tls] = [v for v in broker["volumes"] if v["name"] == "tls"]
    assert tls["secret"]["secretName"] == "eventferry-broker-ingress-tls"
    operator = next(d for n, d in deployments.items() if n.endswith("-operator"))["spec"]["template"]["spec"]
    env = {e["name"]: e.get("value") for e in operator["containers"][0]["env"]}
    assert env["EVENTFERRY_TRANSPORT_ENCRYPTION"] == mode
    assert env["EVENTFERRY_INGRESS_CA_FILE"] == "/etc/eventferry/tls/ca.crt"
    [service] = [d for d in docs if d["kind"] == "Service" and d["metadata"]["name"] == "eventferry-broker-ingress"]
    assert {"name": "https", "port": 443, "targetPort": "https", "protocol": "TCP"} in service["spec"]["ports"]
    policy = next(d for n, d in of_kind(docs, "NetworkPolicy").items() if n.endswith("-broker"))
    assert {"port": "https", "protocol": "TCP"} in policy["spec"]["ingress"][0]["ports"]
    off = {e["name"]: e.get("value") for d in rendered() if d["kind"] == "Deployment"
           and d["metadata"]["name"].endswith("-operator")
           for e in d["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert off["EVENTFERRY_TRANSPORT_ENCRYPTION"] == "disabled" and "EVENTFERRY_INGRESS_CA_FILE" not in off


@pytest.mark.unit
def test_the_data_plane_may_get_secrets_for_kafka_credentials_and_nothing_more() -> None:
    def secret_rules(*args: str) -> list[dict[str, Any]]:
        return [rule for d in rendered(*args) if d["kind"] == "ClusterRole" and "-broker" in d["metadata"]["name"]
                for rule in d["rules"] if "secrets" in rule["resources"]]

    assert secret_rules() == [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]}]
    assert secret_rules("--set", "broker.readKafkaSecrets=false") == []

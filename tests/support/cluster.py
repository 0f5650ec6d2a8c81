"""The operator and data plane as processes against a real kube-apiserver, driven with kubectl.

``Cluster`` runs ``eventferry operator`` and ``eventferry broker --configmap`` as subprocesses with
KUBECONFIG; shared by the operator tests, the end-to-end tests and the fault tests.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from eventferry.apis.meta import GROUP, PLURALS
from eventferry.commands.crds import render_all
from eventferry.resources.contract import contract_from_config_map, contract_json
from tests.env import provision
from tests.env.ports import free_port, wait_for_port
from tests.env.process import ManagedProcess
from tests.env.servers import KubeAPI
from tests.support.waiting import eventually

API = "eventferry.dev/v1alpha1"
SYSTEM = "eventferry-system"
IMAGE = "eventferry:test"
EVENTFERRY = str(Path(sys.executable).parent / "eventferry")
T = TypeVar("T")


class Cluster:
    """kubectl against the test API server, the operator and the data plane processes."""

    def __init__(self, kube: KubeAPI, workdir: Path, operator_args: tuple[str, ...] = (),
                 dataplane_args: tuple[str, ...] = ()) -> None:
        """``operator_args``, ``dataplane_args``: more options of ``eventferry operator`` (e.g.
        ``--authentication=required``) and of ``eventferry broker`` (e.g. ``--tls-cert-file=...``)."""
        self.kube = kube
        self.workdir = workdir
        self.operator_args = operator_args
        self.dataplane_args = dataplane_args
        self.env = dict(os.environ, KUBECONFIG=str(kube.kubeconfig))
        self.operator: ManagedProcess | None = None
        self.operator_port = 0
        self.dataplane: ManagedProcess | None = None
        self.dataplane_port = 0
        self._started = 0

    # --- kubectl ---------------------------------------------------------------------------------------

    def kubectl(self, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run([provision.kubectl(), *args], input=stdin, capture_output=True, text=True,
                              env=self.env, timeout=60)

    def ok(self, *args: str, stdin: str | None = None) -> str:
        result = self.kubectl(*args, stdin=stdin)
        assert result.returncode == 0, f"kubectl {' '.join(args)}: {result.stderr}"
        return result.stdout

    def create(self, namespace: str, obj: dict[str, Any]) -> subprocess.CompletedProcess[str]:
        return self.kubectl("create", "-n", namespace, "-f", "-", stdin=json.dumps(obj))

    def get(self, namespace: str, resource: str) -> dict[str, Any] | None:
        result = self.kubectl("get", "-n", namespace, resource, "-o", "json")
        if result.returncode != 0:
            assert "NotFound" in result.stderr, result.stderr
            return None
        found: dict[str, Any] = json.loads(result.stdout)
        return found

    def patch(self, namespace: str, resource: str, body: dict[str, Any],
              subresource: str | None = None) -> subprocess.CompletedProcess[str]:
        extra = [f"--subresource={subresource}"] if subresource else []
        return self.kubectl("patch", "-n", namespace, resource, "--type=merge", "-p", json.dumps(body), *extra)

    def contract(self) -> dict[str, Any]:
        config_map = self.get(SYSTEM, "configmap/eventferry-contract")
        assert config_map is not None
        document: dict[str, Any] = json.loads(contract_json(contract_from_config_map(config_map)))
        return document

    def events(self, namespace: str, name: str) -> list[dict[str, Any]]:
        listed = json.loads(self.ok("get", "events", "-n", namespace, "-o", "json",
                                    f"--field-selector=involvedObject.name={name}"))
        items: list[dict[str, Any]] = listed["items"]
        return items

    def install(self) -> None:
        """The generated CRDs and admission policies applied (CRDs Established), and the system namespace."""
        self.ok("apply", "-f", "-", stdin=render_all())
        self.ok("wait", "--for=condition=Established", "--timeout=60s",
                *(f"crd/{plural}.{GROUP}" for plural in PLURALS.values()))
        if self.get("", f"namespace/{SYSTEM}") is None:
            self.ok("create", "namespace", SYSTEM)

    # --- processes -------------------------------------------------------------------------------------

    def start_dataplane(self, extra_env: dict[str, str] | None = None) -> None:
        """``extra_env``: e.g. ``LoopbackServices.env()``, so that subscriber Services resolve to loopback."""
        self.dataplane_port = self.dataplane_port or free_port()  # a restart keeps its port
        self.dataplane = ManagedProcess("dataplane", [
            EVENTFERRY, "broker", "--configmap", f"{SYSTEM}/eventferry-contract", "--host", "127.0.0.1",
            "--port", str(self.dataplane_port), "--report-interval", "2", *self.dataplane_args,
        ], self.workdir / "dataplane.log", env=dict(self.env, POD_NAME="dataplane-0", **(extra_env or {})))
        self.dataplane.wait_until(lambda: wait_for_port(self.dataplane_port, 0.5), 60, "listening")

    def start_operator(self) -> tuple[ManagedProcess, int]:
        self._started += 1
        port = free_port()
        process = ManagedProcess(f"operator-{self._started}", [
            EVENTFERRY, "operator", "--adapter-image", IMAGE, "--metrics-host", "127.0.0.1",
            "--metrics-port", str(port), "--debounce", "0.1", "--retry-interval", "1",
            # What the chart's operator Service is, on loopback: where KEDA reads RocketMQ backlogs.
            "--backlog-url", f"http://127.0.0.1:{port}", *self.operator_args,
        ], self.workdir / f"operator-{self._started}.log",
            env=dict(self.env, POD_NAME=f"operator-{self._started}"))
        process.wait_until(lambda: wait_for_port(port, 0.5), 60, "serving /readyz")
        return process, port

    def run_operator(self) -> None:
        self.operator, self.operator_port = self.start_operator()
        self.operator.wait_until(lambda: http_get(self.operator_port, "/readyz") == "leader: synced\n", 60,
                                 "leader and synced")

    def stop(self) -> None:
        for process in (self.operator, self.dataplane):
            if process is not None:
                process.stop()

    def logs(self) -> str:
        return "\n".join(p.log_tail(40) for p in (self.operator, self.dataplane) if p is not None)

    # --- waiting -----------------------------------------------------------------------------------------

    def wait(self, probe: Callable[[], T | None], what: str, timeout: float = 45) -> T:
        return eventually(probe, timeout, what, details=self.logs)

    def wait_condition(self, namespace: str, resource: str, condition: str, status: str,
                       reason: str | None = None, timeout: float = 45) -> dict[str, Any]:
        def probe() -> dict[str, Any] | None:
            obj = self.get(namespace, resource)
            found = condition_of(obj, condition)
            if found and found["status"] == status and (reason is None or found.get("reason") == reason):
                return obj
            return None

        return self.wait(probe, f"{resource} {condition}={status} ({reason})", timeout)


@contextlib.contextmanager
def running(cluster: Cluster, dataplane: bool = True) -> Iterator[Cluster]:
    """``cluster`` with the CRDs installed, its data plane (unless not wanted) and operator started; both
    stopped on leaving: the body of a test module's ``cluster`` fixture."""
    cluster.install()
    try:
        if dataplane:
            cluster.start_dataplane()
        cluster.run_operator()
        yield cluster
    finally:
        cluster.stop()


@contextlib.contextmanager
def scratch_namespace(cluster: Cluster, prefix: str,
                      kinds: str = "brokers,triggers,eventpolicies,kafkasources,rocketmqsources") -> Iterator[str]:
    """A new namespace for one test; its ``kinds`` deleted after it, and the namespace (which stays Terminating
    without kube-controller-manager: its objects are gone already)."""
    name = f"{prefix}-{uuid.uuid4().hex[:8]}"
    cluster.ok("create", "namespace", name)
    try:
        yield name
    finally:
        cluster.kubectl("delete", kinds, "--all", "-n", name, "--wait=false")
        cluster.kubectl("delete", "namespace", name, "--wait=false")


def http_get(port: int, path: str) -> str | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as response:
            return str(response.read().decode())
    except OSError:
        return None


def condition_of(obj: dict[str, Any] | None, condition: str) -> dict[str, Any] | None:
    for item in ((obj or {}).get("status") or {}).get("conditions") or ():
        if item.get("type") == condition:
            return dict(item)
    return None


def manifest(kind: str, name: str, spec: dict[str, Any], **metadata: Any) -> dict[str, Any]:
    return {"apiVersion": API, "kind": kind, "metadata": {"name": name, **metadata}, "spec": spec}


def trigger(name: str, broker: str = "default", subscriber: dict[str, Any] | None = None,
            **spec: Any) -> dict[str, Any]:
    return manifest("Trigger", name, {"broker": broker, "subscriber": subscriber or {"uri": "http://sink.example/"},
                                      **spec})


def service(name: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name},
            "spec": {"ports": [{"port": 80, "targetPort": 8080}]}}


def make_available(cluster: Cluster, namespace: str, name: str) -> None:
    """What kube-controller-manager would write once the adapter pods run."""
    deployment = cluster.get(namespace, f"deployment/{name}")
    assert deployment is not None
    replicas = deployment["spec"]["replicas"]
    now = "2026-01-01T00:00:00Z"
    status = {"observedGeneration": deployment["metadata"]["generation"], "replicas": replicas,
              "readyReplicas": replicas, "availableReplicas": replicas, "updatedReplicas": replicas,
              "conditions": [{"type": "Available", "status": "True", "reason": "MinimumReplicasAvailable",
                              "message": "Deployment has minimum availability.", "lastTransitionTime": now,
                              "lastUpdateTime": now}]}
    assert cluster.patch(namespace, f"deployment/{name}", {"status": status}, "status").returncode == 0


def contract_trigger(cluster: Cluster, namespace: str, name: str) -> dict[str, Any] | None:
    for broker in cluster.contract()["brokers"]:
        for item in broker["triggers"]:
            if (item["namespace"], item["name"]) == (namespace, name):
                found: dict[str, Any] = item
                return found
    return None


def dataplane_routes(cluster: Cluster, namespace: str, name: str) -> bool:
    text = http_get(cluster.dataplane_port, "/contract")
    return text is not None and f"{namespace}/{name}" in json.loads(text)["triggers"]

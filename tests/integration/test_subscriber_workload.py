"""The subscriber-workload harness itself (tests/support/workload.py), with no operator.

kube-controller-manager runs (its Deployment and EndpointSlice controllers among others); the harness plays
the kubelet, kube-proxy and the EndpointSlice of the pods. Scaling the Deployment with kubectl starts and
stops pod processes, the EndpointSlice and the proxy follow, events reach the pods round-robin, and the
Service's cluster DNS name resolves to the proxy in a process that uses the loopback DNS shim.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.env.servers import KubeAPI, KubeControllers
from tests.support.loopback_dns import LoopbackServices
from tests.support.waiting import eventually
from tests.support.workload import MANAGED_BY, SubscriberWorkload, subscriber_manifests

pytestmark = pytest.mark.integration

START_DELAY = 1.0
EVENTS = 20


def endpoints(kube: KubeAPI, namespace: str, name: str) -> list[dict[str, Any]]:
    found = kube.get_json(f"/apis/discovery.k8s.io/v1/namespaces/{namespace}/endpointslices/{name}-pods")
    assert found["metadata"]["labels"] == {"kubernetes.io/service-name": name,
                                           "endpointslice.kubernetes.io/managed-by": MANAGED_BY}
    return list(found.get("endpoints") or [])


def ready(endpoint_list: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e for e in endpoint_list if e["conditions"]["ready"]]


def post_event(port: int, event_id: str) -> int:
    request = urllib.request.Request(f"http://127.0.0.1:{port}/", data=b'{"n": 1}', method="POST", headers={
        "ce-id": event_id, "ce-source": "/harness", "ce-type": "dev.eventferry.test", "ce-specversion": "1.0",
        "content-type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return int(response.status)


def connects_and_answers(port: int) -> bool:
    """Whether an HTTP request through the proxy gets an answer (a Service with no endpoints gives none)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as sock:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            return sock.recv(100).startswith(b"HTTP/1.1 200")
    except OSError:
        return False


# Fetches argv[1] and prints the status or the error; with argv[2] "retry", tries again for up to 10 s.
FETCH = """\
import sys, time, urllib.request
deadline = time.monotonic() + (10 if sys.argv[2:] == ["retry"] else 0)
while True:
    try:
        print(urllib.request.urlopen(sys.argv[1], timeout=10).status)
        break
    except OSError as error:
        if time.monotonic() > deadline:
            print(type(getattr(error, "reason", error)).__name__, error)
            break
        time.sleep(0.1)
"""


def fetch_in_child(dns: LoopbackServices, url: str, *args: str) -> subprocess.Popen[str]:
    """A process started with the shim, as a pod that reaches Services by their DNS names would be."""
    return subprocess.Popen([sys.executable, "-c", FETCH, url, *args], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env={"PATH": "/usr/bin:/bin", **dns.env()})


def output(child: subprocess.Popen[str]) -> str:
    try:
        return child.communicate(timeout=30)[0].strip()
    finally:
        child.kill()


def test_scaling_the_deployment_runs_pods_behind_the_endpointslice_and_the_proxy(
        kube_api: KubeAPI, kube_controllers: KubeControllers, tmp_path: Path) -> None:
    namespace, name = f"workload-{uuid.uuid4().hex[:6]}", "inference"
    kube_api.kubectl("create", "namespace", namespace)
    workload = SubscriberWorkload(kube_api, namespace, name, tmp_path / "workload", start_delay=START_DELAY,
                                  work=0.05)
    try:
        kube_api.kubectl("apply", "-n", namespace, "-f", "-",
                         stdin=json.dumps({"apiVersion": "v1", "kind": "List", "items": subscriber_manifests(name)}))
        workload.start()
        assert endpoints(kube_api, namespace, name) == []
        assert not connects_and_answers(workload.proxy_port)

        # Scaled to 2: two pod processes, ready after their cold start, both ready in the EndpointSlice.
        scaled = time.monotonic()
        kube_api.kubectl("scale", "-n", namespace, f"deployment/{name}", "--replicas=2")
        eventually(lambda: len(workload.ready_pods()) == 2, START_DELAY + 5, "2 pods ready",
                   details=workload.log_tails)
        became_ready = time.monotonic() - scaled
        assert became_ready >= START_DELAY, became_ready
        assert sorted(workload.live_pods()) == [f"{name}-1", f"{name}-2"]
        eventually(lambda: len(ready(endpoints(kube_api, namespace, name))) == 2, 5,
                   "2 ready endpoints in the EndpointSlice", details=workload.log_tails)
        listed = ready(endpoints(kube_api, namespace, name))
        assert sorted(e["targetRef"]["name"] for e in listed) == [f"{name}-1", f"{name}-2"]
        assert all(e["addresses"][0].startswith("10.244.0.") for e in listed)
        found_slice = kube_api.get_json(
            f"/apis/discovery.k8s.io/v1/namespaces/{namespace}/endpointslices/{name}-pods")
        assert found_slice["ports"] == [{"name": "", "port": workload.port, "protocol": "TCP"}]
        assert workload.timeline[-1][1:] == (2, 2)
        assert len(workload.ready_at) == 2

        # Events through the proxy, one connection each: round-robin over both pods, every id recorded.
        ids = [f"event-{n}" for n in range(EVENTS)]
        assert [post_event(workload.proxy_port, event_id) for event_id in ids] == [200] * EVENTS
        # Each pod records an event as it arrives, before its answer: all are there once all are answered.
        received = workload.received()
        assert sorted(r["id"] for r in received) == sorted(ids)
        per_pod = {pod: sum(1 for r in received if r["pod"] == pod) for pod in (f"{name}-1", f"{name}-2")}
        assert per_pod == {f"{name}-1": EVENTS // 2, f"{name}-2": EVENTS // 2}, per_pod
        assert workload.max_in_flight_per_pod == 1  # one at a time, from one client

        # Scaled to 1: the Service's cluster DNS name reaches the remaining pod from a process with the shim;
        # an unmapped Service name does not resolve.
        kube_api.kubectl("scale", "-n", namespace, f"deployment/{name}", "--replicas=1")
        eventually(lambda: workload.live_pods() == [f"{name}-1"], 15, "the newest pod stopped",
                   details=workload.log_tails)
        # The name is added after the process started: the shim reads the services file again.
        dns = LoopbackServices(tmp_path / "dns")
        through = fetch_in_child(dns, f"http://{name}.{namespace}.svc.cluster.local/healthz", "retry")
        time.sleep(0.5)
        dns.add(f"{name}.{namespace}.svc.cluster.local", workload.proxy_port)
        assert output(through) == "200"
        assert output(fetch_in_child(dns, "http://x.y.svc.cluster.local/healthz")).startswith("gaierror")

        # Scaled to 0: no process, no endpoint, and a connection through the proxy fails.
        kube_api.kubectl("scale", "-n", namespace, f"deployment/{name}", "--replicas=0")
        eventually(lambda: not workload.live_pods(), 15, "every pod stopped", details=workload.log_tails)
        eventually(lambda: endpoints(kube_api, namespace, name) == [], 5, "an EndpointSlice with no endpoints")
        assert not connects_and_answers(workload.proxy_port)
        assert workload.timeline[-1][1:] == (0, 0)
        assert workload.most_ready == 2
        assert len(workload.received()) == EVENTS  # stopped pods' records stay readable
    finally:
        workload.stop()
        workload.stop()  # twice is harmless
        kube_api.kubectl("delete", "namespace", namespace, "--wait=false", "--ignore-not-found")
    assert not workload.live_pods()


def test_pods_that_never_listen_stay_out_of_the_endpoints(kube_api: KubeAPI, kube_controllers: KubeControllers,
                                                          tmp_path: Path) -> None:
    namespace, name = f"workload-{uuid.uuid4().hex[:6]}", "cold"
    kube_api.kubectl("create", "namespace", namespace)
    workload = SubscriberWorkload(kube_api, namespace, name, tmp_path / "workload", start_delay=0,
                                  becomes_ready=False)
    try:
        kube_api.kubectl("apply", "-n", namespace, "-f", "-",
                         stdin=json.dumps({"apiVersion": "v1", "kind": "List", "items": subscriber_manifests(name)}))
        workload.start()
        kube_api.kubectl("scale", "-n", namespace, f"deployment/{name}", "--replicas=1")
        listed = eventually(lambda: endpoints(kube_api, namespace, name), 5, "the starting pod in the EndpointSlice",
                            details=workload.log_tails)
        assert [e["conditions"] for e in listed] == [{"ready": False, "serving": False, "terminating": False}]
        time.sleep(2)  # its cold start is over, yet it never listens
        assert workload.live_pods() == [f"{name}-1"]
        assert ready(endpoints(kube_api, namespace, name)) == []
        assert not connects_and_answers(workload.proxy_port)
        assert (workload.most_ready, workload.ready_at) == (0, [])
    finally:
        workload.stop()
        kube_api.kubectl("delete", "namespace", namespace, "--wait=false", "--ignore-not-found")
    assert not workload.live_pods()

"""The servers under the project restarted under load: Kafka under a Kafka-class data plane, and
kube-apiserver under the operator. Each on a server of its own, so that other tests keep theirs."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.env.servers import Kafka, KubeAPI
from tests.faults.support import SenderReport, send_at_least_once
from tests.support import manifests
from tests.support.cluster import Cluster, condition_of, contract_trigger, dataplane_routes, manifest, trigger
from tests.support.processes import kill, start_eventferry, wait_ready
from tests.support.subscriber import Subscribers

pytestmark = pytest.mark.faults


@pytest.fixture
def own_kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Kafka]:
    server = Kafka.start(tmp_path_factory.mktemp("own-kafka"))
    yield server
    server.stop()


@pytest.mark.timeout(300)
async def test_kafka_restarted_under_load_loses_no_acknowledged_event(own_kafka: Kafka, tmp_path: Path,
                                                                      subscribers: Subscribers) -> None:
    from tests.env.ports import free_port

    name = f"restart{uuid.uuid4().hex[:6]}"
    sub = await subscribers()
    path = tmp_path / "broker.yaml"
    path.write_text(manifests.broker(name, "Kafka", own_kafka.bootstrap)
                    + manifests.trigger("all", name, f"{sub.url}/s", "{retry: 20, backoffDelay: PT0.2S}"))
    port = free_port()
    proc = start_eventferry(["run", "-f", str(path), "--port", str(port)], tmp_path / "run.log")
    report = SenderReport()
    try:
        await wait_ready(f"http://127.0.0.1:{port}/readyz", proc)
        sending = asyncio.create_task(send_at_least_once(f"http://127.0.0.1:{port}/default/{name}", 20, 200, 200.0,
                                                         report, give_up_after=180))
        while len(report.accepted) < 1500:
            await asyncio.sleep(0.05)
        stopped = time.monotonic()
        await asyncio.to_thread(own_kafka.restart_broker, 3.0)  # down for 3 s, then up on the same ports and data
        back = time.monotonic() - stopped
        await sending
        accepted = set(report.accepted)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not accepted <= {r.event.id for r in sub.received}:
            await asyncio.sleep(0.5)
        recovered = time.monotonic() - stopped
        assert proc.poll() is None, "the data plane should ride out the Kafka restart, not exit"
    finally:
        kill(proc)
    delivered = [r.event.id for r in sub.received]
    missing = accepted - set(delivered)
    print(f"\nKafka restarted under load: {len(accepted)} acknowledged, {len(missing)} lost, "
          f"{len(delivered) - len(set(delivered))} duplicates; Kafka back after {back:.1f}s, all delivered "
          f"{recovered:.1f}s after the stop; sender answers: {report.summary()}")
    assert len(accepted) == 4000
    assert not missing, f"{len(missing)} acknowledged events lost: {sorted(missing)[:5]}"
    assert report.answers["404"] == 0 and not any(code.startswith("50") and code != "503" for code in report.answers)


@pytest.fixture
def own_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    kube = KubeAPI.start(tmp_path_factory.mktemp("own-kube"))
    cluster = Cluster(kube, tmp_path_factory.mktemp("own-cluster"))
    try:
        cluster.install()
        cluster.start_dataplane()
        cluster.run_operator()
        yield cluster
    finally:
        cluster.stop()
        kube.stop()


def all_ready(cluster: Cluster, namespace: str, names: list[str]) -> bool:
    for name in names:
        found = condition_of(cluster.get(namespace, f"trigger/{name}"), "Ready")
        if not found or found["status"] != "True" or not dataplane_routes(cluster, namespace, name):
            return False
    return True


@pytest.mark.timeout(300)
def test_the_operator_converges_after_the_api_server_restarts(own_cluster: Cluster) -> None:
    cluster = own_cluster
    namespace = "restart"
    cluster.ok("create", "namespace", namespace)
    assert cluster.create(namespace, manifest("Broker", "default", {})).returncode == 0
    before = [f"before-{i}" for i in range(5)]
    for name in before:
        assert cluster.create(namespace, trigger(name)).returncode == 0
    cluster.wait(lambda: all_ready(cluster, namespace, before), "the first Triggers Ready", timeout=60)

    # What the kubelet does with restartPolicy Always: an operator that gave up its Lease (it cannot renew
    # while the API server is away) exits to be restarted as a standby; start it again when it does.
    restarts = 0
    supervising = threading.Event()

    def kubelet() -> None:
        nonlocal restarts
        while not supervising.wait(0.5):
            if cluster.operator is not None and not cluster.operator.alive():
                restarts += 1
                cluster.operator, cluster.operator_port = cluster.start_operator()

    supervisor = threading.Thread(target=kubelet, daemon=True)
    supervisor.start()
    try:
        stopped = time.monotonic()
        cluster.kube.restart_apiserver(down=3.0)  # the operator's watches break; etcd keeps every object
        back = time.monotonic() - stopped
        after = [f"after-{i}" for i in range(5)]
        for name in after:
            assert cluster.create(namespace, trigger(name)).returncode == 0
        assert cluster.kubectl("delete", "trigger", "-n", namespace, "before-0").returncode == 0
        cluster.wait(lambda: all_ready(cluster, namespace, before[1:] + after),
                     "every Trigger Ready after the restart", timeout=120)
        cluster.wait(lambda: contract_trigger(cluster, namespace, "before-0") is None, "the deleted Trigger gone",
                     timeout=60)
        converged = time.monotonic() - stopped
    finally:
        supervising.set()
        supervisor.join(10)
    assert cluster.dataplane is not None and cluster.dataplane.alive(), "the data plane should survive the restart"
    print(f"\nkube-apiserver restarted (down 3 s, serving again after {back:.1f}s): operator converged "
          f"{converged:.1f}s after the stop (restarted by its supervisor {restarts} time(s) after giving up its "
          f"Lease), 9 Triggers Ready, 1 deletion applied")

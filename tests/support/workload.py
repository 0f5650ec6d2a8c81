"""A subscriber Deployment and its Service brought to life on loopback: kubelet, kube-proxy, endpoints.

No kubelet, kube-proxy or pod network runs here. ``SubscriberWorkload`` plays their parts for one
subscriber Deployment (``subscriber_manifests``) so that scaling it means something:

- kubelet: it follows the Deployment's ``spec.replicas`` (polled every 0.15 s) and starts or stops pod
  processes of ``tests/support/pod_subscriber.py`` to match. Each pod listens on a loopback address of its
  own, 127.0.0.<k>, and the workload's one port, as pods share a container port and differ by IP. A pod
  is ready once its port accepts connections. Scaling down takes pods not ready yet first, then the newest
  (the ReplicaSet controller's order, simplified); a pod leaves the proxy and is marked terminating in the
  EndpointSlice before its SIGTERM, and leaves the slice once its process has exited.
- the EndpointSlice controller: it writes the EndpointSlice ``<name>-pods`` (server-side apply, labelled
  ``endpointslice.kubernetes.io/managed-by: eventferry-tests`` so that kube-controller-manager leaves it
  alone). The API server refuses loopback addresses in an EndpointSlice, so the slice shows each pod at
  the pod-network address 10.244.0.<k>, the same <k> as the loopback address it really listens on.
- kube-proxy: a ``ServiceProxy`` on 127.0.0.1:``proxy_port`` in front of the ready pods, the Service's
  stand-in; ``LoopbackServices.add(f"{name}.{namespace}.svc.cluster.local", workload.proxy_port)`` makes the
  Service's URL reach it from processes that use the loopback DNS shim.

It runs on an event loop in a thread of its own, so a test may block (sync or async) without stalling it.
What happened is kept for assertions: ``received()``, ``timeline``, ``ready_at``, ``most_ready``,
``max_in_flight_per_pod``; ``log_tails()`` for failure messages.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import sys
import threading
import time
import urllib.error
from collections.abc import Coroutine
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

from tests.env.ports import free_port
from tests.env.process import ManagedProcess
from tests.env.servers import KubeAPI
from tests.support.kubeproxy import ServiceProxy

POD_SUBSCRIBER = Path(__file__).with_name("pod_subscriber.py")
IMAGE = "subscriber:test"
CONTAINER_PORT = 8080
SERVICE_PORT = 80
MANAGED_BY = "eventferry-tests"
POD_NETWORK = "10.244.0."  # outside the API server's Service range (10.0.0.0/24)
POLL_INTERVAL = 0.15
PROBLEMS_KEPT = 50
T = TypeVar("T")

# Loopback addresses 127.0.0.2..254 for pods, each used once in a test session: a pod's address (and its
# pod IP in the slice) never stands for two pods, even across workloads.
_host_numbers = itertools.count(2)
_host_numbers_lock = threading.Lock()


def next_host_number() -> int:
    with _host_numbers_lock:
        number = next(_host_numbers)
    if number > 254:
        raise RuntimeError("this session has used every loopback address 127.0.0.2-254 for a pod")
    return number


def subscriber_manifests(name: str, namespace: str | None = None) -> list[dict[str, Any]]:
    """A Deployment ``name`` scaled to zero (image subscriber:test, port 8080) and its Service (80 -> 8080)."""
    labels = {"app": name}
    metadata: dict[str, Any] = {"name": name, **({"namespace": namespace} if namespace else {})}
    container = {"name": "subscriber", "image": IMAGE,
                 "ports": [{"containerPort": CONTAINER_PORT, "protocol": "TCP"}]}
    deployment = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {**metadata, "labels": labels},
                  "spec": {"replicas": 0, "selector": {"matchLabels": labels},
                           "template": {"metadata": {"labels": labels}, "spec": {"containers": [container]}}}}
    service = {"apiVersion": "v1", "kind": "Service", "metadata": dict(metadata),
               "spec": {"selector": labels,
                        "ports": [{"port": SERVICE_PORT, "targetPort": CONTAINER_PORT, "protocol": "TCP"}]}}
    return [deployment, service]


@dataclass
class Pod:
    name: str
    serial: int  # the n of <name>-<n>: higher is newer
    host_number: int  # k: listens on 127.0.0.k, shown as 10.244.0.k
    process: ManagedProcess
    record: Path
    ready: bool = False
    terminating: bool = False
    readiness: asyncio.Task[None] | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.{self.host_number}"

    @property
    def ip(self) -> str:
        return f"{POD_NETWORK}{self.host_number}"


class SubscriberWorkload:
    """Pods for Deployment ``namespace/name`` as its replicas say; see the module docstring."""

    def __init__(self, kube: KubeAPI, namespace: str, name: str, workdir: Path, *, start_delay: float = 1.0,
                 work: float = 0.02, becomes_ready: bool = True) -> None:
        self.kube = kube
        self.namespace = namespace
        self.name = name
        self.workdir = workdir
        self.start_delay = start_delay
        self.work = work
        self.becomes_ready = becomes_ready
        workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()  # every pod's port, on its own address
        self.proxy = ServiceProxy()
        self.proxy_port = self.proxy.port
        self.slice_name = f"{name}-pods"
        # Observations, written on the workload's loop and read from the test's thread.
        self.wanted = 0
        self.timeline: list[tuple[float, int, int]] = []  # (time.monotonic(), replicas wanted, pods ready)
        self.ready_at: list[float] = []  # time.time() at which each pod became ready
        self.most_ready = 0
        self.problems: list[str] = []  # API errors and pods that died, for failure messages
        self._pods: list[Pod] = []  # running, terminating ones included
        self._all_pods: list[Pod] = []  # ever started: their records and logs stay readable
        self._serials = itertools.count(1)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name=f"workload-{name}", daemon=True)
        self._follower: asyncio.Task[None] | None = None
        self._terminations: set[asyncio.Task[None]] = set()
        self._slice_lock: asyncio.Lock | None = None
        self._slice_stale = False
        self._state = "new"

    # --- lifecycle (from the test's thread) ------------------------------------------------------------

    def start(self) -> SubscriberWorkload:
        """Starts the proxy, writes an EndpointSlice with no endpoints and follows the Deployment."""
        assert self._state == "new", f"workload {self.name} already {self._state}"
        self._state = "started"
        self._thread.start()
        try:
            self._call(self._start(), 30)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Ends every pod process, removes the EndpointSlice, stops the proxy and the thread. Idempotent."""
        if self._state == "stopped":
            return
        started, self._state = self._state == "started", "stopped"
        try:
            if started and self._thread.is_alive():
                self._call(self._shutdown(), 60)
        except Exception as error:
            self._problem(f"stopping: {error!r}")
        finally:
            for pod in self._all_pods:  # whatever the shutdown missed; a no-op for a group that is gone
                pod.process.stop(timeout=5)
            if self._thread.is_alive():
                self._loop.call_soon_threadsafe(self._loop.stop)
                self._thread.join(10)
            if not self._loop.is_running():
                self._loop.close()

    def __enter__(self) -> SubscriberWorkload:
        return self.start()

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.stop()

    def _call(self, coroutine: Coroutine[Any, Any, T], timeout: float) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout)

    # --- observations (from any thread) ------------------------------------------------------------------

    def received(self) -> list[dict[str, Any]]:
        """Every event any pod received (stopped pods included), in the order of arrival."""
        events: list[dict[str, Any]] = []
        for pod in list(self._all_pods):
            try:
                lines = pod.record.read_text(encoding="utf-8").splitlines(keepends=True)
            except FileNotFoundError:
                continue
            events += [json.loads(line) for line in lines if line.endswith("\n")]  # not one being written
        return sorted(events, key=lambda event: float(event["at"]))

    @property
    def max_in_flight_per_pod(self) -> int:
        """The most requests one pod served at once."""
        return max((int(event["in_flight"]) for event in self.received()), default=0)

    def ready_pods(self) -> list[str]:
        return [pod.name for pod in list(self._pods) if pod.ready and not pod.terminating]

    def live_pods(self) -> list[str]:
        """Pods whose process runs, whatever their state."""
        return [pod.name for pod in list(self._all_pods) if pod.process.alive()]

    def log_tails(self, lines: int = 20) -> str:
        parts = [f"workload {self.namespace}/{self.name}: timeline {self.timeline}"]
        parts += [f"problem: {problem}" for problem in list(self.problems)]
        parts += [f"--- pod {pod.name} ({pod.address}:{self.port}) ---\n{pod.process.log_tail(lines)}"
                  for pod in list(self._all_pods)]
        return "\n".join(parts)

    # --- on the workload's loop ----------------------------------------------------------------------------

    async def _start(self) -> None:
        self._slice_lock = asyncio.Lock()
        await self.proxy.start()
        await self._write_slice(raise_errors=True)  # a namespace that does not exist fails here, plainly
        self._follower = asyncio.get_running_loop().create_task(self._follow())

    async def _follow(self) -> None:
        while True:
            try:
                self.wanted = await asyncio.to_thread(self._replicas_wanted)
            except Exception as error:  # the API server restarting, say: the pods stay as they are
                self._problem(f"reading Deployment {self.namespace}/{self.name}: {error!r}")
            else:
                if self._drop_dead_pods():
                    self._slice_stale = True
                self._scale()
            if self._slice_stale:
                await self._publish()
            self._note()
            await asyncio.sleep(POLL_INTERVAL)

    def _replicas_wanted(self) -> int:
        try:
            deployment = self.kube.get_json(f"/apis/apps/v1/namespaces/{self.namespace}/deployments/{self.name}")
        except urllib.error.HTTPError as error:
            if error.code == 404:
                return 0
            raise
        return int(deployment["spec"].get("replicas", 1))

    def _scale(self) -> None:
        running = [pod for pod in self._pods if not pod.terminating]
        for _ in range(self.wanted - len(running)):
            self._start_pod()
        excess = len(running) - self.wanted
        if excess > 0:
            for pod in sorted(running, key=lambda pod: (pod.ready, -pod.serial))[:excess]:
                self._terminate(pod)

    def _start_pod(self) -> None:
        serial = next(self._serials)
        name = f"{self.name}-{serial}"
        host_number = next_host_number()
        record = self.workdir / f"{name}.jsonl"
        command = [sys.executable, str(POD_SUBSCRIBER), "--host", f"127.0.0.{host_number}", "--port", str(self.port),
                   "--name", name, "--start-delay", str(self.start_delay), "--work", str(self.work),
                   "--record", str(record)]
        if not self.becomes_ready:
            command.append("--never-listen")
        process = ManagedProcess(name, command, self.workdir / f"{name}.log", cwd=self.workdir,
                                 env=dict(os.environ, PYTHONUNBUFFERED="1"))
        pod = Pod(name, serial, host_number, process, record)
        self._pods.append(pod)
        self._all_pods.append(pod)
        pod.readiness = asyncio.get_running_loop().create_task(self._await_ready(pod))
        self._slice_stale = True  # listed, not ready, as a pod with an IP is

    async def _await_ready(self, pod: Pod) -> None:
        """The readiness probe: the pod's port accepts a connection."""
        while pod.process.alive():
            try:
                _, writer = await asyncio.wait_for(asyncio.open_connection(pod.address, self.port), 1)
            except (OSError, TimeoutError):
                await asyncio.sleep(0.05)
                continue
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
            pod.ready = True
            self.ready_at.append(time.time())
            await self._publish()
            return

    def _drop_dead_pods(self) -> bool:
        """Pods whose process exited unasked: gone, so that ``_scale`` replaces them as a ReplicaSet would."""
        dead = [pod for pod in self._pods if not pod.terminating and not pod.process.alive()]
        for pod in dead:
            self._problem(f"pod {pod.name} exited with code {pod.process.proc.returncode}:\n"
                          f"{pod.process.log_tail(10)}")
            if pod.readiness is not None:
                pod.readiness.cancel()
            self._pods.remove(pod)
        return bool(dead)

    def _terminate(self, pod: Pod) -> None:
        pod.terminating = True
        if pod.readiness is not None:
            pod.readiness.cancel()
        task = asyncio.get_running_loop().create_task(self._termination(pod))
        self._terminations.add(task)
        task.add_done_callback(self._terminations.discard)

    async def _termination(self, pod: Pod) -> None:
        await self._publish()  # out of the proxy and terminating in the slice before the SIGTERM
        await asyncio.to_thread(pod.process.stop)  # SIGTERM; SIGKILL after 10 s
        if pod in self._pods:
            self._pods.remove(pod)
        await self._publish()

    async def _publish(self) -> None:
        """The ready pods to the proxy and every pod to the EndpointSlice."""
        ready = [pod for pod in self._pods if pod.ready and not pod.terminating]
        self.proxy.set_endpoints([(pod.address, self.port) for pod in ready])
        self._note()
        await self._write_slice()

    def _note(self) -> None:
        ready = sum(1 for pod in self._pods if pod.ready and not pod.terminating)
        self.most_ready = max(self.most_ready, ready)
        if not self.timeline or self.timeline[-1][1:] != (self.wanted, ready):
            self.timeline.append((time.monotonic(), self.wanted, ready))

    def _slice(self) -> dict[str, Any]:
        endpoints = []
        for pod in self._pods:
            serving = pod.ready and not pod.terminating
            endpoints.append({"addresses": [pod.ip],
                              "conditions": {"ready": serving, "serving": serving, "terminating": pod.terminating},
                              "targetRef": {"kind": "Pod", "name": pod.name, "namespace": self.namespace}})
        return {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
                "metadata": {"name": self.slice_name, "namespace": self.namespace,
                             "labels": {"kubernetes.io/service-name": self.name,
                                        "endpointslice.kubernetes.io/managed-by": MANAGED_BY}},
                "addressType": "IPv4",
                # The Service's port has no name: the slice's port has the same (empty) one.
                "ports": [{"name": "", "port": self.port, "protocol": "TCP"}],
                "endpoints": endpoints}

    def _slice_path(self) -> str:
        return f"/apis/discovery.k8s.io/v1/namespaces/{self.namespace}/endpointslices/{self.slice_name}"

    async def _write_slice(self, raise_errors: bool = False) -> None:
        assert self._slice_lock is not None
        async with self._slice_lock:  # one write at a time, each of the state as it is when it goes out
            self._slice_stale = False
            try:
                await asyncio.to_thread(self.kube.request_json, "PATCH",
                                        f"{self._slice_path()}?fieldManager={MANAGED_BY}&force=true",
                                        self._slice(), "application/apply-patch+yaml")
            except Exception as error:
                self._slice_stale = True  # written again on the next poll
                if raise_errors:
                    raise
                self._problem(f"writing EndpointSlice {self.namespace}/{self.slice_name}: {error!r}")

    async def _shutdown(self) -> None:
        if self._follower is not None:
            self._follower.cancel()
            await asyncio.gather(self._follower, return_exceptions=True)
        for pod in self._all_pods:
            if pod.readiness is not None:
                pod.readiness.cancel()
        remaining = [pod for pod in self._pods if not pod.terminating]
        for pod in remaining:
            pod.terminating = True
        self.proxy.set_endpoints([])
        await asyncio.gather(*self._terminations, *(asyncio.to_thread(pod.process.stop) for pod in remaining),
                             return_exceptions=True)
        self._pods.clear()
        self._note()
        await self.proxy.stop()
        try:
            await asyncio.to_thread(self.kube.request_json, "DELETE", self._slice_path())
        except urllib.error.HTTPError as error:
            if error.code != 404:
                self._problem(f"deleting EndpointSlice {self.namespace}/{self.slice_name}: {error!r}")
        except Exception as error:
            self._problem(f"deleting EndpointSlice {self.namespace}/{self.slice_name}: {error!r}")

    def _problem(self, problem: str) -> None:
        if not self.problems or self.problems[-1] != problem:  # an API server that is down says so once
            self.problems.append(problem)
            del self.problems[:-PROBLEMS_KEPT]

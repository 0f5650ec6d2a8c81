"""How long 1,000 Triggers take to become Ready, beside the API server's own cost of storing them.

``python -m benchmarks.operator [--triggers N]``

Starts its own etcd + kube-apiserver (tests.env), applies the CRDs, and measures in one run:

1. baseline: creating N Triggers with no operator running (the API server's write cost, same client,
   same concurrency); they are deleted again before the operator starts;
2. 100 Triggers: from the first create until all 100 are Ready (operator + data plane running);
3. N Triggers: the same for N (default 1,000), in another namespace with its own Broker.

Ready means what the operator's readiness gate means: the data plane process (``eventferry broker
--configmap``) reported that it loaded a contract generation holding the Trigger. Readiness is
followed with a watch, not by listing. The operator's own counters (contract writes, status
patches) are printed too.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import ssl
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
from tests.env import provision
from tests.env.ports import free_port
from tests.env.servers import KubeAPI

from benchmarks.broker import process, rss_mib
from eventferry.commands.crds import render_all

EVENTFERRY = str(Path(sys.executable).parent / "eventferry")
API = "/apis/eventferry.dev/v1alpha1"
SYSTEM = "eventferry-system"
CONCURRENCY = 16


class Api:
    def __init__(self, kube: KubeAPI) -> None:
        self.kube = kube
        context = ssl.create_default_context(cafile=str(kube.workdir / "certs" / "apiserver.crt"))
        self.session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=context, limit=64),
                                             headers={"Authorization": f"Bearer {kube.token}"})

    async def call(self, method: str, path: str, body: Any = None) -> Any:
        async with self.session.request(method, self.kube.url + path, json=body) as resp:
            text = await resp.text()
            if resp.status >= 400:
                raise RuntimeError(f"{method} {path}: {resp.status} {text[:300]}")
            return json.loads(text) if text else None

    async def create_triggers(self, namespace: str, count: int) -> None:
        limit = asyncio.Semaphore(CONCURRENCY)

        async def one(i: int) -> None:
            body = {"apiVersion": "eventferry.dev/v1alpha1", "kind": "Trigger",
                    "metadata": {"name": f"t-{i:05d}", "namespace": namespace},
                    "spec": {"broker": "default", "filter": {"attributes": {"type": f"bench.type.{i % 50}"}},
                             "subscriber": {"uri": f"http://sink-{i % 20}.{namespace}.svc.cluster.local/"}}}
            async with limit:
                await self.call("POST", f"{API}/namespaces/{namespace}/triggers", body)

        await asyncio.gather(*(one(i) for i in range(count)))

    async def wait_all_ready(self, namespace: str, plural: str, count: int, timeout: float = 600) -> None:
        """Follows a watch of the namespace until ``count`` objects have Ready=True."""
        ready: set[str] = set()
        deadline = time.monotonic() + timeout
        version = "0"
        while time.monotonic() < deadline:
            listed = await self.call("GET", f"{API}/namespaces/{namespace}/{plural}")
            ready = {item["metadata"]["name"] for item in listed["items"] if _ready(item)}
            version = listed["metadata"]["resourceVersion"]
            if len(ready) >= count:
                return
            url = (f"{self.kube.url}{API}/namespaces/{namespace}/{plural}?watch=true&resourceVersion={version}"
                   f"&timeoutSeconds={int(max(1, deadline - time.monotonic()))}")
            async with self.session.get(url, timeout=aiohttp.ClientTimeout(total=None, sock_read=120)) as resp:
                buffer = b""
                async for chunk in resp.content.iter_any():
                    buffer += chunk
                    while b"\n" in buffer:
                        line, buffer = buffer.split(b"\n", 1)
                        event = json.loads(line)
                        item = event.get("object", {})
                        name = item.get("metadata", {}).get("name")
                        if event.get("type") in ("ADDED", "MODIFIED") and _ready(item):
                            ready.add(name)
                        if len(ready) >= count:
                            return
        raise TimeoutError(f"{len(ready)} of {count} {plural} Ready in {namespace} after {timeout:.0f}s")

    async def close(self) -> None:
        await self.session.close()


def _ready(item: dict[str, Any]) -> bool:
    conditions = (item.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


def kubectl(kube: KubeAPI, *args: str, stdin: str | None = None) -> str:
    done = subprocess.run([provision.kubectl(), *args], input=stdin, capture_output=True, text=True,
                          env=dict(os.environ, KUBECONFIG=str(kube.kubeconfig)), timeout=120)
    if done.returncode != 0:
        raise RuntimeError(f"kubectl {' '.join(args)}: {done.stderr}")
    return done.stdout


def operator_counter(text: str, name: str) -> float:
    match = re.search(rf"^{re.escape(name)}(?:_total)? (\S+)$", text, re.MULTILINE)
    return float(match.group(1)) if match else float("nan")


async def timed_ready(api: Api, namespace: str, count: int) -> float:
    started = time.perf_counter()
    await asyncio.gather(api.create_triggers(namespace, count), api.wait_all_ready(namespace, "triggers", count))
    return time.perf_counter() - started


async def scenario(kube: KubeAPI, work: Path, triggers: int) -> dict[str, float]:
    api = Api(kube)
    try:
        kubectl(kube, "apply", "-f", "-", stdin=render_all())
        kubectl(kube, "wait", "--for=condition=Established", "--timeout=60s", "crd/triggers.eventferry.dev",
                "crd/brokers.eventferry.dev")
        for namespace in (SYSTEM, "baseline", "bench-100", "bench-n"):
            kubectl(kube, "create", "namespace", namespace)

        started = time.perf_counter()
        await api.create_triggers("baseline", triggers)
        baseline = time.perf_counter() - started
        await api.call("DELETE", f"{API}/namespaces/baseline/triggers")

        env = dict(os.environ, KUBECONFIG=str(kube.kubeconfig), POD_NAME="dataplane-0")
        data_port, metrics_port = free_port(), free_port()
        dataplane = [EVENTFERRY, "broker", "--configmap", f"{SYSTEM}/eventferry-contract", "--host", "127.0.0.1",
                     "--port", str(data_port), "--log-level", "WARNING"]
        operator = [EVENTFERRY, "operator", "--metrics-host", "127.0.0.1", "--metrics-port", str(metrics_port),
                    "--log-level", "WARNING"]
        with process(dataplane, data_port, work / "dataplane.log", env) as data_process, \
                process(operator, metrics_port, work / "operator.log", env) as operator_process:
            for namespace in ("bench-100", "bench-n"):
                await api.call("POST", f"{API}/namespaces/{namespace}/brokers", {
                    "apiVersion": "eventferry.dev/v1alpha1", "kind": "Broker",
                    "metadata": {"name": "default", "namespace": namespace}, "spec": {}})
                await api.wait_all_ready(namespace, "brokers", 1, timeout=120)
            at_rest = (rss_mib(operator_process.pid), rss_mib(data_process.pid))
            hundred = await timed_ready(api, "bench-100", 100)
            many = await timed_ready(api, "bench-n", triggers)
            loaded = (rss_mib(operator_process.pid), rss_mib(data_process.pid))
            async with aiohttp.ClientSession() as session, \
                    session.get(f"http://127.0.0.1:{metrics_port}/metrics") as resp:
                metrics = await resp.text()
        passes = operator_counter(metrics, 'eventferry_operator_reconcile_seconds_count{kind="Contract"}')
        return {"baseline": baseline, "hundred": hundred, "many": many, "passes": passes,
                "operator_rest": at_rest[0], "dataplane_rest": at_rest[1], "operator_loaded": loaded[0],
                "dataplane_loaded": loaded[1],
                "pass_seconds": operator_counter(metrics, 'eventferry_operator_reconcile_seconds_sum{kind="Contract"}'),
                "status_writes": operator_counter(metrics, 'eventferry_operator_status_writes_total{kind="Trigger"}'),
                "contract_writes": operator_counter(metrics, "eventferry_operator_contract_writes"),
                "contract_bytes": operator_counter(metrics, "eventferry_operator_contract_bytes")}
    finally:
        await api.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--triggers", type=int, default=1000)
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="eventferry-bench-operator-"))
    kube = KubeAPI.start(work / "kube")
    try:
        result = asyncio.run(scenario(kube, work, args.triggers))
    finally:
        kube.stop()
    n = args.triggers
    print(f"Triggers until Ready (operator + data plane, kube-apiserver {work / 'kube'}):")
    print(f"  baseline: creating {n} Triggers, no operator       {result['baseline']:7.2f} s "
          f"({n / result['baseline']:.0f}/s)")
    print(f"  100 Triggers created -> all Ready                   {result['hundred']:7.2f} s")
    print(f"  {n} Triggers created -> all Ready                  {result['many']:7.2f} s "
          f"({result['many'] / result['baseline']:.2f}x the baseline)")
    print(f"  contract ConfigMap writes in total: {result['contract_writes']:.0f}; "
          f"last contract: {result['contract_bytes'] / 1024:.0f} KiB")
    print(f"  contract passes: {result['passes']:.0f}, {result['pass_seconds'] / result['passes']:.2f} s each on "
          f"average (status patches included); Trigger status writes: {result['status_writes']:.0f}")
    print(f"  RSS at rest (2 Brokers): operator {result['operator_rest']:.0f} MiB, data plane "
          f"{result['dataplane_rest']:.0f} MiB; with {n + 100} Triggers: operator {result['operator_loaded']:.0f} MiB, "
          f"data plane {result['dataplane_loaded']:.0f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())

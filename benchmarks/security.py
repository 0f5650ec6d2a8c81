"""The cost of checking senders' tokens, beside no authentication in the same run.

``python -m benchmarks.security [--events N] [--concurrency C] [--runs R]``

Starts a real kube-apiserver (the test environment's), a ServiceAccount and its tokens (TokenRequest), the
counting sink, and two ``eventferry run`` on the same manifest: one open (the baseline), one with
``--authentication required`` (keys from that API server, the default mode allowing the namespace). Cases,
alternated run by run: no token, one token on every request (what a sender does: the verification is
remembered), and a new token on every request (the worst case: a signature check each time). Also, in this
process, the verifier alone: microseconds per first and per repeated verification of the API server's tokens.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from tests.env.ports import free_port
from tests.env.servers import KubeAPI

from benchmarks.broker import EVENTFERRY, PYTHON, Headers, one_run, process, wait_ready
from eventferry.apis.broker import broker_audience

NAMESPACE = "default"
BROKER = "memory"


def manifests(sink: str) -> str:
    return f"""apiVersion: eventferry.dev/v1alpha1
kind: Broker
metadata: {{name: {BROKER}}}
---
apiVersion: eventferry.dev/v1alpha1
kind: Trigger
metadata: {{name: to-sink}}
spec: {{broker: {BROKER}, subscriber: {{uri: "{sink}/memory"}}}}
"""


def tokens(kube: KubeAPI, count: int) -> list[str]:
    audience = broker_audience(NAMESPACE, BROKER)
    issued = []
    for _ in range(count):
        answer = kube.request_json("POST", f"/api/v1/namespaces/{NAMESPACE}/serviceaccounts/producer/token", {
            "apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
            "spec": {"audiences": [audience], "expirationSeconds": 3600}})
        issued.append(answer["status"]["token"])
    return issued


async def verifier_alone(kube: KubeAPI, fresh: list[str]) -> tuple[float, float]:
    """Microseconds per verification: (first sight of a token, the same token again)."""
    from eventferry.dataplane.authentication import TokenVerifier, api_server_keys
    from eventferry.dataplane.contract_configmap import ConfigMapClient
    from eventferry.net.kubeconn import ApiConnection

    os.environ["KUBECONFIG"] = str(kube.kubeconfig)
    client = ConfigMapClient(ApiConnection.from_environment())
    try:
        verifier = TokenVerifier(api_server_keys(client.request))
        await verifier.refresh()
        audience = broker_audience(NAMESPACE, BROKER)
        started = time.perf_counter()
        for token in fresh:
            await verifier.verify(f"Bearer {token}", audience)
        first = (time.perf_counter() - started) / len(fresh) * 1e6
        again = f"Bearer {fresh[0]}"
        repeats = 20000
        started = time.perf_counter()
        for _ in range(repeats):
            await verifier.verify(again, audience)
        return first, (time.perf_counter() - started) / repeats * 1e6
    finally:
        await client.close()


async def main_async(args: argparse.Namespace) -> None:
    work = Path(tempfile.mkdtemp(prefix="eventferry-bench-security-"))
    kube = KubeAPI.start(work / "kube")
    try:
        kube.kubectl("create", "serviceaccount", "producer", "-n", NAMESPACE)
        print(f"issuing {args.events * args.runs + 200} tokens (TokenRequest)", file=sys.stderr, flush=True)
        one = tokens(kube, 1)[0]
        fresh = tokens(kube, args.events * args.runs + 200)
        first_us, again_us = await verifier_alone(kube, fresh[-200:])
        sink_port, open_port, checked_port = free_port(), free_port(), free_port()
        sink = f"http://127.0.0.1:{sink_port}"
        manifest = work / "bench.yaml"
        manifest.write_text(manifests(sink))
        env = dict(os.environ, KUBECONFIG=str(kube.kubeconfig))
        with process([PYTHON, "-m", "benchmarks.sink", "--port", str(sink_port)], sink_port, work / "sink.log"), \
                process([EVENTFERRY, "run", "-f", str(manifest), "--port", str(open_port), "--log-level", "WARNING"],
                        open_port, work / "open.log"), \
                process([EVENTFERRY, "run", "-f", str(manifest), "--port", str(checked_port), "--log-level",
                         "WARNING", "--authentication", "required"], checked_port, work / "checked.log", env):
            await wait_ready(f"http://127.0.0.1:{open_port}")
            await wait_ready(f"http://127.0.0.1:{checked_port}")
            path = f"/{NAMESPACE}/{BROKER}"
            never_seen = iter(fresh[:args.events * args.runs])
            fixed: dict[str, str] = {"Authorization": f"Bearer {one}"}
            cases: list[tuple[str, str, Headers | None]] = [
                ("baseline: no authentication", f"http://127.0.0.1:{open_port}{path}", None),
                ("token checked, same token each request", f"http://127.0.0.1:{checked_port}{path}", fixed),
                ("token checked, a new token each request", f"http://127.0.0.1:{checked_port}{path}",
                 lambda: {"Authorization": f"Bearer {next(never_seen)}"})]
            for _, url, headers in cases[:2]:  # warm-up
                await one_run(url, sink, 500, args.concurrency, headers=headers)
            results: dict[str, list[tuple[float, float, float, float]]] = {case[0]: [] for case in cases}
            for run in range(args.runs):
                for name, url, headers in cases:
                    results[name].append(await one_run(url, sink, args.events, args.concurrency, headers=headers))
                    print(f"  run {run + 1}/{args.runs} {name}: {results[name][-1][0]:.0f} deliveries/s",
                          file=sys.stderr, flush=True)
        base = statistics.median(r[0] for r in results[cases[0][0]])
        base_p50 = statistics.median(r[1] for r in results[cases[0][0]])
        print(f"\n{args.events} events x {args.runs} runs, {args.concurrency} concurrent senders, medians; "
              f"InMemory Broker, 1 Trigger, eventferry run")
        print(f"{'case':44} {'deliv./s':>9} {'vs none':>8} {'p50 ms':>8} {'+p50 ms':>8} {'p99 ms':>8}")
        for name, *_ in cases:
            rate, p50, p99 = (statistics.median(r[i] for r in results[name]) for i in (0, 1, 2))
            print(f"{name:44} {rate:9.0f} {rate / base:7.2f}x {p50:8.2f} {p50 - base_p50:8.2f} {p99:8.2f}")
        print(f"the verifier alone (API server's RS256 tokens): {first_us:.0f} us a token's first verification, "
              f"{again_us:.1f} us each next one (remembered)")
    finally:
        kube.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--runs", type=int, default=3)
    asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    main()

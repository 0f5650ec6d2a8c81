"""The routing contract at scale: its size in the ConfigMap and the data plane's load time.

``python -m benchmarks.contract [--triggers 1000,10000,30000] [--runs 3]``

For each count: a contract of that many Triggers (realistic ones: a random uid, a Service URL, two
exact-match attributes, a delivery with a dead-letter sink), as the operator stores it (plain JSON up to
256 KiB, gzip-compressed past it), then, as the data plane does on a new version: read it from the
ConfigMap's data, parse and validate it, and apply it to a fresh data plane (the InMemory class: the
Triggers' filters compiled and indexed). The baseline is the same document parsed as plain JSON
(``json.loads``), without validation: what any loader must pay at least. Medians of the runs.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
import uuid

from eventferry.contract.model import Broker, Contract, Delivery, Trigger
from eventferry.dataplane.dataplane import DataPlane
from eventferry.resources.contract import contract_config_map, contract_from_config_map, contract_json, stored_bytes


def contract_of(count: int) -> Contract:
    return Contract(generation=1, brokers=[Broker(namespace="live", name="default", uid=str(uuid.uuid4()), triggers=[
        Trigger(namespace="live", name=f"room-{i}-comments", uid=str(uuid.uuid4()), generation=1,
                subscriber=f"http://moderation-{i % 50}.live.svc.cluster.local/comments",
                attributes={"type": "com.live.comment", "room": str(i)},
                delivery=Delivery(retry=3, dead_letter_sink="http://dls.live.svc.cluster.local"))
        for i in range(count)])])


async def load_once(count: int) -> dict[str, float]:
    contract = contract_of(count)
    config_map = contract_config_map(contract, "eventferry-system")
    plain = contract_json(contract)
    started = time.perf_counter()
    json.loads(plain)
    baseline = time.perf_counter() - started
    started = time.perf_counter()
    loaded = contract_from_config_map(config_map)
    parsed = time.perf_counter() - started
    dataplane = DataPlane()
    started = time.perf_counter()
    await dataplane.apply(loaded)
    applied = time.perf_counter() - started
    await dataplane.close()
    return {"json": len(plain), "stored": stored_bytes(config_map), "baseline": baseline, "parse": parsed,
            "apply": applied}


async def main_async(args: argparse.Namespace) -> None:
    print(f"{'Triggers':>9} {'JSON KiB':>9} {'stored KiB':>11} {'of 1 MiB':>9} {'json.loads ms':>14} "
          f"{'read+validate ms':>17} {'apply ms':>9} {'total vs json.loads':>20}")
    for count in args.triggers:
        runs = [await load_once(count) for _ in range(args.runs)]
        m = {key: statistics.median(run[key] for run in runs) for key in runs[0]}
        total = m["parse"] + m["apply"]
        print(f"{count:9d} {m['json'] / 1024:9.0f} {m['stored'] / 1024:11.0f} {m['stored'] / 2**20:8.0%} "
              f"{m['baseline'] * 1000:14.1f} {m['parse'] * 1000:17.1f} {m['apply'] * 1000:9.1f} "
              f"{total / m['baseline']:19.1f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--triggers", type=lambda text: [int(n) for n in text.split(",")], default=[1000, 10000, 30000])
    parser.add_argument("--runs", type=int, default=3)
    asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    main()

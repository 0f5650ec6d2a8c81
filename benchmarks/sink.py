"""A counting HTTP sink for benchmarks: ``python -m benchmarks.sink --port P``.

``GET /count`` reports how many requests arrived and when the first and the last did. Events that carry the
time they were due to leave the load generator (``ce-scheduledat``, epoch seconds; ``benchmarks/load.py``)
also count their latency from that due time: end to end from the schedule, so an open-loop sender that falls
behind shows up as latency, as it would for a user. ``GET /stats`` gives count, p50, p99 and max in
milliseconds; ``POST /reset`` starts a new measurement.
"""

from __future__ import annotations

import argparse
import time

from aiohttp import web


def percentile(values: list[float], fraction: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * fraction))]


def build_app() -> web.Application:
    state = {"count": 0, "first": 0.0, "last": 0.0}
    latencies: list[float] = []

    async def receive(request: web.Request) -> web.Response:
        await request.read()
        now = time.time()
        if state["count"] == 0:
            state["first"] = now
        state["count"] += 1
        state["last"] = now
        scheduled = request.headers.get("ce-scheduledat")
        if scheduled is not None:
            latencies.append((now - float(scheduled)) * 1000)
        return web.Response(status=200)

    async def count(request: web.Request) -> web.Response:
        return web.json_response(state)

    async def stats(request: web.Request) -> web.Response:
        return web.json_response({"count": len(latencies), "p50": percentile(latencies, 0.5),
                                  "p99": percentile(latencies, 0.99), "max": max(latencies, default=0.0)})

    async def reset(request: web.Request) -> web.Response:
        state.update(count=0, first=0.0, last=0.0)
        latencies.clear()
        return web.Response(status=204)

    app = web.Application()
    app.router.add_get("/count", count)
    app.router.add_get("/stats", stats)
    app.router.add_post("/reset", reset)
    app.router.add_post("/{tail:.*}", receive)
    return app


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    web.run_app(build_app(), host="127.0.0.1", port=args.port, access_log=None, print=None)


if __name__ == "__main__":
    main()

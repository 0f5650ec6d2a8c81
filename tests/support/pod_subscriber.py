"""One pod of a subscriber workload, as a process: ``python tests/support/pod_subscriber.py --host H --port P ...``.

Started by ``tests/support/workload.py`` for each replica of a subscriber Deployment. It sleeps
``--start-delay`` seconds before it listens (a cold start, such as loading a model), then answers every
POST with 200 and an empty body after ``--work`` seconds (the inference), and GET /healthz with 200.
Each event is appended to ``--record`` as one JSON line at its arrival::

    {"id": "<ce-id, or the id of a structured event>", "pod": "<name>", "at": <time.time()>,
     "in_flight": <requests this pod is serving at that moment, this one included>}

SIGTERM stops it gracefully: it stops listening, answers the requests in flight, then exits.
``--never-listen`` makes a pod that starts but never becomes ready.

Only the standard library and aiohttp: it runs as a script, outside the test package.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import time
from typing import Any, TextIO

from aiohttp import web

# A SIGTERM'd pod waits this long for requests in flight; the harness sends SIGKILL after 10 s.
SHUTDOWN_TIMEOUT = 8.0


class Pod:
    def __init__(self, name: str, work: float, record: TextIO) -> None:
        self.name = name
        self.work = work
        self.record = record
        self.in_flight = 0

    async def event(self, request: web.Request) -> web.Response:
        self.in_flight += 1
        try:
            body = await request.read()
            self.record.write(json.dumps({"id": event_id(request, body), "pod": self.name, "at": time.time(),
                                          "in_flight": self.in_flight}) + "\n")
            self.record.flush()
            if self.work > 0:
                await asyncio.sleep(self.work)
            return web.Response(status=200)
        finally:
            self.in_flight -= 1

    async def healthz(self, _request: web.Request) -> web.Response:
        return web.Response(status=200, text="ok\n")


def event_id(request: web.Request, body: bytes) -> str | None:
    """The CloudEvent's id: the ce-id header in binary mode, the body's ``id`` in structured mode."""
    if "ce-id" in request.headers:
        return request.headers["ce-id"]
    with contextlib.suppress(ValueError):
        structured: Any = json.loads(body)
        identifier = structured.get("id") if isinstance(structured, dict) else None
        if isinstance(identifier, str):
            return identifier
    return None


async def serve(args: argparse.Namespace, record: TextIO) -> None:
    terminated = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, terminated.set)
    print(f"{args.name}: starting, listening in {args.start_delay}s", flush=True)
    # The cold start; a SIGTERM during it ends the pod at once, as nothing is served yet.
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(terminated.wait(), args.start_delay)
    if terminated.is_set() or args.never_listen:
        await terminated.wait()
        print(f"{args.name}: terminated before listening", flush=True)
        return
    pod = Pod(args.name, args.work, record)
    app = web.Application()
    app.router.add_get("/healthz", pod.healthz)
    app.router.add_post("/{path:.*}", pod.event)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=SHUTDOWN_TIMEOUT)
    await runner.setup()
    await web.TCPSite(runner, args.host, args.port).start()
    print(f"{args.name}: listening on {args.host}:{args.port}", flush=True)
    await terminated.wait()
    print(f"{args.name}: SIGTERM, answering {pod.in_flight} request(s) in flight", flush=True)
    await runner.cleanup()  # stops listening first, then waits for the handlers
    print(f"{args.name}: stopped", flush=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--name", required=True, help="the pod's name, written into each record")
    parser.add_argument("--start-delay", type=float, default=0.0, help="seconds before it listens")
    parser.add_argument("--work", type=float, default=0.0, help="seconds each POST takes before its 200")
    parser.add_argument("--record", required=True, help="file that receives one JSON line per event")
    parser.add_argument("--never-listen", action="store_true", help="a pod that never becomes ready")
    args = parser.parse_args(argv)
    with open(args.record, "a", encoding="utf-8") as record:
        asyncio.run(serve(args, record))


if __name__ == "__main__":
    main()

"""A counting HTTP sink for benchmarks: ``python -m benchmarks.sink --port P``; ``GET /count`` reports."""

from __future__ import annotations

import argparse
import time

from aiohttp import web


def build_app() -> web.Application:
    state = {"count": 0, "first": 0.0, "last": 0.0}

    async def receive(request: web.Request) -> web.Response:
        await request.read()
        now = time.time()
        if state["count"] == 0:
            state["first"] = now
        state["count"] += 1
        state["last"] = now
        return web.Response(status=200)

    async def count(request: web.Request) -> web.Response:
        return web.json_response(state)

    async def reset(request: web.Request) -> web.Response:
        state.update(count=0, first=0.0, last=0.0)
        return web.Response(status=204)

    app = web.Application()
    app.router.add_get("/count", count)
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

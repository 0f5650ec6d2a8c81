"""The baseline: a plain aiohttp relay that forwards every request to one URL and answers 202 after it.

``python -m benchmarks.relay --port P --target URL``. It does what a broker does at the least:
take an event over HTTP and POST it on, with a pooled client; no filters, no queue, no retries.
"""

from __future__ import annotations

import argparse

import aiohttp
from aiohttp import web


def build_app(target: str) -> web.Application:
    app = web.Application()

    async def start(app: web.Application) -> None:
        app["session"] = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=200))

    async def stop(app: web.Application) -> None:
        await app["session"].close()

    async def relay(request: web.Request) -> web.Response:
        body = await request.read()
        headers = {k: v for k, v in request.headers.items()
                   if k.lower().startswith("ce-") or k.lower() == "content-type"}
        async with request.app["session"].post(target, data=body, headers=headers) as response:
            await response.read()
        return web.Response(status=202)

    app.on_startup.append(start)
    app.on_cleanup.append(stop)
    app.router.add_post("/{tail:.*}", relay)
    return app


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--target", required=True)
    args = parser.parse_args()
    web.run_app(build_app(args.target), host="127.0.0.1", port=args.port, access_log=None, print=None)


if __name__ == "__main__":
    main()

"""An event display for trying things out (as Knative's event_display): prints every event it receives.

``eventferry run --display`` serves it at ``/_display/<namespace>/<name>`` and points every Service
ref that has no ``--service`` mapping there, so a manifest with Service subscribers runs as is.
"""

from __future__ import annotations

import sys

from aiohttp import web

from eventferry.events import InvalidEvent
from eventferry.events.http import from_http

PREFIX = "/_display"
MAX_DATA = 200


def display_url(base: str, namespace: str, name: str) -> str:
    return f"{base}{PREFIX}/{namespace}/{name}"


async def _show(request: web.Request) -> web.Response:
    target = f"{request.match_info['namespace']}/{request.match_info['name']}{request.match_info['path']}"
    try:
        events = from_http(request.headers, await request.read())
    except InvalidEvent as error:
        return web.Response(status=400, text=f"invalid CloudEvent: {error}\n")
    for event in events:
        extensions = {k: v for k, v in event.attributes.items()
                      if k not in ("specversion", "id", "source", "type", "datacontenttype", "time")}
        data = (event.data or b"")[:MAX_DATA].decode(errors="replace")
        print(f"[{target}] {event.type} id={event.id} source={event.source} {extensions} data={data}", flush=True,
              file=sys.stdout)
    return web.Response(status=200)


ROUTES = [web.post(PREFIX + "/{namespace}/{name}{path:/?.*}", _show)]

"""Keeping the last N events a service received, and how many in all: what review and the frames'
dead-letter sink serve. A dead letter keeps the broker's ``knativeerror*`` attributes, and the text of
``knativeerrordata`` (the subscriber's last answer, base64) as ``error``."""

from __future__ import annotations

import base64
import binascii
import collections
import time
from typing import Any

from aiohttp import web

from eventferry_examples.service import NotAnEvent, bad_request, data_of, make_app, read_event

DEFAULT_KEEP = 50


class Recent:
    def __init__(self, keep: int = DEFAULT_KEEP) -> None:
        self.count = 0
        self.items: collections.deque[dict[str, Any]] = collections.deque(maxlen=keep)

    async def receive(self, request: web.Request) -> web.Response:
        try:
            event = await read_event(request)
        except NotAnEvent as error:
            return bad_request(error)
        self.count += 1
        attributes = event.get_attributes()
        extensions = {name: str(value) for name, value in attributes.items() if name.startswith("knativeerror")}
        if "knativeerrordata" in extensions:  # what the subscriber answered, base64: its text, to read
            extensions["error"] = error_text(extensions["knativeerrordata"])
        self.items.appendleft({"id": event.get_id(), "type": event.get_type(), "received": time.time(),
                               "data": data_of(event), **extensions})
        return web.Response(status=202)

    async def serve(self, request: web.Request) -> web.Response:
        return web.json_response({"count": self.count, "recent": list(self.items)})


def error_text(knativeerrordata: str) -> str:
    """A dead letter's ``knativeerrordata`` (the subscriber's answer, base64) as text."""
    try:
        return base64.b64decode(knativeerrordata, validate=True).decode("utf-8", errors="replace")
    except (binascii.Error, ValueError):
        return knativeerrordata


def build_recent(path: str, keep: int = DEFAULT_KEEP) -> tuple[web.Application, Recent]:
    """An app that takes events on ``POST /`` and serves the last ``keep`` of them on ``GET path``."""
    recent = Recent(keep)
    return make_app([web.post("/", recent.receive), web.get(path, recent.serve)]), recent

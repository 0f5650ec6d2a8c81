"""review: the queue of flagged comments a human moderator looks at. Keeps the last N, ``GET /flagged``."""

from __future__ import annotations

from aiohttp import web

from eventferry_examples.recent import build_recent
from eventferry_examples.service import serve_main

PATH = "/flagged"


def build() -> web.Application:
    return build_recent(PATH)[0]


if __name__ == "__main__":
    serve_main(build, __doc__ or "")

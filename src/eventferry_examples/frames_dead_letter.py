"""frames-dead-letter: the key frames vision-inference could not take (the broker gave up after the
Trigger's retries). Counts them and keeps the last N with the broker's error attributes, ``GET /dead-letters``."""

from __future__ import annotations

from aiohttp import web

from eventferry_examples.recent import build_recent
from eventferry_examples.service import serve_main

PATH = "/dead-letters"


def build() -> web.Application:
    return build_recent(PATH)[0]


if __name__ == "__main__":
    serve_main(build, __doc__ or "")

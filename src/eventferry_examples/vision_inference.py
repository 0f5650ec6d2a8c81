"""vision-inference: classifies key frames (8x8 digit images) with a support-vector classifier trained at
start on scikit-learn's digits data set (``digits.py``).

Slow on purpose, as a GPU model under a live-stream burst: ``workers`` frames at once, each taking
``delay`` seconds, at most ``queue_limit`` more waiting; beyond that it answers 503 at once (busy), which
the broker retries. The Trigger frames-to-vision is paced to ``workers + queue_limit`` frames at once, so
under a burst the frames wait in the broker instead of being refused here.

A frame is worth classifying only while it is fresh: one whose CloudEvent ``time`` is more than ``max_age``
seconds old (3 by default, ``VISION_MAX_AGE``; 0 turns the check off) is answered ``422`` with the reason,
which the broker does not retry (Knative retries no 4xx but 404, 408, 409 and 429): it goes straight to
the Trigger's dead-letter sink, which thus gets the frames that waited too long, said in the dead letter.
"""

from __future__ import annotations

import asyncio
import datetime
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from eventferry_examples.digits import TRAINING, digits, valid_pixels
from eventferry_examples.service import NotAnEvent, bad_request, data_of, make_app, read_event, serve_main

DEFAULT_WORKERS = 2
DEFAULT_DELAY = 0.1
DEFAULT_QUEUE_LIMIT = 4
DEFAULT_MAX_AGE = 3.0  # seconds: an older frame is stale, answered 422
STALE_STATUS = 422
VISION: web.AppKey[Vision] = web.AppKey("vision")


def train() -> Any:
    """A classifier of digit images: an RBF support-vector machine (about 96% right on held-out images)."""
    from sklearn.svm import SVC

    data = digits()
    return SVC(gamma=0.001).fit(data.images[:TRAINING], data.labels[:TRAINING])


def classify(model: Any, pixels: list[float]) -> int:
    return int(model.predict([pixels])[0])


@dataclass
class Vision:
    workers: int = DEFAULT_WORKERS
    delay: float = DEFAULT_DELAY
    queue_limit: int = DEFAULT_QUEUE_LIMIT
    max_age: float = DEFAULT_MAX_AGE  # 0 or less: no frame is too old
    clock: Callable[[], float] = time.time
    model: Any = None
    classified: int = 0
    correct: int = 0
    labelled: int = 0
    busy: int = 0
    stale: int = 0
    waiting: int = 0
    in_progress: int = 0
    _slots: asyncio.Semaphore = field(init=False)

    def __post_init__(self) -> None:
        self._slots = asyncio.Semaphore(self.workers)

    async def start(self) -> None:
        self.model = await asyncio.to_thread(train)

    def ready(self) -> bool:
        return self.model is not None

    async def handle(self, request: web.Request) -> web.Response:
        if self.model is None:
            return web.Response(status=503, headers={"Retry-After": "1"}, text="model not trained yet\n")
        try:
            event = await read_event(request)
        except NotAnEvent as error:
            return bad_request(error)
        frame = data_of(event)
        pixels = valid_pixels(frame.get("pixels"))
        if pixels is None:
            return web.json_response({"error": "a frame needs pixels: 64 numbers from 0 to 16"}, status=400)
        age = self.age(event.get_time())
        if age is not None:
            self.stale += 1
            return web.Response(status=STALE_STATUS, text=f"stale frame: {age:.2f}s old (over {self.max_age:g}s)\n")
        if self.waiting >= self.queue_limit:
            self.busy += 1
            return web.Response(status=503, headers={"Retry-After": "1"}, text="busy\n")
        digit = await self._infer(pixels)
        self.classified += 1
        truth = frame.get("truth")
        if isinstance(truth, int):
            self.labelled += 1
            self.correct += truth == digit
        return web.json_response({"digit": digit, "frame": frame.get("frame"), "room": frame.get("room")})

    def age(self, sent: datetime.datetime | None) -> float | None:
        """The frame's age in seconds when it is too old to classify, else None (also without a time)."""
        if sent is None or self.max_age <= 0:
            return None
        age = self.clock() - sent.timestamp()
        return age if age > self.max_age else None

    async def _infer(self, pixels: list[float]) -> int:
        self.waiting += 1
        try:
            await self._slots.acquire()
        finally:
            self.waiting -= 1
        self.in_progress += 1
        try:
            digit = await asyncio.to_thread(classify, self.model, pixels)
            await asyncio.sleep(self.delay)  # the rest of a real model's time on its accelerator
            return digit
        finally:
            self.in_progress -= 1
            self._slots.release()

    async def stats(self, request: web.Request) -> web.Response:
        return web.json_response({
            "classified": self.classified, "busy": self.busy, "stale": self.stale, "waiting": self.waiting,
            "in_progress": self.in_progress,
            "accuracy": round(self.correct / self.labelled, 3) if self.labelled else None})


def build(vision: Vision | None = None) -> web.Application:
    if vision is None:
        vision = Vision(workers=int(os.environ.get("VISION_WORKERS", DEFAULT_WORKERS)),
                        delay=float(os.environ.get("VISION_DELAY", DEFAULT_DELAY)),
                        queue_limit=int(os.environ.get("VISION_QUEUE_LIMIT", DEFAULT_QUEUE_LIMIT)),
                        max_age=float(os.environ.get("VISION_MAX_AGE", DEFAULT_MAX_AGE)))
    started = vision

    async def on_startup(_: web.Application) -> None:
        await started.start()

    app = make_app([web.post("/", vision.handle), web.get("/stats", vision.stats)], healthy=vision.ready)
    app[VISION] = vision
    app.on_startup.append(on_startup)
    return app


if __name__ == "__main__":
    serve_main(build, __doc__ or "")

"""moderation: scores each comment with a toxicity model and replies ``com.live.comment.flagged`` for the bad ones.

The model is alt-profanity-check's: a linear SVM over TF-IDF features, trained on a corpus of toxic and
clean comments, shipped inside the package (nothing is downloaded). Its reply goes back to the broker,
which routes it to ``review`` (Trigger flagged-to-review).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from aiohttp import web

from eventferry_examples.service import (
    NotAnEvent,
    bad_request,
    data_of,
    event_response,
    make_app,
    read_event,
    serve_main,
)

FLAGGED_TYPE = "com.live.comment.flagged"
SOURCE = "/live/moderation"
DEFAULT_THRESHOLD = 0.8  # probability of toxic; friendly banter stays well under it, insults well over
MODERATION: web.AppKey[Moderation] = web.AppKey("moderation")

Scorer = Callable[[Sequence[str]], Sequence[float]]


def toxicity_model() -> Scorer:
    from profanity_check import predict_prob  # loads the shipped model on first import

    def score(texts: Sequence[str]) -> Sequence[float]:
        return [float(p) for p in predict_prob(list(texts))]

    return score


@dataclass
class Moderation:
    score: Scorer
    threshold: float = DEFAULT_THRESHOLD
    scored: int = 0
    flagged: int = 0

    async def handle(self, request: web.Request) -> web.Response:
        try:
            event = await read_event(request)
        except NotAnEvent as error:
            return bad_request(error)
        comment = data_of(event)
        text = str(comment.get("text", ""))
        # The model is CPU work (well under a millisecond a comment): off the event loop all the same.
        [toxicity] = await asyncio.to_thread(self.score, [text])
        self.scored += 1
        if toxicity < self.threshold:
            return web.Response(status=204)
        self.flagged += 1
        return event_response(FLAGGED_TYPE, SOURCE, {
            "room": comment.get("room"), "user": comment.get("user"), "text": text,
            "toxicity": round(toxicity, 3), "comment": event.get_id()})

    async def stats(self, request: web.Request) -> web.Response:
        return web.json_response({"scored": self.scored, "flagged": self.flagged, "threshold": self.threshold})


def build(moderation: Moderation | None = None) -> web.Application:
    moderation = moderation or Moderation(toxicity_model())
    app = make_app([web.post("/", moderation.handle), web.post("/comments", moderation.handle),
                    web.get("/stats", moderation.stats)])
    app[MODERATION] = moderation
    return app


if __name__ == "__main__":
    serve_main(build, __doc__ or "")

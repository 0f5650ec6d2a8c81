"""What a live stream sends, as a plan: which event, at what second. Pure and seeded, so tests can read it.

Several rooms send comments (some toxic), gifts and video frames (digit images; some are key frames of
high priority, which the Trigger frames-to-vision selects with CESQL). Two bursts, as live streams have:
a gift storm in one room, then a room that becomes popular (many more comments and key frames).
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from eventferry_examples.digits import digits

COMMENT = "com.live.comment"
FRAME = "com.live.video.frame"
GIFT_PREFIX = "com.live.gift."
GIFTS = {"rose": 1, "heart": 5, "lion": 50, "rocket": 100}  # kind -> value
GIFT_WEIGHTS = (60, 30, 8, 2)
ROOMS = tuple(f"room-{n}" for n in range(1, 7))
USERS = tuple(f"user-{n}" for n in range(1, 81))

FRIENDLY = (
    "hello from Lisbon!", "this song is great", "what a lovely stream, thanks!", "first time here, love it",
    "can you play that again?", "gg, well played", "the view behind you is beautiful", "good morning everyone",
    "haha that was funny", "which camera do you use?", "sending love from Osaka", "nice combo!",
)
TOXIC = (
    "you are a stupid idiot", "shut up, nobody cares about you", "this streamer is a pathetic loser",
    "go away you moron", "what a dumb ugly clown", "you suck, idiot",
)


@dataclass(frozen=True)
class Mix:
    """Events a second in a calm moment, split between the kinds (they add up to ``rate``)."""

    rate: float = 40.0
    comments: float = 0.5
    gifts: float = 0.2
    frames: float = 0.3
    toxic: float = 0.12  # share of comments that are insults
    keyframes: float = 0.4  # share of frames that are key frames
    high_priority: float = 0.6  # share of frames with priority 5 or more


@dataclass(frozen=True)
class Burst:
    name: str
    start: float  # seconds from the start of the stream
    length: float
    room: str
    factor: float  # how many times the calm rate of its kind(s)
    kinds: tuple[str, ...]


@dataclass(frozen=True)
class Planned:
    at: float
    type: str
    source: str
    data: dict[str, Any]
    extensions: dict[str, str] = field(default_factory=dict)

    @property
    def kind(self) -> str:
        """comment, gift, keyframe (one that frames-to-vision selects) or frame."""
        if self.type == COMMENT:
            return "comment"
        if self.type.startswith(GIFT_PREFIX):
            return "gift"
        selected = self.extensions.get("keyframe") == "true" and int(self.extensions.get("priority", "0")) >= 5
        return "keyframe" if selected else "frame"


def bursts(duration: float) -> list[Burst]:
    """A gift storm a quarter in, a room that becomes popular past the middle."""
    storm = min(8.0, max(2.0, duration * 0.15))
    popular = min(12.0, max(3.0, duration * 0.2))
    return [Burst("gift storm", duration * 0.25, storm, ROOMS[1], 8.0, ("gift",)),
            Burst("popular room", duration * 0.55, popular, ROOMS[2], 4.0, ("comment", "frame"))]


def plan(duration: float, mix: Mix | None = None, seed: int = 7, with_bursts: bool = True) -> list[Planned]:
    """Every event of ``duration`` seconds of stream, in time order (Poisson arrivals per kind and burst)."""
    mix = mix or Mix()
    rng = random.Random(seed)
    frame_numbers = itertools.count(1)
    events: list[Planned] = []
    calm = {"comment": mix.rate * mix.comments, "gift": mix.rate * mix.gifts, "frame": mix.rate * mix.frames}
    for kind, rate in calm.items():
        for at in _arrivals(rng, rate, 0.0, duration):
            events.append(_make(kind, at, rng.choice(ROOMS), rng, mix, frame_numbers))
    for burst in bursts(duration) if with_bursts else []:
        end = min(duration, burst.start + burst.length)
        for kind in burst.kinds:
            for at in _arrivals(rng, calm[kind] * (burst.factor - 1), burst.start, end):
                events.append(_make(kind, at, burst.room, rng, mix, frame_numbers, popular=True))
    events.sort(key=lambda event: event.at)
    return events


def _arrivals(rng: random.Random, rate: float, start: float, end: float) -> Iterator[float]:
    if rate <= 0:
        return
    at = start + rng.expovariate(rate)
    while at < end:
        yield at
        at += rng.expovariate(rate)


def _make(kind: str, at: float, room: str, rng: random.Random, mix: Mix, frame_numbers: Iterator[int],
          popular: bool = False) -> Planned:
    source = f"/live/rooms/{room}"
    if kind == "comment":
        text = rng.choice(TOXIC) if rng.random() < mix.toxic else rng.choice(FRIENDLY)
        return Planned(at, COMMENT, source, {"room": room, "user": _user(rng), "text": text})
    if kind == "gift":
        [gift] = rng.choices(list(GIFTS), weights=GIFT_WEIGHTS)
        return Planned(at, GIFT_PREFIX + gift, source,
                       {"room": room, "user": _user(rng), "kind": gift, "value": GIFTS[gift]})
    images = digits()
    index = rng.randrange(len(images.images))
    keyframe = popular or rng.random() < mix.keyframes
    priority = rng.randint(5, 9) if popular or rng.random() < mix.high_priority else rng.randint(1, 4)
    return Planned(at, FRAME, source,
                   {"room": room, "camera": "main", "frame": next(frame_numbers), "pixels": images.images[index],
                    "truth": images.labels[index]},
                   {"keyframe": "true" if keyframe else "false", "priority": str(priority)})


def _user(rng: random.Random) -> str:
    # A few fans send most: the leaderboard has a top.
    return USERS[min(len(USERS) - 1, int(rng.paretovariate(1.2)) - 1)]

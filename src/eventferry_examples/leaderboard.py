"""leaderboard: gift totals per room and per user (``com.live.gift.<kind>``, data ``room``, ``user``,
``value``), ``GET /leaderboard?top=N``.

Delivery is at least once: a gift delivered twice (a retry after a lost answer) is counted once, by
its event id among the last ``remember`` ids.
"""

from __future__ import annotations

import collections
from typing import Any

from aiohttp import web

from eventferry_examples.service import NotAnEvent, bad_request, data_of, make_app, read_event, serve_main

GIFT_PREFIX = "com.live.gift."
DEFAULT_TOP = 5
REMEMBERED_IDS = 100_000


class Leaderboard:
    def __init__(self, remember: int = REMEMBERED_IDS) -> None:
        self.rooms: collections.defaultdict[str, float] = collections.defaultdict(float)
        self.users: collections.defaultdict[str, float] = collections.defaultdict(float)
        self.kinds: collections.Counter[str] = collections.Counter()
        self.gifts = 0
        self.duplicates = 0
        self._seen: collections.OrderedDict[tuple[str, str], None] = collections.OrderedDict()
        self._remember = remember

    def add(self, event_key: tuple[str, str], kind: str, room: str, user: str, value: float) -> bool:
        """Counts one gift; False when this event was counted already."""
        if event_key in self._seen:
            self.duplicates += 1
            return False
        self._seen[event_key] = None
        if len(self._seen) > self._remember:
            self._seen.popitem(last=False)
        self.gifts += 1
        self.rooms[room] += value
        self.users[user] += value
        self.kinds[kind] += 1
        return True

    async def receive(self, request: web.Request) -> web.Response:
        try:
            event = await read_event(request)
        except NotAnEvent as error:
            return bad_request(error)
        if not event.get_type().startswith(GIFT_PREFIX):
            return web.json_response({"error": f"not a gift: {event.get_type()}"}, status=400)
        gift = data_of(event)
        try:
            value = float(gift["value"])
            room, user = str(gift["room"]), str(gift["user"])
        except (KeyError, TypeError, ValueError):
            return web.json_response({"error": "a gift needs room, user and a numeric value"}, status=400)
        self.add((event.get_source(), event.get_id()), event.get_type().removeprefix(GIFT_PREFIX), room, user, value)
        return web.Response(status=202)

    def top(self, count: int) -> dict[str, Any]:
        return {"gifts": self.gifts, "total": sum(self.rooms.values()), "duplicates": self.duplicates,
                "kinds": dict(self.kinds),
                "rooms": [{"room": room, "total": total} for room, total in _top(self.rooms, count)],
                "users": [{"user": user, "total": total} for user, total in _top(self.users, count)]}

    async def serve(self, request: web.Request) -> web.Response:
        try:
            count = max(1, min(100, int(request.query.get("top", DEFAULT_TOP))))
        except ValueError:
            return web.json_response({"error": "top must be a whole number"}, status=400)
        return web.json_response(self.top(count))


def _top(totals: dict[str, float], count: int) -> list[tuple[str, float]]:
    return sorted(totals.items(), key=lambda item: (-item[1], item[0]))[:count]


def build() -> web.Application:
    leaderboard = Leaderboard()
    return make_app([web.post("/", leaderboard.receive), web.get("/leaderboard", leaderboard.serve)])


if __name__ == "__main__":
    serve_main(build, __doc__ or "")

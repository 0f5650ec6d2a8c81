"""The example services in this process, each on a free loopback port, mapped to the Service refs of
the example's Triggers (as ``eventferry run --service NAME.NAMESPACE=URL`` maps them)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from aiohttp import web

from eventferry_examples import frames_dead_letter, leaderboard, moderation, review, vision_inference
from eventferry_examples.service import Served

NAMESPACE = "live"
BUILDERS: dict[str, Callable[[], web.Application]] = {
    "moderation": moderation.build,
    "review": review.build,
    "leaderboard": leaderboard.build,
    "vision-inference": vision_inference.build,
    "frames-dead-letter": frames_dead_letter.build,
}


@dataclass
class Services:
    served: dict[str, Served] = field(default_factory=dict)

    async def start(self, host: str = "127.0.0.1") -> Services:
        for name, build in BUILDERS.items():
            self.served[name] = await Served(build()).start(host)
        return self

    def url(self, name: str) -> str:
        return self.served[name].url

    def mapping(self) -> dict[tuple[str, str], str]:
        """(namespace, Service name) -> URL, as the embedded broker resolves Service refs."""
        return {(NAMESPACE, name): served.url for name, served in self.served.items()}

    async def stop(self) -> None:
        for served in self.served.values():
            await served.stop()

"""What the services say about themselves, read from their endpoints as a person would with curl."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from eventferry_examples.demo.services import Services

ENDPOINTS = {  # reading -> (service, path)
    "moderation": ("moderation", "/stats"),
    "flagged": ("review", "/flagged"),
    "leaderboard": ("leaderboard", "/leaderboard?top=3"),
    "vision": ("vision-inference", "/stats"),
    "dead_letters": ("frames-dead-letter", "/dead-letters"),
}


@dataclass
class Readings:
    values: dict[str, dict[str, Any]] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)

    def get(self, reading: str, key: str, default: Any = None) -> Any:
        return self.values.get(reading, {}).get(key, default)


async def read_services(session: aiohttp.ClientSession, services: Services) -> Readings:
    readings = Readings()

    async def one(reading: str, service: str, path: str) -> None:
        try:
            async with session.get(services.url(service) + path, timeout=aiohttp.ClientTimeout(total=2)) as response:
                response.raise_for_status()
                readings.values[reading] = await response.json()
        except (aiohttp.ClientError, TimeoutError) as error:
            readings.errors[reading] = str(error) or type(error).__name__

    await asyncio.gather(*(one(reading, service, path) for reading, (service, path) in ENDPOINTS.items()))
    return readings

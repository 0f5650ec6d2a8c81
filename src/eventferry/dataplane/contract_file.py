"""Following a contract file: load it, and apply it again whenever it changes."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from pathlib import Path

from pydantic import ValidationError

from eventferry.contract.model import Contract
from eventferry.dataplane.dataplane import DataPlane

log = logging.getLogger(__name__)


class ContractFile:
    def __init__(self, path: Path, dataplane: DataPlane) -> None:
        self.path = path
        self.dataplane = dataplane
        self._stamp: float | None = None

    async def load(self) -> bool:
        """Applies the file if it changed since the last load; False when it is missing or invalid."""
        try:
            stamp = self.path.stat().st_mtime
        except OSError as error:
            log.error("contract file %s cannot be read: %s", self.path, error)
            return False
        if stamp == self._stamp:
            return True
        self._stamp = stamp
        try:
            contract = Contract.from_json(self.path.read_bytes())
        except (OSError, ValidationError, ValueError) as error:
            log.error("contract file %s is invalid, keeping the loaded one: %s", self.path, error)
            return False
        await self.dataplane.apply(contract)
        return True

    async def follow(self, stop: asyncio.Event, interval: float = 1.0) -> None:
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), interval)
            if not stop.is_set():
                await self.load()

"""A ServiceAccount token from a file that the kubelet rotates (a projected ``serviceAccountToken`` volume).

Read again when the file changes, at most every few seconds, so a sender always presents the current
token without reading a file per request.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

log = logging.getLogger(__name__)

RECHECK_SECONDS = 5.0


class TokenFile:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._token: str | None = None
        self._mtime: float | None = None
        self._checked = float("-inf")

    def authorization(self) -> str | None:
        """``Bearer <token>``, or None while the file is missing or empty (the request then goes without,
        and a Broker that asks for a token answers 401, which says what is missing)."""
        now = time.monotonic()
        if now - self._checked >= RECHECK_SECONDS or self._token is None:
            self._checked = now
            self._read()
        return f"Bearer {self._token}" if self._token else None

    def _read(self) -> None:
        try:
            mtime = os.stat(self.path).st_mtime
            if mtime == self._mtime and self._token is not None:
                return
            token = self.path.read_text().strip()
        except OSError as error:
            if self._token is not None:
                log.warning("cannot read the token file %s again (%s): keeping the token read before",
                            self.path, error.strerror)
            return
        self._token, self._mtime = token or None, mtime

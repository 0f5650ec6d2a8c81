"""Structured log lines: one JSON object per line, with the fields a log call passes in ``extra``.

Calls read as ordinary logging (``log.warning("...", extra=fields(offset=3))``), so that the lines stay
readable under a plain formatter too, e.g. when ``eventferry run`` hosts an adapter.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any


def fields(**values: Any) -> dict[str, Any]:
    """``extra=`` for a log call: the structured fields of the line."""
    return {"fields": values}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds").replace(
                "+00:00", "Z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        extra = getattr(record, "fields", None)
        if isinstance(extra, dict):
            for key, value in extra.items():
                line.setdefault(key, value)
        if record.exc_info:
            line["error"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str, ensure_ascii=False)


def configure(level: str = "INFO", json_lines: bool = True) -> None:
    """Logging of an adapter process: JSON lines (or plain text) on stderr."""
    handler = logging.StreamHandler(sys.stderr)
    if json_lines:
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(getattr(logging, level.upper(), logging.INFO))
    # The clients are chatty below WARNING; their errors still show.
    logging.getLogger("aiokafka").setLevel(max(logging.WARNING, root.level))

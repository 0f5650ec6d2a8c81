"""The README's main command: ``eventferry demo`` runs the example services, the broker and the traffic,
and its summary accounts for every event each Trigger was sent."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
EVENTFERRY = str(Path(sys.executable).parent / "eventferry")
TRIGGERS = ("comments-to-moderation", "flagged-to-review", "frames-to-vision", "gifts-to-leaderboard")


def number(pattern: str, text: str) -> int:
    found = re.findall(pattern, text)
    assert found, f"no {pattern!r} in the output:\n{text}"
    return int(found[-1])  # the last view: the one at the end


def test_the_demo_moderates_ranks_classifies_and_loses_nothing() -> None:
    # 20 s: the popular room's burst (4 s of it) is long enough for some key frames to wait over 3 s.
    done = subprocess.run([EVENTFERRY, "demo", "--duration", "20", "--port", "0"], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    out = done.stdout
    assert done.returncode == 0, out + done.stderr
    assert "Traceback" not in done.stderr, done.stderr

    flagged = number(r"moderation: \d+ comments scored, (\d+) flagged", out)
    assert number(r"moderation: (\d+) comments scored", out) > 100 and flagged > 0
    assert number(r"review \(GET /flagged\): (\d+) flagged comments received", out) == flagged
    assert number(r"leaderboard \(GET /leaderboard\): (\d+) gifts", out) > 50
    assert re.search(r"top rooms: room-\d+ \d+", out), out
    assert number(r"vision-inference: (\d+) key frames classified", out) > 20
    dead_letters = number(r"frames-dead-letter \(GET /dead-letters\): (\d+) dead letters", out)
    # The popular room's key frames are more than vision takes: paced to what it takes (6 at once), they wait
    # in the broker instead of being refused (no busy answer, no retry); those that waited over 3 s are
    # answered 422, not retried, and are the dead letters, which say so.
    assert dead_letters > 0
    assert number(r"vision-inference: .*?, (\d+) stale,", out) == dead_letters
    assert number(r"vision-inference: .*?, (\d+) busy answers", out) == 0
    # The view's rows (EV/S SENT DELIVERED RETRIED DEAD-LET. DROPPED WAITING), not the summary's (no EV/S).
    views = re.findall(r"(?m)^frames-to-vision\s+\d+\.\d\s+\d+\s+\d+\s+(\d+)\s+\d+\s+\d+\s+(\d+)", out)
    assert max(int(waiting) for _retried, waiting in views) > 0, out  # a view during the burst shows it held
    assert int(views[-1][0]) == 0, out  # retried
    assert re.search(r"frames-dead-letter .*\(vision answered 422: stale frame: \d+\.\d+s old \(over 3s\)\)",
                     out), out

    summary = out[out.index("summary:"):]
    rows = {}
    for trigger in TRIGGERS:
        row = re.search(rf"^{trigger}\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+)\s+(-?\d+)$", summary, re.MULTILINE)
        assert row, summary
        rows[trigger] = [int(value) for value in row.groups()]
    for trigger, (sent, delivered, dead_lettered, dropped, unaccounted) in rows.items():
        assert sent > 0, trigger
        assert delivered + dead_lettered + dropped == sent and unaccounted == 0, (trigger, summary)
    assert rows["flagged-to-review"][0] == flagged
    assert rows["frames-to-vision"][2] == dead_letters
    assert "nothing lost" in summary

"""The live view's text: per Trigger figures from the broker, then what the services made of the events."""

from __future__ import annotations

import math
from dataclasses import dataclass

from eventferry_examples.demo.figures import Snapshot, TriggerFigures, quantile
from eventferry_examples.demo.readings import Readings
from eventferry_examples.traffic import Tally

# What each Trigger of examples/live-stream gets from the traffic (a kind of Planned), for "sent";
# flagged-to-review gets moderation's replies, counted by moderation.
TRIGGER_KIND = {"comments-to-moderation": "comment", "gifts-to-leaderboard": "gift", "frames-to-vision": "keyframe"}
FLAGGED_TRIGGER = "flagged-to-review"
REDRAW = "\x1b[H\x1b[2J"  # cursor home, clear screen
MAX_TEXT = 60


def sent_per_trigger(tally: Tally, readings: Readings) -> dict[str, int]:
    sent = {trigger: tally.taken[kind] for trigger, kind in TRIGGER_KIND.items()}
    sent[FLAGGED_TRIGGER] = int(readings.get("moderation", "flagged", 0))
    return sent


@dataclass
class Frame:
    title: str
    now: Snapshot
    second_ago: Snapshot
    window_start: Snapshot  # p99 over the deliveries that ended since then
    tally: Tally
    readings: Readings


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"


def _latency(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if math.isinf(seconds):
        return ">30s"
    return f"<={seconds * 1000:.0f}ms" if seconds < 1 else f"<={seconds:g}s"


def render(frame: Frame) -> list[str]:
    sent = sent_per_trigger(frame.tally, frame.readings)
    elapsed = max(1e-6, frame.now.at - frame.second_ago.at)
    lines = [frame.title,
             f"traffic taken (by the broker, or the queues with --with-queues): {frame.tally.total()}"
             f" ({_kinds(frame.tally)})"
             + (f"; refused {sum(frame.tally.refused.values())}" if frame.tally.refused else "")
             + (f"; not sent {sum(frame.tally.not_sent.values())}" if frame.tally.not_sent else ""),
             "",
             f"{'TRIGGER':<24}{'EV/S':>7}{'SENT':>7}{'DELIVERED':>11}{'RETRIED':>9}{'DEAD-LET.':>11}{'DROPPED':>9}"
             f"{'WAITING':>9}{'P99 (5S)':>11}"]
    for name in sorted(set(frame.now.triggers) | set(sent)):
        now = frame.now.triggers.get(name, TriggerFigures())
        before = frame.second_ago.triggers.get(name, TriggerFigures())
        start = frame.window_start.triggers.get(name, TriggerFigures())
        rate = (now.ended - before.ended) / elapsed
        lines.append(f"{name:<24}{rate:>7.1f}{sent.get(name, 0):>7}{now.delivered:>11.0f}{now.retried:>9.0f}"
                     f"{now.dead_lettered:>11.0f}{now.failed:>9.0f}{_number(now.waiting):>9}"
                     f"{_latency(quantile(now.latency_buckets, start.latency_buckets)):>11}")
    lines += ["", *services_lines(frame.readings)]
    return lines


def _kinds(tally: Tally) -> str:
    return ", ".join(f"{kind} {count}" for kind, count in sorted(tally.taken.items()))


def services_lines(readings: Readings, flagged_shown: int = 3) -> list[str]:
    lines = []
    scored, flagged = readings.get("moderation", "scored", 0), readings.get("moderation", "flagged", 0)
    lines.append(f"moderation: {scored} comments scored, {flagged} flagged")
    review = readings.values.get("flagged", {})
    lines.append(f"review (GET /flagged): {review.get('count', 0)} flagged comments received; the last ones:")
    for item in review.get("recent", [])[:flagged_shown]:
        data = item.get("data", {})
        text = str(data.get("text", ""))[:MAX_TEXT]
        lines.append(f"  [{data.get('room')}] {data.get('user')}: \"{text}\" (toxicity {data.get('toxicity')})")
    board = readings.values.get("leaderboard", {})
    rooms = ", ".join(f"{r['room']} {r['total']:.0f}" for r in board.get("rooms", []))
    users = ", ".join(f"{u['user']} {u['total']:.0f}" for u in board.get("users", []))
    lines.append(f"leaderboard (GET /leaderboard): {board.get('gifts', 0)} gifts worth {board.get('total', 0):.0f}")
    lines.append(f"  top rooms: {rooms or '-'}; top fans: {users or '-'}")
    vision = readings.values.get("vision", {})
    accuracy = vision.get("accuracy")
    lines.append(f"vision-inference: {vision.get('classified', 0)} key frames classified"
                 f"{f' ({accuracy:.0%} right)' if accuracy is not None else ''}, {vision.get('stale', 0)} stale, "
                 f"{vision.get('busy', 0)} busy answers, {vision.get('in_progress', 0)} in progress, "
                 f"{vision.get('waiting', 0)} queued")
    dead = readings.values.get("dead_letters", {})
    last = (dead.get("recent") or [{}])[0]
    why = f": {str(last['error']).strip()[:MAX_TEXT]}" if last.get("error") else ""  # e.g. "stale frame: 3.4s old"
    last_text = (f"; last: frame {last.get('data', {}).get('frame')} of {last.get('data', {}).get('room')}"
                 f" (vision answered {last.get('knativeerrorcode', '?')}{why})") if dead.get("count") else ""
    lines.append(f"frames-dead-letter (GET /dead-letters): {dead.get('count', 0)} dead letters" + last_text)
    for reading, error in sorted(readings.errors.items()):
        lines.append(f"! cannot read {reading}: {error}")
    return lines

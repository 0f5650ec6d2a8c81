"""``eventferry send URL --type T --source S``: send CloudEvents by hand and print the answers."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
import uuid
from typing import Any


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("send", help="send one CloudEvent (or many, at a rate) and print the answer")
    parser.add_argument("url", help="e.g. http://127.0.0.1:8080/default/my-broker")
    parser.add_argument("--type", required=True, dest="event_type")
    parser.add_argument("--source", required=True)
    parser.add_argument("--id", default=None, help="default: a new UUID per event")
    parser.add_argument("--subject", default=None)
    parser.add_argument("--data", default=None, help="the data; JSON is sent as application/json")
    parser.add_argument("--content-type", default=None, help="datacontenttype (default: JSON if --data parses)")
    parser.add_argument("--ext", action="append", default=[], metavar="NAME=VALUE", help="extension attribute")
    parser.add_argument("--structured", action="store_true", help="structured mode instead of binary")
    parser.add_argument("--count", type=int, default=1)
    parser.add_argument("--rate", type=float, default=0, help="events per second (0: as fast as answers come)")
    parser.add_argument("--timeout", type=float, default=10)


def run(args: argparse.Namespace) -> int:
    try:
        return asyncio.run(_send(args))
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


def _build(args: argparse.Namespace, number: int) -> Any:
    from eventferry.events import CloudEvent

    attributes: dict[str, str | int | bool] = {"specversion": "1.0", "type": args.event_type,
                                               "source": args.source, "id": args.id or str(uuid.uuid4())}
    if args.id and args.count > 1:
        attributes["id"] = f"{args.id}-{number}"
    if args.subject:
        attributes["subject"] = args.subject
    for item in args.ext:
        name, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"--ext {item!r}: expected NAME=VALUE")
        attributes[name] = value
    data = None
    if args.data is not None:
        data = args.data.encode()
        content_type = args.content_type
        if content_type is None:
            try:
                json.loads(args.data)
                content_type = "application/json"
            except ValueError:
                content_type = "text/plain"
        attributes["datacontenttype"] = content_type
    return CloudEvent(attributes, data).validate()


async def _send(args: argparse.Namespace) -> int:
    import aiohttp

    from eventferry.events.http import to_binary, to_structured

    failures = 0
    interval = 1 / args.rate if args.rate > 0 else 0
    started = time.monotonic()
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=args.timeout)) as session:
        for number in range(args.count):
            event = _build(args, number)
            headers, body = to_structured(event) if args.structured else to_binary(event)
            try:
                async with session.post(args.url, data=body, headers=headers) as response:
                    text = (await response.text()).strip()
                    ok = 200 <= response.status <= 299
                    if args.count == 1 or not ok:
                        print(f"{response.status} {response.reason} id={event.id}" + (f": {text}" if text else ""))
            except (aiohttp.ClientError, TimeoutError) as error:
                ok = False
                print(f"error: id={event.id}: {type(error).__name__}: {error} (is the broker running at {args.url}?)")
            failures += 0 if ok else 1
            if interval:
                await asyncio.sleep(max(0.0, started + (number + 1) * interval - time.monotonic()))
    if args.count > 1:
        elapsed = time.monotonic() - started
        print(f"sent {args.count} events in {elapsed:.2f}s ({args.count / elapsed:.0f}/s), {failures} not accepted")
    return 0 if failures == 0 else 1

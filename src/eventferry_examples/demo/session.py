"""``eventferry demo``: the example services, the embedded broker on examples/live-stream (the same
``local_broker`` as ``eventferry run``), and the traffic of a live stream, with a live view; then a summary
of what each Trigger was sent and how each delivery ended."""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

import aiohttp

from eventferry.dataplane.dataplane import DataPlaneSettings
from eventferry.embedded.local import local_broker
from eventferry.embedded.runtime import Embedded
from eventferry_examples.demo import figures
from eventferry_examples.demo.readings import Readings, read_services
from eventferry_examples.demo.services import Services
from eventferry_examples.demo.view import REDRAW, Frame, render, sent_per_trigger
from eventferry_examples.stream import Mix, bursts, plan
from eventferry_examples.traffic import Sink, Tally, play

NAMESPACE, BROKER = "live", "live-stream"
PLAIN_INTERVAL = 5.0  # seconds between views when the output is not a terminal
DRAIN_TIMEOUT = 30.0
HISTORY = 6  # snapshots kept: one a second, for events/s and the 5 s latency window

# Makes the traffic's sink once the broker's URL is known.
SinkFactory = Callable[[str], Awaitable[Sink]]


@dataclass
class DemoOptions:
    manifests: list[Path]
    duration: float = 60.0
    rate: float = Mix.rate
    host: str = "127.0.0.1"
    port: int = 8080
    seed: int = 7
    sources: Path | None = None  # examples/live-stream-sources, for --with-queues
    with_queues: bool = False
    interval: float = 1.0


@dataclass
class Outcome:
    sent: dict[str, int]
    triggers: dict[str, figures.TriggerFigures]
    readings: Readings

    def unaccounted(self) -> dict[str, int]:
        """Per Trigger: sent minus the deliveries that ended (delivered, dead-lettered or counted as dropped)."""
        return {name: count - int(self.triggers.get(name, figures.TriggerFigures()).ended)
                for name, count in self.sent.items()}


class Demo:
    def __init__(self, options: DemoOptions, out: TextIO = sys.stdout) -> None:
        self.options = options
        self.out = out
        self.tty = out.isatty()
        self.tally = Tally()
        self.history: list[figures.Snapshot] = []
        self.readings = Readings()
        self.started = time.monotonic()

    async def run(self, stop: asyncio.Event) -> Outcome:
        services = await Services().start()
        try:
            async with self._queues() as (paths, sink_factory), local_broker(
                    [*self.options.manifests, *paths], self.options.host, self.options.port, services.mapping(),
                    DataPlaneSettings(kafka_bootstrap_servers=None)) as embedded:
                broker_url = f"{embedded.base_url()}/{NAMESPACE}/{BROKER}"
                self.say(f"broker: {broker_url}; services: "
                         + ", ".join(f"{name} {served.url}" for name, served in services.served.items()))
                sink = await sink_factory(broker_url)
                try:
                    return await self._stream(embedded, services, sink, stop)
                finally:
                    await sink.close()
        finally:
            await services.stop()

    @contextlib.asynccontextmanager
    async def _queues(self) -> AsyncIterator[tuple[list[Path], SinkFactory]]:
        if not self.options.with_queues:
            yield [], http_sink
            return
        from eventferry_examples.demo.queues import queues

        if self.options.sources is None:
            raise QueuesUnavailable("no examples/live-stream-sources beside the example's manifests")
        async with queues(self.options.sources, self.say) as (paths, factory):
            yield paths, factory

    async def _stream(self, embedded: Embedded, services: Services, sink: Sink, stop: asyncio.Event) -> Outcome:
        events = plan(self.options.duration, Mix(rate=self.options.rate), seed=self.options.seed)
        self.started = time.monotonic()
        traffic = asyncio.create_task(play(events, sink, stop, tally=self.tally))
        async with aiohttp.ClientSession() as session:
            last_shown = 0.0
            while not traffic.done():
                await self._observe(embedded, services, session)
                if self.tty or time.monotonic() - last_shown >= PLAIN_INTERVAL:
                    self.show("streaming")
                    last_shown = time.monotonic()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.shield(traffic), self.options.interval)
            await traffic
            outcome = await self._drain(embedded, services, session, stop)
        self.show("done", final=True)
        return outcome

    async def _drain(self, embedded: Embedded, services: Services, session: aiohttp.ClientSession,
                     stop: asyncio.Event) -> Outcome:
        """Waits until every Trigger's deliveries ended (or DRAIN_TIMEOUT): nothing is left in the broker."""
        deadline = time.monotonic() + DRAIN_TIMEOUT
        while True:
            await self._observe(embedded, services, session)
            outcome = Outcome(sent_per_trigger(self.tally, self.readings), self.history[-1].triggers, self.readings)
            if not any(outcome.unaccounted().values()) or time.monotonic() > deadline:
                return outcome
            if self.tty:
                self.show("draining")
            await asyncio.sleep(self.options.interval)

    async def _observe(self, embedded: Embedded, services: Services, session: aiohttp.ClientSession) -> None:
        registry = embedded.server.dataplane.metrics.registry
        self.history.append(figures.read(registry, NAMESPACE, BROKER, time.monotonic()))
        del self.history[:-HISTORY]
        self.readings = await read_services(session, services)

    def show(self, phase: str, final: bool = False) -> None:
        if not self.history:
            return
        elapsed = time.monotonic() - self.started
        happening = [b.name + " in " + b.room for b in bursts(self.options.duration)
                     if b.start <= elapsed < b.start + b.length and phase == "streaming"]
        title = (f"eventferry demo: {NAMESPACE}/{BROKER}, {phase} {min(elapsed, self.options.duration):.0f}s"
                 f" of {self.options.duration:.0f}s" + (f"  [{', '.join(happening)}]" if happening else ""))
        lines = render(Frame(title, self.history[-1], self.history[-2] if len(self.history) > 1 else self.history[0],
                             self.history[0], self.tally, self.readings))
        if self.tty:  # the final view too: the screen ends with it, then the summary
            self.out.write(REDRAW + "\n".join(lines) + "\n" + ("\n" if final else ""))
        else:
            self.out.write("\n".join(lines) + "\n\n")
        self.out.flush()

    def say(self, line: str) -> None:
        self.out.write(line + "\n")
        self.out.flush()


async def http_sink(broker_url: str) -> Sink:
    from eventferry_examples.sinks import HttpSink

    return HttpSink(broker_url)


def summary(outcome: Outcome) -> list[str]:
    lines = ["summary:",
             f"{'TRIGGER':<24}{'SENT':>7}{'DELIVERED':>11}{'DEAD-LET.':>11}{'DROPPED':>9}{'UNACCOUNTED':>13}"]
    unaccounted = outcome.unaccounted()
    for name, sent in sorted(outcome.sent.items()):
        got = outcome.triggers.get(name, figures.TriggerFigures())
        lines.append(f"{name:<24}{sent:>7}{got.delivered:>11.0f}{got.dead_lettered:>11.0f}{got.failed:>9.0f}"
                     f"{unaccounted[name]:>13}")
    if any(unaccounted.values()):
        lines.append("some events are unaccounted for: still in the broker when the demo stopped")
    else:
        lines.append("nothing lost: for every Trigger, delivered + dead-lettered + dropped (counted) = sent")
    return lines


async def run_demo(options: DemoOptions, out: TextIO = sys.stdout) -> int:
    """The command's body: 0 once the summary is printed, 2 when the manifests do not load, 1 when the
    broker cannot listen or the queues do not start."""
    from eventferry.dataplane.server import stop_on_signals
    from eventferry.embedded.local import CannotListen
    from eventferry.embedded.manifests import ManifestError

    stop = asyncio.Event()
    stop_on_signals(stop)
    demo = Demo(options, out)
    try:
        outcome = await demo.run(stop)
    except ManifestError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except (CannotListen, QueuesUnavailable) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    out.write("\n".join(summary(outcome)) + "\n")
    out.flush()
    return 0


class QueuesUnavailable(Exception):
    """Kafka and RocketMQ could not be started for --with-queues; the message says why."""

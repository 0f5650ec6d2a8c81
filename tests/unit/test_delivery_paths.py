"""The stateful delivery decisions, without a network: ``deliver``'s loop and InMemory admission.

The sender is scripted here; the same paths run against real HTTP servers in
tests/integration/test_broker_delivery.py and tests/faults/test_subscriber_faults.py.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from eventferry.contract import model
from eventferry.dataplane.admission import Overloaded
from eventferry.dataplane.memory import InMemoryBroker, MemoryLimits
from eventferry.dataplane.metrics import BrokerMetrics
from eventferry.delivery import Outcome, deliver
from eventferry.delivery.sender import Attempt, Sender
from eventferry.events import CloudEvent

pytestmark = pytest.mark.unit


class ScriptedSender(Sender):
    """Answers each send with the next scripted attempt (by URL); records what was sent where."""

    def __init__(self, script: Callable[[str, CloudEvent, int], Attempt]) -> None:
        super().__init__()
        self.script = script
        self.sent: list[tuple[str, CloudEvent]] = []
        self.gate: asyncio.Event | None = None  # when set, sends wait for it

    async def send(self, url: str, event: CloudEvent, *, timeout: float, structured: bool = False,
                   headers: dict[str, str] | None = None) -> Attempt:
        if self.gate is not None:
            await self.gate.wait()
        self.sent.append((url, event))
        return self.script(url, event, sum(1 for u, _ in self.sent if u == url))


def event(event_id: str = "e1", type_: str = "t") -> CloudEvent:
    return CloudEvent({"specversion": "1.0", "id": event_id, "source": "/s", "type": type_}, b"x")


async def no_wait(seconds: float) -> None:
    return None


async def test_a_bad_reply_fails_the_attempt_as_502_and_the_dead_letter_counts_every_attempt() -> None:
    bad_reply = Attempt(200, b"", {"ce-specversion": "1.0", "ce-type": "x"})  # lacks id and source
    sender = ScriptedSender(lambda url, e, n: Attempt(202) if url == "http://dls/" else bad_reply)
    delivery = model.Delivery(retry=2, deadLetterSink="http://dls/")
    result = await deliver(sender, event(), "http://sub/", delivery, pause=no_wait)
    assert result.outcome is Outcome.DEAD_LETTERED
    assert result.attempts == 4  # three at the subscriber (1 + 2 retries), one at the dead-letter sink
    assert result.last.status == 502 and "reply not accepted" in (result.last.error or "")
    url, dead = sender.sent[-1]
    assert url == "http://dls/" and dead.attributes["knativeerrorcode"] == "502"


async def test_a_failing_dead_letter_sink_drops_or_is_kept_as_the_path_says() -> None:
    sender = ScriptedSender(lambda url, e, n: Attempt(503) if url == "http://dls/" and n <= 4 else Attempt(500))
    delivery = model.Delivery(retry=1, deadLetterSink="http://dls/")
    dropped = await deliver(sender, event(), "http://sub/", delivery, pause=no_wait)
    assert dropped.outcome is Outcome.FAILED and dropped.attempts == 4  # 2 at the subscriber, 2 at the sink
    sender.sent.clear()
    sender.script = lambda url, e, n: Attempt(503) if url == "http://dls/" and n <= 4 else (
        Attempt(202) if url == "http://dls/" else Attempt(500))
    kept = await deliver(sender, event(), "http://sub/", delivery, pause=no_wait, exhausted="keep-dead-letters")
    assert kept.outcome is Outcome.DEAD_LETTERED
    assert [u for u, _ in sender.sent].count("http://dls/") == 5  # tried past its policy until it took it


async def test_a_pause_that_raises_abandons_the_delivery() -> None:
    sender = ScriptedSender(lambda url, e, n: Attempt(503))

    async def stopping(seconds: float) -> None:
        raise asyncio.CancelledError

    with pytest.raises(asyncio.CancelledError):
        await deliver(sender, event(), "http://sub/", model.Delivery(retry=5), pause=stopping)
    assert len(sender.sent) == 1


def broker_with(triggers: list[model.Trigger]) -> model.Broker:
    return model.Broker(namespace="ns", name="b", triggers=triggers)


async def test_inmemory_admission_is_all_or_nothing_per_request() -> None:
    sender = ScriptedSender(lambda url, e, n: Attempt(202))
    sender.gate = asyncio.Event()  # nothing is delivered until the test opens the gate
    spec = broker_with([model.Trigger(namespace="ns", name="a", subscriber="http://a/", attributes={"type": "t"}),
                        model.Trigger(namespace="ns", name="b", subscriber="http://b/", attributes={"type": "u"})])
    broker = InMemoryBroker(spec, sender, BrokerMetrics(), MemoryLimits(queue_per_trigger=2, in_flight_per_trigger=1))
    await broker.ingest([event("1"), event("2")])  # trigger a: one in flight, one waiting
    await broker.ingest([event("3")])  # a: one in flight, two waiting: full
    with pytest.raises(Overloaded):
        await broker.ingest([event("4", "u"), event("5")])  # b has room, a has none: neither is stored
    assert broker.pending() == 3
    await broker.ingest([event("6", "u")])  # b alone has room
    assert broker.pending() == 4
    sender.gate.set()
    assert await broker.drain(5)
    assert sorted(e.id for _, e in sender.sent) == ["1", "2", "3", "6"]
    await broker.stop()

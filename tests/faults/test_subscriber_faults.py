"""A subscriber that is down, then slow and flapping, with its dead-letter sink down too: every accepted event
ends delivered or dead-lettered, for the InMemory and the Kafka class; none is dropped."""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from pathlib import Path

import aiohttp
import pytest

from eventferry.dataplane.dataplane import DataPlaneSettings
from tests.env.ports import free_port
from tests.env.servers import Kafka
from tests.faults.support import SenderReport, send_at_least_once
from tests.support import manifests
from tests.support.broker import start_broker
from tests.support.subscriber import Answer, Received, Subscriber, Subscribers

pytestmark = pytest.mark.faults

KEYS, PER_KEY, RATE = 10, 200, 100.0  # 2,000 events over 20 s
DOWN_UNTIL = 4.0  # the subscriber listens from here on (connections refused before)
FLAP_UNTIL = 14.0  # then alternates between failing and working every second, and is slow one time in ten
DLS_DOWN_UNTIL = 10.0  # the dead-letter sink answers 503 until here (shorter than its retry budget of 7.5 s
# after the first events that exhaust theirs, so none is lost; a longer outage would drop, counted)


def broker_manifests(name: str, broker_class: str, kafka: Kafka | None, subscriber: str, dls: str) -> str:
    delivery = ('{retry: 5, backoffPolicy: linear, backoffDelay: PT0.5S, timeout: PT1S, '
                f'deadLetterSink: {{uri: "{dls}/dls"}}}}')
    return manifests.broker(name, broker_class, kafka.bootstrap if kafka else None, partitions=2) \
        + manifests.trigger("fragile", name, f"{subscriber}/s", delivery)


@pytest.mark.timeout(300)
@pytest.mark.parametrize("broker_class", ["InMemory", "Kafka"])
async def test_every_event_ends_delivered_or_dead_lettered(broker_class: str, request: pytest.FixtureRequest,
                                                           tmp_path: Path, subscribers: Subscribers) -> None:
    kafka = request.getfixturevalue("kafka") if broker_class == "Kafka" else None
    began = time.monotonic()
    chance = random.Random(3)

    def subscriber_script(received: Received, count: int) -> Answer:
        elapsed = time.monotonic() - began
        if received.event.id.endswith("7"):
            return Answer(503)  # one event in ten this subscriber never takes: it ends in the dead-letter sink
        if elapsed < FLAP_UNTIL:
            if int(elapsed) % 2 == 0:
                return Answer(503)
            if chance.random() < 0.1:
                return Answer(200, delay=1.5)  # past the 1 s timeout: a failed attempt, though it arrives
        return Answer(200)

    def dls_script(received: Received, count: int) -> Answer:
        return Answer(503) if time.monotonic() - began < DLS_DOWN_UNTIL else Answer(200)

    subscriber_port = free_port()
    dls = await subscribers(dls_script)
    settings = DataPlaneSettings(kafka_bootstrap_servers=[kafka.bootstrap] if kafka else None)
    name = f"faults-{uuid.uuid4().hex[:6]}"
    subscriber_url = f"http://127.0.0.1:{subscriber_port}"
    running = await start_broker(tmp_path, broker_manifests(name, broker_class, kafka, subscriber_url,
                                                            dls.url), settings=settings)
    report = SenderReport()
    try:
        async def start_subscriber_later() -> Subscriber:
            await asyncio.sleep(DOWN_UNTIL)
            return await subscribers(subscriber_script, port=subscriber_port)

        late = asyncio.create_task(start_subscriber_later())
        await send_at_least_once(running.url("default", name), KEYS, PER_KEY, RATE, report)
        subscriber = await late
        accepted = set(report.accepted)
        assert len(accepted) == KEYS * PER_KEY

        def ended() -> set[str]:
            return {r.event.id for r in subscriber.received if r.path == "/s"} | \
                   {r.event.id for r in dls.received if r.path == "/dls"}

        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not accepted <= ended():
            await asyncio.sleep(0.5)
        async with aiohttp.ClientSession() as session, session.get(f"{running.base_url}/metrics") as response:
            metrics = await response.text()
    finally:
        await running.stop()
    delivered = {r.event.id for r in subscriber.received}
    dead = {r.event.id for r in dls.received}
    missing = accepted - delivered - dead
    print(f"\n{broker_class}: {len(accepted)} accepted, {len(delivered & accepted)} delivered, "
          f"{len(dead - delivered)} dead-lettered only, {len(missing)} neither; sender answers: {report.summary()}")
    assert not missing, f"{len(missing)} accepted events neither delivered nor dead-lettered: {sorted(missing)[:5]}"
    assert dead, "the flapping phase should have sent some events to the dead-letter sink"
    dropped = [line for line in metrics.splitlines()
               if line.startswith("eventferry_broker_events_dropped_total") and not line.endswith(" 0.0")]
    assert not dropped, dropped

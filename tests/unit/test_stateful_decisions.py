"""Stateful decisions reached otherwise only through real servers: the consume loop's flow control and
re-reads, and the expiry of another operator's Lease. The Kafka consumer here is a stand-in; the loop
runs against the real Kafka in tests/integration/test_broker_kafka.py, test_kafka_adapter.py and
tests/faults/."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import pytest
from aiokafka import TopicPartition

from eventferry.controller import leader
from eventferry.controller.leader import LeaseElector
from eventferry.kafka.consumer import ConsumerLoop, LoopLimits

pytestmark = pytest.mark.unit

P0, P1 = TopicPartition("t", 0), TopicPartition("t", 1)


@dataclass
class Record:
    topic: str
    partition: int
    offset: int


class StandInConsumer:
    def __init__(self) -> None:
        self.paused: set[TopicPartition] = set()

    def assignment(self) -> set[TopicPartition]:
        return {P0, P1}

    def pause(self, *partitions: TopicPartition) -> None:
        self.paused.update(partitions)

    def resume(self, *partitions: TopicPartition) -> None:
        self.paused.difference_update(partitions)


async def test_flow_control_pauses_a_full_partition_and_then_all_and_resumes_at_half() -> None:
    gate = asyncio.Event()

    async def handle(record: Any) -> bool:
        await gate.wait()
        return True

    loop = ConsumerLoop("test", handle, asyncio.Event(), ordered=False,
                        limits=LoopLimits(max_in_flight=6, max_in_flight_per_partition=4))
    consumer = StandInConsumer()
    loop.consumer = consumer  # type: ignore[assignment]
    for offset in range(4):
        loop._dispatch(P0, Record("t", 0, offset))
    loop._flow_control()
    assert consumer.paused == {P0}  # P0 holds its four; P1 still has room
    for offset in range(2):
        loop._dispatch(P1, Record("t", 1, offset))
    loop._flow_control()
    assert consumer.paused == {P0, P1}  # six in flight: the whole loop is full
    gate.set()
    await asyncio.sleep(0.01)
    loop._flow_control()
    assert consumer.paused == set() and loop.tracker.total_in_flight == 0
    assert loop.tracker.commits() == {P0: 4, P1: 2}


async def test_a_record_read_again_is_not_handled_twice_and_a_revoked_partition_counts_nothing() -> None:
    handled: list[int] = []

    async def handle(record: Any) -> bool:
        handled.append(record.offset)
        return True

    loop = ConsumerLoop("test", handle, asyncio.Event(), ordered=True)
    loop.consumer = StandInConsumer()  # type: ignore[assignment]
    for offset in (0, 1, 2, 1, 2):  # the position moved back after 2: offsets 1 and 2 come again
        loop._dispatch(P0, Record("t", 0, offset))
    await asyncio.sleep(0.01)
    assert handled == [0, 1, 2]
    loop._forget(P0)  # revoked: what is read next starts afresh, nothing left to commit here
    assert loop.tracker.commits() == {} and loop.tracker.total_in_flight == 0


def test_another_operators_lease_expires_only_after_its_duration_without_renewal(monkeypatch: pytest.MonkeyPatch
                                                                                 ) -> None:
    clock = [1000.0]
    monkeypatch.setattr(leader.time, "monotonic", lambda: clock[0])
    elector = LeaseElector(None, "ns", "lease", "me", duration=15)  # type: ignore[arg-type]
    lease = {"metadata": {"resourceVersion": "7"}, "spec": {"leaseDurationSeconds": 10, "holderIdentity": "other"}}
    assert not elector._expired(lease)  # first seen now
    clock[0] += 9.9
    assert not elector._expired(lease)
    renewed = {"metadata": {"resourceVersion": "8"}, "spec": dict(lease["spec"])}
    clock[0] += 5
    assert not elector._expired(renewed)  # a renewal (new resourceVersion) starts the wait again
    clock[0] += 10
    assert elector._expired(renewed)  # its own duration (10 s) passed without a renewal

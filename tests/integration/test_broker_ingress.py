"""The broker ingress against real HTTP: the status codes, reasons and stamps of design section 4."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from tests.support.broker import RunningBroker, start_broker
from tests.support.subscriber import Subscriber

pytestmark = pytest.mark.integration

MANIFESTS = """
apiVersion: eventferry.dev/v1alpha1
kind: Broker
metadata: {{name: default}}
---
apiVersion: eventferry.dev/v1alpha1
kind: Trigger
metadata: {{name: all-events}}
spec:
  broker: default
  subscriber: {{uri: "{url}/all"}}
"""

BINARY = {"ce-specversion": "1.0", "ce-id": "e1", "ce-source": "/test", "ce-type": "com.example.a",
          "content-type": "application/json"}


@pytest.fixture
async def broker(tmp_path: Path, subscriber: Subscriber) -> AsyncIterator[RunningBroker]:
    from eventferry.dataplane.dataplane import DataPlaneSettings

    running = await start_broker(tmp_path, MANIFESTS.format(url=subscriber.url),
                                 settings=DataPlaneSettings(max_event_bytes=64 * 1024))
    yield running
    await running.stop()


async def post(url: str, headers: dict[str, str], body: bytes = b"", method: str = "POST") -> tuple[int, str, dict]:
    async with aiohttp.ClientSession() as session, session.request(method, url, headers=headers, data=body) as resp:
        return resp.status, await resp.text(), dict(resp.headers)


async def test_binary_event_is_accepted_and_delivered_unchanged(broker: RunningBroker, subscriber: Subscriber) -> None:
    headers = dict(BINARY, **{"ce-myext": "hello world", "traceparent": "00-" + "a" * 32 + "-" + "b" * 16 + "-01"})
    status, _, _ = await post(broker.url(), headers, b'{"x": 1}')
    assert status == 202
    [got] = await subscriber.wait_for(1)
    assert got.event.data == b'{"x": 1}'
    assert got.event.attributes["myext"] == "hello world"
    assert got.event.datacontenttype == "application/json"
    assert "knativearrivaltime" in got.event.attributes
    assert "knativebrokerttl" not in got.event.attributes  # the TTL stays inside the broker
    assert got.headers["prefer"] == "reply"
    assert got.headers["kn-namespace"] == "default"
    assert got.headers["traceparent"] == headers["traceparent"]


async def test_structured_event_is_accepted(broker: RunningBroker, subscriber: Subscriber) -> None:
    event = {"specversion": "1.0", "id": "s1", "source": "/test", "type": "com.example.s", "myint": 7,
             "datacontenttype": "application/json", "data": {"comment": "nice stream"}}
    status, _, _ = await post(broker.url(), {"content-type": "application/cloudevents+json"},
                              json.dumps(event).encode())
    assert status == 202
    [got] = await subscriber.wait_for(1)
    assert json.loads(got.event.data or b"") == {"comment": "nice stream"}
    assert got.event.attributes["myint"] in (7, "7")


async def test_batch_of_events_is_accepted(broker: RunningBroker, subscriber: Subscriber) -> None:
    batch = [{"specversion": "1.0", "id": f"b{i}", "source": "/test", "type": "com.example.b"} for i in range(3)]
    status, _, _ = await post(broker.url(), {"content-type": "application/cloudevents-batch+json"},
                              json.dumps(batch).encode())
    assert status == 202
    got = await subscriber.wait_for(3)
    assert sorted(r.event.id for r in got) == ["b0", "b1", "b2"]


@pytest.mark.parametrize("missing", ["ce-id", "ce-source", "ce-type", "ce-specversion"])
async def test_event_missing_a_required_attribute_is_refused_with_a_reason(broker: RunningBroker,
                                                                        missing: str) -> None:
    headers = {k: v for k, v in BINARY.items() if k != missing}
    status, text, _ = await post(broker.url(), headers, b"{}")
    assert status == 400
    assert ("missing required attribute" in text and missing[3:] in text) or "not a CloudEvent" in text


async def test_unknown_specversion_is_refused(broker: RunningBroker) -> None:
    status, text, _ = await post(broker.url(), dict(BINARY, **{"ce-specversion": "2.0"}), b"{}")
    assert status == 400
    assert "specversion" in text


async def test_unparsable_structured_body_is_refused(broker: RunningBroker) -> None:
    status, text, _ = await post(broker.url(), {"content-type": "application/cloudevents+json"}, b"{not json")
    assert status == 400
    assert "not valid JSON" in text


async def test_unknown_broker_is_404(broker: RunningBroker) -> None:
    status, text, _ = await post(broker.url("default", "nope"), BINARY, b"{}")
    assert status == 404
    assert "default/nope" in text


async def test_methods_other_than_post(broker: RunningBroker) -> None:
    status, _, headers = await post(broker.url(), {}, method="GET")
    assert status == 405
    assert headers["Allow"] == "POST, OPTIONS"
    status, _, headers = await post(broker.url(), {}, method="OPTIONS")
    assert status == 200
    assert headers["Allow"] == "POST, OPTIONS"
    assert headers["WebHook-Allowed-Origin"] == "*"
    assert headers["WebHook-Allowed-Rate"] == "*"


async def test_oversized_body_is_413_and_the_broker_keeps_serving(broker: RunningBroker,
                                                                 subscriber: Subscriber) -> None:
    status, text, _ = await post(broker.url(), BINARY, b"x" * (64 * 1024 + 1))
    assert status == 413
    assert "limit" in text
    status, _, _ = await post(broker.url(), BINARY, b"{}")
    assert status == 202
    await subscriber.wait_for(1)


async def test_event_with_expired_ttl_is_dropped_and_counted(broker: RunningBroker, subscriber: Subscriber) -> None:
    status, _, _ = await post(broker.url(), dict(BINARY, **{"ce-knativebrokerttl": "0"}), b"{}")
    assert status == 202
    status, _, _ = await post(broker.url(), dict(BINARY, **{"ce-id": "e2"}), b"{}")
    [got] = await subscriber.wait_for(1)
    assert got.event.id == "e2"
    async with aiohttp.ClientSession() as session, session.get(f"{broker.base_url}/metrics") as resp:
        metrics = await resp.text()
    assert 'eventferry_broker_events_dropped_total{broker="default",namespace="default",reason="ttl_expired"} 1.0' \
        in metrics


async def test_probes_and_metrics(broker: RunningBroker) -> None:
    await post(broker.url(), BINARY, b"{}")
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{broker.base_url}/readyz") as resp:
            assert resp.status == 200
        async with session.get(f"{broker.base_url}/healthz") as resp:
            assert resp.status == 200
        async with session.get(f"{broker.base_url}/contract") as resp:
            contract = await resp.json()
        async with session.get(f"{broker.base_url}/metrics") as resp:
            metrics = await resp.text()
    assert contract["generation"] == 1
    assert "default/all-events" in contract["triggers"]
    assert ('eventferry_broker_events_received_total{broker="default",code="202",event_type="com.example.a",'
            'namespace="default"} 1.0') in metrics
    assert "eventferry_broker_ingress_seconds_bucket" in metrics

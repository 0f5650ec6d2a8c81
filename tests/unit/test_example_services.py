"""The live-stream example services on loopback, with their real models: CloudEvents in, answers out."""

from __future__ import annotations

import asyncio
import base64
import datetime
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from cloudevents.core.bindings.http import HTTPMessage, from_http, to_binary
from cloudevents.core.v1.event import CloudEvent

from eventferry.delivery.policy import is_retryable
from eventferry_examples import frames_dead_letter, leaderboard, moderation, review, vision_inference
from eventferry_examples.digits import TRAINING, digits
from eventferry_examples.service import JSON_FORMAT, Served

pytestmark = pytest.mark.unit


@pytest.fixture
async def serve() -> AsyncIterator[Callable[[web.Application], Any]]:
    started: list[Served] = []

    async def start(app: web.Application) -> Served:
        served = await Served(app).start()
        started.append(served)
        return served

    yield start
    for served in started:
        await served.stop()


async def post(url: str, event_type: str, data: dict[str, Any], **attributes: str) -> aiohttp.ClientResponse:
    message = to_binary(CloudEvent({"type": event_type, "source": "/test", "datacontenttype": "application/json",
                                    **attributes}, data), JSON_FORMAT)
    async with aiohttp.ClientSession() as session, session.post(url, data=message.body,
                                                                headers=message.headers) as response:
        await response.read()
        return response


async def get_json(url: str) -> Any:
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        assert response.status == 200, await response.text()
        return await response.json()


async def test_moderation_flags_an_insult_with_a_binary_reply_and_lets_a_friendly_comment_pass(serve: Any) -> None:
    served = await serve(moderation.build())
    comment = {"room": "room-1", "user": "user-9", "text": "you are a stupid idiot"}
    async with aiohttp.ClientSession() as session:
        message = to_binary(CloudEvent({"type": "com.live.comment", "source": "/rooms/1", "id": "c-1",
                                        "datacontenttype": "application/json"}, comment), JSON_FORMAT)
        async with session.post(served.url + "/comments", data=message.body, headers=message.headers) as response:
            assert response.status == 200
            assert response.headers["ce-type"] == "com.live.comment.flagged"  # binary mode: attributes in headers
            reply = from_http(HTTPMessage(dict(response.headers), await response.read()), JSON_FORMAT)
    data = reply.get_data()
    assert isinstance(data, dict)
    assert data["room"] == "room-1" and data["user"] == "user-9" and data["comment"] == "c-1"
    assert data["toxicity"] >= moderation.DEFAULT_THRESHOLD

    friendly = await post(served.url + "/comments", "com.live.comment",
                          {"room": "room-1", "user": "user-3", "text": "what a lovely stream, thanks!"})
    assert friendly.status == 204
    assert "ce-type" not in friendly.headers
    assert await get_json(served.url + "/stats") == {"scored": 2, "flagged": 1,
                                                     "threshold": moderation.DEFAULT_THRESHOLD}


async def test_a_request_that_is_no_cloudevent_is_refused(serve: Any) -> None:
    served = await serve(moderation.build())
    async with aiohttp.ClientSession() as session, session.post(served.url, data=b"hello") as response:
        assert response.status == 400


async def test_review_keeps_the_last_flagged_comments_newest_first(serve: Any) -> None:
    served = await serve(review.build())
    for n in range(60):
        assert (await post(served.url, "com.live.comment.flagged", {"text": f"bad {n}"})).status == 202
    flagged = await get_json(served.url + review.PATH)
    assert flagged["count"] == 60
    assert len(flagged["recent"]) == 50
    assert flagged["recent"][0]["data"] == {"text": "bad 59"}


async def test_the_dead_letter_sink_counts_and_keeps_the_brokers_error_attributes(serve: Any) -> None:
    served = await serve(frames_dead_letter.build())
    await post(served.url, "com.live.video.frame", {"frame": 7}, knativeerrorcode="503")
    why = base64.b64encode(b"stale frame: 3.20s old (over 3s)\n").decode()
    await post(served.url, "com.live.video.frame", {"frame": 8}, knativeerrorcode="422", knativeerrordata=why,
               knativeerrordest="http://vision-inference.live.svc.cluster.local")
    dead = await get_json(served.url + frames_dead_letter.PATH)
    assert dead["count"] == 2
    newest, oldest = dead["recent"]
    assert oldest["knativeerrorcode"] == "503" and "error" not in oldest  # no answer's data: nothing to decode
    assert newest["data"] == {"frame": 8}
    assert (newest["knativeerrorcode"], newest["knativeerrordata"]) == ("422", why)
    assert newest["knativeerrordest"] == "http://vision-inference.live.svc.cluster.local"
    assert newest["error"] == "stale frame: 3.20s old (over 3s)\n"  # the answer's text, readable


async def test_the_leaderboard_sums_gifts_per_room_and_user_and_counts_a_redelivered_gift_once(serve: Any) -> None:
    served = await serve(leaderboard.build())
    gifts = [("g1", "rose", "room-1", "ann", 1), ("g2", "rocket", "room-1", "bob", 100),
             ("g3", "heart", "room-2", "ann", 5), ("g2", "rocket", "room-1", "bob", 100)]  # g2 twice: a retry
    for event_id, kind, room, user, value in gifts:
        response = await post(served.url, f"com.live.gift.{kind}", {"room": room, "user": user, "value": value},
                              id=event_id)
        assert response.status == 202
    board = await get_json(served.url + "/leaderboard?top=2")
    assert board["rooms"] == [{"room": "room-1", "total": 101}, {"room": "room-2", "total": 5}]
    assert board["users"] == [{"user": "bob", "total": 100}, {"user": "ann", "total": 6}]
    assert board["gifts"] == 3 and board["duplicates"] == 1 and board["total"] == 106
    refused = await post(served.url, "com.live.gift.rose", {"room": "room-1", "user": "ann"})
    assert refused.status == 400  # no value


async def test_vision_classifies_held_out_digits_after_training_at_start(serve: Any) -> None:
    vision = vision_inference.Vision(delay=0.0)
    served = await serve(vision_inference.build(vision))
    data = digits()
    held_out = range(TRAINING, TRAINING + 40)  # images the model did not see when it trained
    answers = []
    async with aiohttp.ClientSession() as session:
        async with session.get(served.url + "/healthz") as health:
            assert health.status == 200
        for index in held_out:
            frame = {"room": "room-1", "frame": index, "pixels": data.images[index], "truth": data.labels[index]}
            message = to_binary(CloudEvent({"type": "com.live.video.frame", "source": "/test",
                                            "datacontenttype": "application/json"}, frame), JSON_FORMAT)
            async with session.post(served.url, data=message.body, headers=message.headers) as response:
                assert response.status == 200
                answers.append((await response.json())["digit"])
    right = sum(answer == data.labels[index] for answer, index in zip(answers, held_out, strict=True))
    assert right >= 36, f"{right} of 40 held-out digits right"
    stats = await get_json(served.url + "/stats")
    assert stats["classified"] == 40 and stats["accuracy"] == right / 40


async def test_vision_answers_busy_at_once_past_its_workers_and_queue(serve: Any) -> None:
    vision = vision_inference.Vision(workers=1, delay=0.5, queue_limit=1)
    served = await serve(vision_inference.build(vision))
    pixels = digits().images[0]
    started = asyncio.get_running_loop().time()
    statuses = await asyncio.gather(*(post(served.url, "com.live.video.frame", {"pixels": pixels})
                                      for _ in range(4)))
    codes = sorted(response.status for response in statuses)
    assert codes == [200, 200, 503, 503]  # one at work, one waiting, two refused
    assert asyncio.get_running_loop().time() - started >= 1.0  # the two taken ran one after the other
    assert vision.busy == 2
    bad = await post(served.url, "com.live.video.frame", {"pixels": [99] * 64})
    assert bad.status == 400


def frame_at(sent: datetime.datetime | None) -> tuple[bytes, dict[str, str]]:
    """A key frame in binary mode, its ``time`` attribute ``sent`` (None: no time at all)."""
    data = digits()
    message = to_binary(CloudEvent({"type": "com.live.video.frame", "source": "/test", "id": "f-1",
                                    "datacontenttype": "application/json"},
                                   {"frame": 1, "pixels": data.images[0], "truth": data.labels[0]}), JSON_FORMAT)
    headers = {k: v for k, v in message.headers.items() if k.lower() != "ce-time"}
    if sent is not None:
        headers["ce-time"] = sent.isoformat()
    return message.body, headers


async def test_vision_answers_422_with_the_reason_for_a_frame_too_old_to_classify(serve: Any) -> None:
    now = datetime.datetime(2025, 5, 1, 12, 0, 0, tzinfo=datetime.UTC)
    vision = vision_inference.Vision(delay=0.0, queue_limit=0, clock=now.timestamp)  # no queue: busy if not stale
    served = await serve(vision_inference.build(vision))
    async with aiohttp.ClientSession() as session:
        async with session.get(served.url + "/healthz") as health:
            assert health.status == 200
        answers = []
        for age in (3.5, 60.0):
            body, headers = frame_at(now - datetime.timedelta(seconds=age))
            async with session.post(served.url, data=body, headers=headers) as response:
                answers.append((response.status, await response.text()))
    assert answers == [(422, "stale frame: 3.50s old (over 3s)\n"), (422, "stale frame: 60.00s old (over 3s)\n")]
    assert vision_inference.STALE_STATUS == 422 and not is_retryable(422)  # the broker dead-letters it at once
    assert (vision.stale, vision.classified, vision.busy) == (2, 0, 0)  # refused before it takes a worker


async def test_vision_classifies_a_fresh_frame_one_without_a_time_and_any_frame_when_the_check_is_off(
        serve: Any) -> None:
    now = datetime.datetime(2025, 5, 1, 12, 0, 0, tzinfo=datetime.UTC)
    vision = vision_inference.Vision(delay=0.0, clock=now.timestamp)
    served = await serve(vision_inference.build(vision))
    async with aiohttp.ClientSession() as session:
        async with session.get(served.url + "/healthz") as health:
            assert health.status == 200
        for sent in (now - datetime.timedelta(seconds=2.9), now + datetime.timedelta(seconds=5), None):
            body, headers = frame_at(sent)  # fresh; from a clock ahead of ours; no time: nothing to judge
            async with session.post(served.url, data=body, headers=headers) as response:
                assert response.status == 200, await response.text()
        assert (vision.classified, vision.stale) == (3, 0)
        vision.max_age = 0  # VISION_MAX_AGE=0: the check is off
        body, headers = frame_at(now - datetime.timedelta(hours=1))
        async with session.post(served.url, data=body, headers=headers) as response:
            assert response.status == 200
    stats = await get_json(served.url + "/stats")
    assert (stats["classified"], stats["stale"]) == (4, 0)


def test_vision_reads_its_stale_threshold_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VISION_MAX_AGE", "1.5")
    assert vision_inference.build()[vision_inference.VISION].max_age == 1.5
    monkeypatch.delenv("VISION_MAX_AGE")
    assert vision_inference.build()[vision_inference.VISION].max_age == vision_inference.DEFAULT_MAX_AGE == 3.0

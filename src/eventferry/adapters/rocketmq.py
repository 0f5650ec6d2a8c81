"""The RocketMQSource adapter: messages -> CloudEvents -> sink, at least once (RocketMQ 5, gRPC proxy).

- A SimpleConsumer of the source's consumer group receives messages that stay invisible to the
  group for ``invisible_duration``; a message is acknowledged only after the sink (or the dead-letter
  sink) accepted its event. While a message is held its invisibility is renewed, so that a slow sink
  does not make RocketMQ hand it to another consumer.
- A delivery that ends FAILED is not acknowledged: the message's invisible duration is changed to a
  backoff, and RocketMQ redelivers it then (its own retry limit and DLQ stay in force).
- rocketmq-python-client runs its own event loop in threads. Receives use its futures
  (``asyncio.wrap_future``); ack and change-invisible-duration, which it offers only as blocking calls,
  run in a small thread pool of this adapter. The adapter's loop never blocks.
- ``ordered``: one message at a time per message group (all messages without a group form one
  lane). Strict order across redeliveries needs a FIFO topic and group, where RocketMQ itself holds
  back the next message of a group until the previous one is acknowledged. ``unordered``: up to
  ``max_in_flight`` messages at once.
- Unordered, several receive calls run at once (``receivers``), so that the round trips overlap.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextlib
import logging
import sys
import time
import types
from collections.abc import Callable
from typing import Any, TypeVar

from eventferry.adapters.config import AdapterConfig, RocketMQSettings
from eventferry.adapters.core import Abandoned, AdapterError, SinkClient, run_with, trace
from eventferry.adapters.health import AdapterHealth
from eventferry.adapters.logs import fields
from eventferry.adapters.metrics import AdapterMetrics
from eventferry.adapters.rocketmq_mapping import map_message
from eventferry.delivery import Outcome

log = logging.getLogger("eventferry.adapters.rocketmq")

T = TypeVar("T")
RECEIVE_BATCH = 32
REQUEST_TIMEOUT = 10  # seconds, each RPC to the proxy
RESTART_BACKOFF = (1.0, 2.0, 5.0, 10.0, 30.0)
GIVE_BACK_SECONDS = 1  # invisible duration of a message handed back on stop: redelivered almost at once
CLIENT_LOGGER = "rocketmq-python-client"
CLIENT_LOG_MODULE = "rocketmq.v5.log.log_config"


def client_logs_to_stderr() -> None:
    """Keeps rocketmq-python-client from writing a log file: its log module, when imported, creates
    ``~/logs/rocketmq_python/`` and a rotating file of up to 10 x 100 MB. In the adapter's container,
    whose root filesystem is read-only (and nothing is mounted writable), that import fails with
    "Read-only file system", and a container's logs belong on its output anyway. So the module is put
    in place beforehand with the one name it exports, the client's logger, which then propagates to the
    adapter's logging (warnings and errors; its info lines are per-request chatter)."""
    if CLIENT_LOG_MODULE in sys.modules:
        return
    module = types.ModuleType(CLIENT_LOG_MODULE, "rocketmq-python-client's logger, without its log file")
    logger = logging.getLogger(CLIENT_LOGGER)
    logger.setLevel(logging.WARNING)
    module.__dict__["logger"] = logger
    sys.modules[CLIENT_LOG_MODULE] = module


async def run_rocketmq_adapter(config: AdapterConfig, stop: asyncio.Event, *, metrics: AdapterMetrics | None = None,
                               health: AdapterHealth | None = None) -> None:
    """Runs a RocketMQSource adapter until ``stop`` is set; raises AdapterError on a failure waiting cannot fix."""
    if config.rocketmq is None:
        raise ValueError("not a RocketMQSource configuration")

    async def consume(sink: SinkClient, metrics: AdapterMetrics, health: AdapterHealth,
                      stopping: asyncio.Event) -> None:
        await RocketMQAdapter(config, sink, metrics, health, stopping).run()

    await run_with(config, stop, consume, metrics, health)


def new_consumer(settings: RocketMQSettings, await_duration: int) -> Any:
    client_logs_to_stderr()
    from rocketmq import ClientConfiguration, Credentials, FilterExpression, SimpleConsumer
    from rocketmq.grpc_protocol import FilterType

    credentials = Credentials(settings.access_key, settings.secret_key)
    client = ClientConfiguration(settings.endpoints, credentials, namespace=settings.namespace,
                                 request_timeout=REQUEST_TIMEOUT)
    filter_type = FilterType.SQL if settings.filter_type == "sql92" else FilterType.TAG
    expression = FilterExpression(settings.filter_expression, filter_type)
    return SimpleConsumer(client, settings.consumer_group, {settings.topic: expression}, await_duration=await_duration)


def _fatal(error: BaseException) -> bool:
    """Errors that retrying cannot fix: refused credentials, or a request the proxy finds invalid (e.g. a
    filter expression it cannot parse)."""
    client_logs_to_stderr()
    from rocketmq.v5.exception import (
        BadRequestException,
        ForbiddenException,
        IllegalArgumentException,
        UnauthorizedException,
    )

    return isinstance(error, UnauthorizedException | ForbiddenException | IllegalArgumentException
                      | BadRequestException)


def route_refusal(consumer: Any, settings: RocketMQSettings) -> Exception | None:
    """Asks the proxy for the topic's route with the consumer's credentials, and returns its refusal, if any.

    rocketmq-python-client logs a refused route query and then reports only "failed to fetch topic:X
    route." (a plain Exception), the same as when the proxy cannot be reached: retrying would go on for
    ever, saying nothing useful. The proxy's answer (UNAUTHORIZED for a wrong key or a missing grant)
    is in the status of the reply, which this query keeps. Blocking: call it in a thread."""
    from rocketmq.grpc_protocol import QueryRouteRequest
    from rocketmq.v5.util import MessagingResultChecker

    configuration = consumer.client_configuration
    request = QueryRouteRequest()
    request.topic.name = settings.topic
    request.topic.resource_namespace = configuration.namespace
    request.endpoints.CopyFrom(configuration.rpc_endpoints.endpoints)
    try:
        future = consumer.rpc_client.query_topic_route_async(configuration.rpc_endpoints, request,
                                                             metadata=consumer.sign(), timeout=REQUEST_TIMEOUT)
        MessagingResultChecker.check(future.result(REQUEST_TIMEOUT + 1).status)
    except Exception as error:  # the refusal, or why the question could not be asked
        return error
    return None


class _Held:
    """A received message until it is acknowledged or handed back; the lock orders renewals and the settling."""

    __slots__ = ("deadline", "lock", "message", "read_at", "settled")

    def __init__(self, message: Any, invisible: float) -> None:
        self.message = message
        self.read_at = time.monotonic()
        self.deadline = self.read_at + invisible
        self.lock = asyncio.Lock()
        self.settled = False


class RocketMQAdapter:
    def __init__(self, config: AdapterConfig, sink: SinkClient, metrics: AdapterMetrics, health: AdapterHealth,
                 stopping: asyncio.Event) -> None:
        assert config.rocketmq is not None
        self.config = config
        self.settings = config.rocketmq
        self.limits = config.limits
        self.ordered = config.ordering == "ordered"
        self.sink = sink
        self.metrics = metrics
        self.health = health
        self.stopping = stopping
        self.consumer: Any = None
        # Blocking client calls (startup, ack, change invisible duration, shutdown) run here, not on the loop.
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=8, thread_name_prefix="eventferry-rocketmq")
        self._held: set[_Held] = set()
        self._free = self.limits.max_in_flight
        self._capacity = asyncio.Condition()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._lanes: dict[str, collections.deque[_Held]] = {}
        self._workers: dict[str, asyncio.Task[Any]] = {}

    async def _call(self, function: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._pool, function, *args)

    # --- lifecycle -----------------------------------------------------------------------------------------

    async def run(self) -> None:
        try:
            self.consumer = await self._start()
            if self.consumer is None:
                return
            log.info("consuming %s (%s %r) as group %s from %s", self.settings.topic, self.settings.filter_type,
                     self.settings.filter_expression, self.settings.consumer_group, self.settings.endpoints,
                     extra=fields(topic=self.settings.topic, group=self.settings.consumer_group,
                                  ordering=self.config.ordering))
            renewer = asyncio.ensure_future(self._renew_loop())
            # Ordered: one receive at a time, so that messages reach their lanes in the order RocketMQ gave them.
            count = 1 if self.ordered else self.limits.receivers
            receivers = [asyncio.ensure_future(self._receive_loop()) for _ in range(count)]
            stopped = asyncio.ensure_future(self.stopping.wait())
            try:
                await asyncio.wait([stopped, *receivers], return_when=asyncio.FIRST_COMPLETED)
            finally:
                stopped.cancel()
                self.stopping.set()  # a receiver that failed for good stops the others
                async with self._capacity:
                    self._capacity.notify_all()  # receivers waiting for capacity see the stop
                # A receive in progress ends within its long-polling time; what it brings is handed back.
                _done, pending = await asyncio.wait(receivers, timeout=self.limits.await_duration + REQUEST_TIMEOUT)
                for task in pending:
                    task.cancel()
                await self._drain()
                renewer.cancel()
                await asyncio.gather(renewer, *pending, return_exceptions=True)
            for task in receivers:
                if task.done() and not task.cancelled() and task.exception() is not None:
                    raise task.exception()  # type: ignore[misc]
        finally:
            if self.consumer is not None:
                with contextlib.suppress(Exception):
                    await self._call(self.consumer.shutdown)
            self._pool.shutdown(wait=False)

    async def _start(self) -> Any:
        failures = 0
        while not self.stopping.is_set():
            try:
                # In the pool: the first call imports the client (gRPC), which takes a while.
                consumer = await self._call(new_consumer, self.settings, self.limits.await_duration)
            except Exception as error:
                raise AdapterError(f"invalid RocketMQ consumer settings: {error}") from None
            try:
                await self._call(consumer.startup)
                return consumer
            except Exception as error:
                if _fatal(error):
                    raise AdapterError(self._explain(error)) from None
                wait = RESTART_BACKOFF[min(failures, len(RESTART_BACKOFF) - 1)]
                failures += 1
                message = self._explain(error)
                self.health.set_not_ready(message)
                log.error("cannot start the RocketMQ consumer: %s; retrying in %.0fs", message, wait,
                          extra=fields(error=message, retry_in=wait))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.stopping.wait(), wait)
        return None

    def _explain(self, error: BaseException) -> str:
        text = f"{type(error).__name__}: {error}"
        if "Unauthorized" not in text and "Forbidden" not in text:
            return f"{text} (endpoints {self.settings.endpoints}, topic {self.settings.topic})"
        # RocketMQ ACL 2.0 answers UNAUTHORIZED (40100) both to keys it cannot verify and to a user
        # without a grant; only the message tells them apart.
        if "permission" in text.lower():
            return (f"RocketMQ at {self.settings.endpoints} accepted the keys but does not let their user consume "
                    f"topic {self.settings.topic!r} as group {self.settings.consumer_group!r} ({text}); grant the "
                    "user Sub on both (RocketMQ ACL: mqadmin createAcl), or refer spec.accessKey and spec.secretKey "
                    "to keys of a user that has it")
        return (f"RocketMQ at {self.settings.endpoints} refused the credentials ({text}); check the Secret keys that "
                "spec.accessKey and spec.secretKey refer to")

    # --- receiving ----------------------------------------------------------------------------------------

    async def _reserve(self, wanted: int) -> int:
        async with self._capacity:
            await self._capacity.wait_for(lambda: self._free > 0 or self.stopping.is_set())
            granted = min(wanted, self._free)
            self._free -= granted
            return granted

    async def _release(self, count: int) -> None:
        if count <= 0:
            return
        async with self._capacity:
            self._free += count
            self._capacity.notify_all()

    async def _receive_loop(self) -> None:
        failures = 0
        while not self.stopping.is_set():
            slots = await self._reserve(RECEIVE_BATCH)
            if self.stopping.is_set():
                await self._release(slots)
                return
            try:
                messages = await asyncio.wrap_future(
                    self.consumer.receive_async(slots, self.limits.invisible_duration))
            except asyncio.CancelledError:
                await self._release(slots)
                raise
            except Exception as error:
                await self._release(slots)
                if not _fatal(error) and "route" in str(error):
                    refusal = await self._call(route_refusal, self.consumer, self.settings)
                    error = refusal or error
                if _fatal(error):
                    self.health.set_not_ready(self._explain(error))
                    raise AdapterError(self._explain(error)) from None
                wait = RESTART_BACKOFF[min(failures, len(RESTART_BACKOFF) - 1)]
                failures += 1
                # One failure alone is routine (right after start the proxy may not have the client's settings yet).
                log.log(logging.WARNING if failures > 1 else logging.INFO, "receive from %s failed: %s; retrying in "
                        "%.0fs", self.settings.topic, self._explain(error), wait,
                        extra=fields(error=str(error), retry_in=wait))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.stopping.wait(), wait)
                continue
            failures = 0
            if not self.health.ready:
                self.health.set_ready()  # ready once a receive went through
            messages = messages or []
            await self._release(slots - len(messages))
            if messages:
                self.metrics.received(self.settings.topic, len(messages))
            for message in messages:
                held = _Held(message, self.limits.invisible_duration)
                self._held.add(held)
                if self.stopping.is_set():
                    self._spawn(self._give_back(held))
                else:
                    self._accept(held)
            self.metrics.in_flight(len(self._held))

    def _spawn(self, coro: Any) -> asyncio.Task[Any]:
        task: asyncio.Task[Any] = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _accept(self, held: _Held) -> None:
        if not self.ordered:
            self._spawn(self._process(held))
            return
        group = getattr(held.message, "message_group", None) or ""
        lane = self._lanes.setdefault(group, collections.deque())
        lane.append(held)
        worker = self._workers.get(group)
        if worker is None or worker.done():
            self._workers[group] = self._spawn(self._drain_lane(group, lane))

    async def _drain_lane(self, group: str, lane: collections.deque[_Held]) -> None:
        while lane and not self.stopping.is_set():
            await self._process(lane.popleft())
        if not lane:
            self._lanes.pop(group, None)

    # --- one message ---------------------------------------------------------------------------------------

    async def _process(self, held: _Held) -> None:
        try:
            mapped = map_message(held.message, namespace=self.config.namespace, name=self.config.name,
                                 topic=self.settings.topic, overrides=self.config.ce_overrides)
            if mapped.malformed is not None:
                await self._malformed(held, mapped.event, mapped.malformed)
                await self._ack(held)
                return
            trace(mapped.event)
            outcome = await self.sink.send(mapped.event, held.read_at)
            if outcome is Outcome.FAILED:
                attempt = getattr(held.message, "delivery_attempt", None) or 1
                wait = max(1, round(self.sink.failed_backoff(attempt)))
                await self._change_invisible(held, wait, settle=True, why="delivery failed")
                return
            await self._ack(held)
        except Abandoned:
            await self._give_back(held)
        finally:
            if held.settled:
                await self._forget(held)

    async def _malformed(self, held: _Held, wrapped: Any, reason: str) -> None:
        message_id = getattr(held.message, "message_id", "?")
        why = f"message claims to be a CloudEvent but is not valid: {reason}"
        if await self.sink.dead_letter(wrapped, why):
            self.metrics.malformed("dead_lettered")
            log.warning("message %s: %s; sent to the dead-letter sink", message_id, why,
                        extra=fields(message_id=message_id, error=reason))
            return
        self.metrics.malformed("dropped")
        log.error("message %s: %s; no dead-letter sink, so it is dropped (acknowledged)", message_id, why,
                  extra=fields(message_id=message_id, error=reason))

    async def _ack(self, held: _Held) -> None:
        async with held.lock:
            if held.settled:
                return
            held.settled = True
            try:
                await self._call(self.consumer.ack, held.message)
            except Exception as error:
                # The proxy will redeliver it once invisible time runs out: a duplicate, never a loss.
                log.warning("ack of message %s failed: %s", held.message.message_id, error,
                            extra=fields(message_id=held.message.message_id, error=str(error)))

    async def _change_invisible(self, held: _Held, seconds: int, *, settle: bool, why: str) -> None:
        async with held.lock:
            if held.settled:
                return
            if settle:
                held.settled = True
            try:
                await self._call(self.consumer.change_invisible_duration, held.message, seconds)
                held.deadline = time.monotonic() + seconds
                if settle:
                    log.info("message %s handed back (%s): redelivered in %ds", held.message.message_id, why, seconds,
                             extra=fields(message_id=held.message.message_id, redeliver_in=seconds, reason=why))
            except Exception as error:
                log.warning("changing the invisible duration of message %s failed: %s", held.message.message_id,
                            error, extra=fields(message_id=held.message.message_id, error=str(error)))

    async def _give_back(self, held: _Held) -> None:
        await self._change_invisible(held, GIVE_BACK_SECONDS, settle=True, why="adapter stopping")
        await self._forget(held)

    async def _forget(self, held: _Held) -> None:
        if held in self._held:
            self._held.discard(held)
            self.metrics.in_flight(len(self._held))
            await self._release(1)

    async def _renew_loop(self) -> None:
        """Keeps held messages invisible while they wait or are delivered (the deadline nears at a third left)."""
        invisible = self.limits.invisible_duration
        while True:
            await asyncio.sleep(min(1.0, invisible / 3))
            now = time.monotonic()
            due = [h for h in self._held if not h.settled and not h.lock.locked() and h.deadline - now < invisible / 3]
            if due:
                await asyncio.gather(*(self._change_invisible(h, invisible, settle=False, why="renew") for h in due))

    async def _drain(self) -> None:
        """On stop: lets deliveries in progress end (up to the drain timeout), then hands back what is left."""
        tasks = set(self._tasks)
        if tasks:
            log.info("waiting up to %.0fs for %d in-flight deliveries", self.limits.drain_timeout, len(self._held),
                     extra=fields(in_flight=len(self._held)))
            _done, pending = await asyncio.wait(tasks, timeout=self.limits.drain_timeout)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        left = [held for held in self._held if not held.settled]
        if left:
            log.info("handing back %d messages not delivered: RocketMQ redelivers them", len(left),
                     extra=fields(handed_back=len(left)))
            await asyncio.gather(*(self._give_back(held) for held in left))

"""Running the operator: health and metrics first, then the Lease, then kopf while the Lease is held."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal

import kopf

from eventferry.controller.backlog_endpoint import BacklogEndpoint
from eventferry.controller.config import OperatorConfig
from eventferry.controller.context import Context
from eventferry.controller.handlers import register
from eventferry.controller.kube import ApiClient
from eventferry.controller.leader import LeaseElector
from eventferry.controller.metrics import HealthServer, OperatorHealth, OperatorMetrics

log = logging.getLogger(__name__)

EXIT_STOPPED = 0
EXIT_FAILED = 1
EXIT_LEADERSHIP_LOST = 3


async def run_operator(config: OperatorConfig, stop: asyncio.Event | None = None) -> int:
    """Runs until ``stop`` is set or SIGTERM/SIGINT arrive (0), or until the Lease is lost (3)."""
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    metrics, health = OperatorMetrics(), OperatorHealth()
    api = ApiClient.from_environment()
    server = HealthServer(metrics, health, config.metrics_host, config.metrics_port,
                          extra=BacklogEndpoint(api, config.system_namespace, config.report_stale_after).routes())
    try:
        await server.start()
    except BaseException:
        await api.close()
        raise
    log.info("operator %s: /metrics, /healthz and /readyz on http://%s:%d", config.identity, config.metrics_host,
             server.port)
    elector = LeaseElector(api, config.system_namespace, config.lease_name, config.identity,
                           duration=config.lease_duration)
    try:
        if not await elector.acquire(stop):
            return EXIT_STOPPED
        health.leader = True
        metrics.leader.set(1)
        return await _lead(config, api, metrics, health, elector, stop)
    finally:
        health.leader = False
        metrics.leader.set(0)
        await elector.release()
        await api.close()
        await server.stop()


async def _lead(config: OperatorConfig, api: ApiClient, metrics: OperatorMetrics, health: OperatorHealth,
                elector: LeaseElector, stop: asyncio.Event) -> int:
    ctx = Context(config, api, metrics, health)
    # Created before kopf starts, so that kopf leaves this task alone when it cleans up its own.
    holding = asyncio.create_task(elector.hold(stop), name="lease")
    stopping = asyncio.create_task(stop.wait(), name="stop")
    # No stop flag for kopf: its waiter task would hold kopf's exit for 5 s after a signal. kopf stops by
    # itself on SIGTERM/SIGINT (its own handlers replace ours), and is cancelled when the Lease is lost.
    operator = asyncio.create_task(kopf.operator(registry=register(), memo=kopf.Memo(ctx=ctx), clusterwide=True,
                                               standalone=True), name="kopf")
    try:
        await asyncio.wait({holding, operator, stopping}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        if not operator.done():
            operator.cancel()
        stop.set()
        outcome, kept = await asyncio.gather(operator, holding, return_exceptions=True)
        stopping.cancel()
        await ctx.stop()
    if kept is False:
        log.error("the Lease was lost: stopping, to be restarted as a standby")
        return EXIT_LEADERSHIP_LOST
    if isinstance(outcome, BaseException) and not isinstance(outcome, asyncio.CancelledError):
        log.error("kopf stopped with an error", exc_info=outcome)
        return EXIT_FAILED
    return EXIT_STOPPED

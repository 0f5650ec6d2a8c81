"""Source adapters: KafkaSource and RocketMQSource messages -> CloudEvents -> sink, at least once.

Each adapter runs as its own process (``eventferry adapter kafka|rocketmq``, configured by
environment variables: docs/adapters.md) or inside another process's event loop::

    config = config_from_manifest(manifest, sink_url)
    await run_adapter(config, stop)  # returns once ``stop`` is set and in-flight deliveries settled

Modules: ``config`` (environment / manifest -> AdapterConfig), ``core`` (sink client, process frame),
``offsets`` (contiguous commit points), ``kafka``/``kafka_mapping``, ``rocketmq``/``rocketmq_mapping``,
``health`` (/healthz, /readyz, /metrics), ``metrics``, ``tracing``, ``logs``. The clients (aiokafka,
rocketmq) are imported only by the adapter that needs them.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from eventferry.adapters.config import AdapterConfig, ConfigError, config_from_manifest, parse_env

if TYPE_CHECKING:
    from eventferry.adapters.health import AdapterHealth
    from eventferry.adapters.metrics import AdapterMetrics

__all__ = ["AdapterConfig", "ConfigError", "config_from_manifest", "parse_env", "run_adapter",
           "run_kafka_adapter", "run_rocketmq_adapter"]


async def run_kafka_adapter(config: AdapterConfig, stop: asyncio.Event, *, metrics: AdapterMetrics | None = None,
                            health: AdapterHealth | None = None) -> None:
    from eventferry.adapters.kafka import run_kafka_adapter as run

    await run(config, stop, metrics=metrics, health=health)


async def run_rocketmq_adapter(config: AdapterConfig, stop: asyncio.Event, *, metrics: AdapterMetrics | None = None,
                               health: AdapterHealth | None = None) -> None:
    from eventferry.adapters.rocketmq import run_rocketmq_adapter as run

    await run(config, stop, metrics=metrics, health=health)


async def run_adapter(config: AdapterConfig, stop: asyncio.Event, *, metrics: AdapterMetrics | None = None,
                      health: AdapterHealth | None = None) -> None:
    """Runs the adapter of ``config.kind`` until ``stop`` is set; raises core.AdapterError on a fatal failure."""
    if config.kind == "kafka":
        await run_kafka_adapter(config, stop, metrics=metrics, health=health)
    else:
        await run_rocketmq_adapter(config, stop, metrics=metrics, health=health)

"""Session fixtures: the real servers of the test environment, started on first use, stopped at the end.

A server that cannot be built or started fails the tests that need it; nothing is skipped. When a
test fails, the log tails of every server started so far are attached to its report.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from tests.env.servers import Kafka, Keda, KubeAPI, KubeControllers, RocketMQ, Server
from tests.support.subscriber import Subscriber, Subscribers


class TestEnvironment:
    """Starts each server once per session, in a work directory under pytest's basetemp."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.servers: dict[str, Server] = {}

    def get(self, kind: type[Server], name: str, *needs: Server) -> Server:
        """``needs``: servers this one runs against (kube-controller-manager and KEDA: the KubeAPI)."""
        if name not in self.servers:
            self.servers[name] = kind.start(self.root / name, *needs)  # type: ignore[attr-defined]
        return self.servers[name]

    def log_tails(self) -> str:
        parts = []
        for server in self.servers.values():
            for proc_name, tail in server.log_tails(25).items():
                parts.append(f"===== {proc_name} =====\n{tail}")
        return "\n".join(parts)

    def stop(self) -> None:
        for server in reversed(list(self.servers.values())):
            server.stop()
        self.servers.clear()


_environment: TestEnvironment | None = None


@pytest.fixture(scope="session")
def testenv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestEnvironment]:
    global _environment
    _environment = TestEnvironment(tmp_path_factory.mktemp("servers"))
    try:
        yield _environment
    finally:
        _environment.stop()
        _environment = None


@pytest.fixture(scope="session")
def kube_api(testenv: TestEnvironment) -> KubeAPI:
    server = testenv.get(KubeAPI, "kube")
    assert isinstance(server, KubeAPI)
    return server


@pytest.fixture(scope="session")
def kube_controllers(testenv: TestEnvironment, kube_api: KubeAPI) -> KubeControllers:
    """kube-controller-manager for the session's API server: Deployments, ReplicaSets, HPAs, GC, namespaces."""
    server = testenv.get(KubeControllers, "kube-controllers", kube_api)
    assert isinstance(server, KubeControllers)
    return server


@pytest.fixture(scope="session")
def keda(testenv: TestEnvironment, kube_api: KubeAPI, kube_controllers: KubeControllers) -> Keda:
    """KEDA's CRDs, operator and metrics API server (APIService v1beta1.external.metrics.k8s.io)."""
    server = testenv.get(Keda, "keda", kube_api)
    assert isinstance(server, Keda)
    return server


@pytest.fixture(scope="session")
def kafka(testenv: TestEnvironment) -> Kafka:
    server = testenv.get(Kafka, "kafka")
    assert isinstance(server, Kafka)
    return server


@pytest.fixture(scope="session")
def rocketmq(testenv: TestEnvironment) -> RocketMQ:
    server = testenv.get(RocketMQ, "rocketmq")
    assert isinstance(server, RocketMQ)
    return server


@pytest.fixture
async def subscribers() -> AsyncIterator[Subscribers]:
    """Starts real HTTP subscribers (tests/support/subscriber.py) for a test, all stopped after it:
    ``sub = await subscribers(script)``; ``script`` None accepts everything, ``port=`` picks the port.

    Fixtures are torn down in the reverse order of a test's arguments: listed after a fixture that stops brokers,
    ``subscribers`` stops its subscribers before those brokers, as a try/finally in the test body would."""
    async with Subscribers() as started:
        yield started


@pytest.fixture
async def subscriber(subscribers: Subscribers) -> Subscriber:
    """A real HTTP subscriber that accepts everything, stopped after the test."""
    return await subscribers()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    report = yield
    if report.failed and _environment is not None and _environment.servers:
        report.sections.append(("server logs (tails)", _environment.log_tails()))
    return report

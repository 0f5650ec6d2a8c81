"""Transport encryption with the real operator and data plane: HTTPS ingress, rotation, verified deliveries.

The operator runs with ``--transport-encryption=strict`` and the ingress CA; the data plane serves HTTPS with a
certificate from files (as a cert-manager Secret volume holds them) and refuses events over plain HTTP. The
certificates are made here with openssl: one CA for the ingress, another for an https subscriber.
"""

from __future__ import annotations

import asyncio
import base64
import os
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from cryptography import x509

from tests.env.ports import free_port
from tests.env.servers import KubeAPI
from tests.support.certs import Authority, authority, server_context
from tests.support.cluster import Cluster, manifest, running, scratch_namespace, trigger
from tests.support.subscriber import Subscribers

pytestmark = pytest.mark.integration

CHECK_INTERVAL = 0.5


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Authority, Path, Path, Authority]:
    """(ingress CA, ingress certificate file, its key file, the https subscriber's CA)."""
    directory = tmp_path_factory.mktemp("certs")
    ingress_ca = authority(directory, "ingress-ca")
    cert, key = ingress_ca.issue(directory / "ingress")
    return ingress_ca, cert, key, authority(directory, "subscriber-ca")


@pytest.fixture(scope="module")
def cluster(kube_api: KubeAPI, tmp_path_factory: pytest.TempPathFactory,
            certs: tuple[Authority, Path, Path, Authority]) -> Iterator[Cluster]:
    ingress_ca, cert, key, _ = certs
    cluster = Cluster(kube_api, tmp_path_factory.mktemp("tls"),
                      operator_args=("--transport-encryption=strict", f"--ingress-ca-file={ingress_ca.cert}"),
                      dataplane_args=(f"--tls-cert-file={cert}", f"--tls-key-file={key}", f"--tls-port={free_port()}",
                                      f"--tls-check-interval={CHECK_INTERVAL}", "--https-only"))
    with running(cluster):
        yield cluster


@pytest.fixture
def ns(cluster: Cluster) -> Iterator[str]:
    with scratch_namespace(cluster, "tls") as name:
        yield name


def tls_port(cluster: Cluster) -> int:
    return int(next(a.split("=", 1)[1] for a in cluster.dataplane_args if a.startswith("--tls-port=")))


@pytest.fixture
async def client(certs: tuple[Authority, Path, Path, Authority]) -> AsyncIterator[aiohttp.ClientSession]:
    connector = aiohttp.TCPConnector(ssl=certs[0].client_context())
    async with aiohttp.ClientSession(connector=connector) as session:
        yield session


def event_headers() -> dict[str, str]:
    return {"ce-specversion": "1.0", "ce-id": uuid.uuid4().hex, "ce-source": "/tests", "ce-type": "com.example.tls",
            "content-type": "application/json"}


async def broker_with_trigger(cluster: Cluster, ns: str, subscriber: dict[str, Any], **spec: Any) -> None:
    if cluster.get(ns, "broker/default") is None:
        assert cluster.create(ns, manifest("Broker", "default", {})).returncode == 0
    name = f"t-{uuid.uuid4().hex[:6]}"
    assert cluster.create(ns, trigger(name, subscriber=subscriber, **spec)).returncode == 0
    await asyncio.to_thread(cluster.wait_condition, ns, f"trigger/{name}", "Ready", "True")


async def test_a_strict_broker_is_addressed_over_https_with_its_ca_and_refuses_plain_http(
        cluster: Cluster, ns: str, certs: tuple[Authority, Path, Path, Authority], subscribers: Subscribers,
        client: aiohttp.ClientSession) -> None:
    subscriber = await subscribers()
    await broker_with_trigger(cluster, ns, {"uri": subscriber.url + "/in"})
    broker = cluster.get(ns, "broker/default")
    assert broker is not None
    address = broker["status"]["address"]
    assert address["url"] == f"https://eventferry-broker-ingress.eventferry-system.svc.cluster.local/{ns}/default"
    assert address["CACerts"] == certs[0].pem
    assert [a["name"] for a in broker["status"]["addresses"]] == ["https"]

    async with client.post(f"https://127.0.0.1:{tls_port(cluster)}/{ns}/default", data=b"{}",
                           headers=event_headers()) as response:
        assert response.status == 202
    await subscriber.wait_for(1, "/in")
    async with aiohttp.ClientSession() as plain:
        async with plain.post(f"http://127.0.0.1:{cluster.dataplane_port}/{ns}/default", data=b"{}",
                              headers=event_headers()) as response:
            assert response.status == 403 and "HTTPS only" in await response.text()
        async with plain.get(f"http://127.0.0.1:{cluster.dataplane_port}/readyz") as response:
            assert response.status == 200  # probes stay on the plain port
    await asyncio.sleep(0.3)
    assert len(subscriber.at("/in")) == 1


async def served_serial(port: int, authority: Authority) -> int:
    """The serial number of the certificate a new TLS connection to ``port`` is served with."""
    _, writer = await asyncio.open_connection("127.0.0.1", port, ssl=authority.client_context())
    try:
        der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
        return x509.load_der_x509_certificate(der).serial_number
    finally:
        writer.close()
        await writer.wait_closed()


async def test_a_rotated_certificate_serves_new_connections_and_drops_none(
        cluster: Cluster, ns: str, certs: tuple[Authority, Path, Path, Authority], subscribers: Subscribers,
        tmp_path: Path) -> None:
    ingress_ca, cert, key, _ = certs
    subscriber = await subscribers()
    await broker_with_trigger(cluster, ns, {"uri": subscriber.url + "/rotation"})
    port = tls_port(cluster)
    url = f"https://127.0.0.1:{port}/{ns}/default"
    answers: list[int] = []
    connections = 0
    stop = asyncio.Event()

    async def opened(*_: Any) -> None:
        nonlocal connections
        connections += 1

    async def keep_sending(session: aiohttp.ClientSession) -> None:
        while not stop.is_set():
            try:
                async with session.post(url, data=b"{}", headers=event_headers()) as response:
                    answers.append(response.status)
            except aiohttp.ClientError as error:
                answers.append(-1)
                print(f"kept connection: {error}")
            await asyncio.sleep(0.01)

    # One keep-alive connection sends throughout; the certificate changes under it.
    tracing = aiohttp.TraceConfig()
    tracing.on_connection_create_end.append(opened)
    kept = aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ingress_ca.client_context(), limit=1),
                                 trace_configs=[tracing])
    try:
        sender = asyncio.create_task(keep_sending(kept))
        await asyncio.sleep(1.0)
        before = await served_serial(port, ingress_ca)
        # The rotation, as a Secret volume makes it: the new pair replaces the old one.
        new_cert, new_key = ingress_ca.issue(tmp_path / "rotated")
        os.replace(new_key, key)
        os.replace(new_cert, cert)
        rotated_at = time.monotonic()
        after = before
        while after == before and time.monotonic() - rotated_at < 20:
            await asyncio.sleep(0.1)
            after = await served_serial(port, ingress_ca)
        print(f"\nnew connections got the rotated certificate {time.monotonic() - rotated_at:.2f}s after the swap")
        assert after != before, "new connections still get the old certificate"
        await asyncio.sleep(1.0)
        stop.set()
        await sender
    finally:
        await kept.close()
    assert len(answers) > 50 and set(answers) == {202}, f"answers during the rotation: {set(answers)}"
    assert connections == 1, "the kept connection was re-established, not kept"
    delivered = await subscriber.wait_for(len(answers), "/rotation")
    assert len(delivered) == len(answers)


async def test_deliveries_verify_the_subscriber_with_its_ca_certs(
        cluster: Cluster, ns: str, certs: tuple[Authority, Path, Path, Authority], subscribers: Subscribers,
        client: aiohttp.ClientSession, tmp_path: Path) -> None:
    ingress_ca, _, _, subscriber_ca = certs
    cert, key = subscriber_ca.issue(tmp_path / "subscriber")
    secure = await subscribers(tls=server_context(cert, key))
    dead_letters = await subscribers()
    # Trusted with its own CA; and the same server with the wrong CA, which must fail and go to the dead letters.
    await broker_with_trigger(cluster, ns, {"uri": secure.url + "/trusted", "CACerts": subscriber_ca.pem},
                              filter={"attributes": {"type": "com.example.tls"}})
    await broker_with_trigger(cluster, ns, {"uri": secure.url + "/untrusted", "CACerts": ingress_ca.pem},
                              filter={"attributes": {"type": "com.example.tls"}},
                              delivery={"deadLetterSink": {"uri": dead_letters.url + "/dls"}, "retry": 1,
                                        "backoffDelay": "PT0.1S"})
    async with client.post(f"https://127.0.0.1:{tls_port(cluster)}/{ns}/default", data=b"{}",
                           headers=event_headers()) as response:
        assert response.status == 202
    await secure.wait_for(1, "/trusted")
    [dead] = await dead_letters.wait_for(1, "/dls")
    error = base64.b64decode(str(dead.event.attributes["knativeerrordata"])).decode()
    assert "CERTIFICATE_VERIFY_FAILED" in error, error
    assert dead.event.attributes["knativeerrordest"] == secure.url + "/untrusted"
    assert secure.at("/untrusted") == []

    # An invalid CACerts is refused by the API server, naming the field.
    bad = trigger("bad-ca", subscriber={"uri": secure.url + "/x", "CACerts": "not a certificate"})
    refused = cluster.create(ns, bad)
    assert refused.returncode != 0 and "CACerts" in refused.stderr, refused.stderr

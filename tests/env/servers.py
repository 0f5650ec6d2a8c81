"""The real servers of the test environment, each started on free loopback ports.

Every server writes into a work directory of its own (data, configuration, ``*.log``) and runs in
its own process group; ``stop()`` leaves no process behind.
"""

from __future__ import annotations

import base64
import concurrent.futures
import contextlib
import json
import os
import ssl
import subprocess
import textwrap
import time
import urllib.parse
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.env import provision
from tests.env.ports import LOOPBACK, free_port, free_port_block, wait_for_port
from tests.env.process import ManagedProcess

JVM_SMALL = ["-XX:+UseG1GC", "-XX:MaxDirectMemorySize=256m", "-Djava.awt.headless=true",
             "-XX:-UsePerfData", "-XX:TieredStopAtLevel=1"]


@dataclass
class Server:
    workdir: Path
    processes: list[ManagedProcess] = field(default_factory=list)

    def stop(self) -> None:
        for proc in reversed(self.processes):
            proc.stop()
        self.processes.clear()

    def log_tails(self, lines: int = 40) -> dict[str, str]:
        return {p.name: p.log_tail(lines) for p in self.processes}

    def restart(self, name: str, down: float = 0.0) -> ManagedProcess:
        """Stops the process ``name`` (SIGTERM, then SIGKILL) and starts it again with the same command, so
        with the same ports and data, after ``down`` seconds; the caller waits for it to serve again."""
        index = next(i for i, proc in enumerate(self.processes) if proc.name == name)
        old = self.processes[index]
        old.stop()
        time.sleep(down)
        self.processes[index] = old.again()
        return self.processes[index]

    def exports(self) -> dict[str, str]:
        raise NotImplementedError


# --- Kubernetes API: etcd + kube-apiserver (the envtest model: no kubelet, no controllers) ---------

ADMIN_TOKEN_USER = "eventferry-admin"
FRONT_PROXY_CLIENT = "front-proxy-client"


@dataclass
class KubeAPI(Server):
    url: str = ""
    token: str = ""
    kubeconfig: Path = Path()
    etcd_url: str = ""

    @classmethod
    def start(cls, workdir: Path) -> KubeAPI:
        workdir.mkdir(parents=True, exist_ok=True)
        etcd_bin = provision.ETCD.ensure()
        apiserver_bin = provision.KUBE_APISERVER.ensure()
        server = cls(workdir=workdir)
        try:
            server._start_etcd(etcd_bin)
            server._start_apiserver(apiserver_bin)
        except BaseException:
            server.stop()
            raise
        return server

    def _start_etcd(self, binary: Path) -> None:
        client, peer = free_port(), free_port()
        self.etcd_url = f"http://{LOOPBACK}:{client}"
        etcd = ManagedProcess("etcd", [
            str(binary), "--name=default", f"--data-dir={self.workdir / 'etcd-data'}",
            f"--listen-client-urls={self.etcd_url}", f"--advertise-client-urls={self.etcd_url}",
            f"--listen-peer-urls=http://{LOOPBACK}:{peer}", f"--initial-advertise-peer-urls=http://{LOOPBACK}:{peer}",
            f"--initial-cluster=default=http://{LOOPBACK}:{peer}", "--unsafe-no-fsync=true",
            "--log-level=warn",
        ], self.workdir / "etcd.log")
        self.processes.append(etcd)
        etcd.wait_until(lambda: _http_ok(f"{self.etcd_url}/health"), 60, "healthy")

    def _start_apiserver(self, binary: Path) -> None:
        certs = self.workdir / "certs"
        certs.mkdir(exist_ok=True)
        sa_key = certs / "sa.key"
        if not sa_key.exists():
            subprocess.run(["openssl", "genrsa", "-out", str(sa_key), "2048"], check=True, capture_output=True)
        if not (certs / "front-proxy-client.crt").exists():
            openssl_ca(certs / "front-proxy-ca", "eventferry-front-proxy-ca")
            openssl_cert(certs / "front-proxy-ca", certs / "front-proxy-client", FRONT_PROXY_CLIENT, "clientAuth", [])
        self.token = uuid.uuid4().hex
        tokens = certs / "tokens.csv"
        tokens.write_text(f'{self.token},{ADMIN_TOKEN_USER},{ADMIN_TOKEN_USER},"system:masters"\n')
        port = free_port()
        self.url = f"https://{LOOPBACK}:{port}"
        apiserver = ManagedProcess("kube-apiserver", [
            str(binary), f"--etcd-servers={self.etcd_url}", f"--bind-address={LOOPBACK}",
            f"--advertise-address={LOOPBACK}", f"--secure-port={port}", f"--cert-dir={certs}",
            f"--token-auth-file={tokens}", "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            f"--service-account-key-file={sa_key}", f"--service-account-signing-key-file={sa_key}",
            "--service-cluster-ip-range=10.0.0.0/24", "--authorization-mode=RBAC",
            "--disable-admission-plugins=ServiceAccount", "--allow-privileged=true",
            # Loopback may not back the "kubernetes" Service endpoints; nothing here needs them.
            "--endpoint-reconciler-type=none", "--enable-priority-and-fairness=false", "--v=0",
            # API aggregation (APIServices such as KEDA's external metrics): the front proxy's client certificate.
            f"--requestheader-client-ca-file={certs / 'front-proxy-ca.crt'}",
            f"--proxy-client-cert-file={certs / 'front-proxy-client.crt'}",
            f"--proxy-client-key-file={certs / 'front-proxy-client.key'}",
            f"--requestheader-allowed-names={FRONT_PROXY_CLIENT}", "--requestheader-username-headers=X-Remote-User",
            "--requestheader-group-headers=X-Remote-Group", "--requestheader-extra-headers-prefix=X-Remote-Extra-",
        ], self.workdir / "kube-apiserver.log")
        self.processes.append(apiserver)
        apiserver.wait_until(self._ready, 120, "ready (GET /readyz)")
        self.kubeconfig = self.workdir / "kubeconfig"
        self.kubeconfig.write_text(self._kubeconfig_text())

    def _ssl_context(self) -> ssl.SSLContext:
        # The serving certificate is self-signed by kube-apiserver at start-up; the tests trust it by file.
        context = ssl.create_default_context(cafile=str(self.workdir / "certs" / "apiserver.crt"))
        return context

    def restart_apiserver(self, down: float = 0.0) -> None:
        """kube-apiserver stopped and started again on the same port over the same etcd; waits until ready."""
        self.restart("kube-apiserver", down).wait_until(self._ready, 120, "ready (GET /readyz) after a restart")

    def _ready(self) -> bool:
        request = urllib.request.Request(f"{self.url}/readyz", headers={"Authorization": f"Bearer {self.token}"})
        with urllib.request.urlopen(request, timeout=2, context=self._ssl_context()) as resp:
            return bool(resp.status == 200)

    def _kubeconfig_text(self) -> str:
        config = {
            "apiVersion": "v1", "kind": "Config", "current-context": "eventferry-test",
            "clusters": [{"name": "eventferry-test", "cluster": {
                "server": self.url, "certificate-authority": str(self.workdir / "certs" / "apiserver.crt")}}],
            "users": [{"name": ADMIN_TOKEN_USER, "user": {"token": self.token}}],
            "contexts": [{"name": "eventferry-test", "context": {
                "cluster": "eventferry-test", "user": ADMIN_TOKEN_USER, "namespace": "default"}}],
        }
        return json.dumps(config, indent=2)

    def exports(self) -> dict[str, str]:
        return {"KUBECONFIG": str(self.kubeconfig)}

    def kubectl(self, *args: str, stdin: str | None = None, timeout: float = 60) -> str:
        """Runs kubectl against this API server; fails with its output when kubectl fails."""
        done = subprocess.run([provision.kubectl(), *args], input=stdin, capture_output=True, text=True,
                              env=dict(os.environ, KUBECONFIG=str(self.kubeconfig)), timeout=timeout)
        if done.returncode != 0:
            raise RuntimeError(f"kubectl {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")
        return done.stdout

    def get_json(self, path: str) -> dict[str, Any]:
        """GET ``path`` on the API server as the admin, the answer as JSON."""
        request = urllib.request.Request(f"{self.url}{path}", headers={"Authorization": f"Bearer {self.token}"})
        with urllib.request.urlopen(request, timeout=10, context=self._ssl_context()) as resp:
            answer: dict[str, Any] = json.loads(resp.read())
            return answer

    def request_json(self, method: str, path: str, body: dict[str, Any] | None = None,
                     content_type: str = "application/json") -> dict[str, Any]:
        """``method`` on ``path`` as the admin with ``body`` as JSON, the answer as JSON; an error status
        raises ``urllib.error.HTTPError``. Server-side apply: PATCH, ``application/apply-patch+yaml``."""
        data = None if body is None else json.dumps(body).encode()
        headers = {"Authorization": f"Bearer {self.token}", "Accept": "application/json"}
        if data is not None:
            headers["Content-Type"] = content_type
        request = urllib.request.Request(f"{self.url}{path}", data=data, method=method, headers=headers)
        with urllib.request.urlopen(request, timeout=10, context=self._ssl_context()) as resp:
            answer: dict[str, Any] = json.loads(resp.read() or b"{}")
            return answer


def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True)


def openssl_ca(stem: Path, common_name: str) -> None:
    """A self-signed CA: ``<stem>.crt`` and ``<stem>.key``."""
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "3650", "-subj", f"/CN={common_name}",
             "-keyout", f"{stem}.key", "-out", f"{stem}.crt")


def openssl_cert(ca: Path, stem: Path, common_name: str, usage: str, sans: list[str]) -> None:
    """``<stem>.crt``/``<stem>.key`` signed by the CA ``<ca>.crt``; ``usage`` is serverAuth, clientAuth or both."""
    ext = stem.with_suffix(".ext")
    lines = ["basicConstraints=CA:FALSE", "keyUsage=digitalSignature,keyEncipherment", f"extendedKeyUsage={usage}"]
    if sans:
        lines.append("subjectAltName=" + ",".join(sans))
    ext.write_text("\n".join(lines) + "\n")
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={common_name}", "-keyout", f"{stem}.key",
             "-out", f"{stem}.csr")
    _openssl("x509", "-req", "-in", f"{stem}.csr", "-CA", f"{ca}.crt", "-CAkey", f"{ca}.key", "-CAcreateserial",
             "-days", "3650", "-extfile", str(ext), "-out", f"{stem}.crt")


# --- kube-controller-manager against a running KubeAPI (Deployments, ReplicaSets, HPAs, GC) -----------

KUBE_CONTROLLERS = ("deployment-controller", "replicaset-controller", "horizontal-pod-autoscaler-controller",
                    "garbage-collector-controller", "namespace-controller", "endpointslice-controller",
                    "serviceaccount-controller")


@dataclass
class KubeControllers(Server):
    """kube-controller-manager with the controllers the elasticity tests need; Pods stay Pending (no kubelet)."""

    port: int = 0

    @classmethod
    def start(cls, workdir: Path, kube: KubeAPI) -> KubeControllers:
        workdir.mkdir(parents=True, exist_ok=True)
        binary = provision.KUBE_CONTROLLER_MANAGER.ensure()
        server = cls(workdir=workdir, port=free_port())
        certs = kube.workdir / "certs"
        proc = ManagedProcess("kube-controller-manager", [
            str(binary), f"--kubeconfig={kube.kubeconfig}", f"--authentication-kubeconfig={kube.kubeconfig}",
            f"--authorization-kubeconfig={kube.kubeconfig}", f"--service-account-private-key-file={certs / 'sa.key'}",
            f"--root-ca-file={certs / 'apiserver.crt'}", f"--controllers={','.join(KUBE_CONTROLLERS)}",
            f"--bind-address={LOOPBACK}", f"--secure-port={server.port}", f"--cert-dir={workdir / 'certs'}",
            "--leader-elect=false", "--use-service-account-credentials=false",
            "--horizontal-pod-autoscaler-sync-period=5s",
            "--horizontal-pod-autoscaler-downscale-stabilization=15s",
            "--horizontal-pod-autoscaler-initial-readiness-delay=1s",
            "--concurrent-gc-syncs=5", "--v=1",
        ], workdir / "kube-controller-manager.log")
        server.processes.append(proc)
        try:
            proc.wait_until(lambda: _https_ok(f"https://{LOOPBACK}:{server.port}/healthz"), 60, "healthy (GET /healthz)")
        except BaseException:
            server.stop()
            raise
        return server

    def exports(self) -> dict[str, str]:
        return {}


# --- KEDA: operator and metrics API server as local processes, reached through an APIService ----------

KEDA_NAMESPACE = "keda"
KEDA_METRICS_SERVICE = "keda-metrics-apiserver"
EXTERNAL_METRICS_APISERVICE = "v1beta1.external.metrics.k8s.io"


@dataclass
class Keda(Server):
    """KEDA's CRDs installed, keda-operator and keda-metrics-apiserver running against ``kube``.

    The APIService ``v1beta1.external.metrics.k8s.io`` is backed by a Service of type ExternalName
    (``localhost``): the aggregator dials ``localhost:<port>``, the metrics server on loopback, and checks its
    certificate for ``keda-metrics-apiserver.keda.svc``. Operator and metrics server talk gRPC over mutual TLS
    with certificates generated here (``--enable-cert-rotation=false``: nothing is written into a Secret).
    """

    kube: KubeAPI | None = None
    metrics_port: int = 0
    grpc_port: int = 0

    @classmethod
    def start(cls, workdir: Path, kube: KubeAPI) -> Keda:
        workdir.mkdir(parents=True, exist_ok=True)
        bundle = provision.KEDA
        bundle.ensure()
        server = cls(workdir=workdir, kube=kube, metrics_port=free_port(), grpc_port=free_port())
        try:
            server._install(bundle.crds)
            certs = server._certificates()
            env = dict(os.environ, KUBECONFIG=str(kube.kubeconfig), WATCH_NAMESPACE="",
                       POD_NAMESPACE=KEDA_NAMESPACE, KEDA_CLUSTER_OBJECT_NAMESPACE=KEDA_NAMESPACE)
            probe = free_port()
            operator = ManagedProcess("keda-operator", [
                str(bundle.operator), f"--kubeconfig={kube.kubeconfig}", "--leader-elect=false",
                f"--metrics-bind-address={LOOPBACK}:{free_port()}", f"--health-probe-bind-address={LOOPBACK}:{probe}",
                f"--metrics-service-bind-address={LOOPBACK}:{server.grpc_port}", f"--cert-dir={certs}",
                "--enable-cert-rotation=false", "--enable-webhook-patching=false", "--enable-apiservice-patching=false",
                f"--ca-dir={certs}", "--zap-log-level=info", "--zap-encoder=console",
            ], workdir / "keda-operator.log", cwd=workdir, env=env)
            server.processes.append(operator)
            operator.wait_until(lambda: _http_ok(f"http://{LOOPBACK}:{probe}/readyz"), 90, "ready (GET /readyz)")
            adapter = ManagedProcess("keda-metrics-apiserver", [
                str(bundle.metrics_apiserver), f"--kubeconfig={kube.kubeconfig}",
                f"--lister-kubeconfig={kube.kubeconfig}",
                f"--authentication-kubeconfig={kube.kubeconfig}", f"--authorization-kubeconfig={kube.kubeconfig}",
                f"--bind-address={LOOPBACK}", f"--secure-port={server.metrics_port}", f"--cert-dir={certs}",
                f"--tls-cert-file={certs / 'tls.crt'}", f"--tls-private-key-file={certs / 'tls.key'}",
                f"--metrics-service-address={LOOPBACK}:{server.grpc_port}",
                f"--metrics-service-grpc-authority={LOOPBACK}", f"--port={free_port()}",
                "--zap-log-level=info", "--zap-encoder=console",
            ], workdir / "keda-metrics-apiserver.log", cwd=workdir, env=env)
            server.processes.append(adapter)
            adapter.wait_until(lambda: wait_for_port(server.metrics_port, 0.5), 90, "listening")
            server._register_apiservice(certs / "ca.crt")
            adapter.wait_until(server._apiservice_available, 90, f"serving APIService {EXTERNAL_METRICS_APISERVICE}")
        except BaseException:
            server.stop()
            raise
        return server

    def _install(self, crds: Path) -> None:
        assert self.kube is not None
        self.kube.kubectl("apply", "--server-side", "-f", str(crds))
        self.kube.kubectl("wait", "--for=condition=Established", "--timeout=60s", "-f", str(crds))
        self.kube.kubectl("apply", "-f", "-", stdin=json.dumps(
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": KEDA_NAMESPACE}}))

    def _certificates(self) -> Path:
        """ca.crt, tls.crt and tls.key as KEDA's gRPC (mutual TLS) and the metrics API server read them."""
        certs = self.workdir / "certs"
        certs.mkdir(exist_ok=True)
        if not (certs / "tls.crt").exists():
            openssl_ca(certs / "ca", "eventferry-keda-ca")
            sans = ["DNS:localhost", f"IP:{LOOPBACK}", f"DNS:{KEDA_METRICS_SERVICE}.{KEDA_NAMESPACE}.svc",
                    f"DNS:keda-operator.{KEDA_NAMESPACE}.svc"]
            openssl_cert(certs / "ca", certs / "tls", "keda", "serverAuth,clientAuth", sans)
        return certs

    def _register_apiservice(self, ca: Path) -> None:
        assert self.kube is not None
        service = {"apiVersion": "v1", "kind": "Service",
                   "metadata": {"name": KEDA_METRICS_SERVICE, "namespace": KEDA_NAMESPACE},
                   # ExternalName: no cluster IP, the aggregator dials localhost:<port> itself.
                   "spec": {"type": "ExternalName", "externalName": "localhost",
                            "ports": [{"name": "https", "port": self.metrics_port, "protocol": "TCP"}]}}
        apiservice = {"apiVersion": "apiregistration.k8s.io/v1", "kind": "APIService",
                      "metadata": {"name": EXTERNAL_METRICS_APISERVICE},
                      "spec": {"group": "external.metrics.k8s.io", "version": "v1beta1",
                               "groupPriorityMinimum": 100, "versionPriority": 100,
                               "caBundle": base64.b64encode(ca.read_bytes()).decode(),
                               "service": {"name": KEDA_METRICS_SERVICE, "namespace": KEDA_NAMESPACE,
                                           "port": self.metrics_port}}}
        self.kube.kubectl("apply", "-f", "-", stdin=json.dumps({"apiVersion": "v1", "kind": "List",
                                                                "items": [service, apiservice]}))

    def _apiservice_available(self) -> bool:
        assert self.kube is not None
        item = self.kube.get_json(f"/apis/apiregistration.k8s.io/v1/apiservices/{EXTERNAL_METRICS_APISERVICE}")
        conditions = item.get("status", {}).get("conditions", [])
        return any(c["type"] == "Available" and c["status"] == "True" for c in conditions)

    def external_metric(self, namespace: str, metric: str, scaled_object: str) -> dict[str, Any]:
        """The external metric as the HPA controller reads it, through the API server's aggregator."""
        assert self.kube is not None
        selector = urllib.parse.quote(f"scaledobject.keda.sh/name={scaled_object}")
        return self.kube.get_json(f"/apis/external.metrics.k8s.io/v1beta1/namespaces/{namespace}/{metric}"
                                  f"?labelSelector={selector}")

    def stop(self) -> None:
        super().stop()
        if self.kube is not None and self.kube.processes:
            # The API server outlives KEDA in a session: an APIService nobody serves would fail discovery.
            with contextlib.suppress(Exception):
                self.kube.kubectl("delete", "apiservice", EXTERNAL_METRICS_APISERVICE, "--ignore-not-found",
                                  "--wait=false", timeout=20)

    def exports(self) -> dict[str, str]:
        return {}


# --- Kafka: one KRaft node, broker and controller in one JVM ------------------------------------------

SCRAM_USER = "eventferry"
SCRAM_PASSWORD = "eventferry-secret"
PLAIN_USER = "plainuser"
PLAIN_PASSWORD = "plain-secret"


@dataclass
class Kafka(Server):
    """Listeners: PLAINTEXT (``bootstrap``), SASL_PLAINTEXT (``sasl_bootstrap``), SSL (``ssl_bootstrap``),
    SASL_SSL (``sasl_ssl_bootstrap``) and SSL requiring a client certificate (``mtls_bootstrap``). The SASL
    ones take PLAIN (``PLAIN_USER``) and SCRAM-SHA-256/512 (``SCRAM_USER``); the TLS ones serve a certificate
    for 127.0.0.1 and localhost signed by ``ca_cert``, a CA generated in the work directory, which also signed
    ``client_cert``/``client_key`` for the mutual-TLS listener."""

    bootstrap: str = ""
    sasl_bootstrap: str = ""
    ssl_bootstrap: str = ""
    sasl_ssl_bootstrap: str = ""
    mtls_bootstrap: str = ""
    ca_cert: Path = Path()  # PEM of the CA that signed the TLS listeners' certificate
    client_cert: Path = Path()  # PEM client certificate (and ``client_key``) the mutual-TLS listener accepts
    client_key: Path = Path()

    def restart_broker(self, down: float = 0.0) -> None:
        """The Kafka process stopped and started again with its ports and data; waits until it answers."""
        self.restart("kafka", down).wait_until(lambda: _kafka_answers(self.bootstrap), 120,
                                               "answering metadata requests after a restart")

    @classmethod
    def start(cls, workdir: Path) -> Kafka:
        workdir.mkdir(parents=True, exist_ok=True)
        libs = provision.KAFKA.ensure()
        java = provision.java()
        server = cls(workdir=workdir)
        keystore = server._certificates(workdir / "tls")
        ports: list[int] = []
        while len(ports) < 6:  # six distinct ones
            if (candidate := free_port()) not in ports:
                ports.append(candidate)
        port, sasl_port, ssl_port, sasl_ssl_port, mtls_port, controller = ports
        server.bootstrap = f"{LOOPBACK}:{port}"
        server.sasl_bootstrap = f"{LOOPBACK}:{sasl_port}"
        server.ssl_bootstrap = f"{LOOPBACK}:{ssl_port}"
        server.sasl_ssl_bootstrap = f"{LOOPBACK}:{sasl_ssl_port}"
        server.mtls_bootstrap = f"{LOOPBACK}:{mtls_port}"
        served = (f"PLAINTEXT://{server.bootstrap},SASL_PLAINTEXT://{server.sasl_bootstrap},SSL://{server.ssl_bootstrap},"
                  f"SASL_SSL://{server.sasl_ssl_bootstrap},MTLS://{server.mtls_bootstrap}")
        jaas = "".join(textwrap.dedent(f"""\
            listener.name.{name}.plain.sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required user_{PLAIN_USER}="{PLAIN_PASSWORD}";
            listener.name.{name}.scram-sha-256.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
            listener.name.{name}.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
            """) for name in ("sasl_plaintext", "sasl_ssl"))
        props = workdir / "server.properties"
        # TLS (KIP-651 PEM keystore): one file, the PKCS#8 key then the certificate chain; no key password. The
        # SSL and SASL_SSL listeners ask for no client certificate; MTLS requires one signed by the same CA.
        props.write_text(textwrap.dedent(f"""\
            process.roles=broker,controller
            node.id=1
            listeners={served},CONTROLLER://{LOOPBACK}:{controller}
            advertised.listeners={served}
            controller.listener.names=CONTROLLER
            inter.broker.listener.name=PLAINTEXT
            listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT,SASL_PLAINTEXT:SASL_PLAINTEXT,SSL:SSL,SASL_SSL:SASL_SSL,MTLS:SSL
            ssl.keystore.type=PEM
            ssl.keystore.location={keystore}
            ssl.client.auth=none
            listener.name.mtls.ssl.client.auth=required
            listener.name.mtls.ssl.truststore.type=PEM
            listener.name.mtls.ssl.truststore.location={server.ca_cert}
            controller.quorum.bootstrap.servers={LOOPBACK}:{controller}
            log.dirs={workdir / 'data'}
            num.partitions=1
            offsets.topic.replication.factor=1
            offsets.topic.num.partitions=4
            transaction.state.log.replication.factor=1
            transaction.state.log.min.isr=1
            share.coordinator.state.topic.replication.factor=1
            share.coordinator.state.topic.min.isr=1
            group.initial.rebalance.delay.ms=0
            auto.create.topics.enable=true
            sasl.enabled.mechanisms=PLAIN,SCRAM-SHA-256,SCRAM-SHA-512
            """) + jaas)
        log4j = workdir / "log4j2.properties"
        log4j.write_text(textwrap.dedent("""\
            rootLogger.level=WARN
            rootLogger.appenderRef.stdout.ref=STDOUT
            appender.stdout.type=Console
            appender.stdout.name=STDOUT
            appender.stdout.layout.type=PatternLayout
            appender.stdout.layout.pattern=[%d] %p %m (%c)%n
            logger.server.name=kafka.server.KafkaRaftServer
            logger.server.level=INFO
            """))
        classpath = f"{libs}/*"
        if not (workdir / "data" / "meta.properties").exists():
            cluster_id = subprocess.run([java, "-cp", classpath, "kafka.tools.StorageTool", "random-uuid"],
                                        check=True, capture_output=True, text=True).stdout.strip()
            scram = [f"SCRAM-SHA-256=[name={SCRAM_USER},password={SCRAM_PASSWORD}]",
                     f"SCRAM-SHA-512=[name={SCRAM_USER},password={SCRAM_PASSWORD}]"]
            fmt = [java, f"-Dlog4j2.configurationFile={log4j}", "-cp", classpath, "kafka.tools.StorageTool",
                   "format", "--standalone", "-t", cluster_id, "-c", str(props)]
            for item in scram:
                fmt += ["--add-scram", item]
            done = subprocess.run(fmt, capture_output=True, text=True)
            if done.returncode != 0:
                raise provision.ProvisionError(f"kafka storage format failed:\n{done.stdout}\n{done.stderr}")
        proc = ManagedProcess("kafka", [
            java, "-Xms256m", "-Xmx384m", *JVM_SMALL, f"-Dlog4j2.configurationFile={log4j}",
            "-cp", classpath, "kafka.Kafka", str(props),
        ], workdir / "kafka.log")
        server.processes.append(proc)
        try:
            proc.wait_until(lambda: wait_for_port(port, 0.5) and _kafka_answers(server.bootstrap), 120,
                            "answering metadata requests")
        except BaseException:
            server.stop()
            raise
        return server

    def _certificates(self, certs: Path) -> Path:
        """The CA ``kafka-ca``, the brokers' certificate and a client certificate, made once per work directory;
        returns the PEM keystore: the PKCS#8 private key, then the certificate and the CA's."""
        self.ca_cert, self.client_cert, self.client_key = certs / "kafka-ca.crt", certs / "client.crt", certs / "client.key"
        keystore = certs / "server-keystore.pem"
        if keystore.exists():
            return keystore
        certs.mkdir(parents=True, exist_ok=True)
        openssl_ca(certs / "kafka-ca", "kafka-ca")
        openssl_cert(certs / "kafka-ca", certs / "server", "kafka", "serverAuth", ["IP:127.0.0.1", "DNS:localhost"])
        openssl_cert(certs / "kafka-ca", certs / "client", "kafka-client", "clientAuth", [])
        key = (certs / "server.key").read_text()
        if "-----BEGIN PRIVATE KEY-----" not in key:  # Kafka's PEM keystore reads PKCS#8 keys only
            raise provision.ProvisionError(f"openssl wrote {certs / 'server.key'} in a form other than PKCS#8")
        partial = keystore.with_suffix(".partial")
        partial.write_text(key + (certs / "server.crt").read_text() + self.ca_cert.read_text())
        partial.replace(keystore)
        return keystore

    def exports(self) -> dict[str, str]:
        return {"KAFKA_BOOTSTRAP_SERVERS": self.bootstrap, "KAFKA_SASL_BOOTSTRAP_SERVERS": self.sasl_bootstrap,
                "KAFKA_SSL_BOOTSTRAP_SERVERS": self.ssl_bootstrap,
                "KAFKA_SASL_SSL_BOOTSTRAP_SERVERS": self.sasl_ssl_bootstrap,
                "KAFKA_MTLS_BOOTSTRAP_SERVERS": self.mtls_bootstrap, "KAFKA_CA_CERT": str(self.ca_cert)}


def _kafka_answers(bootstrap: str) -> bool:
    import asyncio

    from aiokafka.admin import AIOKafkaAdminClient

    async def probe() -> bool:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=3000)
        await admin.start()
        try:
            await admin.list_topics()
            return True
        finally:
            await admin.close()

    # A thread of its own, so that the probe also works when the caller already runs an event loop.
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, probe()).result()


# --- RocketMQ 5: name server, and the proxy in local mode with the broker in the same JVM -------------

# ACL 2.0 (RocketMQ >= 5.3.0; RocketMQAcl): the super user, made by the broker at its first start
# (initAuthenticationUser), is also the inner credentials of the broker and the proxy and the admin tool's
# (conf/tools.yml); the normal user may publish and subscribe to topics and groups named ROCKETMQ_ACL_PREFIX*.
ROCKETMQ_ADMIN_ACCESS_KEY = "rocketmq-admin"
ROCKETMQ_ADMIN_SECRET_KEY = "admin-secret-5f1c"
ROCKETMQ_ACCESS_KEY = "eventferry"
ROCKETMQ_SECRET_KEY = "eventferry-secret-8e2d"
ROCKETMQ_ACL_PREFIX = "acl-"


@dataclass
class RocketMQ(Server):
    namesrv: str = ""
    endpoint: str = ""  # the proxy's gRPC endpoint, for rocketmq-python-client
    remoting: str = ""  # the proxy's remoting endpoint (offsets, for the autoscaler's backlog)
    libs: Path = Path()
    acl: bool = False  # authentication and authorization (ACL 2.0) on the broker and the proxy

    @classmethod
    def start(cls, workdir: Path, acl: bool = False) -> RocketMQ:
        workdir.mkdir(parents=True, exist_ok=True)
        libs = provision.ROCKETMQ.ensure()
        java = provision.java()
        server = cls(workdir=workdir, libs=libs, acl=acl)
        home = workdir / "home"
        (home / "conf").mkdir(parents=True, exist_ok=True)
        ns_port = free_port()
        broker_port = free_port_block(below=2, above=1)
        grpc_port, remoting_port = free_port(), free_port()
        server.namesrv = f"{LOOPBACK}:{ns_port}"
        server.endpoint = f"{LOOPBACK}:{grpc_port}"
        server.remoting = f"{LOOPBACK}:{remoting_port}"
        (workdir / "namesrv.conf").write_text(f"listenPort={ns_port}\n")
        store = workdir / "store"
        (workdir / "broker.conf").write_text(textwrap.dedent(f"""\
            brokerClusterName=DefaultCluster
            brokerName=broker-a
            brokerId=0
            brokerIP1={LOOPBACK}
            listenPort={broker_port}
            namesrvAddr={server.namesrv}
            storePathRootDir={store}
            storePathCommitLog={store / 'commitlog'}
            mappedFileSizeCommitLog=67108864
            mappedFileSizeConsumeQueue=600000
            flushDiskType=ASYNC_FLUSH
            autoCreateTopicEnable=true
            autoCreateSubscriptionGroup=true
            defaultTopicQueueNums=4
            diskMaxUsedSpaceRatio=99
            """))
        proxy_conf: dict[str, Any] = {
            "rocketMQClusterName": "DefaultCluster", "proxyMode": "local", "nameSrvAddr": server.namesrv,
            "grpcServerPort": grpc_port, "remotingListenPort": remoting_port,
        }
        if acl:
            auth = _rocketmq_acl_config()
            with (workdir / "broker.conf").open("a") as conf:
                conf.writelines(f"{key}={str(value).lower() if isinstance(value, bool) else value}\n"
                                for key, value in auth.items())
            # In local mode the proxy authenticates gRPC clients itself, with the broker's users and ACLs.
            auth.pop("initAuthenticationUser")
            auth["authenticationMetadataProvider"] = "org.apache.rocketmq.proxy.auth.ProxyAuthenticationMetadataProvider"
            auth["authorizationMetadataProvider"] = "org.apache.rocketmq.proxy.auth.ProxyAuthorizationMetadataProvider"
            proxy_conf.update(auth)
            (home / "conf" / "tools.yml").write_text(
                f"accessKey: {ROCKETMQ_ADMIN_ACCESS_KEY}\nsecretKey: {ROCKETMQ_ADMIN_SECRET_KEY}\n")
        (workdir / "rmq-proxy.json").write_text(json.dumps(proxy_conf))
        rmq_logs = workdir / "logs" / "rocketmqlogs"  # RocketMQ logs under ${user.home}/logs
        common = [java, *JVM_SMALL, f"-Drocketmq.home.dir={home}", f"-Duser.home={workdir}",
                  "-cp", f"{libs}/*"]
        try:
            namesrv = ManagedProcess("rocketmq-namesrv", [
                *common[:1], "-Xms128m", "-Xmx256m", *common[1:],
                "org.apache.rocketmq.namesrv.NamesrvStartup", "-c", str(workdir / "namesrv.conf"),
            ], workdir / "namesrv.log", cwd=workdir, extra_logs=(rmq_logs / "namesrv_default.log",))
            server.processes.append(namesrv)
            namesrv.wait_until(lambda: wait_for_port(ns_port, 0.5), 60, "listening")
            proxy = ManagedProcess("rocketmq-proxy", [
                *common[:1], "-Xms256m", "-Xmx512m", *common[1:],
                "org.apache.rocketmq.proxy.ProxyStartup", "-pm", "local", "-n", server.namesrv,
                "-bc", str(workdir / "broker.conf"), "-pc", str(workdir / "rmq-proxy.json"),
            ], workdir / "proxy.log", cwd=workdir,
                extra_logs=(rmq_logs / "proxy.log", rmq_logs / "broker_default.log"))
            server.processes.append(proxy)
            proxy.wait_until(lambda: wait_for_port(grpc_port, 0.5) and server._broker_registered(), 120,
                             "serving gRPC with the broker registered")
            if acl:
                server._create_acl_user()
        except BaseException:
            server.stop()
            raise
        return server

    def mqadmin(self, *args: str, timeout: float = 60) -> str:
        """Runs RocketMQ's admin tool (from the same jars) against this name server."""
        done = subprocess.run([provision.java(), "-Xmx128m", *JVM_SMALL, f"-Drocketmq.home.dir={self.workdir / 'home'}",
                               "-cp", f"{self.libs}/*", "org.apache.rocketmq.tools.command.MQAdminStartup",
                               *args, "-n", self.namesrv], capture_output=True, text=True, timeout=timeout)
        if done.returncode != 0:
            raise RuntimeError(f"mqadmin {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")
        return done.stdout

    def create_topic(self, topic: str, queues: int = 4, message_type: str = "NORMAL") -> None:
        self.mqadmin("updateTopic", "-c", "DefaultCluster", "-t", topic, "-r", str(queues), "-w", str(queues),
                     "-a", f"+message.type={message_type}")

    def _broker_registered(self) -> bool:
        return "broker-a" in self.mqadmin("clusterList", timeout=20)

    def _create_acl_user(self) -> None:
        """The normal user ROCKETMQ_ACCESS_KEY, allowed to publish and subscribe to ROCKETMQ_ACL_PREFIX* topics and
        groups (the admin tool signs as the super user, conf/tools.yml)."""
        for args in (["createUser", "-u", ROCKETMQ_ACCESS_KEY, "-p", ROCKETMQ_SECRET_KEY, "-t", "Normal"],
                     ["createAcl", "-s", f"User:{ROCKETMQ_ACCESS_KEY}", "-a", "Pub,Sub", "-d", "Allow",
                      "-r", f"Topic:{ROCKETMQ_ACL_PREFIX}*,Group:{ROCKETMQ_ACL_PREFIX}*"]):
            out = self.mqadmin(*args, "-c", "DefaultCluster")
            if "success" not in out:  # the admin tool prints a failure and exits with 0
                raise RuntimeError(f"mqadmin {args[0]} failed:\n{out}")

    def exports(self) -> dict[str, str]:
        return {"ROCKETMQ_ENDPOINTS": self.endpoint, "ROCKETMQ_NAMESRV": self.namesrv}


@dataclass
class RocketMQAcl(RocketMQ):
    """RocketMQ with ACL 2.0: authentication and authorization on, clients must sign with a user's keys
    (ROCKETMQ_ACCESS_KEY / ROCKETMQ_SECRET_KEY for ROCKETMQ_ACL_PREFIX* topics and groups)."""

    @classmethod
    def start(cls, workdir: Path, acl: bool = True) -> RocketMQ:
        return super().start(workdir, acl=acl)


def _rocketmq_acl_config() -> dict[str, Any]:
    """ACL 2.0 settings of the broker (the proxy takes the same, with its own metadata providers)."""
    auth = "org.apache.rocketmq.auth"
    return {
        "authenticationEnabled": True,
        "authenticationProvider": f"{auth}.authentication.provider.DefaultAuthenticationProvider",
        "authenticationMetadataProvider": f"{auth}.authentication.provider.LocalAuthenticationMetadataProvider",
        "authorizationEnabled": True,
        "authorizationProvider": f"{auth}.authorization.provider.DefaultAuthorizationProvider",
        "authorizationMetadataProvider": f"{auth}.authorization.provider.LocalAuthorizationMetadataProvider",
        "initAuthenticationUser": json.dumps({"username": ROCKETMQ_ADMIN_ACCESS_KEY,
                                              "password": ROCKETMQ_ADMIN_SECRET_KEY}, separators=(",", ":")),
        "innerClientAuthenticationCredentials": json.dumps({"accessKey": ROCKETMQ_ADMIN_ACCESS_KEY,
                                                            "secretKey": ROCKETMQ_ADMIN_SECRET_KEY},
                                                           separators=(",", ":")),
    }


def _http_ok(url: str) -> bool:
    with urllib.request.urlopen(url, timeout=2) as resp:
        return bool(resp.status == 200)


def _https_ok(url: str) -> bool:
    """A self-signed loopback server (its certificate is generated at start-up and not checked here)."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with urllib.request.urlopen(url, timeout=2, context=context) as resp:
        return bool(resp.status == 200)

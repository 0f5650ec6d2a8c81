"""Where the Kubernetes API server is and how to authenticate: in a pod, its ServiceAccount; elsewhere, a kubeconfig.

Read here rather than by the ``kubernetes`` package: importing that package (and kopf imports it whenever
it is installed) cost each process about 30 MiB of models it never used. What is read:

- **In a pod** (``KUBERNETES_SERVICE_HOST`` set and the ServiceAccount token mounted): the API server at
  ``KUBERNETES_SERVICE_HOST:KUBERNETES_SERVICE_PORT``, verified with the mounted ``ca.crt``; the token file is
  read again when it changes, since the kubelet rotates it.
- **Elsewhere**: ``KUBECONFIG`` (a list of files, merged as kubectl does: the first file that names a
  context, cluster or user wins; ``current-context`` from the first that sets it), else
  ``~/.kube/config``. Of the cluster: ``server``, ``certificate-authority(-data)``,
  ``insecure-skip-tls-verify``. Of the user: ``token``, ``tokenFile``,
  ``client-certificate(-data)`` with ``client-key(-data)``, ``username``/``password``, and an ``exec``
  credential plugin (cloud clusters: its token or client certificate, run again when it expires).
  Relative paths are relative to the file that holds them.
"""

from __future__ import annotations

import base64
import contextlib
import datetime
import json
import os
import ssl
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

SERVICE_ACCOUNT_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")
EXEC_TIMEOUT = 60.0


class KubeConfigError(OSError):
    """No API server to talk to, or a kubeconfig that cannot be used; the message says which and what to do."""


@dataclass
class ClusterAccess:
    server: str
    ca_file: str | None = None
    ca_pem: str | None = None
    insecure: bool = False
    token: str | None = None
    token_file: str | None = None
    cert_file: str | None = None
    cert_pem: str | None = None
    key_file: str | None = None
    key_pem: str | None = field(default=None, repr=False)
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    exec_plugin: dict[str, Any] | None = None
    namespace: str | None = None
    _file_token: tuple[float, str] | None = field(default=None, repr=False)
    _exec_credential: tuple[datetime.datetime | None, dict[str, Any]] | None = field(default=None, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def ssl_context(self) -> ssl.SSLContext | None:
        """For an https server: its CA (or the system's), the client certificate if any; None for http."""
        if not self.server.startswith("https"):
            return None
        context = ssl.create_default_context(cafile=self.ca_file, cadata=self.ca_pem)
        cert_pem, key_pem = self.client_certificate()
        if self.cert_file and self.key_file and not cert_pem:
            context.load_cert_chain(self.cert_file, self.key_file)
        elif cert_pem and key_pem:
            with _pem_files(cert_pem, key_pem) as (cert_path, key_path):
                context.load_cert_chain(cert_path, key_path)
        if self.insecure:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        return context

    def client_certificate(self) -> tuple[str | None, str | None]:
        """The client certificate and key as PEM, from the kubeconfig or the exec plugin (files aside)."""
        if self.cert_pem and self.key_pem:
            return self.cert_pem, self.key_pem
        if self.exec_plugin is not None:
            status = self._exec_status()
            return status.get("clientCertificateData"), status.get("clientKeyData")
        return None, None

    def bearer_token(self) -> str | None:
        """The token to present now: the file's current content, the exec plugin's current token, or the fixed one."""
        if self.token_file:
            return self._read_token_file(self.token_file)
        if self.exec_plugin is not None:
            token = self._exec_status().get("token")
            return str(token) if token else None
        return self.token

    def authorization(self) -> str | None:
        """The ``Authorization`` header of a request, or None (client certificates only)."""
        token = self.bearer_token()
        if token:
            return f"Bearer {token}"
        if self.username is not None:
            pair = f"{self.username}:{self.password or ''}".encode()
            return f"Basic {base64.b64encode(pair).decode()}"
        return None

    def _read_token_file(self, path: str) -> str:
        try:
            stamp = os.stat(path).st_mtime
            kept = self._file_token
            if kept is not None and kept[0] == stamp:
                return kept[1]
            token = Path(path).read_text().strip()
        except OSError as error:
            raise KubeConfigError(f"cannot read the token file {path}: {error}") from None
        self._file_token = (stamp, token)
        return token

    def _exec_status(self) -> dict[str, Any]:
        with self._lock:
            kept = self._exec_credential
            now = datetime.datetime.now(datetime.UTC)
            if kept is not None and (kept[0] is None or kept[0] - now > datetime.timedelta(seconds=30)):
                return kept[1]
            status = _run_exec_plugin(self.exec_plugin or {})
            expiry = status.get("expirationTimestamp")
            expires = datetime.datetime.fromisoformat(expiry.replace("Z", "+00:00")) if expiry else None
            self._exec_credential = (expires, status)
            return status


def cluster_access() -> ClusterAccess:
    """In a pod, its ServiceAccount; else the kubeconfig that KUBECONFIG (or ~/.kube/config) names."""
    in_cluster = in_cluster_access()
    if in_cluster is not None:
        return in_cluster
    return kubeconfig_access()


def in_cluster_access(directory: Path | None = None) -> ClusterAccess | None:
    directory = directory or SERVICE_ACCOUNT_DIR
    host, port = os.environ.get("KUBERNETES_SERVICE_HOST"), os.environ.get("KUBERNETES_SERVICE_PORT", "443")
    token_file = directory / "token"
    if not host or not token_file.exists():
        return None
    authority = f"[{host}]" if ":" in host else host
    ca = directory / "ca.crt"
    namespace = directory / "namespace"
    return ClusterAccess(server=f"https://{authority}:{port}", ca_file=str(ca) if ca.exists() else None,
                         token_file=str(token_file),
                         namespace=namespace.read_text().strip() if namespace.exists() else None)


def kubeconfig_access(kubeconfig: str | None = None) -> ClusterAccess:
    names = kubeconfig if kubeconfig is not None else os.environ.get("KUBECONFIG")
    paths = [Path(p).expanduser() for p in (names or "").split(os.pathsep) if p.strip()]
    if not paths:
        default = Path("~/.kube/config").expanduser()
        if not default.exists():
            raise KubeConfigError("no Kubernetes API server: not in a pod, KUBECONFIG is not set and ~/.kube/config "
                                  "does not exist; set KUBECONFIG to the cluster's kubeconfig")
        paths = [default]
    current: str | None = None
    sections: dict[str, dict[str, tuple[dict[str, Any], Path]]] = {"contexts": {}, "clusters": {}, "users": {}}
    for path in paths:
        try:
            document = yaml.safe_load(path.read_text()) or {}
        except (OSError, yaml.YAMLError) as error:
            raise KubeConfigError(f"cannot read the kubeconfig {path}: {error}") from None
        current = current or document.get("current-context")
        for section, inner in (("contexts", "context"), ("clusters", "cluster"), ("users", "user")):
            for item in document.get(section) or ():
                sections[section].setdefault(item.get("name", ""), (item.get(inner) or {}, path.parent))
    where = os.pathsep.join(str(p) for p in paths)
    if not current or current not in sections["contexts"]:
        raise KubeConfigError(f"the kubeconfig {where} has no current context{f' {current!r}' if current else ''}: "
                              "set one with kubectl config use-context")
    context, _ = sections["contexts"][current]
    if context.get("cluster") not in sections["clusters"]:
        raise KubeConfigError(f"context {current!r} of {where} names a cluster it does not define")
    cluster, cluster_dir = sections["clusters"][context["cluster"]]
    user, user_dir = sections["users"].get(context.get("user", ""), ({}, cluster_dir))
    if not cluster.get("server"):
        raise KubeConfigError(f"cluster {context['cluster']!r} of {where} has no server")

    def path_of(value: str | None, base: Path) -> str | None:
        return str(base / Path(value).expanduser()) if value else None

    def pem_of(value: str | None) -> str | None:
        return base64.b64decode(value).decode("ascii") if value else None

    plugin = user.get("exec")
    if plugin is not None:
        plugin = {**plugin, "_dir": str(user_dir)}
    return ClusterAccess(
        server=str(cluster["server"]).rstrip("/"),
        ca_file=path_of(cluster.get("certificate-authority"), cluster_dir),
        ca_pem=pem_of(cluster.get("certificate-authority-data")),
        insecure=bool(cluster.get("insecure-skip-tls-verify")),
        token=user.get("token"),
        token_file=path_of(user.get("tokenFile"), user_dir),
        cert_file=path_of(user.get("client-certificate"), user_dir),
        cert_pem=pem_of(user.get("client-certificate-data")),
        key_file=path_of(user.get("client-key"), user_dir),
        key_pem=pem_of(user.get("client-key-data")),
        username=user.get("username"),
        password=user.get("password"),
        exec_plugin=plugin,
        namespace=context.get("namespace"),
    )


def _run_exec_plugin(plugin: dict[str, Any]) -> dict[str, Any]:
    """Runs a client-go credential plugin and returns its ExecCredential's status."""
    command = plugin.get("command")
    if not command:
        raise KubeConfigError("the kubeconfig's exec plugin has no command")
    env = dict(os.environ)
    for item in plugin.get("env") or ():
        env[str(item.get("name"))] = str(item.get("value", ""))
    env["KUBERNETES_EXEC_INFO"] = json.dumps({
        "apiVersion": plugin.get("apiVersion", "client.authentication.k8s.io/v1"), "kind": "ExecCredential",
        "spec": {"interactive": False}})
    try:
        done = subprocess.run([command, *(plugin.get("args") or ())], env=env, capture_output=True, text=True,
                              timeout=EXEC_TIMEOUT, cwd=plugin.get("_dir"), check=False)
    except (OSError, subprocess.TimeoutExpired) as error:
        hint = plugin.get("installHint") or ""
        raise KubeConfigError(f"the kubeconfig's credential plugin {command!r} did not run: {error}. {hint}") from None
    if done.returncode != 0:
        raise KubeConfigError(f"the kubeconfig's credential plugin {command!r} failed ({done.returncode}): "
                              f"{done.stderr.strip()[:500]}")
    try:
        status: dict[str, Any] = json.loads(done.stdout).get("status") or {}
    except (ValueError, AttributeError):
        raise KubeConfigError(f"the credential plugin {command!r} did not print an ExecCredential") from None
    return status


@contextlib.contextmanager
def _pem_files(cert_pem: str, key_pem: str) -> Iterator[tuple[str, str]]:
    """``load_cert_chain`` reads files only: the PEM in two private temporary files, removed at once."""
    with tempfile.TemporaryDirectory(prefix="eventferry-kube-") as directory:
        cert_path, key_path = Path(directory, "client.crt"), Path(directory, "client.key")
        for path, text in ((cert_path, cert_pem), (key_path, key_pem)):
            descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(descriptor, "w") as handle:
                handle.write(text)
        yield str(cert_path), str(key_path)

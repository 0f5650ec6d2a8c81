"""In a pod, the operator and the data plane reach the API server as their ServiceAccount (net/kubeconfig.py,
for our clients and kopf's login alike). No pod runs here, so the pod's view is made as the kubelet makes it:
``KUBERNETES_SERVICE_HOST``/``PORT`` and a directory with a token the real API server issued, its CA and the
namespace. Every other test reaches the API server through a kubeconfig; this one covers the path production
takes."""

from __future__ import annotations

import os
import shutil
import ssl
import time
import uuid
from pathlib import Path
from urllib.parse import urlsplit

import aiohttp
import pytest

from eventferry.controller.handlers import login
from eventferry.net.kubeconfig import cluster_access
from tests.env.servers import KubeAPI
from tests.support.tokens import request_token

pytestmark = pytest.mark.integration

API_AUDIENCE = "https://kubernetes.default.svc.cluster.local"  # the test API server's issuer, its default audience


async def get_status(url: str, context: ssl.SSLContext | None, authorization: str | None) -> int:
    headers = {"Authorization": authorization} if authorization else {}
    async with aiohttp.ClientSession() as session, session.get(url, ssl=context or True, headers=headers) as response:
        return response.status


async def test_a_pods_service_account_reaches_the_api_server_and_its_rotated_token_is_used(
        kube_api: KubeAPI, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ns = f"kube-access-{uuid.uuid4().hex[:6]}"
    kube_api.kubectl("create", "namespace", ns)
    for account in ("reader", "stranger"):
        kube_api.kubectl("create", "serviceaccount", account, "-n", ns)
    kube_api.kubectl("create", "role", "read-configmaps", "-n", ns, "--verb=get,list", "--resource=configmaps")
    kube_api.kubectl("create", "rolebinding", "reader", "-n", ns, "--role=read-configmaps",
                     f"--serviceaccount={ns}:reader")
    kube_api.kubectl("create", "configmap", "probe", "-n", ns, "--from-literal=k=v")

    mounted = tmp_path / "serviceaccount"
    mounted.mkdir()
    (mounted / "token").write_text(request_token(kube_api, ns, "reader", API_AUDIENCE))
    shutil.copy(kube_api.workdir / "certs" / "apiserver.crt", mounted / "ca.crt")
    (mounted / "namespace").write_text(ns)
    where = urlsplit(kube_api.url)
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", str(where.hostname))
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", str(where.port))
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "not-read"))  # the pod's account wins over a kubeconfig
    monkeypatch.setattr("eventferry.net.kubeconfig.SERVICE_ACCOUNT_DIR", mounted)

    access = cluster_access()
    assert (access.server, access.namespace) == (kube_api.url.rstrip("/"), ns)
    context = access.ssl_context()  # verifies the API server with the mounted ca.crt
    probe = f"{access.server}/api/v1/namespaces/{ns}/configmaps/probe"
    assert await get_status(probe, context, access.authorization()) == 200
    # It is the ServiceAccount, not an admin: the Role does not reach other namespaces.
    assert await get_status(f"{access.server}/api/v1/namespaces/default/configmaps", context,
                            access.authorization()) == 403
    assert await get_status(probe, context, None) in (401, 403)

    # The kubelet rotates the token file: the next request carries the new token (here, another account's).
    (mounted / "token").write_text(request_token(kube_api, ns, "stranger", API_AUDIENCE))
    later = time.time() + 2
    os.utime(mounted / "token", (later, later))
    assert await get_status(probe, context, access.authorization()) == 403

    # kopf logs in with the same: server, CA and the current token.
    info = login()
    assert info is not None
    assert (info.server, info.ca_path, info.default_namespace) == (access.server, str(mounted / "ca.crt"), ns)
    assert info.token == (mounted / "token").read_text()

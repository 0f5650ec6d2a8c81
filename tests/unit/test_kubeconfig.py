"""Finding the API server and its credentials without the kubernetes package (net/kubeconfig.py). Every
integration test reaches the real API server through it (the test environment's kubeconfig); these cover the
forms that environment does not use: a pod's ServiceAccount, merged files, tokens, exec plugins."""

from __future__ import annotations

import base64
import json
import os
import sys
import time
from pathlib import Path

import pytest
import yaml

from eventferry.net.kubeconfig import KubeConfigError, in_cluster_access, kubeconfig_access


def write(path: Path, document: dict[str, object]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(document))
    return path


def test_in_a_pod_the_service_account_is_used_and_its_rotated_token_read_again(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "token").write_text("first\n")
    (tmp_path / "namespace").write_text("eventferry-system")
    (tmp_path / "ca.crt").write_text("not read until a request")
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.96.0.1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", "6443")
    access = in_cluster_access(tmp_path)
    assert access is not None
    assert (access.server, access.namespace, access.ca_file) == (
        "https://10.96.0.1:6443", "eventferry-system", str(tmp_path / "ca.crt"))
    assert access.authorization() == "Bearer first"
    (tmp_path / "token").write_text("second")
    stamp = time.time() + 5
    os.utime(tmp_path / "token", (stamp, stamp))
    assert access.authorization() == "Bearer second"
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST")
    assert in_cluster_access(tmp_path) is None  # not in a pod


def test_kubeconfig_files_merge_as_kubectl_merges_them(tmp_path: Path) -> None:
    ca = base64.b64encode(b"-----BEGIN CERTIFICATE-----\nx\n-----END CERTIFICATE-----\n").decode()
    first = write(tmp_path / "a" / "config", {
        "current-context": "kind",
        "contexts": [{"name": "kind", "context": {"cluster": "kind", "user": "dev", "namespace": "live"}}],
        "clusters": [{"name": "kind", "cluster": {"server": "https://127.0.0.1:6443/",
                                                  "certificate-authority-data": ca}}],
    })
    second = write(tmp_path / "b" / "config", {
        "current-context": "other",
        "contexts": [{"name": "kind", "context": {"cluster": "nope", "user": "nope"}}],
        "clusters": [{"name": "kind", "cluster": {"server": "https://10.0.0.1"}}],
        "users": [{"name": "dev", "user": {"tokenFile": "token", "client-certificate": "dev.crt",
                                           "client-key": "dev.key"}}],
    })
    (tmp_path / "b" / "token").write_text("from-file")
    access = kubeconfig_access(os.pathsep.join([str(first), str(second)]))
    assert access.server == "https://127.0.0.1:6443"  # the first file's context and cluster
    assert access.ca_pem is not None and access.ca_pem.startswith("-----BEGIN CERTIFICATE-----")
    assert access.namespace == "live"
    # The user came from the second file: its relative paths are relative to that file.
    assert access.cert_file == str(tmp_path / "b" / "dev.crt")
    assert access.authorization() == "Bearer from-file"


def test_a_kubeconfig_that_cannot_be_used_says_what_to_do(tmp_path: Path) -> None:
    no_context = write(tmp_path / "config", {"clusters": [], "contexts": []})
    with pytest.raises(KubeConfigError, match="use-context"):
        kubeconfig_access(str(no_context))
    with pytest.raises(KubeConfigError, match="cannot read the kubeconfig"):
        kubeconfig_access(str(tmp_path / "missing"))
    basic = write(tmp_path / "basic", {
        "current-context": "c", "contexts": [{"name": "c", "context": {"cluster": "k", "user": "u"}}],
        "clusters": [{"name": "k", "cluster": {"server": "http://127.0.0.1:8080"}}],
        "users": [{"name": "u", "user": {"username": "admin", "password": "pw"}}]})
    access = kubeconfig_access(str(basic))
    assert access.authorization() == "Basic " + base64.b64encode(b"admin:pw").decode()
    assert access.ssl_context() is None  # plain http
    assert "pw" not in repr(access)


def test_an_exec_plugins_token_is_used_until_it_expires(tmp_path: Path) -> None:
    calls = tmp_path / "calls"
    plugin = tmp_path / "plugin.py"
    plugin.write_text(
        "import json, os, sys, datetime\n"
        f"open({str(calls)!r}, 'a').write('x')\n"
        "expiry = (datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=int(sys.argv[1])))\n"
        "assert json.loads(os.environ['KUBERNETES_EXEC_INFO'])['kind'] == 'ExecCredential'\n"
        "print(json.dumps({'apiVersion': 'client.authentication.k8s.io/v1', 'kind': 'ExecCredential',\n"
        "    'status': {'token': os.environ['GREETING'] + str(len(open(" + repr(str(calls)) + ").read())),\n"
        "               'expirationTimestamp': expiry.strftime('%Y-%m-%dT%H:%M:%SZ')}}))\n")

    def config(seconds: int) -> Path:
        return write(tmp_path / f"config-{seconds}", {
            "current-context": "c", "contexts": [{"name": "c", "context": {"cluster": "k", "user": "u"}}],
            "clusters": [{"name": "k", "cluster": {"server": "https://127.0.0.1:6443"}}],
            "users": [{"name": "u", "user": {"exec": {
                "apiVersion": "client.authentication.k8s.io/v1", "command": sys.executable,
                "args": [str(plugin), str(seconds)], "env": [{"name": "GREETING", "value": "t"}]}}}]})

    lasting = kubeconfig_access(str(config(3600)))
    assert [lasting.authorization() for _ in range(3)] == ["Bearer t1"] * 3  # run once, kept while valid
    expiring = kubeconfig_access(str(config(10)))  # within the 30 s margin: run again on each use
    assert [expiring.authorization() for _ in range(2)] == ["Bearer t2", "Bearer t3"]
    failing = write(tmp_path / "failing", json.loads(json.dumps(yaml.safe_load(config(3600).read_text()))))
    document = yaml.safe_load(failing.read_text())
    document["users"][0]["user"]["exec"]["command"] = str(tmp_path / "no-such-plugin")
    document["users"][0]["user"]["exec"]["installHint"] = "install the cloud's CLI"
    failing.write_text(yaml.safe_dump(document))
    with pytest.raises(KubeConfigError, match="install the cloud's CLI"):
        kubeconfig_access(str(failing)).authorization()

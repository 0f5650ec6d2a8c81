"""ServiceAccount tokens from the real API server (TokenRequest), as a kubelet would project them.

No kubelet runs in the tests: a process started from a Deployment gets its projected
``serviceAccountToken`` volumes written here, by the same API call the kubelet makes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.env.servers import KubeAPI

MIN_EXPIRATION = 600  # the API server refuses shorter tokens


def request_token(kube: KubeAPI, namespace: str, service_account: str, audience: str,
                  seconds: int = MIN_EXPIRATION) -> str:
    """A token of ``namespace/service_account`` for ``audience`` (the ServiceAccount must exist)."""
    answer = kube.request_json("POST", f"/api/v1/namespaces/{namespace}/serviceaccounts/{service_account}/token", {
        "apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
        "spec": {"audiences": [audience], "expirationSeconds": seconds}})
    token: str = answer["status"]["token"]
    return token


def project_tokens(kube: KubeAPI, deployment: dict[str, Any], root: Path) -> dict[str, str]:
    """Writes each projected ServiceAccount token of the pod template under ``root`` (as the kubelet mounts
    them) and returns the container's environment variables that point into a mount, rewritten to the copy."""
    namespace = deployment["metadata"]["namespace"]
    pod_spec = deployment["spec"]["template"]["spec"]
    account = pod_spec.get("serviceAccountName") or "default"
    volumes = {v["name"]: v for v in pod_spec.get("volumes") or ()}
    [container] = pod_spec["containers"]
    moved: dict[str, str] = {}
    for mount in container.get("volumeMounts") or ():
        projected = volumes[mount["name"]].get("projected")
        if projected is None:
            continue
        target = root / mount["name"]
        target.mkdir(parents=True, exist_ok=True)
        for source in projected["sources"]:
            token = source.get("serviceAccountToken")
            if token is not None:
                seconds = max(int(token.get("expirationSeconds", 3600)), MIN_EXPIRATION)
                (target / token["path"]).write_text(request_token(kube, namespace, account, token["audience"],
                                                                  seconds))
        moved[mount["mountPath"]] = str(target)
    env: dict[str, str] = {}
    for item in container.get("env") or ():
        value = item.get("value") or ""
        for mount_path, copy in moved.items():
            if value.startswith(mount_path + "/"):
                env[item["name"]] = copy + value[len(mount_path):]
    return env

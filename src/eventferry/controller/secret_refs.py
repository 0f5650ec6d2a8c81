"""The values of the Secret keys a spec refers to, read from the API server and held in memory only.

The source reconciler checks with it that an adapter's Secrets exist before deploying it (and the
built-in autoscaler connects with the values); the backlog endpoint signs its RocketMQ requests with
them. Nothing read here is written anywhere.
"""

from __future__ import annotations

import base64
from typing import TYPE_CHECKING, Any

from eventferry.apis.duck import SecretKeySelector
from eventferry.controller.kube import resource_path
from eventferry.kafka.connection import MappingSecrets
from eventferry.resources.status import StatusProblem

if TYPE_CHECKING:
    from eventferry.controller.kube import ApiClient


async def read_secret_refs(api: ApiClient, namespace: str,
                           refs: list[SecretKeySelector]) -> tuple[StatusProblem | None, MappingSecrets]:
    """Whether every key exists (``SecretNotFound`` naming the Secret and key, never a value), and the values."""
    found: dict[str, dict[str, Any] | None] = {}
    missing: list[str] = []
    values: dict[tuple[str, str], str] = {}
    for ref in refs:
        if ref.name not in found:
            found[ref.name] = await api.get(resource_path("v1", "secrets", namespace, ref.name))
        secret = found[ref.name]
        data = (secret or {}).get("data") or {}
        if ref.key in data:
            values[(ref.name, ref.key)] = base64.b64decode(data[ref.key]).decode("utf-8", "replace")
        elif ref.optional:
            continue
        elif secret is None:
            missing.append(f"Secret {namespace}/{ref.name} does not exist")
        else:
            missing.append(f"Secret {namespace}/{ref.name} has no key {ref.key!r}")
    found.clear()
    if not missing:
        return None, MappingSecrets(values)
    return StatusProblem("SecretNotFound", "; ".join(dict.fromkeys(missing))), MappingSecrets()

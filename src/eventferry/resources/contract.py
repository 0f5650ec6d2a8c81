"""The contract ConfigMap: the routing contract as the operator writes it and the data plane reads it.

Compact JSON under ``contract.json`` while it is small enough to read with ``kubectl get -o yaml`` (up to
``PLAIN_LIMIT``); past that, gzip-compressed under ``binaryData`` ``contract.json.gz``. Triggers repeat
most of their text (URLs, attribute names, the delivery), so the JSON compresses about 10 to 40 times:
a ConfigMap's 1 MiB then holds some 30,000 Triggers instead of about 3,000.
"""

from __future__ import annotations

import base64
import binascii
import gzip
import zlib
from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError

from eventferry.contract.model import Contract
from eventferry.resources.names import CONTRACT_CONFIGMAP, CONTRACT_GZIP_KEY, CONTRACT_KEY, MANAGED_BY, PART_OF, WATCHED

# The API server refuses a ConfigMap whose data exceeds 1 MiB; the margin leaves room for metadata.
MAX_CONTRACT_BYTES = 1024 * 1024 - 16 * 1024
PLAIN_LIMIT = 256 * 1024
"""Up to this many bytes the contract is stored as plain JSON, readable by a person."""
GZIP_LEVEL = 6


class ContractTooLarge(ValueError):
    def __init__(self, size: int, limit: int, triggers: int) -> None:
        super().__init__(f"the routing contract is {size} bytes for {triggers} Trigger(s), over the {limit}-byte "
                         "limit of a ConfigMap: it was not written, the data plane keeps the previous one")
        self.size = size
        self.limit = limit


def contract_json(contract: Contract) -> str:
    """Compact JSON: indentation would cost about a third of the ConfigMap's 1 MiB."""
    return contract.model_dump_json(by_alias=True, exclude_none=True)


def contract_config_map(contract: Contract, namespace: str, name: str = CONTRACT_CONFIGMAP,
                        limit: int = MAX_CONTRACT_BYTES, plain_limit: int = PLAIN_LIMIT) -> dict[str, Any]:
    """The ConfigMap holding ``contract``: plain JSON under ``contract.json`` up to ``plain_limit`` bytes, else
    compressed under ``binaryData`` ``contract.json.gz``; ContractTooLarge when what is stored exceeds ``limit``."""
    text = contract_json(contract).encode()
    stored: dict[str, Any] = {"data": {CONTRACT_KEY: text.decode()}}
    size = len(text)
    if size > plain_limit:
        packed = gzip.compress(text, GZIP_LEVEL, mtime=0)  # mtime 0: the same contract gives the same bytes
        stored, size = {"binaryData": {CONTRACT_GZIP_KEY: base64.b64encode(packed).decode()}}, len(packed)
    if size > limit:
        raise ContractTooLarge(size, limit, sum(len(b.triggers) for b in contract.brokers))
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": namespace, "labels": {**PART_OF, **MANAGED_BY, **WATCHED}},
        **stored,
    }


def stored_bytes(config_map: Mapping[str, Any]) -> int:
    """What the contract takes in the ConfigMap (compressed bytes when compressed)."""
    packed = (config_map.get("binaryData") or {}).get(CONTRACT_GZIP_KEY)
    if packed is not None:
        return len(base64.b64decode(packed))
    return len(str((config_map.get("data") or {}).get(CONTRACT_KEY, "")).encode())


def contract_from_config_map(config_map: Mapping[str, Any] | None) -> Contract:
    """The contract in a ConfigMap as the API returns it (``binaryData`` base64-encoded); ValueError (saying why)
    when it is missing or invalid."""
    config_map = config_map or {}
    packed = (config_map.get("binaryData") or {}).get(CONTRACT_GZIP_KEY)
    if packed is not None:
        try:
            text = gzip.decompress(base64.b64decode(packed, validate=True))
        except (binascii.Error, OSError, EOFError, zlib.error) as error:
            raise ValueError(f"{CONTRACT_GZIP_KEY} is not gzip-compressed base64: {error}") from None
        return _parse(text, CONTRACT_GZIP_KEY)
    return contract_from_data(config_map.get("data"))


def contract_from_data(data: Mapping[str, str] | None) -> Contract:
    """The contract in a ConfigMap's (plain) data; ValueError (saying why) when it is missing or invalid."""
    text = (data or {}).get(CONTRACT_KEY)
    if text is None:
        raise ValueError(f"the ConfigMap has neither the key {CONTRACT_KEY!r} nor {CONTRACT_GZIP_KEY!r}")
    return _parse(text, CONTRACT_KEY)


def _parse(text: str | bytes, key: str) -> Contract:
    try:
        return Contract.from_json(text)
    except ValidationError as error:
        raise ValueError(f"{key} is not a valid contract: {error}") from None


def same_routing(a: Contract, b: Contract) -> bool:
    """Whether two contracts route alike (their generations aside): then nothing needs writing."""
    return a.brokers == b.brokers

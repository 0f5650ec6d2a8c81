"""The contract ConfigMap: the routing contract as the operator writes it and the data plane reads it."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError

from eventferry.contract.model import Contract
from eventferry.resources.names import CONTRACT_CONFIGMAP, CONTRACT_KEY, MANAGED_BY, PART_OF

# The API server refuses a ConfigMap whose data exceeds 1 MiB; the margin leaves room for metadata.
MAX_CONTRACT_BYTES = 1024 * 1024 - 16 * 1024


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
                        limit: int = MAX_CONTRACT_BYTES) -> dict[str, Any]:
    """The ConfigMap holding ``contract`` under ``contract.json``; ContractTooLarge past ``limit`` bytes."""
    text = contract_json(contract)
    size = len(text.encode())
    if size > limit:
        raise ContractTooLarge(size, limit, sum(len(b.triggers) for b in contract.brokers))
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": namespace, "labels": {**PART_OF, **MANAGED_BY}},
        "data": {CONTRACT_KEY: text},
    }


def contract_from_data(data: Mapping[str, str] | None) -> Contract:
    """The contract in a ConfigMap's data; ValueError (saying why) when it is missing or invalid."""
    text = (data or {}).get(CONTRACT_KEY)
    if text is None:
        raise ValueError(f"the ConfigMap has no key {CONTRACT_KEY!r}")
    try:
        return Contract.from_json(text)
    except ValidationError as error:
        raise ValueError(f"{CONTRACT_KEY} is not a valid contract: {error}") from None


def same_routing(a: Contract, b: Contract) -> bool:
    """Whether two contracts route alike (their generations aside): then nothing needs writing."""
    return a.brokers == b.brokers

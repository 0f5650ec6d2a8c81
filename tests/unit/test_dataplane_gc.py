"""A large contract's objects are kept out of the garbage collector's full scans, and freed when replaced."""

from __future__ import annotations

import gc
import weakref

import pytest

from eventferry.contract.model import Broker, Contract, Trigger
from eventferry.dataplane.dataplane import SETTLE_FROM_TRIGGERS, DataPlane

pytestmark = pytest.mark.unit


def contract(triggers: int) -> Contract:
    return Contract(generation=triggers, brokers=[Broker(namespace="live", name="default", triggers=[
        Trigger(namespace="live", name=f"t{i}", subscriber="http://127.0.0.1:9/", attributes={"room": str(i)})
        for i in range(triggers)])])


class Node:
    """Something with a reference cycle: only the collector frees it."""

    def __init__(self) -> None:
        self.me = self


async def test_a_large_contract_is_frozen_and_a_smaller_one_frees_what_was_frozen() -> None:
    dataplane = DataPlane()
    try:
        cycle = Node()
        gone = weakref.ref(cycle)
        await dataplane.apply(contract(SETTLE_FROM_TRIGGERS))
        assert gc.get_freeze_count() > SETTLE_FROM_TRIGGERS  # the loaded Triggers are out of the full scans
        del cycle
        gc.collect()
        assert gone() is not None  # frozen, as everything alive at the load was
        await dataplane.apply(contract(3))
        assert gc.get_freeze_count() == 0
        assert gone() is None  # unfrozen and collected
    finally:
        gc.unfreeze()
        await dataplane.close()

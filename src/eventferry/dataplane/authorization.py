"""Who may send what to a Broker: its sender policies from the contract, compiled once per contract.

A request is allowed when one policy's subjects match the sender and each of its events passes that
policy's filters (Knative's EventPolicy semantics: policies add up, none denies). The contract already
holds the default authorization mode as a policy when no EventPolicy selects the Broker, so the rule
here is the only one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from eventferry.contract import model
from eventferry.dataplane.filters import Predicate, compile_filters
from eventferry.events import CloudEvent


class Forbidden(Exception):
    """The sender may not send this: the reason names the sender and what would let it in."""


@dataclass(frozen=True, slots=True)
class _Policy:
    name: str
    exact: frozenset[str]
    prefixes: tuple[str, ...]
    admits_events: Predicate | None  # None: every event

    def admits(self, subject: str) -> bool:
        return subject in self.exact or any(subject.startswith(prefix) for prefix in self.prefixes)


class SenderPolicies:
    def __init__(self, broker: model.Broker) -> None:
        self.broker = broker.key
        self._policies = [
            _Policy(policy.name,
                    frozenset(s for s in policy.subjects if not s.endswith("*")),
                    tuple(s[:-1] for s in policy.subjects if s.endswith("*")),
                    compile_filters(policy.filters) if policy.filters else None)
            for policy in broker.policies]

    def admitting(self, subject: str) -> list[_Policy]:
        """The policies that let ``subject`` in (some perhaps for some events only); Forbidden when none does."""
        found = [policy for policy in self._policies if policy.admits(subject)]
        if not found:
            names = ", ".join(p.name for p in self._policies) or "none: no sender is allowed"
            raise Forbidden(f"{subject} may not send to Broker {self.broker} (policies that apply: {names}); "
                            f"an EventPolicy selecting this Broker must name it in spec.from")
        return found

    @staticmethod
    def check_events(subject: str, admitting: Sequence[_Policy], events: Sequence[CloudEvent]) -> None:
        """Each event must pass the filters of one policy that admits ``subject``; all or nothing per request."""
        if any(policy.admits_events is None for policy in admitting):
            return
        for event in events:
            if not any(policy.admits_events is not None and policy.admits_events(event.attributes)
                       for policy in admitting):
                names = ", ".join(p.name for p in admitting)
                raise Forbidden(f"{subject} may not send event {event.id!r} of type {event.type!r}: it passes "
                                f"the filters of none of the policies that allow this sender ({names})")

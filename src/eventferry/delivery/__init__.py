"""Delivering CloudEvents over HTTP with Knative's DeliverySpec: retries, backoff, dead letters, replies.

Shared by the broker dispatcher and the source adapters' sink client.
"""

from eventferry.delivery.deliver import Outcome, Result, deliver
from eventferry.delivery.policy import backoff_seconds, is_retryable
from eventferry.delivery.sender import Attempt, Sender

__all__ = ["Attempt", "Outcome", "Result", "Sender", "backoff_seconds", "deliver", "is_retryable"]

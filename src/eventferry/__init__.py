"""EventFerry: Knative-style eventing for Kubernetes, in Python."""

__version__ = "0.1.0"

"""Pure builders: models and facts in, Kubernetes manifests (dicts) out; no I/O.

- ``adapter``: the adapter Deployment of a KafkaSource or RocketMQSource.
- ``contract``: the contract ConfigMap the operator writes and the data plane reads.
- ``readiness``: the data plane's reports of the contract generation it loaded, and the gate on them.
- ``status`` and ``conditions``: the status of each kind, from the facts the operator gathered.
- ``names``: names, labels and annotations shared by the operator, the data plane and the adapters.

The operator (``eventferry.controller``) and the data plane both import this package; it imports
nothing of either.
"""

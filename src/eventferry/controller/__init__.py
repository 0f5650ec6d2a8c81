"""The operator: the only package that imports kopf.

``handlers`` registers thin kopf handlers; ``contracts`` compiles every Broker and Trigger into the
contract ConfigMap and writes their status (the readiness gate on the data plane's reports);
``sources`` keeps one adapter Deployment per KafkaSource and RocketMQSource; ``leader`` elects one
active replica on a Lease; ``runner`` puts them together for ``eventferry operator``. What can be pure
is in ``eventferry.resources``. See docs/operator.md.
"""

"""The live-stream example services, the traffic that plays a live stream, and ``eventferry demo``.

Small aiohttp apps behind the Triggers of ``examples/live-stream`` (``python -m eventferry_examples.<service>``),
with real models that packages ship. Installed with the ``examples`` extra; ``eventferry`` itself never
imports this package, except ``eventferry demo`` when it runs.
"""

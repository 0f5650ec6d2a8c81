"""The embedded mode behind ``eventferry run``: manifest files loaded (``manifests``), compiled and
applied to a local data plane (``runtime``), source adapters hosted in the same process (``sources``),
and the built-in event display (``display``)."""

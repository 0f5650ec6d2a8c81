"""What every component shares on the wire: serving an aiohttp app with connection limits and the
probes (``httpserver``), reading whole request bodies up to a limit (``httpbody``), the delivery client
(``httpclient``), TLS (``tls``), and the connection to the Kubernetes API server (``kubeconn``, found by
``kubeconfig``)."""

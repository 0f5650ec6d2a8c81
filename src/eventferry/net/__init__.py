"""What every component shares on the wire: serving an aiohttp app with connection limits and the
probes (``httpserver``), reading whole HTTP bodies up to a limit (``httpbody``), and the connection
to the Kubernetes API server (``kubeconn``)."""

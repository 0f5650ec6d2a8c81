"""Cluster DNS names of Services, resolved to loopback stand-ins in the processes a test starts.

No cluster DNS runs here. A process started with ``LoopbackServices.env()`` imports a ``sitecustomize``
shim (Python imports it at start-up from PYTHONPATH) that wraps ``socket.getaddrinfo``: each
``<svc>.<ns>.svc.cluster.local`` name listed in a JSON file ``{"<host>": port}`` resolves to
127.0.0.1 and that port, whatever port the URL named (``http://svc.ns.svc.cluster.local/`` is port
80 in a cluster, the stand-in's port here); any other ``*.svc.cluster.local`` name fails to resolve
(``socket.gaierror``), as an unknown Service does. Other names resolve as usual.

The file is read again when it changes (or when a name is not in it yet), so a Service added with
``add`` after the process started resolves too. ``add`` replaces the file atomically (a temporary
file, then ``os.replace``): a process never reads half of it.
"""

from __future__ import annotations

import json
import os
import tempfile
import textwrap
import threading
from pathlib import Path

SERVICES_FILE_VARIABLE = "EVENTFERRY_LOOPBACK_SERVICES_FILE"

SHIM = textwrap.dedent('''\
    """Maps the *.svc.cluster.local names listed in $EVENTFERRY_LOOPBACK_SERVICES_FILE to loopback ports."""
    import json as _json
    import os as _os
    import socket as _socket

    _SERVICES_FILE = _os.environ.get("EVENTFERRY_LOOPBACK_SERVICES_FILE")
    if _SERVICES_FILE:
        _getaddrinfo = _socket.getaddrinfo
        _read = (None, {})  # (the file's stat signature, its services); replaced whole, so thread-safe

        def _services(host):
            global _read
            try:
                stat = _os.stat(_SERVICES_FILE)
                signature = (stat.st_mtime_ns, stat.st_ino, stat.st_size)
            except OSError:
                signature = None
            # A name not known yet is read again too: two writes within the clock's resolution keep the mtime.
            if signature is not None and (signature != _read[0] or host not in _read[1]):
                try:
                    with open(_SERVICES_FILE, encoding="utf-8") as services_file:
                        _read = (signature, dict(_json.load(services_file)))
                except (OSError, ValueError):
                    pass
            return _read[1]

        def _mapped(host, port, *args, **kwargs):
            name = host.decode() if isinstance(host, bytes) else host
            if isinstance(name, str) and name.rstrip(".").endswith(".svc.cluster.local"):
                name = name.rstrip(".")
                services = _services(name)
                if name not in services:
                    raise _socket.gaierror(_socket.EAI_NONAME, f"{name}: no local stand-in (loopback DNS shim)")
                return _getaddrinfo("127.0.0.1", services[name], *args, **kwargs)
            return _getaddrinfo(host, port, *args, **kwargs)

        _socket.getaddrinfo = _mapped
    ''')


class LoopbackServices:
    """The shim and its services file in ``workdir``; ``env()`` for the processes that should use them."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.shim_dir = workdir / "loopback-dns"
        self.shim_dir.mkdir(parents=True, exist_ok=True)
        (self.shim_dir / "sitecustomize.py").write_text(SHIM, encoding="utf-8")
        self.services_file = self.shim_dir / "services.json"
        self.services: dict[str, int] = {}
        self._lock = threading.Lock()  # add() may be called from a harness thread and the test's at once
        self._write()

    def env(self) -> dict[str, str]:
        """What to add to a process's environment: the shim's directory first on PYTHONPATH, and the file."""
        pythonpath = [str(self.shim_dir)]
        if os.environ.get("PYTHONPATH"):
            pythonpath.append(os.environ["PYTHONPATH"])
        return {"PYTHONPATH": os.pathsep.join(pythonpath), SERVICES_FILE_VARIABLE: str(self.services_file)}

    def add(self, host: str, port: int) -> None:
        """``host`` (``<svc>.<ns>.svc.cluster.local``) resolves to 127.0.0.1:``port`` from now on."""
        assert host.endswith(".svc.cluster.local"), f"{host}: not a cluster Service name"
        with self._lock:
            self.services[host] = port
            self._write()

    def _write(self) -> None:
        descriptor, temporary = tempfile.mkstemp(dir=self.shim_dir, prefix=".services-", suffix=".json")
        try:
            with os.fdopen(descriptor, "w", encoding="utf-8") as out:
                json.dump(self.services, out)
            os.replace(temporary, self.services_file)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise

"""TLS for the ingress and for deliveries: a server certificate that follows its files, and trust per destination.

The server certificate comes from two files (a Secret volume: ``tls.crt`` and ``tls.key``, as cert-manager
writes them). When they change, the certificate is loaded into the same SSL context: new connections are
served with it, connections already open keep theirs, so a rotation drops nothing. A pair that does not
load (half written, mismatched) is logged and the current certificate stays.

Deliveries verify the server's certificate: against the system's CAs, plus a destination's own CA
certificates when it has them (Knative's ``CACerts``).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import ssl
from collections import OrderedDict
from pathlib import Path

log = logging.getLogger(__name__)

RELOAD_CHECK_SECONDS = 10.0
MAX_TRUST_CONTEXTS = 256  # distinct CA bundles held at once (one per destination that has its own)


class ServerCertificate:
    def __init__(self, cert_file: str | Path, key_file: str | Path) -> None:
        self.cert_file, self.key_file = Path(cert_file), Path(key_file)
        self.context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.context.minimum_version = ssl.TLSVersion.TLSv1_2
        self._stamp: tuple[float, float] | None = None
        self.loads = 0
        if not self.reload():
            raise ssl.SSLError(f"cannot load the certificate {self.cert_file} with its key {self.key_file}: "
                               "see the log above")

    def _stamps(self) -> tuple[float, float]:
        # stat follows symlinks: a Secret volume swaps its ..data link, and the files behind it change.
        return os.stat(self.cert_file).st_mtime, os.stat(self.key_file).st_mtime

    def reload(self) -> bool:
        """Loads the pair if it changed since the last load; whether the context holds a loaded pair."""
        try:
            stamp = self._stamps()
            if stamp == self._stamp:
                return True
            self.context.load_cert_chain(self.cert_file, self.key_file)
        except (OSError, ssl.SSLError) as error:
            log.warning("cannot load the TLS certificate %s with key %s (%s): %s", self.cert_file, self.key_file,
                        error, "keeping the one loaded before" if self._stamp else "none loaded")
            return self._stamp is not None
        self._stamp = stamp
        self.loads += 1
        if self.loads > 1:
            log.info("TLS certificate %s loaded again: new connections are served with it", self.cert_file)
        return True

    async def follow(self, stop: asyncio.Event, interval: float = RELOAD_CHECK_SECONDS) -> None:
        """Reloads the pair when its files change, until ``stop``."""
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), interval)
            self.reload()


@functools.cache
def system_context() -> ssl.SSLContext:
    """Verifies a server with the system's CA certificates: made once, shared by every https destination."""
    return ssl.create_default_context()


class Trust:
    """The SSL context to verify a destination with: the system's CAs, plus its own CA certificates."""

    def __init__(self) -> None:
        self._by_url: dict[str, str] = {}
        self._contexts: OrderedDict[str, ssl.SSLContext] = OrderedDict()

    def set(self, ca_certs_by_url: dict[str, str]) -> None:
        """The destinations that bring their own CA certificates (PEM), by URL; all others use the system's."""
        self._by_url = dict(ca_certs_by_url)

    def context_for(self, url: str) -> ssl.SSLContext:
        """The context that verifies the destination: with its own CAs besides the system's, or the system's."""
        pem = self._by_url.get(url)
        if pem is None:
            return system_context()
        context = self._contexts.get(pem)
        if context is None:
            context = ssl.create_default_context()
            try:
                context.load_verify_locations(cadata=pem)
            except (ssl.SSLError, ValueError) as error:
                # Refused by the API model already; a contract from elsewhere fails the attempt, not the loop.
                raise ssl.SSLError(f"the destination's CACerts are not valid PEM certificates: {error}") from None
            self._contexts[pem] = context
            while len(self._contexts) > MAX_TRUST_CONTEXTS:
                self._contexts.popitem(last=False)
        else:
            self._contexts.move_to_end(pem)
        return context

"""Certificates for the tests' TLS: a CA and server certificates it signs, made with openssl (the test env's)."""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path

from tests.env.servers import openssl_ca, openssl_cert

LOOPBACK_NAMES = ["IP:127.0.0.1", "DNS:localhost"]


@dataclass(frozen=True)
class Authority:
    stem: Path

    @property
    def cert(self) -> Path:
        return self.stem.with_suffix(".crt")

    @property
    def pem(self) -> str:
        return self.cert.read_text()

    def client_context(self) -> ssl.SSLContext:
        """A client context that trusts this CA only."""
        return ssl.create_default_context(cafile=str(self.cert))

    def issue(self, stem: Path, common_name: str = "localhost", sans: list[str] | None = None) -> tuple[Path, Path]:
        """A server certificate for loopback: (certificate file, key file)."""
        openssl_cert(self.stem, stem, common_name, "serverAuth", sans or LOOPBACK_NAMES)
        return stem.with_suffix(".crt"), stem.with_suffix(".key")


def authority(directory: Path, name: str) -> Authority:
    directory.mkdir(parents=True, exist_ok=True)
    stem = directory / name
    openssl_ca(stem, name)
    return Authority(stem)


def server_context(cert: Path, key: Path) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    return context

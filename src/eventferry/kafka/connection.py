"""How to connect to a KafkaSource's Kafka: SASL and TLS read from the Secret keys its spec names.

Shared by the adapter (Secrets mounted as files) and the operator's built-in autoscaler, which reads
the consumer group's lag while no adapter runs (Secrets read from the API, held in memory only).
"""

from __future__ import annotations

import os
import ssl
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from aiokafka.conn import create_conn
from aiokafka.errors import (
    AuthenticationFailedError,
    KafkaError,
    SaslAuthenticationFailed,
    UnsupportedSaslMechanismError,
)

from eventferry.apis.duck import SecretValueFromSource
from eventferry.apis.kafkasource import KafkaNetSpec

SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")

AUTH_ERRORS = (SaslAuthenticationFailed, AuthenticationFailedError, UnsupportedSaslMechanismError)
"""Kafka refused the credentials: waiting does not help."""


class CredentialsError(ValueError):
    """A Secret key the spec needs is missing or holds something unusable; the message names the field."""


class SecretLookup(Protocol):
    def get(self, name: str, key: str) -> str | None:
        """The value of key ``key`` of Secret ``name``, or None when it is not there."""

    def describe(self, name: str, key: str) -> str:
        """Where the value was looked for, for error messages."""


class DirectorySecrets:
    """Secret keys mounted as files ``<root>/<secret name>/<key>`` (a projected volume per Secret)."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)

    def get(self, name: str, key: str) -> str | None:
        try:
            return (self.root / name / key).read_text()
        except (FileNotFoundError, NotADirectoryError):
            return None

    def describe(self, name: str, key: str) -> str:
        return str(self.root / name / key)


class MappingSecrets:
    """Secret values held in memory: {(secret name, key): value}."""

    def __init__(self, values: Mapping[tuple[str, str], str] | None = None) -> None:
        self.values = dict(values or {})

    def get(self, name: str, key: str) -> str | None:
        return self.values.get((name, key))

    def describe(self, name: str, key: str) -> str:
        return f"Secret {name!r} key {key!r}"


@dataclass(frozen=True)
class Sasl:
    mechanism: str
    username: str
    password: str = field(repr=False)


@dataclass(frozen=True)
class Tls:
    ca_cert: str | None = None  # PEM
    cert: str | None = None  # PEM, client certificate for mutual TLS
    key: str | None = field(default=None, repr=False)  # PEM


def secret_value(secrets: SecretLookup, ref: SecretValueFromSource | None, what: str) -> str | None:
    """The value ``ref`` points to; None for no ref or an optional key that is missing."""
    if ref is None:
        return None
    selector = ref.secret_key_ref
    value = secrets.get(selector.name, selector.key)
    if value is None and not selector.optional:
        raise CredentialsError(f"{what}: Secret {selector.name!r} key {selector.key!r} is not available "
                               f"(looked for {secrets.describe(selector.name, selector.key)})")
    return value


def security(net: KafkaNetSpec | None, secrets: SecretLookup) -> tuple[Sasl | None, Tls | None]:
    """SASL and TLS of ``spec.net``, their values read through ``secrets``."""
    sasl: Sasl | None = None
    tls: Tls | None = None
    if net is not None and net.sasl is not None and net.sasl.enable:
        assert net.sasl.user is not None and net.sasl.password is not None  # the model requires them when enabled
        user = secret_value(secrets, net.sasl.user, "spec.net.sasl.user")
        password = secret_value(secrets, net.sasl.password, "spec.net.sasl.password")
        mechanism = (secret_value(secrets, net.sasl.type, "spec.net.sasl.type") or "PLAIN").strip().upper()
        if mechanism not in SASL_MECHANISMS:
            raise CredentialsError(f"spec.net.sasl.type is {mechanism!r}: use one of {', '.join(SASL_MECHANISMS)}")
        if user is None or password is None:
            raise CredentialsError("spec.net.sasl is enabled but its user or password Secret key is optional "
                                   "and missing")
        sasl = Sasl(mechanism, user, password)
    if net is not None and net.tls is not None and net.tls.enable:
        tls = Tls(ca_cert=secret_value(secrets, net.tls.ca_cert, "spec.net.tls.caCert"),
                  cert=secret_value(secrets, net.tls.cert, "spec.net.tls.cert"),
                  key=secret_value(secrets, net.tls.key, "spec.net.tls.key"))
        if (tls.cert is None) != (tls.key is None):
            raise CredentialsError("spec.net.tls: the client certificate and key must both be present, or neither")
    return sasl, tls


# A Kafka-class Broker's credentials: one Secret, named in its config ConfigMap (``auth.secret.ref.name``), with
# Knative's keys (its kafka-broker-config format).
BROKER_SECRET_KEYS = ("protocol", "sasl.mechanism", "user", "password", "ca.crt", "user.crt", "user.key")
PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")


def broker_security(values: Mapping[str, str], where: str) -> tuple[Sasl | None, Tls | None]:
    """SASL and TLS from a Broker's credentials Secret (Knative's keys); ``where`` names it in errors."""
    protocol = (values.get("protocol") or "").strip().upper()
    if protocol not in PROTOCOLS:
        raise CredentialsError(f"{where}: key 'protocol' is {protocol or 'missing'}: set one of {', '.join(PROTOCOLS)}")
    sasl: Sasl | None = None
    tls: Tls | None = None
    if protocol.startswith("SASL_"):
        mechanism = (values.get("sasl.mechanism") or "PLAIN").strip().upper()
        if mechanism not in SASL_MECHANISMS:
            raise CredentialsError(f"{where}: key 'sasl.mechanism' is {mechanism!r}: use one of "
                                   f"{', '.join(SASL_MECHANISMS)}")
        user, password = values.get("user"), values.get("password")
        if not user or password is None:
            raise CredentialsError(f"{where}: protocol {protocol} needs the keys 'user' and 'password'")
        sasl = Sasl(mechanism, user.strip(), password)
    if protocol.endswith("SSL"):
        tls = Tls(ca_cert=values.get("ca.crt") or None, cert=values.get("user.crt") or None,
                  key=values.get("user.key") or None)
        if (tls.cert is None) != (tls.key is None):
            raise CredentialsError(f"{where}: keys 'user.crt' and 'user.key' go together (mutual TLS), or neither")
    return sasl, tls


def security_protocol(sasl: Sasl | None, tls: Tls | None) -> str:
    if sasl is not None:
        return "SASL_SSL" if tls is not None else "SASL_PLAINTEXT"
    return "SSL" if tls is not None else "PLAINTEXT"


def client_options(bootstrap_servers: tuple[str, ...] | list[str], sasl: Sasl | None,
                   tls: Tls | None) -> dict[str, Any]:
    """aiokafka connection options: bootstrap servers, security protocol, SASL and TLS."""
    options: dict[str, Any] = {"bootstrap_servers": list(bootstrap_servers),
                               "security_protocol": security_protocol(sasl, tls)}
    if sasl is not None:
        options.update(sasl_mechanism=sasl.mechanism, sasl_plain_username=sasl.username,
                       sasl_plain_password=sasl.password)
    if tls is not None:
        options["ssl_context"] = ssl_context(tls)
    return options


async def connection_failure(options: Mapping[str, Any]) -> BaseException | None:
    """Why Kafka cannot be reached with ``options`` (aiokafka client options), found with one direct connection
    per bootstrap server: aiokafka's own error says only 'unable to bootstrap'. None when one connects, or when
    no server names a reason (then the original error is all there is)."""
    direct = {k: v for k, v in options.items() if k not in ("bootstrap_servers", "client_id", "request_timeout_ms")}
    servers = options["bootstrap_servers"]
    reason: BaseException | None = None
    for server in servers.split(",") if isinstance(servers, str) else servers:
        host, _, port = str(server).rpartition(":")
        try:
            conn = await create_conn(host, int(port), request_timeout_ms=10000, **direct)
            conn.close()
            return None
        except AUTH_ERRORS as error:
            refused: BaseException = error
            return refused
        except ssl.SSLError as error:
            reason = error
        except (KafkaError, OSError, TimeoutError, ValueError) as error:
            reason = reason or error
    return reason


def explain_connection_failure(error: BaseException, servers: list[str] | tuple[str, ...], sasl: Sasl | None,
                               credentials: str) -> str:
    """A message that says why and what to check; ``credentials`` names where the SASL and TLS settings come
    from (a Secret, spec.net). Never quotes a secret value."""
    where = ",".join(servers)
    if isinstance(error, AUTH_ERRORS):
        who = f" as user {sasl.username!r} with {sasl.mechanism}" if sasl else ""
        return f"Kafka authentication failed{who} at {where}: {error}; check {credentials}"
    if isinstance(error, ssl.SSLCertVerificationError):
        return (f"Kafka's TLS certificate at {where} did not verify ({error.verify_message}): check the CA "
                f"certificate of {credentials}")
    if isinstance(error, ssl.SSLError):
        return f"the TLS handshake with Kafka at {where} failed ({error}): check the protocol and TLS of {credentials}"
    text = str(error)
    return text if text.startswith(type(error).__name__) else f"{type(error).__name__}: {text}"


def ssl_context(tls: Tls) -> ssl.SSLContext:
    context = ssl.create_default_context(cadata=tls.ca_cert) if tls.ca_cert else ssl.create_default_context()
    if tls.cert and tls.key:
        # ssl loads a client key pair only from files: write them where only this process can read, briefly.
        with tempfile.TemporaryDirectory(prefix="eventferry-tls-") as directory:
            cert, key = os.path.join(directory, "tls.crt"), os.path.join(directory, "tls.key")
            for path, text in ((cert, tls.cert), (key, tls.key)):
                descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                with os.fdopen(descriptor, "w") as handle:
                    handle.write(text)
            context.load_cert_chain(cert, key)
    return context

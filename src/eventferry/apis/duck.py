"""Duck types shared by the kinds, as Knative's duck/v1: KReference, Destination, Secret key
references and CloudEvent overrides."""

from __future__ import annotations

import re
import ssl
from urllib.parse import urlsplit

from pydantic import ConfigDict, Field, field_validator, model_validator

from eventferry.apis.meta import ApiModel, cel

# CloudEvents 1.0: attribute names are lower-case ASCII letters and digits.
CE_ATTRIBUTE_NAME = re.compile(r"^[a-z0-9]+$")
# PEM CA bundles of a destination: a few certificates (bounds the CEL rule's cost too).
MAX_CA_CERTS_BYTES = 65536
# Bounds the cost of the CEL rule on the names, which the API server refuses when unbounded.
MAX_EXTENSIONS = 32
CE_CORE_ATTRIBUTES = frozenset(
    {"specversion", "id", "source", "type", "datacontenttype", "dataschema", "subject", "time", "data"}
)


class KReference(ApiModel):
    """A reference to an object in the cluster: a Service, a Broker, a ConfigMap..."""

    api_version: str = Field(min_length=1)
    kind: str = Field(min_length=1)
    name: str = Field(min_length=1)
    namespace: str | None = None
    """Defaults to the namespace of the object holding the reference."""
    address: str | None = None
    """Name of one of the addresses of an addressable with several."""


class Destination(ApiModel):
    """Where events go: a ``ref`` to an addressable object, a ``uri``, or a ``uri`` relative to the ref's URL."""

    model_config = ConfigDict(
        json_schema_extra=cel("has(self.ref) || has(self.uri)", "a destination needs a ref or a uri (or both)")
    )

    ref: KReference | None = None
    uri: str | None = None
    """Absolute URL; when ref is set too, a path resolved against the ref's URL."""
    ca_certs: str | None = Field(
        default=None, alias="CACerts", max_length=MAX_CA_CERTS_BYTES,
        json_schema_extra=cel("self.contains('-----BEGIN CERTIFICATE-----')",
                              "CACerts must be PEM CA certificates (-----BEGIN CERTIFICATE-----)"))
    """PEM CA certificates to trust for an https destination (besides the system's)."""
    audience: str | None = None
    """OIDC audience of the destination."""

    @field_validator("ca_certs")
    @classmethod
    def _pem_certificates(cls, ca_certs: str | None) -> str | None:
        if ca_certs is not None:
            try:
                ssl.create_default_context().load_verify_locations(cadata=ca_certs)
            except (ssl.SSLError, ValueError) as error:
                raise ValueError(f"CACerts must be PEM CA certificates: {error}") from None
        return ca_certs

    @model_validator(mode="after")
    def _ref_or_uri(self) -> Destination:
        if self.ref is None and self.uri is None:
            raise ValueError("a destination needs a ref or a uri (or both); got neither")
        if self.uri is not None:
            parts = urlsplit(self.uri)
            if self.ref is not None and parts.scheme:
                raise ValueError(f"uri {self.uri!r} must be relative when ref is set: it is resolved against the ref")
            if self.ref is None and not (parts.scheme and parts.netloc):
                raise ValueError(f"uri {self.uri!r} must be an absolute URL (scheme and host) when there is no ref")
        return self


class SecretKeySelector(ApiModel):
    """One key of a Secret in the namespace of the referring object."""

    name: str = Field(min_length=1)
    key: str = Field(min_length=1)
    optional: bool | None = None


class SecretValueFromSource(ApiModel):
    """A value read from a Secret key: ``{secretKeyRef: {name, key}}``."""

    secret_key_ref: SecretKeySelector


class CloudEventOverrides(ApiModel):
    """Extension attributes set on every event that a source emits."""

    extensions: dict[str, str] | None = Field(
        default=None,
        max_length=MAX_EXTENSIONS,
        json_schema_extra=cel(
            "self.all(k, k.matches('^[a-z0-9]+$') && !(k in " + str(sorted(CE_CORE_ATTRIBUTES)) + "))",
            "extension names must be lower-case letters and digits, and not a core CloudEvents attribute",
        ),
    )

    @field_validator("extensions")
    @classmethod
    def _extension_names(cls, extensions: dict[str, str] | None) -> dict[str, str] | None:
        for name in extensions or {}:
            if not CE_ATTRIBUTE_NAME.match(name):
                raise ValueError(f"extension name {name!r} must be lower-case letters and digits only")
            if name in CE_CORE_ATTRIBUTES:
                raise ValueError(f"extension name {name!r} is a core CloudEvents attribute and cannot be overridden")
        return extensions

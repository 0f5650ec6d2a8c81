"""Who sent a request: the Kubernetes ServiceAccount token it carries, verified here without a round trip.

The keys come from the API server's service-account issuer discovery (``/.well-known/openid-configuration``
for the issuer, ``/openid/v1/jwks`` for the public keys), fetched once, refreshed every few minutes and
at once (rate-limited) when a token names a key not yet known, so a rotated signing key is picked up.
A token is checked for its signature, issuer, audience and time window; a verified token is remembered
(bounded, by its text) so that a sender's next requests cost a dictionary lookup, not an RSA verification.

Chosen over TokenReview: no API call per new token and no dependency on the API server while serving. The
price: a token bound to a Pod that was deleted stays valid until it expires (an hour at most for projected
tokens), which TokenReview would catch; docs/security.md says so.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)

SUBJECT_PREFIX = "system:serviceaccount:"
# Asymmetric algorithms only: a symmetric one would let anyone holding the "key" (public here) sign.
ALGORITHMS = ("RS256", "RS384", "RS512", "ES256", "ES384", "ES512", "PS256", "PS384", "PS512")
REFRESH_SECONDS = 300.0
UNKNOWN_KEY_REFRESH_SECONDS = 10.0  # at most one fetch this often for tokens naming an unknown key
LEEWAY_SECONDS = 5.0  # clock skew allowed between the API server and this replica
CACHE_SIZE = 4096

# Fetches (issuer, JWKS document) from the API server.
FetchKeys = Callable[[], Awaitable[tuple[str, dict[str, Any]]]]


@dataclass(frozen=True, slots=True)
class Caller:
    """The verified sender of a request."""

    subject: str
    """``system:serviceaccount:<namespace>:<name>`` for a ServiceAccount."""
    expires: float

    @property
    def namespace(self) -> str | None:
        if not self.subject.startswith(SUBJECT_PREFIX):
            return None
        return self.subject[len(SUBJECT_PREFIX):].partition(":")[0] or None


class Unauthenticated(Exception):
    """No valid token: the reason is safe to tell the sender (it never quotes the token)."""


class KeysUnavailable(Exception):
    """The issuer's keys could not be loaded yet: the fault is this side's, not the sender's."""


@dataclass(frozen=True, slots=True)
class _Verified:
    subject: str
    audiences: frozenset[str]
    not_before: float
    expires: float


class TokenVerifier:
    def __init__(self, fetch: FetchKeys, *, clock: Callable[[], float] = time.time,
                 monotonic: Callable[[], float] = time.monotonic, refresh: float = REFRESH_SECONDS,
                 cache_size: int = CACHE_SIZE) -> None:
        """``clock``: wall time, against tokens' exp and nbf; ``monotonic``: for the fetch intervals."""
        self._fetch = fetch
        self._clock = clock
        self._monotonic = monotonic
        self._refresh = refresh
        self._cache_size = cache_size
        self._issuer: str | None = None
        self._keys: dict[str, Any] = {}
        self._fetched = float("-inf")  # monotonic time of the last fetch attempt
        self._lock = asyncio.Lock()
        self._verified: OrderedDict[bytes, _Verified] = OrderedDict()

    @property
    def loaded(self) -> bool:
        return self._issuer is not None

    async def verify(self, authorization: str | None, audience: str) -> Caller:
        """The caller of a request whose ``Authorization`` header is ``authorization``, for ``audience``."""
        token = _bearer(authorization)
        digest = hashlib.blake2b(token.encode(), digest_size=20).digest()
        verified = self._verified.get(digest)
        if verified is None:
            verified = await self._verify_signature(token)
            self._remember(digest, verified)
        else:
            self._verified.move_to_end(digest)
        now = self._clock()
        if now >= verified.expires + LEEWAY_SECONDS:
            raise Unauthenticated("the token has expired: request a new one (projected tokens are refreshed "
                                  "by the kubelet; read the file again)")
        if now + LEEWAY_SECONDS < verified.not_before:
            raise Unauthenticated("the token is not valid yet (nbf is in the future)")
        if audience not in verified.audiences:
            raise Unauthenticated(f"the token is not for this audience: request one with audience {audience!r} "
                                  f"(the target's status.address.audience)")
        return Caller(verified.subject, verified.expires)

    async def refresh(self) -> None:
        """Fetches the issuer and its keys now; on failure the keys held so far stay."""
        async with self._lock:
            await self._load()

    async def run(self, stop: asyncio.Event, needed: Callable[[], bool] = lambda: True) -> None:
        """Keeps the keys fresh until ``stop``: at start, then every ``refresh`` seconds (sooner while none),
        while ``needed`` (a Broker checks senders; else nothing is fetched, nothing logged)."""
        while not stop.is_set():
            if needed():
                await self.refresh()
            # Not loaded (not needed yet, or the fetch failed): look again soon.
            wait = self._refresh if self.loaded else min(self._refresh, 2.0)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), wait)

    async def _load(self) -> None:
        self._fetched = self._monotonic()
        try:
            issuer, document = await self._fetch()
            keys = _keys_of(document)
        except Exception as error:  # any failure keeps the keys held; the next refresh retries
            log.warning("cannot load the service-account issuer's keys (%s); %s", error,
                        "keeping the keys loaded before" if self.loaded else "tokens cannot be verified yet")
            return
        if keys != self._keys or issuer != self._issuer:
            # A key withdrawn must not keep its tokens valid through the cache.
            self._verified.clear()
            log.info("service-account issuer %s: %d signing key(s) loaded", issuer, len(keys))
        self._issuer, self._keys = issuer, keys

    async def _key_for(self, kid: str) -> Any:
        if kid not in self._keys and self._monotonic() - self._fetched >= UNKNOWN_KEY_REFRESH_SECONDS:
            async with self._lock:
                if kid not in self._keys and self._monotonic() - self._fetched >= UNKNOWN_KEY_REFRESH_SECONDS:
                    await self._load()
        if self._issuer is None:
            raise KeysUnavailable("the API server's service-account keys are not loaded yet")
        key = self._keys.get(kid)
        if key is None:
            raise Unauthenticated("the token is signed by a key this cluster's service-account issuer does not "
                                  "publish: it was not issued by this cluster's API server")
        return key

    async def _verify_signature(self, token: str) -> _Verified:
        import jwt  # loaded (with cryptography, ~9 MiB) only once a Broker checks senders

        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise Unauthenticated("the bearer token is not a JWT") from None
        algorithm = header.get("alg")
        if algorithm not in ALGORITHMS:
            raise Unauthenticated(f"the token's algorithm {algorithm!r} is not accepted")
        key = await self._key_for(str(header.get("kid", "")))
        try:
            # Times are checked by the caller against the injectable clock, the audience per target.
            claims = jwt.decode(token, key, algorithms=[algorithm], issuer=self._issuer,
                                options={"verify_exp": False, "verify_nbf": False, "verify_iat": False,
                                         "verify_aud": False, "require": ["exp", "iss", "sub"]})
        except jwt.InvalidIssuerError:
            raise Unauthenticated("the token was issued by another issuer than this cluster's") from None
        except jwt.PyJWTError as error:
            raise Unauthenticated(f"the token is invalid: {error}") from None
        audiences = claims.get("aud") or []
        if isinstance(audiences, str):
            audiences = [audiences]
        return _Verified(str(claims["sub"]), frozenset(str(a) for a in audiences),
                         float(claims.get("nbf", 0)), float(claims["exp"]))

    def _remember(self, digest: bytes, verified: _Verified) -> None:
        self._verified[digest] = verified
        while len(self._verified) > self._cache_size:
            self._verified.popitem(last=False)


def _bearer(authorization: str | None) -> str:
    if not authorization:
        raise Unauthenticated("no token: send 'Authorization: Bearer <ServiceAccount token>' with the target's "
                              "audience (its status.address.audience)")
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthenticated("the Authorization header must be 'Bearer <token>'")
    return token.strip()


def _keys_of(document: dict[str, Any]) -> dict[str, Any]:
    import jwt

    keys: dict[str, Any] = {}
    for entry in document.get("keys") or ():
        if entry.get("use", "sig") != "sig":
            continue
        try:
            keys[str(entry.get("kid", ""))] = jwt.PyJWK(entry).key
        except jwt.PyJWTError as error:
            log.warning("skipping a service-account key the issuer publishes (%s)", error)
    if not keys:
        raise ValueError("the issuer publishes no signing key")
    return keys


def api_server_keys(request: Callable[..., Awaitable[Any]]) -> FetchKeys:
    """Fetches the issuer and keys through the API server (``request(method, path)`` with the replica's own
    credentials; the default RBAC lets every ServiceAccount read them)."""

    async def fetch() -> tuple[str, dict[str, Any]]:
        discovery = await request("GET", "/.well-known/openid-configuration")
        document = await request("GET", "/openid/v1/jwks", accept="application/jwk-set+json")
        return str(discovery["issuer"]), dict(document)

    return fetch

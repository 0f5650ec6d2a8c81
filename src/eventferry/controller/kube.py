"""The operator's own calls to the API server (kopf does the watching): aiohttp, JSON in and out.

Credentials are read the way ``kubectl`` reads them, by the ``kubernetes`` package's loaders: the
pod's service account in a cluster (the token file is re-read when the kubelet rotates it), else
KUBECONFIG.
"""

from __future__ import annotations

import json
import ssl
from collections.abc import Callable
from typing import Any

import aiohttp

from eventferry.net.kubeconn import ApiConnection, ApiError
from eventferry.resources.names import FIELD_MANAGER

JSON = "application/json"
MERGE_PATCH = "application/merge-patch+json"
APPLY_PATCH = "application/apply-patch+yaml"  # server-side apply; JSON is valid YAML


def resource_path(api_version: str, plural: str, namespace: str | None = None, name: str | None = None,
                  subresource: str | None = None) -> str:
    """``/api/v1/namespaces/ns/configmaps/name`` or ``/apis/group/version/...``."""
    path = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
    if namespace is not None:
        path += f"/namespaces/{namespace}"
    path += f"/{plural}"
    if name is not None:
        path += f"/{name}"
    if subresource is not None:
        path += f"/{subresource}"
    return path


class ApiClient:
    def __init__(self, server: str, ssl_context: ssl.SSLContext | None, authorization: Callable[[], str | None],
                 timeout: float = 30.0) -> None:
        self.server = server.rstrip("/")
        self.ssl_context = ssl_context
        self.authorization = authorization
        self.timeout = timeout
        self._session: aiohttp.ClientSession | None = None

    @classmethod
    def from_environment(cls) -> ApiClient:
        connection = ApiConnection.from_environment()
        return cls(connection.server, connection.ssl_context, connection.authorization)

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None:
            connector = aiohttp.TCPConnector(ssl=self.ssl_context or True, limit=64)
            self._session = aiohttp.ClientSession(connector=connector)
        return self._session

    async def request(self, method: str, path: str, *, params: dict[str, str] | None = None, body: Any = None,
                      content_type: str = JSON) -> Any:
        headers = {"Accept": JSON}
        token = self.authorization()
        if token:
            headers["Authorization"] = token
        data = None
        if body is not None:
            data = json.dumps(body)
            headers["Content-Type"] = content_type
        async with self._http().request(method, self.server + path, params=params, data=data, headers=headers,
                                        timeout=aiohttp.ClientTimeout(total=self.timeout)) as response:
            text = await response.text()
            if response.status >= 400:
                reason, message = response.reason or "", text[:1000]
                try:
                    document = json.loads(text)
                    reason, message = document.get("reason") or reason, document.get("message") or message
                except ValueError:
                    pass
                raise ApiError(response.status, str(reason), str(message))
            return json.loads(text) if text else None

    async def get(self, path: str) -> dict[str, Any] | None:
        """The object, or None when it does not exist."""
        try:
            found: dict[str, Any] = await self.request("GET", path)
        except ApiError as error:
            if error.status == 404:
                return None
            raise
        return found

    async def create(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        created: dict[str, Any] = await self.request("POST", path, body=body)
        return created

    async def replace(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        replaced: dict[str, Any] = await self.request("PUT", path, body=body)
        return replaced

    async def apply(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """Server-side apply as the operator's field manager: creates, or updates the fields it owns."""
        applied: dict[str, Any] = await self.request("PATCH", path, body=body, content_type=APPLY_PATCH,
                                                     params={"fieldManager": FIELD_MANAGER, "force": "true"})
        return applied

    async def merge_patch(self, path: str, body: dict[str, Any]) -> dict[str, Any] | None:
        """A JSON merge patch; None when the object is gone."""
        try:
            patched: dict[str, Any] = await self.request("PATCH", path, body=body, content_type=MERGE_PATCH)
        except ApiError as error:
            if error.status == 404:
                return None
            raise
        return patched

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


__all__ = ["ApiClient", "ApiError", "resource_path"]

"""Corral's public HTTP API as the virtual node uses it (async; never the store, never an agent).

Transient failures (connection errors, 408/429/5xx) are retried with exponential back-off, so a Corral
restart or a slow moment never turns into a failed pod; what Corral refuses (4xx) is raised as
``CorralRefused`` with Corral's own message.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import AsyncIterator
from typing import Any

import httpx

from corral.config import ClientConfig
from corral.sse import SseParser

log = logging.getLogger(__name__)

API_VERSION = "2023-05-01"
RETRYABLE = {408, 429, 500, 502, 503, 504}


class CorralUnavailable(Exception):
    """Corral's API could not be reached (or kept failing) for the whole retry budget."""


class CorralRefused(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.status, self.code, self.message = status, code, message


class CorralApi:
    def __init__(self, config: ClientConfig, resource_group: str, attempts: int = 6,
                 backoff: float = 0.5, backoff_max: float = 8.0) -> None:
        self.config = config
        self.rg = resource_group
        self.sub = config.subscription
        self.attempts, self.backoff, self.backoff_max = attempts, backoff, backoff_max
        self.ssl = ssl.create_default_context(cafile=config.ca_cert) if config.ca_cert else None
        self.http = httpx.AsyncClient(
            base_url=config.endpoint, headers={"Authorization": f"Bearer {config.token}"},
            verify=self.ssl if self.ssl is not None else True, timeout=httpx.Timeout(30.0, connect=5.0))

    async def close(self) -> None:
        await self.http.aclose()

    # paths ------------------------------------------------------------------------------------------------------
    def group_path(self, name: str | None = None) -> str:
        p = f"/subscriptions/{self.sub}/resourceGroups/{self.rg}/providers/Microsoft.ContainerInstance/containerGroups"
        return f"{p}/{name}" if name else p

    def _provider(self) -> str:
        return f"/subscriptions/{self.sub}/providers/Microsoft.ContainerInstance/locations/{self.config.location}"

    # requests ---------------------------------------------------------------------------------------------------
    async def request(self, method: str, path: str, *, attempts: int | None = None, **kw: Any) -> httpx.Response:
        params = {"api-version": API_VERSION, **(kw.pop("params", None) or {})}
        delay = self.backoff
        last: str = ""
        for attempt in range(attempts or self.attempts):
            try:
                resp = await self.http.request(method, path, params=params, **kw)
            except httpx.TransportError as exc:
                last = f"{type(exc).__name__}: {exc}"
            else:
                if resp.status_code not in RETRYABLE:
                    if resp.status_code >= 400:
                        try:
                            err = resp.json()["error"]
                            raise CorralRefused(resp.status_code, err.get("code", "Error"), err.get("message", ""))
                        except (ValueError, KeyError, TypeError):
                            raise CorralRefused(resp.status_code, "Error", resp.text) from None
                    return resp
                last = f"HTTP {resp.status_code}: {resp.text[:200]}"
            if attempt + 1 < (attempts or self.attempts):
                log.info("corral %s %s failed (%s); retrying in %.1fs", method, path, last, delay)
                await asyncio.sleep(delay)
                delay = min(self.backoff_max, delay * 2)
        raise CorralUnavailable(f"Corral's API at {self.config.endpoint} did not answer {method} {path}: {last}")

    # groups -----------------------------------------------------------------------------------------------------
    async def get_group(self, name: str) -> dict[str, Any] | None:
        try:
            return (await self.request("GET", self.group_path(name))).json()
        except CorralRefused as exc:
            if exc.status == 404:
                return None
            raise

    async def put_group(self, name: str, body: dict[str, Any]) -> dict[str, Any]:
        return (await self.request("PUT", self.group_path(name), json=body)).json()

    async def delete_group(self, name: str) -> None:
        await self.request("DELETE", self.group_path(name))

    async def list_groups(self) -> list[dict[str, Any]]:
        return (await self.request("GET", self.group_path())).json()["value"]

    async def capacity(self, attempts: int | None = None) -> dict[str, Any]:
        return (await self.request("GET", self._provider() + "/capacity", attempts=attempts)).json()

    # streams ----------------------------------------------------------------------------------------------------
    async def events(self) -> AsyncIterator[tuple[str, dict[str, Any]]]:
        """The resource group's state changes (server-sent events), starting with a snapshot; ends when the
        connection does (the caller reconnects)."""
        path = f"/subscriptions/{self.sub}/resourceGroups/{self.rg}/providers/Microsoft.ContainerInstance/events"
        parser = SseParser()
        async with self.http.stream("GET", path, params={"api-version": API_VERSION},
                                    timeout=httpx.Timeout(30.0, read=60.0)) as resp:
            if resp.status_code != 200:
                raise CorralUnavailable(f"event stream answered HTTP {resp.status_code}")
            async for line in resp.aiter_lines():
                if (message := parser.feed(line)) is not None:
                    yield message

    async def logs(self, name: str, container: str, tail: int | None, timestamps: bool) -> str:
        params: dict[str, Any] = {"timestamps": str(timestamps).lower()}
        if tail is not None:
            params["tail"] = tail
        resp = await self.request("GET", self.group_path(name) + f"/containers/{container}/logs", params=params)
        return resp.json()["content"]

    async def follow_logs(self, name: str, container: str, tail: int | None,
                          timestamps: bool) -> AsyncIterator[bytes]:
        params: dict[str, Any] = {"api-version": API_VERSION, "follow": "true", "timestamps": str(timestamps).lower()}
        if tail is not None:
            params["tail"] = tail
        async with self.http.stream("GET", self.group_path(name) + f"/containers/{container}/logs", params=params,
                                    timeout=httpx.Timeout(30.0, read=None)) as resp:
            if resp.status_code >= 400:
                body = (await resp.aread()).decode(errors="replace")
                raise CorralRefused(resp.status_code, "Error", body)
            async for chunk in resp.aiter_bytes():
                yield chunk

    async def session(self, name: str, what: str, body: dict[str, Any]) -> tuple[str, str]:
        """A websocket session (exec, attach, portForward): its URI and one-time password."""
        path = self.group_path(name) + (f"/{what}" if what == "portForward" else f"/containers/{what}")
        answer = (await self.request("POST", path, json=body)).json()
        return answer["webSocketUri"], answer["password"]

    async def exec_sync(self, name: str, container: str, argv: list[str], timeout: float | None) -> dict[str, Any]:
        body: dict[str, Any] = {"command": argv}
        if timeout:
            body["timeoutSeconds"] = timeout
        return (await self.request("POST", self.group_path(name) + f"/containers/{container}/execSync",
                                   json=body, attempts=1)).json()

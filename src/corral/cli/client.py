"""A small HTTP client for Corral's ARM-shaped API, configured from the client config."""

from __future__ import annotations

import contextlib
import ssl
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from corral.config import ClientConfig, client_config_path
from corral.errors import CorralError
from corral.sse import SseParser

if TYPE_CHECKING:  # imported with the first client: `corral` commands that make none start faster
    import httpx

API_VERSION = "2023-05-01"
GROUPS = "Microsoft.ContainerInstance/containerGroups"
NETWORK = "Microsoft.Network"


class ApiError(CorralError):
    """The server answered with an error; the message is the server's."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.status = status
        self.code = code


class ConfigMissing(CorralError):
    code = "ConfigMissing"


class Client:
    def __init__(self, config: ClientConfig) -> None:
        import httpx

        self.config = config
        self.sub = config.subscription
        self.http = httpx.Client(
            base_url=config.endpoint,
            headers={"Authorization": f"Bearer {config.token}"},
            verify=ssl.create_default_context(cafile=config.ca_cert) if config.ca_cert else True,
            timeout=60.0,
        )

    @classmethod
    def from_config(cls, path: Path | None = None) -> Client:
        path = path or client_config_path()
        if not path.exists():
            raise ConfigMissing(
                f"no client config at {path}: start Corral with `corral up` (it writes one), "
                "or point CORRAL_CONFIG at one"
            )
        return cls(ClientConfig.load(path))

    def arm_path(self, resource_type: str, rg: str | None = None, name: str | None = None) -> str:
        """``/subscriptions/S[/resourceGroups/RG]/providers/TYPE[/NAME]``: one resource, or the list of
        them in ``rg`` (None: the whole subscription). ``resource_type`` may be a provider alone."""
        scope = f"/subscriptions/{self.sub}" if rg is None else f"/subscriptions/{self.sub}/resourceGroups/{rg}"
        path = f"{scope}/providers/{resource_type}"
        return f"{path}/{name}" if name else path

    def resource_id(self, resource_type: str, rg: str, value: str) -> str:
        """``value`` if it is an id already, else the id of the resource of that name in ``rg``."""
        return value if value.startswith("/") else self.arm_path(resource_type, rg, value)

    def group_path(self, rg: str | None, name: str | None = None) -> str:
        return self.arm_path(GROUPS, rg, name)

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        params = dict(kwargs.pop("params", {}) or {})
        params.setdefault("api-version", API_VERSION)
        resp = self.http.request(method, path, params=params, **kwargs)
        if resp.status_code >= 400:
            _raise_for(resp)
        return resp

    def wait_operation(self, resp: httpx.Response, timeout: float = 600) -> dict[str, Any]:
        """Follow ``Azure-AsyncOperation`` until the operation ends; returns its last status body."""
        url = resp.headers.get("Azure-AsyncOperation")
        if not url:
            return {"status": "Succeeded"}
        deadline = time.monotonic() + timeout
        while True:
            body = self.http.get(url).json()
            if body.get("status") != "InProgress" or time.monotonic() > deadline:
                return body
            time.sleep(min(float(resp.headers.get("Retry-After", 1)), 0.2))


def _raise_for(resp: httpx.Response) -> None:
    """The ARM error body of a failed answer as an ApiError (a streamed answer is read first)."""
    resp.read()
    try:
        err = resp.json()["error"]
        raise ApiError(resp.status_code, err.get("code", "Error"), err.get("message", resp.text))
    except (ValueError, KeyError, TypeError):
        raise ApiError(resp.status_code, "Error", resp.text) from None


@contextlib.contextmanager
def stream(client: Client, path: str, params: dict[str, Any]) -> Iterator[httpx.Response]:
    """A GET whose body is read as it arrives (no read timeout: streams stay quiet for long)."""
    import httpx

    params = {"api-version": API_VERSION, **params}
    with client.http.stream("GET", path, params=params, timeout=httpx.Timeout(30.0, read=None)) as resp:
        if resp.status_code >= 400:
            _raise_for(resp)
        yield resp


def sse_messages(resp: httpx.Response) -> Iterator[tuple[str, dict[str, Any]]]:
    """(event, data) pairs of a server-sent event stream."""
    parser = SseParser()
    for line in resp.iter_lines():
        if (message := parser.feed(line)) is not None:
            yield message

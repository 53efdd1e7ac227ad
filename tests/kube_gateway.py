"""A stand-in for the API server's pod proxy, so a real kubectl reaches a virtual node's kubelet API.

There is no kube-apiserver on these machines. What kubectl needs of one for ``exec``, ``attach`` and
``port-forward`` is small: discovery (``/api``, ``/apis``, ``/api/v1``), ``GET`` of the pod, and the pod's
``exec``/``attach``/``portforward``/``log`` subresources, which the API server turns into a request to
the node's kubelet (``/exec|attach/{ns}/{pod}/{container}``, ``/portForward/{ns}/{pod}``,
``/containerLogs/{ns}/{pod}/{container}``, with the query kubelet expects: ``input``/``output``/``error``/
``tty`` = 1, ``port``) and then relays unchanged, bytes both ways, whatever the upgraded protocol (SPDY/3.1
or websockets). This gateway does just that, over
plain HTTP on loopback, authenticating to the kubelet with a bearer token (an API server would use its
kubelet client certificate). It stands in for the API server only; the kubelet API is the product's.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import ssl
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

RESOURCES = [
    {"name": "pods", "singularName": "pod", "namespaced": True, "kind": "Pod", "shortNames": ["po"],
     "verbs": ["create", "delete", "get", "list", "patch", "update", "watch"]},
    *({"name": f"pods/{sub}", "singularName": "", "namespaced": True, "kind": kind, "verbs": verbs}
      for sub, kind, verbs in (("exec", "PodExecOptions", ["create", "get"]),
                               ("attach", "PodAttachOptions", ["create", "get"]),
                               ("portforward", "PodPortForwardOptions", ["create", "get"]),
                               ("log", "Pod", ["get"]))),
]
REASONS = {400: "BadRequest", 401: "Unauthorized", 403: "Forbidden", 404: "NotFound"}
FLAGS = {"stdin": "input", "stdout": "output", "stderr": "error", "tty": "tty"}


class KubeGateway:
    """``pods()`` gives the pods kubectl may see (lightkube models); ``kubelet`` is ``(host, port)`` of the
    kubelet API over TLS, ``ca`` its CA file, ``token`` what the gateway presents to it."""

    def __init__(self, pods: Callable[[], list[Any]], kubelet: tuple[str, int], ca: str, token: str) -> None:
        self.pods, self.kubelet, self.token = pods, kubelet, token
        self.tls = ssl.create_default_context(cafile=ca)
        self.upgrades: list[str] = []  # the Upgrade header of every relayed request (what kubectl spoke)
        self.server: asyncio.Server | None = None
        self.port = 0

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._connection, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.server.wait_closed(), 5)

    def kubeconfig(self) -> dict[str, Any]:
        return {"apiVersion": "v1", "kind": "Config", "current-context": "gw",
                "clusters": [{"name": "gw", "cluster": {"server": f"http://127.0.0.1:{self.port}"}}],
                "users": [{"name": "gw", "user": {}}],
                "contexts": [{"name": "gw", "context": {"cluster": "gw", "user": "gw", "namespace": "default"}}]}

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:  # kubectl keeps its connection for the discovery and GET requests
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
                    return
                lines = head.decode("latin-1").split("\r\n")
                method, target, _ = lines[0].split(" ", 2)
                headers = [tuple(h.split(":", 1)) for h in lines[1:] if ":" in h]
                length = int(next((v for k, v in headers if k.lower() == "content-length"), "0") or 0)
                if length:
                    await reader.readexactly(length)
                url = urlsplit(target)
                parts = url.path.strip("/").split("/")
                if len(parts) == 7 and parts[:3] == ["api", "v1", "namespaces"] and parts[4] == "pods" and \
                        parts[6] in ("exec", "attach", "portforward", "log"):
                    await self._relay(reader, writer, method, parts[3], parts[5], parts[6], url.query, headers)
                    return
                await self._answer(writer, url.path)
        finally:
            writer.close()

    def _pod(self, ns: str, name: str) -> Any:
        return next((p for p in self.pods() if p.metadata.namespace == ns and p.metadata.name == name), None)

    async def _answer(self, writer: asyncio.StreamWriter, path: str) -> None:
        parts = path.strip("/").split("/")
        body: dict[str, Any] | None = None
        if path == "/version":
            body = {"major": "1", "minor": "33", "gitVersion": "v1.33.0"}
        elif path == "/api":
            body = {"kind": "APIVersions", "versions": ["v1"],
                    "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1"}]}
        elif path == "/apis":
            body = {"kind": "APIGroupList", "apiVersion": "v1", "groups": []}
        elif path == "/api/v1":
            body = {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": "v1", "resources": RESOURCES}
        elif len(parts) == 6 and parts[:3] == ["api", "v1", "namespaces"] and parts[4] == "pods":
            if (pod := self._pod(parts[3], parts[5])) is not None:
                body = {"apiVersion": "v1", "kind": "Pod", **pod.to_dict()}
        if body is None:
            await self._status(writer, 404, f"{path} not found")
            return
        await self._json(writer, 200, body)

    async def _status(self, writer: asyncio.StreamWriter, code: int, message: str) -> None:
        await self._json(writer, code, {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                                        "message": message, "reason": REASONS.get(code, "InternalError"),
                                        "code": code})

    async def _json(self, writer: asyncio.StreamWriter, code: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        writer.write(f"HTTP/1.1 {code} {REASONS.get(code, 'OK')}\r\nContent-Type: application/json\r\n"
                     f"Content-Length: {len(data)}\r\n\r\n".encode() + data)
        await writer.drain()

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, method: str, ns: str,
                     pod: str, sub: str, query: str, headers: list[tuple[str, ...]]) -> None:
        params = parse_qsl(query, keep_blank_values=True)
        if sub == "portforward":
            path = f"/portForward/{ns}/{pod}"
            out = [("port", p) for k, v in params if k == "ports" for p in v.split(",")]
        elif sub == "log":  # the same query names on both sides
            container = next((v for k, v in params if k == "container"), "")
            path = f"/containerLogs/{ns}/{pod}/{container or self._pod(ns, pod).spec.containers[0].name}"
            out = [(k, v) for k, v in params if k != "container"]
        else:
            container = next((v for k, v in params if k == "container"), "")
            container = container or self._pod(ns, pod).spec.containers[0].name
            path = f"/{sub}/{ns}/{pod}/{container}"
            out = [("command", v) for k, v in params if k == "command"]
            out += [(FLAGS[k], "1") for k, v in params if k in FLAGS and v in ("true", "1")]
        keep = [(k.strip(), v.strip()) for k, v in headers
                if k.strip().lower() not in ("host", "authorization", "content-length")]
        self.upgrades.append(next((v for k, v in keep if k.lower() == "upgrade"), ""))
        up_reader, up_writer = await asyncio.open_connection(*self.kubelet, ssl=self.tls)
        request = [f"{method} {path}{'?' + urlencode(out) if out else ''} HTTP/1.1",
                   f"Host: {self.kubelet[0]}:{self.kubelet[1]}", f"Authorization: Bearer {self.token}",
                   *(f"{k}: {v}" for k, v in keep)]
        up_writer.write(("\r\n".join(request) + "\r\n\r\n").encode())
        head = await up_reader.readuntil(b"\r\n\r\n")
        code = int(head.split(b" ", 2)[1])
        if code >= 400:  # as the API server does: the kubelet's answer becomes the message of a Status
            length = re.search(rb"(?i)\r\ncontent-length: *(\d+)", head)
            body = (await up_reader.readexactly(int(length[1])) if length else b"").decode(errors="replace")
            up_writer.close()
            await self._status(writer, code, body.strip())
            return
        writer.write(head)

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(ConnectionError, OSError):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            with contextlib.suppress(ConnectionError, OSError, RuntimeError):
                dst.close()

        try:
            await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        finally:
            up_writer.close()

"""The fast path of the ``corral-vnet`` executable: hand the CNI call to the node's network service.

A runtime starts the executable once per CNI call, so its own start-up is the
cost: this module imports nothing beyond what the interpreter has already
loaded (``_socket`` is built in; ``json`` and ``socket`` cost ~6 ms each). The
request is the CNI environment and stdin as they came; the service (``service.py``,
in the node agent) runs the verb in-process and answers with the exit status and
the bytes to print. Anything short of a whole answer (no service, a service
in another namespace, a service that died mid-call) means "do it yourself":
every verb is idempotent, so repeating one the service may have half done is safe.

Wire format (one request per connection, the client half-closes after sending):
  request:  ``CNI1\\n`` then ``KEY=VALUE\\0`` for each CNI_* variable, an empty ``\\0``, then stdin
  answer:   ``<exit status>\\n`` then stdout; or ``-\\n`` for "not mine, do it yourself"
"""

from __future__ import annotations

import _socket
import os

DEFAULT_SOCKET = "/run/corral/vnet.sock"
SOCKET_ENV = "CORRAL_VNET_SOCKET"
# Set by the native client when it execs the Python launcher: the service already said no.
NO_SERVICE_ENV = "CORRAL_VNET_NO_SERVICE"
CONF_KEY = "serviceSocket"
MAGIC = b"CNI1\n"
DECLINE = b"-"


def socket_path(env: dict[str, str] | os._Environ[str], stdin: bytes) -> str:
    """The service to ask: the config's ``serviceSocket``, else ``$CORRAL_VNET_SOCKET``, else the default."""
    return _conf_string(stdin, CONF_KEY) or env.get(SOCKET_ENV) or DEFAULT_SOCKET


def _conf_string(doc: bytes, key: str) -> str | None:
    """A top-level string value of the JSON config, read without a JSON parser (~6 ms to import).

    Anything unusual about it (escapes, a non-string, the key only nested) goes to ``json``.
    """
    needle = f'"{key}"'.encode()
    at = doc.find(needle)
    if at < 0:
        return None
    rest = doc[at + len(needle):].lstrip()
    if rest[:1] == b":":
        rest = rest[1:].lstrip()
        end = rest.find(b'"', 1)
        if rest[:1] == b'"' and end > 0 and b"\\" not in rest[:end] and doc.count(needle) == 1:
            return rest[1:end].decode()
    import json

    try:
        value = json.loads(doc).get(key)
    except (ValueError, AttributeError):
        return None
    return value if isinstance(value, str) and value else None


def encode_request(env: dict[str, str] | os._Environ[str], stdin: bytes) -> bytes:
    parts = [MAGIC]
    for k, v in env.items():
        if k.startswith("CNI_") and "\0" not in v:
            parts.append(f"{k}={v}\0".encode())
    parts.append(b"\0")
    parts.append(stdin)
    return b"".join(parts)


def decode_request(data: bytes) -> tuple[dict[str, str], bytes]:
    """The service's side of ``encode_request``; raises ValueError on anything else."""
    if not data.startswith(MAGIC):
        raise ValueError("not a corral-vnet request")
    env: dict[str, str] = {}
    pos = len(MAGIC)
    while True:
        nxt = data.find(b"\0", pos)
        if nxt < 0:
            raise ValueError("truncated corral-vnet request")
        if nxt == pos:  # the empty item ends the environment
            return env, data[pos + 1:]
        k, _, v = data[pos:nxt].decode().partition("=")
        env[k] = v
        pos = nxt + 1


def forward(env: dict[str, str] | os._Environ[str], stdin: bytes) -> tuple[int, bytes] | None:
    """Ask the service; (exit status, stdout) when it did the work, None when this process must."""
    if env.get(NO_SERVICE_ENV):
        return None
    path = socket_path(env, stdin)
    s = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    try:
        try:
            s.connect(path)
        except OSError:
            return None
        s.sendall(encode_request(env, stdin))
        s.shutdown(_socket.SHUT_WR)
        chunks = []
        while True:
            b = s.recv(65536)
            if not b:
                break
            chunks.append(b)
    except OSError:
        return None
    finally:
        s.close()
    data = b"".join(chunks)
    head, nl, out = data.partition(b"\n")
    if not nl or head == DECLINE:
        return None
    try:
        return int(head), out
    except ValueError:
        return None

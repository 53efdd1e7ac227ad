"""The corral-vnet executable's fast path: the request it sends and where it sends it."""

from __future__ import annotations

import json

import pytest

from corral.net.vnet import client


def test_request_round_trip_keeps_only_cni_variables() -> None:
    env = {"CNI_COMMAND": "ADD", "CNI_NETNS": "/var/run/netns/x", "CNI_ARGS": "", "PATH": "/bin", "HOME": "/root"}
    stdin = b'{"cniVersion": "1.0.0", "name": "a\\u0000b"}\x00\x00 tail'
    got_env, got_stdin = client.decode_request(client.encode_request(env, stdin))
    assert got_env == {"CNI_COMMAND": "ADD", "CNI_NETNS": "/var/run/netns/x", "CNI_ARGS": ""}
    assert got_stdin == stdin


def test_request_without_variables_or_stdin() -> None:
    assert client.decode_request(client.encode_request({}, b"")) == ({}, b"")


@pytest.mark.parametrize("data", [b"", b"GET / HTTP/1.1\r\n", client.MAGIC + b"CNI_COMMAND=ADD"])
def test_anything_else_is_refused(data: bytes) -> None:
    with pytest.raises(ValueError):
        client.decode_request(data)


def test_socket_path_from_config_then_environment_then_default() -> None:
    conf = {"cniVersion": "1.0.0", "name": "n", "serviceSocket": "/run/x/vnet.sock", "ipam": {}}
    assert client.socket_path({client.SOCKET_ENV: "/env.sock"}, json.dumps(conf).encode()) == "/run/x/vnet.sock"
    escaped = json.dumps({**conf, "serviceSocket": "/run/\u00e9/v.sock"}, ensure_ascii=True).encode()
    assert client.socket_path({}, escaped) == "/run/\u00e9/v.sock"  # escapes: parsed by json
    assert client.socket_path({client.SOCKET_ENV: "/env.sock"}, b'{"name": "n"}') == "/env.sock"
    assert client.socket_path({}, b"{not json") == client.DEFAULT_SOCKET


def test_no_service_means_do_it_yourself(tmp_path) -> None:  # type: ignore[no-untyped-def]
    assert client.forward({client.SOCKET_ENV: str(tmp_path / "none.sock")}, b"{}") is None

"""The SPDY/3.1 server side on a local socket, driven frame by frame as Kubernetes' spdystream drives it:
streams answered or refused, data both ways with half-close, PING echoed, resets, GOAWAY.
(Interoperability with a real client: tests/integration/test_kube_kubectl.py.)"""

from __future__ import annotations

import asyncio
import struct

from corral.kube.spdy import (
    FLAG_FIN,
    GOAWAY,
    PING,
    REFUSED_STREAM,
    RST_STREAM,
    SYN_REPLY,
    SYN_STREAM,
    HeaderCodec,
    SpdyConnection,
    control_frame,
    data_frame,
)


class Client:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer, self.codec = reader, writer, HeaderCodec()

    def open(self, stream_id: int, **headers: str) -> None:
        block = self.codec.encode({k.lower(): [v] for k, v in headers.items()})
        self.writer.write(control_frame(SYN_STREAM, 0, struct.pack(">IIBB", stream_id, 0, 0, 0) + block))

    async def frame(self) -> tuple[bool, int, int, bytes]:
        """(control?, type or stream id, flags, payload)"""
        first, second = struct.unpack(">II", await asyncio.wait_for(self.reader.readexactly(8), 5))
        payload = await self.reader.readexactly(second & 0xFFFFFF)
        if first & 0x80000000:
            return True, first & 0xFFFF, second >> 24, payload
        return False, first & 0x7FFFFFFF, second >> 24, payload


def test_streams_data_pings_resets_and_goaway() -> None:
    asyncio.run(_scenario())


async def _scenario() -> None:
    accepted: asyncio.Queue[SpdyConnection] = asyncio.Queue()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = SpdyConnection(reader, writer, lambda h: None if h.get("port") else '"port" header is required')
        accepted.put_nowait(conn)
        await conn.run()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    client = Client(*await asyncio.open_connection("127.0.0.1", port))
    conn = await accepted.get()
    try:
        # a stream is answered with SYN_REPLY (an empty, compressed header block) before anything else
        client.open(1, streamType="data", port="80")
        control, kind, _, payload = await client.frame()
        assert (control, kind) == (True, SYN_REPLY) and struct.unpack(">I", payload[:4])[0] == 1
        assert client.codec.decode(payload[4:]) == {}
        stream = await conn.accept()
        assert stream is not None and stream.header("streamType") == "data" and stream.header("port") == "80"

        # one the server refuses (no port header) is reset, and never accepted
        client.open(3, streamType="data")
        control, kind, _, payload = await client.frame()
        assert (control, kind) == (True, RST_STREAM) and struct.unpack(">II", payload) == (3, REFUSED_STREAM)

        # client data, then its half-close
        client.writer.write(data_frame(1, 0, b"hello ") + data_frame(1, FLAG_FIN, b"world"))
        assert await stream.read() + await stream.read() == b"hello world" and await stream.read() == b""
        # the server's answer in frames the client can take, then its FIN
        await stream.write(b"x" * 70000)
        await stream.close()
        got, fin = b"", False
        while not fin:
            control, sid, flags, payload = await client.frame()
            assert not control and sid == 1 and len(payload) <= 32 * 1024
            got, fin = got + payload, bool(flags & FLAG_FIN)
        assert got == b"x" * 70000
        assert 1 not in conn.streams  # closed both ways: forgotten

        # the client's pings (odd ids) come back
        client.writer.write(control_frame(PING, 0, struct.pack(">I", 5)))
        assert await client.frame() == (True, PING, 0, struct.pack(">I", 5))

        # a reset stream is gone for its reader; GOAWAY ends the connection for the server's side
        client.open(5, streamType="error", port="80")
        await client.frame()
        second = await conn.accept()
        assert second is not None
        client.writer.write(control_frame(RST_STREAM, 0, struct.pack(">II", 5, 5)))
        assert await second.read() == b"" and second.gone.is_set()
        client.writer.write(control_frame(GOAWAY, 0, struct.pack(">II", 5, 0)))
        assert await asyncio.wait_for(conn.accept(), 5) is None and conn.ended.is_set()
    finally:
        await conn.close()
        client.writer.close()
        server.close()
        await server.wait_closed()

"""SPDY/3.1 streams, the server side, as Kubernetes speaks them (``Upgrade: SPDY/3.1``).

The kubelet's exec, attach and port-forward still use SPDY: current API servers translate kubectl's
websockets into SPDY toward the kubelet, and kubectl up to 1.29 speaks it directly. Kubernetes'
implementation (moby/spdystream) uses a small part of the protocol, and this module implements that
part: the frame layer of the SPDY/3 draft (version 3 in every control frame), header blocks compressed
with one zlib stream per direction primed with the draft's dictionary, client-opened streams answered
with SYN_REPLY (or RST_STREAM when refused), data with FIN for half-close, PING echoed, GOAWAY.

Flow control: spdystream neither sends WINDOW_UPDATE nor honours it, so neither do we; TCP carries the
backpressure (a stream whose reader lags stops the read loop, as spdystream's frame workers do).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import struct
import zlib
from collections.abc import AsyncIterator, Callable

log = logging.getLogger(__name__)

VERSION = 3
SYN_STREAM, SYN_REPLY, RST_STREAM, SETTINGS, PING, GOAWAY, HEADERS, WINDOW_UPDATE = 1, 2, 3, 4, 6, 7, 8, 9
FLAG_FIN, FLAG_UNIDIRECTIONAL = 0x01, 0x02
PROTOCOL_ERROR, INVALID_STREAM, REFUSED_STREAM, CANCEL = 1, 2, 3, 5
MAX_DATA = 32 * 1024  # bytes per data frame we send (the format allows 16 MiB; spdystream reads whole frames)
BUFFER_LIMIT = 1 << 20  # bytes a stream may hold unread before the read loop waits for its reader

# The SPDY/3 header dictionary (draft 3, section 2.6.10.1): these words, each after its 4-byte length,
# then a tail of status lines, dates and content types without lengths. Byte-exact: zlib checks it.
_WORDS = (
    "options head post put delete trace accept accept-charset accept-encoding accept-language accept-ranges "
    "age allow authorization cache-control connection content-base content-encoding content-language "
    "content-length content-location content-md5 content-range content-type date etag expect expires from "
    "host if-match if-modified-since if-none-match if-range if-unmodified-since last-modified location "
    "max-forwards pragma proxy-authenticate proxy-authorization range referer retry-after server te trailer "
    "transfer-encoding upgrade user-agent vary via warning www-authenticate method get status"
).split() + ["200 OK", "version", "HTTP/1.1", "url", "public", "set-cookie", "keep-alive", "origin"]
_TAIL = (
    "100101201202205206300302303304305306307402405406407408409410411412413414415416417502504505"
    "203 Non-Authoritative Information204 No Content301 Moved Permanently400 Bad Request401 Unauthorized"
    "403 Forbidden404 Not Found500 Internal Server Error501 Not Implemented503 Service Unavailable"
    "Jan Feb Mar Apr May Jun Jul Aug Sept Oct Nov Dec 00:00:00 Mon, Tue, Wed, Thu, Fri, Sat, Sun, GMT"
    "chunked,text/html,image/png,image/jpg,image/gif,application/xml,application/xhtml+xml,text/plain,"
    "text/javascript,publicprivatemax-age=gzip,deflate,sdchcharset=utf-8charset=iso-8859-1,utf-,*,enq=0."
)
DICTIONARY = b"".join(struct.pack(">I", len(w)) + w.encode() for w in _WORDS) + _TAIL.encode()

Headers = dict[str, list[str]]


class SpdyError(Exception):
    """The peer broke the protocol; the connection is closed with GOAWAY."""


class _GoAway(Exception):
    """The client said GOAWAY: it opens nothing more and is about to close."""


def control_frame(kind: int, flags: int, payload: bytes) -> bytes:
    return struct.pack(">HHI", 0x8000 | VERSION, kind, (flags << 24) | len(payload)) + payload


def data_frame(stream_id: int, flags: int, data: bytes) -> bytes:
    return struct.pack(">II", stream_id & 0x7FFFFFFF, (flags << 24) | len(data)) + data


def pack_headers(headers: Headers) -> bytes:
    """A header block before compression: names lowercased, several values joined by NUL."""
    out = [struct.pack(">I", len(headers))]
    for name, values in headers.items():
        n, v = name.lower().encode(), "\0".join(values).encode()
        out += [struct.pack(">I", len(n)), n, struct.pack(">I", len(v)), v]
    return b"".join(out)


def unpack_headers(block: bytes) -> Headers:
    def take(at: int) -> tuple[bytes, int]:
        (size,) = struct.unpack_from(">I", block, at)
        end = at + 4 + size
        if end > len(block):
            raise SpdyError("header block is shorter than its lengths say")
        return block[at + 4:end], end

    try:
        (count,) = struct.unpack_from(">I", block, 0)
        at, out = 4, {}
        for _ in range(count):
            name, at = take(at)
            value, at = take(at)
            out.setdefault(name.decode("latin-1").lower(), []).extend(value.decode("latin-1").split("\0"))
        return out
    except struct.error as exc:
        raise SpdyError(f"malformed header block: {exc}") from None


class HeaderCodec:
    """One direction's zlib stream: every block is sync-flushed, so each frame decodes on its own."""

    def __init__(self) -> None:
        self._deflate = zlib.compressobj(9, zlib.DEFLATED, 15, 9, zlib.Z_DEFAULT_STRATEGY, DICTIONARY)
        self._inflate = zlib.decompressobj(zdict=DICTIONARY)

    def encode(self, headers: Headers) -> bytes:
        return self._deflate.compress(pack_headers(headers)) + self._deflate.flush(zlib.Z_SYNC_FLUSH)

    def decode(self, data: bytes) -> Headers:
        try:
            return unpack_headers(self._inflate.decompress(data))
        except zlib.error as exc:
            raise SpdyError(f"header block does not decompress: {exc}") from None


class SpdyStream:
    """One client-opened stream: read what the client sends, write back, half-close or reset."""

    def __init__(self, conn: SpdyConnection, stream_id: int, headers: Headers, fin: bool) -> None:
        self.conn, self.id, self.headers = conn, stream_id, headers
        self._chunks: asyncio.Queue[bytes] = asyncio.Queue()
        self._buffered = 0
        self._drained = asyncio.Event()
        self._drained.set()
        self.remote_closed = False
        self.local_closed = False
        self.reset_received = False
        self.discarding = False
        # Set when the client can no longer take anything on this stream: it reset it or went away.
        self.gone = asyncio.Event()
        if fin:
            self._end()

    def header(self, name: str, default: str = "") -> str:
        values = self.headers.get(name.lower())
        return values[0] if values else default

    # from the client
    def _feed(self, data: bytes) -> None:
        if self.remote_closed or self.discarding or not data:
            return
        self._chunks.put_nowait(data)
        self._buffered += len(data)
        if self._buffered > BUFFER_LIMIT:
            self._drained.clear()

    def _end(self) -> None:
        if not self.remote_closed:
            self.remote_closed = True
            self._chunks.put_nowait(b"")
        self._forget_if_done()

    def _forget_if_done(self) -> None:
        if self.remote_closed and self.local_closed:
            self.conn.streams.pop(self.id, None)

    def discard(self) -> None:
        """What the client sends from now on is dropped (a stream the session has no use for)."""
        self.discarding = True
        while not self._chunks.empty():
            self._chunks.get_nowait()
        self._buffered = 0
        self._drained.set()
        if self.remote_closed:
            self._chunks.put_nowait(b"")

    def _gone(self) -> None:
        self.gone.set()
        self._end()

    async def read(self) -> bytes:
        """The next bytes the client sent; b"" once it half-closed, reset the stream or went away."""
        if self._chunks.empty() and self.remote_closed:
            return b""
        data = await self._chunks.get()
        if not data:
            self._chunks.put_nowait(b"")  # later reads see the end too
        self._buffered -= len(data)
        if self._buffered <= BUFFER_LIMIT:
            self._drained.set()
        return data

    async def __aiter__(self) -> AsyncIterator[bytes]:
        while data := await self.read():
            yield data

    # to the client
    async def write(self, data: bytes) -> None:
        """Send data; silently dropped once the stream is closed on our side or reset by the client."""
        for at in range(0, len(data), MAX_DATA):
            if self.local_closed or self.reset_received:
                return
            await self.conn.send(data_frame(self.id, 0, data[at:at + MAX_DATA]))

    async def close(self) -> None:
        """Half-close: FIN, nothing more from us on this stream (the client may still send)."""
        if not (self.local_closed or self.reset_received):
            self.local_closed = True
            with contextlib.suppress(ConnectionError):
                await self.conn.send(data_frame(self.id, FLAG_FIN, b""))
            self._forget_if_done()

    async def reset(self, status: int = CANCEL) -> None:
        if not self.reset_received and not (self.local_closed and self.remote_closed):
            self.local_closed = True
            with contextlib.suppress(ConnectionError):
                await self.conn.send(control_frame(RST_STREAM, 0, struct.pack(">II", self.id, status)))
        self._end()


class SpdyConnection:
    """The server side of one upgraded connection. ``run()`` reads frames until the client goes away;
    ``accept()`` returns each stream the client opens (None at the end). ``check(headers)`` may refuse a
    stream before it is answered, with a reason (answered with RST_STREAM, as kubelet rejects streams)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 check: Callable[[Headers], str | None] | None = None) -> None:
        self.reader, self.writer, self.check = reader, writer, check
        self.codec = HeaderCodec()
        self.streams: dict[int, SpdyStream] = {}
        self._new: asyncio.Queue[SpdyStream | None] = asyncio.Queue()
        self._lock = asyncio.Lock()
        self._last_id = 0
        self.closed = False
        self.ended = asyncio.Event()  # the client is gone (EOF, GOAWAY or a broken connection)

    async def send(self, frame: bytes) -> None:
        if self.closed:
            raise ConnectionError("the SPDY connection is closed")
        async with self._lock:
            self.writer.write(frame)
            await self.writer.drain()

    async def accept(self) -> SpdyStream | None:
        return await self._new.get()

    async def run(self) -> None:
        try:
            while True:
                head = await self.reader.readexactly(8)
                first, second = struct.unpack(">II", head)
                flags, length = second >> 24, second & 0xFFFFFF
                payload = await self.reader.readexactly(length) if length else b""
                if first & 0x80000000:
                    await self._control((first >> 16) & 0x7FFF, first & 0xFFFF, flags, payload)
                else:
                    await self._data(first & 0x7FFFFFFF, flags, payload)
        except (asyncio.IncompleteReadError, ConnectionError, OSError, _GoAway):
            pass
        except SpdyError as exc:
            log.info("SPDY protocol error from the client: %s", exc)
            with contextlib.suppress(ConnectionError, OSError):
                await self.send(control_frame(GOAWAY, 0, struct.pack(">II", self._last_id, 1)))
        finally:
            self._finish()

    def _finish(self) -> None:
        self.closed = True
        self.ended.set()
        for stream in list(self.streams.values()):
            stream._gone()
        self.streams.clear()
        self._new.put_nowait(None)

    async def _control(self, version: int, kind: int, flags: int, payload: bytes) -> None:
        if version != VERSION:
            raise SpdyError(f"control frame of SPDY version {version}; this server speaks version {VERSION}")
        if kind == SYN_STREAM:
            if len(payload) < 10:
                raise SpdyError("short SYN_STREAM")
            stream_id = struct.unpack_from(">I", payload)[0] & 0x7FFFFFFF
            headers = self.codec.decode(payload[10:])
            await self._open(stream_id, headers, flags)
        elif kind in (SYN_REPLY, HEADERS):
            self.codec.decode(payload[4:])  # keeps the zlib stream in step; nothing to do with them here
        elif kind == RST_STREAM:
            stream_id = struct.unpack_from(">I", payload)[0] & 0x7FFFFFFF
            if (stream := self.streams.pop(stream_id, None)) is not None:
                stream.reset_received = True
                stream._gone()
        elif kind == PING:
            (ping_id,) = struct.unpack_from(">I", payload)
            if ping_id % 2 == 1:  # the client's (odd) pings are echoed; we send none
                await self.send(control_frame(PING, 0, payload[:4]))
        elif kind == GOAWAY:
            raise _GoAway
        # SETTINGS and WINDOW_UPDATE: nothing to honour (see the module's note on flow control).

    async def _open(self, stream_id: int, headers: Headers, flags: int) -> None:
        if stream_id % 2 == 0 or stream_id <= self._last_id:
            await self.send(control_frame(RST_STREAM, 0, struct.pack(">II", stream_id, PROTOCOL_ERROR)))
            return
        self._last_id = stream_id
        refusal = self.check(headers) if self.check else None
        if refusal is not None:
            log.info("refused SPDY stream %d: %s", stream_id, refusal)
            await self.send(control_frame(RST_STREAM, 0, struct.pack(">II", stream_id, REFUSED_STREAM)))
            return
        stream = SpdyStream(self, stream_id, headers, bool(flags & FLAG_FIN))
        if flags & FLAG_UNIDIRECTIONAL:
            stream.local_closed = True
        self.streams[stream_id] = stream
        # Answered at once, in order, before anything can be written on it (spdystream drops data that
        # arrives on a stream before its reply).
        await self.send(control_frame(SYN_REPLY, 0, struct.pack(">I", stream_id) + self.codec.encode({})))
        self._new.put_nowait(stream)

    async def _data(self, stream_id: int, flags: int, data: bytes) -> None:
        stream = self.streams.get(stream_id)
        if stream is None:
            return  # already reset or finished: dropped, as spdystream does
        stream._feed(data)
        if flags & FLAG_FIN:
            stream._end()
        await stream._drained.wait()

    async def close(self) -> None:
        """GOAWAY, then the connection is closed (the client sees every stream end)."""
        if self.writer.is_closing():
            return
        with contextlib.suppress(ConnectionError, OSError):
            await self.send(control_frame(GOAWAY, 0, struct.pack(">II", self._last_id, 0)))
        self.closed = True
        self.writer.close()
        with contextlib.suppress(ConnectionError, OSError):
            await self.writer.wait_closed()

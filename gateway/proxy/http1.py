"""HTTP/1.1 to the one upstream: a keep-alive pool of asyncio protocols, parsed by httptools.

Why not aiohttp here: under load its client was the largest single cost of the gateway (about
30% of the proxy's CPU, ~150 µs a request; ``bench/profiles``). A sidecar talks to one origin,
sends bodies of known length and relays what comes back, so it needs a small part of a client:
this module is that part. The parsing is llhttp's (through httptools, the parser uvicorn uses
for the server side); what is written here is connection reuse, flow control and timeouts.

Contract: a response is read whole (:meth:`UpstreamResponse.read`) or as it arrives
(:meth:`UpstreamResponse.chunks`). A connection goes back to the pool only after a complete
keep-alive response; anything else (an error, a cancelled exchange, an unread body, bytes nobody
asked for) closes it. Interim (1xx) answers are skipped; a 101 is a protocol failure.
Failures raise :class:`ConnectFailed` (no connection), :class:`ReadTimeout` (no byte within the
read timeout) or :class:`ProtocolFailed` (the upstream broke the exchange).
"""

from __future__ import annotations

import asyncio
import ssl
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import cast
from urllib.parse import urlsplit

import httptools

PAUSE_ABOVE = 1 << 18
"""Buffered body bytes at which reading from the upstream pauses until the relay catches up."""
MAX_WHOLE_BODY = 256 << 20
"""Largest answer :meth:`UpstreamResponse.read` takes whole (a non-streamed completion, with
every logprob the gateway lets through, is far smaller): a runaway or hostile upstream is
refused as :class:`ProtocolFailed` (502) instead of buffered without bound."""
TOO_LARGE = "the upstream's answer is larger than the gateway reads whole"


class ConnectFailed(ConnectionError):
    """No connection to the upstream could be opened."""


class ReadTimeout(TimeoutError):
    """The upstream sent nothing for longer than the read timeout."""


class PoolTimeout(TimeoutError):
    """Every connection of the pool stayed busy for longer than the connect timeout: the
    upstream is saturated, and a request queued here would only wait for the client to leave."""


class ProtocolFailed(ConnectionError):
    """The upstream closed the connection mid-exchange or sent something that is not HTTP/1.1."""


class StaleConnection(ProtocolFailed):
    """A reused connection was found closed before any byte of the answer: safe to retry."""


@dataclass(frozen=True, slots=True)
class Origin:
    scheme: str
    host: str
    port: int
    host_header: bytes
    base_path: str

    @classmethod
    def parse(cls, base_url: str) -> Origin:
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("the upstream URL must be http:// or https:// with a host")
        default_port = 443 if parts.scheme == "https" else 80
        port = parts.port or default_port
        host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
        host_header = host if port == default_port else f"{host}:{port}"
        return cls(parts.scheme, parts.hostname, port, host_header.encode("idna"),
                   parts.path.rstrip("/"))


class UpstreamResponse:
    """Status and headers as received; the body through :meth:`read` or :meth:`chunks`."""

    __slots__ = ("_buffered", "_chunks", "_conn", "_done", "_error", "_received", "_until_close",
                 "_waiter", "_whole", "raw_headers", "status")

    def __init__(self, conn: _Connection) -> None:
        self._conn = conn
        self._chunks: deque[bytes] = deque()
        self._buffered = 0
        self._done = False
        self._error: BaseException | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._received = False
        self._until_close = True
        self._whole = False  # read() wants it all: no pausing (nobody would resume)
        self.status = 0
        self.raw_headers: list[tuple[bytes, bytes]] = []

    @property
    def complete(self) -> bool:
        return self._done and self._error is None

    def header(self, name: bytes) -> bytes | None:
        """The first value of header ``name`` (lower-case), if any."""
        for key, value in self.raw_headers:
            if key.lower() == name:
                return value
        return None

    @property
    def content_type(self) -> str:
        """The media type, lower-case, without parameters (``""`` when absent)."""
        value = self.header(b"content-type") or b""
        return value.split(b";", 1)[0].strip().lower().decode("latin-1")

    async def read(self) -> bytes:
        """The whole body; :class:`ProtocolFailed` past the connection's ``max_whole_body``
        (the answer is then failed, its bytes dropped and its connection closed)."""
        self._whole = True
        if self.too_large:  # it came before read() did
            self._done, self._error = True, ProtocolFailed(TOO_LARGE)
            self._drop()
            self._conn.close()
        else:
            self._conn.resume()
        while not self._done:
            await self._wait()
        if self._error is not None:
            raise self._error
        body = b"".join(self._chunks)
        self._chunks.clear()
        return body

    async def chunks(self) -> AsyncIterator[bytes]:
        """Body bytes as they arrive (chunked encoding already undone)."""
        while True:
            if self._chunks:
                data = b"".join(self._chunks)
                self._chunks.clear()
                self._buffered = 0
                self._conn.resume()
                yield data
            elif self._error is not None:
                raise self._error
            elif self._done:
                return
            else:
                await self._wait()

    async def _wait(self) -> None:
        self._waiter = asyncio.get_running_loop().create_future()
        try:
            await self._waiter
        finally:
            self._waiter = None

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # fed by the connection's parser
    def body(self, data: bytes) -> None:
        self._chunks.append(data)
        self._buffered += len(data)
        if self._buffered > PAUSE_ABOVE and not self._whole:
            self._conn.pause()
        self._wake()

    def finish(self) -> None:
        self._done = True
        self._wake()

    def fail(self, error: BaseException) -> None:
        if not self._done:
            self._done = True
            self._error = error
            if self._whole:  # read() returns all of an answer or nothing
                self._drop()
            self._wake()

    def _drop(self) -> None:
        self._chunks.clear()
        self._buffered = 0

    @property
    def too_large(self) -> bool:
        """Buffered for :meth:`read` past the connection's ``max_whole_body``."""
        return self._whole and self._buffered > self._conn.max_whole_body


class _Connection(asyncio.Protocol):
    """One keep-alive connection; one exchange at a time."""

    def __init__(self, loop: asyncio.AbstractEventLoop, read_timeout_s: float,
                 max_whole_body: int = MAX_WHOLE_BODY) -> None:
        self._loop = loop
        self._read_timeout_s = read_timeout_s
        self.max_whole_body = max_whole_body
        self._transport: asyncio.Transport | None = None
        self._parser: httptools.HttpResponseParser | None = None
        self._response: UpstreamResponse | None = None
        self._headers_ready: asyncio.Future[None] | None = None
        self._last_read = 0.0
        self._timer: asyncio.TimerHandle | None = None
        self._paused = False
        self._interim = False  # parsing a 1xx answer, which precedes the real one
        self.lost = False
        self.keep_alive = False

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's is no subclass of it

    def data_received(self, data: bytes) -> None:
        response = self._response
        if response is None or self._parser is None or response._done:
            self.close()  # bytes nobody asked for: this connection can't be trusted
            return
        self._last_read = self._loop.time()
        response._received = True
        try:
            self._parser.feed_data(data)
        except (httptools.HttpParserError, httptools.HttpParserUpgrade) as exc:
            refused = exc.__context__  # what a callback of ours raised, if it was that
            self._fail(refused if isinstance(refused, ProtocolFailed)
                       else ProtocolFailed("the upstream's answer is not valid HTTP/1.1"))
            self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self._cancel_timer()
        response = self._response
        if response is None or response._done:
            return
        if (self._headers_ready is not None and self._headers_ready.done()
                and response._until_close and exc is None):
            response.finish()  # a body delimited by the close (no length, not chunked)
            return
        stale = not response._received and self.reused
        self._fail(StaleConnection("closed before answering") if stale
                   else ProtocolFailed("the upstream closed the connection"))

    # httptools callbacks
    def on_message_begin(self) -> None:
        assert self._response is not None
        if self._response._done:  # more bytes right after the answer, in the same read
            raise ProtocolFailed("the upstream sent an answer nobody asked for")

    def on_header(self, name: bytes, value: bytes) -> None:
        assert self._response is not None
        self._response.raw_headers.append((name, value))
        lower = name.lower()
        if lower == b"content-length" or (
                lower == b"transfer-encoding" and b"chunked" in value.lower()):
            self._response._until_close = False

    def on_headers_complete(self) -> None:
        assert self._response is not None and self._parser is not None
        status = self._parser.get_status_code()
        if status < 200:  # an interim answer (103 Early Hints...): the real one follows
            if status == 101:
                raise ProtocolFailed("the upstream switched protocols")
            self._interim = True
            self._response.raw_headers.clear()
            self._response._until_close = True
            return
        self._response.status = status
        if self._headers_ready is not None and not self._headers_ready.done():
            self._headers_ready.set_result(None)

    def on_body(self, body: bytes) -> None:
        response = self._response
        assert response is not None
        response.body(body)
        if response.too_large:
            raise ProtocolFailed(TOO_LARGE)

    def on_message_complete(self) -> None:
        assert self._response is not None and self._parser is not None
        if self._interim:
            self._interim = False
            return
        self.keep_alive = self._parser.should_keep_alive()
        self._cancel_timer()
        self._response.finish()

    # the exchange
    reused = False

    async def exchange(self, request: bytes, *, head: bool) -> UpstreamResponse:
        """Send ``request`` and return once the answer's headers have arrived."""
        assert self._transport is not None
        response = self._response = UpstreamResponse(self)
        self._parser = httptools.HttpResponseParser(self)
        self.keep_alive = False
        self._interim = False
        ready = self._headers_ready = self._loop.create_future()
        self._last_read = self._loop.time()
        self._timer = self._loop.call_at(self._last_read + self._read_timeout_s, self._check)
        self._transport.write(request)
        await ready  # also completed by a failure (see ``_fail``)
        if response._error is not None:
            raise response._error
        if head:  # no body follows; the parser can't know the request was HEAD
            self.keep_alive = False
            self._cancel_timer()
            response.finish()
        return response

    def _check(self) -> None:
        """The read timeout: fires at most once per timeout period, however many reads."""
        idle = self._loop.time() - self._last_read
        if self._paused or idle < self._read_timeout_s:
            self._timer = self._loop.call_at(
                self._loop.time() + self._read_timeout_s - (0 if self._paused else idle),
                self._check)
            return
        self._timer = None
        self._fail(ReadTimeout("the upstream sent nothing within the read timeout"))
        self.close()

    def _fail(self, error: BaseException) -> None:
        self._cancel_timer()
        if self._response is not None:
            self._response.fail(error)
        if self._headers_ready is not None and not self._headers_ready.done():
            self._headers_ready.set_result(None)

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def pause(self) -> None:
        if not self._paused and self._transport is not None:
            self._paused = True
            self._transport.pause_reading()

    def resume(self) -> None:
        if self._paused and self._transport is not None:
            self._paused = False
            self._last_read = self._loop.time()
            self._transport.resume_reading()

    @property
    def reusable(self) -> bool:
        return (self.keep_alive and not self.lost and self._response is not None
                and self._response.complete and not self._response._chunks)

    def reset(self) -> None:
        self._response = None
        self._parser = None
        self._headers_ready = None
        self.reused = True

    def close(self) -> None:
        self._cancel_timer()
        if self._transport is not None and not self.lost:
            self._transport.close()
        self.lost = True


def encode_request(
    method: str, target: str, host: bytes, headers: list[tuple[bytes, bytes]], body: bytes
) -> bytes:
    """The request's bytes. Header names and values come from the server's parser (which
    refuses CR and LF) or from the gateway itself; the length is always the gateway's."""
    lines = [f"{method} {target} HTTP/1.1\r\n".encode("latin-1"), b"host: ", host, b"\r\n"]
    for name, value in headers:
        lines += (name, b": ", value, b"\r\n")
    if body or method not in ("GET", "HEAD"):
        lines.append(b"content-length: %d\r\n" % len(body))
    lines.append(b"\r\n")
    lines.append(body)
    return b"".join(lines)


class ConnectionPool:
    """At most ``max_connections`` connections to one origin, reused most-recent-first; a
    request waits for a free one at most the connect timeout (:class:`PoolTimeout`)."""

    def __init__(
        self, origin: Origin, *, connect_timeout_s: float, read_timeout_s: float,
        max_connections: int, max_whole_body: int = MAX_WHOLE_BODY,
    ) -> None:
        self.origin = origin
        self._max_whole_body = max_whole_body
        self._connect_timeout_s = connect_timeout_s
        self._read_timeout_s = read_timeout_s
        self._max = max_connections
        self._idle: list[_Connection] = []
        self._open = 0
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._closed = False
        self._ssl = ssl.create_default_context() if origin.scheme == "https" else None

    async def acquire(self, *, fresh: bool = False) -> _Connection:
        deadline: float | None = None  # one for the whole wait, however many wake-ups lost
        while True:
            while self._idle and not fresh:
                conn = self._idle.pop()
                if not conn.lost:
                    return conn
                self._open -= 1
            if self._open < self._max:
                break
            loop = asyncio.get_running_loop()
            waiter = loop.create_future()
            self._waiters.append(waiter)
            if deadline is None:
                deadline = loop.time() + self._connect_timeout_s
            try:
                try:
                    async with asyncio.timeout_at(deadline):
                        await waiter
                except TimeoutError:
                    raise PoolTimeout("no upstream connection came free within the connect "
                                      "timeout") from None
            except BaseException:
                if waiter.done() and not waiter.cancelled():
                    self._wake_one()  # woken, then cancelled: the wake-up is the next one's
                raise
            finally:
                if waiter in self._waiters:
                    self._waiters.remove(waiter)
        self._open += 1
        try:
            return await self._connect()
        except BaseException:
            self._open -= 1
            self._wake_one()
            raise

    async def _connect(self) -> _Connection:
        loop = asyncio.get_running_loop()
        origin = self.origin
        try:
            async with asyncio.timeout(self._connect_timeout_s):
                _, conn = await loop.create_connection(
                    lambda: _Connection(loop, self._read_timeout_s, self._max_whole_body),
                    origin.host, origin.port,
                    ssl=self._ssl, server_hostname=origin.host if self._ssl else None,
                )
        except TimeoutError:
            raise
        except OSError as exc:
            raise ConnectFailed(f"cannot connect to the upstream ({type(exc).__name__})") from exc
        return conn

    def release(self, conn: _Connection) -> None:
        if conn.reusable and not self._closed:
            conn.reset()
            self._idle.append(conn)
        else:
            conn.close()
            self._open -= 1
        self._wake_one()

    def _wake_one(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    def close(self) -> None:
        """Close the idle connections; those in use close when released."""
        self._closed = True
        for conn in self._idle:
            conn.close()
        self._open -= len(self._idle)
        self._idle.clear()

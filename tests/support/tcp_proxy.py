"""A cuttable TCP forwarder, to take a real server away from a client and give it back.

``cut()`` aborts every live connection (both sides see a reset) and makes the listener close
each new connection as soon as it is accepted, so clients fail fast rather than hang.
``restore()`` forwards again. The listening port never changes.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable
from types import TracebackType


class TcpProxy:
    def __init__(self, target_host: str, target_port: int) -> None:
        self.target_host = target_host
        self.target_port = target_port
        self.host = "127.0.0.1"
        self.port = 0
        self.connections_accepted = 0
        self._server: asyncio.Server | None = None
        self._cut = False
        self._live: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> TcpProxy:
        self._server = await asyncio.start_server(self._accept, self.host, 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def aclose(self) -> None:
        self.cut()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def __aenter__(self) -> TcpProxy:
        return await self.start()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    @property
    def is_cut(self) -> bool:
        return self._cut

    def cut(self) -> None:
        """Reset every live connection and refuse new ones until ``restore()``."""
        self._cut = True
        for writer in list(self._live):
            writer.transport.abort()
        self._live.clear()

    def restore(self) -> None:
        self._cut = False

    def rewrite_url(self, url: str) -> str:
        """``url`` (``scheme://user@host:port/db``) with host and port replaced by the proxy's."""
        scheme, rest = url.split("://", 1)
        credentials, _, location = rest.rpartition("@")
        _, _, database = location.partition("/")
        prefix = f"{credentials}@" if credentials else ""
        return f"{scheme}://{prefix}{self.host}:{self.port}/{database}"

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._cut:
            writer.transport.abort()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(
                self.target_host, self.target_port
            )
        except OSError:
            writer.transport.abort()
            return
        if self._cut:  # cut while we were connecting
            writer.transport.abort()
            up_writer.transport.abort()
            return
        self.connections_accepted += 1
        self._live.update((writer, up_writer))
        pumps = [
            asyncio.ensure_future(self._pump(reader, up_writer)),
            asyncio.ensure_future(self._pump(up_reader, writer)),
        ]
        for pump in pumps:
            self._tasks.add(pump)
            pump.add_done_callback(self._tasks.discard)
        # When one side is done, so is the other: PostgreSQL clients wait for the server to
        # close after Terminate, so a lingering half-open connection would stall them.
        _, pending = await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
        for pump in pending:
            pump.cancel()
        for side in (writer, up_writer):
            self._live.discard(side)
            side.close()

    @staticmethod
    async def _pump(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
        """Copy bytes until EOF or error."""
        with contextlib.suppress(ConnectionError, OSError):
            while data := await source.read(65536):
                sink.write(data)
                await sink.drain()


class ThreadedTcpProxy:
    """A ``TcpProxy`` on its own event loop in a background thread, for tests whose servers run
    in other threads: ``cut()`` and ``restore()`` are safe to call from any thread."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self._proxy = TcpProxy(target_host, target_port)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    def __enter__(self) -> ThreadedTcpProxy:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._proxy.start(), self._loop).result(timeout=10)
        return self

    def __exit__(self, *_: object) -> None:
        asyncio.run_coroutine_threadsafe(self._proxy.aclose(), self._loop).result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()

    def _call(self, action: Callable[[], None]) -> None:
        async def run() -> None:
            action()

        asyncio.run_coroutine_threadsafe(run(), self._loop).result(timeout=10)

    def cut(self) -> None:
        self._call(self._proxy.cut)

    def restore(self) -> None:
        self._call(self._proxy.restore)

    def rewrite_url(self, url: str) -> str:
        return self._proxy.rewrite_url(url)

    @property
    def port(self) -> int:
        return self._proxy.port

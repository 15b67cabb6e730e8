"""The upstream HTTP/1.1 client (gateway/proxy/http1.py) and UpstreamClient's failure mapping,
against real TCP servers on 127.0.0.1 that speak raw bytes scripted per test.

What it specifies: a response is read whole or as it arrives (de-chunked, with bounded
buffering); the request's bytes on the wire; a connection is reused only after a complete
keep-alive answer and never after anything suspicious; a reused connection found closed is
retried once on a new one; the pool's bound and cancellation; and every failure as the client
sees it: ConnectFailed → 502 upstream_unreachable, ReadTimeout (between reads, not total) → 504
upstream_timeout, ProtocolFailed → 502 upstream_protocol_error, each counted by kind.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
import socket
from asyncio import StreamReader as Reader
from asyncio import StreamWriter as Writer
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import pytest
import uvloop
from prometheus_client import CollectorRegistry

from gateway.errors import GatewayError
from gateway.metrics import Metrics
from gateway.proxy.http1 import (
    PAUSE_ABOVE,
    ConnectFailed,
    ConnectionPool,
    Origin,
    PoolTimeout,
    ProtocolFailed,
    ReadTimeout,
    UpstreamResponse,
)
from gateway.proxy.upstream import FAILURE_KINDS, UpstreamClient

pytestmark = pytest.mark.integration

DEADLINE_S = 10.0  # generous: the machine may be busy; no test waits for it unless broken
LOOPS = [pytest.param(asyncio.new_event_loop, id="asyncio"),
         pytest.param(uvloop.new_event_loop, id="uvloop")]
MAPPED = {"connect": (502, "upstream_unreachable", ConnectFailed),
          "timeout": (504, "upstream_timeout", ReadTimeout),
          "protocol": (502, "upstream_protocol_error", ProtocolFailed)}


# --- a scripted upstream -----------------------------------------------------------------------


@dataclass
class Upstream:
    """What the server saw: connections accepted, open at once, and every request's bytes."""

    port: int = 0
    accepted: int = 0
    open_now: int = 0
    most_open: int = 0
    requests: list[bytes] = field(default_factory=list)


Handler = Callable[[Upstream, Reader, Writer], Awaitable[None]]


@asynccontextmanager
async def upstream(handler: Handler) -> AsyncIterator[Upstream]:
    """A server on a free loopback port running ``handler`` per connection (closed after)."""
    up = Upstream()
    tasks: set[asyncio.Task[Any]] = set()

    async def connected(reader: Reader, writer: Writer) -> None:
        tasks.add(asyncio.current_task())  # type: ignore[arg-type]
        up.accepted += 1
        up.open_now += 1
        up.most_open = max(up.most_open, up.open_now)
        try:
            await handler(up, reader, writer)
        except (ConnectionError, asyncio.CancelledError):  # the client left, or teardown
            pass
        finally:
            up.open_now -= 1
            writer.close()

    server = await asyncio.start_server(connected, "127.0.0.1", 0)
    up.port = server.sockets[0].getsockname()[1]
    try:
        yield up
    finally:
        server.close()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def read_request(up: Upstream, reader: Reader) -> bytes | None:
    """One request (head and Content-Length body), recorded; None once the client closed."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError:
        return None
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    request = head + await reader.readexactly(length)
    up.requests.append(request)
    return request


def response(body: bytes = b"ok", *headers: bytes, status: bytes = b"200 OK",
             version: bytes = b"HTTP/1.1") -> bytes:
    """A Content-Length response."""
    lines = [version + b" " + status, *headers, b"Content-Length: %d" % len(body)]
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


def answering(*answers: bytes) -> Handler:
    """Answers each request on a connection with the next of ``answers`` (the last repeated),
    keeping the connection open until the client closes it."""
    async def handle(up: Upstream, reader: Reader, writer: Writer) -> None:
        n = 0
        while await read_request(up, reader) is not None:
            writer.write(answers[min(n, len(answers) - 1)])
            n += 1
    return handle


def answer_then_close(data: bytes) -> Handler:
    """Reads one request, sends ``data`` (maybe nothing, maybe a part), closes the connection."""
    async def handle(up: Upstream, reader: Reader, writer: Writer) -> None:
        await read_request(up, reader)
        writer.write(data)
    return handle


# --- the client's side -------------------------------------------------------------------------


@asynccontextmanager
async def client_of(up: Upstream | int, metrics: Metrics, *, read_timeout_s: float = DEADLINE_S,
                    max_connections: int = 4, connect_timeout_s: float = DEADLINE_S
                    ) -> AsyncIterator[UpstreamClient]:
    port = up if isinstance(up, int) else up.port
    client = UpstreamClient(f"http://127.0.0.1:{port}/v1", connect_timeout_s=connect_timeout_s,
                            read_timeout_s=read_timeout_s, max_connections=max_connections,
                            metrics=metrics)
    try:
        yield client
    finally:
        await client.stop()


async def fetch(client: UpstreamClient, method: str = "GET", target: str = "/v1/models",
                headers: list[tuple[bytes, bytes]] | None = None,
                body: bytes = b"") -> tuple[UpstreamResponse, bytes]:
    async with asyncio.timeout(DEADLINE_S), client.request(
            method, target, headers or [], body) as answer:
        return answer, await answer.read()


def counted(metrics: Metrics) -> dict[str, float | None]:
    return {kind: metrics.registry.get_sample_value(
        "gateway_upstream_errors_total", {"kind": kind}) for kind in FAILURE_KINDS}


NONE_COUNTED = dict.fromkeys(FAILURE_KINDS, 0.0)


def assert_mapped(failed: pytest.ExceptionInfo[GatewayError], metrics: Metrics,
                  kind: str) -> None:
    """The gateway's error for a failure of ``kind``, caused by http1's, and counted once."""
    status, code, cause = MAPPED[kind]
    assert (failed.value.status, failed.value.code) == (status, code)
    assert isinstance(failed.value.__cause__, cause)
    assert counted(metrics) == {**NONE_COUNTED, kind: 1.0}


async def failing(client: UpstreamClient) -> pytest.ExceptionInfo[GatewayError]:
    with pytest.raises(GatewayError) as failed:
        await fetch(client)
    return failed


async def until(predicate: Callable[[], bool]) -> None:
    async with asyncio.timeout(DEADLINE_S):
        while not predicate():  # noqa: ASYNC110 (polls what the server saw)
            await asyncio.sleep(0.005)


def free_port() -> int:
    """A loopback port nobody listens on (bound, never listened, closed)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


# --- reading responses (core ones on both loops) -----------------------------------------------


async def a_content_length_response_is_read_whole_with_status_and_headers_as_sent() -> None:
    answer = response(b'{"ok": true}', b"Content-Type: Application/JSON; charset=utf-8",
                      b"X-Custom: Value", status=b"201 Created")
    async with upstream(answering(answer)) as up, \
            client_of(up, Metrics(CollectorRegistry())) as client:
        got, body = await fetch(client)
    assert (got.status, body, got.content_type) == (201, b'{"ok": true}', "application/json")
    assert got.raw_headers == [(b"Content-Type", b"Application/JSON; charset=utf-8"),
                               (b"X-Custom", b"Value"), (b"Content-Length", b"12")]
    assert got.header(b"x-custom") == b"Value" and got.complete


async def sequential_requests_reuse_one_keep_alive_connection() -> None:
    async with upstream(answering(response(b"one"), response(b"two"))) as up, \
            client_of(up, Metrics(CollectorRegistry())) as client:
        bodies = [(await fetch(client))[1] for _ in range(2)]
    assert bodies == [b"one", b"two"]
    assert up.accepted == 1 and len(up.requests) == 2


async def chunks_yields_the_dechunked_body_piece_by_piece_as_it_arrives() -> None:
    go = asyncio.Event()

    async def handle(up: Upstream, reader: Reader, writer: Writer) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n6\r\nhello \r\n")
        await go.wait()
        writer.write(b"5\r\nworld\r\n0\r\n\r\n")
        await reader.read()

    pieces: list[bytes] = []
    async with upstream(handle) as up, client_of(up, Metrics(CollectorRegistry())) as c, \
            asyncio.timeout(DEADLINE_S), c.request("GET", "/v1/models", [], b"") as got:
        async for piece in got.chunks():
            pieces.append(piece)
            go.set()
    assert pieces == [b"hello ", b"world"]  # the first yielded before the second was sent


@pytest.mark.parametrize("scenario", [
    a_content_length_response_is_read_whole_with_status_and_headers_as_sent,
    sequential_requests_reuse_one_keep_alive_connection,
    chunks_yields_the_dechunked_body_piece_by_piece_as_it_arrives],
    ids=lambda scenario: scenario.__name__)
@pytest.mark.parametrize("loop", LOOPS)
def test_on_the_default_loop_and_uvloop(
        loop: Callable[[], asyncio.AbstractEventLoop],
        scenario: Callable[[], Coroutine[Any, Any, None]]) -> None:
    with asyncio.Runner(loop_factory=loop) as runner:
        runner.run(scenario())


async def test_a_body_delimited_by_the_connection_close_is_read_whole(metrics: Metrics) -> None:
    answer = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nall of it"
    async with upstream(answer_then_close(answer)) as up, client_of(up, metrics) as client:
        assert (await fetch(client))[1] == b"all of it"
        assert (await fetch(client))[1] == b"all of it"  # and that connection was not kept
    assert up.accepted == 2 and counted(metrics) == NONE_COUNTED


async def test_a_head_answer_returns_without_waiting_for_the_announced_body(
        metrics: Metrics) -> None:
    async with upstream(answering(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n")) as up, \
            client_of(up, metrics) as client:
        got, body = await fetch(client, "HEAD")
    assert (got.status, got.header(b"content-length"), body) == (200, b"100", b"")
    assert got.content_type == "" and got.header(b"content-type") is None
    assert b"content-length" not in up.requests[0]


@pytest.mark.parametrize("one_packet", [True, False], ids=["one-packet", "two-packets"])
async def test_interim_1xx_answers_are_skipped_for_the_final_one(
        metrics: Metrics, one_packet: bool) -> None:
    async def handle(up: Upstream, reader: Reader, writer: Writer) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>\r\n\r\n")
        if not one_packet:
            await writer.drain()
            await asyncio.sleep(0.05)
        writer.write(response(b"final"))
        await reader.read()

    async with upstream(handle) as up, client_of(up, metrics) as client:
        got, body = await fetch(client)
    assert (got.status, body, got.raw_headers) == (200, b"final", [(b"Content-Length", b"5")])


@pytest.mark.parametrize("how", ["read", "chunks"])
async def test_a_large_body_read_late_and_slowly_arrives_intact_with_bounded_buffering(
        metrics: Metrics, how: str) -> None:
    """Reading pauses while the relay lags behind (chunks stay bounded) and resumes when it
    asks, or for good once read() wants it all; a paused read is no upstream timeout: the
    consumer here starts later than the read timeout."""
    data = random.Random(2).randbytes(8 << 20)

    async def handle(up: Upstream, reader: Reader, writer: Writer) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        for start in range(0, len(data), 1 << 16):
            piece = data[start:start + (1 << 16)]
            writer.write(b"%x\r\n%s\r\n" % (len(piece), piece))
            await writer.drain()
        writer.write(b"0\r\n\r\n")
        await reader.read()

    digest, largest = hashlib.sha256(), 0
    async with upstream(handle) as up, client_of(up, metrics, read_timeout_s=0.2) as c, \
            asyncio.timeout(DEADLINE_S * 3), c.request("GET", "/v1/x", [], b"") as got:
        await asyncio.sleep(0.3)
        if how == "read":
            digest.update(await got.read())
        async for piece in got.chunks():
            digest.update(piece)
            largest = max(largest, len(piece))
            await asyncio.sleep(0.002)
    assert digest.digest() == hashlib.sha256(data).digest()
    assert largest <= 4 * PAUSE_ABOVE < len(data)


# --- the request on the wire -------------------------------------------------------------------


@pytest.mark.parametrize(("method", "headers", "body", "rest"), [
    ("POST", [(b"content-type", b"application/json"), (b"x-trace", b"t1")], b'{"a":1}',
     b'content-type: application/json\r\nx-trace: t1\r\ncontent-length: 7\r\n\r\n{"a":1}'),
    ("POST", [], b"", b"content-length: 0\r\n\r\n"),
    ("GET", [(b"accept", b"*/*")], b"", b"accept: */*\r\n\r\n")],
    ids=["post", "empty-post", "bodyless-get"])
async def test_the_request_is_method_target_host_with_port_the_headers_and_length_if_any(
        metrics: Metrics, method: str, headers: list[tuple[bytes, bytes]], body: bytes,
        rest: bytes) -> None:
    async with upstream(answering(response())) as up, client_of(up, metrics) as client:
        target = client.url_for("/v1/chat/completions", b"a=1&b=%20")
        await fetch(client, method, target, headers, body)
    assert up.requests == [method.encode() + b" /v1/chat/completions?a=1&b=%20 HTTP/1.1\r\n"
                           + b"host: 127.0.0.1:%d\r\n" % up.port + rest]


@pytest.mark.parametrize(("url", "host", "base"), [
    ("http://upstream/v1/", b"upstream", "/v1"), ("https://upstream:443", b"upstream", ""),
    ("http://upstream:8000/v1", b"upstream:8000", "/v1"), ("http://[::1]:81/", b"[::1]:81", "")],
    ids=["http-default", "https-default", "other-port", "ipv6"])
def test_the_host_header_names_the_port_only_when_not_the_default(
        url: str, host: bytes, base: str) -> None:
    origin = Origin.parse(url)
    assert (origin.host_header, origin.base_path) == (host, base)


# --- when a connection is (not) reused ---------------------------------------------------------


@pytest.mark.parametrize("answer", [
    response(b"ok", b"Connection: close"), response(b"ok", version=b"HTTP/1.0")],
    ids=["connection-close", "http-1.0"])
async def test_a_connection_close_or_http_1_0_answer_is_not_reused(
        metrics: Metrics, answer: bytes) -> None:
    async with upstream(answering(answer)) as up, client_of(up, metrics) as client:
        assert [(await fetch(client))[1] for _ in range(2)] == [b"ok", b"ok"]
    assert up.accepted == 2


async def test_an_idle_connection_the_server_closed_is_replaced_transparently(
        metrics: Metrics) -> None:
    bye = answer_then_close(response(b"bye"))  # no Connection: close, then closes anyway
    async with upstream(bye) as up, client_of(up, metrics) as client:
        assert [(await fetch(client))[1] for _ in range(3)] == [b"bye"] * 3
    assert up.accepted == 3 and counted(metrics) == NONE_COUNTED


async def test_a_request_racing_the_servers_close_is_retried_once_on_a_new_connection(
        metrics: Metrics) -> None:
    async def handle(up: Upstream, reader: Reader, writer: Writer) -> None:
        first_connection = up.accepted == 1
        await read_request(up, reader)
        writer.write(response(b"first" if first_connection else b"retried"))
        if first_connection:
            await read_request(up, reader)  # read the second request, then close unanswered

    async with upstream(handle) as up, client_of(up, metrics) as client:
        assert [(await fetch(client, "POST", body=b"x"))[1] for _ in range(2)] == [
            b"first", b"retried"]
    assert up.accepted == 2 and len(up.requests) == 3 and up.requests[1] == up.requests[2]
    assert counted(metrics) == NONE_COUNTED


async def test_a_new_connection_closed_before_answering_is_not_retried(
        metrics: Metrics) -> None:
    async with upstream(answer_then_close(b"")) as up, client_of(up, metrics) as client:
        with pytest.raises(GatewayError) as failed:
            await fetch(client, "POST", body=b"not idempotent")
    assert_mapped(failed, metrics, "protocol")
    assert up.accepted == 1


async def test_unsolicited_bytes_on_an_idle_connection_make_it_unusable(
        metrics: Metrics) -> None:
    idle, client_closed = asyncio.Event(), asyncio.Event()

    async def handle(up: Upstream, reader: Reader, writer: Writer) -> None:
        while await read_request(up, reader) is not None:
            writer.write(response(b"answer"))
            if up.accepted == 1:
                await idle.wait()
                writer.write(response(b"nobody asked"))
        client_closed.set()

    async with upstream(handle) as up, client_of(up, metrics) as client:
        assert (await fetch(client))[1] == b"answer"
        idle.set()
        await asyncio.wait_for(client_closed.wait(), DEADLINE_S)
        assert (await fetch(client))[1] == b"answer"
    assert up.accepted == 2


async def test_bytes_after_a_complete_answer_are_not_read_as_part_of_it(
        metrics: Metrics) -> None:
    extra = response(b"smuggled", b"X-Extra: 1")
    async with upstream(answering(response(b"ok") + extra, response(b"ok"))) as up, \
            client_of(up, metrics) as client:
        got, body = await fetch(client)
        assert (got.status, body, got.raw_headers) == (200, b"ok", [(b"Content-Length", b"2")])
        assert (await fetch(client))[1] == b"ok"
    assert up.accepted == 2  # the connection that carried extra bytes was not reused


# --- failures, as raised and as the gateway maps them ------------------------------------------


@pytest.mark.parametrize("how", ["read", "chunks"])
@pytest.mark.parametrize("partial", [
    b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n"],
    ids=["content-length", "chunked"])
async def test_a_close_mid_body_is_protocol_failed_mapped_to_502(
        metrics: Metrics, how: str, partial: bytes) -> None:
    async with upstream(answer_then_close(partial)) as up, client_of(up, metrics) as client:
        with pytest.raises(GatewayError) as failed:
            async with asyncio.timeout(DEADLINE_S), \
                    client.request("GET", "/v1/x", [], b"") as got:
                if how == "read":
                    await got.read()
                async for _ in got.chunks():
                    pass
    assert_mapped(failed, metrics, "protocol")


@pytest.mark.parametrize("garbage", [
    b"SSH-2.0-OpenSSH_9.6\r\n", b"HTTP/1.1 200 OK\r\nContent-Length: zz\r\n\r\n",
    b"HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\nUpgrade: h2c\r\n\r\n"],
    ids=["not-http", "bad-length", "upgrade"])
async def test_an_answer_that_is_not_http_1_1_is_protocol_failed_mapped_to_502(
        metrics: Metrics, garbage: bytes) -> None:
    async with upstream(answering(garbage)) as up, client_of(up, metrics) as client:
        failed = await failing(client)
    assert_mapped(failed, metrics, "protocol")


@pytest.mark.parametrize("sent", [b"", b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\npart"],
                         ids=["before-headers", "mid-body"])
async def test_a_silent_upstream_is_a_read_timeout_mapped_to_504(
        metrics: Metrics, sent: bytes) -> None:
    async def handle(up: Upstream, reader: Reader, writer: Writer) -> None:
        await read_request(up, reader)
        writer.write(sent)
        await reader.read()

    async with upstream(handle) as up, \
            client_of(up, metrics, read_timeout_s=0.2) as client:
        failed = await failing(client)
    assert_mapped(failed, metrics, "timeout")


async def test_a_trickling_upstream_does_not_time_out_the_timeout_is_between_reads(
        metrics: Metrics) -> None:
    async def handle(up: Upstream, reader: Reader, writer: Writer) -> None:
        await read_request(up, reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n")
        for byte in b"0123456789":
            await asyncio.sleep(0.25)
            writer.write(bytes([byte]))
        await reader.read()

    async with upstream(handle) as up, \
            client_of(up, metrics, read_timeout_s=1.0) as client:
        assert (await fetch(client))[1] == b"0123456789"  # 2.5 s in all, > 2 read timeouts
    assert counted(metrics) == NONE_COUNTED


async def test_a_refused_connection_is_502_upstream_unreachable(metrics: Metrics) -> None:
    async with client_of(free_port(), metrics) as client:
        failed = await failing(client)
    assert_mapped(failed, metrics, "connect")


# --- the pool ----------------------------------------------------------------------------------


async def test_the_pool_never_opens_more_than_max_connections(metrics: Metrics) -> None:
    release = asyncio.Event()

    async def handle(up: Upstream, reader: Reader, writer: Writer) -> None:
        while await read_request(up, reader) is not None:
            await release.wait()
            writer.write(response(b"done"))

    async with upstream(handle) as up, client_of(up, metrics, max_connections=2) as c:
        tasks = [asyncio.create_task(fetch(c)) for _ in range(4)]
        await until(lambda: len(up.requests) == 2)
        await asyncio.sleep(0.05)  # a chance to open a third connection, if it were allowed
        assert up.accepted == 2
        release.set()
        assert [body for _, body in await asyncio.gather(*tasks)] == [b"done"] * 4
    assert up.most_open == 2 and len(up.requests) == 4


async def test_a_request_finding_every_connection_busy_waits_at_most_the_connect_timeout(
        metrics: Metrics) -> None:
    """A saturated upstream answers the queued request 504 instead of holding it until the
    client leaves; the busy exchange is not disturbed, and the slot serves again once free."""
    release = asyncio.Event()

    async def handle(up: Upstream, reader: Reader, writer: Writer) -> None:
        while await read_request(up, reader) is not None:
            await release.wait()
            writer.write(response(b"done"))

    async with upstream(handle) as up, \
            client_of(up, metrics, max_connections=1, connect_timeout_s=0.2) as c:
        busy = asyncio.create_task(fetch(c))
        await until(lambda: len(up.requests) == 1)
        failed = await failing(c)
        assert (failed.value.status, failed.value.code) == MAPPED["timeout"][:2]
        assert isinstance(failed.value.__cause__, PoolTimeout)
        assert counted(metrics) == {**NONE_COUNTED, "timeout": 1.0}
        release.set()
        assert (await busy)[1] == b"done"
        assert (await fetch(c))[1] == b"done"
    assert up.most_open == 1


async def test_a_cancelled_exchange_closes_its_connection_and_frees_its_slot(
        metrics: Metrics) -> None:
    abandoned = asyncio.Event()

    async def handle(up: Upstream, reader: Reader, writer: Writer) -> None:
        if up.accepted == 1:
            await read_request(up, reader)
            await reader.read()  # never answers; returns when the client closes
            abandoned.set()
        else:
            await answering(response(b"later"))(up, reader, writer)

    async with upstream(handle) as up, client_of(up, metrics, max_connections=1) as c:
        waiting = asyncio.create_task(fetch(c))
        await until(lambda: len(up.requests) == 1)
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        await asyncio.wait_for(abandoned.wait(), DEADLINE_S)
        assert (await fetch(c))[1] == b"later"
    assert up.accepted == 2 and counted(metrics) == NONE_COUNTED


def one_connection_pool(up: Upstream) -> ConnectionPool:
    return ConnectionPool(Origin.parse(f"http://127.0.0.1:{up.port}"),
                          connect_timeout_s=DEADLINE_S, read_timeout_s=DEADLINE_S,
                          max_connections=1)


async def test_a_waiter_cancelled_after_being_woken_passes_the_free_slot_on() -> None:
    async with upstream(answering(response())) as up:
        pool = one_connection_pool(up)
        held = await pool.acquire()
        woken, next_in_line = (asyncio.create_task(pool.acquire()) for _ in range(2))
        await asyncio.sleep(0.01)  # both are waiting for the one slot
        pool.release(held)  # wakes the first waiter...
        woken.cancel()  # ...which is cancelled before it runs
        got = await asyncio.wait_for(next_in_line, DEADLINE_S)
        pool.release(got)
        pool.close()


@pytest.mark.parametrize("arrived", [True, False], ids=["before-read", "while-reading"])
async def test_an_answer_larger_than_the_whole_body_limit_is_refused_not_buffered(
        arrived: bool) -> None:
    """A runaway upstream cannot make read() buffer without bound: past the limit the answer is
    failed, its bytes dropped and its connection closed, whether the bytes came before read()
    or while it waited; the same body streamed is relayed whole."""
    big = b"x" * 5000
    go = asyncio.Event()

    async def handle(up: Upstream, reader: Reader, writer: Writer) -> None:
        while await read_request(up, reader) is not None:
            whole = response(big)
            writer.write(whole[:-len(big)])
            await go.wait()
            writer.write(whole[-len(big):])

    async with upstream(handle) as up:
        pool = ConnectionPool(Origin.parse(f"http://127.0.0.1:{up.port}"),
                              connect_timeout_s=DEADLINE_S, read_timeout_s=DEADLINE_S,
                              max_connections=1, max_whole_body=4096)
        request = b"GET / HTTP/1.1\r\nhost: x\r\n\r\n"
        conn = await pool.acquire()
        answer = await conn.exchange(request, head=False)
        if arrived:
            go.set()
            await until(lambda: answer._done)
        reading = asyncio.create_task(answer.read())
        if not arrived:
            await until(lambda: answer._waiter is not None)  # read() is waiting
            go.set()
        with pytest.raises(ProtocolFailed, match="larger than"):
            await asyncio.wait_for(reading, DEADLINE_S)
        assert conn.lost and not answer.complete and not answer._chunks
        with pytest.raises(ProtocolFailed):  # refused for good, not handed out on a retry
            await answer.read()
        pool.release(conn)
        conn = await pool.acquire()
        streamed = b"".join([c async for c in (await conn.exchange(request, head=False)).chunks()])
        assert streamed == big
        pool.release(conn)
        pool.close()
    assert up.accepted == 2


async def test_a_connection_released_after_the_pool_closed_is_closed_not_kept() -> None:
    async with upstream(answering(response())) as up:
        pool = one_connection_pool(up)
        conn = await pool.acquire()
        answer = await conn.exchange(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n", head=False)
        assert await answer.read() == b"ok" and conn.reusable
        pool.close()  # the lifespan ends while this exchange is still in flight
        pool.release(conn)
        assert conn.lost
        await until(lambda: up.open_now == 0)


async def test_an_error_of_the_relay_itself_is_not_counted_as_the_upstreams(
        metrics: Metrics) -> None:
    """Only the upstream's failures become 502/504: a bug in what reads the answer stays
    itself (the proxy answers it with its own 500) and counts no upstream error."""
    async with upstream(answering(response())) as up, client_of(up, metrics) as client:
        with pytest.raises(KeyError):
            async with client.request("GET", "/v1/models", [], b""):
                raise KeyError("the relay's own bug")
        assert (await fetch(client))[1] == b"ok"  # the pool is still usable
    assert counted(metrics) == NONE_COUNTED



@pytest.mark.parametrize("query", [b"a=1 HTTP/1.1\r\nx-injected: 1", b"a=1\nb", b"a=\x00", b"a b"])
def test_a_query_that_would_split_the_request_line_is_refused(
        query: bytes, metrics: Metrics) -> None:
    client = UpstreamClient("http://127.0.0.1:1/v1", connect_timeout_s=1, read_timeout_s=1,
                            max_connections=1, metrics=metrics)
    with pytest.raises(GatewayError) as refused:
        client.url_for("/v1/models", query)
    assert (refused.value.status, refused.value.param) == (400, "query")
    assert client.url_for("/v1/models", b"a=1&b=%20") == "/v1/models?a=1&b=%20"

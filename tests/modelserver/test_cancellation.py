"""A client that goes away stops the model's work on its request within a second, streamed or
not — so a gateway that frees an account's concurrency slot on disconnect really frees it."""

from __future__ import annotations

import json
import socket
import time
from typing import Any
from urllib.parse import urlsplit

import pytest

from gateway.modelserver.decoder import BatchDecoder
from tests.modelserver.conftest import signed
from tests.support.waiting import wait_until

PATH = "/v1/completions"


def engine_of(model_server: tuple[str, Any]) -> BatchDecoder:
    engine: BatchDecoder = model_server[1].state.server.engine
    return engine


def open_request(url: str, payload: dict[str, Any]) -> socket.socket:
    """A signed request written on a raw socket, so the test decides when the client leaves."""
    body = json.dumps(payload).encode()
    headers = signed("POST", PATH, body).items()
    address = urlsplit(url)
    lines = [f"POST {PATH} HTTP/1.1", f"Host: {address.netloc}",
             "Content-Type: application/json", f"Content-Length: {len(body)}",
             *(f"{name}: {value}" for name, value in headers)]
    sock = socket.create_connection((address.hostname or "", address.port or 80), timeout=10)
    sock.sendall("\r\n".join(lines).encode() + b"\r\n\r\n" + body)
    return sock


def assert_work_stops_within_a_second(engine: BatchDecoder) -> None:
    hung_up = time.monotonic()
    wait_until(lambda: engine.active_sequences == 0, timeout=1.0, interval=0.01)
    assert time.monotonic() - hung_up < 1.0
    produced = engine.generated_tokens
    time.sleep(0.3)
    assert engine.generated_tokens == produced, "the engine kept generating after the hang-up"


@pytest.mark.parametrize("n", [1, 3])
def test_a_non_streamed_request_stops_generating_when_its_client_hangs_up(
        model_server: tuple[str, Any], n: int) -> None:
    engine = engine_of(model_server)
    sock = open_request(model_server[0], {"model": "m", "prompt": "x", "max_tokens": 4096,
                                          "n": n})
    wait_until(lambda: engine.active_sequences == n, timeout=10, interval=0.01)
    started = engine.generated_tokens
    wait_until(lambda: engine.generated_tokens > started + 10, timeout=10, interval=0.01)
    sock.close()
    assert_work_stops_within_a_second(engine)


def test_a_streamed_request_stops_generating_when_its_client_hangs_up(
        model_server: tuple[str, Any]) -> None:
    engine = engine_of(model_server)
    sock = open_request(model_server[0], {"model": "m", "prompt": "x", "max_tokens": 4096,
                                          "stream": True})
    assert sock.recv(4096).startswith(b"HTTP/1.1 200")
    wait_until(lambda: engine.active_sequences == 1, timeout=10, interval=0.01)
    sock.close()
    assert_work_stops_within_a_second(engine)


def test_a_finished_request_leaves_the_engine_idle_and_counts_its_tokens(
        model_server: tuple[str, Any]) -> None:
    engine = engine_of(model_server)
    before = engine.generated_tokens
    sock = open_request(model_server[0], {"model": "m", "prompt": "x", "max_tokens": 5})
    with sock:
        reply = b""
        while not reply.endswith(b"}"):
            reply += sock.recv(65536)
    assert reply.startswith(b"HTTP/1.1 200")
    assert engine.generated_tokens - before == json.loads(
        reply.split(b"\r\n\r\n", 1)[1])["usage"]["completion_tokens"]
    wait_until(lambda: engine.active_sequences == 0, timeout=1.0, interval=0.01)

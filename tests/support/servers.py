"""Real servers on loopback ports for end-to-end tests: in a thread, or as a separate process."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import uvicorn


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def serve_in_thread(app: Any, port: int | None = None) -> Iterator[str]:
    """Run ``app`` under uvicorn in a background thread; yields its base URL."""
    port = port or free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                            access_log=False, proxy_headers=False, lifespan="on", loop="asyncio")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("server did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)


@contextmanager
def gateway_process(env: dict[str, str], *args: str) -> Iterator[str]:
    """``gateway serve`` as its own OS process; yields its base URL once /healthz answers."""
    port = free_port()
    full_env = {**os.environ, **env}
    command = [sys.executable, "-m", "gateway.cli", "serve", "--port", str(port), *args]
    process = subprocess.Popen(command, env=full_env, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(base, process)
        yield base
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()


def wait_healthy(base: str, process: subprocess.Popen[str] | None = None) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            output = process.stdout.read() if process.stdout else ""
            raise RuntimeError(f"gateway exited with {process.returncode}:\n{output}")
        try:
            if httpx.get(base + "/healthz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError("gateway did not become healthy")


class RecordingApp:
    """Wraps an ASGI app and keeps, per HTTP request, its headers and how it ended:
    ``completed`` once the final body message was sent, ``finished`` once the app returned."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.requests: list[dict[str, Any]] = []

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        entry: dict[str, Any] = {
            "path": scope["path"], "completed": False, "finished": False,
            "headers": {k.decode().lower(): v.decode() for k, v in scope["headers"]},
        }
        self.requests.append(entry)

        async def recording_send(message: Any) -> None:
            if message["type"] == "http.response.body" and not message.get("more_body"):
                entry["completed"] = True
            await send(message)

        try:
            await self.app(scope, receive, recording_send)
        finally:
            entry["finished"] = True


def poll(predicate: Any, timeout: float = 10.0, interval: float = 0.05) -> Any:
    """The first truthy value of ``predicate()`` within ``timeout`` seconds, else AssertionError."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(interval)

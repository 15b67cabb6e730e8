"""Real servers on loopback ports for end-to-end tests: in a thread, or as a separate process."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import uvicorn

from tests.support.waiting import STARTUP_TIMEOUT_S, wait_until


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

    def started() -> bool:
        if not thread.is_alive():
            raise RuntimeError("server exited before it started (its error is logged above)")
        return bool(server.started)

    wait_until(started, timeout=STARTUP_TIMEOUT_S, interval=0.02,
               what=f"uvicorn serving {type(app).__name__} on port {port}")
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
        stop_process(process)


def stop_process(process: subprocess.Popen[Any], timeout: float = 30.0) -> int:
    """SIGTERM, then SIGKILL after ``timeout`` seconds: the one way tests and benches stop a
    process they started. Returns its exit status."""
    if process.poll() is None:
        process.terminate()
        try:
            return process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
    return process.wait()


def wait_healthy(
    base: str, process: subprocess.Popen[str] | None = None, log: Path | None = None,
) -> None:
    """Wait until ``base``/healthz answers 200 (see STARTUP_TIMEOUT_S for how long); fail at
    once, with its output (its stdout pipe, or ``log`` where it writes), if ``process`` exits
    first."""

    def healthy() -> bool:
        if process is not None and process.poll() is not None:
            output = process.stdout.read() if process.stdout else ""
            if log is not None and log.exists():
                output += log.read_text()
            raise RuntimeError(f"gateway exited with {process.returncode}:\n{output}")
        try:
            return httpx.get(base + "/healthz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    wait_until(healthy, timeout=STARTUP_TIMEOUT_S, interval=0.1,
               what=f"the gateway at {base} becoming healthy")


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

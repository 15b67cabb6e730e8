"""Processes for ``proxy_overhead.py``: static nginx upstream, proxies under test, gateway.

Every process is started in its own session (process group) so that stopping it also stops its
workers; ``Processes`` stops whatever is still running when it exits, on errors and Ctrl-C too.
Everything listens on 127.0.0.1 ports picked by the kernel.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from bench.proxy.overhead_payloads import WORKLOADS, Workload, response_body

BENCH_DIR = Path(__file__).resolve().parent
"""This feature's directory: the nginx templates, the wrk script and the pass-through apps."""
RESULTS_DIR = BENCH_DIR.parent / "results"
"""Where every benchmark writes its JSON (gitignored)."""
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
UPSTREAM_CORE = "0"
PROXY_CORE = "1"
BOTH_CORES = "0,1"
START_TIMEOUT_S = 30.0
NGINX_TOKEN_CHARS = 2000  # nginx rejects a config token over 4 KiB (escapes included)


class BenchError(RuntimeError):
    """A setup or measurement failure that ends the run with a message."""


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def run_cli(main: Callable[[], int]) -> None:
    """Exit with ``main()``'s status: 2 on a BenchError, 130 on Ctrl-C (processes stopped)."""
    try:
        sys.exit(main())
    except BenchError as exc:
        log(f"ERROR: {exc}")
        sys.exit(2)
    except KeyboardInterrupt:
        log("interrupted; processes stopped")
        sys.exit(130)


def free_port() -> int:
    """A free loopback TCP port (picked by the kernel)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def log_tail(path: Path, lines: int = 20) -> str:
    if not path.exists():
        return "(no log)"
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


@dataclass
class Managed:
    name: str
    proc: subprocess.Popen[bytes]
    log: Path


class Processes:
    """Starts processes in their own process groups and stops all of them on exit."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self._running: list[Managed] = []

    def start(self, name: str, cmd: list[str], env: dict[str, str] | None = None) -> Managed:
        log = self.log_dir / f"{name}.log"
        with log.open("ab") as out:
            proc = subprocess.Popen(
                cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                env=env, cwd=self.log_dir, start_new_session=True,
            )
        managed = Managed(name, proc, log)
        self._running.append(managed)
        return managed

    def stop(self, managed: Managed, grace_s: float = 5.0) -> None:
        if managed in self._running:
            self._running.remove(managed)
        if managed.proc.poll() is not None:
            return
        _signal_group(managed.proc.pid, signal.SIGTERM)
        try:
            managed.proc.wait(grace_s)
        except subprocess.TimeoutExpired:
            _signal_group(managed.proc.pid, signal.SIGKILL)
            managed.proc.wait()
        _signal_group(managed.proc.pid, signal.SIGKILL)  # stray workers of a finished master

    def pgids(self) -> set[int]:
        """Process groups of the running processes (each one's pid: own session)."""
        return {managed.proc.pid for managed in self._running}

    def stop_all(self) -> None:
        for managed in reversed(list(self._running)):
            self.stop(managed)

    def __enter__(self) -> Processes:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop_all()


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, sig)


def http_request(
    url: str, body: bytes | None = None, headers: dict[str, str] | None = None,
    timeout_s: float = 10.0,
) -> tuple[int, str, bytes]:
    """(status, content-type, body) of one request; POST when there is a body."""
    request = urllib.request.Request(url, data=body, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as resp:
            return resp.status, resp.headers.get("Content-Type", ""), resp.read()
    except urllib.error.HTTPError as err:
        return err.code, err.headers.get("Content-Type", ""), err.read()


def wait_until_up(managed: Managed, url: str, timeout_s: float = START_TIMEOUT_S) -> None:
    """Poll GET ``url`` until it answers 200; fail early if the process exits."""
    deadline = time.monotonic() + timeout_s
    last = "no answer"
    while time.monotonic() < deadline:
        if managed.proc.poll() is not None:
            raise BenchError(
                f"{managed.name} exited with {managed.proc.returncode}:\n{log_tail(managed.log)}"
            )
        try:
            status, _, _ = http_request(url, timeout_s=2.0)
            if status == 200:
                return
            last = f"status {status}"
        except OSError as exc:
            last = str(exc)
        time.sleep(0.1)
    raise BenchError(f"{managed.name} not up at {url} after {timeout_s:.0f}s ({last}):\n"
                     f"{log_tail(managed.log)}")


def nginx_quote(text: str) -> str:
    """Escape text for an nginx single-quoted string (``$`` would start a variable)."""
    if "$" in text:
        raise BenchError("response bodies must not contain '$' (nginx variable syntax)")
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'").replace("\n", "\\n") + "'"


def nginx_return(body: bytes, name: str) -> str:
    """``return 200 '<body>'``; bodies longer than nginx's 4 KiB token limit go in pieces
    through ``set`` variables (evaluated per request, so still no file I/O)."""
    text = body.decode()
    if len(text) <= NGINX_TOKEN_CHARS:
        return f"return 200 {nginx_quote(text)};"
    pieces = [text[i:i + NGINX_TOKEN_CHARS] for i in range(0, len(text), NGINX_TOKEN_CHARS)]
    names = [f"$bench_{name}_{i}" for i in range(len(pieces))]
    lines = [f"set {var} {nginx_quote(piece)};" for var, piece in zip(names, pieces, strict=True)]
    return "\n            ".join([*lines, f'return 200 "{"".join(names)}";'])


def render(template: str, values: dict[str, str]) -> str:
    text = (BENCH_DIR / "nginx" / template).read_text()
    for name, value in values.items():
        text = text.replace(f"@@{name}@@", value)
    unfilled = re.findall(r"@@[A-Z_]+@@", text)
    if unfilled:
        raise BenchError(f"unfilled placeholders in {template}: {unfilled}")
    return text


def _start_nginx(
    procs: Processes, name: str, template: str, values: dict[str, str], cores: str
) -> Managed:
    run_dir = procs.log_dir / name
    run_dir.mkdir(parents=True, exist_ok=True)
    conf = run_dir / "nginx.conf"
    conf.write_text(render(template, {"DIR": str(run_dir), **values}))
    cmd = ["taskset", "-c", cores, NGINX, "-p", str(run_dir), "-e", str(run_dir / "error.log"),
           "-c", str(conf)]
    return procs.start(name, cmd)


@dataclass(frozen=True)
class Upstream:
    """The static nginx upstream: one port per workload, same path /v1/chat/completions."""

    ports: dict[Workload, int]

    def base_url(self, workload: Workload) -> str:
        return f"http://127.0.0.1:{self.ports[workload]}"


def start_upstream(procs: Processes, cores: str = UPSTREAM_CORE) -> Upstream:
    """Static nginx, one worker, pinned to ``cores`` (core 0, with wrk)."""
    ports: dict[Workload, int] = {w: free_port() for w in WORKLOADS}
    models = json.dumps({"object": "list", "data": [{"id": "bench-model", "object": "model"}]})
    values = {
        "JSON_PORT": str(ports["json"]), "SSE_PORT": str(ports["sse"]),
        "JSON_RETURN": nginx_return(response_body("json"), "json"),
        "SSE_RETURN": nginx_return(response_body("sse"), "sse"),
        "MODELS_RETURN": nginx_return(models.encode(), "models"),
    }
    managed = _start_nginx(procs, "upstream-nginx", "upstream.conf.template", values, cores)
    upstream = Upstream(ports)
    for workload in WORKLOADS:
        wait_until_up(managed, f"{upstream.base_url(workload)}/v1/models")
    return upstream


def start_nginx_proxy(
    procs: Processes, upstream_url: str, workload: Workload, cores: str = PROXY_CORE
) -> tuple[Managed, str]:
    """nginx reverse proxy (keepalive pool), one worker, pinned to ``cores`` (core 1)."""
    port = free_port()
    values = {"PORT": str(port), "UPSTREAM_PORT": upstream_url.rsplit(":", 1)[1]}
    managed = _start_nginx(procs, f"proxy-nginx-{workload}", "proxy.conf.template", values,
                           cores)
    url = f"http://127.0.0.1:{port}"
    wait_until_up(managed, f"{url}/v1/models")
    return managed, url


def start_passthrough(
    procs: Processes, module: str, upstream_url: str, workload: Workload,
    cores: str = PROXY_CORE, workers: int = 1,
) -> tuple[Managed, str]:
    """A minimal FastAPI pass-through under uvicorn, ``workers`` workers, pinned to ``cores``
    (core 1)."""
    port = free_port()
    env = {**os.environ, "BENCH_UPSTREAM_URL": f"{upstream_url}/v1"}
    cmd = [
        "taskset", "-c", cores, sys.executable, "-m", "uvicorn", f"{module}:app",
        "--app-dir", str(BENCH_DIR), "--host", "127.0.0.1", "--port", str(port),
        "--loop", "uvloop", "--http", "httptools", "--log-level", "warning", "--no-access-log",
    ]
    if workers > 1:
        cmd += ["--workers", str(workers)]
    managed = procs.start(f"{module}-{workload}" + (f"-w{workers}" if workers > 1 else ""),
                          cmd, env)
    url = f"http://127.0.0.1:{port}"
    wait_until_up(managed, f"{url}/healthz")
    return managed, url

"""Real vLLM (CPU, the shipped tiny model, the watermark processor loaded) for end-to-end tests.

The interpreter comes from :func:`gateway.vllm.launcher.find_python`: ``GATEWAY_VLLM_PYTHON``,
this one if it has vLLM, else ``.venv/vllm`` (where ``scripts/test`` installs it). When none has
vLLM the fixture fails — never skips — saying how to install it.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from gateway.vllm.launcher import VllmOptions, find_python, start, stop
from tests.support.servers import free_port
from tests.support.waiting import wait_until

#: vLLM's start-up (engine process, model load, KV-cache allocation, an import of torch in
#: each of its processes) took 40-60 s on the shared two-core machine; a cold one may take
#: several times that. A start that truly hangs still fails.
VLLM_STARTUP_TIMEOUT_S = 600.0


@contextmanager
def running_vllm(watermark_secret: str, log: Path, *, api_key: str | None = None,
                 watermark: bool = True, extra_args: tuple[str, ...] = ()) -> Iterator[str]:
    """vLLM on a free loopback port (requiring ``api_key`` when given); yields its ``/v1`` base
    URL once ``/v1/models`` answers."""
    options = VllmOptions(port=free_port(), python=find_python(), watermark=watermark,
                          api_key=api_key, extra_args=extra_args)
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    # One core for vLLM, the rest for the gateway and the test: on two cores an unpinned vLLM
    # starves the gateway, which then relays events late enough for a request to finish before
    # a client's hang-up reaches vLLM (seen in CI). Its OpenMP threads bind to core 0 too.
    cores = sorted(os.sched_getaffinity(0))
    env = {**os.environ, "VLLM_CPU_OMP_THREADS_BIND": str(cores[0])} if len(cores) > 1 \
        else None
    process = start(options, watermark_secret, log_path=log, base_env=env)
    if len(cores) > 1:
        os.sched_setaffinity(process.pid, {cores[0]})  # before it spawns its engine process
    base = f"http://127.0.0.1:{options.port}/v1"

    def ready() -> bool:
        if process.poll() is not None:
            raise RuntimeError(f"vLLM exited with {process.returncode}:\n"
                               + log.read_text(errors="replace")[-6000:])
        try:
            return httpx.get(base + "/models", headers=headers, timeout=5).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_until(ready, timeout=VLLM_STARTUP_TIMEOUT_S, interval=0.5,
                   what=f"vLLM answering on {base} (log: {log})")
        yield base
    finally:
        stop(process)


def metric(base: str, name: str, labels: str = "") -> float:
    """The sum of a vLLM metric's samples (``labels``: a substring their labels must contain)."""
    text = httpx.get(base.removesuffix("/v1") + "/metrics", timeout=10).text
    total = 0.0
    for match in re.finditer(rf"^{re.escape(name)}(\{{[^}}]*\}})? (\S+)$", text, re.MULTILINE):
        if labels in (match.group(1) or ""):
            total += float(match.group(2))
    return total

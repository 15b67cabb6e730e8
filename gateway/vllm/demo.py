"""``gateway demo --upstream vllm``: real vLLM (the tiny model, the watermark processor) instead
of the reference model server, for as long as the demo runs."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from gateway.vllm.launcher import VllmOptions, start, stop, wait_ready


@contextmanager
def demo_vllm(port: int, watermark_secret: str, log_path: Path) -> Iterator[None]:
    """Starts vLLM on ``127.0.0.1:port`` and waits until it answers; stops it on exit."""
    options = VllmOptions(port=port)  # raises, saying how to install vLLM, when it is missing
    print(f"Starting vLLM on :{port} (log: {log_path}); on a small CPU this takes a minute.",
          flush=True)
    process = start(options, watermark_secret, log_path=log_path)
    try:
        wait_ready(process, f"http://127.0.0.1:{port}/v1")
        yield
    finally:
        stop(process)

"""``gateway demo --upstream vllm``: real vLLM (the tiny model, the watermark processor) instead
of the reference model server, for as long as the demo runs."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from gateway.vllm.launcher import VllmOptions, find_python, start, stop, wait_ready


def choose_upstream(requested: str, find: Callable[[], str] = find_python) -> tuple[str, str]:
    """``(kind, why)``: ``auto`` is vLLM wherever an interpreter with vLLM is found (faster,
    continuous batching, the engine operators run) and the reference model server otherwise
    (no dependency beyond the torch extra); an explicit ``reference`` or ``vllm`` is kept."""
    if requested != "auto":
        return requested, f"--upstream {requested}"
    try:
        find()
    except FileNotFoundError:
        return "reference", "auto: vLLM is not installed (--upstream vllm says how to add it)"
    return "vllm", "auto: vLLM is installed (--upstream reference for the reference server)"


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

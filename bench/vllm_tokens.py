"""Tokens per second: the reference model server against real vLLM (CPU), at batch 1 and 16,
and the watermark's cost inside vLLM (the same vLLM with and without the processor), in one run.

    .venv/bin/python bench/vllm_tokens.py [--tokens 200] [--rounds 3]

The reference server runs alone; then both vLLMs run at once and take turns (the watermark's
cost is a small difference of two noisy rates; alternating exposes both to the same background
load; each is the median of ``--turns``). Every server is its own process (the client here only
waits on sockets) and gets the same workload: ``/v1/completions`` of ``--tokens`` tokens from the
shipped tiny model at temperature 1, one request at a time (batch 1) or 16 at once (batch 16);
tokens are the servers' own ``usage.completion_tokens``. Every number is printed as a ratio to
the **baseline measured in this run: the reference server at batch 1** (the machine is shared
and noisy; absolute figures do not hold). vLLM comes from ``GATEWAY_VLLM_PYTHON`` or
``.venv/vllm`` (``gateway.vllm.launcher.find_python``). Results also go to
``bench/results/vllm_tokens.txt``.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import secrets
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from gateway.upstream_identity.signature import sign  # noqa: E402
from gateway.upstream_identity.xargs_tag import stamp, tag_key  # noqa: E402
from gateway.vllm.launcher import VllmOptions, start, stop, wait_ready  # noqa: E402

RESULTS = ROOT / "bench" / "results"
MODEL = "tiny-docstrings"
REFERENCE = "reference server (watermark)"
MARKED = "vLLM + watermark processor"
PLAIN = "vLLM, no processor"
WATERMARK_SECRET = secrets.token_urlsafe(32)
SIGNING_SECRET = secrets.token_urlsafe(32)
REFERENCE_SERVER = """
import uvicorn
from gateway.modelserver.config import ServerConfig
from gateway.modelserver.server import create_model_server_app
if __name__ == "__main__":
    uvicorn.run(create_model_server_app(ServerConfig.from_env()), host="127.0.0.1",
                port=int(__import__("sys").argv[1]), log_level="warning")
"""
@dataclass
class Target:
    """A running server and how to address it: ``headers(body, account)`` (the reference
    server's signature) and ``xargs(account)`` (vLLM's watermark tag, or None)."""

    base: str
    vllm: bool
    headers: Callable[[bytes, str], dict[str, str]]
    xargs: Callable[[str], dict[str, str | int] | None]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def nonces() -> Iterator[str]:
    for n in itertools.count():
        yield f"req_bench{n:012d}"


@contextmanager
def reference_server(logs: Path) -> Iterator[Target]:
    port = free_port()
    env = {**os.environ, "GATEWAY_WATERMARK_SECRET": WATERMARK_SECRET,
           "GATEWAY_UPSTREAM_SIGNING_SECRET": SIGNING_SECRET, "PYTHONPATH": str(ROOT)}
    with open(logs / "reference.log", "ab") as out:
        process = subprocess.Popen([sys.executable, "-c", REFERENCE_SERVER, str(port)],
                                   env=env, stdout=out, stderr=subprocess.STDOUT,
                                   start_new_session=True)
    fresh = nonces()

    def signed(body: bytes, account: str) -> dict[str, str]:
        return dict(sign(SIGNING_SECRET.encode(), account, next(fresh), "POST",
                         "/v1/completions", body))

    try:
        wait_ready(process, f"http://127.0.0.1:{port}/v1", timeout_s=300)
        yield Target(f"http://127.0.0.1:{port}/v1", False, signed, lambda _: None)
    finally:
        stop(process)


@contextmanager
def vllm_server(logs: Path, watermark: bool) -> Iterator[Target]:
    options = VllmOptions(port=free_port(), watermark=watermark)
    name = "vllm-watermark.log" if watermark else "vllm-plain.log"
    process = start(options, WATERMARK_SECRET if watermark else None, log_path=logs / name)
    key = tag_key(WATERMARK_SECRET.encode())
    fresh = nonces()

    def xargs(account: str) -> dict[str, str | int] | None:
        return stamp(key, account, next(fresh)) if watermark else None

    try:
        wait_ready(process, f"http://127.0.0.1:{options.port}/v1")
        yield Target(f"http://127.0.0.1:{options.port}/v1", True, lambda *_: {}, xargs)
    finally:
        stop(process)


def tokens_per_s(target: Target, tokens: int, batch: int, rounds: int) -> float:
    """Completion tokens per wall-clock second, ``batch`` requests at a time, ``rounds`` times
    (after one unmeasured warm-up round)."""

    def one(index: int) -> int:
        account = f"acct_bench_{index % 4}"
        ask: dict[str, object] = {"model": MODEL, "prompt": "The", "max_tokens": tokens,
                                  "temperature": 1.0}
        if target.vllm:
            ask["ignore_eos"] = True  # every request makes exactly ``tokens`` tokens
            xargs = target.xargs(account)
            if xargs is not None:
                ask["vllm_xargs"] = xargs
        body = json.dumps(ask).encode()
        headers = {"content-type": "application/json", **target.headers(body, account)}
        reply = httpx.post(target.base + "/completions", content=body, headers=headers,
                           timeout=600)
        reply.raise_for_status()
        return int(reply.json()["usage"]["completion_tokens"])

    with ThreadPoolExecutor(batch) as pool:
        list(pool.map(one, range(batch)))  # warm-up
        produced, started = 0, time.perf_counter()
        for _ in range(rounds):
            produced += sum(pool.map(one, range(batch)))
        return produced / (time.perf_counter() - started)


def processor_step_us(batch: int, vocab: int = 257, steps: int = 2000) -> float:
    """Microseconds per ``BatchWatermark.apply`` on a ``(batch, vocab)`` step, in this process
    (the tiny model's vocabulary; one thread, as in vLLM's CPU worker)."""
    from types import SimpleNamespace

    import torch

    from gateway.watermark.vllm_adapter import BatchWatermark

    torch.set_num_threads(1)
    os.environ["GATEWAY_WATERMARK_SECRET"] = WATERMARK_SECRET
    config = SimpleNamespace(model_config=SimpleNamespace(get_vocab_size=lambda: vocab))
    processor = BatchWatermark(config, torch.device("cpu"), False)
    outputs = [[1, 2, 3] for _ in range(batch)]
    processor.update_state(SimpleNamespace(removed=[], moved=[], added=[
        (i, SimpleNamespace(extra_args={"watermark_account": f"acct_{i}"}), [1, 2], outputs[i])
        for i in range(batch)]))
    logits = torch.randn(batch, vocab)
    samples = []
    for _ in range(5):
        started = time.perf_counter()
        for _ in range(steps // 5):
            processor.apply(logits)
        samples.append((time.perf_counter() - started) / (steps // 5) * 1e6)
    return min(samples)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tokens", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--turns", type=int, default=5, help="alternations of the two vLLMs")
    args = parser.parse_args()
    RESULTS.mkdir(parents=True, exist_ok=True)
    logs = RESULTS / "vllm_tokens_logs"
    logs.mkdir(exist_ok=True)
    rates: dict[tuple[str, int], float] = {}
    log(f"starting {REFERENCE}")
    with reference_server(logs) as target:
        for batch in (1, 16):
            rates[(REFERENCE, batch)] = tokens_per_s(target, args.tokens, batch, args.rounds)
            log(f"  batch {batch}: {rates[(REFERENCE, batch)]:.0f} tok/s")
    # The watermark's cost is a small difference between two noisy numbers: both vLLMs run at
    # once and take turns, round by round, so the machine's other load hits both alike; each
    # rate is the median of its rounds.
    log(f"starting {MARKED} and {PLAIN}")
    with vllm_server(logs, watermark=True) as marked, vllm_server(logs, False) as plain:
        for batch in (1, 16):
            turns: dict[str, list[float]] = {MARKED: [], PLAIN: []}
            for _ in range(args.turns):
                for name, target in ((MARKED, marked), (PLAIN, plain)):
                    turns[name].append(tokens_per_s(target, args.tokens, batch, args.rounds))
            for name, values in turns.items():
                rates[(name, batch)] = statistics.median(values)
                log(f"  {name}, batch {batch}: {[round(v) for v in values]} tok/s")
    baseline = rates[(REFERENCE, 1)]
    lines = [f"tokens/s, {args.tokens} tokens per request, {args.rounds} rounds per measure; "
             "ratio: against the baseline (reference server, batch 1, this run: "
             f"{baseline:.0f} tok/s)",
             f"{'server':32} {'batch':>5} {'tok/s':>8} {'ratio':>7}"]
    for (name, batch), rate in rates.items():
        lines.append(f"{name:32} {batch:>5} {rate:>8.0f} {rate / baseline:>6.2f}x")
    for batch in (1, 16):
        with_, without = rates[(MARKED, batch)], rates[(PLAIN, batch)]
        lines.append(f"watermark overhead in vLLM, batch {batch}: "
                     f"{(without / with_ - 1) * 100:+.1f}% time per token "
                     f"({with_:.0f} vs {without:.0f} tok/s, medians of {args.turns} turns)")
    for batch in (1, 16):
        cost = processor_step_us(batch)
        step = batch / rates[(PLAIN, batch)] * 1e6  # µs per decoding step of vLLM, this run
        lines.append(f"watermark processor alone, batch {batch}: {cost:.0f} µs per step = "
                     f"{cost / step * 100:.1f}% of vLLM's step here ({step:.0f} µs)")
    report = "\n".join(lines)
    print(report)
    (RESULTS / "vllm_tokens.txt").write_text(report + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

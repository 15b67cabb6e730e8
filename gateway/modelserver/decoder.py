"""Batched decoding across concurrent requests, on one worker thread.

Every active sequence (each choice of each request) advances one token per step, all in one
forward pass: sequences join between steps and leave when done, so concurrent requests share
the model instead of queueing behind each other. Each sequence keeps its own KV cache (per layer,
keys and values of the tokens it has seen): a step runs the joining sequences' prompts in one
left-padded forward pass and every other sequence's single new token in another, over their
caches stacked with left padding — so a step costs O(context) attention reads instead of a whole
recomputation. A sequence whose context outgrows the model's window is re-run on its last
``window`` tokens (the same sliding window as before). The watermark is applied to the same
next-token logits either way. Production serving is vLLM with
:mod:`gateway.watermark.vllm_adapter`.
"""

from __future__ import annotations

import asyncio
import inspect
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from gateway.modelserver.sampling import StepOutput, report, sample
from gateway.watermark.processor import WatermarkProcessor, context_window, keys_tensor


@dataclass
class Sequence:
    """One choice being generated. ``emit`` is called (on the event loop) with
    ``(token, logprob, top)`` per token and finally ``None``."""

    prompt: list[int]
    max_tokens: int
    temperature: float
    top_p: float
    top_logprobs: int
    bias: dict[int, float]
    key: tuple[int, int] | None
    generator: torch.Generator | None
    emit: Callable[[tuple[int, float, list[tuple[int, float]]] | None], None]
    stop: Callable[[list[int]], bool] = lambda _: False
    generated: list[int] = field(default_factory=list)
    cancelled: bool = False
    kv: list[tuple[torch.Tensor, torch.Tensor]] | None = None  # per layer, (1, H, T, D)
    kv_start: int = 0  # index in prompt + generated of the first cached token


class BatchDecoder:
    def __init__(self, model: Any, eos_id: int, window: int,
                 watermark: WatermarkProcessor | None, device: torch.device,
                 max_batch: int = 64, use_cache: bool = True) -> None:
        self._model = model
        self._eos = eos_id
        self._window = window
        self._watermark = watermark
        self._device = device
        self._max_batch = max_batch
        self._incoming: queue.Queue[Sequence | None] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.steps = 0
        self.max_batch_seen = 0
        self.generated_tokens = 0  # sampled tokens handed to sequences, for tests and metrics
        self._active: list[Sequence] = []
        self.use_cache = use_cache
        self.prefilled_tokens = 0  # tokens run through the model without a cache (prefills)
        params = inspect.signature(model.forward).parameters if use_cache else {}
        self._cache_arg = "cache" if "cache" in params else "past_key_values"

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._thread = threading.Thread(target=self._run, name="modelserver-engine", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._thread is not None:
            self._incoming.put(None)
            self._thread.join(timeout=10)
            self._thread = None

    def submit(self, sequence: Sequence) -> None:
        self._incoming.put(sequence)

    @property
    def active_sequences(self) -> int:
        """Sequences the engine is generating (read from any thread), so that tests and
        operators can see that a cancelled request no longer costs model work."""
        return len(self._active)

    def _run(self) -> None:
        while True:
            try:
                while len(self._active) < self._max_batch:
                    item = self._incoming.get(block=not self._active)
                    if item is None:
                        self._active = []
                        return
                    self._active.append(item)
            except queue.Empty:
                pass
            active = [s for s in self._active if not s.cancelled]
            self._active = active
            if not active:
                continue
            self.max_batch_seen = max(self.max_batch_seen, len(active))
            with torch.inference_mode():
                out = self.step(active)
            self.steps += 1
            self._active = self._advance(active, out)

    def _advance(self, active: list[Sequence], out: StepOutput) -> list[Sequence]:
        still: list[Sequence] = []
        for i, seq in enumerate(active):
            token = out.tokens[i]
            done = token == self._eos
            if not done:
                seq.generated.append(token)
                self.generated_tokens += 1
                self._send(seq, (token, out.logprobs[i], out.top[i]))
                done = len(seq.generated) >= seq.max_tokens or seq.stop(seq.generated)
            if done:
                self._send(seq, None)
            else:
                still.append(seq)
        return still

    def _send(self, seq: Sequence, item: tuple[int, float, list[tuple[int, float]]] | None
              ) -> None:
        assert self._loop is not None
        self._loop.call_soon_threadsafe(seq.emit, item)

    def step(self, batch: list[Sequence]) -> StepOutput:
        """One forward pass and one sampled token for each sequence of ``batch``."""
        logits = self.next_logits(batch)
        vocab = logits.shape[-1]
        for i, s in enumerate(batch):
            if s.bias:
                index = torch.tensor([t for t in s.bias if 0 <= t < vocab], dtype=torch.long)
                values = torch.tensor([s.bias[t] for t in s.bias if 0 <= t < vocab])
                logits[i].index_add_(0, index.to(self._device), values.to(self._device))
        sampled_from = logits
        if self._watermark is not None and any(s.key for s in batch):
            width = self._watermark.config.width
            keys = keys_tensor([s.key or (0, 0) for s in batch])
            active = torch.tensor([s.key is not None for s in batch])
            sampled_from = self._watermark(
                logits, context_window([s.prompt + s.generated for s in batch], width),
                keys, active)
        temperature = torch.tensor([s.temperature for s in batch], device=self._device)
        top_p = torch.tensor([s.top_p for s in batch], device=self._device)
        chosen = sample(sampled_from, temperature, top_p, [s.generator for s in batch])
        return report(logits, chosen, max(s.top_logprobs for s in batch))

    def next_logits(self, batch: list[Sequence]) -> torch.Tensor:
        """``(B, V)`` float32 next-token logits of each sequence (its last ``window`` tokens)."""
        if not self.use_cache:
            return self._prefill(batch, [(s.prompt + s.generated)[-self._window:]
                                         for s in batch])
        fresh: list[int] = []
        cached: list[int] = []
        for i, s in enumerate(batch):
            length = len(s.prompt) + len(s.generated)
            start = max(0, length - self._window)
            usable = (s.kv is not None and s.kv_start == start
                      and s.kv[0][0].shape[-2] == length - start - 1)
            (cached if usable else fresh).append(i)
        rows: list[torch.Tensor | None] = [None] * len(batch)
        if fresh:
            group = [batch[i] for i in fresh]
            contexts = [(s.prompt + s.generated)[-self._window:] for s in group]
            out = self._prefill(group, contexts)
            for j, i in enumerate(fresh):
                rows[i] = out[j]
        if cached:
            out = self._decode([batch[i] for i in cached])
            for j, i in enumerate(cached):
                rows[i] = out[j]
        return torch.stack([r for r in rows if r is not None])

    def _forward(self, ids: torch.Tensor, mask: torch.Tensor, positions: torch.Tensor,
                 cache: Any = None) -> Any:
        kwargs: dict[str, Any] = {
            "input_ids": ids.to(self._device), "attention_mask": mask.to(self._device),
            "position_ids": positions.to(self._device)}
        if self.use_cache:
            kwargs["use_cache"] = True
            if cache is not None:
                kwargs[self._cache_arg] = cache
        return self._model(**kwargs)

    def _prefill(self, batch: list[Sequence], contexts: list[list[int]]) -> torch.Tensor:
        length = max(len(c) for c in contexts)
        ids = torch.full((len(batch), length), self._eos, dtype=torch.long)
        mask = torch.zeros((len(batch), length), dtype=torch.long)
        for i, c in enumerate(contexts):
            ids[i, length - len(c):] = torch.tensor(c, dtype=torch.long)
            mask[i, length - len(c):] = 1
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        self.prefilled_tokens += sum(len(c) for c in contexts)
        out = self._forward(ids, mask, positions)
        if self.use_cache:
            layers = _cache_layers(out)
            for i, (s, c) in enumerate(zip(batch, contexts, strict=True)):
                pad = length - len(c)
                s.kv = [(k[i:i + 1, :, pad:], v[i:i + 1, :, pad:]) for k, v in layers]
                s.kv_start = len(s.prompt) + len(s.generated) - len(c)
        logits: torch.Tensor = out.logits[:, -1, :].float()
        return logits

    def _decode(self, batch: list[Sequence]) -> torch.Tensor:
        from transformers import DynamicCache

        lengths = [s.kv[0][0].shape[-2] for s in batch if s.kv is not None]
        longest = max(lengths)
        stacked = []
        for layer in range(len(batch[0].kv or [])):
            keys, values = [], []
            for s, n in zip(batch, lengths, strict=True):
                assert s.kv is not None
                k, v = s.kv[layer]
                keys.append(torch.nn.functional.pad(k, (0, 0, longest - n, 0)))
                values.append(torch.nn.functional.pad(v, (0, 0, longest - n, 0)))
            stacked.append((torch.cat(keys), torch.cat(values)))
        mask = torch.zeros((len(batch), longest + 1), dtype=torch.long)
        for i, n in enumerate(lengths):
            mask[i, longest - n:] = 1
        ids = torch.tensor([[(s.prompt + s.generated)[-1]] for s in batch], dtype=torch.long)
        positions = torch.tensor([[n] for n in lengths], dtype=torch.long)
        out = self._forward(ids, mask, positions, DynamicCache(stacked))
        layers = _cache_layers(out)
        for i, (s, n) in enumerate(zip(batch, lengths, strict=True)):
            pad = longest - n
            s.kv = [(k[i:i + 1, :, pad:], v[i:i + 1, :, pad:]) for k, v in layers]
        logits: torch.Tensor = out.logits[:, -1, :].float()
        return logits


def _cache_layers(out: Any) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Per-layer ``(keys, values)``, ``(B, H, T, D)``, of a forward pass's returned cache."""
    cache = out["cache"] if "cache" in out else out["past_key_values"]
    if hasattr(cache, "layers"):
        return [(layer.keys, layer.values) for layer in cache.layers]
    return [(k, v) for k, v in cache]

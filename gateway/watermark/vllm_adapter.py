"""The same watermark inside vLLM — importable without vLLM.

Two entry points, for vLLM's two logits-processor interfaces:

* **Per-request callable** (vLLM V0 / ``SamplingParams(logits_processors=[...])``):
  ``RequestWatermark(secret, account_id)(output_token_ids, logits)`` (or with prompt ids first)
  boosts the green tokens of one request's next step.

* **Batch-level class** (vLLM V1 custom logits processors): ``BatchWatermark`` keeps, per batch
  row, the account key and the token list vLLM hands it in ``update_state`` and watermarks the
  whole ``(B, V)`` logits in ``apply`` with one vectorised call. Enable it with
  ``vllm serve MODEL --logits-processors gateway.watermark.vllm_adapter:BatchWatermark`` and
  ``GATEWAY_WATERMARK_SECRET`` in the server's environment; the gateway's account arrives in each
  request's ``vllm_xargs`` / ``extra_args`` as ``{"watermark_account": "<id>"}`` — put a small
  proxy in front of vLLM that verifies the gateway's signature the way the reference model
  server does (:meth:`gateway.watermark.upstream_auth.Verifier.verify` on the raw method, path
  and query, and body bytes it received, before parsing; nonces shared through
  :class:`gateway.modelserver.replay.RedisNonces` when there are several) and only then sets
  it, so clients can neither choose it nor replay the gateway's requests.

The hashing is :mod:`gateway.watermark.hashing`, so :func:`gateway.watermark.detector.detect`
detects text from either server.
"""

from __future__ import annotations

import os
from typing import Any

import torch

from gateway.watermark.config import WatermarkConfig, config_from_env
from gateway.watermark.keys import derive_key
from gateway.watermark.processor import WatermarkProcessor, context_window, keys_tensor

ACCOUNT_ARG = "watermark_account"


def _config_from_env() -> WatermarkConfig:
    return config_from_env(os.environ)


class RequestWatermark:
    """vLLM V0 per-request logits processor."""

    def __init__(self, secret: bytes, account_id: str, vocab_size: int,
                 config: WatermarkConfig | None = None) -> None:
        self._processor = WatermarkProcessor(config or _config_from_env(), vocab_size)
        self._key = keys_tensor([derive_key(secret, account_id)])

    def __call__(self, *args: Any) -> torch.Tensor:
        if len(args) == 3:  # (prompt_token_ids, output_token_ids, logits)
            prompt, output, logits = args
            history = list(prompt) + list(output)
        else:
            output, logits = args
            history = list(output)
        width = self._processor.config.width
        out = self._processor(logits[None, :], context_window([history], width),
                              self._key.to(logits.device))
        result: torch.Tensor = out[0]
        return result


class BatchWatermark:
    """vLLM V1 batch-level logits processor (duck-typed to its ``LogitsProcessor`` base)."""

    def __init__(self, vllm_config: Any, device: torch.device, is_pin_memory: bool) -> None:
        secret = os.environ.get("GATEWAY_WATERMARK_SECRET", "")
        if not secret:
            raise RuntimeError("BatchWatermark needs GATEWAY_WATERMARK_SECRET")
        self._secret = secret.encode()
        vocab = int(vllm_config.model_config.get_vocab_size())
        self._processor = WatermarkProcessor(_config_from_env(), vocab, device)
        self._rows: dict[int, tuple[tuple[int, int], list[int], list[int]]] = {}

    def is_argmax_invariant(self) -> bool:
        return False  # boosting green tokens can change the greedy choice

    def update_state(self, batch_update: Any) -> None:
        if batch_update is None:
            return
        for index in getattr(batch_update, "removed", ()):
            self._rows.pop(index, None)
        for added in getattr(batch_update, "added", ()):
            index, params, prompt_ids, output_ids = added[:4]
            extra = getattr(params, "extra_args", None) or {}
            account = extra.get(ACCOUNT_ARG)
            if account:
                self._rows[index] = (derive_key(self._secret, str(account)),
                                     list(prompt_ids or []), output_ids)
            else:
                self._rows.pop(index, None)
        for moved in getattr(batch_update, "moved", ()):
            a, b = moved[0], moved[1]
            row_a, row_b = self._rows.pop(a, None), self._rows.pop(b, None)
            if row_a is not None:
                self._rows[b] = row_a
            if row_b is not None and len(moved) > 2 and str(moved[2]).endswith("SWAP"):
                self._rows[a] = row_b

    def apply(self, logits: torch.Tensor) -> torch.Tensor:
        if not self._rows:
            return logits
        rows = sorted(i for i in self._rows if i < logits.shape[0])
        keys = keys_tensor([self._rows[i][0] for i in rows])
        width = self._processor.config.width
        history = [self._rows[i][1] + list(self._rows[i][2]) for i in rows]
        index = torch.tensor(rows, device=logits.device)
        logits[index] = self._processor(logits[index], context_window(history, width), keys)
        return logits

"""The same watermark inside vLLM, as its batch-level (V1) custom logits processor.

Run vLLM with it (the gateway's ``GATEWAY_UPSTREAM_KIND=vllm`` mode speaks to it)::

    GATEWAY_WATERMARK_SECRET=... python -m vllm.entrypoints.openai.api_server --model M \\
        --logits-processors gateway.watermark.vllm_adapter:BatchWatermark

(``python -m gateway.vllm`` builds that line: :mod:`gateway.vllm.launcher`.) vLLM's interface, as in
``vllm/v1/sample/logits_processor/interface.py`` (checked against vLLM 0.32):

* ``validate_params(sampling_params)`` runs in the API server when a request is admitted. Here it
  verifies the gateway's HMAC tag in ``extra_args`` (:mod:`gateway.upstream_identity.xargs_tag`) and
  refuses (``ValueError`` → HTTP 400) a request without a valid, fresh, unused one: vLLM
  generates nothing it cannot watermark for a gateway-authenticated account.
* ``__init__(vllm_config, device, is_pin_memory)`` runs in the engine process: the watermark
  secret comes from ``GATEWAY_WATERMARK_SECRET`` in vLLM's environment (strength and gamma,
  delta and width from ``GATEWAY_WATERMARK_*``, which must match the gateway's).
* ``update_state(batch_update)`` gets the batch changes in the order removed, added, moved;
  an added row is ``(index, params, prompt_ids, output_ids)`` where ``output_ids`` is vLLM's live
  list of the row's generated tokens. Each row keeps its account key, its prompt's last
  ``width`` tokens and that list.
* ``apply(logits)`` watermarks the rows it knows, the whole ``(B, V)`` batch in one vectorised
  call (:class:`gateway.watermark.processor.WatermarkProcessor`), in place.

The V2 model runner (``VLLM_USE_V2_MODEL_RUNNER=1``, chosen by default on GPUs with Triton) has
another interface; run vLLM with ``VLLM_USE_V2_MODEL_RUNNER=0`` (docker-compose and the
Kubernetes manifests do), and vLLM refuses to start with this class otherwise.

Importable without vLLM (the base class is then a stand-in), so the gateway and its unit tests
need no vLLM. The hashing is :mod:`gateway.watermark.hashing`, so
:func:`gateway.watermark.detector.detect` detects text from either server.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import torch

from gateway.upstream_identity.xargs_tag import ACCOUNT, TagVerifier, tag_key
from gateway.watermark.config import WatermarkConfig, config_from_env
from gateway.watermark.hashing import MASK, NO_TOKEN, mix_int
from gateway.watermark.keys import derive_key
from gateway.watermark.processor import WatermarkProcessor, context_window, keys_tensor

ACCOUNT_ARG = ACCOUNT
SECRET_ENV = "GATEWAY_WATERMARK_SECRET"  # noqa: S105 - a variable name
MIN_SECRET_CHARS = 32
PYTHON_SEED_ROWS = 24
"""Up to this many rows, a step's seeds are hashed in Python ints (cheaper than the tensor
operations' fixed costs: 65 µs against 185 µs per step at one row); beyond, in tensors."""


def _vllm_base() -> type:
    """vLLM's ``LogitsProcessor`` ABC, which vLLM's loader requires; ``object`` without vLLM."""
    try:
        module = importlib.import_module("vllm.v1.sample.logits_processor")
    except ImportError:  # vLLM not installed: the class still works, duck-typed
        return object
    base: type = module.LogitsProcessor
    return base


if TYPE_CHECKING:
    _Base = object
else:
    _Base = _vllm_base()


def _config_from_env() -> WatermarkConfig:
    return config_from_env(os.environ)


def watermark_secret(env: Mapping[str, str] | None = None) -> bytes:
    """``GATEWAY_WATERMARK_SECRET``; a missing or short one stops vLLM from starting."""
    secret = (os.environ if env is None else env).get(SECRET_ENV, "")
    if len(secret) < MIN_SECRET_CHARS:
        raise RuntimeError(f"the watermark processor needs {SECRET_ENV} (at least "
                           f"{MIN_SECRET_CHARS} characters, the gateway's own)")
    return secret.encode()


class RequestWatermark:
    """A per-request callable ``(prompt_ids, output_ids, logits)`` or ``(output_ids, logits)``
    → logits (vLLM V0's per-request interface; kept for callers that apply one row)."""

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


def row_seed(key: tuple[int, int], context: list[int], width: int) -> int:
    """:func:`gateway.watermark.hashing.step_seed` of one row, in Python ints: for the few rows
    of a decoding step this is several times cheaper than a dozen tiny tensor operations."""
    context = [NO_TOKEN] * (width - len(context)) + context[-width:]
    value = 0x5BD1E995
    for j in range(1, width + 1):
        value = mix_int(value ^ (((context[-j] + 1) * 0x01000193 + j) & MASK))
    return mix_int(mix_int(key[0] ^ value) ^ key[1])


class _SeededProcessor(WatermarkProcessor):
    """The processor, handed each step's seeds (:func:`row_seed`) instead of hashing them."""

    pending: torch.Tensor | None = None

    def seeds(self, context: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
        if self.pending is not None:
            return self.pending
        return super().seeds(context, keys)


class _Row:
    """One batch row: its account key, its prompt's tail, vLLM's live list of its outputs."""

    __slots__ = ("key", "outputs", "prompt_tail")

    def __init__(self, key: tuple[int, int], prompt_tail: list[int], outputs: list[int]) -> None:
        self.key = key
        self.prompt_tail = prompt_tail
        self.outputs = outputs

    def context(self, width: int) -> list[int]:
        recent = self.outputs[-width:]
        if len(recent) < width:
            return self.prompt_tail + list(recent)
        return list(recent)


class BatchWatermark(_Base):
    """vLLM V1 batch-level logits processor (a ``vllm.v1.sample.logits_processor``
    ``LogitsProcessor`` when vLLM is installed)."""

    _verifier: TagVerifier | None = None

    @classmethod
    def validate_params(cls, sampling_params: Any) -> None:
        """Refuses (``ValueError``: HTTP 400) a request without the gateway's valid tag."""
        if cls._verifier is None:
            cls._verifier = TagVerifier(tag_key(watermark_secret()))
        cls._verifier.verify(getattr(sampling_params, "extra_args", None))

    def __init__(self, vllm_config: Any, device: torch.device, is_pin_memory: bool) -> None:
        self._secret = watermark_secret()
        self._config = _config_from_env()
        self._device = device
        vocab = int(vllm_config.model_config.get_vocab_size())
        self._processor = _SeededProcessor(self._config, vocab, device)
        self._rows: dict[int, _Row] = {}
        # (logits rows, row indices, their keys, index tensor or None when every row is marked),
        # rebuilt only when the batch changes: most steps only append tokens.
        self._layout: tuple[int, list[int], torch.Tensor, torch.Tensor | None] | None = None

    def is_argmax_invariant(self) -> bool:
        return False  # boosting green tokens can change the greedy choice

    def update_state(self, batch_update: Any) -> None:
        if batch_update is None:
            return
        self._layout = None
        width = self._config.width
        for index in batch_update.removed:
            self._rows.pop(index, None)
        for added in batch_update.added:
            index, params, prompt_ids, output_ids = added[:4]
            account = (getattr(params, "extra_args", None) or {}).get(ACCOUNT_ARG)
            if isinstance(account, str) and account:
                tail = list(prompt_ids or [])[-width:]
                self._rows[index] = _Row(derive_key(self._secret, account), tail, output_ids)
            else:  # never admitted by validate_params; left unmarked if it were
                self._rows.pop(index, None)
        for moved in batch_update.moved:
            a, b, direction = moved[0], moved[1], moved[2]
            row_a, row_b = self._rows.pop(a, None), self._rows.pop(b, None)
            if row_a is not None:
                self._rows[b] = row_a
            if row_b is not None and str(getattr(direction, "name", direction)).endswith("SWAP"):
                self._rows[a] = row_b

    def apply(self, logits: torch.Tensor) -> torch.Tensor:
        if not self._rows:
            return logits
        if logits.shape[-1] > self._processor.vocab_size:  # a padded output projection
            self._processor = _SeededProcessor(self._config, logits.shape[-1], self._device)
        layout = self._layout
        if layout is None or layout[0] != logits.shape[0]:
            layout = self._layout = self._plan(logits)
        _, rows, keys, index = layout
        if not rows:
            return logits
        width = self._config.width
        processor = self._processor
        contexts = [self._rows[i].context(width) for i in rows]
        if len(rows) <= PYTHON_SEED_ROWS:  # unread below: the seeds are given
            processor.pending = torch.tensor(
                [row_seed(self._rows[i].key, ctx, width) for i, ctx in zip(rows, contexts,
                                                                           strict=True)],
                dtype=torch.long, device=logits.device)
            context = torch.empty((len(rows), width), dtype=torch.long)
        else:
            context = context_window(contexts, width)
        try:
            if index is None:
                logits.copy_(processor(logits, context, keys))
            else:
                logits[index] = processor(logits[index], context, keys)
        finally:
            processor.pending = None
        return logits

    def _plan(self, logits: torch.Tensor) -> tuple[int, list[int], torch.Tensor,
                                                  torch.Tensor | None]:
        size = logits.shape[0]
        rows = sorted(i for i in self._rows if i < size)
        keys = keys_tensor([self._rows[i].key for i in rows])
        index = None if len(rows) == size else torch.tensor(rows, device=logits.device)
        return size, rows, keys, index

"""The vLLM adapters reproduce the reference processor (vLLM itself is not installed)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from gateway.watermark.config import WatermarkConfig
from gateway.watermark.keys import derive_key
from gateway.watermark.processor import WatermarkProcessor, context_window, keys_tensor
from gateway.watermark.vllm_adapter import BatchWatermark, RequestWatermark

SECRET = "adapter-watermark-secret-0123456789abcd"


def reference(logits: torch.Tensor, history: list[int], account: str) -> torch.Tensor:
    processor = WatermarkProcessor(WatermarkConfig(), logits.shape[-1])
    key = keys_tensor([derive_key(SECRET.encode(), account)])
    return processor(logits[None], context_window([history], 4), key)[0]


def test_per_request_processor_matches_the_reference() -> None:
    logits = torch.randn(300)
    adapter = RequestWatermark(SECRET.encode(), "acct", 300, WatermarkConfig())
    assert torch.equal(adapter([1, 2], [3, 4, 5], logits), reference(logits, [1, 2, 3, 4, 5],
                                                                      "acct"))


def test_batch_processor_tracks_rows_and_leaves_unmarked_rows(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GATEWAY_WATERMARK_SECRET", SECRET)
    config = SimpleNamespace(model_config=SimpleNamespace(get_vocab_size=lambda: 300))
    adapter = BatchWatermark(config, torch.device("cpu"), False)
    assert not adapter.is_argmax_invariant()
    outputs: list[int] = [7, 8]
    params = SimpleNamespace(extra_args={"watermark_account": "acct"})
    plain = SimpleNamespace(extra_args=None)
    adapter.update_state(SimpleNamespace(
        removed=[], moved=[], added=[(0, plain, [1], []), (1, params, [5, 6], outputs)]))
    logits = torch.randn(2, 300)
    out = adapter.apply(logits.clone())
    assert torch.equal(out[0], logits[0])
    assert torch.equal(out[1], reference(logits[1], [5, 6, 7, 8], "acct"))
    adapter.update_state(SimpleNamespace(removed=[1], moved=[], added=[]))
    assert torch.equal(adapter.apply(logits.clone()), logits)

"""The vLLM adapters reproduce the reference processor, track vLLM's batch as its V1 interface
describes it (removed, then added, then moved), and admit only requests the gateway tagged.
Pure logic (no vLLM process): tests/e2e/test_vllm_upstream.py runs it inside real vLLM."""

from __future__ import annotations

from enum import Enum, auto
from types import SimpleNamespace
from typing import Any

import pytest
import torch

from gateway.upstream_identity.xargs_tag import (
    NonceMemory,
    TagError,
    TagVerifier,
    stamp,
    tag_key,
)
from gateway.watermark.config import WatermarkConfig
from gateway.watermark.keys import derive_key
from gateway.watermark.processor import WatermarkProcessor, context_window, keys_tensor
from gateway.watermark.vllm_adapter import PYTHON_SEED_ROWS, BatchWatermark, RequestWatermark

SECRET = "adapter-watermark-secret-0123456789abcd"
VOCAB = 300


class Direction(Enum):  # vLLM's MoveDirectionality, by name
    UNIDIRECTIONAL = auto()
    SWAP = auto()


def reference(logits: torch.Tensor, history: list[int], account: str) -> torch.Tensor:
    processor = WatermarkProcessor(WatermarkConfig(), logits.shape[-1])
    key = keys_tensor([derive_key(SECRET.encode(), account)])
    return processor(logits[None], context_window([history], 2), key)[0]


def batch(removed: list[int] | None = None, added: list[Any] | None = None,
          moved: list[Any] | None = None) -> SimpleNamespace:
    return SimpleNamespace(removed=removed or [], added=added or [], moved=moved or [],
                           batch_size=0)


def params(account: str | None) -> SimpleNamespace:
    return SimpleNamespace(extra_args={"watermark_account": account} if account else None)


@pytest.fixture
def adapter(monkeypatch: pytest.MonkeyPatch) -> BatchWatermark:
    monkeypatch.setenv("GATEWAY_WATERMARK_SECRET", SECRET)
    config = SimpleNamespace(model_config=SimpleNamespace(get_vocab_size=lambda: VOCAB))
    return BatchWatermark(config, torch.device("cpu"), False)


def test_per_request_processor_matches_the_reference() -> None:
    logits = torch.randn(VOCAB)
    adapter = RequestWatermark(SECRET.encode(), "acct", VOCAB, WatermarkConfig())
    assert torch.equal(adapter([1, 2], [3, 4, 5], logits), reference(logits, [1, 2, 3, 4, 5],
                                                                      "acct"))


def test_batch_processor_tracks_rows_and_leaves_unmarked_rows(adapter: BatchWatermark) -> None:
    assert not adapter.is_argmax_invariant()
    outputs: list[int] = [7]
    adapter.update_state(batch(added=[(0, params(None), [1], []),
                                      (1, params("acct"), [5, 6], outputs)]))
    outputs.append(8)  # vLLM appends to the list it handed over: the processor sees it
    logits = torch.randn(2, VOCAB)
    out = adapter.apply(logits.clone())
    assert torch.equal(out[0], logits[0])
    assert torch.equal(out[1], reference(logits[1], [5, 6, 7, 8], "acct"))
    adapter.update_state(batch(removed=[1]))
    assert torch.equal(adapter.apply(logits.clone()), logits)


def test_the_prompt_gives_the_first_steps_their_context(adapter: BatchWatermark) -> None:
    adapter.update_state(batch(added=[(0, params("acct"), [9, 10, 11], [])]))
    logits = torch.randn(1, VOCAB)
    assert torch.equal(adapter.apply(logits.clone())[0], reference(logits[0], [10, 11], "acct"))


def test_moves_and_swaps_follow_the_rows(adapter: BatchWatermark) -> None:
    adapter.update_state(batch(added=[(0, params("a"), [1, 2], []),
                                      (1, params("b"), [3, 4], []),
                                      (2, params("c"), [5, 6], [])]))
    adapter.update_state(batch(removed=[0], moved=[(2, 0, Direction.UNIDIRECTIONAL),
                                                   (0, 1, Direction.SWAP)]))
    logits = torch.randn(2, VOCAB)
    out = adapter.apply(logits.clone())  # row 0 is now "b", row 1 is "c"
    assert torch.equal(out[0], reference(logits[0], [3, 4], "b"))
    assert torch.equal(out[1], reference(logits[1], [5, 6], "c"))


def test_a_padded_vocabulary_is_watermarked_over_its_whole_width(
        adapter: BatchWatermark) -> None:
    adapter.update_state(batch(added=[(0, params("acct"), [1, 2], [])]))
    logits = torch.randn(1, VOCAB + 20)
    assert torch.equal(adapter.apply(logits.clone())[0], reference(logits[0], [1, 2], "acct"))


def test_vllm_refuses_to_start_without_a_proper_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GATEWAY_WATERMARK_SECRET", "short")
    config = SimpleNamespace(model_config=SimpleNamespace(get_vocab_size=lambda: VOCAB))
    with pytest.raises(RuntimeError, match="GATEWAY_WATERMARK_SECRET"):
        BatchWatermark(config, torch.device("cpu"), False)


def test_only_tagged_requests_are_admitted(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GATEWAY_WATERMARK_SECRET", SECRET)
    monkeypatch.setattr(BatchWatermark, "_verifier", None)
    xargs = stamp(tag_key(SECRET.encode()), "acct_1", "req_0123456789ab")
    BatchWatermark.validate_params(SimpleNamespace(extra_args=dict(xargs)))
    for extra in (None, {}, {"watermark_account": "acct_1"}):
        with pytest.raises(ValueError, match="forwarded by the gateway"):
            BatchWatermark.validate_params(SimpleNamespace(extra_args=extra))
    with pytest.raises(ValueError, match="already used"):
        BatchWatermark.validate_params(SimpleNamespace(extra_args=dict(xargs)))


def test_tags_bind_the_account_expire_and_are_single_use() -> None:
    key = tag_key(SECRET.encode())
    verifier = TagVerifier(key)
    xargs = stamp(key, "acct_1", "req_aaaaaaaaaaaa", now=1000)
    with pytest.raises(TagError, match="invalid"):
        verifier.verify({**xargs, "watermark_account": "acct_2"}, now=1001)
    with pytest.raises(TagError, match="invalid"):
        verifier.verify(stamp(tag_key(b"another-secret-of-enough-length!!"), "acct_1",
                              "req_bbbbbbbbbbbb", now=1000), now=1001)
    with pytest.raises(TagError, match="expired"):
        verifier.verify(xargs, now=1000 + 61)
    with pytest.raises(TagError, match="expired"):  # a lifetime longer than allowed
        verifier.verify(stamp(key, "acct_1", "req_cccccccccccc", max_age_s=3600, now=1000),
                        now=1000)
    assert verifier.verify(xargs, now=1001) == "acct_1"
    with pytest.raises(TagError, match="already used"):
        verifier.verify(xargs, now=1002)


def test_the_nonce_memory_fails_closed_when_full_of_live_nonces() -> None:
    memory = NonceMemory(capacity=2)
    assert memory.claim("n1", 10.0, 0.0) and memory.claim("n2", 20.0, 0.0)
    with pytest.raises(TagError, match="full"):
        memory.claim("n3", 30.0, 5.0)
    assert memory.claim("n3", 30.0, 11.0)  # n1 expired and was forgotten
    assert not memory.claim("n2", 20.0, 12.0)


@pytest.mark.parametrize("size", [1, PYTHON_SEED_ROWS, PYTHON_SEED_ROWS + 5])
def test_seeds_hashed_in_python_or_in_tensors_match_the_reference(
        adapter: BatchWatermark, size: int) -> None:
    adapter.update_state(batch(added=[(i, params(f"acct_{i}"), [i, i + 1], [i + 2] * (i % 3))
                                      for i in range(size)]))
    logits = torch.randn(size, VOCAB)
    out = adapter.apply(logits.clone())
    for i in range(size):
        history = [i, i + 1, *[i + 2] * (i % 3)]
        assert torch.equal(out[i], reference(logits[i], history, f"acct_{i}"))

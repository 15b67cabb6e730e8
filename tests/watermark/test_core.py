"""The hash, processor, detector and attribution: agreement, power, null calibration."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from gateway.watermark.attribution import KeyRing, attribute
from gateway.watermark.config import WatermarkConfig
from gateway.watermark.detector import binomial_upper_tail, detect, scored_pairs
from gateway.watermark.hashing import (
    context_hash,
    green_threshold,
    mix,
    mix_int,
    step_seed,
    token_hash,
)
from gateway.watermark.keys import derive_key
from gateway.watermark.processor import WatermarkProcessor, context_window, keys_tensor

CONFIG = WatermarkConfig(gamma=0.25, delta=2.0, width=4)
SECRET = b"test-watermark-secret-0123456789abcdef"
V = 257


def generate(key: tuple[int, int] | None, length: int, seed: int,
             config: WatermarkConfig = CONFIG) -> list[int]:
    """Sample from flat logits with (or without) the watermark."""
    generator = torch.Generator().manual_seed(seed)
    processor = WatermarkProcessor(config, V)
    seq: list[int] = []
    for _ in range(length):
        logits = torch.randn(1, V, generator=generator)
        if key is not None:
            logits = processor(logits, context_window([seq], config.width), keys_tensor([key]))
        seq.append(int(torch.multinomial(torch.softmax(logits, -1), 1, generator=generator)))
    return seq


def test_numpy_torch_and_python_hashes_agree() -> None:
    values = np.array([0, 1, 2**31, 2**32 - 1, 123456789], dtype=np.int64)
    expected = [mix_int(int(v)) for v in values]
    assert mix(values).tolist() == expected
    assert mix(torch.tensor(values)).tolist() == expected
    ctx = np.array([[-1, -1, 5, 9], [1, 2, 3, 4]], dtype=np.int64)
    assert context_hash(ctx, 4).tolist() == context_hash(torch.tensor(ctx), 4).tolist()


def test_processor_matches_the_detectors_green_list_for_a_batch() -> None:
    processor = WatermarkProcessor(CONFIG, V)
    keys = [derive_key(SECRET, "a"), derive_key(SECRET, "b")]
    context = context_window([[1, 2, 3, 4, 5], [7]], CONFIG.width)
    green = processor.green_mask(context, keys_tensor(keys)).numpy()
    for row, key in enumerate(keys):
        seed = step_seed(np.int64(key[0]), np.int64(key[1]),
                         context_hash(context.numpy()[row], CONFIG.width))
        ref = mix(seed ^ token_hash(np.arange(V, dtype=np.int64))) < green_threshold(0.25)
        assert (green[row] == ref).all()
    assert 0.18 < green.mean() < 0.32
    assert not (green[0] == green[1]).all()


def test_processor_adds_delta_only_to_green_tokens_of_active_rows() -> None:
    processor = WatermarkProcessor(CONFIG, V)
    logits = torch.zeros(2, V)
    keys = keys_tensor([derive_key(SECRET, "a")] * 2)
    out = processor(logits, context_window([[1], [1]], 4), keys, torch.tensor([True, False]))
    green = processor.green_mask(context_window([[1]], 4), keys[:1])[0]
    assert torch.equal(out[0], green.float() * 2.0)
    assert torch.equal(out[1], torch.zeros(V))


def test_low_entropy_steps_barely_change() -> None:
    processor = WatermarkProcessor(CONFIG, V)
    keys = keys_tensor([derive_key(SECRET, "a")])
    ctx = context_window([[3, 1, 4, 1]], 4)
    peaked = torch.full((1, V), -20.0)
    peaked[0, 0] = 0.0
    flat = torch.zeros(1, V)

    def kl(logits: torch.Tensor) -> float:
        p = torch.log_softmax(logits, -1)
        q = torch.log_softmax(processor(logits, ctx, keys), -1)
        return float((p.exp() * (p - q)).sum())

    assert kl(peaked) < 1e-3 < kl(flat)


def test_watermarked_text_is_detected_and_other_keys_are_not() -> None:
    key = derive_key(SECRET, "acct-1")
    text = generate(key, 200, seed=1)
    hit = detect(text, key, CONFIG)
    assert hit.p_value < 1e-6 and hit.tokens_scored > 150
    assert detect(text, derive_key(SECRET, "acct-2"), CONFIG).p_value > 1e-3
    assert detect(generate(None, 200, seed=2), key, CONFIG).p_value > 1e-3


def test_repeated_context_token_pairs_are_scored_once() -> None:
    key = derive_key(SECRET, "acct-1")
    text = generate(key, 60, seed=3)
    once = detect(text, key, CONFIG)
    assert detect(text * 20, key, CONFIG).tokens_scored < once.tokens_scored + 5 * 4
    _ctx, tokens = scored_pairs([1, 2, 3, 4, 5] * 50, 4)
    assert len(tokens) == 5


def test_binomial_tail_is_exact() -> None:
    tail = binomial_upper_tail(4, 0.25)
    assert tail[0] == pytest.approx(1.0)
    assert tail[4] == pytest.approx(0.25**4)
    assert tail[3] == pytest.approx(4 * 0.25**3 * 0.75 + 0.25**4)


def test_p_values_of_unwatermarked_text_are_calibrated() -> None:
    """Under the null the p-value is (conservatively) uniform: P(p < a) <= a."""
    rng = np.random.default_rng(0)
    key = derive_key(SECRET, "acct-1")
    p = np.array([detect(rng.integers(0, V, 100), key, CONFIG).p_value for _ in range(2000)])
    assert (p < 0.01).mean() <= 0.02
    assert 0.02 <= (p < 0.05).mean() <= 0.07


def test_attribution_names_the_account_among_thousands_with_a_corrected_p_value() -> None:
    accounts = [f"acct-{i}" for i in range(3000)]
    text = generate(derive_key(SECRET, "acct-1234"), 250, seed=4)
    found = attribute(text, KeyRing(accounts, [SECRET]), CONFIG)
    assert found.account_id == "acct-1234" and found.watermarked
    assert found.p_value == pytest.approx(found.raw_p_value * 3000)
    unmarked = attribute(generate(None, 250, seed=5), KeyRing(accounts, [SECRET]), CONFIG)
    assert unmarked.account_id is None and not unmarked.watermarked


def test_text_from_before_a_secret_rotation_is_still_attributed() -> None:
    old, new = SECRET, b"the-new-watermark-secret-after-rotation!"
    text = generate(derive_key(old, "acct-7"), 250, seed=6)
    assert attribute(text, KeyRing(["acct-7", "acct-8"], [new]), CONFIG).account_id is None
    found = attribute(text, KeyRing(["acct-7", "acct-8"], [new, old]), CONFIG)
    assert found.account_id == "acct-7" and found.keys_tested == 4


def test_keys_are_per_account_and_per_secret() -> None:
    assert derive_key(SECRET, "a") != derive_key(SECRET, "b")
    assert derive_key(SECRET, "a") != derive_key(SECRET + b"x", "a")
    assert all(0 <= w < 2**32 for w in derive_key(SECRET, "a"))


@pytest.mark.parametrize("gamma", [0.25, 0.1, 0.5, 0.9])
def test_the_32_bit_processor_is_bit_identical_to_the_int64_reference(gamma: float) -> None:
    """Both paths of the final comparison, and batches split into cache-sized chunks."""
    vocab = 70_000  # > the chunk size per row: one row per chunk
    processor = WatermarkProcessor(WatermarkConfig(gamma=gamma), vocab)
    generator = torch.Generator().manual_seed(1)
    context = torch.randint(-1, vocab, (5, 4), generator=generator)
    keys = torch.randint(0, 2**32, (5, 2), generator=generator)
    fast = processor.green_mask(context, keys)
    assert torch.equal(fast, processor.reference_green_mask(context, keys))
    assert abs(fast.float().mean().item() - gamma) < 0.01
    logits = torch.randn(5, vocab, generator=generator)
    assert torch.equal(processor(logits, context, keys),
                       logits + fast.to(logits.dtype) * processor.config.delta)


def test_the_optional_compiled_path_falls_back_to_eager_when_it_differs(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The guard, without paying for a real compilation: a 'compiled' function that is off by
    one ulp is caught on first use and never used again."""
    from gateway.watermark import processor as module

    calls = []

    def broken(*args: object, **kw: object) -> torch.Tensor:
        calls.append(1)
        return torch.nextafter(module.fused_watermark(*args, **kw),  # type: ignore[arg-type]
                               torch.tensor(float("inf")))

    monkeypatch.setattr(torch, "compile", lambda fn, **kw: broken)
    processor = WatermarkProcessor(CONFIG, V, compile=True)
    eager = WatermarkProcessor(CONFIG, V)
    logits = torch.randn(3, V)
    context = context_window([[1, 2], [3], []], 4)
    keys = keys_tensor([derive_key(SECRET, a) for a in "abc"])
    assert torch.equal(processor(logits, context, keys), eager(logits, context, keys))
    assert torch.equal(processor(logits, context, keys), eager(logits, context, keys))
    assert len(calls) == 1


def test_the_fused_expression_is_the_processor(monkeypatch: pytest.MonkeyPatch) -> None:
    """What ``compile=True`` compiles, run eagerly, equals the processor (both threshold paths,
    inactive rows)."""
    from gateway.watermark import processor as module

    monkeypatch.setattr(torch, "compile", lambda fn, **kw: fn)
    for gamma in (0.25, 0.1):
        config = WatermarkConfig(gamma=gamma)
        fused = WatermarkProcessor(config, V, compile=True)
        logits = torch.randn(3, V)
        context = context_window([[1, 2], [3], []], 4)
        keys = keys_tensor([derive_key(SECRET, a) for a in "abc"])
        active = torch.tensor([True, False, True])
        assert fused._compiled is module.fused_watermark
        assert torch.equal(fused(logits, context, keys, active),
                           WatermarkProcessor(config, V)(logits, context, keys, active))
        assert fused._compiled is module.fused_watermark  # the guard kept it

"""The engine's KV cache: the same next-token logits as recomputing the whole context, with
sequences joining and leaving between steps and contexts sliding past the model's window."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from gateway.modelserver.decoder import BatchDecoder, Sequence


def load(model_dir: Path) -> Any:
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32).eval()


def seq(prompt: list[int]) -> Sequence:
    return Sequence(prompt=prompt, max_tokens=100, temperature=0.0, top_p=1.0, top_logprobs=0,
                    bias={}, key=None, generator=None, emit=lambda _: None)


def test_cached_decoding_matches_recomputation_across_joins_and_the_window(
        toy_model_dir: Path) -> None:
    model = load(toy_model_dir)
    window = 40
    cached = BatchDecoder(model, 256, window, None, torch.device("cpu"))
    plain = BatchDecoder(model, 256, window, None, torch.device("cpu"), use_cache=False)
    prompts = [[65, 66, 67], [70] * 9, [71, 72], [80, 81, 82, 83, 84]]
    a = [seq(p) for p in prompts[:2]]
    b = [seq(p) for p in prompts[:2]]
    generator = torch.Generator().manual_seed(0)
    with torch.inference_mode():
        for step in range(45):
            if step == 5:  # a sequence joins mid-flight, another leaves
                a, b = [*a[1:], seq(prompts[2])], [*b[1:], seq(prompts[2])]
            if step == 9:
                a.append(seq(prompts[3]))
                b.append(seq(prompts[3]))
            got, want = cached.next_logits(a), plain.next_logits(b)
            torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)
            tokens = torch.randint(32, 127, (len(a),), generator=generator).tolist()
            for x, y, t in zip(a, b, tokens, strict=True):
                x.generated.append(t)
                y.generated.append(t)
    # each sequence's prompt was run once, plus one re-run per step past the 40-token window
    assert cached.prefilled_tokens < plain.prefilled_tokens / 3

"""Token reservations made before the upstream reports real usage (reconciled afterwards).

Prompt tokens come from a real tokenizer when one is configured (``GATEWAY_TOKENIZER_PATH``, a
Hugging Face ``tokenizer.json``; needs the ``tokenizer`` extra), else from a conservative
character estimate: 3 characters per token, where most tokenizers average about 4 on English.
"""

from __future__ import annotations

from collections.abc import Callable

PromptCounter = Callable[[str], int]
CHARS_PER_TOKEN_FLOOR = 3
DEFAULT_COMPLETION_TOKENS = 256


def char_estimate(text: str) -> int:
    return len(text) // CHARS_PER_TOKEN_FLOOR + 1


def tokenizer_counter(path: str) -> PromptCounter:
    """A counter backed by a Hugging Face tokenizer file (loaded once)."""
    try:
        from tokenizers import Tokenizer
    except ImportError as exc:  # pragma: no cover - depends on the installed extras
        raise RuntimeError(
            "GATEWAY_TOKENIZER_PATH needs the 'tokenizers' package (the 'tokenizer' extra)"
        ) from exc
    tokenizer = Tokenizer.from_file(path)

    def count(text: str) -> int:
        return len(tokenizer.encode(text, add_special_tokens=False).ids)

    return count


def estimate_tokens(
    prompt_tokens: int, max_tokens: int | None, n: int | None, *, completes: bool = True
) -> int:
    """Prompt plus the completion budget of every choice (none for embeddings)."""
    if not completes:
        return prompt_tokens
    completion = max_tokens if max_tokens is not None else DEFAULT_COMPLETION_TOKENS
    return prompt_tokens + completion * max(n or 1, 1)

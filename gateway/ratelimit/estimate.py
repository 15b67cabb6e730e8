"""Token estimates used for reservations before the upstream reports real usage."""

from __future__ import annotations

CHARS_PER_TOKEN_FLOOR = 3
DEFAULT_COMPLETION_TOKENS = 256


def estimate_tokens(prompt_chars: int, max_tokens: int | None, n: int | None) -> int:
    """A conservative estimate: prompt at 3 characters per token (most tokenizers average ~4)
    plus the completion budget for every choice."""
    completion = max_tokens if max_tokens is not None else DEFAULT_COMPLETION_TOKENS
    return prompt_chars // CHARS_PER_TOKEN_FLOOR + 1 + completion * max(n or 1, 1)

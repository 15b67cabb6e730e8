"""Reservations: a real tokenizer when configured, a conservative estimate otherwise."""

from pathlib import Path

from tokenizers import Tokenizer, models, pre_tokenizers

from gateway.ratelimit.estimate import char_estimate, estimate_tokens, tokenizer_counter


def test_the_character_estimate_overcounts_ordinary_english() -> None:
    text = "The quick brown fox jumps over the lazy dog. " * 20
    assert char_estimate(text) > len(text.split()) * 1.3  # ~1.3 tokens per English word


def test_a_configured_tokenizer_counts_exactly(tmp_path: Path) -> None:
    vocab = {"[UNK]": 0, "hello": 1, "world": 2}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    path = tmp_path / "tokenizer.json"
    tokenizer.save(str(path))
    count = tokenizer_counter(str(path))
    assert count("hello world hello") == 3


def test_reservation_covers_every_choice_and_none_for_embeddings() -> None:
    assert estimate_tokens(10, 100, 3) == 310
    assert estimate_tokens(10, None, None) == 10 + 256
    assert estimate_tokens(10, 100, 3, completes=False) == 10

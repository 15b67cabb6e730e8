"""Tokenizers the reference model server speaks, and the watermark detector re-tokenises with.

The shipped tiny model is byte-level: token ``b`` (0–255) is the byte ``b`` and token 256 is
end-of-text, so any text round-trips exactly and the watermark detector can re-tokenise a text
without the model. A model directory with a Hugging Face tokenizer uses that instead.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Protocol

BYTE_TOKENIZER_FILE = "byte_tokenizer.json"
BYTE_VOCAB = 257
BYTE_EOS = 256


class Tokenizer(Protocol):
    eos_id: int
    vocab_size: int

    def encode(self, text: str) -> list[int]:
        ...

    def decode(self, ids: list[int]) -> str:
        ...

    def token_bytes(self, token_id: int) -> bytes:
        ...


class ByteTokenizer:
    """UTF-8 bytes as tokens; decoding replaces incomplete sequences (only at the very end)."""

    eos_id = BYTE_EOS
    vocab_size = BYTE_VOCAB

    def encode(self, text: str) -> list[int]:
        return list(text.encode("utf-8"))

    def decode(self, ids: list[int]) -> str:
        return bytes(i for i in ids if 0 <= i < 256).decode("utf-8", errors="replace")

    def token_bytes(self, token_id: int) -> bytes:
        return bytes([token_id]) if 0 <= token_id < 256 else b""

    def save(self, directory: Path) -> None:
        (directory / BYTE_TOKENIZER_FILE).write_text(
            json.dumps({"type": "bytes", "vocab_size": BYTE_VOCAB, "eos_id": BYTE_EOS}))


class HFTokenizer:
    """A Hugging Face tokenizer from the model directory (for models other than the tiny one)."""

    def __init__(self, tokenizer: Any) -> None:
        self._tok = tokenizer
        self.eos_id = int(tokenizer.eos_token_id if tokenizer.eos_token_id is not None else 0)
        self.vocab_size = len(tokenizer)

    def encode(self, text: str) -> list[int]:
        return list(self._tok.encode(text, add_special_tokens=False))

    def decode(self, ids: list[int]) -> str:
        return str(self._tok.decode(ids, skip_special_tokens=True))

    def token_bytes(self, token_id: int) -> bytes:
        return self.decode([token_id]).encode("utf-8")


def load_tokenizer(directory: Path) -> Tokenizer:
    if (directory / BYTE_TOKENIZER_FILE).exists():
        return ByteTokenizer()
    from transformers import AutoTokenizer

    return HFTokenizer(AutoTokenizer.from_pretrained(str(directory)))


def token_text(tokenizer: Tokenizer, token_id: int) -> str:
    """The token as OpenAI shows it: its text, or ``bytes:\\xNN`` when not valid UTF-8 alone."""
    raw = tokenizer.token_bytes(token_id)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return "bytes:" + "".join(f"\\x{b:02x}" for b in raw)

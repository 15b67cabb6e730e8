"""The tiny model's byte vocabulary as a Hugging Face ``tokenizer.json``, for servers (vLLM)
that load a tokenizer from the model directory.

Token ``b`` (0–255) is byte ``b`` and token 256 is ``<|endoftext|>``, exactly as
:class:`gateway.tokenizer.core.ByteTokenizer`: a byte-level BPE with no merges, whose
vocabulary lists GPT-2's byte → printable-character map in byte order. So a text tokenised by
vLLM is the same token ids the reference server and the watermark detector use. The chat
template joins the messages' contents with newlines and ends with one, as the reference
server's ``_chat_prompt`` does. ``tokenizer_config.json`` names the fast tokenizer class and the
template; both files are committed beside the model (``python -m
gateway.tokenizer.hf_tokenizer DIR`` rewrites them).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from gateway.tokenizer.core import BYTE_EOS

EOS_TEXT = "<|endoftext|>"
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}{{ part['text'] }}{% endfor %}{% endif %}"
    "{{ '\\n' }}{% endfor %}"
)
MAX_LENGTH = 256


def byte_to_unicode() -> dict[int, str]:
    """GPT-2's reversible map of the 256 bytes to printable characters (ByteLevel's alphabet)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1),
                 *range(ord("®"), ord("ÿ") + 1)]
    chars = list(printable)
    extra = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            chars.append(256 + extra)
            extra += 1
    return {byte: chr(char) for byte, char in zip(printable, chars, strict=True)}


def tokenizer_json() -> dict[str, object]:
    """The ``tokenizer.json`` document (the tokenizers library's serialisation format)."""
    mapping = byte_to_unicode()
    vocab = {mapping[byte]: byte for byte in range(256)}
    vocab[EOS_TEXT] = BYTE_EOS
    byte_level = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False,
                  "use_regex": False}
    return {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": [{"id": BYTE_EOS, "content": EOS_TEXT, "single_word": False,
                          "lstrip": False, "rstrip": False, "normalized": False,
                          "special": True}],
        "normalizer": None,
        "pre_tokenizer": byte_level,
        "post_processor": None,
        "decoder": byte_level,
        "model": {"type": "BPE", "dropout": None, "unk_token": None,
                  "continuing_subword_prefix": None, "end_of_word_suffix": None,
                  "fuse_unk": False, "byte_fallback": False, "ignore_merges": False,
                  "vocab": vocab, "merges": []},
    }


def tokenizer_config() -> dict[str, object]:
    return {"tokenizer_class": "PreTrainedTokenizerFast", "eos_token": EOS_TEXT,
            "bos_token": EOS_TEXT, "pad_token": EOS_TEXT, "model_max_length": MAX_LENGTH,
            "add_bos_token": False, "add_eos_token": False, "clean_up_tokenization_spaces": False,
            "chat_template": CHAT_TEMPLATE}


def write(directory: Path) -> None:
    (directory / "tokenizer.json").write_text(json.dumps(tokenizer_json(), ensure_ascii=False,
                                                         indent=1) + "\n", encoding="utf-8")
    (directory / "tokenizer_config.json").write_text(
        json.dumps(tokenizer_config(), indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":
    write(Path(sys.argv[1]))

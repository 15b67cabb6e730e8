"""The tiny model's ``tokenizer.json`` (what vLLM loads) gives the byte tokenizer's ids, and its
chat template renders the reference server's chat prompt: text from either server is the same
tokens to the watermark detector."""

from __future__ import annotations

import json

from tokenizers import Tokenizer
from transformers import AutoTokenizer

from gateway.modelserver.config import DEFAULT_MODEL_DIR
from gateway.modelserver.openai_shapes import _chat_prompt
from gateway.tokenizer.core import BYTE_EOS, ByteTokenizer
from gateway.tokenizer.hf_tokenizer import tokenizer_config, tokenizer_json

TEXT = "Return the value.\n\tUnicode: wörd ∑ 😀 \x00\x7f end"


def test_the_committed_files_are_what_the_generator_writes() -> None:
    assert json.loads((DEFAULT_MODEL_DIR / "tokenizer.json").read_text()) == tokenizer_json()
    assert json.loads((DEFAULT_MODEL_DIR / "tokenizer_config.json").read_text()) == (
        tokenizer_config())


def test_token_ids_are_the_byte_tokenizers_and_decode_back() -> None:
    fast = Tokenizer.from_file(str(DEFAULT_MODEL_DIR / "tokenizer.json"))
    ids = fast.encode(TEXT, add_special_tokens=False).ids
    assert ids == ByteTokenizer().encode(TEXT)
    assert fast.decode(ids) == TEXT
    assert fast.token_to_id("<|endoftext|>") == BYTE_EOS
    assert fast.get_vocab_size() == BYTE_EOS + 1


def test_the_chat_template_renders_the_reference_servers_prompt() -> None:
    tokenizer = AutoTokenizer.from_pretrained(str(DEFAULT_MODEL_DIR))
    messages = [{"role": "system", "content": "Be brief."},
                {"role": "user", "content": [{"type": "text", "text": "Return "},
                                             {"type": "text", "text": "the"}]}]
    rendered = tokenizer.apply_chat_template(messages, tokenize=False)
    assert rendered == _chat_prompt({"messages": messages})

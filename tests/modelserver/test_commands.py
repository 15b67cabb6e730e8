"""``gateway train-tiny-model`` and ``gateway detect FILE``, and the shipped model artifact."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import torch

from gateway.modelserver.config import DEFAULT_MODEL_DIR
from gateway.tokenizer.core import ByteTokenizer, load_tokenizer
from gateway.watermark.config import WatermarkConfig
from gateway.watermark.keys import derive_key
from gateway.watermark.processor import WatermarkProcessor, context_window, keys_tensor

SECRET = "cli-watermark-secret-0123456789abcdefgh"


def gateway(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    import os

    return subprocess.run([sys.executable, "-m", "gateway.cli", *args], capture_output=True,
                          text=True, timeout=120, env={**os.environ, **(env or {})})


def test_train_tiny_model_writes_a_loadable_byte_level_model(tmp_path: Path) -> None:
    out = tmp_path / "model"
    done = gateway("train-tiny-model", "--out", str(out), "--steps", "3", "--n-embd", "16",
                   "--n-layer", "1")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.splitlines()[-1])["final_loss"] > 0
    assert isinstance(load_tokenizer(out), ByteTokenizer)
    assert (out / "model.safetensors").stat().st_size < 200_000


def test_the_shipped_model_has_learned_the_docstrings() -> None:
    from transformers import AutoModelForCausalLM

    assert (DEFAULT_MODEL_DIR / "model.safetensors").stat().st_size < 4_000_000
    model = AutoModelForCausalLM.from_pretrained(str(DEFAULT_MODEL_DIR)).eval()
    text = b"Return a new list containing all items from the iterable in ascending order."
    ids = torch.tensor([list(text)])
    with torch.inference_mode():
        loss = float(model(input_ids=ids, labels=ids).loss)
    assert loss / math.log(2) < 3.5  # bits per byte; uniform would be 8


def test_detect_file_attributes_to_the_named_account(tmp_path: Path) -> None:
    config = WatermarkConfig()
    processor = WatermarkProcessor(config, 257)
    key = keys_tensor([derive_key(SECRET.encode(), "acct-b")])
    generator = torch.Generator().manual_seed(0)
    seq: list[int] = []
    for _ in range(300):
        logits = torch.randn(1, 95, generator=generator)  # printable ASCII 32..126
        full = torch.full((1, 257), -1e9)
        full[0, 32:127] = logits[0]
        marked = processor(full, context_window([seq], config.width), key)
        seq.append(int(torch.multinomial(torch.softmax(marked, -1), 1, generator=generator)))
    path = tmp_path / "suspect.txt"
    path.write_text(bytes(seq).decode())
    env = {"GATEWAY_WATERMARK_SECRET": SECRET}
    done = gateway("detect", str(path), "--account", "acct-a", "--account", "acct-b", env=env)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["account_id"] == "acct-b" and result["keys_tested"] == 2
    (tmp_path / "plain.txt").write_text("An ordinary sentence, typed by a person. " * 8)
    plain = gateway("detect", str(tmp_path / "plain.txt"), "--account", "acct-b", env=env)
    assert plain.returncode == 1 and json.loads(plain.stdout)["account_id"] is None

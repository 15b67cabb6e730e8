"""The CLI: ``gateway simulate``, ``train``, ``export``, ``evaluate`` (tiny sizes)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from gateway.cli import main
from gateway.detect.window import N_SEQ, N_STATS


def test_simulate_writes_labelled_jsonl(tmp_path: Path) -> None:
    out = tmp_path / "sessions.jsonl"
    assert main(["simulate", "--accounts", "1", "--requests", "10", "12", "--profile", "rag",
                 "--profile", "prada", "--out", str(out)]) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(r["profile"], r["label"]) for r in rows] == [("rag", 0), ("prada", 1)]
    assert all(10 <= len(r["requests"]) <= 12 for r in rows)


def test_train_export_evaluate(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                               tiny_artifact: Path) -> None:
    assert main(["train", "--accounts", "1", "--epochs", "1", "--out", str(tmp_path),
                 "--name", "cli", "--real", "none"]) == 0
    assert (tmp_path / "cli.onnx").exists() and (tmp_path / "cli.json").exists()
    onnx = tmp_path / "again.onnx"
    assert main(["export", "--weights", str(tmp_path / "cli.pt"), "--out", str(onnx)]) == 0
    session = ort.InferenceSession(str(onnx), providers=["CPUExecutionProvider"])
    out = session.run(None, {"seq": np.zeros((3, 64, N_SEQ), np.float32),
                             "mask": np.ones((3, 64), np.float32),
                             "stats": np.zeros((3, N_STATS), np.float32)})[0]
    assert out.shape == (3,)
    capsys.readouterr()
    assert main(["evaluate", "--model", str(tiny_artifact), "--accounts", "1",
                 "--train-accounts", "1"]) == 0
    table = capsys.readouterr().out
    for needle in ("ROC AUC", "TPR @ 1% FPR", "TPR @ 0.1% FPR", "GBT (stats)", "PRADA",
                   "mimicry", "support"):
        assert needle in table

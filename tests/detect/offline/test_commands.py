"""The CLI: ``gateway simulate``, ``train``, ``export``, ``evaluate`` (tiny sizes)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from gateway.cli import main
from gateway.detect.offline import adaptive, real_training
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
                 "--name", "cli", "--real", "none", "--forged-cues", "0.5"]) == 0
    assert (tmp_path / "cli.onnx").exists() and (tmp_path / "cli.json").exists()
    meta = json.loads((tmp_path / "cli.json").read_text())
    assert meta["summary"]["config"]["forged_cues"] == 0.5  # trained with decoration forged
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


def test_calibrate_rewrites_the_threshold_alone_from_benign_calibration_traffic(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], tiny_artifact: Path) -> None:
    """The shipped artifact's operating point is reproducible: ``gateway calibrate`` sets the
    threshold to the declaration-aware benign quantile and leaves the model as it was."""
    for f in tiny_artifact.parent.iterdir():
        shutil.copy(f, tmp_path / f.name)
    path = tmp_path / tiny_artifact.name
    before = json.loads(path.read_text())
    capsys.readouterr()
    assert main(["calibrate", "--model", str(path), "--size", "small", "--seed", "3"]) == 0
    after = json.loads(path.read_text())
    expected, accounts = real_training.calibration_threshold(path, adaptive.SIZES["small"], 3)
    assert after["threshold"] == min(expected, 1.0)
    assert f"threshold {after['threshold']:.6f}" in capsys.readouterr().out
    assert after["summary"]["calibration"] == {
        "split": "calibration", "accounts": accounts, "target": adaptive.BENIGN_TARGET,
        "seed": 3, "size": "small", "declared": ["eval_harness"],
        "allowance": adaptive.SUITE_ALLOWANCE}
    unchanged = {k: v for k, v in after.items() if k not in ("threshold", "summary")}
    assert unchanged == {k: v for k, v in before.items() if k not in ("threshold", "summary")}

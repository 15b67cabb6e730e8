"""``bench/gpu_watermark.py`` runs its CPU path and checks itself against the reference."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path


def test_gpu_bench_cpu_path_is_bit_identical(tmp_path: Path) -> None:
    env = {**os.environ, "OUT": str(tmp_path)}
    subprocess.run([sys.executable, "bench/gpu_watermark.py", "--device", "cpu", "--vocabs",
                    "1000", "--batch", "4", "--iters", "2", "--no-compile"],
                   check=True, env=env, capture_output=True, timeout=120)
    results = json.loads((tmp_path / "gpu_watermark.json").read_text())
    assert results[0]["eager_identical"] is True and results[0]["eager_us"] > 0

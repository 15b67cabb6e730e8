"""Classifier backends and the shipped artifact. numpy + onnxruntime; torch only when asked for.

``load_scorer(artifact, device)`` picks: for ``cuda``, ONNX Runtime's CUDAExecutionProvider when
``onnxruntime-gpu`` is installed and sees a GPU, else torch on CUDA (the same weights, shipped
beside the ONNX file); for ``cpu``, ONNX Runtime on CPU; ``auto`` tries CUDA first and settles
for CPU. Asking for ``cuda`` where neither GPU path works is a configuration error, raised at
start-up rather than silently scoring on CPU.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

F32 = npt.NDArray[np.float32]
ARTIFACTS_DIR = Path(__file__).resolve().parent / "artifacts"
DEFAULT_ARTIFACT = ARTIFACTS_DIR / "window-v7.json"
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Artifact:
    """A trained classifier: ONNX graph, torch weights, and what the runtime needs to use it."""

    version: str
    onnx_path: Path
    torch_path: Path | None
    window: int
    min_requests: int
    score_every: int
    threshold: float
    seq_reference: list[float]
    stats_reference: list[float]
    summary: dict[str, Any]

    @classmethod
    def load(cls, path: Path = DEFAULT_ARTIFACT) -> Artifact:
        meta = json.loads(path.read_text())
        torch_file = meta.get("torch")
        return cls(
            version=meta["version"], onnx_path=path.parent / meta["onnx"],
            torch_path=path.parent / torch_file if torch_file else None,
            window=int(meta["window"]), min_requests=int(meta["min_requests"]),
            score_every=int(meta["score_every"]), threshold=float(meta["threshold"]),
            seq_reference=list(meta["seq_reference"]),
            stats_reference=list(meta["stats_reference"]), summary=meta.get("summary", {}),
        )


class Scorer(Protocol):
    name: str

    def score(self, seq: F32, mask: F32, stats: F32) -> F32:
        """Probabilities, one per window; thread-safe (called from a worker thread)."""
        ...


class OnnxScorer:
    def __init__(self, path: Path, providers: list[str], threads: int = 1) -> None:
        import onnxruntime as ort  # type: ignore[import-untyped]

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(str(path), options, providers=providers)
        used = self.session.get_providers()
        self.name = "onnx-cuda" if "CUDAExecutionProvider" in used else "onnx-cpu"

    def score(self, seq: F32, mask: F32, stats: F32) -> F32:
        out = self.session.run(["score"], {"seq": seq, "mask": mask, "stats": stats})
        return np.asarray(out[0], dtype=np.float32)


class TorchScorer:
    """The same network in torch (e.g. on CUDA where ONNX Runtime has no GPU provider)."""

    def __init__(self, path: Path, device: str) -> None:
        import torch

        from gateway.detect.model import load_torch

        self._torch = torch
        self.device = torch.device(device)
        self.model = load_torch(path).to(self.device)
        self.name = f"torch-{self.device.type}"

    def score(self, seq: F32, mask: F32, stats: F32) -> F32:
        torch = self._torch
        with torch.inference_mode():
            out = self.model(torch.from_numpy(seq).to(self.device, non_blocking=True),
                             torch.from_numpy(mask).to(self.device, non_blocking=True),
                             torch.from_numpy(stats).to(self.device, non_blocking=True))
            return np.asarray(out.float().cpu().numpy(), dtype=np.float32)


def _onnx_has_cuda() -> bool:
    try:
        import onnxruntime as ort
    except ImportError:
        return False
    return "CUDAExecutionProvider" in ort.get_available_providers()


def _torch_has_cuda() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


def load_scorer(artifact: Artifact, device: str = "auto", backend: str = "auto",
                threads: int = 1) -> Scorer:
    """The scorer for ``device`` (auto|cpu|cuda) and ``backend`` (auto|onnx|torch)."""
    if device not in ("auto", "cpu", "cuda"):
        raise ValueError(f"unknown classifier device {device!r}")
    if device != "cpu":
        if backend in ("auto", "onnx") and _onnx_has_cuda():
            scorer = OnnxScorer(artifact.onnx_path,
                                ["CUDAExecutionProvider", "CPUExecutionProvider"], threads)
            if scorer.name == "onnx-cuda":
                return scorer
        if backend in ("auto", "torch") and artifact.torch_path and _torch_has_cuda():
            return TorchScorer(artifact.torch_path, "cuda")
        if device == "cuda":
            raise RuntimeError(
                "GATEWAY_CLASSIFIER_DEVICE=cuda but neither onnxruntime-gpu nor torch sees a "
                "CUDA device; install the gpu extra or use auto/cpu")
    if backend == "torch":
        if artifact.torch_path is None:
            raise RuntimeError("this artifact ships no torch weights")
        return TorchScorer(artifact.torch_path, "cpu")
    return OnnxScorer(artifact.onnx_path, ["CPUExecutionProvider"], threads)

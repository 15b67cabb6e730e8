"""Classifier backends and the shipped artifact. numpy + onnxruntime; torch only when asked for.

``load_scorer(artifact, device)`` picks: for ``cuda``, ONNX Runtime's CUDAExecutionProvider when
``onnxruntime-gpu`` is installed and sees a GPU, else torch on CUDA (the same weights, shipped
beside the ONNX file); for ``cpu``, ONNX Runtime on CPU; ``auto`` tries CUDA first and settles
for CPU. Asking for ``cuda`` where neither GPU path works is a configuration error, raised at
start-up rather than silently scoring on CPU.

An artifact reads its inputs by name: the names it was trained on are in its JSON, and
:func:`project` hands it those columns of the current window arrays, in its order. So an
artifact trained before an input was added scores exactly as it did, wherever the new input
sits; one that names an input this build does not compute is refused at load.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from gateway.detect.window import SEQ_NAMES, STAT_NAMES

F32 = npt.NDArray[np.float32]
ARTIFACTS_DIR = Path(__file__).resolve().parent / "artifacts"
DEFAULT_ARTIFACT = ARTIFACTS_DIR / "window-v12.json"
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
    """Typical benign value per input, in the order of :data:`SEQ_NAMES` (0 for an input the
    artifact does not read)."""
    stats_reference: list[float]
    """The same for :data:`STAT_NAMES`."""
    summary: dict[str, Any]
    seq_columns: tuple[int, ...] = ()
    """The artifact's sequence inputs: their places in :data:`SEQ_NAMES`, in its order; empty
    when it reads every current column in the current order."""
    stat_columns: tuple[int, ...] = ()
    """The same for :data:`STAT_NAMES`."""

    @classmethod
    def load(cls, path: Path = DEFAULT_ARTIFACT) -> Artifact:
        meta = json.loads(path.read_text())
        torch_file = meta.get("torch")
        seq_names = list(meta.get("seq_names", SEQ_NAMES))
        stat_names = list(meta.get("stat_names", STAT_NAMES))
        return cls(
            version=meta["version"], onnx_path=path.parent / meta["onnx"],
            torch_path=path.parent / torch_file if torch_file else None,
            window=int(meta["window"]), min_requests=int(meta["min_requests"]),
            score_every=int(meta["score_every"]), threshold=float(meta["threshold"]),
            seq_reference=_by_name(meta["version"], meta["seq_reference"], seq_names, SEQ_NAMES),
            stats_reference=_by_name(meta["version"], meta["stats_reference"], stat_names,
                                     STAT_NAMES),
            summary=meta.get("summary", {}),
            seq_columns=_columns(meta["version"], seq_names, SEQ_NAMES),
            stat_columns=_columns(meta["version"], stat_names, STAT_NAMES),
        )


def _columns(version: str, names: list[str], current: tuple[str, ...]) -> tuple[int, ...]:
    """Where ``names`` are in ``current`` (empty: all of them, in order)."""
    if names == list(current):
        return ()
    missing = [n for n in names if n not in current]
    if missing:
        raise ValueError(f"artifact {version} reads inputs this gateway does not compute: "
                         f"{', '.join(missing)}")
    return tuple(current.index(n) for n in names)


def _by_name(version: str, values: list[float], names: list[str], current: tuple[str, ...]
             ) -> list[float]:
    """``values`` (one per name of ``names``) in the order of ``current``, 0 where absent."""
    if len(values) != len(names):
        raise ValueError(f"artifact {version} has {len(values)} reference values for "
                         f"{len(names)} inputs (an artifact without input names must have "
                         "this build's inputs)")
    known = dict(zip(names, values, strict=True))
    return [float(known.get(n, 0.0)) for n in current]


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


class Projected:
    """A scorer that reads the columns its artifact was trained on (:func:`project`)."""

    def __init__(self, inner: Scorer, seq_columns: tuple[int, ...],
                 stat_columns: tuple[int, ...]) -> None:
        self.inner = inner
        self.name = inner.name
        self._seq = _selector(seq_columns)
        self._stats = _selector(stat_columns)

    def score(self, seq: F32, mask: F32, stats: F32) -> F32:
        return self.inner.score(np.ascontiguousarray(seq[..., self._seq]), mask,
                                np.ascontiguousarray(stats[..., self._stats]))


def _selector(columns: tuple[int, ...]) -> slice | list[int]:
    """A slice when ``columns`` is a leading run (the common case: names appended since)."""
    if not columns:
        return slice(None)
    return slice(len(columns)) if columns == tuple(range(len(columns))) else list(columns)


def project(scorer: Scorer, artifact: Artifact) -> Scorer:
    """``scorer`` fed with ``artifact``'s columns only (itself when it reads them all)."""
    if not artifact.seq_columns and not artifact.stat_columns:
        return scorer
    return Projected(scorer, artifact.seq_columns, artifact.stat_columns)


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
    """The scorer for ``device`` (auto|cpu|cuda) and ``backend`` (auto|onnx|torch), fed with
    the artifact's columns (:func:`project`)."""
    return project(_backend(artifact, device, backend, threads), artifact)


def _backend(artifact: Artifact, device: str, backend: str, threads: int) -> Scorer:
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

"""The window classifier (torch): a DeepSets encoder over the requests plus the window statistics.

Why this shape: a window is a *set* of recent requests (order is carried by the gap feature),
and the attacks that matter mix behaviours — a mimicry account interleaves chat with
distillation, a campaign account sends a handful of templated requests among others. A shared
per-request MLP followed by masked mean *and max* pooling sees "what share of the window looks
like extraction" and "is there any strongly extraction-like request", which aggregate statistics
alone (what the gradient-boosted-trees baseline gets) average away. It is tiny (~10k parameters),
permutation-invariant, handles short windows by masking, and exports to a single ONNX graph with
the input normalisation baked in, so the same file scores on CPU or on a GPU at any batch size.

Inputs: ``seq`` (B, W, N_SEQ), ``mask`` (B, W), ``stats`` (B, N_STATS) at the sizes the network
was trained with (an artifact reads its columns by name); output ``score`` (B,),
the probability that the window is extraction.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import numpy.typing as npt
import torch
from torch import nn

from gateway.detect.window import N_SEQ, N_STATS

HIDDEN = 32


class WindowNet(nn.Module):
    seq_mean: torch.Tensor
    seq_std: torch.Tensor
    stats_mean: torch.Tensor
    stats_std: torch.Tensor

    def __init__(self, n_seq: int = N_SEQ, n_stats: int = N_STATS, hidden: int = HIDDEN) -> None:
        super().__init__()
        self.phi = nn.Sequential(nn.Linear(n_seq, hidden), nn.ReLU(),
                                 nn.Linear(hidden, hidden), nn.ReLU())
        self.head = nn.Sequential(nn.Linear(2 * hidden + n_stats, 64), nn.ReLU(),
                                  nn.Dropout(0.1), nn.Linear(64, 1))
        self.register_buffer("seq_mean", torch.zeros(n_seq))
        self.register_buffer("seq_std", torch.ones(n_seq))
        self.register_buffer("stats_mean", torch.zeros(n_stats))
        self.register_buffer("stats_std", torch.ones(n_stats))

    def set_normalisation(self, seq: npt.NDArray[np.float32], mask: npt.NDArray[np.float32],
                          stats: npt.NDArray[np.float32]) -> None:
        real = seq[mask > 0]
        self.seq_mean.copy_(torch.from_numpy(real.mean(axis=0)))
        self.seq_std.copy_(torch.from_numpy(real.std(axis=0) + 1e-3))
        self.stats_mean.copy_(torch.from_numpy(stats.mean(axis=0)))
        self.stats_std.copy_(torch.from_numpy(stats.std(axis=0) + 1e-3))

    def forward(self, seq: torch.Tensor, mask: torch.Tensor, stats: torch.Tensor) -> torch.Tensor:
        m = mask.unsqueeze(-1)
        h = self.phi((seq - self.seq_mean) / self.seq_std) * m
        mean = h.sum(dim=1) / m.sum(dim=1).clamp(min=1.0)
        peak = h.max(dim=1).values  # ReLU outputs >= 0, so masked (zeroed) rows never win
        z = torch.cat([mean, peak, (stats - self.stats_mean) / self.stats_std], dim=-1)
        return torch.sigmoid(self.head(z).squeeze(-1))


def export_onnx(model: WindowNet, path: Path, window: int) -> None:
    """Write ``model`` as ONNX (opset 17, dynamic batch) to ``path``."""
    model.eval()
    example = (torch.zeros(2, window, model.seq_mean.numel()), torch.ones(2, window),
               torch.zeros(2, model.stats_mean.numel()))
    with warnings.catch_warnings():  # the TorchScript exporter: simple graph, no control flow
        warnings.simplefilter("ignore", DeprecationWarning)
        _export(model, example, path)


def _export(model: WindowNet, example: tuple[torch.Tensor, ...], path: Path) -> None:
    torch.onnx.export(
        model, example, str(path), input_names=["seq", "mask", "stats"],
        output_names=["score"], opset_version=17, dynamo=False,
        dynamic_axes={"seq": {0: "batch"}, "mask": {0: "batch"}, "stats": {0: "batch"},
                      "score": {0: "batch"}},
    )


def save_torch(model: WindowNet, path: Path) -> None:
    torch.save(model.state_dict(), path)


def load_torch(path: Path) -> WindowNet:
    """The network saved at ``path``, at the input sizes it was trained with (an artifact
    trained before an input was added reads fewer: :func:`gateway.detect.scoring.project`)."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    model = WindowNet(state["seq_mean"].numel(), state["stats_mean"].numel())
    model.load_state_dict(state)
    model.eval()
    return model

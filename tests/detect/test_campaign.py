"""Campaign clustering over account sketches."""

from __future__ import annotations

import numpy as np

from gateway.detect.campaign import find_campaigns
from gateway.detect.window_store import Sketch


def _sketch(seed: int, *, network: int, score: float, shared: np.ndarray | None = None,
            strength: float = 0.8) -> Sketch:
    rng = np.random.default_rng(seed)
    sig = rng.integers(0, 2**32, size=16, dtype=np.uint64).astype(np.uint32)
    if shared is not None:
        sig[:12] = shared[:12]
    return Sketch(sig, strength, network, score, 1.0)


def test_shared_template_and_network_make_one_campaign() -> None:
    template = np.arange(16, dtype=np.uint32) * 7919
    sketches = {f"c{i}": _sketch(i, network=42, score=0.1, shared=template) for i in range(5)}
    sketches |= {f"b{i}": _sketch(100 + i, network=i, score=0.1) for i in range(20)}
    found = find_campaigns(sketches)
    assert len(found) == 1
    assert found[0].accounts == [f"c{i}" for i in range(5)]
    assert any("same network" in r for r in found[0].reasons)


def test_shared_template_alone_is_not_a_campaign() -> None:
    template = np.arange(16, dtype=np.uint32) * 104729
    benign = {f"a{i}": _sketch(i, network=i + 1, score=0.05, shared=template) for i in range(4)}
    assert find_campaigns(benign) == []
    suspicious = {a: Sketch(s.signature, s.strength, s.network, 0.6, s.ts)
                  for a, s in benign.items()}
    assert len(find_campaigns(suspicious)) == 1


def test_untemplated_accounts_and_small_groups_are_ignored() -> None:
    template = np.arange(16, dtype=np.uint32) * 31
    weak = {f"w{i}": _sketch(i, network=7, score=0.9, shared=template, strength=0.1)
            for i in range(5)}
    pair = {f"p{i}": _sketch(50 + i, network=8, score=0.9, shared=template + 1)
            for i in range(2)}
    assert find_campaigns(weak | pair) == []

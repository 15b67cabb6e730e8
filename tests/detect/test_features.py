"""Per-request features: stable sketches, meaningful signals, robust to odd records."""

from __future__ import annotations

import subprocess
import sys

import numpy as np

from gateway.detect import features
from tests.detect.conftest import record

TEXT = "Explain step by step how photosynthesis converts light into chemical energy in plants"


def _hamming(a: int, b: int) -> int:
    return bin(a ^ b).count("1")


def test_sketches_are_stable_across_processes() -> None:
    """Replicas compare each other's sketches: no per-process hash salt may leak in."""
    here = features.simhash(features.shingle_hashes(TEXT))
    code = ("from gateway.detect import features as f; "
            f"print(f.simhash(f.shingle_hashes({TEXT!r})))")
    there = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                           check=True, env={"PYTHONHASHSEED": "123"}).stdout.strip()
    assert int(there) == here


def test_simhash_distance_tracks_similarity() -> None:
    near = TEXT.replace("plants", "trees")
    far = "What is a good vegetarian lasagna recipe for a dinner party of six people tonight"
    h = features.simhash(features.shingle_hashes(TEXT))
    assert _hamming(h, features.simhash(features.shingle_hashes(near))) < 20
    assert _hamming(h, features.simhash(features.shingle_hashes(far))) > 20


def test_minhash_agreement_estimates_jaccard() -> None:
    a = features.minhash(features.shingle_hashes(TEXT))
    same = features.minhash(features.shingle_hashes(TEXT))
    other = features.minhash(features.shingle_hashes("completely different words about cats"))
    assert np.array_equal(a, same)
    assert np.mean(a == other) < 0.2


def test_extract_reports_parameters_and_signals() -> None:
    rec, prompt = record(TEXT, max_tokens=1, logprobs=True, top_logprobs=20, logit_bias_size=50,
                         completion_tokens=1, prompt_tokens=15, client_addr="10.1.2.3")
    item = features.extract(rec, prompt)
    v = dict(zip(features.FEATURE_NAMES, item.vector.tolist(), strict=True))
    assert v["max_tokens_one"] == 1.0 and v["logprobs"] == 1.0 and v["top_logprobs"] == 1.0
    assert v["logit_bias_log"] > 0.5
    assert v["reasoning"] > 0.3
    assert v["output_input_ratio"] < 0
    assert item.network == features.network_of("10.1.2.99")
    assert item.network != features.network_of("10.1.3.3")
    plain = features.extract(*record("hi"))
    assert dict(zip(features.FEATURE_NAMES, plain.vector.tolist(), strict=True))[
        "reasoning"] == 0.0


def test_extract_survives_missing_and_odd_values() -> None:
    rec, prompt = record("", temperature=None, max_tokens=None, n=None, completion_tokens=None)
    rec.status_code = 429
    item = features.extract(rec, prompt)
    assert np.all(np.isfinite(item.vector))
    assert item.vector[features.FEATURE_NAMES.index("rate_limited")] == 1.0
    assert features.network_of(None) == 0

"""Per-request features: stable sketches, meaningful signals, robust to odd records."""

from __future__ import annotations

import re
import subprocess
import sys
import zlib

import numpy as np
import pytest

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


HOSTILE = [
    "", "   ", "Hello, World! 42 times", "ÉCOLE naïve café", "\u212a is a Kelvin sign",
    "İstanbul", "lone \ud800 surrogate", "nul\x00byte\x7fdel\x80c1", "日本語 text 日本",
    "a" * 3000, "\u0130" * 3000, "x-y_z.w/v",
    "step-by step show your reason</ ### {{ }} def return (;=[<",
]


@pytest.mark.parametrize("text", HOSTILE)
def test_words_are_the_ascii_alphanumeric_runs_of_the_lowercased_text(text: str) -> None:
    expected = [w.encode() for w in re.findall(r"[a-z0-9]+", features.bounded(text).lower())]
    assert features._words(text) == expected


@pytest.mark.parametrize("text", HOSTILE)
def test_text_signals_count_what_the_cue_patterns_match(text: str) -> None:
    """The counting shortcuts (one ``str.count`` per needle) agree with plain regexes."""
    low = text.lower() if len(text) <= features.MAX_SIGNAL_CHARS else (
        f"{text[:750]}\n{text[-750:]}".lower())
    reasoning, templating, _, code, words = features.prompt_signals(text)
    cues = r"step[- ]by[- ]step|reason|think|thought|explain|justif|deriv|show your|show all" \
        r"|walk (?:me )?through|rationale|proof|prove|why |work out|logic|deduc|infer" \
        r"|first principles"
    assert reasoning == min(1.0, len(re.findall(cues, low)) / 3.0)
    code_count = len(re.findall(r"def |return |import |function ", low)) + len(
        re.findall(r"[{}(;=]", low))
    assert code == min(1.0, code_count / max(8.0, words / 4))
    labels = sum(1 for line in low.split("\n") if ":" in line[:26])
    markup = len(re.findall(r"###|---|\{\{|\}\}|</", low)) + len(re.findall(r"[\[<]", low))
    assert templating == min(1.0, (labels + markup) / 6)


def test_word_memo_stays_bounded_whatever_is_sent() -> None:
    """Ever-new words (an attacker's random tokens) cannot grow the memo past its bound, and a
    remembered hash is the hash itself."""
    flood = [f"w{i}x".encode() for i in range(3 * features.WORD_MEMO)]
    hashes = features._hash_words(flood)
    assert len(features._word_memo) <= features.WORD_MEMO
    assert hashes == [zlib.crc32(w, 0x5BD1E995) << 32 | zlib.crc32(w) for w in flood]
    assert features._hash_words(flood[-5:]) == hashes[-5:]

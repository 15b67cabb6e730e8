"""What the detector reads of an exchange: the same features whatever the transport, and the
whole prompt (head and tail) at a bounded cost."""

from __future__ import annotations

import numpy as np

from gateway.detect import features
from gateway.detect.features import MAX_PROMPT_CHARS
from tests.detect.conftest import record

INSTRUCTION = "Explain step by step, and justify every step, how you derived the answer?"
PASSAGE = "The committee met on Tuesday and accepted the minutes of the previous session. " * 60


def test_a_streamed_and_a_non_streamed_exchange_give_identical_features() -> None:
    streamed = features.extract(*record(INSTRUCTION, stream=True, max_tokens=512))
    plain = features.extract(*record(INSTRUCTION, stream=False, max_tokens=512))
    assert np.array_equal(streamed.vector, plain.vector)
    assert streamed.simhash == plain.simhash
    assert np.array_equal(streamed.minhash, plain.minhash)


def test_an_instruction_after_a_long_passage_is_still_read() -> None:
    """Head camouflage: innocent text in front of the instruction hides nothing."""
    camouflaged = f"{PASSAGE}\n\n{INSTRUCTION}"
    assert len(PASSAGE) > MAX_PROMPT_CHARS
    reasoning = features.prompt_signals(camouflaged)[0]
    assert reasoning > 0
    assert features.prompt_signals(PASSAGE)[0] == 0
    alone = set(features.shingle_hashes(INSTRUCTION).tolist())
    seen = set(features.shingle_hashes(camouflaged).tolist())
    assert alone <= seen


def test_the_read_part_of_a_prompt_is_bounded_and_bounding_twice_changes_nothing() -> None:
    long_prompt = f"{PASSAGE}{INSTRUCTION}{PASSAGE}"
    once = features.bounded(long_prompt)
    assert len(once) == MAX_PROMPT_CHARS
    assert features.bounded(once) == once
    assert once.startswith(long_prompt[:100]) and once.endswith(long_prompt[-100:])
    assert features.bounded(INSTRUCTION) == INSTRUCTION


def test_the_runtime_and_the_features_read_the_same_part() -> None:
    """The engine bounds the prompt on the reply path; extracting from that bounded text gives
    the features of the full prompt."""
    long_prompt = f"{PASSAGE}\n\n{INSTRUCTION}"
    full = features.extract(*record(long_prompt))
    rec, _ = record(long_prompt)
    cut = features.extract(rec, features.bounded(long_prompt))
    assert np.array_equal(full.vector, cut.vector)
    assert full.simhash == cut.simhash

"""Real-text sources: truncated ShareGPT parsed to its last complete record, splits by source."""

from __future__ import annotations

import ast
import io
import json
from itertools import combinations

import pytest

from gateway.detect.offline import corpus


def _stream(text: str) -> io.BytesIO:
    return io.BytesIO(text.encode())


def test_a_truncated_array_yields_every_complete_record_and_stops_quietly() -> None:
    records = [{"id": "a_0", "v": [1, 2, {"x": "é"}]}, {"id": "b_0", "v": "ü" * 50}]
    text = json.dumps(records, ensure_ascii=False)[:-1] + ', {"id": "c_0", "v": "cut he'
    for chunk in (1, 3, 7, 1 << 20):  # record, character and multibyte boundaries
        assert list(corpus._json_objects(_stream(text), chunk)) == records


def test_a_complete_array_is_read_whole() -> None:
    records = [{"n": i} for i in range(5)]
    assert list(corpus._json_objects(_stream(json.dumps(records)), 4)) == records


def test_sharegpt_records_become_alternating_turns_and_parts_share_a_source() -> None:
    first = corpus._conversation({"id": "xyz_0", "conversations": [
        {"from": "human", "value": "hi"}, {"from": "gpt", "value": "hello"},
        {"from": "human", "value": "more"}, {"from": "gpt", "value": ""}]})
    second = corpus._conversation({"id": "xyz_1", "conversations": [
        {"from": "human", "value": "again"}, {"from": "gpt", "value": "sure"}]})
    assert first is not None and second is not None
    assert first.turns == (corpus.Turn("hi", "hello"),)  # stops at the empty answer
    assert first.source == second.source  # one conversation is never split across splits
    assert corpus._conversation({"id": "q_0", "conversations": [
        {"from": "gpt", "value": "no human first"}]}) is None


def test_the_packaged_sharegpt_file_loads_lazily_and_deterministically() -> None:
    some = corpus.sharegpt(40)
    assert len(some) == 40 and some == corpus.sharegpt(40)
    assert all(c.turns and all(t.prompt.strip() and t.answer.strip() for t in c.turns)
               for c in some)
    assert {c.source.split("/")[0] for c in some} == {"sharegpt"}


def test_splits_are_made_of_disjoint_sources() -> None:
    sets = {split: corpus.sources_of(split) for split in corpus.SPLITS}
    for a, b in combinations(corpus.SPLITS, 2):
        assert not sets[a] & sets[b], (a, b)
    assert {"gpqa", "aime", "licenses"}.isdisjoint(sets["train"])


@pytest.mark.parametrize("split", corpus.SPLITS)
def test_every_text_of_a_pool_comes_from_its_split(split: str) -> None:
    pool = corpus.pool(split, corpus.Limits(conversations=400, modules=60))
    assert pool.conversations and pool.questions and pool.passages and pool.code
    assert pool.sources <= corpus.sources_of(split)


def test_benchmark_questions_and_stdlib_texts_are_real() -> None:
    kinds = {q.source.split("/")[0] for q in corpus.questions()}
    assert kinds == {"gsm8k", "gpqa", "aime"}
    passages, code = corpus.stdlib(60)
    assert all(len(p.text) >= corpus.MIN_PASSAGE_CHARS for p in passages)
    for snippet in code[:50]:
        ast.parse(snippet.text)  # whole, dedented functions

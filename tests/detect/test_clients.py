"""Clients inside one account's window: a key shared by callers with their own parameters is
scored per caller from a few requests on, not as one mixed window, and whatever client sizes an
attacker picks, fewer than the floor's requests of a window go unread."""

from __future__ import annotations

import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from gateway.detect import clients, features
from gateway.detect.clients import MAX_CLIENTS, client_keys, part_floor, parts
from gateway.detect.features import RequestFeatures
from gateway.detect.runtime import DetectionEngine, DetectionEngineConfig, Scored
from gateway.detect.scoring import Artifact
from gateway.detect.window import SEQ_NAMES, sketch
from gateway.detect.window_store import MemoryWindowStore
from gateway.metrics import Metrics
from gateway.records import RequestRecord
from tests.detect.conftest import record
from tests.detect.test_runtime import Recorder

MIN = 8


def _item(i: int, *, temperature: float = 0.7, max_tokens: int | None = None,
          logprobs: bool = False, logit_bias: int = 0, addr: str = "10.0.0.5",
          ts: float | None = None) -> RequestFeatures:
    rec, prompt = record(f"question number {i} about topic {i % 7}", rid=f"r{i}",
                         ts=1e9 + (i if ts is None else ts), temperature=temperature,
                         max_tokens=max_tokens, logprobs=logprobs, logit_bias_size=logit_bias,
                         client_addr=addr)
    return features.extract(rec, prompt)


def client_key(item: RequestFeatures) -> bytes:
    return bytes(client_keys([item])[0].tobytes())


def _ids(window: Sequence[RequestFeatures]) -> list[str]:
    return [it.request_id for it in window]


def _interleaved(first: int, second: int, **params: Any
                 ) -> tuple[list[RequestFeatures], list[RequestFeatures], list[RequestFeatures]]:
    """Two callers of one key, request for request: the first at the default parameters, the
    second at ``params``; (first's, second's, the window)."""
    a = [_item(i, ts=2 * i) for i in range(first)]
    b = [_item(100 + i, ts=2 * i + 1, **params) for i in range(second)]
    return a, b, sorted(a + b, key=lambda it: it.ts)


def test_one_client_is_scored_as_the_whole_window() -> None:
    items = [_item(i) for i in range(20)]
    assert [_ids(p) for p in parts(items, MIN)] == [_ids(items)]


def test_two_clients_of_one_key_are_scored_each_on_its_own() -> None:
    chat, batch, items = _interleaved(12, 10, temperature=0.0, max_tokens=1)
    assert [_ids(p) for p in parts(items, MIN)] == [_ids(chat), _ids(batch)]


def test_a_client_too_small_for_a_first_scoring_is_scored_alone_from_the_floor() -> None:
    cover = [_item(i) for i in range(30)]
    harvest = [_item(100 + i, temperature=0.0, ts=30 + i) for i in range(part_floor(MIN))]
    items = cover + harvest
    assert [_ids(p) for p in parts(items, MIN)] == [_ids(cover), _ids(harvest)]


def test_two_people_starting_together_are_each_read_alone_not_mixed() -> None:
    # Two benign callers interleaved look like harvest beside cover when read as one window
    # (bench/adaptive_suite.md, phase 17): each is its own part from the floor on.
    a, b, items = _interleaved(5, 4, temperature=1.0, max_tokens=2048)
    assert [_ids(p) for p in parts(items, MIN)] == [_ids(a), _ids(b)]


def test_a_client_below_the_floor_beside_a_large_one_is_not_read_this_time() -> None:
    cover = [_item(i) for i in range(30)]
    few = [_item(100 + i, temperature=0.0, ts=30 + i) for i in range(part_floor(MIN) - 1)]
    assert [_ids(p) for p in parts(cover + few, MIN)] == [_ids(cover)]


def test_small_clients_below_the_floor_are_scored_together() -> None:
    cover = [_item(i) for i in range(20)]
    a = [_item(100 + i, temperature=0.0, ts=20 + 2 * i) for i in range(part_floor(MIN) - 1)]
    b = [_item(200 + i, temperature=1.0, max_tokens=64, ts=21 + 2 * i)
         for i in range(part_floor(MIN) - 1)]
    small = sorted(a + b, key=lambda it: it.ts)
    assert [_ids(p) for p in parts(cover + small, MIN)] == [_ids(cover), _ids(small)]


def test_clients_all_below_the_floor_are_scored_together_as_the_whole_window() -> None:
    floor = part_floor(MIN)
    items = [_item(i, temperature=0.1 * (i % MAX_CLIENTS))
             for i in range(MAX_CLIENTS * (floor - 1))]
    assert [_ids(p) for p in parts(items, MIN)] == [_ids(items)]


@pytest.mark.parametrize("seed", range(40))
def test_an_attacker_choosing_client_sizes_leaves_fewer_than_the_floor_unread(seed: int) -> None:
    """Whatever sizes an attacker gives its (at most MAX_CLIENTS) callers, every request but at
    most ``part_floor - 1`` of a window is in a scored part, and no part mixes a scored client
    with another client's requests."""
    rng = random.Random(seed)
    sizes = [rng.randint(1, 2 * MIN) for _ in range(rng.randint(2, MAX_CLIENTS))]
    items = [_item(1000 * c + i, temperature=0.1 * c, ts=rng.uniform(0, 100))
             for c, n in enumerate(sizes) for i in range(n)]
    items.sort(key=lambda it: it.ts)
    split = parts(items, MIN)
    read = {rid for p in split for rid in _ids(p)}
    assert len(items) - len(read) < part_floor(MIN)
    for p in split:
        callers = {int(rid[1:]) // 1000 for rid in _ids(p)}
        mixed_small = all(sizes[c] < part_floor(MIN) for c in callers)
        assert len(callers) == 1 or mixed_small or _ids(p) == _ids(items)


def test_parameters_drawn_per_request_are_not_clients_but_one_window() -> None:
    # each of the MAX_CLIENTS + 1 parameter sets big enough to be a part of its own
    items = [_item(i, temperature=round(0.1 * (i % (MAX_CLIENTS + 1)), 1))
             for i in range(MIN * (MAX_CLIENTS + 1))]
    assert len({client_key(it) for it in items}) == MAX_CLIENTS + 1
    assert [_ids(p) for p in parts(items, MIN)] == [_ids(items)]


def test_a_logit_sweep_varying_its_bias_size_is_one_client() -> None:
    items = [_item(i, max_tokens=1, logit_bias=1 + 37 * i) for i in range(12)]
    assert len({client_key(it) for it in items}) == 1


def test_another_network_is_another_client() -> None:
    assert client_key(_item(1)) != client_key(_item(1, addr="192.0.2.7"))
    assert client_key(_item(1)) == client_key(_item(2, addr="10.0.0.99"))  # same /24


class LogprobShare:
    """Pure-logic scorer: the share of a window's requests that ask for logprobs."""

    column = SEQ_NAMES.index("logprobs")

    def score(self, seq: np.ndarray, mask: np.ndarray, stats: np.ndarray) -> np.ndarray:
        used = (seq[:, :, self.column] * mask).sum(axis=1)
        return (used / np.maximum(mask.sum(axis=1), 1)).astype(np.float32)


async def _last_scored(tiny_artifact: Path, sent: Sequence[tuple[RequestRecord, str]]
                       ) -> Scored:
    """The last scoring of one account that sent ``sent``, scored by :class:`LogprobShare`."""
    policy = Recorder()
    config = DetectionEngineConfig(window=64, min_requests=MIN, score_every=4,
                                   max_wait_s=0.001, min_score_interval_s=0.0,
                                   campaign_interval_s=3600.0)
    engine = DetectionEngine(config, LogprobShare(), Artifact.load(tiny_artifact),
                             MemoryWindowStore(64), policy, metrics=Metrics(CollectorRegistry()))
    await engine.start()
    try:
        for rec in sent:
            engine.observe(*rec)
        await engine.drain()
    finally:
        await engine.stop()
    return policy.scored[-1]


def _assert_sketched_as_the_account(last: Scored, sent: Sequence[tuple[RequestRecord, str]]
                                    ) -> None:
    """The campaign sketch is the account's whole window, not the part that scored."""
    assert last.template is not None, "sketched as the account, not as its client"
    signature, strength, network = sketch([features.extract(*rec) for rec in sent])
    assert last.template[0].tolist() == signature.tolist()
    assert last.template[1:] == (strength, network)


async def test_a_harvest_beside_a_benign_client_is_scored_undiluted(tiny_artifact: Path
                                                                    ) -> None:
    sent = [record(f"prompt {i}", rid=f"r{i}", ts=1e9 + i,
                   temperature=0.0 if i % 4 == 3 else 0.7,
                   max_tokens=1 if i % 4 == 3 else None, logprobs=i % 4 == 3)
            for i in range(48)]
    last = await _last_scored(tiny_artifact, sent)
    assert last.score == 1.0, "the harvesting client's own window, not a quarter of the whole"
    assert last.request_ids == [f"r{i}" for i in range(48) if i % 4 == 3]
    assert last.window.mask.sum() == 12
    _assert_sketched_as_the_account(last, sent)


async def test_a_part_less_than_the_window_is_still_sketched_as_the_account(
        tiny_artifact: Path) -> None:
    # A caller below the floor is not read this time, but the campaign sketch is the account's.
    few = {13, 27}
    sent = [record(f"prompt {i}", rid=f"r{i}", ts=1e9 + i,
                   temperature=0.0 if i in few else 0.7, logprobs=i in few)
            for i in range(40)]
    last = await _last_scored(tiny_artifact, sent)
    assert last.request_ids == [f"r{i}" for i in range(40) if i not in few]
    _assert_sketched_as_the_account(last, sent)


def test_parts_of_many_windows_at_once_are_the_parts_of_each() -> None:
    one = [_item(i) for i in range(20)]
    two = [_item(i, temperature=0.0 if i % 2 else 0.7) for i in range(24)]
    many = [_item(i, temperature=0.1 * (i % 6)) for i in range(30)]
    windows = [one, two, many, []]
    assert [[_ids(p) for p in split] for split in clients.parts_batch(windows, MIN)] == [
        [_ids(p) for p in parts(w, MIN)] for w in windows]

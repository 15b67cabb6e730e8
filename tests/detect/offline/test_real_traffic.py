"""Profiles over real text, attack generators and evasions: what each promises to produce."""

from __future__ import annotations

import random
import re
from itertools import pairwise

import pytest

from gateway.detect import clients, features
from gateway.detect.offline import adaptive, corpus, dataset, evasions
from gateway.detect.offline.real_attacks import ATTACK_FNS, COT_CUES, PARAPHRASED_CUES
from gateway.detect.offline.real_traffic import (
    ATTACKS,
    BENIGN,
    BENIGN_FNS,
    COMPLETIONS,
    SEQUENTIAL_GAP_S,
    SHARED_CLIENTS,
    Gen,
    Request,
    shared,
    to_record,
)
from gateway.detect.offline.simulate import Session
from gateway.detect.runtime import DetectionEngineConfig

LIMITS = corpus.Limits(conversations=600, modules=60)


@pytest.fixture(scope="module")
def pool() -> corpus.Pool:
    return corpus.pool("heldout", LIMITS)


def _gen(pool: corpus.Pool, name: str) -> Gen:
    return Gen(random.Random(name), pool)


def _requests(s: Session) -> list[Request]:
    return [r for r in s.requests if isinstance(r, Request)]


def test_every_named_profile_has_a_generator() -> None:
    assert tuple(BENIGN_FNS) == BENIGN and tuple(ATTACK_FNS) == ATTACKS


@pytest.mark.parametrize("profile", list(BENIGN_FNS))
def test_benign_profiles_are_labelled_benign_and_in_time_order(pool: corpus.Pool,
                                                                profile: str) -> None:
    for s in BENIGN_FNS[profile](_gen(pool, profile), 30):
        assert s.label == 0 and len(s.requests) == 30
        assert all(a.ts <= b.ts for a, b in pairwise(s.requests))


def test_a_chat_user_resends_the_conversation_so_far(pool: corpus.Pool) -> None:
    s = BENIGN_FNS["user"](_gen(pool, "user"), 40)[0]
    follow_ups = [(a, b) for a, b in pairwise(_requests(s)) if b.prompt.startswith(a.prompt)]
    assert follow_ups, "multi-turn conversations carry their history"
    assert all(len(b.prompt) > len(a.prompt) for a, b in follow_ups)


def test_a_ci_smoke_test_repeats_one_prompt(pool: corpus.Pool) -> None:
    s = BENIGN_FNS["ci_smoke"](_gen(pool, "ci"), 20)[0]
    assert len({r.prompt for r in s.requests}) == 1


def test_a_coding_assistant_heads_every_request_with_its_system_prompt(pool: corpus.Pool
                                                                       ) -> None:
    s = BENIGN_FNS["coding_assistant"](_gen(pool, "coding"), 20)[0]
    assert len({r.prompt[:features.MAX_SIGNAL_CHARS] for r in s.requests}) == 1


def test_an_organisation_shares_one_address_and_one_template(pool: corpus.Pool) -> None:
    accounts = BENIGN_FNS["org_nat"](_gen(pool, "org"), 10)
    assert len(accounts) >= 3
    assert len({s.client_addr for s in accounts}) == 1
    assert len({r.prompt[:40] for s in accounts for r in s.requests}) == 1


def test_a_shared_key_carries_two_clients_one_after_the_other_or_interleaved(
        pool: corpus.Pool) -> None:
    g = _gen(pool, "shared")
    first = BENIGN_FNS["user"](g, 20)[0]
    second = BENIGN_FNS["labelling_batch"](g, 20)[0]
    start = first.requests[0].ts
    after = shared(first, second, start, together=False)
    assert after.client_addr == first.client_addr and len(after.requests) == 40
    assert [r.prompt for r in after.requests[:20]] == [r.prompt for r in first.requests]
    assert after.requests[20].ts >= first.requests[-1].ts + SEQUENTIAL_GAP_S
    together = shared(first, second, start, together=True)
    sources = ["first" if r in first.requests else "second" for r in together.requests]
    assert sum(a != b for a, b in pairwise(sources)) > 1, "the two clients interleave"
    assert all(a.ts <= b.ts for a, b in pairwise(together.requests))


def test_shared_keys_held_out_pair_clients_differently_from_training() -> None:
    train, other = set(SHARED_CLIENTS[0::2]), set(SHARED_CLIENTS[1::2])
    assert other - train, "held-out shared keys include pairs never trained on"
    clients = {c for pair in SHARED_CLIENTS for c in pair}
    assert clients <= set(BENIGN_FNS) - {"shared_key", "eval_harness", "org_nat"}
    assert clients == {c for pair in train for c in pair}, "every client is seen in training"


def test_paraphrased_cues_escape_the_reasoning_keywords_the_standard_ones_hit() -> None:
    assert all(features.prompt_signals(c)[0] == 0 for c in PARAPHRASED_CUES)
    assert all(features.prompt_signals(c)[0] > 0 for c in COT_CUES)


@pytest.mark.parametrize("attack", list(ATTACK_FNS))
def test_attack_operations_harvest_the_requested_volume(pool: corpus.Pool, attack: str
                                                        ) -> None:
    op = adaptive.operation(pool, attack, "none", 0, 48, seed=5)
    assert all(s.label == 1 and s.campaign == op[0].campaign for s in op)
    assert len({s.account for s in op}) == len(op)
    assert sum(len(s.requests) for s in op) >= 48


def test_operations_are_reproducible_from_their_seed(pool: corpus.Pool) -> None:
    a = adaptive.operation(pool, "distill_cot", "human_timing+paraphrase", 3, 20, seed=9)
    b = adaptive.operation(pool, "distill_cot", "human_timing+paraphrase", 3, 20, seed=9)
    assert [(r.ts, r.prompt) for r in a[0].requests] == [(r.ts, r.prompt) for r in b[0].requests]


def test_sybil_split_stays_under_the_first_scoring_on_fresh_networks(pool: corpus.Pool) -> None:
    plain = adaptive.operation(pool, "distill", "none", 0, 100, seed=1)
    split = adaptive.operation(pool, "distill", "sybil_split", 0, 100, seed=1)
    assert sum(len(s.requests) for s in split) == sum(len(s.requests) for s in plain)
    assert len(split) >= evasions.SYBIL_MIN_ACCOUNTS
    assert all(len(s.requests) <= evasions.SYBIL_MAX_REQUESTS for s in split)
    networks = {features.network_of(s.client_addr) for s in split}
    assert len(networks) == len(split)


def test_warm_split_accounts_open_with_cover_scored_alone_then_harvest_unscored(
        pool: corpus.Pool) -> None:
    """Each account's first scoring (at eight requests) sees only replayed conversations sent
    with the script's parameters; the harvest after it is too short to be scored again."""
    engine = DetectionEngineConfig()
    assert engine.min_requests == evasions.WARM_REQUESTS
    assert engine.score_every > evasions.WARM_HARVEST
    plain = adaptive.operation(pool, "distill", "none", 0, 100, seed=1)
    split = adaptive.operation(pool, "distill", "warm_split", 0, 100, seed=1)
    harvested = [r for s in split for r in _requests(s) if r.harvest]
    assert len(harvested) == len(_requests(plain[0]))
    assert len({features.network_of(s.client_addr) for s in split}) == len(split)
    for s in split:
        reqs = _requests(s)
        assert [r.harvest for r in reqs] == [False] * evasions.WARM_REQUESTS + [True] * (
            len(reqs) - evasions.WARM_REQUESTS)
        assert 1 <= len(reqs) - evasions.WARM_REQUESTS <= evasions.WARM_HARVEST
        assert [r.ts for r in reqs] == sorted(r.ts for r in reqs)
        script = reqs[-1]
        assert {(r.temperature, r.max_tokens, r.stream, r.logprobs) for r in reqs} == {
            (script.temperature, script.max_tokens, script.stream, script.logprobs)}


def test_warm_switch_accounts_harvest_as_a_client_too_small_to_be_read(
        pool: corpus.Pool) -> None:
    """Each account opens with a person's conversations at the person's own parameters, up to
    the first scoring, then takes fewer answers than a client is read alone from, at the
    script's parameters: its first scoring reads the cover alone, and the harvest not at all."""
    plain = adaptive.operation(pool, "distill", "none", 0, 100, seed=1)
    split = adaptive.operation(pool, "distill", "warm_switch", 0, 100, seed=1)
    harvested = [r for s in split for r in _requests(s) if r.harvest]
    assert len(harvested) == len(_requests(plain[0]))
    assert evasions.SWITCH_HARVEST == clients.PART_FLOOR - 1
    config = DetectionEngineConfig()
    switched = 0
    for s in (s for s in split if len(s.requests) == config.min_requests):
        reqs = _requests(s)
        assert [r.harvest for r in reqs] == [False] * (len(reqs) - evasions.SWITCH_HARVEST) + [
            True] * evasions.SWITCH_HARVEST
        items = dataset.session_features(s, to_record)
        read = {it.request_id for part in clients.parts(items, config.min_requests)
                for it in part}
        two = len({key.tobytes() for key in clients.client_keys(items)}) > 1
        switched += two
        assert read == {it.request_id for it in (items[:-evasions.SWITCH_HARVEST] if two
                                                 else items)}
    assert switched >= 5, "most people's parameters are not the script's"


@pytest.mark.parametrize("share", [25, 50, 75])
def test_dilution_mixes_in_that_share_of_benign_requests(pool: corpus.Pool, share: int) -> None:
    plain = adaptive.operation(pool, "self_instruct", "none", 0, 40, seed=2)[0]
    mixed = adaptive.operation(pool, "self_instruct", f"dilute{share}", 0, 40, seed=2)[0]
    cover = [r for r in _requests(mixed) if not r.harvest]
    assert len(mixed.requests) - len(cover) == len(plain.requests)
    assert len(cover) / len(mixed.requests) == pytest.approx(share / 100, abs=0.03)
    assert all(a.ts <= b.ts for a, b in pairwise(mixed.requests))


def test_head_camouflage_pushes_the_instruction_past_what_features_read(pool: corpus.Pool
                                                                        ) -> None:
    plain = adaptive.operation(pool, "distill_cot", "none", 0, 10, seed=4)
    hidden = evasions.apply(_gen(pool, "camouflage"), plain, "head_camouflage")
    for a, b in zip(plain[0].requests, hidden[0].requests, strict=True):
        assert b.prompt.endswith(a.prompt)
        assert len(b.prompt) - len(a.prompt) > features.MAX_PROMPT_CHARS


def test_nonce_prefix_leaves_no_two_prompts_a_shared_first_word(pool: corpus.Pool) -> None:
    """The token goes in front of everything, a camouflage passage included."""
    plain = adaptive.operation(pool, "distill", "none", 0, 30, seed=4)
    tokened = evasions.apply(_gen(pool, "nonce"), plain, "head_camouflage+nonce_prefix")
    firsts = [r.prompt.split(" ", 1)[0] for r in _requests(tokened[0])]
    assert len(set(firsts)) == len(firsts)
    for a, b in zip(_requests(plain[0]), _requests(tokened[0]), strict=True):
        assert re.match(r"\[[a-z]+-\d+\] ", b.prompt) and b.prompt.endswith(a.prompt)
        assert len(b.prompt) - len(a.prompt) > features.MAX_PROMPT_CHARS


def test_markup_header_raises_the_templating_signal_of_every_prompt(pool: corpus.Pool
                                                                      ) -> None:
    plain = adaptive.operation(pool, "prada", "none", 0, 20, seed=4)
    marked = evasions.apply(_gen(pool, "markup"), plain, "markup_header")
    for a, b in zip(_requests(plain[0]), _requests(marked[0]), strict=True):
        assert b.prompt.startswith("### [") and b.prompt.endswith(a.prompt)
        assert features.prompt_signals(b.prompt)[1] > features.prompt_signals(a.prompt)[1]
    assert len({r.prompt.split("\n", 1)[0] for r in _requests(marked[0])}) > 1  # not a template


def test_label_header_raises_the_templating_signal_with_labels_not_markup(pool: corpus.Pool
                                                                          ) -> None:
    plain = adaptive.operation(pool, "prada", "none", 0, 20, seed=4)
    labelled = evasions.apply(_gen(pool, "labels"), plain, "label_header")
    for a, b in zip(_requests(plain[0]), _requests(labelled[0]), strict=True):
        assert re.match(r"Ref: [a-z]+-\d+\nTask: q\nFormat: plain\n", b.prompt)
        assert b.prompt.endswith(a.prompt)
        assert features.prompt_signals(b.prompt)[1] >= features.prompt_signals(a.prompt)[1] + 0.5
        header = b.prompt[:len(b.prompt) - len(a.prompt)]
        assert not any(m in header for m in ("###", "---", "{{", "}}", "</", "[", "<"))
    assert len({r.prompt.split("\n", 1)[0] for r in _requests(labelled[0])}) > 1


def test_probes_are_measured_by_the_suite_but_never_taught() -> None:
    from gateway.detect.offline import real_training
    assert set(evasions.PROBES) <= set(evasions.DEFAULT)
    taught = {n for combo in real_training.TRAIN_COMBOS for n in evasions.parse(combo)}
    probed = {n for combo in evasions.PROBES for n in evasions.parse(combo)} - {"greedy"}
    assert probed == {"nonce_prefix", "markup_header", "label_header", "warm_split",
                      "warm_switch"}
    assert not taught & probed


def test_chat_params_and_stream_look_like_a_chat_client(pool: corpus.Pool) -> None:
    op = adaptive.operation(pool, "distill_cot", "stream+chat_params", 0, 30, seed=6)[0]
    reqs = _requests(op)
    assert all(r.stream for r in reqs)
    assert len({(r.temperature, r.max_tokens, r.n) for r in reqs}) == 1
    assert all(r.max_tokens is None or r.completion_tokens <= r.max_tokens for r in reqs)


def test_greedy_decoding_sends_temperature_zero_one_completion(pool: corpus.Pool) -> None:
    op = adaptive.operation(pool, "distill_cot", "chat_params+greedy", 0, 30, seed=6)[0]
    reqs = _requests(op)
    assert all(r.temperature == 0.0 and r.n == 1 for r in reqs)
    assert all(r.max_tokens is None or r.completion_tokens <= r.max_tokens for r in reqs)


def test_short_fast_asks_for_little_and_asks_again_at_once(pool: corpus.Pool) -> None:
    op = adaptive.operation(pool, "distill", "short_fast", 0, 30, seed=6)[0]
    reqs = _requests(op)
    low, high = evasions.SHORT_FAST_TOKENS
    assert len({r.max_tokens for r in reqs}) == 1 and low <= (reqs[0].max_tokens or 0) <= high
    assert all(r.completion_tokens <= high for r in reqs)
    gaps = [b.ts - a.ts for a, b in pairwise(reqs)]
    assert gaps and all(evasions.SHORT_FAST_GAP_S[0] <= g <= evasions.SHORT_FAST_GAP_S[1]
                        for g in gaps)


def test_the_completions_route_is_recorded_as_such(pool: corpus.Pool) -> None:
    op = adaptive.operation(pool, "logit_steal", "completions", 0, 10, seed=7)[0]
    record, prompt = to_record(op, 0)
    assert record.route == COMPLETIONS and record.logit_bias_size > 0
    assert record.prompt_chars == len(prompt)


def test_unknown_evasions_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown evasion"):
        evasions.parse("stream+teleport")

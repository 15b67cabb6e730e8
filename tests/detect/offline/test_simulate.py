"""The simulator: reproducible, labelled, and split by generator as well as by sample."""

from __future__ import annotations

from gateway.detect.offline import simulate, vocab


def test_same_seed_same_traffic() -> None:
    a = simulate.generate(5, "train", 2, (10, 20))
    b = simulate.generate(5, "train", 2, (10, 20))
    assert [(s.account, [r.prompt for r in s.requests]) for s in a] == \
           [(s.account, [r.prompt for r in s.requests]) for s in b]
    c = simulate.generate(6, "train", 2, (10, 20))
    assert [r.prompt for s in a for r in s.requests] != [r.prompt for s in c for r in s.requests]


def test_every_profile_is_labelled_and_split() -> None:
    train = simulate.generate(1, "train", 2, (10, 20))
    held = simulate.generate(1, "heldout", 2, (10, 20))
    train_profiles = {s.profile for s in train}
    assert train_profiles == set(simulate.BENIGN + simulate.ATTACKS) - simulate.HELDOUT_ONLY
    assert {s.profile for s in held} == set(simulate.BENIGN + simulate.ATTACKS)
    for s in train + held:
        assert s.label == int(s.profile in simulate.ATTACKS)
        times = [r.ts for r in s.requests]
        assert times == sorted(times)
    campaign = [s for s in held if s.profile == "campaign"]
    assert len({s.campaign for s in campaign}) >= 1 and len(campaign) >= 3


def test_heldout_generators_share_no_topic_with_train() -> None:
    train_topics = set(vocab.family(vocab.TOPICS, "train"))
    held_topics = set(vocab.family(vocab.TOPICS, "heldout"))
    assert not train_topics & held_topics
    held = simulate.generate(2, "heldout", 3, (20, 30), ("distill",))
    text = " ".join(r.prompt for s in held for r in s.requests)
    assert not any(t in text for t in train_topics if len(t) > 12)


def test_attack_profiles_use_their_parameters() -> None:
    steal = simulate.generate(3, "train", 1, (20, 30), ("logit_steal",))[0]
    assert all(r.max_tokens == 1 and r.logit_bias and r.logprobs for r in steal.requests)
    slow = simulate.generate(3, "train", 1, (20, 30), ("low_slow",))[0]
    gaps = [b.ts - a.ts for a, b in zip(slow.requests, slow.requests[1:], strict=False)]
    assert min(gaps) > 60
    record, prompt = simulate.to_record(steal, 0)
    assert record.logit_bias_size == len(steal.requests[0].logit_bias or {})
    assert record.account_id == steal.account and prompt == steal.requests[0].prompt

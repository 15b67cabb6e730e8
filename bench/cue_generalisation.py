"""Do learned prompt cues generalise to wording they were not trained on? (issue 10)

The detector's ``reasoning`` feature is a keyword regex (``gateway.detect.features``). The issue
asks for cues that are learned, not listed. This measures the candidate — hashed character 3-5
grams into a logistic model (the fastText/Vowpal recipe, cheap enough for every request) —
against the regex on what an adaptive attacker does: elicitation cues worded in ways neither
has seen. Two ways to train the learned cue, both on the ``train`` split only:

* ``outcome``: real ShareGPT prompts labelled by their real answers (a long, stepwise answer),
  no cue list at all;
* ``outcome+cues``: the same plus the train halves of the cue lists appended to real questions.

Scored on ``heldout`` questions, plain vs with a cue from the *other* half of each list (chain-
of-thought cues with the regex's keywords, and paraphrased cues without them). Baseline: the
regex, on the same texts, in the same run. Prints AUC (cue vs plain) per cue family.

    .venv/bin/python bench/cue_generalisation.py      # ~3-5 min on 2 cores, needs torch
"""

from __future__ import annotations

import random
import re

import numpy as np
import numpy.typing as npt
import torch

from gateway.detect.features import prompt_signals
from gateway.detect.offline import corpus
from gateway.detect.offline.measures import roc_auc
from gateway.detect.offline.real_attacks import COT_CUES, PARAPHRASED_CUES

BITS = 15
_PRIME = np.uint64(0x100000001B3)
_DIGITS = str.maketrans("0123456789", "0000000000")
_STEPWISE = re.compile(r"^\s*(?:\d+[.)]|step \d|[-*] )", re.M | re.I)


def _mix(x: npt.NDArray[np.uint64]) -> npt.NDArray[np.uint64]:
    x = x ^ (x >> np.uint64(30))
    x = x * np.uint64(0xBF58476D1CE4E5B9)
    x = x ^ (x >> np.uint64(27))
    x = x * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def grams(text: str) -> npt.NDArray[np.int64]:
    """Buckets of the character 3-, 4- and 5-grams of the text the detector reads."""
    t = " ".join(text.lower().translate(_DIGITS).split())
    if len(t) > 1500:
        t = f"{t[:750]} {t[-750:]}"
    b = np.frombuffer(t.encode("utf-8", "replace"), dtype=np.uint8).astype(np.uint64)
    out = []
    with np.errstate(over="ignore"):
        for n in (3, 4, 5):
            m = len(b) - n + 1
            if m <= 0:
                continue
            h = np.full(m, np.uint64(n))
            for j in range(n):
                h = h * _PRIME + b[j:j + m]
            out.append((_mix(h) >> np.uint64(64 - BITS)).astype(np.int64))
    return np.concatenate(out) if out else np.zeros(0, np.int64)


class CueModel:
    def __init__(self) -> None:
        self.emb = torch.nn.EmbeddingBag(1 << BITS, 1, mode="sum")
        torch.nn.init.zeros_(self.emb.weight)
        self.bias = torch.zeros(1, requires_grad=True)

    def logits(self, texts: list[str]) -> torch.Tensor:
        g = [grams(x) for x in texts]
        offsets = torch.tensor(np.cumsum([0] + [len(a) for a in g[:-1]]))
        counts = torch.tensor([max(1, len(a)) for a in g], dtype=torch.float32)
        flat = torch.tensor(np.concatenate(g))
        out: torch.Tensor = self.emb(flat, offsets).squeeze(1) / counts.sqrt() + self.bias
        return out

    def fit(self, texts: list[str], labels: list[int], epochs: int = 60) -> None:
        y = torch.tensor(labels, dtype=torch.float32)
        opt = torch.optim.Adam([*self.emb.parameters(), self.bias], lr=0.05)
        g = [grams(x) for x in texts]  # hashed once
        offsets = torch.tensor(np.cumsum([0] + [len(a) for a in g[:-1]]))
        counts = torch.tensor([max(1, len(a)) for a in g], dtype=torch.float32)
        flat = torch.tensor(np.concatenate(g))
        for _ in range(epochs):
            opt.zero_grad()
            out = self.emb(flat, offsets).squeeze(1) / counts.sqrt() + self.bias
            loss = torch.nn.functional.binary_cross_entropy_with_logits(out, y)
            loss.backward()  # type: ignore[no-untyped-call]
            opt.step()

    def score(self, texts: list[str]) -> npt.NDArray[np.float64]:
        with torch.no_grad():
            return torch.sigmoid(self.logits(texts)).numpy().astype(np.float64)


def _outcome_data(split: str) -> tuple[list[str], list[int]]:
    texts, labels = [], []
    for conv in corpus.pool(split).conversations:
        for turn in conv.turns:
            if turn.prompt.strip():
                texts.append(turn.prompt)
                stepwise = len(_STEPWISE.findall(turn.answer)) >= 3
                labels.append(int(stepwise and len(turn.answer) >= 600))
    return texts, labels


def _with_cues(rng: random.Random, questions: list[str], cues: list[str], n: int
               ) -> tuple[list[str], list[int]]:
    texts, labels = [], []
    for _ in range(n):
        q = rng.choice(questions)
        if rng.random() < 0.5:
            texts.append(f"{q}\n\n{rng.choice(cues)}")
            labels.append(1)
        else:
            texts.append(q)
            labels.append(0)
    return texts, labels


def _auc(scores_cue: npt.NDArray[np.float64], scores_plain: npt.NDArray[np.float64]) -> float:
    labels = np.array([1] * len(scores_cue) + [0] * len(scores_plain))
    return roc_auc(np.concatenate([scores_cue, scores_plain]), labels)


def main() -> None:
    rng = random.Random(7)
    torch.manual_seed(7)
    texts, labels = _outcome_data("train")
    train_q = [q.text for q in corpus.pool("train").questions]
    outcome = CueModel()
    outcome.fit(texts, labels)
    extra = _with_cues(rng, train_q, [*COT_CUES[0::2], *PARAPHRASED_CUES[0::2]], 12000)
    both = CueModel()
    both.fit(texts + extra[0], labels + extra[1])

    held_q = [q.text for q in corpus.pool("heldout").questions][:400]
    families = {"chain-of-thought cues, unseen half (keywords)": list(COT_CUES[1::2]),
                "paraphrased cues, unseen half (no keywords)": list(PARAPHRASED_CUES[1::2])}
    scorers = {
        "regex (shipped)": lambda xs: np.array([prompt_signals(x)[0] for x in xs]),
        "learned: outcome": outcome.score,
        "learned: outcome+cues": both.score,
    }
    print(f"AUC, cue vs no cue, on {len(held_q)} held-out questions (0.5 = blind)")
    print(f"{'cue family':<48}" + "".join(f"{name:>24}" for name in scorers))
    for family, cues in families.items():
        cued = [f"{q}\n\n{rng.choice(cues)}" for q in held_q]
        row = [_auc(fn(cued), fn(held_q)) for fn in scorers.values()]
        print(f"{family:<48}" + "".join(f"{v:>24.3f}" for v in row))
    held_texts, held_labels = _outcome_data("heldout")
    y = np.array(held_labels)
    print(f"outcome AUC on held-out ShareGPT (long stepwise answer): "
          f"outcome {roc_auc(outcome.score(held_texts), y):.3f}, "
          f"outcome+cues {roc_auc(both.score(held_texts), y):.3f}, "
          f"regex {roc_auc(np.array([prompt_signals(x)[0] for x in held_texts]), y):.3f}")


if __name__ == "__main__":
    main()
